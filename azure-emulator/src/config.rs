//! What a test tells the emulator: its settings ([`EmulatorConfig`]), the API Management services it hosts
//! ([`ServiceSpec`]) and the storage accounts backups go to ([`StorageAccount`]).

use std::fmt;
use std::time::Duration;

use crate::azurite::Azurite;
use crate::settings::{CertificateSource, CustomHostname, VirtualNetworkType};

/// The audience an Azure Stack Hub administrator endpoint lists by default.
pub const DEFAULT_STACK_AUDIENCE: &str =
    "https://adminmanagement.adfs.azurestack.local/4de154de-f8a8-4017-af41-df619da68155";

/// One gibibyte.
pub(crate) const GIB: u64 = 1024 * 1024 * 1024;

/// Settings of one emulator instance. [`Default`] mimics Azure; tests shorten the durations.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Loopback port to listen on; 0 (the default) lets the system choose.
    pub port: u16,
    /// `Retry-After` seconds on 202 answers (default 60, as Azure sends; tests use 1).
    pub retry_after_secs: u64,
    /// How long a backup runs before it completes (default 9 minutes, as a real Developer backup); also how long
    /// a restore runs unless [`Self::restore_duration`] is set.
    pub operation_duration: Duration,
    /// How long a restore runs before it completes; `None` (the default) takes [`Self::operation_duration`].
    /// Real restores take longer than backups (about 30 minutes against 9 in the recordings).
    pub restore_duration: Option<Duration>,
    /// Whether the 202 answering a backup or restore POST carries `//operationresults/` in its `Location`, as
    /// Azure did in 2021 (default true). Later polls always get a single slash.
    pub double_slash_first_location: bool,
    /// Recovery Services: how long the operation phase of an on-demand VM backup runs before its operation
    /// status turns `Succeeded` with a `jobId` (default 2 s; Azure's is about instant).
    pub vm_operation_duration: Duration,
    /// Recovery Services: how long a VM backup job runs from its POST to `Completed` (default 71 minutes, as in
    /// the recorded exchange). Its first tenth is the "Take Snapshot" task.
    pub vm_job_duration: Duration,
    /// Recovery Services: recovery points per page of `GET .../recoveryPoints` (default 50; at least 1).
    pub recovery_point_page_size: usize,
    /// ARM write throttling per subscription: `(burst, refill per second)`, e.g. `Some((200.0, 10.0))` as Azure
    /// does today. `None` (the default) never throttles writes.
    pub write_bucket: Option<(f64, f64)>,
    /// ARM read throttling per subscription, like [`Self::write_bucket`] (Azure: 250 burst, 25 per second).
    pub read_bucket: Option<(f64, f64)>,
    /// Azure region of the services, used in their `location` and in operation ids (default `westeurope`).
    pub region: String,
    /// The `x-identity-header` value the App Service managed identity endpoint requires.
    pub identity_header: String,
    /// Every access token the emulator issues starts with this, so a test can look for leaks of it.
    pub token_prefix: String,
    /// Lifetime of issued tokens (`expires_in`; default 3599 s). ARM refuses a token after it.
    pub token_lifetime: Duration,
    /// Whether ARM calls need `Authorization: Bearer <a token this emulator issued>` (default true); without one
    /// they are answered 401 `InvalidAuthenticationToken`.
    pub require_token: bool,
    /// Whether the emulator serves HTTPS only (default false): with a leaf certificate for `127.0.0.1`, `::1`
    /// and `localhost` issued by a test CA generated at start ([`crate::Emulator::ca_pem`]). The base URL is then
    /// `https://127.0.0.1:PORT`.
    pub tls: bool,
    /// Azure Stack Hub: who issues the stamp's tokens, as `GET /metadata/endpoints` tells (default AD FS).
    pub stack_identity: StackIdentity,
    /// Azure Stack Hub: the audience `GET /metadata/endpoints` lists (default
    /// `https://adminmanagement.adfs.azurestack.local/4de154de-f8a8-4017-af41-df619da68155`).
    pub stack_audience: String,
    /// Azure Stack Hub: how long an infrastructure backup runs from its start to its end (default 30 minutes;
    /// the docs say 20 to 40). A backup location may override it.
    pub stack_backup_duration: Duration,
    /// Azure Stack Hub: the part of a backup's duration after which the backups list already shows it
    /// `Succeeded` while its operation still runs (default 0.6: a 30-minute backup looks done 12 minutes early).
    /// Taken within 0 to 1; anything else (NaN included) counts as 1, never early.
    pub stack_list_early_fraction: f64,
    /// Azure Stack Hub: how many bytes a backup takes on the external share (default 10 GiB).
    pub stack_backup_size_bytes: u64,
    /// Azure Stack Hub: backups per page of `GET .../backups` (default 50; at least 1).
    pub stack_backup_page_size: usize,
    /// Azure Stack Hub: the length of one hour of `backupFrequencyInHours` for the built-in scheduler (default
    /// one hour; tests shorten it, e.g. to one second). The scheduler starts a backup every
    /// `backupFrequencyInHours` times this.
    pub stack_scheduler_hour: Duration,
}

/// Who issues the tokens of an Azure Stack Hub stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StackIdentity {
    /// AD FS on the stamp (disconnected deployments): `loginEndpoint` is `{base}/adfs/`.
    #[default]
    Adfs,
    /// Entra ID (connected deployments): `loginEndpoint` is `{base}/`, the Entra ID authority the emulator
    /// also serves.
    EntraId,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            port: 0,
            retry_after_secs: 60,
            operation_duration: Duration::from_mins(9),
            restore_duration: None,
            double_slash_first_location: true,
            vm_operation_duration: Duration::from_secs(2),
            vm_job_duration: Duration::from_mins(71),
            recovery_point_page_size: 50,
            write_bucket: None,
            read_bucket: None,
            region: "westeurope".to_owned(),
            identity_header: "emulator-identity-header".to_owned(),
            token_prefix: "emulator-token-".to_owned(),
            token_lifetime: Duration::from_secs(3599),
            require_token: true,
            tls: false,
            stack_identity: StackIdentity::Adfs,
            stack_audience: DEFAULT_STACK_AUDIENCE.to_owned(),
            stack_backup_duration: Duration::from_mins(30),
            stack_list_early_fraction: 0.6,
            stack_backup_size_bytes: 10 * GIB,
            stack_backup_page_size: 50,
            stack_scheduler_hour: Duration::from_hours(1),
        }
    }
}

impl EmulatorConfig {
    /// Settings for fast tests: operations (backups and restores) take 200 ms and `Retry-After` is 1 s; VM
    /// backup operations take 100 ms and their jobs 500 ms; Azure Stack Hub backups take 1 s. Plain HTTP.
    #[must_use]
    pub fn fast() -> Self {
        Self {
            retry_after_secs: 1,
            operation_duration: Duration::from_millis(200),
            vm_operation_duration: Duration::from_millis(100),
            vm_job_duration: Duration::from_millis(500),
            stack_backup_duration: Duration::from_secs(1),
            ..Self::default()
        }
    }
}

/// One API Management service the emulator hosts. Build it with [`ServiceSpec::new`] and the `with_*` methods;
/// fields added later get defaults there, so callers that do so keep compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Subscription id.
    pub subscription: String,
    /// Resource group name.
    pub resource_group: String,
    /// Service name.
    pub name: String,
    /// SKU name: `Developer`, `Basic`, `Standard`, `Premium`, `Isolated`, `Consumption`, `BasicV2`, `StandardV2`.
    pub sku: String,
    /// SKU capacity (units).
    pub capacity: u32,
    /// Whether the service has a system-assigned managed identity.
    pub system_identity: bool,
    /// Client ids of the user-assigned managed identities attached to the service.
    pub user_identity_client_ids: Vec<String>,
    /// How many APIs the service has (default 1, `echo-api`, as a new service has). Part of the configuration:
    /// a backup records it and a restore sets it.
    pub apis: u32,
    /// How many products the service has (default 2, `starter` and `unlimited`, as a new service has). Part of
    /// the configuration, like [`Self::apis`].
    pub products: u32,
    /// Whether the developer portal has a current published revision (default true). Not in a backup: a
    /// restore leaves it as it is.
    pub portal_published: bool,
    /// Custom gateway hostnames besides `{name}.azure-api.net` (default none). Not changed by a restore.
    pub custom_hostnames: Vec<CustomHostname>,
    /// Where the service sits in a virtual network (default `None`). Not in a backup.
    pub virtual_network_type: VirtualNetworkType,
}

impl ServiceSpec {
    /// A Developer service with one unit and a system-assigned identity, as a new service is: one API, two
    /// products, a published developer portal, only its default hostname, no virtual network.
    #[must_use]
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
            sku: "Developer".to_owned(),
            capacity: 1,
            system_identity: true,
            user_identity_client_ids: Vec::new(),
            apis: 1,
            products: 2,
            portal_published: true,
            custom_hostnames: Vec::new(),
            virtual_network_type: VirtualNetworkType::None,
        }
    }

    /// The same service with another SKU.
    #[must_use]
    pub fn with_sku(mut self, sku: &str, capacity: u32) -> Self {
        sku.clone_into(&mut self.sku);
        self.capacity = capacity;
        self
    }

    /// The same service with or without a system-assigned identity.
    #[must_use]
    pub fn with_system_identity(mut self, enabled: bool) -> Self {
        self.system_identity = enabled;
        self
    }

    /// The same service with one more user-assigned identity.
    #[must_use]
    pub fn with_user_identity(mut self, client_id: &str) -> Self {
        self.user_identity_client_ids.push(client_id.to_owned());
        self
    }

    /// The same service with `apis` APIs and `products` products.
    #[must_use]
    pub fn with_content(mut self, apis: u32, products: u32) -> Self {
        self.apis = apis;
        self.products = products;
        self
    }

    /// The same service with its developer portal published or not.
    #[must_use]
    pub fn with_portal_published(mut self, published: bool) -> Self {
        self.portal_published = published;
        self
    }

    /// The same service with one more custom gateway hostname (replacing one of the same name).
    #[must_use]
    pub fn with_custom_hostname(mut self, host_name: &str, source: CertificateSource) -> Self {
        self.set_custom_hostname(CustomHostname::new(host_name, source));
        self
    }

    /// The same service in another virtual network placement.
    #[must_use]
    pub fn with_virtual_network_type(mut self, kind: VirtualNetworkType) -> Self {
        self.virtual_network_type = kind;
        self
    }

    /// Adds a custom hostname, or replaces the one with the same name (hostnames compare ignoring case).
    pub(crate) fn set_custom_hostname(&mut self, hostname: CustomHostname) {
        match self
            .custom_hostnames
            .iter_mut()
            .find(|h| h.host_name.eq_ignore_ascii_case(&hostname.host_name))
        {
            Some(existing) => *existing = hostname,
            None => self.custom_hostnames.push(hostname),
        }
    }

    /// The ARM resource id, `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{name}`.
    #[must_use]
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// A storage account that API Management may back up to; the emulator writes backup blobs there.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageAccount {
    /// Account name, as sent in `storageAccount`.
    pub name: String,
    /// Its blob endpoint, e.g. Azurite's `http://127.0.0.1:PORT/devstoreaccount1`.
    pub blob_endpoint: String,
    /// Its access key (base64), which `accessKey` must match and which the emulator signs with.
    pub key: String,
    /// Whether managed identities are allowed to write to it (default true); when false, managed-identity
    /// backups are refused as not authorized.
    pub managed_identities_authorized: bool,
}

impl StorageAccount {
    /// An account at `blob_endpoint` with `key`, open to managed identities.
    #[must_use]
    pub fn new(name: &str, blob_endpoint: &str, key: &str) -> Self {
        Self {
            name: name.to_owned(),
            blob_endpoint: blob_endpoint.to_owned(),
            key: key.to_owned(),
            managed_identities_authorized: true,
        }
    }

    /// Azurite's account, open to managed identities.
    #[must_use]
    pub fn azurite(azurite: &Azurite) -> Self {
        Self::new(azurite.account(), &azurite.blob_endpoint(), azurite.key())
    }

    /// The same account with managed identities allowed or refused.
    #[must_use]
    pub fn with_managed_identities_authorized(mut self, authorized: bool) -> Self {
        self.managed_identities_authorized = authorized;
        self
    }
}

impl fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageAccount")
            .field("name", &self.name)
            .field("blob_endpoint", &self.blob_endpoint)
            .field("key", &"***")
            .field(
                "managed_identities_authorized",
                &self.managed_identities_authorized,
            )
            .finish()
    }
}
