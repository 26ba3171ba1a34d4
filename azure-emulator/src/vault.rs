//! Recovery Services vaults as the emulator keeps them: their policies, protected VMs, accepted backups
//! (operation, then job) and recovery points.
//!
//! Everything moves on the emulator's calendar ([`crate::clock::Clock`], which follows Tokio's clock and
//! [`crate::Emulator::advance_clock`]), and lazily: [`Vault::settle`] brings a vault up to a given time before
//! anything reads it, ending operation phases (a job appears), ending jobs (a recovery point appears, the
//! protected item's `lastBackup*` move). So paused Tokio time drives backups and the UTC day alike, with no task
//! running in the background.
//!
//! A backup accepted at `t` runs its operation phase until `t + operation duration`; its job starts at `t`
//! and ends at `t + job duration` (never before the operation phase ends). The job's first task, "Take
//! Snapshot", takes the first tenth of the job; "Transfer data to vault" the rest. A job that fails or is
//! cancelled (by a fault) ends with the snapshot task. A completed job's recovery point is dated at the
//! snapshot (`t`) and expires at the requested time.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::Rng as _;

use crate::vm::{
    BackupPolicy, JobOutcome, JobStatus, ProtectedVmRef, ProtectedVmSpec, ProtectedVmState,
    RecoveryPointSource, RecoveryPointState, VmJobState,
};

/// On-demand backups accepted per item per UTC day (the VM support matrix's hard limit).
pub(crate) const DAILY_ON_DEMAND_LIMIT: u32 = 9;

/// How long an on-demand point is kept when the request gives no expiry.
pub(crate) const DEFAULT_ON_DEMAND_RETENTION: Duration = Duration::days(30);

/// Vaults are found case-insensitively: lower-cased subscription, group, name.
pub(crate) type VaultKey = (String, String, String);

/// Protected VMs within a vault: lower-cased VM resource group and VM name.
pub(crate) type ItemKey = (String, String);

/// The key of a vault.
pub(crate) fn vault_key(subscription: &str, resource_group: &str, name: &str) -> VaultKey {
    (
        subscription.to_ascii_lowercase(),
        resource_group.to_ascii_lowercase(),
        name.to_ascii_lowercase(),
    )
}

/// The key of a protected VM within its vault.
pub(crate) fn item_key(vm_resource_group: &str, vm: &str) -> ItemKey {
    (
        vm_resource_group.to_ascii_lowercase(),
        vm.to_ascii_lowercase(),
    )
}

/// One hosted Recovery Services vault.
#[derive(Debug)]
pub(crate) struct Vault {
    /// Subscription, group and name as first given.
    pub(crate) subscription: String,
    pub(crate) resource_group: String,
    pub(crate) name: String,
    /// Policies by lower-cased name.
    pub(crate) policies: BTreeMap<String, BackupPolicy>,
    pub(crate) items: BTreeMap<ItemKey, Item>,
    /// Accepted backups, oldest first.
    pub(crate) backups: Vec<Backup>,
}

/// One protected VM.
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) spec: ProtectedVmSpec,
    /// `protectedItemDataId`.
    pub(crate) data_id: u64,
    /// The UTC day the counts are for.
    day: NaiveDate,
    posts_today: u32,
    accepted_today: u32,
    pub(crate) points: Vec<RecoveryPoint>,
    pub(crate) last_backup_status: Option<String>,
    pub(crate) last_backup_time: Option<DateTime<Utc>>,
}

/// One recovery point.
#[derive(Debug, Clone)]
pub(crate) struct RecoveryPoint {
    pub(crate) name: String,
    pub(crate) time: DateTime<Utc>,
    pub(crate) expiry: DateTime<Utc>,
    pub(crate) source: RecoveryPointSource,
    /// `recoveryPointType`: `AppConsistent`, or `CrashConsistent` for a job completed with warnings.
    pub(crate) kind: &'static str,
}

/// Where an accepted backup's operation phase is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OperationPhase {
    Running,
    Succeeded,
    Failed { code: String, message: String },
}

/// One accepted on-demand backup: its operation and its job.
#[derive(Debug)]
pub(crate) struct Backup {
    pub(crate) operation_id: String,
    pub(crate) item: ItemKey,
    pub(crate) api_version: String,
    pub(crate) accepted_at: DateTime<Utc>,
    pub(crate) operation_ends: DateTime<Utc>,
    /// A `FailOperation` fault taken when accepted: the operation phase ends failed, with no job.
    pub(crate) operation_failure: Option<(String, String)>,
    pub(crate) phase: OperationPhase,
    pub(crate) job_id: String,
    pub(crate) activity_id: String,
    /// How the job ends; `None`: `Completed`.
    pub(crate) outcome: Option<JobOutcome>,
    pub(crate) snapshot_ends: DateTime<Utc>,
    pub(crate) job_ends: DateTime<Utc>,
    /// The job's terminal status once it ended.
    pub(crate) ended: Option<JobStatus>,
    pub(crate) expiry: DateTime<Utc>,
}

impl Backup {
    /// Whether the job exists (the operation phase is over and succeeded).
    pub(crate) fn has_job(&self) -> bool {
        self.phase == OperationPhase::Succeeded
    }

    /// The job's status now.
    pub(crate) fn job_status(&self) -> JobStatus {
        self.ended.unwrap_or(JobStatus::InProgress)
    }

    /// When the job ended, if it has.
    pub(crate) fn job_ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended.map(|_| self.job_ends)
    }

    /// The terminal status the job reaches (at `job_ends`).
    fn planned_status(&self) -> JobStatus {
        match &self.outcome {
            None => JobStatus::Completed,
            Some(JobOutcome::CompletedWithWarnings) => JobStatus::CompletedWithWarnings,
            Some(JobOutcome::Failed { .. }) => JobStatus::Failed,
            Some(JobOutcome::Cancelled) => JobStatus::Cancelled,
        }
    }
}

/// What accepting a backup needs to know.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) api_version: String,
    pub(crate) expiry: DateTime<Utc>,
    pub(crate) operation_duration: Duration,
    pub(crate) job_duration: Duration,
    pub(crate) operation_failure: Option<(String, String)>,
    pub(crate) outcome: Option<JobOutcome>,
}

impl Vault {
    /// An empty vault.
    pub(crate) fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            name: name.to_owned(),
            policies: BTreeMap::new(),
            items: BTreeMap::new(),
            backups: Vec::new(),
        }
    }

    /// The vault's ARM id.
    pub(crate) fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// Protects a VM (replacing one of the same name; its history goes) and stores its policy.
    pub(crate) fn add(&mut self, spec: ProtectedVmSpec, now: DateTime<Utc>) {
        self.policies
            .insert(spec.policy.name.to_ascii_lowercase(), spec.policy.clone());
        let key = item_key(&spec.vm_resource_group, &spec.vm);
        self.backups.retain(|backup| backup.item != key);
        self.items.insert(
            key,
            Item {
                spec,
                data_id: rand::rng().random_range(100_000_000_000_000..999_999_999_999_999),
                day: now.date_naive(),
                posts_today: 0,
                accepted_today: 0,
                points: Vec::new(),
                last_backup_status: None,
                last_backup_time: None,
            },
        );
    }

    /// Brings the vault up to `now`: ends operation phases and jobs whose time has come, in time order.
    pub(crate) fn settle(&mut self, now: DateTime<Utc>) {
        for backup in &mut self.backups {
            if backup.phase == OperationPhase::Running && backup.operation_ends <= now {
                backup.phase = match backup.operation_failure.take() {
                    Some((code, message)) => OperationPhase::Failed { code, message },
                    None => OperationPhase::Succeeded,
                };
            }
        }
        let mut ending: Vec<usize> = (0..self.backups.len())
            .filter(|&i| {
                let backup = &self.backups[i];
                backup.has_job() && backup.ended.is_none() && backup.job_ends <= now
            })
            .collect();
        ending.sort_by_key(|&i| self.backups[i].job_ends);
        for i in ending {
            let status = self.backups[i].planned_status();
            let backup = &mut self.backups[i];
            backup.ended = Some(status);
            let (time, expiry) = (backup.accepted_at, backup.expiry);
            let Some(item) = self.items.get_mut(&backup.item) else {
                continue;
            };
            item.last_backup_status = Some(status.as_str().to_owned());
            if status.made_a_point() {
                let kind = if status == JobStatus::CompletedWithWarnings {
                    "CrashConsistent"
                } else {
                    "AppConsistent"
                };
                item.add_point(time, expiry, RecoveryPointSource::OnDemand, kind);
                item.last_backup_time = Some(item.last_backup_time.map_or(time, |t| t.max(time)));
            }
        }
    }

    /// Accepts an on-demand backup of `item` at `now`; returns the operation id.
    pub(crate) fn accept(
        &mut self,
        item: &ItemKey,
        now: DateTime<Utc>,
        accepted: Accepted,
    ) -> String {
        let operation_id = crate::reply::uuid_like();
        let operation_ends = now + accepted.operation_duration;
        let snapshot_ends = now + accepted.job_duration / 10;
        let cut_short = matches!(
            accepted.outcome,
            Some(JobOutcome::Failed { .. } | JobOutcome::Cancelled)
        );
        let job_ends = if cut_short {
            snapshot_ends
        } else {
            now + accepted.job_duration
        }
        .max(operation_ends);
        self.backups.push(Backup {
            operation_id: operation_id.clone(),
            item: item.clone(),
            api_version: accepted.api_version,
            accepted_at: now,
            operation_ends,
            operation_failure: accepted.operation_failure,
            phase: OperationPhase::Running,
            job_id: crate::reply::uuid_like(),
            activity_id: crate::reply::uuid_like(),
            outcome: accepted.outcome,
            snapshot_ends: snapshot_ends.min(job_ends),
            job_ends,
            ended: None,
            expiry: accepted.expiry,
        });
        operation_id
    }

    /// The backup with this operation id.
    pub(crate) fn backup_by_operation(&self, operation_id: &str) -> Option<&Backup> {
        self.backups
            .iter()
            .find(|b| b.operation_id.eq_ignore_ascii_case(operation_id))
    }

    /// The backup whose job has this id (only once the job exists).
    pub(crate) fn backup_by_job(&self, job_id: &str) -> Option<&Backup> {
        self.backups
            .iter()
            .find(|b| b.has_job() && b.job_id.eq_ignore_ascii_case(job_id))
    }

    /// How many items a policy protects.
    pub(crate) fn protected_by(&self, policy: &str) -> usize {
        self.items
            .values()
            .filter(|item| item.spec.policy.name.eq_ignore_ascii_case(policy))
            .count()
    }

    /// The snapshot of `item` at `now` (the vault settled).
    pub(crate) fn snapshot(&self, key: &ItemKey, now: DateTime<Utc>) -> Option<ProtectedVmState> {
        let item = self.items.get(key)?;
        let today = item.day == now.date_naive();
        let jobs = self
            .backups
            .iter()
            .filter(|b| &b.item == key)
            .map(|b| VmJobState {
                operation_id: b.operation_id.clone(),
                operation_status: match b.phase {
                    OperationPhase::Running => "InProgress",
                    OperationPhase::Succeeded => "Succeeded",
                    OperationPhase::Failed { .. } => "Failed",
                }
                .to_owned(),
                job_id: b.has_job().then(|| b.job_id.clone()),
                job_status: b.has_job().then(|| b.job_status()),
                accepted_at: b.accepted_at,
                ended_at: b.job_ended_at(),
                requested_expiry: b.expiry,
            })
            .collect();
        let mut points: Vec<RecoveryPointState> = item
            .live_points(now)
            .map(|p| RecoveryPointState {
                name: p.name.clone(),
                time: p.time,
                expiry: p.expiry,
                source: p.source,
            })
            .collect();
        points.sort_by_key(|p| p.time);
        Some(ProtectedVmState {
            spec: item.spec.clone(),
            backup_posts_today: if today { item.posts_today } else { 0 },
            accepted_backups_today: if today { item.accepted_today } else { 0 },
            jobs,
            recovery_points: points,
            last_backup_status: item.last_backup_status.clone(),
            last_backup_time: item.last_backup_time,
        })
    }
}

impl Item {
    /// The VM's name as a reference.
    pub(crate) fn reference(&self) -> ProtectedVmRef {
        self.spec.reference()
    }

    /// Counts a backup POST at `now` (resetting the counts on a new UTC day); returns how many were accepted
    /// earlier today.
    pub(crate) fn count_post(&mut self, now: DateTime<Utc>) -> u32 {
        let today = now.date_naive();
        if self.day != today {
            self.day = today;
            self.posts_today = 0;
            self.accepted_today = 0;
        }
        self.posts_today += 1;
        self.accepted_today
    }

    /// Counts an accepted backup (after [`Self::count_post`] the same day).
    pub(crate) fn count_accepted(&mut self) {
        self.accepted_today += 1;
    }

    /// Adds a recovery point with a fresh numeric name; returns the name.
    pub(crate) fn add_point(
        &mut self,
        time: DateTime<Utc>,
        expiry: DateTime<Utc>,
        source: RecoveryPointSource,
        kind: &'static str,
    ) -> String {
        let name = loop {
            let candidate = rand::rng()
                .random_range(10_000_000_000_000_u64..100_000_000_000_000)
                .to_string();
            if !self.points.iter().any(|p| p.name == candidate) {
                break candidate;
            }
        };
        self.points.push(RecoveryPoint {
            name: name.clone(),
            time,
            expiry,
            source,
            kind,
        });
        name
    }

    /// The points not yet expired at `now`.
    pub(crate) fn live_points(&self, now: DateTime<Utc>) -> impl Iterator<Item = &RecoveryPoint> {
        self.points.iter().filter(move |p| p.expiry > now)
    }

    /// `lastRecoveryPoint`: the newest live point's time.
    pub(crate) fn last_recovery_point(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.live_points(now).map(|p| p.time).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    fn vault_with_vm(now: DateTime<Utc>) -> (Vault, ItemKey) {
        let mut vault = Vault::new("s", "rg", "v");
        vault.add(ProtectedVmSpec::new("s", "rg", "v", "rg-vm", "vm1"), now);
        (vault, item_key("RG-VM", "VM1"))
    }

    fn accepted(outcome: Option<JobOutcome>, expiry: DateTime<Utc>) -> Accepted {
        Accepted {
            api_version: "2025-08-01".into(),
            expiry,
            operation_duration: Duration::seconds(2),
            job_duration: Duration::minutes(10),
            operation_failure: None,
            outcome,
        }
    }

    #[test]
    fn an_operation_becomes_a_job_that_becomes_a_recovery_point() {
        let t0 = at("2026-03-01T10:00:00Z");
        let expiry = at("2026-04-01T00:00:00Z");
        let (mut vault, key) = vault_with_vm(t0);
        let id = vault.accept(&key, t0, accepted(None, expiry));
        vault.settle(t0 + Duration::seconds(1));
        let backup = vault.backup_by_operation(&id).unwrap();
        assert!(!backup.has_job());
        let job_id = backup.job_id.clone();
        assert!(
            vault.backup_by_job(&job_id).is_none(),
            "no job before the operation ends"
        );

        vault.settle(t0 + Duration::seconds(2));
        let backup = vault.backup_by_job(&job_id).unwrap();
        assert_eq!(backup.job_status(), JobStatus::InProgress);
        assert_eq!(backup.snapshot_ends, t0 + Duration::minutes(1));
        assert!(vault.items[&key].points.is_empty());

        vault.settle(t0 + Duration::minutes(10));
        let state = vault.snapshot(&key, t0 + Duration::minutes(10)).unwrap();
        assert_eq!(state.jobs[0].job_status, Some(JobStatus::Completed));
        assert_eq!(state.recovery_points.len(), 1);
        assert_eq!(state.recovery_points[0].time, t0);
        assert_eq!(state.recovery_points[0].expiry, expiry);
        assert_eq!(state.last_backup_status.as_deref(), Some("Completed"));
        assert_eq!(state.last_backup_time, Some(t0));
    }

    #[test]
    fn failed_and_cancelled_jobs_end_with_the_snapshot_and_make_no_point() {
        let t0 = at("2026-03-01T10:00:00Z");
        for outcome in [
            JobOutcome::Cancelled,
            JobOutcome::Failed {
                code: "UserErrorVmNotFound".into(),
                message: "gone".into(),
            },
        ] {
            let (mut vault, key) = vault_with_vm(t0);
            vault.accept(&key, t0, accepted(Some(outcome), t0 + Duration::days(5)));
            vault.settle(t0 + Duration::minutes(1));
            let state = vault.snapshot(&key, t0 + Duration::minutes(1)).unwrap();
            assert!(matches!(
                state.jobs[0].job_status,
                Some(JobStatus::Failed | JobStatus::Cancelled)
            ));
            assert!(state.recovery_points.is_empty());
            assert_eq!(state.last_backup_time, None);
        }
    }

    #[test]
    fn counts_reset_on_a_new_utc_day_and_expired_points_vanish() {
        let late = at("2026-03-01T23:59:59Z");
        let (mut vault, key) = vault_with_vm(late);
        let item = vault.items.get_mut(&key).unwrap();
        assert_eq!(item.count_post(late), 0);
        item.count_accepted();
        assert_eq!(item.count_post(late), 1);
        assert_eq!(
            item.count_post(late + Duration::seconds(1)),
            0,
            "midnight UTC"
        );
        item.add_point(
            late,
            late + Duration::hours(1),
            RecoveryPointSource::Policy,
            "AppConsistent",
        );
        assert_eq!(item.live_points(late).count(), 1);
        assert_eq!(item.live_points(late + Duration::hours(1)).count(), 0);
    }
}
