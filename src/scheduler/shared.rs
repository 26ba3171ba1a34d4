//! What the scheduler and its attempts share with the rest of rpod.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::heartbeat::Heartbeat;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::metrics::Metrics;

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
