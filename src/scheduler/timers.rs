//! The scheduler's timers: what is due when, for which target (and for which of its reloads), in one binary heap
//! ordered by due instant and then by the order they were set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    Slot(DateTime<Utc>),
    Watchdog,
    Retry,
    Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Timer {
    pub at: DateTime<Utc>,
    pub seq: u64,
    pub target: Arc<str>,
    pub epoch: u64,
    pub kind: TimerKind,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Every timer of every target, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// Orders timers set for the same instant.
    seq: u64,
}

impl Timers {
    /// Sets a timer of `kind` for `target` (as registered at `epoch`) at `at`.
    pub fn set(&mut self, target: &Arc<str>, epoch: u64, at: DateTime<Utc>, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse(Timer {
            at,
            seq: self.seq,
            target: target.clone(),
            epoch,
            kind,
        }));
    }

    /// The earliest timer due at `now`, taken off.
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Timer> {
        if self.heap.peek().is_some_and(|Reverse(t)| t.at <= now) {
            self.heap.pop().map(|Reverse(timer)| timer)
        } else {
            None
        }
    }

    /// When the earliest timer is due.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }
}
