//! ARM-style token buckets: each subscription has a bucket for reads and one for writes that starts full and
//! refills continuously; a request takes one token or is throttled.

use std::collections::HashMap;

use tokio::time::Instant;

/// One bucket's fill level.
#[derive(Debug, Clone, Copy)]
struct Level {
    tokens: f64,
    updated: Instant,
}

/// Buckets of one kind (reads or writes), one per subscription.
#[derive(Debug)]
pub(crate) struct Buckets {
    burst: f64,
    per_second: f64,
    levels: HashMap<String, Level>,
}

/// The outcome of asking a bucket for a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Take {
    /// Allowed; this many whole tokens remain.
    Allowed { remaining: u64 },
    /// Throttled; a token will be available after this many whole seconds.
    Throttled { retry_after_secs: u64 },
}

impl Buckets {
    /// Buckets holding `burst` tokens and refilling `per_second` tokens each second.
    pub(crate) fn new(burst: f64, per_second: f64) -> Self {
        Self {
            burst,
            per_second,
            levels: HashMap::new(),
        }
    }

    /// Takes a token from `subscription`'s bucket at `now`.
    pub(crate) fn take(&mut self, subscription: &str, now: Instant) -> Take {
        let level = self
            .levels
            .entry(subscription.to_ascii_lowercase())
            .or_insert(Level {
                tokens: self.burst,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(level.updated).as_secs_f64();
        level.tokens = (level.tokens + elapsed * self.per_second).min(self.burst);
        level.updated = now;
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            Take::Allowed {
                remaining: whole(level.tokens),
            }
        } else {
            let wait = if self.per_second > 0.0 {
                ((1.0 - level.tokens) / self.per_second).ceil()
            } else {
                600.0
            };
            Take::Throttled {
                retry_after_secs: whole(wait).max(1),
            }
        }
    }
}

/// A non-negative float rounded down to an integer.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(value: f64) -> u64 {
    // The values are token counts and waits: small and never negative.
    value.max(0.0).floor() as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_empties_then_refills() {
        let mut buckets = Buckets::new(2.0, 0.5);
        let start = Instant::now();
        assert_eq!(buckets.take("Sub", start), Take::Allowed { remaining: 1 });
        assert_eq!(buckets.take("sub", start), Take::Allowed { remaining: 0 });
        assert_eq!(
            buckets.take("sub", start),
            Take::Throttled {
                retry_after_secs: 2
            }
        );
        assert_eq!(buckets.take("other", start), Take::Allowed { remaining: 1 });
        let later = start + Duration::from_secs(2);
        assert_eq!(buckets.take("sub", later), Take::Allowed { remaining: 0 });
    }
}
