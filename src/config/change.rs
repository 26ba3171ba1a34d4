//! Change-driven backups (docs/design.md, "Change-driven backups"): `on_change` in a policy, and `[webhook]` for Event Grid deliveries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::error::Problem;
use super::secret::SecretSource;

/// `on_change = { ... }` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnChange {
    detect: Option<toml::Value>,
    poll_interval: Option<HumanDuration>,
    quiet_period: Option<HumanDuration>,
    max_delay: Option<HumanDuration>,
    min_interval: Option<HumanDuration>,
}

/// `[webhook]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    listen: Option<String>,
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    max_body_bytes: Option<u64>,
}

/// When a target's configuration changes, back it up (docs/design.md, "Change-driven backups").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnChange {
    /// Poll the service's sync state and resource every `poll_interval`.
    pub sync_state: bool,
    /// Take Event Grid deliveries on the webhook.
    pub event_grid: bool,
    /// How often the sync state is read.
    pub poll_interval: Duration,
    /// A backup starts once no further change was seen for this long...
    pub quiet_period: Duration,
    /// ...but no later than this after the first change...
    pub max_delay: Duration,
    /// ...and never sooner than this after the target's previous backup started.
    pub min_interval: Duration,
}

impl OnChange {
    /// The detectors, as written in the file.
    #[must_use]
    pub fn sources(&self) -> Vec<&'static str> {
        let mut sources = Vec::new();
        if self.sync_state {
            sources.push(SYNC_STATE);
        }
        if self.event_grid {
            sources.push(EVENT_GRID);
        }
        sources
    }

    /// Whether any detector is on.
    #[must_use]
    pub fn detects(&self) -> bool {
        self.sync_state || self.event_grid
    }
}

/// `[webhook]`: where Event Grid delivers change events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// A listener of its own; `None` serves the webhook on `[daemon] listen`.
    pub listen: Option<SocketAddr>,
    /// The shared secret deliveries carry as `?code=` or `x-rpod-webhook-secret`.
    pub secret: SecretSource,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
}

/// The `detect` name of the polling detector.
pub const SYNC_STATE: &str = "sync_state";
/// The `detect` name of the Event Grid detector.
pub const EVENT_GRID: &str = "event_grid";

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_mins(2);
const DEFAULT_QUIET_PERIOD: Duration = Duration::from_mins(5);
const DEFAULT_MAX_DELAY: Duration = Duration::from_mins(30);
const DEFAULT_MIN_INTERVAL: Duration = Duration::from_mins(15);
/// Event Grid delivers at most 1 MiB per request (a batch included); twice that leaves room and still bounds
/// what an unauthenticated sender can make rpod buffer.
pub const DEFAULT_WEBHOOK_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Validates `on_change`; `key` is its path (`targets[0].policy.on_change` or `defaults.policy.on_change`).
pub(super) fn validate_on_change(
    raw: &RawOnChange,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<OnChange> {
    let before = problems.len();
    let names: Vec<String> = match &raw.detect {
        None => vec![SYNC_STATE.to_owned()],
        Some(toml::Value::String(name)) => vec![name.clone()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .filter_map(|item| {
                if let toml::Value::String(name) = item {
                    Some(name.clone())
                } else {
                    problems.push(Problem::at(
                        format!("{key}.detect"),
                        format!("invalid type: {}, expected a string", item.type_str()),
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.push(Problem::at(
                format!("{key}.detect"),
                format!(
                    "invalid type: {}, expected \"sync_state\", \"event_grid\" or a list of them",
                    other.type_str()
                ),
            ));
            Vec::new()
        }
    };
    let mut on_change = OnChange {
        sync_state: false,
        event_grid: false,
        poll_interval: raw.poll_interval.map_or(DEFAULT_POLL_INTERVAL, |d| d.0),
        quiet_period: raw.quiet_period.map_or(DEFAULT_QUIET_PERIOD, |d| d.0),
        max_delay: raw.max_delay.map_or(DEFAULT_MAX_DELAY, |d| d.0),
        min_interval: raw.min_interval.map_or(DEFAULT_MIN_INTERVAL, |d| d.0),
    };
    for name in names {
        match name.as_str() {
            SYNC_STATE => on_change.sync_state = true,
            EVENT_GRID => on_change.event_grid = true,
            other => problems.push(Problem::at(
                format!("{key}.detect"),
                format!("unknown detector {other:?} (known: sync_state, event_grid)"),
            )),
        }
    }
    if on_change.poll_interval.is_zero() {
        problems.push(Problem::at(
            format!("{key}.poll_interval"),
            "must be longer than 0s",
        ));
    } else if raw.poll_interval.is_some() && !on_change.sync_state {
        problems.push(Problem::at(
            format!("{key}.poll_interval"),
            "applies only to detect = \"sync_state\" (Event Grid pushes its events)",
        ));
    }
    if on_change.max_delay.is_zero() {
        problems.push(Problem::at(
            format!("{key}.max_delay"),
            "must be longer than 0s",
        ));
    } else if on_change.quiet_period > on_change.max_delay {
        problems.push(Problem::at(
            format!("{key}.quiet_period"),
            format!(
                "quiet_period {} is longer than max_delay {}: the quiet period could never end",
                HumanDuration(on_change.quiet_period),
                HumanDuration(on_change.max_delay)
            ),
        ));
    }
    (problems.len() == before).then_some(on_change)
}

/// Validates `[webhook]`; `main_listen` is `[daemon] listen`.
pub(super) fn validate_webhook(
    raw: &RawWebhook,
    main_listen: Option<SocketAddr>,
    problems: &mut Vec<Problem>,
) -> Option<WebhookConfig> {
    let before = problems.len();
    let listen = raw.listen.as_deref().and_then(|text| {
        let parsed = text.parse::<SocketAddr>().ok();
        match parsed {
            None => problems.push(Problem::at(
                "webhook.listen",
                format!("invalid listen address {text:?}: write IP:PORT, e.g. \"0.0.0.0:9465\""),
            )),
            Some(address) if Some(address) == main_listen => problems.push(Problem::at(
                "webhook.listen",
                "is the same address as daemon.listen; omit it to serve the webhook on the main listener",
            )),
            Some(_) => {}
        }
        parsed
    });
    let secret =
        SecretSource::from_pair(raw.secret_file.as_ref(), raw.secret_env.as_ref(), "secret")
            .map_err(|message| problems.push(Problem::at("webhook", message)))
            .ok();
    let max_body_bytes = match raw.max_body_bytes {
        None => DEFAULT_WEBHOOK_BODY_BYTES,
        Some(bytes) if (1024..=64 * 1024 * 1024).contains(&bytes) => {
            usize::try_from(bytes).unwrap_or(DEFAULT_WEBHOOK_BODY_BYTES)
        }
        Some(_) => {
            problems.push(Problem::at(
                "webhook.max_body_bytes",
                "must be between 1024 and 67108864 (Event Grid sends at most 1 MiB per delivery)",
            ));
            DEFAULT_WEBHOOK_BODY_BYTES
        }
    };
    if problems.len() != before {
        return None;
    }
    Some(WebhookConfig {
        listen,
        secret: secret?,
        max_body_bytes,
    })
}
