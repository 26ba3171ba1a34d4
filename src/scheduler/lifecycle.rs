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
use crate::record::{RestoreTrigger, Trigger};
use crate::target::TargetSpec;

/// Triggers whose `rpod_backups_total` series exist from startup: the ones a target fires in normal operation.
/// `manual` and `catch_up` series appear with their first attempt (at 10,000 targets every pre-created series
/// costs about 4 MiB and a share of every scrape).
fn triggers_of(spec: &TargetSpec) -> Vec<Trigger> {
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
            let durations = catalog.recent_durations(&name, 20).await?;
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
        };
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
            let slot = missed.then_some(now);
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

    pub(super) async fn refresh(&mut self, targets: &[String]) {
        let now = self.shared.clock.now();
        for target in targets {
            let name: Arc<str> = Arc::from(target.as_str());
            if !self.targets.contains_key(&name) {
                continue;
            }
            let summary = {
                let _hold = self.shared.clock.hold();
                self.shared.catalog.summary(&name, now).await
            };
            match summary {
                Ok(summary) => {
                    if let Some(state) = self.targets.get_mut(&name) {
                        state.newest_recovery_point = summary.newest_recovery_point;
                        let compliant = policy::is_compliant(
                            summary.newest_recovery_point,
                            state.spec.config.policy.rpo,
                            now,
                        );
                        self.shared.metrics.set_summary(&name, &summary, compliant);
                    }
                    self.arm_watchdog(&name, now);
                }
                Err(err) => {
                    warn!(target = %name, error = %err, "Could not re-read the target's restorability.");
                }
            }
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
            if let Some(state) = self.targets.remove(&name) {
                for task in [&state.poller, &state.drills].into_iter().flatten() {
                    task.cancel();
                }
                info!(target = %name, "Target removed from the configuration; no longer scheduled.");
                if state.running.is_none() {
                    self.shared
                        .metrics
                        .unregister_target(&name, state.spec.provider.kind());
                }
            }
        }
        for spec in specs {
            let name = spec.config.name.clone();
            if let Some(old) = self.targets.remove(name.as_str()) {
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
}
