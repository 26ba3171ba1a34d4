//! The scheduler: cron slots, the RPO watchdog, catch-up after downtime, change-driven backups, one operation per
//! target with coalescing, a global concurrency limit, retries with backoff and jitter, and per-attempt
//! deadlines (docs/design.md, "Policy semantics").
//!
//! One task owns all scheduling state and a single timer queue (a binary heap of due instants), so there are no
//! locks and no fire is ever dropped: a due timer either starts an attempt or is coalesced into the one running.
//! Attempts run as their own tasks and report back over a channel.
//!
//! The files, one job each: this one holds the shared state, the handle and the loop; `timers` the heap;
//! `dispatch` firing timers into attempts and their reports back; `lifecycle` targets joining, leaving and being
//! re-read; `detection` change detection's pollers and timer (`changes` decides what a change is); `attempt` one
//! attempt from permit to record; `heartbeat` the proof that the loop runs.
//!
//! What does not live here: the pure timing and pruning rules (`policy`), expiry and pruning passes
//! (`maintenance`), and how a backup is taken (`providers`).

mod attempt;
mod changes;
mod detection;
mod dispatch;
mod heartbeat;
mod lifecycle;
pub mod restore;
mod shared;
mod timers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use attempt::{AttemptOutcome, AttemptReport};
pub use changes::pending_change_since;
pub use heartbeat::Heartbeat;
pub use shared::Shared;

use crate::changes::{ChangeNotice, ChangeSignals, ChangeSink};
use crate::clock::Clock;
use crate::policy;
use crate::record::Trigger;
use crate::target::TargetSpec;
use timers::{TimerKind, Timers};

/// Answer to a manual trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualOutcome {
    /// A new attempt was started.
    Started,
    /// A backup of the target is already running; the request is coalesced into it.
    Coalesced,
    /// No such target.
    UnknownTarget,
    /// rpod never starts this target's backups: its system backs itself up (`mode = "watch"`).
    WatchOnly,
}

enum Message {
    Manual(String, oneshot::Sender<ManualOutcome>),
    Freeze(oneshot::Receiver<()>),
    Finished(AttemptReport),
    Reload(Vec<Arc<TargetSpec>>, oneshot::Sender<()>),
    Own(Vec<Arc<TargetSpec>>, oneshot::Sender<()>),
    GiveUp(usize, oneshot::Sender<Vec<String>>),
    /// Targets' restorability as the catalog says now (see [`SchedulerHandle::refresh`]).
    Refreshed(Vec<(String, crate::record::TargetSummary)>, DateTime<Utc>),
    Change(ChangeNotice),
    Observed {
        target: Arc<str>,
        epoch: u64,
        signals: ChangeSignals,
    },
    /// A restore asks for its destination (see `restore`); with `peek` only whether it is free.
    Claim {
        key: String,
        peek: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A restore ended; `restored`: the destination's state changed by rpod's hand.
    Release {
        key: String,
        restored: bool,
    },
}

/// A handle to the running scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Message>,
    /// What restores started through the handle run with.
    shared: Shared,
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
    /// acts on what is really restorable. The catalog is read beside the scheduler's loop, a chunk of targets per
    /// statement, and the loop only takes the answers: however many targets changed, its timers stay serviced.
    pub fn refresh(&self, targets: Vec<String>) {
        const CHUNK: usize = 500;
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            for chunk in targets.chunks(CHUNK) {
                let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let (now, found) = {
                    let _hold = shared.clock.hold();
                    let now = shared.clock.now();
                    (now, shared.catalog.summaries(&names, now).await)
                };
                match found {
                    Ok(found) => {
                        if tx
                            .send(Message::Refreshed(found.into_iter().collect(), now))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, targets = chunk.len(), "Could not re-read the targets' restorability.");
                    }
                }
                tokio::task::yield_now().await;
            }
        });
    }

    /// Replaces the set of targets (SIGHUP). Running attempts finish; removed targets stop being scheduled.
    pub async fn reload(&self, targets: Vec<Arc<TargetSpec>>) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Reload(targets, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl SchedulerHandle {
    /// Replicas on a shared catalog: the targets this replica holds now (see `Scheduler::own`).
    pub async fn own(&self, targets: Vec<Arc<TargetSpec>>) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Own(targets, tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Replicas on a shared catalog: stops scheduling up to `count` idle targets and names them, so their leases
    /// can go back to be taken by replicas holding fewer.
    pub async fn give_up(&self, count: usize) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::GiveUp(count, tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
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
    /// Durations of the recent successful backups, newest first (at most `catalog::RECENT_DURATIONS`).
    durations: VecDeque<Duration>,
    /// When the newest backup attempt started (`min_interval` counts from it).
    last_started: Option<DateTime<Utc>>,
    /// Change detection, when the policy has `on_change`.
    changes: Option<changes::ChangeTracker>,
    /// When the armed change timer fires.
    change_at: Option<DateTime<Utc>>,
    /// Stops the target's sync state poller.
    poller: Option<CancellationToken>,
    /// Stops the target's drill loop.
    drills: Option<CancellationToken>,
    /// Its last attempt was cut off with nothing saved: the next one looks for a running operation first.
    look_first: bool,
    /// When the catalog was read for `newest_recovery_point`: a refresh read earlier is stale.
    summary_at: Option<DateTime<Utc>>,
}

struct Scheduler {
    shared: Shared,
    targets: HashMap<Arc<str>, TargetState>,
    timers: Timers,
    /// Jobs started but waiting for a permit (see [`Scheduler::dispatch`]).
    waiting: VecDeque<attempt::Job>,
    epoch: u64,
    tx: mpsc::UnboundedSender<Message>,
    /// Services (or targets) a restore runs on (see `restore`).
    claims: HashSet<String>,
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
    let (mut scheduler, rx) = Scheduler::new(shared);
    let tx = scheduler.tx.clone();
    let now = scheduler.shared.clock.now();
    // Replicas on a shared catalog take targets over one by one as they get their leases (`Scheduler::own`): what
    // another replica runs is not this one's to interrupt or resume.
    let shared_catalog = scheduler.shared.catalog.leases().is_some();
    let (interrupted, pending) = if shared_catalog {
        (HashSet::new(), Vec::new())
    } else {
        let _hold = scheduler.shared.clock.hold();
        let catalog = &scheduler.shared.catalog;
        let interrupted: HashSet<String> = catalog
            .interrupt_running(now, None)
            .await?
            .into_iter()
            .collect();
        (interrupted, catalog.pending_operations(None).await?)
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
        scheduler.start_drills(&name);
    }
    for operation in pending {
        scheduler.resume(operation, now).await?;
    }
    let shared = scheduler.shared.clone();
    let task = tokio::spawn(scheduler.run(rx, shutdown));
    let handle = SchedulerHandle { tx, shared };
    Ok((handle, task))
}

/// How a target joins at startup.
#[derive(Debug, Clone, Copy)]
pub(super) struct Startup {
    /// A missed schedule slot leads to one catch-up run.
    pub catch_up: bool,
    /// Its attempt was interrupted when rpod stopped: retry it.
    pub interrupted: bool,
    /// Start of its backup accepted before the restart and resumed now.
    pub resumed: Option<DateTime<Utc>>,
}

impl Scheduler {
    /// A scheduler with no target yet, and the receiving end of its channel.
    fn new(shared: Shared) -> (Self, mpsc::UnboundedReceiver<Message>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let scheduler = Self {
            shared,
            targets: HashMap::new(),
            timers: Timers::default(),
            waiting: VecDeque::new(),
            epoch: 0,
            tx,
            claims: HashSet::new(),
        };
        (scheduler, rx)
    }

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
                    Some(Message::Own(specs, reply)) => {
                        self.own(specs).await;
                        let _ = reply.send(());
                    }
                    Some(Message::GiveUp(count, reply)) => {
                        let _ = reply.send(self.give_up(count));
                    }
                    Some(Message::Refreshed(found, at)) => self.refreshed(found, at),
                    Some(Message::Change(notice)) => self.change(notice).await,
                    Some(Message::Observed { target, epoch, signals }) => {
                        self.observed(&target, epoch, signals).await;
                    }
                    Some(Message::Claim { key, peek, reply }) => {
                        let _ = reply.send(self.claim(key, peek));
                    }
                    Some(Message::Release { key, restored }) => self.release(&key, restored),
                    None => break,
                },
                () = sleep_until(&self.shared.clock, wake) => {}
            }
        }
        // Drills stop with the loop: their restores go through it.
        for state in self.targets.values() {
            if let Some(drills) = &state.drills {
                drills.cancel();
            }
        }
        info!("Scheduler stopped; no new backups will start.");
    }

    fn push(&mut self, target: &Arc<str>, epoch: u64, at: DateTime<Utc>, kind: TimerKind) {
        self.timers.set(target, epoch, at, kind);
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
        look_first: false,
    };
    attempt::run(shared, job, None).await
}
