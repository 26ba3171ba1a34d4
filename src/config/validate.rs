//! Validation of the raw model: every problem at once, each with its key path; the resolved policy of each target
//! (target over `[defaults.policy]` over built-in defaults). Each kind validates its own part (`command.rs`,
//! `apim.rs`). Pure: no I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use super::change::OnChange;
use super::duration::HumanDuration;
use super::error::Problem;
use super::file::{RawConfig, RawStorage};
use super::kind::{KindParts, StorageConfig};
use super::model::{
    Config, DEFAULT_EXPIRY, DEFAULT_LISTEN, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_MAX_BACKOFF, DEFAULT_RPO, DEFAULT_STATE_DIR, DEFAULT_WARN, Daemon, Policy,
    TargetConfig, TargetKind,
};
use super::raw::{RawDaemon, RawPolicy};
use super::schedule::{Schedule, parse_timezone};
use super::secret::SecretSource;
use super::template::NameTemplate;
use super::{azure, catalog, change};

pub(super) fn validate(raw: &RawConfig) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    let daemon = validate_daemon(&raw.daemon, &mut problems);
    let catalog = catalog::validate(raw.catalog.as_ref(), &mut problems);
    let (azure, azure_profiles) = raw
        .azure
        .as_ref()
        .map(|azure| azure::validate_azure_section(azure, &mut problems))
        .unwrap_or_default();
    let webhook = raw.webhook.as_ref().and_then(|webhook| {
        change::validate_webhook(webhook, daemon.as_ref().map(|d| d.listen), &mut problems)
    });

    let mut storages = BTreeMap::new();
    for (name, storage) in &raw.storage {
        let path = format!("storage.{name}");
        if !valid_name(name) {
            problems.push(Problem::at(
                &path,
                "storage names use only letters, digits, '-', '_' and '.' (at most 64 characters)",
            ));
        }
        let before = problems.len();
        let config = match storage {
            RawStorage::Directory(dir) => {
                if dir.path.as_os_str().is_empty() {
                    problems.push(Problem::at(format!("{path}.path"), "must not be empty"));
                }
                StorageConfig::Directory {
                    path: dir.path.clone(),
                }
            }
            RawStorage::AzureBlob(blob) => {
                StorageConfig::AzureBlob(azure::validate_azure_blob(blob, &path, &mut problems))
            }
        };
        if problems.len() == before {
            storages.insert(name.clone(), config);
        }
    }

    let default_tz = daemon.as_ref().map_or(Tz::UTC, |d| d.timezone);
    let defaults_problems_before = problems.len();
    // Defaults are validated on their own only for keys that make sense without a target.
    if let Some(tz) = &raw.defaults.policy.timezone
        && let Err(message) = parse_timezone(tz)
    {
        problems.push(Problem::at("defaults.policy.timezone", message));
    }
    let defaults_ok = problems.len() == defaults_problems_before;

    if raw.targets.is_empty() {
        problems.push(Problem::at(
            "targets",
            "no targets configured: add at least one [[targets]]",
        ));
    }
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for (index, target) in raw.targets.iter().enumerate() {
        let path = format!("targets[{index}]");
        let name = target.name().to_owned();
        if !valid_name(&name) {
            problems.push(Problem::at(
                format!("{path}.name"),
                format!(
                    "invalid target name {name:?}: use 1-64 letters, digits, '-', '_' or '.' (it becomes a \
                     metric label and part of artifact names)"
                ),
            ));
        } else if !seen.insert(name.clone()) {
            problems.push(Problem::at(
                format!("{path}.name"),
                format!("duplicate target name {name:?}"),
            ));
        }
        let storage_name = target.storage();
        if let Some(storage_name) = storage_name
            && !raw.storage.contains_key(storage_name)
        {
            let defined: Vec<&str> = raw.storage.keys().map(String::as_str).collect();
            problems.push(Problem::at(
                format!("{path}.storage"),
                format!(
                    "unknown storage {storage_name:?} (defined: {})",
                    if defined.is_empty() {
                        "none".to_owned()
                    } else {
                        defined.join(", ")
                    }
                ),
            ));
        }
        let storage = storage_name.and_then(|name| storages.get(name));
        let own_policy = target.policy();
        let KindParts {
            kind,
            template,
            template_key,
            timeout,
            max_expiry,
            restore,
        } = target.validate(&path, storage, &mut problems);
        if let (Some(kind), Some(storage)) = (&kind, storage)
            && kind.spec().storage_kind() != storage.kind()
        {
            problems.push(Problem::at(
                format!("{path}.storage"),
                format!(
                    "{} targets need a {} storage; {:?} is {}",
                    kind.name(),
                    kind.spec().storage_kind(),
                    storage_name.unwrap_or_default(),
                    storage.kind()
                ),
            ));
        }
        let merged = own_policy.or(&raw.defaults.policy);
        let mut policy = validate_policy(
            &merged,
            own_policy,
            &path,
            default_tz,
            timeout,
            defaults_ok,
            &mut problems,
        );
        let on_change = validate_target_on_change(
            &merged,
            own_policy,
            &path,
            kind.as_ref(),
            raw.webhook.is_some(),
            &mut problems,
        );
        if let Some(policy) = &mut policy {
            policy.on_change = on_change;
        }
        if let (Some((limit, why)), Some(expiry)) = (max_expiry, merged.expiry)
            && expiry.0 > limit
        {
            problems.push(Problem::at(
                if own_policy.expiry.is_some() {
                    format!("{path}.policy.expiry")
                } else {
                    "defaults.policy.expiry".to_owned()
                },
                format!(
                    "{why}; expiry {expiry} is longer (set it to {} or less, or per target)",
                    HumanDuration(limit)
                ),
            ));
        }
        let artifact_name = match NameTemplate::parse(&template) {
            Ok(template) => Some(template),
            Err(message) => {
                problems.push(Problem::at(format!("{path}.{template_key}"), message));
                None
            }
        };
        let target_tz = merged
            .timezone
            .as_deref()
            .and_then(|name| parse_timezone(name).ok())
            .unwrap_or(default_tz);
        let (drill, standby) = restore.validate(&path, target_tz, &mut problems);
        if let Some(profile) = kind.as_ref().and_then(|kind| kind.spec().azure_profile())
            && !azure_profiles.contains_key(profile)
        {
            let defined: Vec<&str> = azure_profiles.keys().map(String::as_str).collect();
            problems.push(Problem::at(
                format!("{path}.azure_profile"),
                format!(
                    "unknown Azure profile {profile:?}: declare it as [azure.profiles.{profile}] (defined: {})",
                    if defined.is_empty() {
                        "none".to_owned()
                    } else {
                        defined.join(", ")
                    }
                ),
            ));
        }
        if let (Some(policy), Some(kind), Some(artifact_name)) = (policy, kind, artifact_name) {
            targets.push(TargetConfig {
                name,
                storage: storage_name.map(str::to_owned),
                artifact_name,
                policy,
                kind,
                drill,
                standby,
            });
        }
    }

    let mut parsed: HashMap<String, Schedule> = HashMap::new();
    for target in &mut targets {
        if let Some(schedule) = &mut target.policy.schedule {
            match parsed.get(schedule.expression()) {
                Some(first) => schedule.share_parse(first),
                None => {
                    parsed.insert(schedule.expression().to_owned(), schedule.clone());
                }
            }
        }
    }
    // A bad key in [defaults.policy] is inherited by every target: report it once.
    let mut reported = HashSet::new();
    problems.retain(|p| reported.insert((p.path.clone(), p.message.clone())));
    match daemon {
        Some(daemon) if problems.is_empty() => Ok(Config {
            daemon,
            catalog,
            azure,
            azure_profiles,
            webhook,
            storages,
            targets,
        }),
        _ => Err(problems),
    }
}

fn validate_daemon(raw: &RawDaemon, problems: &mut Vec<Problem>) -> Option<Daemon> {
    let before = problems.len();
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
        problems.push(Problem::at(
            "daemon.listen",
            format!(
                "invalid listen address {listen_text:?}: write IP:PORT, e.g. \"127.0.0.1:9464\""
            ),
        ));
    });
    let timezone = parse_timezone(raw.timezone.as_deref().unwrap_or("UTC"))
        .map_err(|message| problems.push(Problem::at("daemon.timezone", message)));
    let max = raw.max_concurrent_operations.unwrap_or(8);
    if max == 0 {
        problems.push(Problem::at(
            "daemon.max_concurrent_operations",
            "must be at least 1",
        ));
    }
    let state_dir = raw
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    if state_dir.as_os_str().is_empty() {
        problems.push(Problem::at("daemon.state_dir", "must not be empty"));
    }
    let shutdown_timeout = raw
        .shutdown_timeout
        .map_or(Duration::from_secs(30), |d| d.0);
    let evaluation_interval = raw
        .evaluation_interval
        .map_or(Duration::from_secs(15), |d| d.0);
    if evaluation_interval.is_zero() {
        problems.push(Problem::at(
            "daemon.evaluation_interval",
            "must be longer than 0s",
        ));
    }
    let reconcile_interval = raw
        .reconcile_interval
        .map_or(Duration::from_hours(1), |d| d.0);
    if reconcile_interval < evaluation_interval && raw.reconcile_interval.is_some() {
        problems.push(Problem::at(
            "daemon.reconcile_interval",
            format!(
                "must not be shorter than evaluation_interval {} (reconciliation runs within an evaluation pass)",
                HumanDuration(evaluation_interval)
            ),
        ));
    }
    let api_token = match (&raw.api_token_file, &raw.api_token_env) {
        (None, None) => None,
        (file, env) => SecretSource::from_pair(file.as_ref(), env.as_ref(), "api_token")
            .map_err(|message| problems.push(Problem::at("daemon.api_token_file", message)))
            .ok(),
    };
    let allow_unauthenticated_api = raw.allow_unauthenticated_api.unwrap_or(false);
    let replica_id = catalog::validate_replica_id(raw.replica_id.as_ref(), problems);
    if let Ok(address) = &listen
        && !address.ip().is_loopback()
        && api_token.is_none()
        && raw.api_token_file.is_none()
        && raw.api_token_env.is_none()
        && !allow_unauthenticated_api
    {
        problems.push(Problem::at(
            "daemon.listen",
            format!(
                "{address} is reachable from other machines, and without an API token anyone who reaches it \
                 can start backups: set daemon.api_token_file (or api_token_env), or \
                 allow_unauthenticated_api = true when something in front of rpod authenticates"
            ),
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(Daemon {
        state_dir,
        listen: listen.ok()?,
        timezone: timezone.ok()?,
        max_concurrent_operations: usize::try_from(max).unwrap_or(usize::MAX),
        log_format: raw.log_format.unwrap_or_default(),
        shutdown_timeout,
        evaluation_interval,
        reconcile_interval,
        api_token,
        allow_unauthenticated_api,
        replica_id,
    })
}

/// `on_change` of one target: set on the target, or inherited from `[defaults.policy]` (where it applies to the
/// targets that support it).
fn validate_target_on_change(
    merged: &RawPolicy,
    own: &RawPolicy,
    target_path: &str,
    kind: Option<&TargetKind>,
    webhook: bool,
    problems: &mut Vec<Problem>,
) -> Option<OnChange> {
    let raw = merged.on_change.as_ref()?;
    let key = if own.on_change.is_some() {
        format!("{target_path}.policy.on_change")
    } else {
        "defaults.policy.on_change".to_owned()
    };
    let on_change = change::validate_on_change(raw, &key, problems)?;
    match kind {
        Some(kind) if kind.spec().detects_changes() => {}
        Some(other) => {
            if own.on_change.is_some() {
                problems.push(Problem::at(
                    key,
                    format!(
                        "{} targets have no change detection (on_change applies to apim targets)",
                        other.name()
                    ),
                ));
            }
            return None;
        }
        None => return None,
    }
    if on_change.event_grid && !webhook {
        problems.push(Problem::at(
            format!("{key}.detect"),
            "detect = \"event_grid\" needs a [webhook] section (where Event Grid delivers its events)",
        ));
    }
    on_change.detects().then_some(on_change)
}

fn validate_policy(
    merged: &RawPolicy,
    own: &RawPolicy,
    target_path: &str,
    default_tz: Tz,
    default_timeout: Duration,
    defaults_ok: bool,
    problems: &mut Vec<Problem>,
) -> Option<Policy> {
    let before = problems.len();
    // A key set on the target is reported there; one inherited from [defaults.policy] is reported there.
    let key = |name: &str, set_on_target: bool| {
        if set_on_target {
            format!("{target_path}.policy.{name}")
        } else {
            format!("defaults.policy.{name}")
        }
    };
    let rpo = merged.rpo.map_or(DEFAULT_RPO, |d| d.0);
    let rpo_key = key("rpo", own.rpo.is_some());
    if rpo.is_zero() {
        problems.push(Problem::at(&rpo_key, "must be longer than 0s"));
    }
    let expiry = merged.expiry.map_or(DEFAULT_EXPIRY, |d| d.0);
    if expiry.is_zero() {
        problems.push(Problem::at(
            key("expiry", own.expiry.is_some()),
            "must be longer than 0s",
        ));
    } else if rpo > expiry {
        problems.push(Problem::at(
            &rpo_key,
            format!(
                "rpo {} is longer than expiry {}: every backup would expire before the next one is due",
                HumanDuration(rpo),
                HumanDuration(expiry)
            ),
        ));
    }
    let warn_before_expiry = match merged.warn_before_expiry {
        Some(warn) => {
            if warn.0 >= expiry && !expiry.is_zero() {
                problems.push(Problem::at(
                    key("warn_before_expiry", own.warn_before_expiry.is_some()),
                    format!(
                        "warn_before_expiry {warn} is not shorter than expiry {}: the warning would always be on",
                        HumanDuration(expiry)
                    ),
                ));
            }
            warn.0
        }
        None => DEFAULT_WARN.min(expiry / 4),
    };
    if let Some(lead) = merged.rpo_lead
        && lead.0 >= rpo
        && !rpo.is_zero()
    {
        problems.push(Problem::at(
            key("rpo_lead", own.rpo_lead.is_some()),
            format!(
                "rpo_lead {lead} must be shorter than rpo {}",
                HumanDuration(rpo)
            ),
        ));
    }
    let timezone = match &merged.timezone {
        Some(name) => match parse_timezone(name) {
            Ok(tz) => Some(tz),
            Err(message) => {
                if own.timezone.is_some() || defaults_ok {
                    problems.push(Problem::at(
                        key("timezone", own.timezone.is_some()),
                        message,
                    ));
                }
                None
            }
        },
        None => Some(default_tz),
    };
    let schedule = match (&merged.schedule, timezone) {
        (Some(expression), Some(tz)) => match Schedule::parse(expression, tz) {
            Ok(schedule) => Some(schedule),
            Err(message) => {
                problems.push(Problem::at(
                    key("schedule", own.schedule.is_some()),
                    message,
                ));
                None
            }
        },
        _ => None,
    };
    let max_attempts = merged.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 {
        problems.push(Problem::at(
            key("max_attempts", own.max_attempts.is_some()),
            "must be at least 1",
        ));
    }
    if merged.keep_last == Some(0) {
        problems.push(Problem::at(
            key("keep_last", own.keep_last.is_some()),
            "must be at least 1 (the newest restorable backup is always kept; omit keep_last to keep all)",
        ));
    }
    let retry_backoff = merged.retry_backoff.map_or(DEFAULT_RETRY_BACKOFF, |d| d.0);
    let retry_max_backoff = merged
        .retry_max_backoff
        .map_or(DEFAULT_RETRY_MAX_BACKOFF.max(retry_backoff), |d| d.0);
    if retry_backoff.is_zero() {
        problems.push(Problem::at(
            key("retry_backoff", own.retry_backoff.is_some()),
            "must be longer than 0s",
        ));
    } else if retry_max_backoff < retry_backoff {
        problems.push(Problem::at(
            key("retry_max_backoff", own.retry_max_backoff.is_some()),
            format!(
                "retry_max_backoff {} is shorter than retry_backoff {}",
                HumanDuration(retry_max_backoff),
                HumanDuration(retry_backoff)
            ),
        ));
    }
    let operation_timeout = merged.operation_timeout.map_or(default_timeout, |d| d.0);
    if operation_timeout.is_zero() {
        problems.push(Problem::at(
            key("operation_timeout", own.operation_timeout.is_some()),
            "must be longer than 0s",
        ));
    }
    let rto = merged.rto.map(|d| d.0);
    if rto.is_some_and(|rto| rto.is_zero()) {
        problems.push(Problem::at(
            key("rto", own.rto.is_some()),
            "must be longer than 0s",
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(Policy {
        rto,
        rpo,
        rpo_lead: merged.rpo_lead.map(|d| d.0),
        schedule,
        expiry,
        warn_before_expiry,
        prune: merged.prune.unwrap_or(true),
        keep_last: merged.keep_last,
        max_attempts,
        retry_backoff,
        retry_max_backoff,
        operation_timeout,
        on_change: None,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}
