//! HTTPS for the emulator: a test CA generated at start, and a server certificate it issues.
//!
//! The CA is self-signed with `basicConstraints` `CA:TRUE` and key usages `keyCertSign` and `cRLSign`; its common
//! name is `rpod emulator test root CA`. The leaf certificate (subject `rpod emulator`) names `127.0.0.1`, `::1`
//! and `localhost` in its subject alternative names, is issued by that CA (it is not self-signed), is not a CA
//! (`CA:FALSE`) and is for server authentication. Both keys are ECDSA P-256 and live only in memory; nothing is
//! written to disk. The server sends the leaf alone and offers only HTTP/1.1 (ALPN `http/1.1`).

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA's common name.
pub(crate) const CA_COMMON_NAME: &str = "rpod emulator test root CA";

/// The leaf's common name.
const LEAF_COMMON_NAME: &str = "rpod emulator";

/// What serving HTTPS needs, and the certificates tests trust or misuse.
#[derive(Clone)]
pub(crate) struct Tls {
    /// Accepts TLS connections with the leaf certificate.
    pub(crate) acceptor: TlsAcceptor,
    /// The CA certificate, PEM.
    pub(crate) ca_pem: String,
    /// The leaf certificate, PEM.
    pub(crate) leaf_pem: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Generates a CA and a leaf it issues, and a server configuration serving the leaf.
///
/// # Errors
/// When a key or certificate cannot be made (which would be a bug in the parameters).
pub(crate) fn generate() -> io::Result<Tls> {
    let ca_key = KeyPair::generate().map_err(io::Error::other)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
    ca.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    ca.distinguished_name.push(DnType::OrganizationName, "rpod");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(io::Error::other)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().map_err(io::Error::other)?;
    let mut leaf = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ])
    .map_err(io::Error::other)?;
    leaf.distinguished_name
        .push(DnType::CommonName, LEAF_COMMON_NAME);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(io::Error::other)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_cert.der().clone()], key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
    })
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::{FromDer as _, X509Certificate};

    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap()
    }

    #[test]
    fn the_ca_issues_a_leaf_that_is_not_a_ca() {
        let tls = generate().unwrap();
        let ca_der = der(&tls.ca_pem);
        let leaf_der = der(&tls.leaf_pem);
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();

        assert!(ca.is_ca());
        let constraints = ca.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
        let ca_name = ca.subject().iter_common_name().next().unwrap();
        assert_eq!(ca_name.as_str().unwrap(), CA_COMMON_NAME);
        assert_eq!(ca.subject(), ca.issuer(), "the CA is self-signed");

        assert!(!leaf.is_ca());
        assert_eq!(leaf.issuer(), ca.subject(), "issued by the CA");
        assert_ne!(leaf.subject(), leaf.issuer(), "not self-signed");
        assert!(
            leaf.verify_signature(Some(ca.public_key())).is_ok(),
            "signed by the CA's key"
        );
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "IPAddress(7f:00:00:01)",
                "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)",
                "DNSName(localhost)"
            ]
        );
    }
}
