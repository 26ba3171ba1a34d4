//! The Azure parts of the configuration: `[azure]` (credentials, Resource Manager endpoint, throttling),
//! `azure_blob` storages and `apim` targets.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::error::Problem;
use super::raw::Section;
use super::secret::SecretSource;

/// Resource Manager of the public cloud.
pub const PUBLIC_RESOURCE_MANAGER: &str = "https://management.azure.com";
/// Entra ID of the public cloud.
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

// ---------------------------------------------------------------------------------------------------------------
// Raw model.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzure {
    credential: Option<CredentialKind>,
    client_id: Option<String>,
    tenant_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    client_certificate_file: Option<PathBuf>,
    federated_token_file: Option<PathBuf>,
    resource_manager_endpoint: Option<String>,
    authority_host: Option<String>,
    request_timeout: Option<HumanDuration>,
    min_retry_after: Option<HumanDuration>,
    max_retry_after: Option<HumanDuration>,
    #[serde(default)]
    throttle: Section<RawThrottle>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, Section<RawAzure>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    write_burst: Option<u32>,
    write_per_second: Option<f64>,
    read_burst: Option<u32>,
    read_per_second: Option<f64>,
}

/// How rpod authenticates to Azure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// The VM's (or App Service's) managed identity, system- or user-assigned.
    ManagedIdentity,
    /// AKS workload identity: a federated Kubernetes service-account token.
    WorkloadIdentity,
    /// A service principal with a client secret.
    ClientSecret,
    /// A service principal with a certificate.
    ClientCertificate,
    /// The signed-in Azure CLI (developer machines).
    AzureCli,
}

impl CredentialKind {
    /// The `credential` value as written in the file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ManagedIdentity => "managed_identity",
            Self::WorkloadIdentity => "workload_identity",
            Self::ClientSecret => "client_secret",
            Self::ClientCertificate => "client_certificate",
            Self::AzureCli => "azure_cli",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzureBlobStorage {
    account: String,
    container: String,
    endpoint: Option<String>,
    access: Option<ApimAccess>,
    access_key_file: Option<PathBuf>,
    access_key_env: Option<String>,
    identity_client_id: Option<String>,
    auth: Option<BlobAuthKind>,
    sas_file: Option<PathBuf>,
    sas_env: Option<String>,
}

/// How API Management itself reaches the storage account (sent in the backup request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApimAccess {
    /// The account key travels in the request.
    AccessKey,
    /// The service's system-assigned managed identity.
    ManagedIdentity,
    /// One of the service's user-assigned managed identities.
    UserManagedIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BlobAuthKind {
    Credential,
    Sas,
    AccessKey,
}

// ---------------------------------------------------------------------------------------------------------------
// Validated model.

/// `[azure]`.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// How rpod obtains tokens.
    pub credential: Credential,
    /// Resource Manager base URL, without a trailing slash; the token scope is `<this>/.default`.
    pub resource_manager_endpoint: String,
    /// Entra ID authority for service principals and workload identity.
    pub authority_host: String,
    /// Whole-request timeout of one ARM request.
    pub request_timeout: Duration,
    /// `Retry-After` values are clamped to at least this (ARM sends 10..600 s) ...
    pub min_retry_after: Duration,
    /// ... and at most this.
    pub max_retry_after: Duration,
    /// Client-side write bucket per subscription: burst and refill per second.
    pub write_limits: (f64, f64),
    /// Client-side read bucket per subscription.
    pub read_limits: (f64, f64),
    /// PEM file of a private CA trusted for this cloud's connections (profiles only).
    pub ca_file: Option<PathBuf>,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            credential: Credential::ManagedIdentity { client_id: None },
            resource_manager_endpoint: PUBLIC_RESOURCE_MANAGER.to_owned(),
            authority_host: PUBLIC_AUTHORITY_HOST.to_owned(),
            request_timeout: Duration::from_mins(1),
            min_retry_after: Duration::from_secs(10),
            max_retry_after: Duration::from_mins(10),
            write_limits: (200.0, 10.0),
            read_limits: (250.0, 25.0),
            ca_file: None,
        }
    }
}

impl AzureConfig {
    /// The OAuth scope of Resource Manager tokens.
    #[must_use]
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource_manager_endpoint)
    }
}

/// A resolved credential choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Managed identity; `client_id` selects a user-assigned one.
    ManagedIdentity {
        /// User-assigned identity's client id.
        client_id: Option<String>,
    },
    /// AKS workload identity; unset fields come from the variables the AKS webhook injects
    /// (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity {
        /// App (client) id.
        client_id: Option<String>,
        /// Tenant id.
        tenant_id: Option<String>,
        /// Projected service-account token.
        token_file: Option<PathBuf>,
    },
    /// Service principal with a secret.
    ClientSecret {
        /// Tenant id.
        tenant_id: String,
        /// App (client) id.
        client_id: String,
        /// The secret.
        secret: SecretSource,
    },
    /// Service principal with a certificate: a PEM file holding the certificate and its PKCS#8 private key.
    ClientCertificate {
        /// Tenant id.
        tenant_id: String,
        /// App (client) id.
        client_id: String,
        /// PEM file.
        certificate_file: PathBuf,
    },
    /// `az account get-access-token`.
    AzureCli {
        /// Tenant to ask the CLI for.
        tenant_id: Option<String>,
    },
}

impl Credential {
    /// The `credential` value as written in the file.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ManagedIdentity { .. } => CredentialKind::ManagedIdentity,
            Self::WorkloadIdentity { .. } => CredentialKind::WorkloadIdentity,
            Self::ClientSecret { .. } => CredentialKind::ClientSecret,
            Self::ClientCertificate { .. } => CredentialKind::ClientCertificate,
            Self::AzureCli { .. } => CredentialKind::AzureCli,
        }
        .as_str()
    }
}

/// An `azure_blob` storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureBlobConfig {
    /// Storage account name.
    pub account: String,
    /// Blob container.
    pub container: String,
    /// Account blob endpoint without a trailing slash, e.g. `https://NAME.blob.core.windows.net` or Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    /// How API Management reaches the account.
    pub access: BlobAccess,
    /// How rpod reaches the account (list, delete, probe).
    pub auth: BlobAuth,
}

impl AzureBlobConfig {
    /// The container's URL.
    #[must_use]
    pub fn container_url(&self) -> String {
        format!("{}/{}", self.endpoint, self.container)
    }
}

/// How API Management reaches the storage account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobAccess {
    /// The account key is sent in the backup request.
    AccessKey(SecretSource),
    /// The service's system-assigned identity.
    ManagedIdentity,
    /// A user-assigned identity of the service.
    UserManagedIdentity {
        /// Its client id.
        client_id: String,
    },
}

impl BlobAccess {
    /// The `access` value as written in the file.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AccessKey(_) => "access_key",
            Self::ManagedIdentity => "managed_identity",
            Self::UserManagedIdentity { .. } => "user_managed_identity",
        }
    }
}

/// How rpod itself reaches the storage account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobAuth {
    /// An Entra token from `[azure]` (needs an https endpoint).
    Credential,
    /// A SAS token (the query string, with or without a leading `?`).
    Sas(SecretSource),
    /// The account key, signing each request per the Shared Key scheme.
    AccessKey(SecretSource),
}

// ---------------------------------------------------------------------------------------------------------------
// Validation.

fn valid_url(text: &str) -> bool {
    (text.starts_with("https://") || text.starts_with("http://"))
        && text.len() > "https://".len()
        && !text.contains(char::is_whitespace)
        && !text.contains(['?', '#'])
}

fn endpoint(
    text: Option<&String>,
    default: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> String {
    let text = text.map_or(default, String::as_str);
    if !valid_url(text) {
        problems.push(Problem::at(
            key,
            format!("invalid URL {text:?}: write e.g. {default:?} (no query string)"),
        ));
    }
    text.trim_end_matches('/').to_owned()
}

fn non_empty(value: Option<&String>, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Some(v.clone()),
        Some(_) => {
            problems.push(Problem::at(key, "must not be empty"));
            None
        }
        None => None,
    }
}

/// `[azure]` and its `[azure.profiles.NAME]`: the public cloud's settings, and each profile's by name.
pub(super) fn validate_azure_section(
    raw: &RawAzure,
    problems: &mut Vec<Problem>,
) -> (AzureConfig, std::collections::BTreeMap<String, AzureConfig>) {
    let azure = validate_azure(raw, "azure", problems);
    if raw.ca_file.is_some() {
        problems.push(Problem::at(
            "azure.ca_file",
            "only used in [azure.profiles.NAME]: a private CA is trusted for one stamp's connections, not for \
             the public cloud's",
        ));
    }
    let mut profiles = std::collections::BTreeMap::new();
    for (name, profile) in &raw.profiles {
        let key = format!("azure.profiles.{name}");
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            || name.is_empty()
        {
            problems.push(Problem::at(
                &key,
                "profile names use only letters, digits, '-' and '_'",
            ));
        }
        if !profile.profiles.is_empty() {
            problems.push(Problem::at(
                format!("{key}.profiles"),
                "profiles do not nest: declare every profile under [azure.profiles]",
            ));
        }
        if profile.resource_manager_endpoint.is_none() {
            problems.push(Problem::at(
                &key,
                "a profile is a cloud of its own and needs resource_manager_endpoint, e.g. \
                 \"https://adminmanagement.local.azurestack.external\"",
            ));
        }
        let mut config = validate_azure(profile, &key, problems);
        if let Some(ca_file) = &profile.ca_file {
            if ca_file.as_os_str().is_empty() {
                problems.push(Problem::at(format!("{key}.ca_file"), "must not be empty"));
            }
            config.ca_file = Some(ca_file.clone());
        }
        profiles.insert(name.clone(), config);
    }
    (azure, profiles)
}

fn validate_azure(raw: &RawAzure, prefix: &str, problems: &mut Vec<Problem>) -> AzureConfig {
    let defaults = AzureConfig::default();
    let kind = raw.credential.unwrap_or(CredentialKind::ManagedIdentity);
    let client_id = non_empty(
        raw.client_id.as_ref(),
        &format!("{prefix}.client_id"),
        problems,
    );
    let tenant_id = non_empty(
        raw.tenant_id.as_ref(),
        &format!("{prefix}.tenant_id"),
        problems,
    );
    let mut require = |value: &Option<String>, key: &str| {
        if value.is_none() && !problems.iter().any(|p| p.path == key) {
            problems.push(Problem::at(
                prefix,
                format!("credential = {:?} needs {key}", kind.as_str()),
            ));
        }
        value.clone().unwrap_or_default()
    };
    let secret_given = raw.client_secret_file.is_some() || raw.client_secret_env.is_some();
    let credential = match kind {
        CredentialKind::ManagedIdentity => Credential::ManagedIdentity { client_id },
        CredentialKind::WorkloadIdentity => Credential::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file: raw.federated_token_file.clone(),
        },
        CredentialKind::ClientSecret => {
            let tenant_id = require(&tenant_id, &format!("{prefix}.tenant_id"));
            let client_id = require(&client_id, &format!("{prefix}.client_id"));
            let secret = SecretSource::from_pair(
                raw.client_secret_file.as_ref(),
                raw.client_secret_env.as_ref(),
                "client_secret",
            )
            .unwrap_or_else(|message| {
                problems.push(Problem::at(prefix, message));
                SecretSource::Env(String::new())
            });
            Credential::ClientSecret {
                tenant_id,
                client_id,
                secret,
            }
        }
        CredentialKind::ClientCertificate => {
            let tenant_id = require(&tenant_id, &format!("{prefix}.tenant_id"));
            let client_id = require(&client_id, &format!("{prefix}.client_id"));
            let certificate_file = raw.client_certificate_file.clone().unwrap_or_else(|| {
                problems.push(Problem::at(
                    prefix,
                    "credential = \"client_certificate\" needs client_certificate_file (PEM: certificate and \
                     PKCS#8 private key)",
                ));
                PathBuf::new()
            });
            Credential::ClientCertificate {
                tenant_id,
                client_id,
                certificate_file,
            }
        }
        CredentialKind::AzureCli => Credential::AzureCli { tenant_id },
    };
    // Keys that only one credential reads are errors elsewhere: a forgotten `credential = ...` line must not
    // silently fall back to another identity.
    let stray = [
        (
            secret_given && kind != CredentialKind::ClientSecret,
            "client_secret_file / client_secret_env",
            "client_secret",
        ),
        (
            raw.client_certificate_file.is_some() && kind != CredentialKind::ClientCertificate,
            "client_certificate_file",
            "client_certificate",
        ),
        (
            raw.federated_token_file.is_some() && kind != CredentialKind::WorkloadIdentity,
            "federated_token_file",
            "workload_identity",
        ),
    ];
    for (set, key, needs) in stray {
        if set {
            problems.push(Problem::at(
                prefix,
                format!("{key} is only used with credential = {needs:?}"),
            ));
        }
    }
    let resource_manager_endpoint = endpoint(
        raw.resource_manager_endpoint.as_ref(),
        PUBLIC_RESOURCE_MANAGER,
        &format!("{prefix}.resource_manager_endpoint"),
        problems,
    );
    let authority_host = endpoint(
        raw.authority_host.as_ref(),
        PUBLIC_AUTHORITY_HOST,
        &format!("{prefix}.authority_host"),
        problems,
    );
    let request_timeout = raw
        .request_timeout
        .map_or(defaults.request_timeout, |d| d.0);
    if request_timeout.is_zero() {
        problems.push(Problem::at(
            format!("{prefix}.request_timeout"),
            "must be longer than 0s",
        ));
    }
    let min_retry_after = raw
        .min_retry_after
        .map_or(defaults.min_retry_after, |d| d.0);
    let max_retry_after = raw
        .max_retry_after
        .map_or(defaults.max_retry_after, |d| d.0);
    if min_retry_after.is_zero() {
        problems.push(Problem::at(
            format!("{prefix}.min_retry_after"),
            "must be longer than 0s",
        ));
    } else if max_retry_after < min_retry_after {
        problems.push(Problem::at(
            format!("{prefix}.max_retry_after"),
            format!(
                "max_retry_after {} is shorter than min_retry_after {}",
                HumanDuration(max_retry_after),
                HumanDuration(min_retry_after)
            ),
        ));
    }
    let throttle = &raw.throttle;
    let limits = |burst: Option<u32>,
                  rate: Option<f64>,
                  name: &str,
                  default: (f64, f64),
                  problems: &mut Vec<Problem>| {
        let burst = burst.map_or(default.0, f64::from);
        let rate = rate.unwrap_or(default.1);
        if burst < 1.0 {
            problems.push(Problem::at(
                format!("{prefix}.throttle.{name}_burst"),
                "must be at least 1",
            ));
        }
        if !rate.is_finite() || rate <= 0.0 {
            problems.push(Problem::at(
                format!("{prefix}.throttle.{name}_per_second"),
                "must be a positive number",
            ));
        }
        (burst, rate)
    };
    let write_limits = limits(
        throttle.write_burst,
        throttle.write_per_second,
        "write",
        defaults.write_limits,
        problems,
    );
    let read_limits = limits(
        throttle.read_burst,
        throttle.read_per_second,
        "read",
        defaults.read_limits,
        problems,
    );
    AzureConfig {
        credential,
        resource_manager_endpoint,
        authority_host,
        request_timeout,
        min_retry_after,
        max_retry_after,
        write_limits,
        read_limits,
        ca_file: None,
    }
}

/// Storage account names: 3-24 lowercase letters and digits.
fn valid_account(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Container names: 3-63 lowercase letters, digits and single dashes, starting and ending with a letter or digit
/// (`$root` aside, which rpod has no use for).
fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

pub(super) fn validate_azure_blob(
    raw: &RawAzureBlobStorage,
    path: &str,
    problems: &mut Vec<Problem>,
) -> AzureBlobConfig {
    if !valid_account(&raw.account) {
        problems.push(Problem::at(
            format!("{path}.account"),
            format!(
                "invalid storage account name {:?}: 3-24 lowercase letters and digits",
                raw.account
            ),
        ));
    }
    if !valid_container(&raw.container) {
        problems.push(Problem::at(
            format!("{path}.container"),
            format!(
                "invalid container name {:?}: 3-63 lowercase letters, digits and single dashes",
                raw.container
            ),
        ));
    }
    let default_endpoint = format!("https://{}.blob.core.windows.net", raw.account);
    let endpoint = endpoint(
        raw.endpoint.as_ref(),
        &default_endpoint,
        &format!("{path}.endpoint"),
        problems,
    );
    let key_given = raw.access_key_file.is_some() || raw.access_key_env.is_some();
    let access_key = |problems: &mut Vec<Problem>, why: &str| {
        SecretSource::from_pair(
            raw.access_key_file.as_ref(),
            raw.access_key_env.as_ref(),
            "access_key",
        )
        .unwrap_or_else(|message| {
            problems.push(Problem::at(path, format!("{message} ({why})")));
            SecretSource::Env(String::new())
        })
    };
    let access = match raw.access.unwrap_or(ApimAccess::ManagedIdentity) {
        ApimAccess::AccessKey => BlobAccess::AccessKey(access_key(
            problems,
            "access = \"access_key\" sends it to API Management",
        )),
        ApimAccess::ManagedIdentity => BlobAccess::ManagedIdentity,
        ApimAccess::UserManagedIdentity => match &raw.identity_client_id {
            Some(id) if !id.trim().is_empty() => BlobAccess::UserManagedIdentity {
                client_id: id.clone(),
            },
            _ => {
                problems.push(Problem::at(
                    format!("{path}.identity_client_id"),
                    "access = \"user_managed_identity\" needs the identity's client id",
                ));
                BlobAccess::ManagedIdentity
            }
        },
    };
    if raw.identity_client_id.is_some() && !matches!(access, BlobAccess::UserManagedIdentity { .. })
    {
        problems.push(Problem::at(
            format!("{path}.identity_client_id"),
            "only used with access = \"user_managed_identity\"",
        ));
    }
    let sas_given = raw.sas_file.is_some() || raw.sas_env.is_some();
    let auth = match raw.auth.unwrap_or(BlobAuthKind::Credential) {
        BlobAuthKind::Credential => {
            if !endpoint.starts_with("https://") {
                problems.push(Problem::at(
                    format!("{path}.auth"),
                    "auth = \"credential\" sends a bearer token and needs an https endpoint; use sas or \
                     access_key for a plain-http endpoint",
                ));
            }
            BlobAuth::Credential
        }
        BlobAuthKind::Sas => BlobAuth::Sas(
            SecretSource::from_pair(raw.sas_file.as_ref(), raw.sas_env.as_ref(), "sas")
                .unwrap_or_else(|message| {
                    problems.push(Problem::at(path, message));
                    SecretSource::Env(String::new())
                }),
        ),
        BlobAuthKind::AccessKey => BlobAuth::AccessKey(access_key(
            problems,
            "auth = \"access_key\" signs rpod's requests with it",
        )),
    };
    if sas_given && !matches!(auth, BlobAuth::Sas(_)) {
        problems.push(Problem::at(
            path,
            "sas_file / sas_env are only used with auth = \"sas\"",
        ));
    }
    if key_given
        && !matches!(access, BlobAccess::AccessKey(_))
        && !matches!(auth, BlobAuth::AccessKey(_))
    {
        problems.push(Problem::at(
            path,
            "access_key_file / access_key_env are only used with access = \"access_key\" or auth = \"access_key\"",
        ));
    }
    AzureBlobConfig {
        account: raw.account.clone(),
        container: raw.container.clone(),
        endpoint,
        access,
        auth,
    }
}
