//! The validated model: what the rest of rpod is built from. [`TargetKind`] is generated from the one list of
//! target kinds, [`target_kinds`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use super::azure::AzureConfig;
use super::catalog::CatalogConfig;
use super::change::{OnChange, WebhookConfig};
use super::kind::{KindSpec, StorageConfig};
use super::raw::LogFormat;
use super::restore::{Drill, Standby};
use super::schedule::Schedule;
use super::secret::SecretSource;
use super::template::NameTemplate;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: Daemon,
    /// Where the catalog lives (`[catalog]`; the `SQLite` file in `state_dir` when absent).
    pub catalog: CatalogConfig,
    /// Azure credentials and Resource Manager settings (defaults when `[azure]` is absent).
    pub azure: AzureConfig,
    /// `[azure.profiles.NAME]`: other clouds (Azure Stack Hub stamps), by name.
    pub azure_profiles: BTreeMap<String, AzureConfig>,
    /// Event Grid deliveries, when `[webhook]` is configured.
    pub webhook: Option<WebhookConfig>,
    /// Named storages, by name.
    pub storages: BTreeMap<String, StorageConfig>,
    /// Targets in file order.
    pub targets: Vec<TargetConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Holds the catalog `rpod.db`.
    pub state_dir: PathBuf,
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Default zone for schedules.
    pub timezone: Tz,
    /// Backups that may run at once across all targets.
    pub max_concurrent_operations: usize,
    /// Log line format.
    pub log_format: LogFormat,
    /// How long a shutdown waits for running backups before killing them.
    pub shutdown_timeout: Duration,
    /// How often compliance, expiry and pruning are evaluated.
    pub evaluation_interval: Duration,
    /// How often storages are compared with the catalog (docs/design.md, "Reconciliation").
    pub reconcile_interval: Duration,
    /// The bearer token every mutating API request must carry (`api_token_file` / `api_token_env`).
    pub api_token: Option<SecretSource>,
    /// A listener beyond loopback without a token was asked for on purpose.
    pub allow_unauthenticated_api: bool,
    /// What this replica calls itself (`replica_id`); `None`: its host name and process id.
    pub replica_id: Option<String>,
}

impl Daemon {
    /// The key the API token was configured under, for problems with it.
    #[must_use]
    pub fn api_token_key(&self) -> &'static str {
        match self.api_token {
            Some(SecretSource::Env(_)) => "daemon.api_token_env",
            _ => "daemon.api_token_file",
        }
    }
}

/// One `[[targets]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique name; the `target` label of every metric.
    pub name: String,
    /// Name of the storage its backups go to; `None` for a kind whose recovery points live in the protected
    /// system (a vault, a platform): it is built with `storage::ManagedStorage`.
    pub storage: Option<String>,
    /// How backups are named in the storage.
    pub artifact_name: NameTemplate,
    /// The resolved policy (target over `[defaults.policy]` over built-in defaults).
    pub policy: Policy,
    /// What to back up and how.
    pub kind: TargetKind,
    /// Restore drills (`[targets.drill]`).
    pub drill: Option<Drill>,
    /// A warm standby kept in sync (`[targets.standby]`).
    pub standby: Option<Standby>,
}

/// Every target kind, once: its variant of [`TargetKind`], its `kind` as the file writes it, the raw model of
/// its configuration file and its validated spec. Adding a kind is adding its line here (docs/architecture.md,
/// "Adding a target kind"); everything that must know every kind is built from this list by the macro named
/// `$then`: [`TargetKind`] here, the reading of a target table (`file.rs`) and `providers::build`.
macro_rules! target_kinds {
    ($then:ident) => {
        $then! {
            /// A local program whose standard output is the backup stream.
            Command = "command": $crate::config::command::RawCommandTarget => $crate::config::command::CommandSpec,
            /// An Azure API Management service, backed up through Resource Manager.
            Apim = "apim": $crate::config::apim::RawApimTarget => $crate::config::apim::ApimSpec,
            /// An Azure VM protected by Azure Backup in a Recovery Services vault.
            RecoveryServicesVm = "recovery_services_vm":
                $crate::config::recovery_services_vm::RawRecoveryServicesVmTarget
                => $crate::config::recovery_services_vm::RecoveryServicesVmSpec,
            /// An Azure Stack Hub stamp's infrastructure backup, through its administrator Resource Manager.
            AzureStackInfra = "azure_stack_infra":
                $crate::config::azure_stack_infra::RawAzureStackInfraTarget
                => $crate::config::azure_stack_infra::AzureStackInfraSpec,
        }
    };
}
pub(crate) use target_kinds;

/// Builds, from [`target_kinds`], the enum of kinds.
macro_rules! declare_target_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal: $raw:ty => $spec:ty,)*) => {
        /// The provider-specific part of a target.
        #[derive(Debug, Clone)]
        pub enum TargetKind {
            $($(#[$doc])* $variant($spec),)*
        }

        impl TargetKind {
            /// The kind's validated part, as every layer may ask of it.
            #[must_use]
            pub fn spec(&self) -> &dyn KindSpec {
                match self {
                    $(Self::$variant(spec) => spec,)*
                }
            }

            /// The `kind` as written in the file.
            #[must_use]
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }
        }
    };
}
target_kinds!(declare_target_kinds);

impl TargetKind {
    /// The Resource Manager resource whose Event Grid events are this target's changes, for the kinds that have
    /// one (API Management: the service); the webhook routes deliveries by it.
    #[must_use]
    pub fn event_grid_resource(&self) -> Option<String> {
        self.spec().event_grid_resource()
    }
}

/// Resolved per-target policy (docs/design.md, "Policy semantics").
#[derive(Debug, Clone)]
pub struct Policy {
    /// Newest restorable backup must never be older than this.
    pub rpo: Duration,
    /// Explicit watchdog lead; `None` means 10 % of `rpo`.
    pub rpo_lead: Option<Duration>,
    /// Cron schedule, if any.
    pub schedule: Option<Schedule>,
    /// How long a backup stays restorable.
    pub expiry: Duration,
    /// Warn when the last restorable backup expires within this.
    pub warn_before_expiry: Duration,
    /// Delete expired artifacts.
    pub prune: bool,
    /// Keep at most this many restorable backups (the newest is always kept).
    pub keep_last: Option<u32>,
    /// Attempts per trigger before giving up until the next trigger.
    pub max_attempts: u32,
    /// First retry delay (exponential backoff with full jitter from here).
    pub retry_backoff: Duration,
    /// Ceiling of the retry delay.
    pub retry_max_backoff: Duration,
    /// Overall deadline of one attempt.
    pub operation_timeout: Duration,
    /// The recovery time objective: how long a restore may take (drills measure it).
    pub rto: Option<Duration>,
    /// Change-driven backups, when some detector is on (`apim` targets only).
    pub on_change: Option<OnChange>,
}

impl Policy {
    /// The configured lead or 10 % of the RPO.
    #[must_use]
    pub fn configured_lead(&self) -> Duration {
        self.rpo_lead.unwrap_or(self.rpo / 10)
    }
}

pub(super) const DEFAULT_RPO: Duration = Duration::from_hours(24);
pub(super) const DEFAULT_EXPIRY: Duration = Duration::from_hours(720);
pub(super) const DEFAULT_WARN: Duration = Duration::from_hours(168);
pub(super) const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub(super) const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_mins(10);
pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
pub(super) const DEFAULT_STATE_DIR: &str = "/var/lib/rpod";
