//! Client-side token buckets, one per subscription and kind (read / write), shaped like ARM's own throttling
//! (docs/design.md, "Resource Manager in general": writes 200 burst refilling 10/s, reads 250 refilling 25/s), so that many targets in one
//! subscription wait here instead of earning 429s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Capacity and refill rate of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketLimits {
    /// Requests that may be sent at once after a quiet period.
    pub burst: f64,
    /// Requests per second the bucket refills.
    pub per_second: f64,
}

impl BucketLimits {
    /// ARM's write limits per subscription and principal.
    pub const ARM_WRITES: Self = Self {
        burst: 200.0,
        per_second: 10.0,
    };
    /// ARM's read limits per subscription and principal.
    pub const ARM_READS: Self = Self {
        burst: 250.0,
        per_second: 25.0,
    };
}

#[derive(Debug)]
struct Bucket {
    limits: BucketLimits,
    tokens: f64,
    updated: Instant,
}

/// Tokens of ARM's bucket rpod leaves unused. Requests reach ARM later than rpod reserved them, by varying amounts
/// (hundreds of requests share connections and CPU), so they arrive in clumps; an exactly equal bucket is then
/// overdrawn now and then. Ten percent of the burst (at least two requests) absorbs about two seconds of such
/// jitter at ARM's refill rates, and leaves a little room for other clients of the same principal.
fn headroom(limits: BucketLimits) -> f64 {
    (limits.burst * 0.1)
        .max(2.0)
        .min(limits.burst - 1.0)
        .max(0.0)
}

impl Bucket {
    fn new(limits: BucketLimits, now: Instant) -> Self {
        let limits = BucketLimits {
            burst: limits.burst - headroom(limits),
            per_second: limits.per_second,
        };
        Self {
            limits,
            tokens: limits.burst,
            updated: now,
        }
    }

    /// Takes one token, returning how long the caller must wait before sending (the token is reserved now, so
    /// concurrent callers queue in order rather than all waking at once).
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limits.per_second).min(self.limits.burst);
        self.updated = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limits.per_second)
        }
    }
}

/// Whether a request reads or changes state; ARM throttles them separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// GET.
    Read,
    /// POST, PUT, PATCH, DELETE.
    Write,
}

/// Token buckets keyed by subscription and access kind.
#[derive(Debug, Clone)]
pub struct Throttle {
    reads: BucketLimits,
    writes: BucketLimits,
    buckets: Arc<Mutex<HashMap<(String, Access), Bucket>>>,
}

impl Throttle {
    /// Buckets with the given limits.
    #[must_use]
    pub fn new(reads: BucketLimits, writes: BucketLimits) -> Self {
        Self {
            reads,
            writes,
            buckets: Arc::default(),
        }
    }

    /// Waits until a request of this kind may be sent for `subscription`.
    pub async fn acquire(&self, subscription: &str, access: Access) {
        let wait = {
            // A std mutex: the critical section is a few arithmetic operations and never awaits.
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let limits = match access {
                Access::Read => self.reads,
                Access::Write => self.writes,
            };
            let now = Instant::now();
            buckets
                .entry((subscription.to_owned(), access))
                .or_insert_with(|| Bucket::new(limits, now))
                .reserve(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(BucketLimits::ARM_READS, BucketLimits::ARM_WRITES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_refill_rate_paces() {
        let throttle = Throttle::new(
            BucketLimits::ARM_READS,
            BucketLimits {
                burst: 7.0,
                per_second: 2.0,
            },
        );
        let start = Instant::now();
        // Two of the seven are headroom for jitter against ARM's own bucket.
        for _ in 0..5 {
            throttle.acquire("sub", Access::Write).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..4 {
            throttle.acquire("sub", Access::Write).await;
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_secs(2) && paced < Duration::from_millis(2100),
            "{paced:?}"
        );
        throttle.acquire("other-subscription", Access::Write).await;
        throttle.acquire("sub", Access::Read).await;
        assert_eq!(
            start.elapsed(),
            paced,
            "other subscriptions and reads have their own buckets"
        );
    }

    #[test]
    fn headroom_is_a_tenth_of_the_burst_and_never_all_of_it() {
        assert!((headroom(BucketLimits::ARM_WRITES) - 20.0).abs() < 1e-9);
        assert!((headroom(BucketLimits::ARM_READS) - 25.0).abs() < 1e-9);
        let tiny = BucketLimits {
            burst: 1.0,
            per_second: 1.0,
        };
        assert!(headroom(tiny).abs() < 1e-9, "a bucket of one keeps its one");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_are_spaced_not_stampeded() {
        let throttle = Throttle::new(
            BucketLimits::ARM_READS,
            BucketLimits {
                burst: 1.0,
                per_second: 10.0,
            },
        );
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..11 {
            let throttle = throttle.clone();
            handles.push(tokio::spawn(async move {
                throttle.acquire("sub", Access::Write).await;
                start.elapsed()
            }));
        }
        let mut times = Vec::new();
        for handle in handles {
            times.push(handle.await.unwrap());
        }
        times.sort();
        assert_eq!(times[0], Duration::ZERO);
        assert!(
            times[10] >= Duration::from_secs(1) && times[10] < Duration::from_millis(1050),
            "{times:?}"
        );
    }
}
