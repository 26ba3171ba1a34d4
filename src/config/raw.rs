//! The raw pieces every part of the configuration shares: sections that must be tables, the reading of one
//! table with its key paths, `[daemon]` and `[targets.policy]` as the file may write them.

use std::path::PathBuf;

use serde::Deserialize;

use super::change;
use super::duration::HumanDuration;
use super::error::Problem;

/// A section that must be a TOML table. Serde's derived structs also accept an array (fields by position),
/// which would let `policy = ["1h"]` through and explain other arrays with internal type names.
#[derive(Debug, Default, Clone)]
pub(super) struct Section<T>(pub(super) T);

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
pub(super) fn take_kind(
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
pub(super) fn from_table<T: serde::de::DeserializeOwned>(
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) listen: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) max_concurrent_operations: Option<u32>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) shutdown_timeout: Option<HumanDuration>,
    pub(super) evaluation_interval: Option<HumanDuration>,
    pub(super) reconcile_interval: Option<HumanDuration>,
    pub(super) api_token_file: Option<PathBuf>,
    pub(super) api_token_env: Option<String>,
    pub(super) allow_unauthenticated_api: Option<bool>,
    pub(super) replica_id: Option<String>,
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

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) rpo: Option<HumanDuration>,
    pub(super) rpo_lead: Option<HumanDuration>,
    pub(super) schedule: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) expiry: Option<HumanDuration>,
    pub(super) warn_before_expiry: Option<HumanDuration>,
    pub(super) prune: Option<bool>,
    pub(super) keep_last: Option<u32>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_backoff: Option<HumanDuration>,
    pub(super) retry_max_backoff: Option<HumanDuration>,
    pub(super) operation_timeout: Option<HumanDuration>,
    pub(super) rto: Option<HumanDuration>,
    pub(super) on_change: Option<Section<change::RawOnChange>>,
}

impl RawPolicy {
    /// `self` with every unset key taken from `defaults`.
    pub(super) fn or(&self, defaults: &RawPolicy) -> RawPolicy {
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
            rto: self.rto.or(defaults.rto),
            on_change: self
                .on_change
                .clone()
                .or_else(|| defaults.on_change.clone()),
        }
    }
}
