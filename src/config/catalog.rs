//! `[catalog]`: where the catalog lives (docs/high-availability.md). Without it, the `SQLite` file in the state
//! directory and one daemon; with `url`, a PostgreSQL database several replicas share, with per-target leases.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::error::Problem;
use super::secret::SecretSource;

/// How long a lease lasts when `lease` is not set.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// The shortest lease: a replica renews three times per lease, and each renewal is a round trip.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    url: Option<String>,
    url_env: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    ca_file: Option<PathBuf>,
    lease: Option<HumanDuration>,
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogConfig {
    /// `<state_dir>/rpod.db`: one daemon (the default).
    Sqlite,
    /// A PostgreSQL database several replicas share.
    Postgres(PostgresConfig),
}

/// `[catalog]` with `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database?...`, without a password.
    pub url: String,
    /// The password (`password_file` / `password_env`), if the server asks for one.
    pub password: Option<SecretSource>,
    /// A CA certificate (PEM) to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// How long a replica's hold on a target (and the leader's on the singletons) lasts without renewal.
    pub lease: Duration,
}

pub(super) fn validate(raw: Option<&RawCatalog>, problems: &mut Vec<Problem>) -> CatalogConfig {
    let Some(raw) = raw else {
        return CatalogConfig::Sqlite;
    };
    let from_env = match (&raw.url, &raw.url_env) {
        (Some(_), Some(_)) => {
            problems.push(Problem::at(
                "catalog.url_env",
                "set only one of url and url_env",
            ));
            return CatalogConfig::Sqlite;
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
            _ => {
                problems.push(Problem::at(
                    "catalog.url_env",
                    format!("environment variable {var} is not set or empty: it should hold the catalog's URL"),
                ));
                return CatalogConfig::Sqlite;
            }
        },
        _ => None,
    };
    let Some(url) = from_env.as_ref().or(raw.url.as_ref()) else {
        for (set, key) in [
            (raw.password_file.is_some(), "password_file"),
            (raw.password_env.is_some(), "password_env"),
            (raw.ca_file.is_some(), "ca_file"),
            (raw.lease.is_some(), "lease"),
        ] {
            if set {
                problems.push(Problem::at(
                    format!("catalog.{key}"),
                    "applies to a PostgreSQL catalog only: set catalog.url (or url_env) too, or remove it (without url the \
                     catalog is the SQLite file in daemon.state_dir)",
                ));
            }
        }
        return CatalogConfig::Sqlite;
    };
    let key = if from_env.is_some() {
        "catalog.url_env"
    } else {
        "catalog.url"
    };
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
            if parsed.password().is_some() {
                problems.push(Problem::at(
                    key,
                    "holds a password: configuration files are read by many, so put the password in the file \
                     named by catalog.password_file or the variable named by catalog.password_env",
                ));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                problems.push(Problem::at(
                    key,
                    "names no server: write postgres://USER@HOST:PORT/DATABASE",
                ));
            }
        }
        _ => problems.push(Problem::at(
            key,
            "is not a PostgreSQL URL: write postgres://USER@HOST:PORT/DATABASE (e.g. \
             postgres://rpod@rpod-catalog.postgres.database.azure.com:5432/rpod); without url the catalog is the \
             SQLite file in daemon.state_dir",
        )),
    }
    let password = match (&raw.password_file, &raw.password_env) {
        (None, None) => None,
        (file, env) => SecretSource::from_pair(file.as_ref(), env.as_ref(), "password")
            .map_err(|message| problems.push(Problem::at("catalog.password_file", message)))
            .ok(),
    };
    if raw
        .ca_file
        .as_ref()
        .is_some_and(|path| path.as_os_str().is_empty())
    {
        problems.push(Problem::at("catalog.ca_file", "must not be empty"));
    }
    let lease = raw.lease.map_or(DEFAULT_LEASE, |lease| lease.0);
    if lease < MIN_LEASE {
        problems.push(Problem::at(
            "catalog.lease",
            format!(
                "must be at least {}: a replica renews its leases three times per lease",
                HumanDuration(MIN_LEASE)
            ),
        ));
    }
    CatalogConfig::Postgres(PostgresConfig {
        url: url.clone(),
        password,
        ca_file: raw.ca_file.clone(),
        lease,
    })
}

/// Checks `[daemon] replica_id`: what other replicas, the API and every backup record call this one.
pub(super) fn validate_replica_id(
    id: Option<&String>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let id = id?;
    let valid = (1..=63).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        problems.push(Problem::at(
            "daemon.replica_id",
            format!(
                "invalid replica id {id:?}: use 1 to 63 letters, digits, '-', '_' or '.' (the default is the host \
                 name and process id)"
            ),
        ));
    }
    Some(id.clone())
}
