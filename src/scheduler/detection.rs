//! Change detection wired into the scheduler (docs/change-detection.md): each target's sync state poller, changes
//! reported by the webhook, the change-detection state kept in the catalog, and the change timer. What counts as a
//! change lives in `changes.rs`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::timers::TimerKind;
use super::{Message, Scheduler, changes};
use crate::changes::{ChangeNotice, ChangeSignals, ChangeSource};

impl Scheduler {
    /// Starts change detection for a registered target: its poller, and the timer of changes already pending.
    pub(super) fn start_changes(&mut self, name: &Arc<str>) {
        self.start_poller(name);
        self.arm_change(name);
    }

    /// Starts the sync state poller of a target whose policy asks for one. It reads right away (a change made
    /// while rpod was down is seen at once), then every `poll_interval`. A failed poll is logged and counted;
    /// it never triggers a backup.
    pub(super) fn start_poller(&mut self, name: &Arc<str>) {
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
    pub(super) async fn observed(&mut self, name: &Arc<str>, epoch: u64, signals: ChangeSignals) {
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
    pub(super) async fn change(&mut self, notice: ChangeNotice) {
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
    pub(super) async fn persist_changes(&mut self, name: &Arc<str>, now: DateTime<Utc>) {
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
    pub(super) fn arm_change(&mut self, name: &Arc<str>) {
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
}
