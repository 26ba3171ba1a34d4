//! The scheduler: cron slots, the RPO watchdog, catch-up after downtime, change-driven backups, one operation per
//! target with coalescing, a global concurrency limit, retries with backoff and jitter, and per-attempt
//! deadlines (docs/design.md, "Policy semantics").
//!
//! One task owns all scheduling state and a single timer queue (a binary heap of due instants), so there are no
//! locks and no fire is ever dropped: a due timer either starts an attempt or is coalesced into the one running.
//! Attempts run as their own tasks and report back over a channel.
//!
//! What does not live here: the pure timing and pruning rules (`policy`), expiry and pruning passes
//! (`maintenance`), and how a backup is taken (`providers`).

mod attempt;
mod changes;
mod heartbeat;
mod timers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use attempt::{AttemptOutcome, AttemptReport};
pub use changes::pending_change_since;
pub use heartbeat::Heartbeat;

use crate::catalog::{Catalog, Finish, PendingOperation};
use crate::changes::{ChangeNotice, ChangeSignals, ChangeSink, ChangeSource};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::policy;
use crate::record::Trigger;
use crate::target::TargetSpec;
use timers::{Timer, TimerKind, Timers};

/// What the scheduler needs from the rest of rpod.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The catalog.
    pub catalog: Catalog,
    /// The metrics.
    pub metrics: Metrics,
    /// Wall time.
    pub clock: Clock,
    /// Global limit on concurrent attempts.
    pub permits: Arc<Semaphore>,
    /// Cancelling this stops every running attempt (their records become `interrupted`).
    pub abort: CancellationToken,
    /// Cancelled when shutdown begins: resumable operations detach at once instead of holding up the drain.
    pub stopping: CancellationToken,
    /// Tracks running attempts so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Stamped by the scheduler's loop: proof that it runs.
    pub heartbeat: Heartbeat,
}

impl Shared {
    /// Everything the scheduler needs, with `max_concurrent` permits.
    #[must_use]
    pub fn new(catalog: Catalog, metrics: Metrics, clock: Clock, max_concurrent: usize) -> Self {
        Self {
            catalog,
            metrics,
            clock,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            abort: CancellationToken::new(),
            stopping: CancellationToken::new(),
            tracker: TaskTracker::new(),
            heartbeat: Heartbeat::default(),
        }
    }
}

/// Answer to a manual trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualOutcome {
    /// A new attempt was started.
    Started,
    /// A backup of the target is already running; the request is coalesced into it.
    Coalesced,
    /// No such target.
    UnknownTarget,
}

enum Message {
    Manual(String, oneshot::Sender<ManualOutcome>),
    Freeze(oneshot::Receiver<()>),
    Finished(AttemptReport),
    Reload(Vec<Arc<TargetSpec>>, oneshot::Sender<()>),
    Refresh(Vec<String>),
    Change(ChangeNotice),
    Observed {
        target: Arc<str>,
        epoch: u64,
        signals: ChangeSignals,
    },
}

/// A handle to the running scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl SchedulerHandle {
    /// Asks for a backup now (`trigger = manual`).
    pub async fn backup_now(&self, target: &str) -> ManualOutcome {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Message::Manual(target.to_owned(), tx))
            .is_err()
        {
            return ManualOutcome::UnknownTarget;
        }
        rx.await.unwrap_or(ManualOutcome::UnknownTarget)
    }

    /// Holds the scheduler's loop until the returned guard is dropped: a stand-in for a loop that hangs, with
    /// which tests show that the liveness signals go stale. Nothing in rpod calls it.
    #[must_use]
    pub fn freeze(&self) -> Freeze {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Message::Freeze(rx));
        Freeze(tx)
    }

    /// Re-reads these targets' restorability from the catalog (reconciliation changed it), so the RPO watchdog
    /// acts on what is really restorable.
    pub fn refresh(&self, targets: Vec<String>) {
        let _ = self.tx.send(Message::Refresh(targets));
    }

    /// Replaces the set of targets (SIGHUP). Running attempts finish; removed targets stop being scheduled.
    pub async fn reload(&self, targets: Vec<Arc<TargetSpec>>) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Reload(targets, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Keeps the scheduler's loop held (see [`SchedulerHandle::freeze`]) until dropped.
#[derive(Debug)]
pub struct Freeze(#[allow(dead_code)] oneshot::Sender<()>);

impl ChangeSink for SchedulerHandle {
    fn changed(&self, notice: ChangeNotice) {
        let _ = self.tx.send(Message::Change(notice));
    }
}

#[derive(Debug, Clone, Copy)]
struct Running {
    /// Schedule slots coalesced into this attempt; marked used if it succeeds.
    coalesced_slot: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
struct RetryPlan {
    at: DateTime<Utc>,
    trigger: Trigger,
    attempt: u32,
    slot: Option<DateTime<Utc>>,
    first_change_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct TargetState {
    spec: Arc<TargetSpec>,
    name: Arc<str>,
    epoch: u64,
    running: Option<Running>,
    retry: Option<RetryPlan>,
    next_slot: Option<DateTime<Utc>>,
    watchdog_at: Option<DateTime<Utc>>,
    /// After a final failure the watchdog waits this long before trying again.
    cooldown_until: Option<DateTime<Utc>>,
    newest_recovery_point: Option<DateTime<Utc>>,
    lead: Duration,
    /// When the newest backup attempt started (`min_interval` counts from it).
    last_started: Option<DateTime<Utc>>,
    /// Change detection, when the policy has `on_change`.
    changes: Option<changes::ChangeTracker>,
    /// When the armed change timer fires.
    change_at: Option<DateTime<Utc>>,
    /// Stops the target's sync state poller.
    poller: Option<CancellationToken>,
}

struct Scheduler {
    shared: Shared,
    targets: HashMap<Arc<str>, TargetState>,
    timers: Timers,
    /// Jobs started but waiting for a permit (see [`Scheduler::dispatch`]).
    waiting: VecDeque<attempt::Job>,
    epoch: u64,
    tx: mpsc::UnboundedSender<Message>,
}

/// Starts the scheduler: resumes from the catalog (interrupted attempts, missed slots) and runs until
/// `shutdown` is cancelled. Running attempts are not waited for: see [`Shared::tracker`].
///
/// # Errors
/// The catalog could not be read at start.
pub async fn start(
    shared: Shared,
    targets: Vec<Arc<TargetSpec>>,
    shutdown: CancellationToken,
) -> Result<(SchedulerHandle, tokio::task::JoinHandle<()>), crate::catalog::CatalogError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler {
        shared,
        targets: HashMap::new(),
        timers: Timers::default(),
        waiting: VecDeque::new(),
        epoch: 0,
        tx: tx.clone(),
    };
    let now = scheduler.shared.clock.now();
    let (interrupted, pending) = {
        let _hold = scheduler.shared.clock.hold();
        let catalog = &scheduler.shared.catalog;
        let interrupted: HashSet<String> =
            catalog.interrupt_running(now).await?.into_iter().collect();
        (interrupted, catalog.pending_operations().await?)
    };
    let resuming: HashMap<&str, DateTime<Utc>> = pending
        .iter()
        .map(|op| (op.target.as_str(), op.requested_at))
        .collect();
    for spec in targets {
        // A target whose operation is resumed needs no catch-up: the resumed backup is its catch-up.
        let resumed = resuming.get(spec.config.name.as_str()).copied();
        let retry = interrupted.contains(&spec.config.name);
        let start = Startup {
            catch_up: resumed.is_none(),
            interrupted: retry,
            resumed,
        };
        let name: Arc<str> = Arc::from(spec.config.name.as_str());
        scheduler.add_target(spec, now, Some(start)).await?;
        scheduler.start_changes(&name);
    }
    for operation in pending {
        scheduler.resume(operation, now).await?;
    }
    let task = tokio::spawn(scheduler.run(rx, shutdown));
    Ok((SchedulerHandle { tx }, task))
}

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

/// How a target joins at startup.
#[derive(Debug, Clone, Copy)]
struct Startup {
    /// A missed schedule slot leads to one catch-up run.
    catch_up: bool,
    /// Its attempt was interrupted when rpod stopped: retry it.
    interrupted: bool,
    /// Start of its backup accepted before the restart and resumed now.
    resumed: Option<DateTime<Utc>>,
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>, shutdown: CancellationToken) {
        let beat_every = policy::delta(self.shared.heartbeat.interval);
        let mut beat_at = None;
        loop {
            let now = self.shared.clock.now();
            while let Some(timer) = self.timers.pop_due(now) {
                self.fire(&timer, now);
            }
            // Due timers are serviced: that is the beat. At most one per second goes out, however busy the loop.
            if beat_at.is_none_or(|at| now - at >= chrono::TimeDelta::seconds(1)) {
                self.shared.heartbeat.beat(&self.shared.metrics, now);
                beat_at = Some(now);
            }
            let next = self.timers.next();
            let wake = Some(next.map_or(now + beat_every, |at| at.min(now + beat_every)));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                message = rx.recv() => match message {
                    Some(Message::Freeze(release)) => {
                        let _ = release.await;
                    }
                    Some(Message::Finished(report)) => {
                        self.finished(&report).await;
                        self.dispatch();
                    }
                    Some(Message::Manual(target, reply)) => {
                        let outcome = self.manual(&target);
                        let _ = reply.send(outcome);
                    }
                    Some(Message::Reload(specs, reply)) => {
                        self.reload(specs).await;
                        let _ = reply.send(());
                    }
                    Some(Message::Refresh(targets)) => self.refresh(&targets).await,
                    Some(Message::Change(notice)) => self.change(notice).await,
                    Some(Message::Observed { target, epoch, signals }) => {
                        self.observed(&target, epoch, signals).await;
                    }
                    None => break,
                },
                () = sleep_until(&self.shared.clock, wake) => {}
            }
        }
        info!("Scheduler stopped; no new backups will start.");
    }

    fn push(&mut self, target: &Arc<str>, epoch: u64, at: DateTime<Utc>, kind: TimerKind) {
        self.timers.set(target, epoch, at, kind);
    }

    /// Registers a target. At start (`startup`), a missed schedule slot or an interrupted attempt leads to one
    /// catch-up run; a target seen for the first time anchors its schedule at `now` (nothing to catch up).
    async fn add_target(
        &mut self,
        spec: Arc<TargetSpec>,
        now: DateTime<Utc>,
        startup: Option<Startup>,
    ) -> Result<(), crate::catalog::CatalogError> {
        let name: Arc<str> = Arc::from(spec.config.name.as_str());
        let catalog = &self.shared.catalog;
        let (summary, durations, last_slot, stored_changes) = {
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
            (summary, durations, last_slot, stored_changes)
        };
        let policy = spec.config.policy.clone();
        self.shared.metrics.register_target(
            &name,
            spec.provider.kind(),
            policy.rpo.as_secs_f64(),
            &triggers_of(&spec),
        );
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

    /// Starts change detection for a registered target: its poller, and the timer of changes already pending.
    fn start_changes(&mut self, name: &Arc<str>) {
        self.start_poller(name);
        self.arm_change(name);
    }

    /// Starts the sync state poller of a target whose policy asks for one. It reads right away (a change made
    /// while rpod was down is seen at once), then every `poll_interval`. A failed poll is logged and counted;
    /// it never triggers a backup.
    fn start_poller(&mut self, name: &Arc<str>) {
        let Some(state) = self.targets.get_mut(name) else {
            return;
        };
        if let Some(old) = state.poller.take() {
            old.cancel();
        }
        let Some(interval) = state
            .changes
            .as_ref()
            .filter(|c| c.config.sync_state)
            .map(|c| c.config.poll_interval)
        else {
            return;
        };
        let cancel = CancellationToken::new();
        state.poller = Some(cancel.clone());
        let provider = state.spec.provider.clone();
        let (target, epoch) = (name.clone(), state.epoch);
        let (tx, metrics, stopping) = (
            self.tx.clone(),
            self.shared.metrics.clone(),
            self.shared.stopping.clone(),
        );
        tokio::spawn(async move {
            loop {
                let read = tokio::select! {
                    () = cancel.cancelled() => return,
                    () = stopping.cancelled() => return,
                    read = provider.change_signals() => read,
                };
                match read {
                    Some(Ok(signals)) => {
                        let observed = Message::Observed {
                            target: target.clone(),
                            epoch,
                            signals,
                        };
                        if tx.send(observed).is_err() {
                            return;
                        }
                    }
                    Some(Err(err)) => {
                        metrics.change_poll_failed(&target);
                        warn!(
                            target = %target, code = %err.code,
                            "Reading the sync state for change detection failed; polling again at the next \
                             interval. {}", err.message
                        );
                    }
                    None => return,
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// A sync state poll read `signals`.
    async fn observed(&mut self, name: &Arc<str>, epoch: u64, signals: ChangeSignals) {
        let now = self.shared.clock.now();
        let Some(state) = self.targets.get_mut(name).filter(|s| s.epoch == epoch) else {
            return;
        };
        let Some(tracker) = &mut state.changes else {
            return;
        };
        if tracker.observe(signals, now) {
            self.shared
                .metrics
                .change_event(name, ChangeSource::SyncState.as_str());
            info!(target = %name, source = "sync_state", "Configuration change detected.");
        }
        self.persist_changes(name, now).await;
        self.arm_change(name);
    }

    /// A detector reported a change.
    async fn change(&mut self, notice: ChangeNotice) {
        let now = self.shared.clock.now();
        let name: Arc<str> = Arc::from(notice.target.as_str());
        let Some(tracker) = self.targets.get_mut(&name).and_then(|s| s.changes.as_mut()) else {
            return;
        };
        let wanted = match notice.source {
            ChangeSource::SyncState => tracker.config.sync_state,
            ChangeSource::EventGrid => tracker.config.event_grid,
        };
        if !wanted {
            return;
        }
        tracker.record(now, notice.changed_at);
        self.shared
            .metrics
            .change_event(&name, notice.source.as_str());
        info!(target = %name, source = notice.source.as_str(), "Configuration change reported.");
        self.persist_changes(&name, now).await;
        self.arm_change(&name);
    }

    /// Writes the target's change state to the catalog if it changed.
    async fn persist_changes(&mut self, name: &Arc<str>, now: DateTime<Utc>) {
        let Some(stored) = self
            .targets
            .get_mut(name)
            .and_then(|s| s.changes.as_mut())
            .and_then(changes::ChangeTracker::take_dirty)
        else {
            return;
        };
        let _hold = self.shared.clock.hold();
        if let Err(err) = self
            .shared
            .catalog
            .set_change_state(name, &stored, now)
            .await
        {
            warn!(target = %name, error = %err, "Could not record the change-detection state in the catalog.");
        }
    }

    /// Arms the change timer for the pending changes, if any.
    fn arm_change(&mut self, name: &Arc<str>) {
        let Some(state) = self.targets.get_mut(name) else {
            return;
        };
        let Some(mut due) = state
            .changes
            .as_ref()
            .and_then(|c| c.due(state.last_started))
        else {
            state.change_at = None;
            return;
        };
        if let Some(cooldown) = state.cooldown_until {
            due = due.max(cooldown);
        }
        if state.change_at == Some(due) {
            return;
        }
        state.change_at = Some(due);
        let epoch = state.epoch;
        self.push(name, epoch, due, TimerKind::Change);
    }

    /// Polls an operation accepted before the restart to its end. One whose target is gone, or already has a
    /// resumed operation, is closed as interrupted (nothing will poll it).
    async fn resume(
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

    async fn refresh(&mut self, targets: &[String]) {
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

    fn arm_watchdog(&mut self, name: &Arc<str>, now: DateTime<Utc>) {
        let Some(state) = self.targets.get_mut(name) else {
            return;
        };
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

    fn fire(&mut self, timer: &Timer, now: DateTime<Utc>) {
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

    fn manual(&mut self, target: &str) -> ManualOutcome {
        let now = self.shared.clock.now();
        let Some(state) = self.targets.get_mut(target) else {
            return ManualOutcome::UnknownTarget;
        };
        if state.running.is_some() {
            return ManualOutcome::Coalesced;
        }
        state.retry = None;
        let name = state.name.clone();
        self.start(&name, Trigger::Manual, 1, None, now);
        ManualOutcome::Started
    }

    fn start(
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
    fn start_job(
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
        };
        self.waiting.push_back(job);
        self.dispatch();
    }

    /// Starts waiting jobs while permits are free. Jobs wait here, in due order, rather than as parked tasks, so
    /// thousands of targets due at once cost a queue entry each, not a task.
    fn dispatch(&mut self) {
        while !self.waiting.is_empty() {
            let Ok(permit) = self.shared.permits.clone().try_acquire_owned() else {
                return;
            };
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let shared = self.shared.clone();
            let tx = self.tx.clone();
            self.shared.tracker.spawn(async move {
                let report = attempt::run(&shared, job, Some(permit)).await;
                let _ = tx.send(Message::Finished(report));
            });
        }
    }

    async fn finished(&mut self, report: &AttemptReport) {
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
        }
        if let Some(lead) = report.lead {
            state.lead = lead;
        }
        if let Some(tracker) = &mut state.changes {
            let succeeded = report.outcome == AttemptOutcome::Succeeded;
            tracker.finished(succeeded, report.etag.clone());
        }
        let policy = &state.spec.config.policy;
        match &report.outcome {
            AttemptOutcome::Succeeded => {
                state.cooldown_until = None;
                if let Some(slot) = running.and_then(|r| r.coalesced_slot) {
                    let catalog = self.shared.catalog.clone();
                    let target = report.target.clone();
                    self.shared.tracker.spawn(async move {
                        if let Err(err) = catalog.set_last_slot(&target, slot).await {
                            warn!(target = %target, error = %err, "Could not record the schedule slot as used.");
                        }
                    });
                }
            }
            AttemptOutcome::Failed {
                retryable,
                retry_after,
            } => {
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
        }
        self.persist_changes(&name, now).await;
        self.arm_watchdog(&name, now);
        self.arm_change(&name);
    }

    async fn reload(&mut self, specs: Vec<Arc<TargetSpec>>) {
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
                if let Some(poller) = &state.poller {
                    poller.cancel();
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
                if let Some(poller) = &old.poller {
                    poller.cancel();
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
            } else {
                info!(target = %name, "New target added by the configuration reload.");
                if let Err(err) = self.add_target(spec, now, None).await {
                    warn!(target = %name, error = %err, "Could not add the target.");
                }
                self.start_changes(&Arc::from(name.as_str()));
            }
        }
    }
}

async fn sleep_until(clock: &Clock, at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one attempt outside the scheduler (`rpod backup` when no daemon is running).
pub async fn run_once(shared: &Shared, spec: TargetSpec, trigger: Trigger) -> AttemptReport {
    let now = shared.clock.now();
    let job = attempt::Job {
        spec: Arc::new(spec),
        trigger,
        attempt: 1,
        slot: None,
        due: now,
        resume: None,
        first_change_at: None,
    };
    attempt::run(shared, job, None).await
}
