//! Configuration: raw serde structs (strict: unknown keys are errors), pure validation that reports every
//! problem at once with key paths, and the validated [`Config`] the rest of rpod is built from.
//!
//! The files, from the top: this one reads a file (`Config::load`); `validate` checks the raw model into the
//! validated one; `file` is the file as read, each target resolved to its kind; `model` the validated model,
//! with the one list of target kinds; `command`, `apim`, `recovery_services_vm` and `azure_stack_infra` each
//! kind's own part (raw model, validation, defaults); `kind` what a kind implements and is given; `azure`,
//! `catalog`, `change`, `schedule`, `template`, `duration`, `secret` the sections and values they name; `raw` the raw
//! pieces they share; `error` problems with key paths and positions.
//!
//! What does not live here: anything that performs I/O beyond reading the file itself (see `app::build`).

mod apim;
mod azure;
mod azure_stack_infra;
mod catalog;
mod change;
mod command;
mod duration;
mod error;
mod file;
mod kind;
mod model;
mod raw;
mod recovery_services_vm;
mod restore;
mod schedule;
mod secret;
mod template;
mod validate;

use std::path::Path;

pub use apim::{
    APIM_EXPIRY, ApimSpec, DEFAULT_APIM_API_VERSION, DEFAULT_APIM_BACKUP_NAME,
    DEFAULT_APIM_TIMEOUT, RestoreInto,
};
pub use azure::{
    ApimAccess, AzureBlobConfig, AzureConfig, BlobAccess, BlobAuth, Credential, CredentialKind,
    PUBLIC_AUTHORITY_HOST, PUBLIC_RESOURCE_MANAGER,
};
pub use azure_stack_infra::{
    AzureStackInfraSpec, DEFAULT_STACK_API_VERSION, DEFAULT_STACK_SETTLE, DEFAULT_STACK_TIMEOUT,
    StackMode,
};
pub use catalog::{CatalogConfig, DEFAULT_LEASE, MIN_LEASE, PostgresConfig};
pub use change::{DEFAULT_WEBHOOK_BODY_BYTES, EVENT_GRID, OnChange, SYNC_STATE, WebhookConfig};
pub use command::{CommandSpec, DEFAULT_COMMAND_ARTIFACT, DEFAULT_COMMAND_TIMEOUT};
pub use duration::HumanDuration;
pub use error::{ConfigError, Problem};
pub use kind::{KindSpec, StorageConfig};
pub(crate) use model::target_kinds;
pub use model::{Config, Daemon, Policy, TargetConfig, TargetKind};
pub use raw::LogFormat;
pub use recovery_services_vm::{
    DEFAULT_ON_DEMAND_PER_DAY, DEFAULT_RSV_API_VERSION, DEFAULT_RSV_TIMEOUT, MAX_ON_DEMAND_PER_DAY,
    RecoveryServicesVmSpec,
};
pub use restore::{DEFAULT_DRILL_MAX_AGE, Drill, Standby};
pub use schedule::{Schedule, parse_timezone};
pub use secret::{Secret, SecretSource};
pub use template::NameTemplate;

use file::RawFile;

/// The default configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rpod/rpod.toml";

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
        // The document with its spans is only read to place a problem: parsed when one needs it, so a large
        // configuration is not held twice while it is read.
        let document = std::cell::OnceCell::new();
        let with_position = |mut problem: Problem| {
            if problem.position.is_none()
                && let Some(document) = document
                    .get_or_init(|| toml::de::DeTable::parse(text).ok())
                    .as_ref()
            {
                problem.position = error::locate(document.get_ref(), &problem.path)
                    .map(|span| error::line_column(text, span.start));
            }
            problem
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|err| {
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
    use super::model::{DEFAULT_EXPIRY, DEFAULT_LISTEN, DEFAULT_RPO, DEFAULT_WARN};
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
