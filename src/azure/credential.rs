//! Credentials: the `azure_identity` credential `[azure]` names, built lazily, and the token source the ARM
//! client uses.
//!
//! Every credential is built at its first `get_token`, once: nothing reads a file, a variable or the network
//! before that, so an offline `check-config` of a configuration meant for another machine passes, and a secret
//! file that appears later is picked up by the next attempt. The built credential caches tokens until shortly
//! before they expire (`azure_identity` does it for all but the Azure CLI, which rpod caches itself).
//!
//! `client_certificate` does not use `azure_identity`'s certificate credential (it needs OpenSSL): rpod signs the
//! client assertion itself (RS256 with aws-lc-rs) and hands it to `ClientAssertionCredential`. The certificate
//! file is PEM holding the certificate (`CERTIFICATE`, the first one is the one registered with the app) and
//! its unencrypted RSA private key (`PRIVATE KEY`, PKCS#8; `RSA PRIVATE KEY`, PKCS#1, is accepted too), in any
//! order, e.g. `cat cert.pem key.pem > rpod.pem`.
//!
//! Errors name the credential kind and the reason, never a secret or a token.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use azure_core::base64;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use azure_core::time::{Duration, OffsetDateTime};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertion, ClientAssertionCredential,
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    Executor, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use tokio::sync::{Mutex, OnceCell};

use super::transport::{client_options, describe_error};
use crate::config::{AzureConfig, Credential};

/// How long a client assertion is valid; Entra ID accepts up to 10 minutes.
const ASSERTION_LIFETIME_SECONDS: i64 = 600;

/// A cached token is replaced this long before it expires.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::minutes(5);

/// What the credential sends through and runs, besides what `[azure]` says.
#[derive(Debug, Clone, Default)]
pub struct CredentialOptions {
    /// SDK transport for every request the credential makes (tests: [`super::transport::LoopbackOnly`]).
    pub transport: Option<Transport>,
    /// How `azure_cli` runs `az` (tests: a fake `az`); `None` runs it through `/bin/sh` from `PATH`.
    pub cli_executor: Option<Arc<dyn Executor>>,
}

/// The credential `[azure]` names. Nothing is read or requested until the first token is needed, so an offline
/// `check-config` of a configuration meant for another machine does not fail here.
#[must_use]
pub fn credential(config: &AzureConfig, transport: Option<Transport>) -> Arc<dyn TokenCredential> {
    credential_with(
        config,
        CredentialOptions {
            transport,
            cli_executor: None,
        },
    )
}

/// [`credential`] with every option.
#[must_use]
pub fn credential_with(
    config: &AzureConfig,
    options: CredentialOptions,
) -> Arc<dyn TokenCredential> {
    Arc::new(LazyCredential {
        credential: config.credential.clone(),
        authority_host: config.authority_host.trim_end_matches('/').to_owned(),
        options,
        built: OnceCell::new(),
    })
}

/// The configured credential, built at first use.
struct LazyCredential {
    credential: Credential,
    authority_host: String,
    options: CredentialOptions,
    built: OnceCell<Arc<dyn TokenCredential>>,
}

impl fmt::Debug for LazyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.credential.kind())
            .field("built", &self.built.initialized())
            .finish_non_exhaustive()
    }
}

impl LazyCredential {
    fn client_options(&self) -> ClientOptions {
        client_options(self.options.transport.clone(), Some(&self.authority_host))
    }

    fn build(&self) -> Result<Arc<dyn TokenCredential>, String> {
        let sdk = |err: azure_core::Error| describe_error(&err);
        Ok(match &self.credential {
            Credential::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: self.client_options(),
                }))
                .map_err(sdk)?
            }
            Credential::WorkloadIdentity {
                client_id,
                tenant_id,
                token_file,
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: self.client_options(),
                },
                client_id: client_id.clone(),
                tenant_id: tenant_id.clone(),
                token_file_path: token_file.clone(),
            }))
            .map_err(sdk)?,
            Credential::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => {
                let secret = secret.load()?;
                ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    secret.expose().to_owned().into(),
                    Some(ClientSecretCredentialOptions {
                        client_options: self.client_options(),
                    }),
                )
                .map_err(sdk)?
            }
            Credential::ClientCertificate {
                tenant_id,
                client_id,
                certificate_file,
            } => {
                let assertion = CertificateAssertion::load(
                    certificate_file,
                    format!("{}/{tenant_id}/oauth2/v2.0/token", self.authority_host),
                    client_id.clone(),
                )?;
                ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    assertion,
                    Some(ClientAssertionCredentialOptions {
                        client_options: self.client_options(),
                    }),
                )
                .map_err(sdk)?
            }
            Credential::AzureCli { tenant_id } => {
                let cli = AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    executor: self.options.cli_executor.clone(),
                    ..AzureCliCredentialOptions::default()
                }))
                .map_err(sdk)?;
                // The CLI credential runs `az` for every token; rpod asks for one per ARM request.
                Arc::new(Cached {
                    inner: cli,
                    tokens: Mutex::new(HashMap::new()),
                })
            }
        })
    }

    fn failure(&self, what: &str, reason: &str) -> azure_core::Error {
        azure_core::Error::with_message(
            ErrorKind::Credential,
            format!("{} credential: {what}: {reason}", self.credential.kind()),
        )
    }
}

#[async_trait::async_trait]
impl TokenCredential for LazyCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let credential = self
            .built
            .get_or_try_init(|| async { self.build() })
            .await
            .map_err(|reason| self.failure("cannot be set up", &reason))?;
        credential.get_token(scopes, options).await.map_err(|err| {
            self.failure(
                &format!("no token for {}", scopes.join(" ")),
                &describe_error(&err),
            )
        })
    }
}

/// Caches the tokens of a credential that does not cache them itself.
#[derive(Debug)]
struct Cached {
    inner: Arc<dyn TokenCredential>,
    tokens: Mutex<HashMap<Vec<String>, AccessToken>>,
}

#[async_trait::async_trait]
impl TokenCredential for Cached {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        // Held across the request on purpose: concurrent callers wait for one `az` run instead of starting many.
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(&key)
            && token.expires_on > OffsetDateTime::now_utc() + REFRESH_BEFORE_EXPIRY
        {
            return Ok(token.clone());
        }
        let token = self.inner.get_token(scopes, options).await?;
        tokens.insert(key, token.clone());
        Ok(token)
    }
}

/// A client assertion signed with the certificate and key of `path`, for the token endpoint `audience` (AD FS
/// takes the same JWT as Entra ID).
pub(super) fn client_assertion(
    path: &Path,
    audience: &str,
    client_id: &str,
) -> Result<String, String> {
    CertificateAssertion::load(path, audience.to_owned(), client_id.to_owned())?
        .assertion(chrono::Utc::now().timestamp())
}

/// Signs Entra ID client assertions with a certificate's private key.
struct CertificateAssertion {
    key: RsaKeyPair,
    /// base64url SHA-1 thumbprint of the certificate (DER), as registered with the app.
    x5t: String,
    /// base64url SHA-256 thumbprint.
    x5t_s256: String,
    /// The token endpoint.
    audience: String,
    client_id: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("x5t", &self.x5t)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    fn load(path: &Path, audience: String, client_id: String) -> Result<Self, String> {
        let pem = std::fs::read(path)
            .map_err(|err| format!("cannot read certificate file {}: {err}", path.display()))?;
        let (certificate, key) = parse_pem(&pem)
            .map_err(|reason| format!("certificate file {}: {reason}", path.display()))?;
        let thumbprint =
            |algorithm| base64::encode_url_safe(digest::digest(algorithm, &certificate));
        Ok(Self {
            key,
            x5t: thumbprint(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            x5t_s256: thumbprint(&digest::SHA256),
            audience,
            client_id,
        })
    }

    /// A signed JWT per Entra ID's certificate-credential format.
    fn assertion(&self, now: i64) -> Result<String, String> {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": azure_core::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        });
        let signing_input = format!(
            "{}.{}",
            base64::encode_url_safe(header.to_string()),
            base64::encode_url_safe(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the client assertion failed".to_owned())?;
        Ok(format!(
            "{signing_input}.{}",
            base64::encode_url_safe(&signature)
        ))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.assertion(chrono::Utc::now().timestamp())
            .map_err(|reason| azure_core::Error::with_message(ErrorKind::Credential, reason))
    }
}

/// The first certificate and the private key of a PEM file.
fn parse_pem(pem: &[u8]) -> Result<(Vec<u8>, RsaKeyPair), String> {
    let mut certificate = None;
    let mut key = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        // Parse errors are described by kind only: their text could quote key material.
        let (kind, der) = section.map_err(|err| match err {
            pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".to_owned(),
            pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
            pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
            _ => "not a valid PEM file".to_owned(),
        })?;
        match kind {
            SectionKind::Certificate if certificate.is_none() => certificate = Some(der),
            SectionKind::PrivateKey if key.is_none() => {
                key = Some(RsaKeyPair::from_pkcs8(&der).map_err(|err| {
                    format!("the PKCS#8 private key is not a usable RSA key ({err})")
                })?);
            }
            SectionKind::RsaPrivateKey if key.is_none() => {
                key = Some(RsaKeyPair::from_der(&der).map_err(|err| {
                    format!("the PKCS#1 private key is not a usable RSA key ({err})")
                })?);
            }
            SectionKind::EcPrivateKey => {
                return Err("holds an EC key; Entra ID certificate credentials need RSA".to_owned());
            }
            _ => {}
        }
    }
    match (certificate, key) {
        (Some(certificate), Some(key)) => Ok((certificate, key)),
        (None, _) => Err("no CERTIFICATE section".to_owned()),
        (Some(_), None) => Err(
            "no unencrypted RSA private key (a PKCS#8 \"PRIVATE KEY\" section; encrypted keys are not supported)"
                .to_owned(),
        ),
    }
}

/// Resource Manager tokens from a credential, for the ARM client.
#[derive(Debug)]
pub struct ArmTokens {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl ArmTokens {
    /// Tokens for `scope` (`<resource_manager_endpoint>/.default`).
    #[must_use]
    pub fn new(credential: Arc<dyn TokenCredential>, scope: String) -> Self {
        Self { credential, scope }
    }
}

#[async_trait::async_trait]
impl super::arm::TokenSource for ArmTokens {
    async fn token(&self) -> Result<crate::config::Secret, String> {
        self.credential
            .get_token(&[&self.scope], None)
            .await
            .map(|token| crate::config::Secret::new(token.token.secret().to_owned()))
            .map_err(|err| describe_error(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn pem_without_key_or_certificate_is_refused() {
        assert_eq!(parse_pem(b"").err().unwrap(), "no CERTIFICATE section");
        let cert_only = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_pem(cert_only).err().unwrap().contains("private key"));
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(parse_pem(broken).err().unwrap().contains("END"));
    }

    #[tokio::test]
    async fn nothing_is_read_before_the_first_token() {
        let config = AzureConfig {
            credential: Credential::ClientCertificate {
                tenant_id: "t".into(),
                client_id: "c".into(),
                certificate_file: PathBuf::from("/nonexistent/rpod.pem"),
            },
            ..AzureConfig::default()
        };
        let credential = credential(&config, None);
        assert!(format!("{credential:?}").contains("client_certificate"));
        let error = credential
            .get_token(&["s/.default"], None)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("client_certificate credential: cannot be set up"),
            "{text}"
        );
        assert!(text.contains("/nonexistent/rpod.pem"), "{text}");
    }
}
