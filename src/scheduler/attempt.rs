//! One backup attempt: take a permit, record it, run the provider under its deadline, record the outcome,
//! update metrics, report back to the scheduler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info, warn};

use super::shared::Shared;
use crate::catalog::{
    ArtifactName, EndBackup, Finish, OperationAccepted, PendingOperation, StartBackup, Started,
};
use crate::policy;
use crate::providers::{BackupRequest, OperationJournal, ProviderError, Resume, Stopped};
use crate::record::{Status, TargetSummary, Trigger};
use crate::target::TargetSpec;

/// How long a cancelled provider gets to clean up (kill its process group, discard its artifact).
const CANCEL_GRACE: Duration = Duration::from_secs(10);

pub(super) struct Job {
    pub spec: Arc<TargetSpec>,
    pub trigger: Trigger,
    pub attempt: u32,
    pub slot: Option<DateTime<Utc>>,
    pub due: DateTime<Utc>,
    /// An operation accepted before a restart, to poll to its end instead of starting anew.
    pub resume: Option<PendingOperation>,
    /// For `trigger = change`: when the first change it backs up happened.
    pub first_change_at: Option<DateTime<Utc>>,
    /// The previous attempt was cut off with nothing saved: the provider looks for a running operation first.
    pub look_first: bool,
}

/// The attempt's record in the catalog, as its provider's operation journal: acceptance writes the recovery
/// point, the saved operation and the schedule slot in one transaction; each poll moves the saved operation on.
#[derive(Debug)]
struct CatalogJournal {
    catalog: crate::catalog::Catalog,
    backup_id: i64,
    target: String,
    slot: Option<DateTime<Utc>>,
    deadline_at: DateTime<Utc>,
    /// Whether an operation of this backup is saved (accepted now, or before a restart), so its end releases it.
    saved: AtomicBool,
}

#[async_trait::async_trait]
impl OperationJournal for CatalogJournal {
    async fn accepted(
        &self,
        accepted_at: DateTime<Utc>,
        handle: &str,
        request: Option<&str>,
    ) -> Result<(), String> {
        let accepted = OperationAccepted {
            backup_id: self.backup_id,
            target: &self.target,
            accepted_at,
            handle,
            request,
            deadline_at: self.deadline_at,
            slot: self.slot,
        };
        // Set before the write: releasing an operation that was not saved after all costs nothing.
        self.saved.store(true, Ordering::Release);
        self.catalog
            .operation_accepted(&accepted)
            .await
            .map_err(|err| err.to_string())
    }

    async fn polled(&self, handle: &str) -> Result<(), String> {
        self.catalog
            .operation_polled(self.backup_id, handle)
            .await
            .map_err(|err| err.to_string())
    }
}

/// Runs a provider's `work` until `deadline`: then cancels it and gives it [`CANCEL_GRACE`] to stop. Returns its
/// result and whether the deadline passed (the provider may see it pass a moment before this timer does).
pub(super) async fn under_deadline<T>(
    work: impl std::future::Future<Output = Result<T, ProviderError>>,
    deadline: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> (Result<T, ProviderError>, bool) {
    tokio::pin!(work);
    let mut timed_out = false;
    let result = tokio::select! {
        result = &mut work => result,
        () = tokio::time::sleep(deadline) => {
            timed_out = true;
            cancel.cancel();
            tokio::time::timeout(CANCEL_GRACE, &mut work)
                .await
                .unwrap_or_else(|_| Err(ProviderError::cancelled("the provider did not stop in time")))
        }
    };
    timed_out |= result
        .as_ref()
        .is_err_and(|err| err.stopped == Some(Stopped::TimedOut));
    (result, timed_out)
}

/// Counts this attempt against the target's daily budget of backup attempts (a vault's on-demand limit): every
/// attempt started this UTC day counts, retries included, so rpod never sends more than the budget. Updates
/// `rpod_on_demand_budget_remaining`; refuses, saying why, when the budget is spent.
async fn spend_budget(
    shared: &Shared,
    target: &str,
    budget: u32,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let day = policy::utc_day_start(now);
    let used = shared
        .catalog
        .attempts_since(target, day)
        .await
        .map_err(|err| format!("the day's attempts cannot be counted: {err}"))?;
    if let Some((why, _)) = policy::budget_spent(used, budget, now) {
        shared.metrics.set_budget_remaining(target, 0);
        return Err(why);
    }
    shared
        .metrics
        .set_budget_remaining(target, budget - used - 1);
    Ok(())
}

/// How a provider's error ends its record: `timed_out` past the deadline, `interrupted` when rpod stopped it,
/// else `failed` with the provider's code and message.
pub(super) fn ended_by(
    err: &ProviderError,
    timed_out: bool,
    timeout: Duration,
) -> (Status, String, String) {
    if timed_out {
        (
            Status::TimedOut,
            "TimedOut".to_owned(),
            format!(
                "did not finish within operation_timeout {}",
                humantime::format_duration(timeout)
            ),
        )
    } else if err.stopped.is_some() {
        (
            Status::Interrupted,
            "Interrupted".to_owned(),
            "rpod shut down while it ran".to_owned(),
        )
    } else {
        (Status::Failed, err.code.clone(), err.message.clone())
    }
}

/// Records that the schedule slots up to `slot` are used: by an attempt that served it and succeeded, or by a
/// success that a slot was coalesced into. With the journal's acceptance step, the one place that does.
pub(super) async fn mark_slot_used(shared: &Shared, target: &str, slot: DateTime<Utc>) {
    if let Err(err) = shared.catalog.set_last_slot(target, slot).await {
        warn!(target = %target, error = %err, "Could not record the schedule slot as used.");
    }
}

/// How an attempt ended, as far as scheduling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A restorable backup exists now.
    Succeeded,
    /// It failed (or timed out); `retryable` says whether backoff and another attempt may help.
    Failed {
        /// Transient failure.
        retryable: bool,
        /// A server asked to wait this long.
        retry_after: Option<Duration>,
    },
    /// rpod is shutting down.
    Interrupted,
    /// Nothing was started: another replica ran this schedule slot, or this replica no longer holds the target
    /// (docs/high-availability.md).
    Skipped,
}

/// What an attempt reports to the scheduler.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// Target name.
    pub target: String,
    /// Provider kind.
    pub kind: String,
    /// Why it ran.
    pub trigger: Trigger,
    /// Attempt number.
    pub attempt: u32,
    /// The schedule slot it served.
    pub slot: Option<DateTime<Utc>>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The target's restorability afterwards, when the catalog could say.
    pub summary: Option<TargetSummary>,
    /// How long it took, from its start to its recorded end, when it succeeded (the watchdog's lead comes from
    /// the recent ones).
    pub took: Option<Duration>,
    /// The protected resource's etag as the backup's final answer reported it.
    pub etag: Option<String>,
    /// For `trigger = change`: when the first change it backs up happened (kept by its retries).
    pub first_change_at: Option<DateTime<Utc>>,
    /// The backup's catalog id, once it was recorded.
    pub backup_id: Option<i64>,
    /// Its artifact, when it got one.
    pub artifact: Option<String>,
    /// Why it failed (`CODE: message`), as recorded, or as it could not be.
    pub error: Option<String>,
}

/// Runs one attempt; without a `permit`, waits for one (or for shutdown).
pub(super) async fn run(
    shared: &Shared,
    job: Job,
    permit: Option<OwnedSemaphorePermit>,
) -> AttemptReport {
    let name = job.spec.config.name.clone();
    let kind = job.spec.provider.kind();
    let mut report = AttemptReport {
        target: name.clone(),
        kind: kind.to_owned(),
        trigger: job.trigger,
        attempt: job.attempt,
        slot: job.slot,
        outcome: AttemptOutcome::Interrupted,
        summary: None,
        took: None,
        etag: None,
        first_change_at: job.first_change_at,
        backup_id: None,
        artifact: None,
        error: None,
    };
    let permit = if let Some(permit) = permit {
        Some(permit)
    } else {
        tokio::select! {
            permit = shared.permits.clone().acquire_owned() => permit.ok(),
            () = shared.abort.cancelled() => None,
        }
    };
    let Some(permit) = permit else { return report };
    if job.resume.is_none() && !shared.catalog.may_start(&name) {
        info!(target = %name, slot = ?job.slot, "Backup not started: this replica no longer holds the target's lease.");
        report.outcome = AttemptOutcome::Skipped;
        return report;
    }
    shared.metrics.set_in_progress(&name, true);

    let hold = shared.clock.hold();
    let now = shared.clock.now();
    let policy = &job.spec.config.policy;
    let (id, started, artifact, deadline_at) = if let Some(pending) = &job.resume {
        shared
            .metrics
            .attempt_started(&name, pending.requested_at, 0.0);
        (
            pending.backup_id,
            pending.requested_at,
            pending.artifact.clone(),
            pending.deadline_at,
        )
    } else {
        if let Some(budget) = job.spec.provider.daily_budget() {
            match spend_budget(shared, &name, budget, now).await {
                Ok(()) => {}
                Err(why) => {
                    warn!(target = %name, reason = %why, "Backup not started: the daily on-demand budget is spent.");
                    report.error = Some(format!("OnDemandBudgetSpent: {why}"));
                    report.outcome = AttemptOutcome::Failed {
                        retryable: false,
                        retry_after: None,
                    };
                    shared.metrics.set_in_progress(&name, false);
                    return report;
                }
            }
        }
        let lateness = (now - job.due)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let template = &job.spec.config.artifact_name;
        let artifact = if template.uses_id() {
            let spec = job.spec.clone();
            let named = name.clone();
            ArtifactName::FromId(Box::new(move |id| {
                spec.config.artifact_name.render(&named, id, now)
            }))
        } else {
            ArtifactName::Known(template.render(&name, 0, now))
        };
        let started = shared
            .catalog
            .start_backup(StartBackup {
                target: name.clone(),
                kind,
                trigger: job.trigger,
                attempt: job.attempt,
                requested_at: now,
                storage: job.spec.storage.name().to_owned(),
                first_change_at: job.first_change_at,
                slot: job.slot,
                artifact,
            })
            .await;
        match started {
            Ok(Started::Recorded { id, artifact }) => {
                shared.metrics.attempt_started(&name, now, lateness);
                (
                    id,
                    now,
                    artifact,
                    now + policy::delta(policy.operation_timeout),
                )
            }
            Ok(Started::SlotTaken) => {
                info!(target = %name, slot = ?job.slot, "Backup not started: its schedule slot was run by another replica.");
                report.outcome = AttemptOutcome::Skipped;
                shared.metrics.set_in_progress(&name, false);
                return report;
            }
            Err(err) => {
                error!(target = %name, error = %err, "Cannot record the backup in the catalog; not starting it.");
                report.error = Some(format!(
                    "CatalogUnavailable: the backup could not be recorded in the catalog, so it was not started: {err}"
                ));
                report.outcome = AttemptOutcome::Failed {
                    retryable: true,
                    retry_after: None,
                };
                shared.metrics.set_in_progress(&name, false);
                return report;
            }
        }
    };
    drop(hold);
    if job.resume.is_some() {
        info!(target = %name, backup_id = id, "Resuming the operation accepted before rpod restarted.");
    } else {
        info!(target = %name, backup_id = id, trigger = job.trigger.as_str(), attempt = job.attempt, "Backup started.");
    }

    let cancel = shared.abort.child_token();
    let journal = Arc::new(CatalogJournal {
        catalog: shared.catalog.clone(),
        backup_id: id,
        target: name.clone(),
        slot: job.slot,
        deadline_at,
        saved: AtomicBool::new(job.resume.is_some()),
    });
    let request = BackupRequest {
        target: name.clone(),
        backup_id: id,
        artifact,
        storage: job.spec.storage.clone(),
        cancel: cancel.clone(),
        stopping: shared.stopping.clone(),
        journal: journal.clone(),
        clock: shared.clock.clone(),
        deadline_at,
        look_first: job.look_first,
        resume: job.resume.as_ref().map(|pending| Resume {
            accepted_at: pending.accepted_at,
            handle: pending.handle.clone(),
        }),
    };
    let deadline = (deadline_at - now).to_std().unwrap_or(Duration::ZERO);
    let (result, timed_out) =
        under_deadline(job.spec.provider.backup(request), deadline, &cancel).await;
    // The permit bounds operations, not bookkeeping: the next attempt may start while this one's end is recorded.
    drop(permit);
    if let Err(err) = &result
        && err.stopped == Some(Stopped::Detached)
        && !timed_out
    {
        info!(target = %name, backup_id = id, "rpod is stopping; the operation goes on and is resumed at the next start.");
        return report;
    }
    let _hold = shared.clock.hold();
    let completed = shared.clock.now();
    let seconds = (completed - started)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    let policy = &job.spec.config.policy;
    let finish = match &result {
        Ok(outcome) => Finish {
            status: Status::Succeeded,
            accepted_at: Some(outcome.recovery_point),
            completed_at: completed,
            expires_at: Some(
                outcome
                    .expires_at
                    .unwrap_or(outcome.recovery_point + policy::delta(policy.expiry)),
            ),
            artifact: Some(outcome.artifact.clone()),
            size_bytes: outcome.size_bytes.and_then(|s| i64::try_from(s).ok()),
            sha256: outcome.sha256.clone(),
            sku: outcome.sku.clone(),
            etag: outcome.etag.clone(),
            error_code: None,
            error_message: None,
            content: outcome.content.clone(),
        },
        Err(err) => {
            let (status, code, message) = ended_by(err, timed_out, policy.operation_timeout);
            Finish {
                status,
                accepted_at: err.recovery_point,
                completed_at: completed,
                expires_at: None,
                artifact: None,
                size_bytes: None,
                sha256: None,
                sku: None,
                etag: None,
                error_code: Some(code),
                error_message: Some(message),
                content: None,
            }
        }
    };
    // Nothing says "succeeded" before the record is committed: a backup whose outcome could not be recorded
    // failed, everywhere (docs/operations.md, "What restorable means").
    let mut finish = finish;
    let mut unrecorded = None;
    let ended = shared
        .catalog
        .end_backup(EndBackup {
            id,
            target: name.clone(),
            finish: finish.clone(),
            slot: job.slot,
            operation_saved: journal.saved.load(Ordering::Acquire),
        })
        .await;
    let summary = match ended {
        Ok(ended) => Some(ended.summary),
        Err(err) => {
            error!(target = %name, backup_id = id, error = %err, "Cannot record the backup's outcome in the catalog; it does not count.");
            let message = format!("the outcome could not be recorded in the catalog: {err}");
            finish.status = Status::Failed;
            finish.error_code = Some("CatalogUnavailable".to_owned());
            finish.error_message = Some(message.clone());
            unrecorded = Some(message);
            shared.catalog.summary(&name, completed).await.ok()
        }
    };
    let outcome_label = match finish.status {
        Status::Succeeded => Some("succeeded"),
        Status::TimedOut => Some("timed_out"),
        Status::Interrupted => None,
        _ => Some("failed"),
    };
    if let Some(label) = outcome_label {
        shared
            .metrics
            .backup_finished(&name, job.trigger, label, seconds);
    }
    if outcome_label.is_some_and(|label| label != "succeeded")
        && let Some(code) = &finish.error_code
    {
        shared.metrics.backup_failed(&name, code);
    }
    match (&result, finish.status) {
        (Ok(outcome), Status::Succeeded) => info!(
            target = %name, backup_id = id, size_bytes = outcome.size_bytes.unwrap_or(0),
            seconds = format!("{seconds:.1}"), "Backup succeeded."
        ),
        (Err(_), Status::Interrupted) => {
            warn!(target = %name, backup_id = id, "Backup interrupted by shutdown.");
        }
        _ => warn!(
            target = %name, backup_id = id, attempt = job.attempt,
            code = finish.error_code.as_deref().unwrap_or(""),
            "Backup failed: {}", finish.error_message.as_deref().unwrap_or("")
        ),
    }
    if let Some(summary) = &summary {
        let compliant = policy::is_compliant(summary.newest_recovery_point, policy.rpo, completed);
        shared.metrics.set_summary(&name, summary, compliant);
    }
    report.summary = summary;
    report.backup_id = Some(id);
    report.artifact = finish.artifact.clone();
    report.error = match (&finish.error_code, &finish.error_message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (Some(code), None) => Some(code.clone()),
        (None, message) => message.clone(),
    };
    report.etag = result
        .as_ref()
        .ok()
        .filter(|_| unrecorded.is_none())
        .and_then(|outcome| outcome.etag.clone());
    report.took = (finish.status == Status::Succeeded)
        .then(|| (completed - started).to_std().unwrap_or(Duration::ZERO));
    report.outcome = match (finish.status, &result) {
        (Status::Succeeded, _) => AttemptOutcome::Succeeded,
        (Status::Interrupted, _) => AttemptOutcome::Interrupted,
        // A timeout may pass on the next attempt, and so may a catalog that could not be written.
        (Status::TimedOut, _) | (_, Ok(_)) => AttemptOutcome::Failed {
            retryable: true,
            retry_after: None,
        },
        (_, Err(err)) => AttemptOutcome::Failed {
            retryable: err.retryable,
            retry_after: err.retry_after,
        },
    };
    report
}
