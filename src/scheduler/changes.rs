//! Change-driven backups of one target (docs/design.md, "Change-driven backups"): which observations are changes, which changes a backup
//! covers, and when the next change backup is due. Pure: no I/O, no clock; the scheduler passes `now`.
//!
//! - A change is a move of the signals since the last observation (the first observation ever sets the
//!   baseline), or an Event Grid event.
//! - A backup covers the changes seen before it started. Changes seen while it runs stay pending and produce
//!   exactly one follow-up after it; a backup that fails covers nothing.
//! - rpod's own backup moves the service's etag and `lastModifiedAt` (it is an ARM action). While a backup of
//!   the target runs, and at the first observation after it, service-level moves are its own: they are taken
//!   as the new baseline, not counted. When the backup reported the etag it ended with, a different etag at
//!   that observation is a real change after it.
//! - Debounce: due once no change was seen for `quiet_period`, but no later than `max_delay` after the first
//!   pending change, and never sooner than `min_interval` after the target's previous backup started.
//!
//! The state that must survive a restart (the last signals seen, the uncovered changes) is kept in the catalog
//! as JSON: a change already backed up is not backed up again, and one made while rpod was down is seen once,
//! at the first poll.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::changes::{ChangeSignals, parse_time};
use crate::config::OnChange;
use crate::policy::delta;

/// Changes not yet covered by a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Pending {
    /// When rpod first saw one of them.
    pub first_seen: DateTime<Utc>,
    /// When rpod last saw one.
    pub last_seen: DateTime<Utc>,
    /// When the first of them happened, as the signal says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_changed_at: Option<DateTime<Utc>>,
}

impl Pending {
    fn merge(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Self {
                first_seen: a.first_seen.min(b.first_seen),
                last_seen: a.last_seen.max(b.last_seen),
                first_changed_at: match (a.first_changed_at, b.first_changed_at) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                },
            }),
            (a, b) => a.or(b),
        }
    }

    /// The change time recorded on the backup: the signal's, else when rpod saw it.
    pub fn first_change_at(&self) -> DateTime<Utc> {
        self.first_changed_at.unwrap_or(self.first_seen)
    }
}

/// What the catalog keeps (`target_state.change_watermark`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    seen: Option<ChangeSignals>,
    #[serde(default)]
    pending: Option<Pending>,
}

/// When rpod first saw a change no backup covers yet, from the state the catalog keeps.
#[must_use]
pub fn pending_change_since(stored: &str) -> Option<DateTime<Utc>> {
    serde_json::from_str::<Stored>(stored)
        .ok()?
        .pending
        .map(|p| p.first_seen)
}

/// How the first observation after rpod's own backup treats service-level moves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Absorb {
    /// Every move is the backup's own.
    Any,
    /// The backup ended with this etag: a move to it is the backup's own, to anything else a change.
    Etag(String),
    /// rpod restored into the service: every move, its configuration's included, is the restore's own.
    Restore,
}

/// The change state of one target.
#[derive(Debug, Clone)]
pub(super) struct ChangeTracker {
    pub config: OnChange,
    seen: Option<ChangeSignals>,
    pending: Option<Pending>,
    during: Option<Pending>,
    running: bool,
    /// rpod restores into the service: its moves are rpod's own.
    restoring: bool,
    absorb: Option<Absorb>,
    dirty: bool,
}

impl ChangeTracker {
    /// Restores the state the catalog kept; `stored` that cannot be read starts afresh (the next poll sets a
    /// new baseline). `running_since` is the start of a backup resumed at startup: changes seen after it started
    /// stay pending after it.
    pub fn restore(
        config: OnChange,
        stored: Option<&str>,
        running_since: Option<DateTime<Utc>>,
    ) -> Self {
        let stored: Stored = stored
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let mut tracker = Self {
            config,
            seen: stored.seen,
            pending: stored.pending,
            during: None,
            running: false,
            restoring: false,
            absorb: None,
            dirty: false,
        };
        if let Some(since) = running_since {
            tracker.running = true;
            if tracker.pending.is_some_and(|p| p.last_seen >= since) {
                tracker.during = tracker.pending.take();
            }
        }
        tracker
    }

    /// The JSON the catalog keeps, when it changed since the last call.
    pub fn take_dirty(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let stored = Stored {
            seen: self.seen.clone(),
            pending: Pending::merge(self.pending, self.during),
        };
        serde_json::to_string(&stored).ok()
    }

    /// A poll read `signals` at `now`. Returns whether that is a change (counted, debounced).
    pub fn observe(&mut self, signals: ChangeSignals, now: DateTime<Utc>) -> bool {
        let Some(seen) = &self.seen else {
            // The first observation ever is the baseline: the RPO watchdog covers the state before it.
            self.seen = Some(signals);
            self.dirty = true;
            return false;
        };
        let mut config_moved = signals.configuration_change_date != seen.configuration_change_date;
        let etag_moved = signals.etag != seen.etag;
        let mut service_moved = etag_moved || signals.last_modified_at != seen.last_modified_at;
        if self.restoring {
            config_moved = false;
            service_moved = false;
        } else if self.running {
            service_moved = false;
        } else if let Some(absorb) = self.absorb.take() {
            let own = match absorb {
                Absorb::Any => true,
                Absorb::Restore => {
                    config_moved = false;
                    true
                }
                Absorb::Etag(etag) => signals.etag.as_deref() == Some(etag.as_str()),
            };
            if own {
                service_moved = false;
            }
        }
        let changed = config_moved || service_moved;
        if changed {
            let changed_at = if config_moved {
                signals.configuration_change_date.as_deref()
            } else {
                signals.last_modified_at.as_deref()
            }
            .and_then(parse_time);
            self.record(now, changed_at);
        }
        if self.seen.as_ref() != Some(&signals) {
            self.seen = Some(signals);
            self.dirty = true;
        }
        changed
    }

    /// A change reported as such (an Event Grid event), seen at `now`.
    pub fn record(&mut self, now: DateTime<Utc>, changed_at: Option<DateTime<Utc>>) {
        let change = Some(Pending {
            first_seen: now,
            last_seen: now,
            // A signal time in the future (clock skew) says nothing useful about when the change began.
            first_changed_at: changed_at.filter(|at| *at <= now),
        });
        if self.running {
            self.during = Pending::merge(self.during, change);
        } else {
            self.pending = Pending::merge(self.pending, change);
        }
        self.dirty = true;
    }

    /// rpod starts restoring into the service: until it ends, its moves are rpod's own.
    pub fn restoring(&mut self) {
        self.restoring = true;
    }

    /// The restore into the service ended; when it changed the service (`restored`), the first observation after
    /// it takes every move as rpod's own, its configuration's included.
    pub fn restored(&mut self, restored: bool) {
        self.restoring = false;
        if restored {
            self.absorb = Some(Absorb::Restore);
        }
    }

    /// A backup of the target (any trigger) starts: it covers what is pending now.
    pub fn started(&mut self) {
        self.running = true;
    }

    /// The backup ended. One that succeeded covers the changes seen before it started; `etag` is the service's
    /// etag as the backup's final answer reported it.
    pub fn finished(&mut self, succeeded: bool, etag: Option<String>) {
        self.running = false;
        self.absorb = Some(etag.map_or(Absorb::Any, Absorb::Etag));
        self.pending = if succeeded {
            self.during.take()
        } else {
            Pending::merge(self.pending, self.during.take())
        };
        self.dirty = true;
    }

    /// The pending changes, if any (and none is running).
    pub fn pending(&self) -> Option<Pending> {
        if self.running { None } else { self.pending }
    }

    /// When a change backup is due, given when the target's previous backup started.
    pub fn due(&self, previous_start: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let pending = self.pending()?;
        let config = &self.config;
        let settled = (pending.last_seen + delta(config.quiet_period))
            .min(pending.first_seen + delta(config.max_delay));
        Some(match previous_start {
            Some(start) => settled.max(start + delta(config.min_interval)),
            None => settled,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> OnChange {
        OnChange {
            sync_state: true,
            event_grid: false,
            poll_interval: Duration::from_mins(1),
            quiet_period: Duration::from_mins(5),
            max_delay: Duration::from_mins(30),
            min_interval: Duration::from_mins(15),
        }
    }

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::TimeDelta::minutes(minute)
    }

    fn signals(change: &str, etag: &str) -> ChangeSignals {
        ChangeSignals {
            configuration_change_date: Some(format!("2026-11-21T10:{change}:00Z")),
            etag: Some(etag.to_owned()),
            last_modified_at: Some(format!("2026-11-21T10:{change}:00Z")),
        }
    }

    #[test]
    fn the_first_observation_is_a_baseline_and_a_move_is_a_change() {
        let mut tracker = ChangeTracker::restore(config(), None, None);
        assert!(!tracker.observe(signals("00", "a"), at(0)));
        assert!(!tracker.observe(signals("00", "a"), at(1)));
        assert_eq!(tracker.due(None), None);
        assert!(tracker.observe(signals("01", "b"), at(2)));
        let pending = tracker.pending().unwrap();
        assert_eq!(
            pending.first_change_at(),
            parse_time("2026-11-21T10:01:00Z").unwrap()
        );
        assert_eq!(tracker.due(None), Some(at(7)));
    }

    #[test]
    fn quiet_period_max_delay_and_min_interval() {
        let mut tracker = ChangeTracker::restore(config(), None, None);
        tracker.record(at(0), None);
        assert_eq!(tracker.due(None), Some(at(5)), "quiet period");
        for minute in 1..40 {
            tracker.record(at(minute), None);
        }
        assert_eq!(tracker.due(None), Some(at(30)), "max_delay caps it");
        assert_eq!(
            tracker.due(Some(at(25))),
            Some(at(40)),
            "min_interval after the previous start"
        );
    }

    #[test]
    fn a_change_during_a_backup_leaves_exactly_the_follow_up() {
        let mut tracker = ChangeTracker::restore(config(), None, None);
        tracker.record(at(0), None);
        tracker.started();
        assert_eq!(tracker.due(None), None, "nothing is due while one runs");
        tracker.finished(true, None);
        assert_eq!(tracker.pending(), None, "covered by the backup");

        tracker.record(at(10), None);
        tracker.started();
        tracker.record(at(12), None);
        tracker.finished(true, None);
        assert_eq!(tracker.pending().unwrap().first_seen, at(12));

        tracker.started();
        tracker.finished(false, None);
        assert_eq!(
            tracker.pending().unwrap().first_seen,
            at(12),
            "a failed backup covers nothing"
        );
    }

    #[test]
    fn own_backups_move_the_service_without_being_changes() {
        let mut tracker = ChangeTracker::restore(config(), None, None);
        tracker.observe(signals("00", "a"), at(0));
        tracker.started();
        assert!(
            !tracker.observe(signals("00", "b"), at(1)),
            "during the backup"
        );
        tracker.finished(true, Some("c".into()));
        assert!(
            !tracker.observe(signals("00", "c"), at(2)),
            "the etag it ended with"
        );
        assert!(
            tracker.observe(signals("00", "d"), at(3)),
            "a later move is a change"
        );

        let mut tracker = ChangeTracker::restore(config(), None, None);
        tracker.observe(signals("00", "a"), at(0));
        tracker.started();
        tracker.finished(true, Some("c".into()));
        assert!(
            tracker.observe(signals("00", "x"), at(2)),
            "an etag other than the backup's own is a change after it"
        );

        let mut tracker = ChangeTracker::restore(config(), None, None);
        tracker.observe(signals("00", "a"), at(0));
        tracker.started();
        assert!(
            tracker.observe(signals("05", "b"), at(1)),
            "a configuration change during the backup counts"
        );
        tracker.finished(true, None);
        assert!(tracker.pending().is_some());
    }

    #[test]
    fn the_stored_state_survives_a_restart() {
        let mut tracker = ChangeTracker::restore(config(), None, None);
        tracker.observe(signals("00", "a"), at(0));
        let stored = tracker.take_dirty().unwrap();
        assert_eq!(tracker.take_dirty(), None);

        let mut again = ChangeTracker::restore(config(), Some(&stored), None);
        assert!(
            !again.observe(signals("00", "a"), at(10)),
            "already seen before the restart"
        );
        assert!(
            again.observe(signals("09", "b"), at(11)),
            "changed while rpod was down"
        );
        let stored = again.take_dirty().unwrap();

        let pending = ChangeTracker::restore(config(), Some(&stored), None);
        assert_eq!(pending.pending().unwrap().first_seen, at(11));
        let resumed = ChangeTracker::restore(config(), Some(&stored), Some(at(5)));
        assert_eq!(resumed.pending(), None, "a resumed backup runs");
        assert!(
            resumed.during.is_some(),
            "the change was seen after it started"
        );

        let garbage = ChangeTracker::restore(config(), Some("not json"), None);
        assert_eq!(garbage.seen, None);
    }
}
