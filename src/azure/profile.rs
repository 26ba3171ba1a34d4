//! Tokens for a cloud of its own, an `[azure.profiles.NAME]` (docs/azure-stack.md, "The administrator endpoint and
//! its identity"). Such a cloud says where to sign in and for which audience at
//! `{resource_manager_endpoint}/metadata/endpoints`: rpod reads it at the first token, then asks
//! - Entra ID (any other `tenant_id`) through the configured `azure_identity` credential, for `{audience}/.default`
//!   at the metadata's login endpoint (unless `authority_host` is set);
//! - AD FS (`tenant_id = "adfs"`) itself, with OAuth 2.0 client credentials at `{login endpoint}/oauth2/token` and
//!   the audience as `resource`: `azure_identity` speaks only Entra ID's v2.0 endpoints.
//!
//! Every request goes through the profile's TLS settings (its `ca_file`), and in tests through the loopback guard.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::arm::TokenSource;
use super::credential::{self, CredentialOptions, client_assertion};
use super::transport::{LoopbackOnly, describe_error, is_loopback, redact};
use crate::config::{AzureConfig, Credential, PUBLIC_AUTHORITY_HOST, Secret};

/// The api-version of the metadata endpoint that Azure Stack Hub serves.
const METADATA_API_VERSION: &str = "2015-01-01";

/// A token is replaced this long before it expires.
const REFRESH_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

#[derive(Debug, Deserialize)]
struct Metadata {
    authentication: Authentication,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Authentication {
    login_endpoint: String,
    #[serde(default)]
    audiences: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AdfsToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// How the profile's tokens are obtained, once the metadata was read.
#[derive(Debug)]
enum Signer {
    Entra {
        credential: Arc<dyn TokenCredential>,
        scope: String,
    },
    Adfs {
        token_url: String,
        resource: String,
        cached: Option<(Secret, chrono::DateTime<chrono::Utc>)>,
    },
}

/// The token source of one profile.
#[derive(Debug)]
pub struct ProfileTokens {
    config: AzureConfig,
    http: reqwest::Client,
    transport: Transport,
    loopback_only: bool,
    signer: Mutex<Option<Signer>>,
}

impl ProfileTokens {
    /// Tokens for `config`'s cloud, asked through `http` (the profile's TLS settings); `loopback_only` refuses
    /// every other host (tests).
    #[must_use]
    pub fn new(config: AzureConfig, http: reqwest::Client, loopback_only: bool) -> Self {
        let inner: Arc<dyn azure_core::http::HttpClient> = Arc::new(http.clone());
        let transport = if loopback_only {
            Transport::new(Arc::new(LoopbackOnly::new(inner, Vec::new())))
        } else {
            Transport::new(inner)
        };
        Self {
            config,
            http,
            transport,
            loopback_only,
            signer: Mutex::new(None),
        }
    }

    fn guard(&self, url: &str) -> Result<(), String> {
        if self.loopback_only && !is_loopback(url) {
            return Err(format!(
                "refusing a request to {}: only loopback addresses are allowed",
                redact(url)
            ));
        }
        Ok(())
    }

    async fn metadata(&self) -> Result<Authentication, String> {
        let url = format!(
            "{}/metadata/endpoints?api-version={METADATA_API_VERSION}",
            self.config.resource_manager_endpoint
        );
        self.guard(&url)?;
        let failed = |why: String| {
            format!(
                "cannot read the cloud's metadata at {}: {why}",
                redact(&url)
            )
        };
        let bytes = answer(self.http.get(&url)).await.map_err(failed)?;
        let metadata: Metadata = serde_json::from_slice(&bytes)
            .map_err(|err| failed(format!("unreadable answer: {err}")))?;
        if metadata.authentication.audiences.is_empty() {
            return Err(failed("it names no token audience".to_owned()));
        }
        Ok(metadata.authentication)
    }

    /// The login endpoint: `authority_host` when configured, else the metadata's.
    fn authority(&self, metadata: &Authentication) -> String {
        if self.config.authority_host == PUBLIC_AUTHORITY_HOST {
            metadata.login_endpoint.trim_end_matches('/').to_owned()
        } else {
            self.config.authority_host.clone()
        }
    }

    async fn signer(&self) -> Result<Signer, String> {
        let metadata = self.metadata().await?;
        let audience = metadata.audiences[0].trim_end_matches('/').to_owned();
        let authority = self.authority(&metadata);
        let adfs = match &self.config.credential {
            Credential::ClientSecret { tenant_id, .. }
            | Credential::ClientCertificate { tenant_id, .. } => {
                tenant_id.eq_ignore_ascii_case("adfs")
            }
            Credential::WorkloadIdentity { tenant_id, .. } | Credential::AzureCli { tenant_id } => {
                tenant_id
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("adfs"))
            }
            Credential::ManagedIdentity { .. } => false,
        };
        if adfs {
            // The metadata's login endpoint of an AD FS stamp ends in `/adfs`; a configured authority host does not.
            let base = if authority.ends_with("/adfs") {
                authority
            } else {
                format!("{authority}/adfs")
            };
            return Ok(Signer::Adfs {
                token_url: format!("{base}/oauth2/token"),
                resource: audience,
                cached: None,
            });
        }
        let mut config = self.config.clone();
        config.authority_host = authority;
        Ok(Signer::Entra {
            credential: credential::credential_with(
                &config,
                CredentialOptions {
                    transport: Some(self.transport.clone()),
                    cli_executor: None,
                },
            ),
            scope: format!("{audience}/.default"),
        })
    }

    async fn adfs_token(&self, token_url: &str, resource: &str) -> Result<(Secret, i64), String> {
        self.guard(token_url)?;
        let kind = self.config.credential.kind();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("resource", resource.to_owned()),
        ];
        match &self.config.credential {
            Credential::ClientSecret {
                client_id, secret, ..
            } => {
                form.push(("client_id", client_id.clone()));
                form.push(("client_secret", secret.load()?.expose().to_owned()));
            }
            Credential::ClientCertificate {
                client_id,
                certificate_file,
                ..
            } => {
                form.push(("client_id", client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push((
                    "client_assertion",
                    client_assertion(certificate_file, token_url, client_id)?,
                ));
            }
            other => {
                return Err(format!(
                    "credential = {:?} cannot sign in to AD FS: use client_secret or client_certificate",
                    other.kind()
                ));
            }
        }
        let failed = |why: String| {
            format!(
                "{kind} credential: no token from AD FS at {}: {why}",
                redact(token_url)
            )
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .http
            .post(token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let bytes = answer(request).await.map_err(failed)?;
        let token: AdfsToken =
            serde_json::from_slice(&bytes).map_err(|_| failed("unreadable answer".to_owned()))?;
        let lifetime = match token.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(3600),
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(3600),
            _ => 3600,
        };
        Ok((Secret::new(token.access_token), lifetime))
    }
}

/// The body of a successful answer to `request`, or why there is none: the error's whole chain, or the status
/// with the start of the body (the metadata and AD FS's `{"error","error_description"}` carry no secret).
async fn answer(request: reqwest::RequestBuilder) -> Result<Vec<u8>, String> {
    let response = request.send().await.map_err(|err| describe_error(&err))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|err| describe_error(&err))?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
        return Err(format!(
            "it answered {}: {}",
            status.as_u16(),
            redact(&text)
        ));
    }
    Ok(bytes.to_vec())
}

#[async_trait::async_trait]
impl TokenSource for ProfileTokens {
    async fn token(&self) -> Result<Secret, String> {
        // Held across the requests on purpose: concurrent callers wait for one sign-in instead of starting many.
        let mut signer = self.signer.lock().await;
        if signer.is_none() {
            *signer = Some(self.signer().await?);
        }
        match signer.as_mut() {
            Some(Signer::Entra { credential, scope }) => credential
                .get_token(&[scope.as_str()], None)
                .await
                .map(|token| Secret::new(token.token.secret().to_owned()))
                .map_err(|err| describe_error(&err)),
            Some(Signer::Adfs {
                token_url,
                resource,
                cached,
            }) => {
                let now = chrono::Utc::now();
                if let Some((token, expires)) = cached
                    && *expires > now + REFRESH_BEFORE
                {
                    return Ok(token.clone());
                }
                let (token, lifetime) = self.adfs_token(token_url, resource).await?;
                *cached = Some((token.clone(), now + chrono::TimeDelta::seconds(lifetime)));
                Ok(token)
            }
            None => Err("no sign-in method".to_owned()),
        }
    }
}
