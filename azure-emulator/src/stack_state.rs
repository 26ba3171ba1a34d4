//! Azure Stack Hub backup locations as the emulator keeps them: their settings, the share's free bytes, the
//! built-in scheduler and the backups on the share.
//!
//! Everything moves on the emulator's calendar, lazily, as the Recovery Services vaults do:
//! [`Location::settle`] brings a location up to a given time before anything reads or changes it, replaying in
//! time order what happened since: backups ending (capacity taken, `lastBackupTime` moved), the scheduler's
//! runs (a backup started, or skipped while one runs) and retention (backups pruned, capacity given back). So
//! paused Tokio time and [`crate::Emulator::advance_clock`] drive it alike, with no task in the background.
//!
//! A backup started at `t` ends at `t + duration`. The list shows it `Running` until `t + duration × early
//! fraction`, then `Succeeded` (every role `Succeeded`), and at its end its real status; its operation answers
//! 202 until the end. At the end, in this order: a share condition taken at the start fails it (every role
//! `Failed`); less free space than a backup's size fails it as `OutOfCapacity` (unless every role failed,
//! which writes nothing); failed roles make it `PartialSucceeded`, or `Failed` when all failed; else
//! `Succeeded`. A backup that wrote data (`Succeeded`, `PartialSucceeded`) takes its size from the share and
//! gives it back when pruned, `retention days` after its `createdDateTime`.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};

use crate::backup_location::{
    BackupLocationSpec, BackupLocationState, STACK_ROLES, ShareCondition, StackBackupState,
};
use crate::config::EmulatorConfig;

/// At most this many missed runs of the scheduler are replayed; older ones are skipped.
const MAX_CATCH_UP: i64 = 10_000;

/// Backup locations are found case-insensitively: lower-cased subscription, group, location.
pub(crate) type LocationKey = (String, String, String);

/// The key of a location.
pub(crate) fn location_key(
    subscription: &str,
    resource_group: &str,
    location: &str,
) -> LocationKey {
    (
        subscription.to_ascii_lowercase(),
        resource_group.to_ascii_lowercase(),
        location.to_ascii_lowercase(),
    )
}

/// What a location needs from the emulator's settings to move on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calendar {
    /// How long a backup runs (unless its location says otherwise).
    pub(crate) backup_duration: Duration,
    /// The part of the duration after which the list shows a running backup `Succeeded` (0 to 1).
    pub(crate) early_fraction: f64,
    /// Bytes a backup takes on the share.
    pub(crate) backup_size: u64,
    /// One hour of `backupFrequencyInHours`.
    pub(crate) hour: Duration,
}

impl Calendar {
    /// The settings in `config`.
    pub(crate) fn of(config: &EmulatorConfig) -> Self {
        let fraction = config.stack_list_early_fraction;
        Self {
            backup_duration: chrono_duration(config.stack_backup_duration),
            early_fraction: if fraction.is_finite() {
                fraction.clamp(0.0, 1.0)
            } else {
                1.0
            },
            backup_size: config.stack_backup_size_bytes,
            hour: chrono_duration(config.stack_scheduler_hour),
        }
    }
}

/// A backup's status (the `OperationStatus` values the emulator uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Running,
    Succeeded,
    PartialSucceeded,
    Failed,
}

impl Status {
    /// The value ARM writes.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::PartialSucceeded => "PartialSucceeded",
            Self::Failed => "Failed",
        }
    }

    /// Whether the backup wrote data to the share.
    fn wrote_data(self) -> bool {
        matches!(self, Self::Succeeded | Self::PartialSucceeded)
    }
}

/// The operation a `createBackup` POST started.
#[derive(Debug, Clone)]
pub(crate) struct StackOperation {
    pub(crate) id: String,
    pub(crate) api_version: String,
}

/// One backup on (or going to) the share.
#[derive(Debug, Clone)]
pub(crate) struct StackBackup {
    /// A GUID.
    pub(crate) name: String,
    /// Set when a `createBackup` POST started it.
    pub(crate) operation: Option<StackOperation>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) ends: DateTime<Utc>,
    /// When the list starts showing it `Succeeded`.
    listed_done: DateTime<Utc>,
    pub(crate) by_scheduler: bool,
    /// The location's thumbprint when it started.
    pub(crate) thumbprint: Option<String>,
    /// Roles that fail (planned at the start).
    failed_roles: Vec<&'static str>,
    /// The share condition that fails it (taken at the start, or capacity found short at the end).
    pub(crate) condition: Option<ShareCondition>,
    /// Its terminal status once it ended.
    status: Option<Status>,
    /// Bytes it took on the share.
    bytes: u64,
}

/// How a backup looks in the list at some time.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) status: Status,
    /// Roles shown `Failed` (every other role is shown with `status`, or `Succeeded` when it is partial).
    pub(crate) failed_roles: Vec<&'static str>,
    /// `timeTakenToCreate`, once the list shows it done.
    pub(crate) time_taken: Option<Duration>,
}

impl StackBackup {
    /// Its status as its operation sees it.
    pub(crate) fn status(&self) -> Status {
        self.status.unwrap_or(Status::Running)
    }

    /// Whether it ended.
    pub(crate) fn has_ended(&self) -> bool {
        self.status.is_some()
    }

    /// How the list shows it at `now`: early `Succeeded` from `listed_done`, the real status from its end.
    pub(crate) fn view(&self, now: DateTime<Utc>) -> View {
        match self.status {
            Some(status) => View {
                status,
                failed_roles: if status == Status::Failed {
                    STACK_ROLES.to_vec()
                } else {
                    self.failed_roles.clone()
                },
                time_taken: Some(self.ends - self.created),
            },
            None if now >= self.listed_done => View {
                status: Status::Succeeded,
                failed_roles: Vec::new(),
                time_taken: Some(self.listed_done - self.created),
            },
            None => View {
                status: Status::Running,
                failed_roles: Vec::new(),
                time_taken: None,
            },
        }
    }

    fn snapshot(&self) -> StackBackupState {
        let status = self.status();
        let failed: &[&str] = if status == Status::Failed {
            &STACK_ROLES
        } else {
            &self.failed_roles
        };
        StackBackupState {
            name: self.name.clone(),
            status: status.as_str().to_owned(),
            created: self.created,
            ended: self.status.map(|_| self.ends),
            by_scheduler: self.by_scheduler,
            failed_roles: failed.iter().map(|r| (*r).to_owned()).collect(),
            share_condition: self.condition,
        }
    }
}

/// One hosted backup location.
#[derive(Debug)]
pub(crate) struct Location {
    /// As added, with the current scheduler switch, certificate and free bytes.
    pub(crate) spec: BackupLocationSpec,
    pub(crate) share_condition: Option<ShareCondition>,
    /// Role failures for the next backup to start.
    pub(crate) pending_failed_roles: Vec<&'static str>,
    pub(crate) next_backup: Option<DateTime<Utc>>,
    pub(crate) last_backup: Option<DateTime<Utc>>,
    pub(crate) create_backup_posts: usize,
    /// Backups on the share, by `createdDateTime`.
    pub(crate) backups: VecDeque<StackBackup>,
    /// Pruned backups that a POST started: their operations still answer.
    pruned_with_operations: Vec<StackBackup>,
    pub(crate) deployment_id: String,
}

impl Location {
    /// A location as `spec` describes it, at `now`.
    pub(crate) fn new(spec: BackupLocationSpec, now: DateTime<Utc>, calendar: Calendar) -> Self {
        let mut location = Self {
            spec,
            share_condition: None,
            pending_failed_roles: Vec::new(),
            next_backup: None,
            last_backup: None,
            create_backup_posts: 0,
            backups: VecDeque::new(),
            pruned_with_operations: Vec::new(),
            deployment_id: crate::reply::uuid_like(),
        };
        if location.spec.scheduler_enabled {
            location.next_backup = Some(later(now, location.period(calendar)));
        }
        location
    }

    /// The scheduler's period: `backupFrequencyInHours` hours (at least a millisecond).
    fn period(&self, calendar: Calendar) -> Duration {
        calendar
            .hour
            .checked_mul(i32::try_from(self.spec.frequency_hours).unwrap_or(i32::MAX))
            .unwrap_or(Duration::MAX)
            .max(Duration::milliseconds(1))
    }

    /// How long a backup started now runs.
    fn duration(&self, calendar: Calendar) -> Duration {
        self.spec
            .backup_duration
            .map_or(calendar.backup_duration, chrono_duration)
    }

    /// Turns the scheduler on (its next run one period from `now`, unless it was on) or off. Settle first.
    pub(crate) fn set_scheduler(&mut self, enabled: bool, now: DateTime<Utc>, calendar: Calendar) {
        if enabled && !self.spec.scheduler_enabled {
            self.next_backup = Some(later(now, self.period(calendar)));
        } else if !enabled {
            self.next_backup = None;
        }
        self.spec.scheduler_enabled = enabled;
    }

    /// Sets the roles the next backup to start fails; unknown role names are returned as an error (and nothing
    /// changes). An empty list clears them.
    pub(crate) fn fail_roles(&mut self, roles: &[&str]) -> Result<(), String> {
        self.pending_failed_roles = known_roles(roles)?;
        Ok(())
    }

    /// The backup that is running, if any.
    pub(crate) fn running(&self) -> Option<&StackBackup> {
        self.backups.iter().find(|b| !b.has_ended())
    }

    /// A backup on the share, by name (ignoring case).
    pub(crate) fn backup(&self, name: &str) -> Option<&StackBackup> {
        self.backups
            .iter()
            .find(|b| b.name.eq_ignore_ascii_case(name))
    }

    /// The backup a `createBackup` operation started, pruned or not.
    pub(crate) fn by_operation(&self, id: &str) -> Option<&StackBackup> {
        self.backups
            .iter()
            .chain(&self.pruned_with_operations)
            .find(|b| {
                b.operation
                    .as_ref()
                    .is_some_and(|o| o.id.eq_ignore_ascii_case(id))
            })
    }

    /// Starts a backup at `at`; returns its name. Takes the share condition and the pending role failures.
    pub(crate) fn start(
        &mut self,
        at: DateTime<Utc>,
        calendar: Calendar,
        operation: Option<StackOperation>,
        by_scheduler: bool,
    ) -> String {
        let duration = self.duration(calendar);
        // The fraction is within 0 to 1, so this cannot overflow.
        let early = duration
            .to_std()
            .unwrap_or_default()
            .mul_f64(calendar.early_fraction);
        let name = crate::reply::uuid_like();
        let backup = StackBackup {
            name: name.clone(),
            operation,
            created: at,
            ends: later(at, duration),
            listed_done: later(at, chrono_duration(early)),
            by_scheduler,
            thumbprint: self.spec.encryption_cert_thumbprint.clone(),
            failed_roles: std::mem::take(&mut self.pending_failed_roles),
            condition: self.share_condition,
            status: None,
            bytes: 0,
        };
        self.insert(backup);
        name
    }

    /// Adds a backup that ended already (`Succeeded`, `PartialSucceeded` with the first role failed, or `Failed`
    /// with every role failed), started at `created` and lasting the usual duration; returns its name. Its data
    /// is on the share already: its size is given back when it is pruned.
    pub(crate) fn add_finished(
        &mut self,
        created: DateTime<Utc>,
        status: Status,
        calendar: Calendar,
    ) -> String {
        let duration = self.duration(calendar);
        let name = crate::reply::uuid_like();
        let ends = later(created, duration);
        let backup = StackBackup {
            name: name.clone(),
            operation: None,
            created,
            ends,
            listed_done: ends,
            by_scheduler: false,
            thumbprint: self.spec.encryption_cert_thumbprint.clone(),
            failed_roles: match status {
                Status::PartialSucceeded => vec![STACK_ROLES[0]],
                _ => Vec::new(),
            },
            condition: None,
            status: Some(status),
            bytes: if status.wrote_data() {
                calendar.backup_size
            } else {
                0
            },
        };
        if status.wrote_data() {
            self.last_backup = Some(self.last_backup.map_or(created, |t| t.max(created)));
        }
        self.insert(backup);
        name
    }

    /// Inserts a backup in `createdDateTime` order (after those created at the same time).
    fn insert(&mut self, backup: StackBackup) {
        let at = self
            .backups
            .partition_point(|b| b.created <= backup.created);
        self.backups.insert(at, backup);
    }

    /// Brings the location up to `now`: replays backup ends, scheduler runs and pruning in time order.
    pub(crate) fn settle(&mut self, now: DateTime<Utc>, calendar: Calendar) {
        let period = self.period(calendar);
        if let Some(next) = self.next_backup.filter(|_| self.spec.scheduler_enabled) {
            // Whole milliseconds: a skipped stretch may shift the runs' phase by less than a millisecond each.
            let period_ms = period.num_milliseconds().max(1);
            let behind = (now - next).num_milliseconds() / period_ms;
            if behind > MAX_CATCH_UP {
                let skip = period_ms.saturating_mul(behind - MAX_CATCH_UP);
                self.next_backup = Some(later(next, Duration::milliseconds(skip)));
            }
        }
        loop {
            let end = self
                .backups
                .iter()
                .filter(|b| !b.has_ended())
                .map(|b| b.ends)
                .min()
                .filter(|end| *end <= now);
            let run = self
                .next_backup
                .filter(|at| self.spec.scheduler_enabled && *at <= now);
            match (end, run) {
                (None, None) => break,
                (Some(end), run) if run.is_none_or(|run| end <= run) => {
                    self.prune(end);
                    self.end(end, calendar);
                }
                (_, Some(run)) => {
                    self.prune(run);
                    if self.running().is_none() {
                        self.start(run, calendar, None, true);
                    }
                    self.next_backup = Some(later(run, period));
                }
                (Some(_), None) => unreachable!("matched by the arm above"),
            }
        }
        self.prune(now);
    }

    /// Ends the running backup whose end is `at`.
    fn end(&mut self, at: DateTime<Utc>, calendar: Calendar) {
        let available = self.spec.available_bytes;
        let Some(backup) = self
            .backups
            .iter_mut()
            .find(|b| !b.has_ended() && b.ends == at)
        else {
            return;
        };
        let every_role_failed = backup.failed_roles.len() >= STACK_ROLES.len();
        if backup.condition.is_none() && !every_role_failed && available < calendar.backup_size {
            backup.condition = Some(ShareCondition::OutOfCapacity);
        }
        let status = if backup.condition.is_some() || every_role_failed {
            Status::Failed
        } else if backup.failed_roles.is_empty() {
            Status::Succeeded
        } else {
            Status::PartialSucceeded
        };
        backup.status = Some(status);
        if status.wrote_data() {
            backup.bytes = calendar.backup_size;
            let created = backup.created;
            self.spec.available_bytes = available.saturating_sub(calendar.backup_size);
            self.last_backup = Some(self.last_backup.map_or(created, |t| t.max(created)));
        }
    }

    /// Removes the ended backups whose retention is over at `at`, giving their bytes back to the share.
    fn prune(&mut self, at: DateTime<Utc>) {
        let retention = Duration::days(i64::from(self.spec.retention_days));
        while let Some(first) = self.backups.front() {
            if !first.has_ended() || later(first.created, retention) > at {
                break;
            }
            let Some(pruned) = self.backups.pop_front() else {
                break;
            };
            self.spec.available_bytes = self.spec.available_bytes.saturating_add(pruned.bytes);
            if pruned.operation.is_some() {
                self.pruned_with_operations.push(pruned);
            }
        }
    }

    /// The snapshot of the location (settled).
    pub(crate) fn snapshot(&self) -> BackupLocationState {
        BackupLocationState {
            spec: self.spec.clone(),
            create_backup_posts: self.create_backup_posts,
            backups: self.backups.iter().map(StackBackup::snapshot).collect(),
            available_bytes: self.spec.available_bytes,
            scheduler_enabled: self.spec.scheduler_enabled,
            share_condition: self.share_condition,
            next_backup_time: self.next_backup.filter(|_| self.spec.scheduler_enabled),
            last_backup_time: self.last_backup,
        }
    }
}

/// The infrastructure roles named (ignoring case, each once), or the first unknown name as an error.
pub(crate) fn known_roles(roles: &[&str]) -> Result<Vec<&'static str>, String> {
    let mut found = Vec::new();
    for role in roles {
        let Some(known) = STACK_ROLES.iter().find(|r| r.eq_ignore_ascii_case(role)) else {
            return Err(format!(
                "'{role}' is not an infrastructure role (one of {})",
                STACK_ROLES.join(", ")
            ));
        };
        if !found.contains(known) {
            found.push(*known);
        }
    }
    Ok(found)
}

/// `at + by`, or the latest time there is.
fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A std duration as chrono's (saturating).
pub(crate) fn chrono_duration(duration: std::time::Duration) -> Duration {
    Duration::from_std(duration).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GIB;
    use crate::test_support::at;

    fn calendar() -> Calendar {
        Calendar {
            backup_duration: Duration::minutes(30),
            early_fraction: 0.6,
            backup_size: 10 * GIB,
            hour: Duration::hours(1),
        }
    }

    fn location(now: DateTime<Utc>) -> Location {
        Location::new(
            BackupLocationSpec::new("s", "System.local", "local"),
            now,
            calendar(),
        )
    }

    #[test]
    fn a_backup_looks_done_early_and_takes_its_size_at_the_end() {
        let t0 = at("2026-03-01T10:00:00Z");
        let mut location = location(t0);
        let name = location.start(t0, calendar(), None, false);
        let view = |l: &Location, now| l.backup(&name).unwrap().view(now);
        assert_eq!(view(&location, t0).status, Status::Running);
        let early = t0 + Duration::minutes(18);
        location.settle(early, calendar());
        assert_eq!(view(&location, early).status, Status::Succeeded);
        assert_eq!(
            view(&location, early).time_taken,
            Some(Duration::minutes(18))
        );
        assert_eq!(location.backup(&name).unwrap().status(), Status::Running);
        assert_eq!(location.spec.available_bytes, 60 * GIB);
        assert_eq!(location.last_backup, None);

        let end = t0 + Duration::minutes(30);
        location.settle(end, calendar());
        assert_eq!(location.backup(&name).unwrap().status(), Status::Succeeded);
        assert_eq!(view(&location, end).time_taken, Some(Duration::minutes(30)));
        assert_eq!(location.spec.available_bytes, 50 * GIB);
        assert_eq!(location.last_backup, Some(t0));

        location.settle(t0 + Duration::days(7), calendar());
        assert!(location.backups.is_empty(), "pruned after 7 days");
        assert_eq!(location.spec.available_bytes, 60 * GIB, "given back");
    }

    #[test]
    fn short_capacity_fails_a_backup_as_out_of_capacity() {
        let t0 = at("2026-03-01T10:00:00Z");
        let mut location = location(t0);
        location.spec.available_bytes = 5 * GIB;
        let name = location.start(t0, calendar(), None, false);
        location.settle(t0 + Duration::hours(1), calendar());
        let backup = location.backup(&name).unwrap();
        assert_eq!(backup.status(), Status::Failed);
        assert_eq!(backup.condition, Some(ShareCondition::OutOfCapacity));
        assert_eq!(location.spec.available_bytes, 5 * GIB);
    }

    #[test]
    fn the_scheduler_skips_runs_while_a_backup_runs_and_catches_up_in_order() {
        let t0 = at("2026-03-01T00:00:00Z");
        let cal = Calendar {
            backup_duration: Duration::hours(5),
            ..calendar()
        };
        let mut location = Location::new(
            BackupLocationSpec::new("s", "rg", "local")
                .with_scheduler(true)
                .with_frequency_hours(4),
            t0,
            cal,
        );
        assert_eq!(location.next_backup, Some(t0 + Duration::hours(4)));
        // Runs at 4 h (ends 9 h), 8 h skipped, 12 h (ends 17 h), 16 h skipped, 20 h (ends 25 h).
        location.settle(t0 + Duration::hours(22), cal);
        let created: Vec<_> = location.backups.iter().map(|b| b.created).collect();
        assert_eq!(
            created,
            [4, 12, 20].map(|h| t0 + Duration::hours(h)).to_vec()
        );
        assert!(location.backups.iter().all(|b| b.by_scheduler));
        assert_eq!(location.last_backup, Some(t0 + Duration::hours(12)));
        assert_eq!(location.next_backup, Some(t0 + Duration::hours(24)));

        location.set_scheduler(false, t0 + Duration::hours(22), cal);
        location.settle(t0 + Duration::days(3), cal);
        assert_eq!(location.backups.len(), 3, "no run while off");
    }

    #[test]
    fn a_long_pause_replays_a_bounded_number_of_runs() {
        let t0 = at("2026-03-01T00:00:00Z");
        let cal = Calendar {
            backup_duration: Duration::milliseconds(1),
            hour: Duration::milliseconds(1),
            ..calendar()
        };
        let mut location = Location::new(
            BackupLocationSpec::new("s", "rg", "local").with_scheduler(true),
            t0,
            cal,
        );
        location.spec.available_bytes = u64::MAX;
        location.settle(t0 + Duration::days(400), cal);
        assert!(location.backups.len() <= 10_001);
        assert!(location.next_backup.unwrap() > t0 + Duration::days(400));
    }

    #[test]
    fn role_failures_are_for_the_next_backup_only() {
        let t0 = at("2026-03-01T00:00:00Z");
        let mut location = location(t0);
        assert!(location.fail_roles(&["nope"]).is_err());
        location.fail_roles(&["aCs", "ECE"]).unwrap();
        let partial = location.start(t0, calendar(), None, false);
        location.settle(t0 + Duration::hours(1), calendar());
        let later_one = location.start(t0 + Duration::hours(1), calendar(), None, false);
        location.fail_roles(&STACK_ROLES).unwrap();
        let failed = location.start(t0 + Duration::hours(2), calendar(), None, false);
        location.settle(t0 + Duration::hours(3), calendar());
        let now = t0 + Duration::hours(3);
        let partial = location.backup(&partial).unwrap().view(now);
        assert_eq!(partial.status, Status::PartialSucceeded);
        assert_eq!(partial.failed_roles, ["ACS", "ECE"]);
        assert_eq!(
            location.backup(&later_one).unwrap().status(),
            Status::Succeeded
        );
        assert_eq!(location.backup(&failed).unwrap().status(), Status::Failed);
        assert_eq!(location.spec.available_bytes, 40 * GIB);
    }
}
