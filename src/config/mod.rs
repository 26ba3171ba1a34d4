//! Configuration: raw serde structs (strict: unknown keys are errors), pure validation that reports every
//! problem at once with key paths, and the validated [`Config`] the rest of rpod is built from.
//!
//! The files: this one holds the raw model (exactly what the file may say) and the validated model;
//! `validate` checks the one into the other; `command` and `apim` hold each kind's own part (raw model,
//! validation, defaults); `azure`, `change`, `schedule`, `template`, `duration`, `secret` the sections and
//! values they name; `error` problems with key paths and positions.
//!
//! What does not live here: anything that performs I/O beyond reading the file itself (see `app::build`).

mod apim;
mod azure;
mod change;
mod command;
mod duration;
mod error;
mod schedule;
mod secret;
mod template;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

pub use apim::{
    APIM_EXPIRY, ApimSpec, DEFAULT_APIM_API_VERSION, DEFAULT_APIM_BACKUP_NAME, DEFAULT_APIM_TIMEOUT,
};
pub use azure::{
    ApimAccess, AzureBlobConfig, AzureConfig, BlobAccess, BlobAuth, Credential, CredentialKind,
};
pub use change::{DEFAULT_WEBHOOK_BODY_BYTES, EVENT_GRID, OnChange, SYNC_STATE, WebhookConfig};
pub use command::{CommandSpec, DEFAULT_COMMAND_ARTIFACT, DEFAULT_COMMAND_TIMEOUT};
pub use duration::HumanDuration;
pub use error::{ConfigError, Problem};
pub use schedule::{Schedule, parse_timezone};
pub use secret::{Secret, SecretSource};
pub use template::NameTemplate;

/// The default configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rpod/rpod.toml";

// ---------------------------------------------------------------------------------------------------------------
// Raw model: exactly what the file may say.

/// The file as serde reads it. Storages and targets stay tables until their `kind` is known: serde's
/// `tag = "kind"` buffers the whole table and then loses the key paths and positions of everything inside.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    daemon: Section<RawDaemon>,
    azure: Option<Section<azure::RawAzure>>,
    webhook: Option<Section<change::RawWebhook>>,
    #[serde(default)]
    storage: BTreeMap<String, toml::Table>,
    #[serde(default)]
    defaults: Section<RawDefaults>,
    #[serde(default)]
    targets: Vec<toml::Table>,
}

/// The file with every storage and target resolved to its kind.
#[derive(Debug, Default)]
struct RawConfig {
    daemon: RawDaemon,
    azure: Option<azure::RawAzure>,
    webhook: Option<change::RawWebhook>,
    storage: BTreeMap<String, RawStorage>,
    defaults: RawDefaults,
    targets: Vec<RawTarget>,
}

/// A section that must be a TOML table. Serde's derived structs also accept an array (fields by position),
/// which would let `policy = ["1h"]` through and explain other arrays with internal type names.
#[derive(Debug, Default, Clone)]
struct Section<T>(T);

impl<T> std::ops::Deref for Section<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visitor(std::marker::PhantomData))
            .map(Section)
    }
}

/// Removes and checks the `kind` of a storage or target table.
fn take_kind(
    table: &mut toml::Table,
    path: &str,
    what: &str,
    known: &[&'static str],
) -> Result<&'static str, Problem> {
    match table.remove("kind") {
        Some(toml::Value::String(kind)) => {
            known.iter().copied().find(|k| *k == kind).ok_or_else(|| {
                Problem::at(
                    format!("{path}.kind"),
                    format!("unknown {what} kind {kind:?} (known: {})", known.join(", ")),
                )
            })
        }
        Some(other) => Err(Problem::at(
            format!("{path}.kind"),
            format!("invalid type: {}, expected a string", other.type_str()),
        )),
        None => Err(Problem::at(path, "missing field `kind`")),
    }
}

/// Deserializes one table, keeping key paths (prefixed with `path`) in errors.
fn from_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    path: &str,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(table).map_err(|err| {
        let inner = err.path().to_string();
        let key = if inner == "." {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        Problem::at(key, err.into_inner().message().trim())
    })
}

impl RawFile {
    /// Resolves every storage and target by its `kind`; reports the problems of all of them.
    fn resolve(self) -> Result<RawConfig, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut storage = BTreeMap::new();
        for (name, mut table) in self.storage {
            let path = format!("storage.{name}");
            match take_kind(&mut table, &path, "storage", &["directory", "azure_blob"]).and_then(
                |kind| match kind {
                    "directory" => from_table(table, &path).map(RawStorage::Directory),
                    _ => from_table(table, &path).map(RawStorage::AzureBlob),
                },
            ) {
                Ok(raw) => {
                    storage.insert(name, raw);
                }
                Err(problem) => problems.push(problem),
            }
        }
        let mut targets = Vec::new();
        for (index, mut table) in self.targets.into_iter().enumerate() {
            let path = format!("targets[{index}]");
            match take_kind(&mut table, &path, "target", TARGET_KIND_NAMES)
                .and_then(|kind| read_target(kind, table, &path))
            {
                Ok(raw) => targets.push(raw),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RawConfig {
            daemon: self.daemon.0,
            azure: self.azure.map(|section| section.0),
            webhook: self.webhook.map(|section| section.0),
            storage,
            defaults: self.defaults.0,
            targets,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<PathBuf>,
    listen: Option<String>,
    timezone: Option<String>,
    max_concurrent_operations: Option<u32>,
    log_format: Option<LogFormat>,
    shutdown_timeout: Option<HumanDuration>,
    evaluation_interval: Option<HumanDuration>,
    reconcile_interval: Option<HumanDuration>,
    api_token_file: Option<PathBuf>,
    api_token_env: Option<String>,
    allow_unauthenticated_api: Option<bool>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug)]
enum RawStorage {
    Directory(RawDirectoryStorage),
    AzureBlob(azure::RawAzureBlobStorage),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectoryStorage {
    path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    policy: Section<RawPolicy>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rpo: Option<HumanDuration>,
    rpo_lead: Option<HumanDuration>,
    schedule: Option<String>,
    timezone: Option<String>,
    expiry: Option<HumanDuration>,
    warn_before_expiry: Option<HumanDuration>,
    prune: Option<bool>,
    keep_last: Option<u32>,
    max_attempts: Option<u32>,
    retry_backoff: Option<HumanDuration>,
    retry_max_backoff: Option<HumanDuration>,
    operation_timeout: Option<HumanDuration>,
    on_change: Option<Section<change::RawOnChange>>,
}

impl RawPolicy {
    /// `self` with every unset key taken from `defaults`.
    fn or(&self, defaults: &RawPolicy) -> RawPolicy {
        RawPolicy {
            rpo: self.rpo.or(defaults.rpo),
            rpo_lead: self.rpo_lead.or(defaults.rpo_lead),
            schedule: self.schedule.clone().or_else(|| defaults.schedule.clone()),
            timezone: self.timezone.clone().or_else(|| defaults.timezone.clone()),
            expiry: self.expiry.or(defaults.expiry),
            warn_before_expiry: self.warn_before_expiry.or(defaults.warn_before_expiry),
            prune: self.prune.or(defaults.prune),
            keep_last: self.keep_last.or(defaults.keep_last),
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            retry_backoff: self.retry_backoff.or(defaults.retry_backoff),
            retry_max_backoff: self.retry_max_backoff.or(defaults.retry_max_backoff),
            operation_timeout: self.operation_timeout.or(defaults.operation_timeout),
            on_change: self
                .on_change
                .clone()
                .or_else(|| defaults.on_change.clone()),
        }
    }
}

/// One `[[targets]]` entry, of whichever kind: what every kind has, and its own validation. Each kind's
/// configuration file implements it for its raw model.
trait RawKind: std::fmt::Debug {
    /// `name`.
    fn name(&self) -> &str;
    /// The storage it names; `None` for a kind whose recovery points live in the protected system itself.
    fn storage(&self) -> Option<&str>;
    /// `[targets.policy]`.
    fn policy(&self) -> &RawPolicy;
    /// Validates what only this kind has, with what it gives the target around it. `storage` is the storage the
    /// target names, when that is defined.
    fn validate(
        &self,
        path: &str,
        storage: Option<&StorageConfig>,
        problems: &mut Vec<Problem>,
    ) -> KindParts;
}

type RawTarget = Box<dyn RawKind>;

// ---------------------------------------------------------------------------------------------------------------
// Validated model.

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: Daemon,
    /// Azure credentials and Resource Manager settings (defaults when `[azure]` is absent).
    pub azure: AzureConfig,
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

/// One `[storage.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local directory or mounted share.
    Directory {
        /// Root directory of the artifacts.
        path: PathBuf,
    },
    /// An Azure Storage blob container.
    AzureBlob(AzureBlobConfig),
}

impl StorageConfig {
    /// The `kind` as written in the file.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Directory { .. } => "directory",
            Self::AzureBlob(_) => "azure_blob",
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
}

/// Every target kind, once: its variant of [`TargetKind`], its `kind` as the file writes it, the raw model of
/// its configuration file and its validated spec. Adding a kind is adding its line here (docs/architecture.md,
/// "Adding a target kind"); everything that must know every kind is built from this list by the macro named
/// `$then`: [`TargetKind`] and the reading of a target table here, and `providers::build`.
macro_rules! target_kinds {
    ($then:ident) => {
        $then! {
            /// A local program whose standard output is the backup stream.
            Command = "command": $crate::config::command::RawCommandTarget => $crate::config::CommandSpec,
            /// An Azure API Management service, backed up through Resource Manager.
            Apim = "apim": $crate::config::apim::RawApimTarget => $crate::config::ApimSpec,
        }
    };
}
pub(crate) use target_kinds;

/// Builds, from [`target_kinds`], the enum of kinds and the reading of a target table by its `kind`.
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

        /// Every target `kind`, as the file writes it.
        const TARGET_KIND_NAMES: &[&str] = &[$($name),*];

        /// Reads a target table whose `kind` is `kind` into its kind's raw model.
        fn read_target(kind: &str, table: toml::Table, path: &str) -> Result<RawTarget, Problem> {
            match kind {
                $($name => from_table::<$raw>(table, path).map(|raw| Box::new(raw) as RawTarget),)*
                other => Err(Problem::at(format!("{path}.kind"), format!("unknown target kind {other:?}"))),
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

/// What the rest of rpod asks of a target kind's validated part; each kind's configuration file implements it.
pub trait KindSpec: std::fmt::Debug {
    /// The kind of storage its backups go to.
    fn storage_kind(&self) -> &'static str;
    /// Whether it reaches Azure: the `[azure]` credential and the Resource Manager client are built for it.
    fn reaches_azure(&self) -> bool {
        false
    }
    /// Whether changes of the protected system can be detected (`on_change` applies).
    fn detects_changes(&self) -> bool {
        false
    }
    /// The Resource Manager resource whose Event Grid events are its changes.
    fn event_grid_resource(&self) -> Option<String> {
        None
    }
}

/// What a target kind's own validation gives the target around it (each kind's configuration file has a
/// `validate` that returns it).
struct KindParts {
    /// The kind's validated part, unless it had problems.
    kind: Option<TargetKind>,
    /// The artifact name template, as configured or the kind's default.
    template: String,
    /// The key the template is configured under.
    template_key: &'static str,
    /// The kind's default `operation_timeout`.
    timeout: Duration,
    /// The longest `expiry` the kind allows, and why.
    max_expiry: Option<(Duration, &'static str)>,
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

const DEFAULT_RPO: Duration = Duration::from_hours(24);
const DEFAULT_EXPIRY: Duration = Duration::from_hours(720);
const DEFAULT_WARN: Duration = Duration::from_hours(168);
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_mins(10);
const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
const DEFAULT_STATE_DIR: &str = "/var/lib/rpod";
impl Config {
    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// Every problem found, with key paths and positions.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ConfigError::new(
                path,
                vec![Problem::at("", format!("cannot read the file: {err}"))],
            )
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is used in messages only.
    ///
    /// # Errors
    /// Every problem found, with key paths and positions.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let document = toml::de::DeTable::parse(text).map_err(|err| {
            let position = err.span().map(|span| error::line_column(text, span.start));
            ConfigError::new(
                path,
                vec![Problem {
                    path: String::new(),
                    message: format!("invalid TOML: {}", err.message().trim()),
                    position,
                }],
            )
        })?;
        let with_position = |mut problem: Problem| {
            if problem.position.is_none() {
                problem.position = error::locate(document.get_ref(), &problem.path)
                    .map(|span| error::line_column(text, span.start));
            }
            problem
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|err| {
            ConfigError::new(
                path,
                vec![Problem::at("", format!("invalid TOML: {}", err.message()))],
            )
        })?;
        let raw: RawFile = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let position = inner
                .span()
                .map(|span| error::line_column(text, span.start));
            let key = if key == "." { String::new() } else { key };
            let problem = Problem {
                path: key,
                message: inner.message().trim().to_owned(),
                position,
            };
            ConfigError::new(path, vec![with_position(problem)])
        })?;
        let raw = raw.resolve().map_err(|problems| {
            ConfigError::new(path, problems.into_iter().map(with_position).collect())
        })?;
        validate::validate(&raw).map_err(|problems| {
            ConfigError::new(path, problems.into_iter().map(with_position).collect())
        })
    }

    /// Problems found after validation (files the configuration names could not be used), each located at its
    /// key in `file` when the file can still be read and parsed.
    #[must_use]
    pub fn problems_in(file: &Path, problems: Vec<Problem>) -> ConfigError {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let document = toml::de::DeTable::parse(&text).ok();
        let problems = problems
            .into_iter()
            .map(|mut problem| {
                if problem.position.is_none()
                    && let Some(document) = &document
                {
                    problem.position = error::locate(document.get_ref(), &problem.path)
                        .map(|span| error::line_column(&text, span.start));
                }
                problem
            })
            .collect();
        ConfigError::new(file, problems)
    }

    /// The target with this name.
    #[must_use]
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[storage.local]
kind = "directory"
path = "/tmp/x"

[[targets]]
name = "etc"
kind = "command"
command = ["tar", "-cf", "-", "/etc"]
storage = "local"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
        let target = &config.targets[0];
        assert_eq!(target.policy.rpo, DEFAULT_RPO);
        assert_eq!(target.policy.expiry, DEFAULT_EXPIRY);
        assert_eq!(target.policy.warn_before_expiry, DEFAULT_WARN);
        assert!(target.policy.prune);
        assert_eq!(config.daemon.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn all_validation_problems_are_reported_at_once() {
        let text = r#"
[daemon]
listen = "nope"

[[targets]]
name = "a"
kind = "command"
command = []
storage = "missing"
[targets.policy]
rpo = "2d"
expiry = "1d"
"#;
        let err = Config::parse(text, Path::new("t.toml")).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"daemon.listen"), "{err}");
        assert!(paths.contains(&"targets[0].command"), "{err}");
        assert!(paths.contains(&"targets[0].storage"), "{err}");
        assert!(paths.contains(&"targets[0].policy.rpo"), "{err}");
        assert!(err.problems.iter().all(|p| p.position.is_some()), "{err}");
    }

    #[test]
    fn unknown_key_names_path_line_and_column() {
        let text = MINIMAL.replace(
            "storage = \"local\"",
            "storage = \"local\"\ncolour = \"blue\"",
        );
        let err = Config::parse(&text, Path::new("t.toml")).unwrap_err();
        let problem = &err.problems[0];
        assert!(problem.path.starts_with("targets[0]"), "{err}");
        assert!(problem.message.contains("colour"), "{err}");
        assert!(problem.position.is_some(), "{err}");
    }
}
