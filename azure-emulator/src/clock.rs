//! The emulator's calendar: wall-clock times (`lastModifiedAt`, backup ages) that advance with Tokio's clock, so
//! they stay consistent in tests that pause or advance Tokio time, and that a test can shift forward to make
//! backups old.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Wall-clock time derived from Tokio's monotonic clock plus a test-controlled shift.
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
    origin_wall: DateTime<Utc>,
    shift: Duration,
}

impl Clock {
    /// A calendar that reads the real time now.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            origin_wall: Utc::now(),
            shift: Duration::ZERO,
        }
    }

    /// The emulator's current wall-clock time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.origin) + self.shift;
        self.origin_wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }

    /// Moves the calendar forward by `by` (Tokio's clock is untouched).
    pub(crate) fn advance(&mut self, by: Duration) {
        self.shift += by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_calendar_follows_tokio_time_and_the_shift() {
        let mut clock = Clock::new();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!((clock.now() - start).num_seconds(), 10);
        clock.advance(Duration::from_hours(1));
        assert_eq!((clock.now() - start).num_seconds(), 3610);
    }
}
