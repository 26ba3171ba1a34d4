//! Change detection (docs/design.md, "Change-driven backups"): what a detector reports, and where it reports it.
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

/// What the sync state detector compares between polls: API Management's `configurationChangeDate` (moved by
/// configuration changes), and the service resource's etag and `systemData.lastModifiedAt` (moved by
/// service-level changes, and by rpod's own backups). Values are kept as Azure wrote them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeSignals {
    /// `properties.configurationChangeDate` of `tenant/configuration/syncState`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_change_date: Option<String>,
    /// The service resource's etag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The service resource's `systemData.lastModifiedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_at: Option<String>,
}

/// Parses an Azure timestamp (RFC 3339, any precision).
#[must_use]
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
