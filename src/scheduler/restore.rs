//! Restores (docs/restore.md): every guard before anything is written, the record, the provider run under its
//! deadline, the outcome in the catalog and the metrics; a standby kept in sync after backups; drills on their
//! schedules; restores accepted before a restart followed again.
//!
//! The scheduler's loop holds one claim per service (a restore's destination, a backup's source): a restore is
//! refused while another operation runs on its destination, and a backup of a service being restored into waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::attempt::{ended_by, under_deadline};
use super::shared::Shared;
use super::{Message, Scheduler, SchedulerHandle};
use crate::catalog::{CatalogError, NewRestore, RestoreFinish, RunningRestore};
use crate::policy;
use crate::providers::{Destination, OperationJournal, RestoreRequest, Resume, Stopped, Verdict};
use crate::record::{BackupRecord, RestoreTrigger, Status};
use crate::target::TargetSpec;

/// A restore asked for.
#[derive(Debug, Clone)]
pub struct RestoreAsk {
    /// The target whose backup is restored.
    pub spec: Arc<TargetSpec>,
    /// The backup; `None`: the newest restorable one.
    pub backup_id: Option<i64>,
    /// A `restore_into` name; `None`: the target's own system.
    pub into: Option<String>,
    /// Why.
    pub trigger: RestoreTrigger,
    /// Check every guard and write nothing.
    pub dry_run: bool,
    /// The operator confirmed overwriting the target's own system (`--yes`).
    pub confirmed: bool,
    /// Who asked (audit).
    pub actor: String,
}

/// What became of a restore asked for: every guard's verdict, and the restore's id when it started.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// Target name.
    pub target: String,
    /// The backup chosen, when there is one.
    pub backup_id: Option<i64>,
    /// Its recovery point.
    pub recovery_point: Option<DateTime<Utc>>,
    /// Where it goes, as the provider names it.
    pub destination: Option<String>,
    /// Why.
    pub trigger: RestoreTrigger,
    /// Nothing was written.
    pub dry_run: bool,
    /// Every guard, in the order checked; the first refusal stops the restore.
    pub verdicts: Vec<Verdict>,
    /// The restore's id, once started.
    pub restore_id: Option<i64>,
}

impl RestorePlan {
    /// The first guard that refused, if any.
    #[must_use]
    pub fn refusal(&self) -> Option<&Verdict> {
        self.verdicts.iter().find(|verdict| !verdict.passed)
    }
}

/// The claim key of a destination: its service, or (for a destination that is no system of its own) the
/// target, so one target never runs two restores at once.
fn claim_key(destination: &Destination, target: &str) -> String {
    destination
        .busy_key
        .clone()
        .unwrap_or_else(|| format!("target/{target}"))
}

/// The backup a restore uses, or why there is none it may use.
async fn choose_backup(
    shared: &Shared,
    target: &str,
    backup_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Result<BackupRecord, String>, CatalogError> {
    let Some(id) = backup_id else {
        let newest = shared
            .catalog
            .backups(Some(target), 1000)
            .await?
            .into_iter()
            .find(|record| record.is_restorable(now));
        return Ok(newest.ok_or_else(|| {
            format!(
                "target {target} has no restorable backup: take one first (rpod backup {target})"
            )
        }));
    };
    let Some(record) = shared.catalog.backup(id).await? else {
        return Ok(Err(format!("there is no backup {id}")));
    };
    if record.target != target {
        return Ok(Err(format!(
            "backup {id} belongs to target {}, not {target}",
            record.target
        )));
    }
    let restorable_status = match record.status {
        Status::Succeeded => true,
        Status::Discovered => record.verified_at.is_some(),
        _ => false,
    };
    if !restorable_status {
        let why = match record.status {
            Status::Pruned => "its artifact was pruned".to_owned(),
            Status::Missing => "its artifact vanished from storage".to_owned(),
            Status::Discovered => {
                "it was found in storage but its content could not be verified".to_owned()
            }
            Status::Running => "it is still running".to_owned(),
            other => format!("it did not succeed (status {})", other.as_str()),
        };
        return Ok(Err(format!("backup {id} cannot be restored: {why}")));
    }
    if let Some(expires_at) = record.expires_at
        && expires_at <= now
    {
        return Ok(Err(format!(
            "backup {id} expired on {}: the service refuses it (API Management fails it with \"Cannot restore: \
             backup expired\"); choose a newer backup",
            expires_at.format("%Y-%m-%d %H:%M UTC")
        )));
    }
    Ok(Ok(record))
}

impl SchedulerHandle {
    /// Checks every guard of a restore and, unless it is a dry run or a guard refuses, records it and starts it.
    /// A refusal leaves an audit row (not for a dry run, which writes nothing) and no restore record.
    ///
    /// # Errors
    /// The catalog could not be read or written.
    pub async fn restore(&self, ask: RestoreAsk) -> Result<RestorePlan, CatalogError> {
        let shared = &self.shared;
        let now = shared.clock.now();
        let spec = &ask.spec;
        let name = spec.config.name.as_str();
        let mut plan = RestorePlan {
            target: name.to_owned(),
            backup_id: None,
            recovery_point: None,
            destination: None,
            trigger: ask.trigger,
            dry_run: ask.dry_run,
            verdicts: Vec::new(),
            restore_id: None,
        };
        let claimed = self.check(shared, &ask, &mut plan, now).await?;
        let Some((backup, destination, key)) = claimed else {
            if let (false, Some(refusal)) = (ask.dry_run, plan.refusal()) {
                let why = format!("{}: {}", refusal.guard, refusal.message);
                warn!(target = %name, trigger = ask.trigger.as_str(), reason = %why, "Restore refused.");
                // The audit row names the backup only when there is one by that id.
                let backup_id = match plan.backup_id {
                    Some(id) if shared.catalog.backup(id).await?.is_some() => Some(id),
                    _ => None,
                };
                shared
                    .catalog
                    .restore_refused(now, &ask.actor, name, backup_id, &why)
                    .await?;
            }
            return Ok(plan);
        };
        let deadline_at = now + policy::delta(spec.config.policy.operation_timeout);
        let inserted = shared
            .catalog
            .insert_restore(&NewRestore {
                target: name,
                backup_id: backup.id,
                into: ask.into.as_deref(),
                destination: &destination.describe,
                trigger: ask.trigger,
                requested_at: now,
                deadline_at,
                actor: &ask.actor,
            })
            .await;
        let id = match inserted {
            Ok(id) => id,
            Err(err) => {
                self.release(&key, false);
                return Err(err);
            }
        };
        plan.restore_id = Some(id);
        info!(
            target = %name, restore_id = id, backup_id = backup.id, trigger = ask.trigger.as_str(),
            destination = %destination.describe, "Restore started."
        );
        let job = RestoreJob {
            spec: spec.clone(),
            backup,
            id,
            into: ask.into.clone(),
            trigger: ask.trigger,
            key,
            deadline_at,
            resume: None,
        };
        let shared_task = shared.clone();
        let handle = self.clone();
        shared
            .tracker
            .spawn(async move { run(&shared_task, &handle, job).await });
        Ok(plan)
    }

    /// The guards, in order; fills `plan` and returns what the restore needs when every guard passed (and, not
    /// for a dry run, the claim on the destination is taken).
    async fn check(
        &self,
        shared: &Shared,
        ask: &RestoreAsk,
        plan: &mut RestorePlan,
        now: DateTime<Utc>,
    ) -> Result<Option<(BackupRecord, Destination, String)>, CatalogError> {
        let spec = &ask.spec;
        let name = spec.config.name.as_str();
        let destination = match spec.provider.destination(ask.into.as_deref(), ask.trigger) {
            Ok(destination) => destination,
            Err(message) => {
                plan.verdicts.push(Verdict::refuse("destination", message));
                return Ok(None);
            }
        };
        plan.destination = Some(destination.describe.clone());
        plan.verdicts.push(Verdict::pass(
            "destination",
            format!("restore into {}", destination.describe),
        ));
        if destination.own && ask.trigger == RestoreTrigger::Manual {
            if ask.confirmed {
                plan.verdicts.push(Verdict::pass(
                    "confirmation",
                    format!("overwriting {} was confirmed", destination.describe),
                ));
            } else {
                plan.verdicts.push(Verdict::refuse(
                    "confirmation",
                    format!(
                        "this restore overwrites {} (the target's own, production system): its current state \
                         is replaced by the backup's; run again with --yes to confirm",
                        destination.describe
                    ),
                ));
                return Ok(None);
            }
        }
        let backup = match choose_backup(shared, name, ask.backup_id, now).await? {
            Ok(backup) => backup,
            Err(message) => {
                plan.backup_id = ask.backup_id;
                plan.verdicts.push(Verdict::refuse("backup", message));
                return Ok(None);
            }
        };
        plan.backup_id = Some(backup.id);
        plan.recovery_point = backup.accepted_at;
        plan.verdicts.push(Verdict::pass(
            "backup",
            format!(
                "backup {} (recovery point {}) is restorable until {}",
                backup.id,
                backup
                    .accepted_at
                    .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339()),
                backup
                    .expires_at
                    .map_or_else(|| "-".to_owned(), |at| at.to_rfc3339())
            ),
        ));
        let artifact = backup.artifact.clone().unwrap_or_default();
        let storage = &spec.storage;
        match storage.stat(&artifact).await {
            Ok(Some(info)) if info.size > 0 => plan.verdicts.push(Verdict::pass(
                "artifact",
                format!(
                    "{artifact} is in storage {} ({} bytes)",
                    storage.name(),
                    info.size
                ),
            )),
            Ok(Some(_)) => {
                plan.verdicts.push(Verdict::refuse(
                    "artifact",
                    format!("{artifact} in storage {} is empty", storage.name()),
                ));
                return Ok(None);
            }
            Ok(None) => {
                plan.verdicts.push(Verdict::refuse(
                    "artifact",
                    format!(
                        "{artifact} is not in storage {}: it was deleted outside rpod (reconciliation marks the \
                         backup missing); choose another backup",
                        storage.name()
                    ),
                ));
                return Ok(None);
            }
            Err(err) => {
                plan.verdicts.push(Verdict::refuse(
                    "artifact",
                    format!("rpod could not look for {artifact}: {err}"),
                ));
                return Ok(None);
            }
        }
        let key = claim_key(&destination, name);
        match self.claim(&key, true).await {
            Ok(()) => plan.verdicts.push(Verdict::pass(
                "in_flight",
                format!(
                    "no other backup or restore runs on {}",
                    destination.describe
                ),
            )),
            Err(message) => {
                plan.verdicts.push(Verdict::refuse("in_flight", message));
                return Ok(None);
            }
        }
        let guards = spec
            .provider
            .restore_guards(&backup, ask.into.as_deref())
            .await;
        let refused = guards.iter().any(|verdict| !verdict.passed);
        plan.verdicts.extend(guards);
        if refused || ask.dry_run {
            return Ok(None);
        }
        // Taken for real only now: another operation may have started while the guards read the service.
        if let Err(message) = self.claim(&key, false).await {
            plan.verdicts.push(Verdict::refuse("in_flight", message));
            return Ok(None);
        }
        Ok(Some((backup, destination, key)))
    }

    /// Takes the claim on `key` (or, with `peek`, only checks that it is free).
    async fn claim(&self, key: &str, peek: bool) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let message = Message::Claim {
            key: key.to_owned(),
            peek,
            reply: tx,
        };
        if self.tx.send(message).is_err() {
            return Err("rpod is stopping".to_owned());
        }
        rx.await
            .unwrap_or_else(|_| Err("rpod is stopping".to_owned()))
    }

    /// Gives the claim on `key` back; `restored` says whether the destination's state changed by rpod's hand.
    fn release(&self, key: &str, restored: bool) {
        let _ = self.tx.send(Message::Release {
            key: key.to_owned(),
            restored,
        });
    }
}

/// One restore to run (or to follow again after a restart).
struct RestoreJob {
    spec: Arc<TargetSpec>,
    backup: BackupRecord,
    id: i64,
    into: Option<String>,
    trigger: RestoreTrigger,
    key: String,
    deadline_at: DateTime<Utc>,
    resume: Option<Resume>,
}

/// The restore's record as its provider's operation journal.
#[derive(Debug)]
struct RestoreJournal {
    catalog: crate::catalog::Catalog,
    id: i64,
}

#[async_trait::async_trait]
impl OperationJournal for RestoreJournal {
    async fn accepted(
        &self,
        accepted_at: DateTime<Utc>,
        handle: &str,
        _request: Option<&str>,
    ) -> Result<(), String> {
        self.catalog
            .restore_accepted(self.id, accepted_at, Some(handle))
            .await
            .map_err(|err| err.to_string())
    }

    async fn polled(&self, handle: &str) -> Result<(), String> {
        self.catalog
            .restore_polled(self.id, handle)
            .await
            .map_err(|err| err.to_string())
    }
}

/// Runs a restore to its end and records how it ended.
async fn run(shared: &Shared, handle: &SchedulerHandle, job: RestoreJob) {
    let name = job.spec.config.name.clone();
    let now = shared.clock.now();
    let cancel = shared.abort.child_token();
    let request = RestoreRequest {
        target: name.clone(),
        restore_id: job.id,
        backup: job.backup.clone(),
        into: job.into.clone(),
        trigger: job.trigger,
        storage: job.spec.storage.clone(),
        cancel: cancel.clone(),
        stopping: shared.stopping.clone(),
        journal: Arc::new(RestoreJournal {
            catalog: shared.catalog.clone(),
            id: job.id,
        }),
        clock: shared.clock.clone(),
        deadline_at: job.deadline_at,
        resume: job.resume.clone(),
    };
    let deadline = (job.deadline_at - now).to_std().unwrap_or(Duration::ZERO);
    let (result, timed_out) =
        under_deadline(job.spec.provider.restore(request), deadline, &cancel).await;
    if let Err(err) = &result
        && err.stopped == Some(Stopped::Detached)
        && !timed_out
    {
        info!(target = %name, restore_id = job.id, "rpod is stopping; the restore goes on and is followed again at the next start.");
        return;
    }
    let completed = shared.clock.now();
    let finish = match &result {
        Ok(outcome) => RestoreFinish {
            status: Status::Succeeded,
            accepted_at: outcome.accepted_at,
            completed_at: completed,
            warnings: outcome.warnings.clone(),
            verified: outcome.verified.clone(),
            error_code: None,
            error_message: None,
        },
        Err(err) => {
            let timeout = job.spec.config.policy.operation_timeout;
            let (status, code, message) = ended_by(err, timed_out, timeout);
            RestoreFinish {
                status,
                accepted_at: err.recovery_point,
                completed_at: completed,
                warnings: Vec::new(),
                verified: None,
                error_code: Some(code),
                error_message: Some(message),
            }
        }
    };
    let recorded = shared.catalog.finish_restore(job.id, &finish).await;
    let mut status = finish.status;
    if let Err(err) = &recorded {
        error!(target = %name, restore_id = job.id, error = %err, "Cannot record the restore's outcome in the catalog.");
        if status == Status::Succeeded {
            status = Status::Failed;
        }
    }
    handle.release(&job.key, result.is_ok() || finish.accepted_at.is_some());
    let seconds = match (status, finish.accepted_at) {
        (Status::Succeeded, Some(accepted)) => (completed - accepted)
            .to_std()
            .ok()
            .map(|d| d.as_secs_f64()),
        _ => None,
    };
    let outcome = match status {
        Status::Succeeded => "succeeded",
        Status::TimedOut => "timed_out",
        Status::Interrupted => return,
        _ => "failed",
    };
    shared
        .metrics
        .restore_finished(&name, job.trigger, outcome, seconds);
    match job.trigger {
        RestoreTrigger::Drill => shared.metrics.drill_finished(
            &name,
            completed,
            if status == Status::Succeeded {
                Some(seconds.unwrap_or(0.0))
            } else {
                None
            },
        ),
        RestoreTrigger::Standby if status == Status::Succeeded => {
            shared
                .metrics
                .standby_restored(&name, job.backup.accepted_at);
        }
        _ => {}
    }
    if status == Status::Succeeded {
        info!(
            target = %name, restore_id = job.id, seconds = seconds.unwrap_or(0.0),
            warnings = finish.warnings.len(), "Restore succeeded."
        );
    } else {
        warn!(
            target = %name, restore_id = job.id, code = finish.error_code.as_deref().unwrap_or("-"),
            message = finish.error_message.as_deref().unwrap_or("-"), "Restore failed."
        );
    }
}

/// At start, once the scheduler runs: follows again every restore an earlier run left accepted, and closes those
/// that never got that far (they are `interrupted`). `targets` are the configured ones; a restore of a target no
/// longer configured is interrupted too. With `only`, just the restores of those targets (a replica that took
/// them over; the others are other replicas' to follow).
///
/// # Errors
/// The catalog could not be read.
pub async fn resume_restores(
    handle: &SchedulerHandle,
    targets: &[Arc<TargetSpec>],
    only: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<(), CatalogError> {
    let shared = &handle.shared;
    for RunningRestore {
        record,
        handle: saved,
        deadline_at,
    } in shared.catalog.running_restores().await?
    {
        if only.is_some_and(|only| !only.contains(&record.target)) {
            continue;
        }
        let spec = targets.iter().find(|t| t.config.name == record.target);
        let backup = shared.catalog.backup(record.backup_id).await?;
        let (Some(spec), Some(saved), Some(accepted_at), Some(backup)) =
            (spec, saved, record.accepted_at, backup)
        else {
            let finish = RestoreFinish {
                status: Status::Interrupted,
                accepted_at: None,
                completed_at: now,
                warnings: Vec::new(),
                verified: None,
                error_code: Some("Interrupted".to_owned()),
                error_message: Some(
                    "rpod stopped before the system accepted this restore; ask for it again"
                        .to_owned(),
                ),
            };
            if let Err(err) = shared.catalog.finish_restore(record.id, &finish).await {
                warn!(restore_id = record.id, error = %err, "Could not close an interrupted restore.");
            }
            continue;
        };
        let destination = match spec
            .provider
            .destination(record.into.as_deref(), record.trigger)
        {
            Ok(destination) => destination,
            Err(message) => Destination {
                describe: message,
                busy_key: None,
                own: false,
            },
        };
        let key = claim_key(&destination, &record.target);
        if let Err(message) = handle.claim(&key, false).await {
            warn!(restore_id = record.id, reason = %message, "A resumed restore shares its destination.");
        }
        info!(target = %record.target, restore_id = record.id, "Following the restore accepted before rpod restarted.");
        let job = RestoreJob {
            spec: spec.clone(),
            backup,
            id: record.id,
            into: record.into.clone(),
            trigger: record.trigger,
            key,
            deadline_at,
            resume: Some(Resume {
                accepted_at,
                handle: saved,
            }),
        };
        let shared_task = shared.clone();
        let handle = handle.clone();
        shared
            .tracker
            .spawn(async move { run(&shared_task, &handle, job).await });
    }
    Ok(())
}

/// After a successful backup of a target with a standby: restores the newest restorable backup into the
/// standby, unless the last standby restore started less than `min_interval` ago.
pub(super) async fn sync_standby(handle: &SchedulerHandle, spec: Arc<TargetSpec>) {
    let shared = &handle.shared;
    let Some(standby) = spec.config.standby.clone() else {
        return;
    };
    let name = spec.config.name.clone();
    let now = shared.clock.now();
    let last = shared
        .catalog
        .restores(&name, Some(RestoreTrigger::Standby), 1)
        .await
        .ok()
        .and_then(|restores| restores.into_iter().next());
    if let Some(last) = last
        && now - last.requested_at < policy::delta(standby.min_interval)
    {
        info!(target = %name, "Standby restored less than min_interval ago; this backup waits for the next one.");
        return;
    }
    let ask = RestoreAsk {
        spec,
        backup_id: None,
        into: Some(standby.into.clone()),
        trigger: RestoreTrigger::Standby,
        dry_run: false,
        confirmed: false,
        actor: "rpod standby".to_owned(),
    };
    match handle.restore(ask).await {
        Ok(plan) => {
            if let Some(refusal) = plan.refusal() {
                warn!(target = %name, guard = refusal.guard, reason = %refusal.message, "Standby sync refused.");
            }
        }
        Err(err) => warn!(target = %name, error = %err, "Standby sync could not start."),
    }
}

/// Runs a target's drills on their schedule until `stop` is cancelled.
pub(super) async fn drill_loop(
    handle: SchedulerHandle,
    spec: Arc<TargetSpec>,
    stop: tokio_util::sync::CancellationToken,
) {
    let shared = &handle.shared;
    let Some(drill) = spec.config.drill.clone() else {
        return;
    };
    let name = spec.config.name.clone();
    loop {
        let now = shared.clock.now();
        let Some(next) = drill.schedule.next_after(now) else {
            return;
        };
        // The system clock sleeps at most a while at a time: wait until the slot has really come.
        while shared.clock.now() < next {
            tokio::select! {
                () = stop.cancelled() => return,
                () = shared.clock.sleep_until(next) => {}
            }
        }
        let ask = RestoreAsk {
            spec: spec.clone(),
            backup_id: None,
            into: drill.into.clone(),
            trigger: RestoreTrigger::Drill,
            dry_run: false,
            confirmed: false,
            actor: "rpod drill".to_owned(),
        };
        match handle.restore(ask).await {
            Ok(plan) => {
                if let Some(refusal) = plan.refusal() {
                    // A drill that cannot even start is a failed drill.
                    shared
                        .metrics
                        .drill_finished(&name, shared.clock.now(), None);
                    shared
                        .metrics
                        .restore_finished(&name, RestoreTrigger::Drill, "failed", None);
                    warn!(target = %name, guard = refusal.guard, reason = %refusal.message, "Restore drill refused.");
                }
            }
            Err(err) => warn!(target = %name, error = %err, "Restore drill could not start."),
        }
    }
}

impl Scheduler {
    /// The claim of a restore on `key`: refused while another restore holds it or a backup of a target on that
    /// service runs. Targets on that service see its moves as rpod's own until the restore ends.
    pub(super) fn claim(&mut self, key: String, peek: bool) -> Result<(), String> {
        if self.claims.contains(&key) {
            return Err(format!(
                "another restore into {key} is running: rpod runs one operation per service at a time"
            ));
        }
        let on_key =
            |state: &super::TargetState| state.spec.provider.busy_key().as_deref() == Some(&key);
        if let Some(state) = self
            .targets
            .values()
            .find(|state| state.running.is_some() && on_key(state))
        {
            return Err(format!(
                "a backup of target {} runs on {key}: rpod runs one operation per service at a time; try again \
                 when it has finished",
                state.name
            ));
        }
        if !peek {
            for state in self.targets.values_mut().filter(|state| on_key(state)) {
                if let Some(tracker) = &mut state.changes {
                    tracker.restoring();
                }
            }
            self.claims.insert(key);
        }
        Ok(())
    }

    /// A restore on `key` ended: its claim goes; the first observation of a target on that service after it
    /// takes every move as rpod's own (when the restore changed the service).
    pub(super) fn release(&mut self, key: &str, restored: bool) {
        self.claims.remove(key);
        for state in self.targets.values_mut() {
            if state.spec.provider.busy_key().as_deref() == Some(key)
                && let Some(tracker) = &mut state.changes
            {
                tracker.restored(restored);
            }
        }
    }

    /// Whether a restore runs on the service a target backs up.
    pub(super) fn restore_runs_on(&self, spec: &TargetSpec) -> bool {
        spec.provider
            .busy_key()
            .is_some_and(|key| self.claims.contains(&key))
    }

    /// A handle on this scheduler, for the tasks it starts.
    pub(super) fn handle(&self) -> SchedulerHandle {
        SchedulerHandle {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Starts (again) the drill loop of a target with `[targets.drill]`.
    pub(super) fn start_drills(&mut self, name: &Arc<str>) {
        let handle = self.handle();
        let Some(state) = self.targets.get_mut(name) else {
            return;
        };
        if let Some(old) = state.drills.take() {
            old.cancel();
        }
        if state.spec.config.drill.is_none() {
            return;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        state.drills = Some(stop.clone());
        tokio::spawn(drill_loop(handle, state.spec.clone(), stop));
    }

    /// After a successful backup: syncs the target's standby, when it has one.
    pub(super) fn after_backup(&self, spec: &Arc<TargetSpec>) {
        if spec.config.standby.is_none() {
            return;
        }
        let handle = self.handle();
        let spec = spec.clone();
        self.shared
            .tracker
            .spawn(async move { sync_standby(&handle, spec).await });
    }
}

/// Runs one restore outside the daemon (`rpod restore` when no daemon answers): its guards and, unless one
/// refuses or it is a dry run, the restore to its end. Returns the plan and the restore's final record.
///
/// # Errors
/// The catalog could not be read or written.
pub async fn restore_once(
    shared: Shared,
    ask: RestoreAsk,
) -> Result<(RestorePlan, Option<crate::record::RestoreRecord>), crate::catalog::CatalogError> {
    let (scheduler, rx) = Scheduler::new(shared.clone());
    let tx = scheduler.tx.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(rx, stop.clone()));
    let handle = SchedulerHandle {
        tx,
        shared: shared.clone(),
    };
    let plan = handle.restore(ask).await;
    shared.tracker.close();
    shared.tracker.wait().await;
    stop.cancel();
    let _ = task.await;
    let plan = plan?;
    let record = match plan.restore_id {
        Some(id) => shared.catalog.restore(id).await?,
        None => None,
    };
    Ok((plan, record))
}
