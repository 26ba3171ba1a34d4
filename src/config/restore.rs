//! Restores in the configuration (docs/restore.md): `[targets.drill]` (restore drills on a schedule) and
//! `[targets.standby]` (a warm standby kept in sync), as the file writes them and validated. Where a restore may
//! go (`[[targets.restore_into]]`) is the kind's own business; these name one of its destinations.

use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

use super::duration::HumanDuration;
use super::error::Problem;
use super::schedule::{Schedule, parse_timezone};

/// How old the last successful drill may be before `RpodRestoreDrillStale` fires, unless `max_age` says.
pub const DEFAULT_DRILL_MAX_AGE: Duration = Duration::from_hours(8 * 24);

/// `[targets.drill]` as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrill {
    schedule: String,
    timezone: Option<String>,
    into: Option<String>,
    max_age: Option<HumanDuration>,
}

/// `[targets.standby]` as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStandby {
    into: String,
    rpo: HumanDuration,
    min_interval: Option<HumanDuration>,
}

/// Restore drills of a target: restore the newest restorable backup on a schedule, verify it, measure it.
#[derive(Debug, Clone)]
pub struct Drill {
    /// When drills run.
    pub schedule: Schedule,
    /// The scratch destination (a `restore_into` name); `None` for kinds that verify without one (`command`).
    pub into: Option<String>,
    /// A drill older than this is stale.
    pub max_age: Duration,
}

/// A warm standby: every successful backup is restored into it, no more often than `min_interval`.
#[derive(Debug, Clone)]
pub struct Standby {
    /// The standby (a `restore_into` name).
    pub into: String,
    /// How old the recovery point restored into the standby may become.
    pub rpo: Duration,
    /// The least time between two restores into the standby.
    pub min_interval: Duration,
}

/// What a kind tells validation about its restores: where they may go and whether a drill needs a destination.
#[derive(Debug, Clone, Default)]
pub(super) struct RestoreParts {
    /// `[targets.drill]`, when written.
    pub(super) drill: Option<RawDrill>,
    /// `[targets.standby]`, when written.
    pub(super) standby: Option<RawStandby>,
    /// The `restore_into` names.
    pub(super) destinations: Vec<String>,
    /// A drill restores into a destination (`into` required) rather than verifying a stream (`into` refused).
    pub(super) drill_into: bool,
}

impl RestoreParts {
    /// Validates the drill and the standby of the target at `path`; `tz` is the target's time zone.
    pub(super) fn validate(
        &self,
        path: &str,
        tz: Tz,
        problems: &mut Vec<Problem>,
    ) -> (Option<Drill>, Option<Standby>) {
        let drill = self
            .drill
            .as_ref()
            .and_then(|raw| self.drill(raw, &format!("{path}.drill"), tz, problems));
        let standby = self
            .standby
            .as_ref()
            .and_then(|raw| self.standby(raw, &format!("{path}.standby"), problems));
        (drill, standby)
    }

    fn destination(&self, path: &str, into: &str, problems: &mut Vec<Problem>) -> bool {
        if self.destinations.iter().any(|name| name == into) {
            return true;
        }
        problems.push(Problem::at(
            format!("{path}.into"),
            format!(
                "unknown restore destination {into:?} (restore_into names: {})",
                if self.destinations.is_empty() {
                    "none".to_owned()
                } else {
                    self.destinations.join(", ")
                }
            ),
        ));
        false
    }

    fn drill(
        &self,
        raw: &RawDrill,
        path: &str,
        tz: Tz,
        problems: &mut Vec<Problem>,
    ) -> Option<Drill> {
        let before = problems.len();
        let tz = match &raw.timezone {
            Some(name) => parse_timezone(name).unwrap_or_else(|message| {
                problems.push(Problem::at(format!("{path}.timezone"), message));
                tz
            }),
            None => tz,
        };
        let schedule = Schedule::parse(&raw.schedule, tz)
            .map_err(|message| problems.push(Problem::at(format!("{path}.schedule"), message)))
            .ok();
        match (&raw.into, self.drill_into) {
            (Some(into), true) => {
                self.destination(path, into, problems);
            }
            (None, true) => problems.push(Problem::at(
                path,
                "a drill needs `into`: the scratch destination (a restore_into name) it restores into; never \
                 the target's own service",
            )),
            (Some(_), false) => problems.push(Problem::at(
                format!("{path}.into"),
                "this kind drills without a destination: it verifies the restored stream with verify_command",
            )),
            (None, false) => {}
        }
        let max_age = raw.max_age.map_or(DEFAULT_DRILL_MAX_AGE, |d| d.0);
        if max_age.is_zero() {
            problems.push(Problem::at(format!("{path}.max_age"), "must be positive"));
        }
        if problems.len() != before {
            return None;
        }
        Some(Drill {
            schedule: schedule?,
            into: raw.into.clone(),
            max_age,
        })
    }

    fn standby(
        &self,
        raw: &RawStandby,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Standby> {
        let before = problems.len();
        self.destination(path, &raw.into, problems);
        if raw.rpo.0.is_zero() {
            problems.push(Problem::at(format!("{path}.rpo"), "must be positive"));
        }
        if problems.len() != before {
            return None;
        }
        Some(Standby {
            into: raw.into.clone(),
            rpo: raw.rpo.0,
            min_interval: raw.min_interval.map_or(Duration::ZERO, |d| d.0),
        })
    }
}
