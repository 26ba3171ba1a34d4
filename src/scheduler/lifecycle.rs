//! How targets join and leave the scheduler: registration at start (catch-up, interrupted attempts, operations
//! to resume), reloads, and re-reading a target's restorability after reconciliation.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::timers::TimerKind;
use super::{Scheduler, Startup, TargetState, changes};
use crate::catalog::{Finish, PendingOperation};
use crate::policy;
use crate::record::TargetSummary;
use crate::record::{RestoreTrigger, Trigger};
use crate::target::TargetSpec;

/// Triggers whose `rpod_backups_total` series exist from startup: the ones a target fires in normal operation.
/// `manual` and `catch_up` series appear with their first attempt (every pre-created series is a line of every
/// scrape); a target in watch mode gets none (docs/metrics.md, "Conventions").
fn triggers_of(spec: &TargetSpec) -> Vec<Trigger> {
    if !spec.provider.starts_backups() {
        // Watch mode: rpod starts none of its backups, so it counts none.
        return Vec::new();
    }
    let mut triggers = vec![Trigger::Rpo];
    if spec.config.policy.schedule.is_some() {
        triggers.insert(0, Trigger::Schedule);
    }
    if spec.config.policy.on_change.is_some() {
        triggers.push(Trigger::Change);
    }
    triggers
}

impl Scheduler {
    /// Registers a target. At start (`startup`), a missed schedule slot or an interrupted attempt leads to one
    /// catch-up run; a target seen for the first time anchors its schedule at `now` (nothing to catch up).
    pub(super) async fn add_target(
        &mut self,
        spec: Arc<TargetSpec>,
        now: DateTime<Utc>,
        startup: Option<Startup>,
    ) -> Result<(), crate::catalog::CatalogError> {
        let name: Arc<str> = Arc::from(spec.config.name.as_str());
        let catalog = &self.shared.catalog;
        let (summary, durations, last_slot, stored_changes, last_drill, last_standby, budget) = {
            let _hold = self.shared.clock.hold();
            let summary = catalog.summary(&name, now).await?;
            let durations = catalog
                .recent_durations(&name, crate::catalog::RECENT_DURATIONS)
                .await?;
            let last_slot = catalog.last_slot(&name).await?;
            if spec.config.policy.schedule.is_some() && last_slot.is_none() {
                catalog.set_last_slot(&name, now).await?;
            }
            let stored_changes = if spec.config.policy.on_change.is_some() {
                catalog.change_state(&name).await?
            } else {
                None
            };
            // The last drill and standby sync survive a restart: their gauges start from the catalog.
            let last_drill = match spec.config.drill {
                Some(_) => {
                    catalog
                        .last_restore_succeeded(&name, RestoreTrigger::Drill)
                        .await?
                }
                None => None,
            };
            let last_standby = match spec.config.standby {
                Some(_) => match catalog
                    .last_restore_succeeded(&name, RestoreTrigger::Standby)
                    .await?
                {
                    Some(restore) => catalog.backup(restore.backup_id).await?,
                    None => None,
                },
                None => None,
            };
            let budget = match spec.provider.daily_budget() {
                Some(budget) => {
                    let day = policy::utc_day_start(now);
                    Some(budget.saturating_sub(catalog.attempts_since(&name, day).await?))
                }
                None => None,
            };
            (
                summary,
                durations,
                last_slot,
                stored_changes,
                last_drill,
                last_standby,
                budget,
            )
        };
        if let Some(remaining) = budget {
            self.shared.metrics.set_budget_remaining(&name, remaining);
        }
        let policy = spec.config.policy.clone();
        self.shared.metrics.register_target(
            &name,
            spec.provider.kind(),
            policy.rpo.as_secs_f64(),
            &triggers_of(&spec),
            !spec.kept_by_system(),
        );
        self.shared.metrics.register_restores(
            &name,
            policy.rto.map(|rto| rto.as_secs_f64()),
            spec.config.drill.as_ref().map(|d| d.max_age.as_secs_f64()),
            spec.config.standby.as_ref().map(|s| s.rpo.as_secs_f64()),
        );
        if let Some(drill) = last_drill
            && let Some(completed) = drill.completed_at
        {
            self.shared.metrics.drill_finished(
                &name,
                completed,
                Some(drill.duration_seconds.unwrap_or(0.0)),
            );
        }
        if let Some(backup) = last_standby {
            self.shared
                .metrics
                .standby_restored(&name, backup.accepted_at);
        }
        let on_change = policy.on_change.clone();
        self.shared.metrics.register_change_sources(
            &name,
            &on_change
                .as_ref()
                .map(crate::config::OnChange::sources)
                .unwrap_or_default(),
            on_change.as_ref().is_some_and(|c| c.sync_state),
        );
        let compliant = policy::is_compliant(summary.newest_recovery_point, policy.rpo, now);
        self.shared.metrics.set_summary(&name, &summary, compliant);
        self.epoch += 1;
        let mut state = TargetState {
            spec,
            name: name.clone(),
            epoch: self.epoch,
            running: None,
            retry: None,
            next_slot: None,
            watchdog_at: None,
            cooldown_until: None,
            newest_recovery_point: summary.newest_recovery_point,
            lead: policy::lead(&policy, &durations),
            durations: durations.into(),
            last_started: summary.last_attempt,
            changes: on_change.map(|config| {
                changes::ChangeTracker::restore(
                    config,
                    stored_changes.as_deref(),
                    startup.and_then(|s| s.resumed),
                )
            }),
            change_at: None,
            poller: None,
            drills: None,
            look_first: startup.is_some_and(|s| s.interrupted),
            summary_at: Some(now),
        };
        let state_schedule = state.spec.config.policy.schedule.clone();
        let missed = match (&state.spec.config.policy.schedule, last_slot) {
            (Some(schedule), Some(last)) => {
                schedule.next_after(last).is_some_and(|slot| slot <= now)
            }
            _ => false,
        };
        if let Some(schedule) = &state.spec.config.policy.schedule {
            state.next_slot = schedule.next_after(now);
        }
        let epoch = state.epoch;
        let next_slot = state.next_slot;
        self.targets.insert(name.clone(), state);
        if let Some(slot) = next_slot {
            self.push(&name, epoch, slot, TimerKind::Slot(slot));
        }
        let (catch_up, interrupted) =
            startup.map_or((false, false), |s| (s.catch_up, s.interrupted));
        if catch_up && (missed || interrupted) {
            if missed {
                info!(target = %name, "A schedule slot was missed while rpod was down; running one catch-up backup.");
            } else {
                info!(target = %name, "Retrying the backup that was interrupted when rpod stopped.");
            }
            // The catch-up serves the newest slot missed: the one a replica claims for it.
            let slot =
                missed.then(|| newest_slot(state_schedule.as_ref(), last_slot, now).unwrap_or(now));
            self.start(&name, Trigger::CatchUp, 1, slot, now);
        }
        self.arm_watchdog(&name, now);
        Ok(())
    }

    /// Polls an operation accepted before the restart to its end. One whose target is gone, or already has a
    /// resumed operation, is closed as interrupted (nothing will poll it).
    pub(super) async fn resume(
        &mut self,
        operation: PendingOperation,
        now: DateTime<Utc>,
    ) -> Result<(), crate::catalog::CatalogError> {
        let name: Arc<str> = Arc::from(operation.target.as_str());
        if self.targets.get(&name).is_none_or(|s| s.running.is_some()) {
            warn!(
                target = %name, backup_id = operation.backup_id,
                "An unfinished operation belongs to a target that is no longer configured (or already resumed); \
                 closing its record as interrupted."
            );
            let _hold = self.shared.clock.hold();
            let finish = Finish::interrupted(
                now,
                "the target was removed from the configuration while its operation ran",
            );
            return self
                .shared
                .catalog
                .finish_backup(operation.backup_id, &finish)
                .await;
        }
        info!(target = %name, backup_id = operation.backup_id, "Resuming an unfinished operation.");
        let (trigger, attempt, slot) = (operation.trigger, operation.attempt, operation.slot);
        self.start_job(&name, trigger, attempt, slot, now, Some(operation), None);
        Ok(())
    }

    /// Takes targets' restorability as the catalog said it at `at` (see [`super::SchedulerHandle::refresh`]).
    pub(super) fn refreshed(&mut self, found: Vec<(String, TargetSummary)>, at: DateTime<Utc>) {
        for (target, summary) in found {
            let name: Arc<str> = Arc::from(target.as_str());
            let Some(state) = self.targets.get_mut(&name) else {
                continue;
            };
            if state.running.is_some() || state.summary_at.is_some_and(|read| read > at) {
                // The attempt under way, or one that ended after this read, knows better.
                continue;
            }
            state.summary_at = Some(at);
            state.newest_recovery_point = summary.newest_recovery_point;
            let compliant = policy::is_compliant(
                summary.newest_recovery_point,
                state.spec.config.policy.rpo,
                at,
            );
            self.shared.metrics.set_summary(&name, &summary, compliant);
            self.arm_watchdog(&name, at);
        }
    }

    pub(super) async fn reload(&mut self, specs: Vec<Arc<TargetSpec>>) {
        let now = self.shared.clock.now();
        let wanted: HashSet<String> = specs.iter().map(|s| s.config.name.clone()).collect();
        let removed: Vec<Arc<str>> = self
            .targets
            .keys()
            .filter(|name| !wanted.contains(&***name))
            .cloned()
            .collect();
        for name in removed {
            self.remove_target(
                &name,
                "Target removed from the configuration; no longer scheduled.",
            );
        }
        for spec in specs {
            let name = spec.config.name.clone();
            if self.targets.contains_key(name.as_str()) {
                self.replace_target(spec, now).await;
            } else {
                info!(target = %name, "New target added by the configuration reload.");
                if let Err(err) = self.add_target(spec, now, None).await {
                    warn!(target = %name, error = %err, "Could not add the target.");
                }
                self.start_changes(&Arc::from(name.as_str()));
                self.start_drills(&Arc::from(name.as_str()));
            }
        }
    }

    /// Replicas on a shared catalog: the targets this replica holds now, with their current settings. One it no
    /// longer holds leaves (an attempt still running there finds its writes refused once another replica holds
    /// it); one it took joins as at start: whatever ran there without a saved operation is closed as
    /// interrupted and retried, a saved operation is resumed (never posted again), a missed slot is caught up
    /// once. Sent after every lease round, so a join that failed is tried again at the next.
    pub(super) async fn own(&mut self, specs: Vec<Arc<TargetSpec>>) {
        let now = self.shared.clock.now();
        let wanted: HashSet<&str> = specs.iter().map(|s| s.config.name.as_str()).collect();
        let gone: Vec<Arc<str>> = self
            .targets
            .keys()
            .filter(|name| !wanted.contains(&***name))
            .cloned()
            .collect();
        for name in gone {
            self.remove_target(
                &name,
                "This replica no longer holds the target; another one schedules it.",
            );
        }
        for spec in specs {
            match self.targets.get(spec.config.name.as_str()) {
                Some(state) if Arc::ptr_eq(&state.spec, &spec) => {}
                Some(_) => self.replace_target(spec, now).await,
                None => self.join(spec, now).await,
            }
        }
    }

    /// Gives up to `count` targets with nothing running, waiting or due for a retry, so their leases can go
    /// back; they leave at once, so nothing starts on them in between.
    pub(super) fn give_up(&mut self, count: usize) -> Vec<String> {
        let waiting: HashSet<&str> = self
            .waiting
            .iter()
            .map(|job| job.spec.config.name.as_str())
            .collect();
        let mut idle: Vec<Arc<str>> = self
            .targets
            .values()
            .filter(|state| {
                state.running.is_none() && state.retry.is_none() && !waiting.contains(&*state.name)
            })
            .map(|state| state.name.clone())
            .collect();
        idle.sort();
        idle.truncate(count);
        for name in &idle {
            self.remove_target(
                name,
                "Target handed to another replica (spreading targets).",
            );
        }
        idle.iter().map(ToString::to_string).collect()
    }

    /// A target this replica took over joins as at start (see [`Scheduler::own`]).
    async fn join(&mut self, spec: Arc<TargetSpec>, now: DateTime<Utc>) {
        let name: Arc<str> = Arc::from(spec.config.name.as_str());
        let found = {
            let _hold = self.shared.clock.hold();
            let catalog = &self.shared.catalog;
            match catalog.interrupt_running(now, Some(&name)).await {
                Ok(interrupted) => catalog
                    .pending_operations(Some(&name))
                    .await
                    .map(|pending| (!interrupted.is_empty(), pending)),
                Err(err) => Err(err),
            }
        };
        let (interrupted, pending) = match found {
            Ok(found) => found,
            Err(err) => {
                warn!(target = %name, error = %err, "Could not take the target over; trying again at the next lease round.");
                return;
            }
        };
        info!(target = %name, resumed = pending.len(), interrupted, "This replica took the target over.");
        let startup = Startup {
            catch_up: pending.is_empty(),
            interrupted,
            resumed: pending.first().map(|op| op.requested_at),
        };
        if let Err(err) = self.add_target(spec, now, Some(startup)).await {
            warn!(target = %name, error = %err, "Could not take the target over; trying again at the next lease round.");
            self.targets.remove(&name);
            return;
        }
        self.start_changes(&name);
        self.start_drills(&name);
        for operation in pending {
            if let Err(err) = self.resume(operation, now).await {
                warn!(target = %name, error = %err, "Could not resume the target's operation.");
            }
        }
    }

    /// Stops scheduling a target (its change poller and drills too); `why` goes to the log.
    fn remove_target(&mut self, name: &Arc<str>, why: &str) {
        if let Some(state) = self.targets.remove(name) {
            for task in [&state.poller, &state.drills].into_iter().flatten() {
                task.cancel();
            }
            info!(target = %name, "{why}");
            if state.running.is_none() {
                self.shared
                    .metrics
                    .unregister_target(name, state.spec.provider.kind());
            }
        }
    }

    /// Re-reads a target with new settings; what runs, was seen and is pending carries over.
    async fn replace_target(&mut self, spec: Arc<TargetSpec>, now: DateTime<Utc>) {
        let name = spec.config.name.clone();
        let Some(old) = self.targets.remove(name.as_str()) else {
            return;
        };
        let kind_changed = old.spec.provider.kind() != spec.provider.kind();
        if kind_changed {
            self.shared
                .metrics
                .unregister_target(&name, old.spec.provider.kind());
        }
        for task in [&old.poller, &old.drills].into_iter().flatten() {
            task.cancel();
        }
        let running = old.running;
        if let Err(err) = self.add_target(spec, now, None).await {
            warn!(target = %name, error = %err, "Could not reload the target.");
        }
        if let Some(state) = self.targets.get_mut(name.as_str()) {
            state.running = running;
            state.last_started = old.last_started.max(state.last_started);
            // What was seen and what is pending carries over; the new settings apply from now.
            if let (Some(tracker), Some(old)) = (&mut state.changes, old.changes) {
                let config = tracker.config.clone();
                *tracker = old;
                tracker.config = config;
            }
            self.shared
                .metrics
                .set_in_progress(&name, running.is_some());
        }
        self.start_changes(&Arc::from(name.as_str()));
        self.start_drills(&Arc::from(name.as_str()));
    }
}

/// The newest slot of `schedule` after `last` and at or before `now` (within a bounded walk).
fn newest_slot(
    schedule: Option<&crate::config::Schedule>,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let schedule = schedule?;
    let mut slot = schedule.next_after(last?)?;
    if slot > now {
        return None;
    }
    for _ in 0..10_000 {
        match schedule.next_after(slot) {
            Some(next) if next <= now => slot = next,
            _ => return Some(slot),
        }
    }
    None
}
