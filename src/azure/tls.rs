//! TLS for a cloud of its own (an Azure Stack Hub stamp, docs/azure-stack.md, "Certificates"): the private CA of
//! `ca_file`, checked when the configuration is loaded, trusted beside the system's roots for that profile's
//! connections only; and a certificate verifier that, when a server's certificate is not trusted, says which CA
//! issued it and where to add it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;

/// The CA certificates of a `ca_file`.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    certificates: Vec<CertificateDer<'static>>,
}

impl TrustedCa {
    /// Reads a PEM file of CA certificates. Every certificate in it must be a CA's (basic constraints `CA:TRUE`):
    /// a server's own certificate given by mistake is refused here, with what it is.
    ///
    /// # Errors
    /// The file cannot be read, holds no certificate, or holds one that is not a CA's; the message says which.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|err| {
                format!(
                    "{} is not a PEM file of certificates: {err}",
                    path.display()
                )
            })?;
        if certificates.is_empty() {
            return Err(format!(
                "{} holds no certificate: give the PEM (-----BEGIN CERTIFICATE-----) of the CA that issued the \
                 stamp's certificates",
                path.display()
            ));
        }
        for certificate in &certificates {
            let (_, parsed) = x509_parser::parse_x509_certificate(certificate).map_err(|err| {
                format!(
                    "{} holds a certificate rpod cannot read: {err}",
                    path.display()
                )
            })?;
            if !parsed.is_ca() {
                return Err(format!(
                    "{} holds a certificate that is not a CA's ({}, issued by {}): give the certificate of the CA \
                     that issued it instead",
                    path.display(),
                    parsed.subject(),
                    parsed.issuer()
                ));
            }
        }
        Ok(Self { certificates })
    }
}

/// A verifier of servers' certificates for one profile: the system's roots plus the profile's CA; an untrusted
/// certificate is refused with the name of its issuer and the `ca_file` to add it to.
#[derive(Debug)]
struct NamingVerifier {
    inner: rustls_platform_verifier::Verifier,
    /// Where the CA goes, e.g. `ca_file in [azure.profiles.stamp]`.
    remedy: String,
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|err| match err {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                    let top = intermediates.last().unwrap_or(end_entity);
                    let issuer = x509_parser::parse_x509_certificate(top)
                        .map_or_else(|_| "an unknown CA".to_owned(), |(_, c)| c.issuer().to_string());
                    rustls::Error::General(format!(
                        "the certificate of {} is issued by \"{issuer}\", which is not trusted: add that CA's \
                         certificate (PEM) to {}",
                        server_name.to_str(),
                        self.remedy
                    ))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS settings of one profile's connections: the system's roots plus `ca` (when given), with untrusted
/// certificates explained in terms of `profile`.
///
/// # Errors
/// The system's roots could not be loaded.
pub fn client_config(
    ca: Option<&TrustedCa>,
    profile: &str,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra = ca.map(|ca| ca.certificates.clone()).unwrap_or_default();
    let inner = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
        .map_err(|err| format!("cannot set up TLS: {err}"))?;
    let verifier = NamingVerifier {
        inner,
        remedy: format!("ca_file in [azure.profiles.{profile}]"),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}
