//! From due timers to running attempts: firing timers (slots, the watchdog, retries, changes), manual requests,
//! coalescing into a running attempt, the queue of attempts waiting for a permit, and what happens when an attempt
//! reports back (retry plans, cool-downs, the watchdog re-armed).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::attempt::{AttemptOutcome, AttemptReport};
use super::timers::{Timer, TimerKind};
use super::{ManualOutcome, Message, RetryPlan, Running, Scheduler, attempt, changes};
use crate::catalog::{PendingOperation, RECENT_DURATIONS};
use crate::policy;
use crate::record::Trigger;

/// How long a backup due while a restore runs on its service waits before it looks again.
const RESTORE_WAIT: Duration = Duration::from_secs(30);

impl Scheduler {
    pub(super) fn arm_watchdog(&mut self, name: &Arc<str>, now: DateTime<Utc>) {
        let Some(state) = self.targets.get_mut(name) else {
            return;
        };
        if !state.spec.provider.starts_backups() {
            // Only measured: the system backs itself up, and compliance shows when it stops.
            return;
        }
        let policy = &state.spec.config.policy;
        let mut due =
            policy::watchdog_due(state.newest_recovery_point, policy.rpo, state.lead, now);
        if let Some(cooldown) = state.cooldown_until {
            due = due.max(cooldown);
        }
        if state.watchdog_at == Some(due) {
            return;
        }
        state.watchdog_at = Some(due);
        let epoch = state.epoch;
        self.push(name, epoch, due, TimerKind::Watchdog);
    }

    pub(super) fn fire(&mut self, timer: &Timer, now: DateTime<Utc>) {
        let Some(state) = self.targets.get_mut(&timer.target) else {
            return;
        };
        if state.epoch != timer.epoch {
            return;
        }
        let name = state.name.clone();
        match timer.kind {
            TimerKind::Slot(slot) => {
                if state.next_slot != Some(slot) {
                    return;
                }
                let Some(schedule) = &state.spec.config.policy.schedule else {
                    return;
                };
                // The next slot strictly after this one; if the loop fell behind, slots already past are
                // coalesced into this run rather than fired in a burst.
                let mut next = schedule.next_after(slot);
                if next.is_some_and(|n| n <= now) {
                    next = schedule.next_after(now);
                }
                state.next_slot = next;
                let epoch = state.epoch;
                if let Some(running) = &mut state.running {
                    running.coalesced_slot = Some(slot);
                    info!(target = %name, %slot, "Schedule slot coalesced into the backup already running.");
                } else {
                    state.retry = None;
                    self.start(&name, Trigger::Schedule, 1, Some(slot), timer.at);
                }
                if let Some(next) = next {
                    self.push(&name, epoch, next, TimerKind::Slot(next));
                }
            }
            TimerKind::Watchdog => {
                if state.watchdog_at != Some(timer.at) {
                    return;
                }
                state.watchdog_at = None;
                if state.running.is_some() || state.retry.is_some() {
                    // The running attempt (or its retry) will produce the backup; the watchdog is re-armed when
                    // it ends.
                    return;
                }
                self.start(&name, Trigger::Rpo, 1, None, timer.at);
            }
            TimerKind::Retry => {
                let Some(plan) = state.retry else { return };
                if plan.at != timer.at || state.running.is_some() {
                    return;
                }
                state.retry = None;
                self.start_job(
                    &name,
                    plan.trigger,
                    plan.attempt,
                    plan.slot,
                    timer.at,
                    None,
                    plan.first_change_at,
                );
            }
            TimerKind::Change => {
                if state.change_at != Some(timer.at) {
                    return;
                }
                state.change_at = None;
                if state.running.is_some() || state.retry.is_some() {
                    // The running attempt (or its retry) ends by re-arming the change timer.
                    return;
                }
                let Some(pending) = state
                    .changes
                    .as_ref()
                    .and_then(changes::ChangeTracker::pending)
                else {
                    return;
                };
                info!(target = %name, first_change_at = %pending.first_change_at(), "Backing up after configuration changes.");
                self.start_job(
                    &name,
                    Trigger::Change,
                    1,
                    None,
                    timer.at,
                    None,
                    Some(pending.first_change_at()),
                );
            }
        }
    }

    pub(super) fn manual(&mut self, target: &str) -> ManualOutcome {
        let now = self.shared.clock.now();
        let Some(state) = self.targets.get_mut(target) else {
            return ManualOutcome::UnknownTarget;
        };
        if !state.spec.provider.starts_backups() {
            return ManualOutcome::WatchOnly;
        }
        if state.running.is_some() {
            return ManualOutcome::Coalesced;
        }
        state.retry = None;
        let name = state.name.clone();
        self.start(&name, Trigger::Manual, 1, None, now);
        ManualOutcome::Started
    }

    pub(super) fn start(
        &mut self,
        name: &Arc<str>,
        trigger: Trigger,
        attempt: u32,
        slot: Option<DateTime<Utc>>,
        due: DateTime<Utc>,
    ) {
        self.start_job(name, trigger, attempt, slot, due, None, None);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_job(
        &mut self,
        name: &Arc<str>,
        trigger: Trigger,
        attempt: u32,
        slot: Option<DateTime<Utc>>,
        due: DateTime<Utc>,
        resume: Option<PendingOperation>,
        first_change_at: Option<DateTime<Utc>>,
    ) {
        let now = self.shared.clock.now();
        if !self.shared.catalog.may_start(name) {
            // Replicas: this one no longer trusts its lease on the target; the next owner catches up.
            info!(target = %name, trigger = trigger.as_str(), "Not started: this replica no longer holds the target's lease.");
            return;
        }
        if resume.is_none()
            && self
                .targets
                .get(name)
                .is_some_and(|state| !state.spec.provider.starts_backups())
        {
            return;
        }
        if resume.is_none()
            && let Some(spec) = self.targets.get(name).map(|state| state.spec.clone())
            && self.restore_runs_on(&spec)
        {
            // One operation per service: the backup waits for the restore into its service.
            let Some(state) = self.targets.get_mut(name) else {
                return;
            };
            let at = now + policy::delta(RESTORE_WAIT);
            state.retry = Some(RetryPlan {
                at,
                trigger,
                attempt,
                slot,
                first_change_at,
            });
            info!(target = %name, "A restore runs on the target's service; the backup waits for it.");
            let epoch = state.epoch;
            self.push(name, epoch, at, TimerKind::Retry);
            return;
        }
        let Some(state) = self.targets.get_mut(name) else {
            return;
        };
        state.running = Some(Running {
            coalesced_slot: None,
        });
        // The backup covers every change seen until now; later ones stay pending.
        state.last_started = Some(resume.as_ref().map_or(now, |r| r.requested_at));
        if let Some(tracker) = &mut state.changes {
            tracker.started();
        }
        let job = attempt::Job {
            spec: state.spec.clone(),
            trigger,
            attempt,
            slot,
            due,
            resume,
            first_change_at,
            look_first: std::mem::take(&mut state.look_first),
        };
        self.waiting.push_back(job);
        self.dispatch();
    }

    /// Starts waiting jobs while permits are free. Jobs wait here, in due order, rather than as parked tasks, so
    /// thousands of targets due at once cost a queue entry each, not a task.
    pub(super) fn dispatch(&mut self) {
        while !self.waiting.is_empty() {
            let Ok(permit) = self.shared.permits.clone().try_acquire_owned() else {
                return;
            };
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            // The attempt writes under the term its target is held by now (replicas): a write that outlives the
            // lease is refused even if this replica holds the target again by then.
            let mut shared = self.shared.clone();
            let name = job.spec.config.name.as_str();
            if let Some(book) = shared.catalog.leases() {
                shared.catalog = shared.catalog.pinned(name, book.term(name));
            }
            let tx = self.tx.clone();
            self.shared.tracker.spawn(async move {
                let report = attempt::run(&shared, job, Some(permit)).await;
                let _ = tx.send(Message::Finished(report));
            });
        }
    }

    pub(super) async fn finished(&mut self, report: &AttemptReport) {
        let now = self.shared.clock.now();
        let name: Arc<str> = Arc::from(report.target.as_str());
        let Some(state) = self.targets.get_mut(&name) else {
            // Removed by a reload while it ran: make sure its series are gone.
            self.shared
                .metrics
                .unregister_target(&report.target, &report.kind);
            return;
        };
        let running = state.running.take();
        self.shared.metrics.set_in_progress(&name, false);
        if let Some(summary) = &report.summary {
            state.newest_recovery_point = summary.newest_recovery_point;
            state.summary_at = Some(now);
        }
        if let Some(took) = report.took {
            // The recent durations the catalog would list: rpod's own successes, newest first.
            state.durations.push_front(took);
            state.durations.truncate(RECENT_DURATIONS as usize);
            state.lead = policy::lead(&state.spec.config.policy, state.durations.make_contiguous());
        }
        if let Some(tracker) = &mut state.changes {
            let succeeded = report.outcome == AttemptOutcome::Succeeded;
            tracker.finished(succeeded, report.etag.clone());
        }
        let policy = &state.spec.config.policy;
        match &report.outcome {
            AttemptOutcome::Succeeded => {
                state.cooldown_until = None;
                let spec = state.spec.clone();
                self.after_backup(&spec);
                if let Some(slot) = running.and_then(|r| r.coalesced_slot) {
                    let shared = self.shared.clone();
                    let target = report.target.clone();
                    self.shared.tracker.spawn(async move {
                        attempt::mark_slot_used(&shared, &target, slot).await;
                    });
                }
            }
            AttemptOutcome::Failed {
                retryable,
                retry_after,
            } => {
                // A service found busy after a cut-off attempt is looked at again before the retry asks.
                state.look_first = report
                    .error
                    .as_deref()
                    .is_some_and(|error| error.starts_with(crate::providers::SERVICE_BUSY));
                if *retryable && report.attempt < policy.max_attempts {
                    let delay = policy::backoff(
                        report.attempt,
                        policy.retry_backoff,
                        policy.retry_max_backoff,
                        *retry_after,
                        rand::random::<f64>(),
                    );
                    let at = now + policy::delta(delay);
                    let slot = report.slot.or(running.and_then(|r| r.coalesced_slot));
                    state.retry = Some(RetryPlan {
                        at,
                        trigger: report.trigger,
                        attempt: report.attempt + 1,
                        slot,
                        first_change_at: report.first_change_at,
                    });
                    info!(
                        target = %name, attempt = report.attempt, max_attempts = policy.max_attempts,
                        retry_in = %humantime::format_duration(Duration::from_millis(
                            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))),
                        "Backup attempt failed; retrying."
                    );
                    let epoch = state.epoch;
                    self.push(&name, epoch, at, TimerKind::Retry);
                } else {
                    state.retry = None;
                    state.cooldown_until = Some(now + policy::delta(policy.retry_max_backoff));
                    warn!(
                        target = %name, attempts = report.attempt,
                        "Backup failed and will not be retried for this trigger; the RPO watchdog keeps trying."
                    );
                }
            }
            AttemptOutcome::Interrupted => {
                self.persist_changes(&name, now).await;
                return;
            }
            AttemptOutcome::Skipped => {}
        }
        self.persist_changes(&name, now).await;
        self.arm_watchdog(&name, now);
        self.arm_change(&name);
    }
}
