//! The scheduler's heartbeat (docs/operations.md, "Liveness and readiness").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy;

/// The scheduler's heartbeat: stamped each time its loop has serviced its due timers, and at least every
/// `interval` (docs/operations.md, "Liveness and readiness"). It drives `rpod_last_evaluation_timestamp_seconds`
/// and systemd's `WATCHDOG=1`, and `/readyz` reads it, so a hung scheduler turns all three stale. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The longest the loop sleeps between beats.
    pub interval: Duration,
    notifier: Notifier,
    /// Wall time of the last beat in Unix milliseconds; 0 before the first.
    last: Arc<AtomicI64>,
    /// The service manager hears beats only once rpod said `READY=1`.
    serving: Arc<AtomicBool>,
}

impl Heartbeat {
    /// A heartbeat expected every `interval`, told to `notifier` as well as the metric.
    #[must_use]
    pub fn new(interval: Duration, notifier: Notifier) -> Self {
        Self {
            interval,
            notifier,
            last: Arc::new(AtomicI64::new(0)),
            serving: Arc::new(AtomicBool::new(false)),
        }
    }

    /// rpod told the service manager it is ready: from now on each beat also sends `WATCHDOG=1`.
    pub fn serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    pub(super) fn beat(&self, metrics: &Metrics, now: DateTime<Utc>) {
        self.last.store(now.timestamp_millis(), Ordering::Release);
        metrics.evaluated(now);
        if self.serving.load(Ordering::Acquire) {
            self.notifier.watchdog();
        }
    }

    /// When the scheduler last beat, if it has.
    #[must_use]
    pub fn last(&self) -> Option<DateTime<Utc>> {
        match self.last.load(Ordering::Acquire) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// Why the scheduler does not look alive at `now`: it has not beaten within twice its interval (plus a
    /// second for a busy machine). `None` when it is alive.
    #[must_use]
    pub fn stale(&self, now: DateTime<Utc>) -> Option<String> {
        let allowed = policy::delta(self.interval * 2 + Duration::from_secs(1));
        match self.last() {
            None => Some("the scheduler has not started yet".to_owned()),
            Some(at) if now - at > allowed => Some(format!(
                "the scheduler has not serviced its timers for {} (expected every {})",
                humantime::format_duration(Duration::from_secs(
                    u64::try_from((now - at).num_seconds()).unwrap_or(0)
                )),
                humantime::format_duration(self.interval)
            )),
            Some(_) => None,
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new(Duration::from_secs(15), Notifier::default())
    }
}
