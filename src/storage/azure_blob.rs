//! `azure_blob` storages: an Azure Storage blob container, reached with `azure_storage_blob`.
//!
//! API Management writes the backups; rpod only lists, inspects and deletes them (reconcile, prune) and probes
//! the container. Nothing is read or sent before the first operation: the SAS token or account key is loaded
//! from its `_file` / `_env` then, and the SDK client built once.
//!
//! Authentication (`auth =`): an Entra token from the `[azure]` credential (https only), a SAS token appended to
//! the container URL, or the account key, signing every request per the Shared Key scheme (the SDK has no Shared
//! Key support, so [`SharedKeyPolicy`] does it).
//!
//! No SAS signature, account key or token appears in an error, a log line or `Debug` output: errors are built
//! from the status, Azure's error code and the first line of its message, and every text that came from the SDK
//! has its URL query strings removed.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::sync::Arc;

use aws_lc_rs::hmac;
use azure_core::base64;
use azure_core::credentials::TokenCredential;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Request, StatusCode, Transport, Url};
use azure_core::time::{OffsetDateTime, to_rfc7231};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions, DeleteSnapshotsOptionType, StorageErrorCode,
};
use azure_storage_blob::{
    BlobContainerClient, BlobContainerClientOptions, BlobServiceClient, BlobServiceClientOptions,
};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use tokio::sync::OnceCell;

use super::interface::{ArtifactInfo, ArtifactWriter, Storage, StorageError};
use crate::azure::transport::{client_options, describe_error, redact};
use crate::config::{AzureBlobConfig, BlobAuth};

/// A blob container.
pub struct AzureBlobStorage {
    name: String,
    config: AzureBlobConfig,
    credential: Arc<dyn TokenCredential>,
    transport: Option<Transport>,
    page_size: Option<u32>,
    client: OnceCell<BlobContainerClient>,
}

impl fmt::Debug for AzureBlobStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBlobStorage")
            .field("name", &self.name)
            .field("account", &self.config.account)
            .field("container", &self.config.container)
            .field("endpoint", &self.config.endpoint)
            .field("auth", &auth_kind(&self.config.auth))
            .finish_non_exhaustive()
    }
}

fn auth_kind(auth: &BlobAuth) -> &'static str {
    match auth {
        BlobAuth::Credential => "credential",
        BlobAuth::Sas(_) => "sas",
        BlobAuth::AccessKey(_) => "access_key",
    }
}

/// A failure before it is given its storage and action.
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn other(message: impl Into<String>) -> Self {
        Self {
            kind: io::ErrorKind::Other,
            message: message.into(),
        }
    }
}

impl AzureBlobStorage {
    /// A storage for `config`; `credential` serves `auth = "credential"`.
    #[must_use]
    pub fn new(
        name: &str,
        config: &AzureBlobConfig,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            config: config.clone(),
            credential,
            transport,
            page_size: None,
            client: OnceCell::new(),
        }
    }

    /// Lists at most `page_size` blobs per request (the service's default and maximum is 5000); tests use small
    /// pages to exercise continuation.
    #[must_use]
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = Some(page_size);
        self
    }

    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &AzureBlobConfig {
        &self.config
    }

    fn error(&self, action: impl Into<String>, failure: Failure) -> StorageError {
        StorageError {
            storage: self.name.clone(),
            action: action.into(),
            source: io::Error::new(failure.kind, failure.message),
        }
    }

    async fn client(&self) -> Result<&BlobContainerClient, Failure> {
        self.client
            .get_or_try_init(|| async { self.build_client() })
            .await
    }

    fn build_client(&self) -> Result<BlobContainerClient, Failure> {
        let (url, credential, options) = self.connection(&self.config.container_url())?;
        BlobContainerClient::new(
            url,
            credential,
            Some(BlobContainerClientOptions {
                client_options: options,
                ..BlobContainerClientOptions::default()
            }),
        )
        .map_err(|err| Failure::other(describe_error(&err)))
    }

    /// The account's Blob service, for its properties (CORS rules).
    fn service_client(&self) -> Result<BlobServiceClient, Failure> {
        let (url, credential, options) = self.connection(&format!("{}/", self.config.endpoint))?;
        BlobServiceClient::new(
            url,
            credential,
            Some(BlobServiceClientOptions {
                client_options: options,
                ..BlobServiceClientOptions::default()
            }),
        )
        .map_err(|err| Failure::other(describe_error(&err)))
    }

    /// The URL (with a SAS token when that is the authentication), the token credential and the client options
    /// (with Shared Key signing when that is the authentication) for a request to `base`.
    fn connection(&self, base: &str) -> Result<Connection, Failure> {
        let mut url = Url::parse(base)
            .map_err(|err| Failure::other(format!("invalid storage URL {base}: {err}")))?;
        let mut options = client_options(self.transport.clone(), None);
        let credential = match &self.config.auth {
            BlobAuth::Credential => Some(self.credential.clone()),
            BlobAuth::Sas(source) => {
                let sas = source.load().map_err(Failure::other)?;
                let query = sas.expose().trim().trim_start_matches('?');
                if !query.contains("sig=") {
                    return Err(Failure::other(
                        "the SAS token has no sig= parameter: give the query string of a SAS URL",
                    ));
                }
                url.set_query(Some(query));
                None
            }
            BlobAuth::AccessKey(source) => {
                let key = source.load().map_err(Failure::other)?;
                let key = base64::decode(key.expose().trim()).map_err(|_| {
                    Failure::other(
                        "the access key is not valid base64 (copy key1 or key2 of the account)",
                    )
                })?;
                options.per_try_policies.push(Arc::new(SharedKeyPolicy {
                    account: self.config.account.clone(),
                    key: hmac::Key::new(hmac::HMAC_SHA256, &key),
                }));
                None
            }
        };
        Ok((url, credential, options))
    }

    /// How many CORS rules the account's Blob service has. API Management's backup fails on an account that
    /// has any (docs/azure.md, "Pre-flight checks").
    async fn cors_rule_count(&self) -> Result<usize, StorageError> {
        let action = || {
            format!(
                "reading the Blob service properties of account {}",
                self.config.account
            )
        };
        let client = self.service_client().map_err(|f| self.error(action(), f))?;
        let properties = client
            .get_properties(None)
            .await
            .map_err(|err| self.error(action(), self.failure(err)))?
            .into_model()
            .map_err(|err| self.error(action(), Failure::other(describe_error(&err))))?;
        Ok(properties.cors.map_or(0, |rules| rules.len()))
    }

    /// An SDK error as a failure: status, Azure's code and message, and what to do about the common ones.
    fn failure(&self, err: azure_core::Error) -> Failure {
        let answer = match azure_storage_blob::StorageError::try_from(err) {
            Ok(answer) => answer,
            Err(err) => return Failure::other(describe_error(&err)),
        };
        let status = u16::from(answer.status_code);
        let code = answer
            .error_code
            .as_ref()
            .map_or_else(|| "(no error code)".to_owned(), ToString::to_string);
        let mut message = format!("Azure Storage answered {status} {code}");
        if let Some(text) = answer.message.as_deref().and_then(|m| m.lines().next())
            && !text.trim().is_empty()
        {
            message.push_str(": ");
            message.push_str(&redact(text.trim()));
        }
        if let Some(id) = &answer.request_id {
            let _ = write!(message, " (request id {id})");
        }
        let (kind, hint) = match (status, &answer.error_code) {
            (_, Some(StorageErrorCode::ContainerNotFound)) => (
                io::ErrorKind::NotFound,
                format!(
                    "container {} does not exist in account {}",
                    self.config.container, self.config.account
                ),
            ),
            (401 | 403, _) => (io::ErrorKind::PermissionDenied, self.permission_hint()),
            _ => (io::ErrorKind::Other, String::new()),
        };
        if !hint.is_empty() {
            message = format!("{hint}; {message}");
        }
        Failure { kind, message }
    }

    fn permission_hint(&self) -> String {
        let account = &self.config.account;
        match &self.config.auth {
            BlobAuth::Credential => format!(
                "not authorized: give rpod's identity \"Storage Blob Data Contributor\" on account {account} or \
                 container {}",
                self.config.container
            ),
            BlobAuth::Sas(_) => {
                "not authorized: check that the SAS token is for this account, has not expired, \
                                 and allows read, list and delete (sp=rld)"
                    .to_owned()
            }
            BlobAuth::AccessKey(_) => {
                format!(
                    "not authorized: check that the access key is a current key of account {account}"
                )
            }
        }
    }
}

fn to_chrono(time: OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.unix_timestamp(), time.nanosecond())
}

fn is_code(err: &azure_core::Error, code: &StorageErrorCode) -> bool {
    matches!(
        err.kind(),
        azure_core::error::ErrorKind::HttpResponse { error_code: Some(c), .. } if c == code.as_ref()
    )
}

/// What an SDK client is built from: its URL, its token credential (Entra) and its options (Shared Key signing).
type Connection = (Url, Option<Arc<dyn TokenCredential>>, ClientOptions);

const NOT_FOR_COMMANDS: &str = "azure_blob storages receive backups written by Azure services (API Management), not command output";

#[async_trait::async_trait]
impl Storage for AzureBlobStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "azure_blob"
    }

    fn create(&self, name: &str) -> Result<Box<dyn ArtifactWriter>, StorageError> {
        Err(self.error(
            format!("creating {name:?}"),
            Failure {
                kind: io::ErrorKind::Unsupported,
                message: NOT_FOR_COMMANDS.to_owned(),
            },
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactInfo>, StorageError> {
        let action = || format!("listing {prefix:?} in container {}", self.config.container);
        let client = self.client().await.map_err(|f| self.error(action(), f))?;
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            maxresults: self.page_size.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            ..BlobContainerClientListBlobsOptions::default()
        };
        let mut pager = client
            .list_blobs(Some(options))
            .map_err(|err| self.error(action(), self.failure(err)))?;
        let mut out = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|err| self.error(action(), self.failure(err)))?
        {
            let Some(name) = item.name else { continue };
            let properties = item.properties.unwrap_or_default();
            out.push(ArtifactInfo {
                name,
                size: properties.content_length.unwrap_or(0),
                created_at: properties.creation_time.and_then(to_chrono),
                modified_at: properties.last_modified.and_then(to_chrono),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn stat(&self, name: &str) -> Result<Option<ArtifactInfo>, StorageError> {
        let action = || format!("reading the properties of blob {name:?}");
        let client = self.client().await.map_err(|f| self.error(action(), f))?;
        let response = match client.blob_client(name).get_properties(None).await {
            Ok(response) => response,
            Err(err)
                if err.http_status() == Some(StatusCode::NotFound)
                    && !is_code(&err, &StorageErrorCode::ContainerNotFound) =>
            {
                return Ok(None);
            }
            Err(err) => return Err(self.error(action(), self.failure(err))),
        };
        let header =
            |err: azure_core::Error| self.error(action(), Failure::other(describe_error(&err)));
        let size = response.content_length().map_err(header)?.unwrap_or(0);
        Ok(Some(ArtifactInfo {
            name: name.to_owned(),
            size,
            created_at: response
                .creation_time()
                .map_err(header)?
                .and_then(to_chrono),
            modified_at: response
                .last_modified()
                .map_err(header)?
                .and_then(to_chrono),
        }))
    }

    async fn blob_cors_rules(&self) -> Result<Option<usize>, StorageError> {
        self.cors_rule_count().await.map(Some)
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let action = || format!("deleting blob {name:?}");
        let client = self.client().await.map_err(|f| self.error(action(), f))?;
        let options = BlobClientDeleteOptions {
            delete_snapshots: Some(DeleteSnapshotsOptionType::Include),
            ..BlobClientDeleteOptions::default()
        };
        match client.blob_client(name).delete(Some(options)).await {
            Ok(_) => Ok(()),
            Err(err) if is_code(&err, &StorageErrorCode::BlobNotFound) => Ok(()),
            Err(err) => Err(self.error(action(), self.failure(err))),
        }
    }

    async fn probe(&self) -> Result<(), StorageError> {
        let action = || {
            format!(
                "listing container {} of account {}",
                self.config.container, self.config.account
            )
        };
        let client = self.client().await.map_err(|f| self.error(action(), f))?;
        let options = BlobContainerClientListBlobsOptions {
            maxresults: Some(1),
            ..BlobContainerClientListBlobsOptions::default()
        };
        let mut pages = client
            .list_blobs(Some(options))
            .map_err(|err| self.error(action(), self.failure(err)))?
            .into_pages();
        pages
            .try_next()
            .await
            .map_err(|err| self.error(action(), self.failure(err)))?;
        Ok(())
    }
}

/// Signs each request with the account key per the Shared Key scheme (version 2009-09-19 and later).
struct SharedKeyPolicy {
    account: String,
    key: hmac::Key,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SharedKeyPolicy {
    fn string_to_sign(&self, request: &Request) -> String {
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str().to_owned())
                .unwrap_or_default()
        };
        // Since version 2015-02-21 a zero length is signed as the empty string.
        let length = match header("content-length") {
            text if !text.is_empty() => text,
            _ => request.body().len().unwrap_or(0).to_string(),
        };
        let length = if length == "0" { String::new() } else { length };
        let mut canonical_headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| {
                let value = v.as_str().split_whitespace().collect::<Vec<_>>().join(" ");
                (k.as_str().to_ascii_lowercase(), value)
            })
            .collect();
        canonical_headers.sort();
        let mut text = [
            request.method().as_ref().to_owned(),
            header("content-encoding"),
            header("content-language"),
            length,
            header("content-md5"),
            header("content-type"),
            header("date"),
            header("if-modified-since"),
            header("if-match"),
            header("if-none-match"),
            header("if-unmodified-since"),
            header("range"),
        ]
        .join("\n");
        text.push('\n');
        for (name, value) in canonical_headers {
            let _ = writeln!(text, "{name}:{value}");
        }
        // The account, then the path as sent; Azurite's path-style URLs give `/account/account/container`.
        let _ = write!(text, "/{}{}", self.account, request.url().path());
        let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in request.url().query_pairs() {
            parameters
                .entry(name.to_lowercase())
                .or_default()
                .push(value.into_owned());
        }
        for (name, mut values) in parameters {
            values.sort();
            let _ = write!(text, "\n{name}:{}", values.join(","));
        }
        text
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", to_rfc7231(&OffsetDateTime::now_utc()));
        let signature = hmac::sign(&self.key, self.string_to_sign(request).as_bytes());
        request.insert_header(
            "authorization",
            format!(
                "SharedKey {}:{}",
                self.account,
                base64::encode(signature.as_ref())
            ),
        );
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "the Shared Key policy must not be the last in the pipeline",
            )),
        }
    }
}
