//! Change detection (DESIGN §2.5): what a detector reports, and where it reports it.
//!
//! Two detectors feed the scheduler: the sync state poller (`scheduler` runs one per target that asks for it)
//! and the Event Grid webhook (`webhook`). Debouncing, follow-ups and telling rpod's own backups apart from real
//! changes happen in the scheduler, which knows what is running.

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

/// Which detector saw a change: the `source` label of `rpod_change_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeSource {
    /// The polled sync state or service resource moved.
    SyncState,
    /// Event Grid delivered an event for the service.
    EventGrid,
}

impl ChangeSource {
    /// The label value and `detect` name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SyncState => crate::config::SYNC_STATE,
            Self::EventGrid => crate::config::EVENT_GRID,
        }
    }
}

/// A change to one target's protected system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNotice {
    /// The configured target.
    pub target: String,
    /// Who saw it.
    pub source: ChangeSource,
    /// When the change happened, as the signal says (an event's time); `None` when it does not say.
    pub changed_at: Option<DateTime<Utc>>,
}

/// Where detectors report changes: the scheduler, or a channel in tests.
pub trait ChangeSink: Send + Sync + std::fmt::Debug {
    /// Reports one change. Never blocks.
    fn changed(&self, notice: ChangeNotice);
}

impl ChangeSink for mpsc::UnboundedSender<ChangeNotice> {
    fn changed(&self, notice: ChangeNotice) {
        let _ = self.send(notice);
    }
}
