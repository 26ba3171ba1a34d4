//! The clock the scheduler reads wall time from, injectable so tests run on tokio's paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Wall time for the scheduler.
#[derive(Debug, Clone)]
pub struct Clock(Inner);

#[derive(Debug, Clone)]
enum Inner {
    System,
    /// Wall time that advances with tokio's (possibly paused) clock from a fixed start.
    Virtual {
        wall: DateTime<Utc>,
        instant: Instant,
    },
}

/// Longest single sleep on the system clock, so wall-clock steps (NTP, suspend) are noticed promptly.
const MAX_SYSTEM_SLEEP: Duration = Duration::from_secs(30);

impl Clock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Self {
        Self(Inner::System)
    }

    /// A clock that reads `start` now and advances with tokio time; with `tokio::time::pause()` it only moves
    /// when the runtime is idle or a test advances it.
    #[must_use]
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self(Inner::Virtual {
            wall: start,
            instant: Instant::now(),
        })
    }

    /// The current wall time.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Inner::System => Utc::now(),
            Inner::Virtual { wall, instant } => {
                *wall
                    + chrono::TimeDelta::from_std(instant.elapsed())
                        .unwrap_or(chrono::TimeDelta::MAX)
            }
        }
    }

    /// Sleeps until `at` (or for a while, on the system clock: callers re-check the time and loop).
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        let wait = (at - self.now()).to_std().unwrap_or(Duration::ZERO);
        let wait = match self.0 {
            Inner::System => wait.min(MAX_SYSTEM_SLEEP),
            Inner::Virtual { .. } => wait,
        };
        tokio::time::sleep(wait).await;
    }

    /// Keeps a paused virtual clock from auto-advancing while real I/O (`SQLite` on its worker thread) is under
    /// way, so virtual time only moves when the scheduler is genuinely waiting. A no-op on the system clock.
    #[must_use]
    pub fn hold(&self) -> Hold {
        match self.0 {
            Inner::System => Hold(None),
            Inner::Virtual { .. } => {
                let released = Arc::new(AtomicBool::new(false));
                let flag = released.clone();
                tokio::spawn(async move {
                    while !flag.load(Ordering::Acquire) {
                        tokio::task::yield_now().await;
                    }
                });
                Hold(Some(released))
            }
        }
    }
}

/// Releases a [`Clock::hold`] when dropped.
#[derive(Debug)]
pub struct Hold(Option<Arc<AtomicBool>>);

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}
