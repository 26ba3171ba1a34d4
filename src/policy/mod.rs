//! Pure policy decisions (docs/design.md, "Policy semantics"): compliance, watchdog timing, retry backoff, what to prune.
//!
//! Nothing here performs I/O or reads a clock: callers pass `now`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Policy;
use crate::record::BackupRecord;

/// Converts a std duration to a chrono delta, saturating.
#[must_use]
pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// RPO compliant: some restorable backup has a recovery point within the last `rpo`.
#[must_use]
pub fn is_compliant(
    newest_recovery_point: Option<DateTime<Utc>>,
    rpo: Duration,
    now: DateTime<Utc>,
) -> bool {
    newest_recovery_point.is_some_and(|at| at >= now - delta(rpo))
}

/// The watchdog lead: the larger of the configured lead and the p90 of recent successful durations, so a backup
/// started then completes before the RPO is breached.
#[must_use]
pub fn lead(policy: &Policy, recent_durations: &[Duration]) -> Duration {
    policy.configured_lead().max(p90(recent_durations))
}

fn p90(durations: &[Duration]) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * 9).div_ceil(10).max(1) - 1;
    sorted[rank]
}

/// When the watchdog must start a backup: when the newest restorable backup's age reaches `rpo - lead`; at once
/// when there is none.
#[must_use]
pub fn watchdog_due(
    newest_recovery_point: Option<DateTime<Utc>>,
    rpo: Duration,
    lead: Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match newest_recovery_point {
        Some(at) => at + delta(rpo.saturating_sub(lead)),
        None => now,
    }
}

/// Exponential backoff with full jitter: a uniform pick in `[0, min(max, initial * 2^(attempt-1))]`, never
/// shorter than a server's `Retry-After`. `unit` is a uniform random number in `[0, 1)`.
#[must_use]
pub fn backoff(
    attempt: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = initial.saturating_mul(1 << exponent).min(max);
    let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
    retry_after.map_or(jittered, |after| jittered.max(after))
}

/// Why a backup's artifact is to be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneDecision {
    /// The backup.
    pub record: BackupRecord,
    /// Operator-readable reason, kept in the audit row.
    pub reason: String,
}

/// Chooses what to prune for one target.
///
/// `restorable` lists the target's restorable backups newest first; `expired` its expired, unpruned ones;
/// `newest_success_id` the id of its newest successful backup, expired or not. The newest restorable backup is
/// never pruned, and neither is the newest successful one: when backups have stopped, the last artifact is the
/// operator's last resort, even past its expiry.
#[must_use]
pub fn select_prunes(
    policy: &Policy,
    restorable: &[BackupRecord],
    expired: &[BackupRecord],
    newest_success_id: Option<i64>,
) -> Vec<PruneDecision> {
    if !policy.prune {
        return Vec::new();
    }
    let mut decisions = Vec::new();
    for record in expired {
        if Some(record.id) == newest_success_id
            || restorable.first().is_some_and(|r| r.id == record.id)
        {
            continue;
        }
        decisions.push(PruneDecision {
            record: record.clone(),
            reason: "expired".to_owned(),
        });
    }
    if let Some(keep) = policy.keep_last {
        let keep = usize::try_from(keep).unwrap_or(usize::MAX).max(1);
        for record in restorable.iter().skip(keep) {
            decisions.push(PruneDecision {
                record: record.clone(),
                reason: format!("beyond keep_last = {keep}"),
            });
        }
    }
    decisions
}

/// The start of the UTC day `now` falls in (a vault's daily on-demand budget counts from it).
#[must_use]
pub fn utc_day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |midnight| midnight.and_utc())
}

/// When a daily budget of `budget` attempts is spent, with `used` of them started since the UTC day of `now`
/// began: why (for logs and answers) and when it is back (the next 00:00 UTC); `None` while some are left.
#[must_use]
pub fn budget_spent(used: u32, budget: u32, now: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
    if used < budget {
        return None;
    }
    let back = utc_day_start(now) + chrono::TimeDelta::days(1);
    Some((
        format!(
            "{used} of {budget} on-demand backups were started this UTC day (max_on_demand_per_day); the budget \
             is back at {}",
            back.format("%Y-%m-%d 00:00 UTC")
        ),
        back,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn policy() -> Policy {
        Policy {
            rpo: Duration::from_hours(1),
            rpo_lead: None,
            schedule: None,
            expiry: Duration::from_hours(24),
            warn_before_expiry: Duration::from_hours(1),
            prune: true,
            keep_last: None,
            max_attempts: 3,
            retry_backoff: Duration::from_secs(10),
            retry_max_backoff: Duration::from_mins(1),
            operation_timeout: Duration::from_mins(1),
            on_change: None,
            rto: None,
        }
    }

    fn record(id: i64, status: Status) -> BackupRecord {
        let at = DateTime::from_timestamp(1_000_000 + id, 0).unwrap();
        BackupRecord {
            id,
            target: "t".into(),
            kind: "command".into(),
            trigger: "schedule".into(),
            status,
            attempt: 1,
            requested_at: at,
            accepted_at: Some(at),
            completed_at: Some(at),
            expires_at: Some(at),
            storage: Some("local".into()),
            artifact: Some(format!("t/{id}")),
            size_bytes: None,
            sha256: None,
            sku: None,
            etag: None,
            error_code: None,
            error_message: None,
            first_change_at: None,
            pruned_at: None,
            verified_at: None,
            content: None,
            replica: None,
            slot: None,
        }
    }

    #[test]
    fn compliance_is_inclusive_of_the_rpo_edge() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap();
        let rpo = Duration::from_secs(100);
        assert!(is_compliant(Some(now - TimeDelta::seconds(100)), rpo, now));
        assert!(!is_compliant(Some(now - TimeDelta::seconds(101)), rpo, now));
        assert!(!is_compliant(None, rpo, now));
    }

    #[test]
    fn lead_takes_the_slower_of_policy_and_history() {
        let p = policy();
        assert_eq!(lead(&p, &[]), Duration::from_mins(6));
        let slow: Vec<Duration> = (1..=10).map(|m| Duration::from_secs(m * 60)).collect();
        assert_eq!(
            lead(&p, &slow),
            Duration::from_mins(9),
            "p90 of 1..10 minutes is 9 minutes"
        );
    }

    #[test]
    fn watchdog_fires_at_rpo_minus_lead_or_at_once() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap();
        let rp = now - TimeDelta::seconds(50);
        let due = watchdog_due(
            Some(rp),
            Duration::from_secs(100),
            Duration::from_secs(10),
            now,
        );
        assert_eq!(due, rp + TimeDelta::seconds(90));
        assert_eq!(
            watchdog_due(None, Duration::from_secs(100), Duration::ZERO, now),
            now
        );
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let initial = Duration::from_secs(10);
        let max = Duration::from_mins(1);
        assert_eq!(
            backoff(1, initial, max, None, 0.999_999),
            Duration::from_secs(10).mul_f64(0.999_999)
        );
        assert!(backoff(3, initial, max, None, 1.0) <= Duration::from_secs(40));
        assert_eq!(backoff(10, initial, max, None, 1.0), max);
        assert_eq!(
            backoff(1, initial, max, Some(Duration::from_mins(2)), 0.5),
            Duration::from_mins(2)
        );
        assert_eq!(backoff(1, initial, max, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn never_prunes_the_newest_restorable_or_last_success() {
        let mut p = policy();
        p.keep_last = Some(1);
        let restorable = vec![record(5, Status::Succeeded), record(4, Status::Succeeded)];
        let expired = vec![record(1, Status::Succeeded), record(2, Status::Succeeded)];
        let ids: Vec<i64> = select_prunes(&p, &restorable, &expired, Some(5))
            .iter()
            .map(|d| d.record.id)
            .collect();
        assert_eq!(ids, vec![1, 2, 4]);
        // Everything expired: the newest success stays.
        let ids: Vec<i64> = select_prunes(&p, &[], &expired, Some(2))
            .iter()
            .map(|d| d.record.id)
            .collect();
        assert_eq!(ids, vec![1]);
        p.prune = false;
        assert!(select_prunes(&p, &restorable, &expired, Some(5)).is_empty());
    }

    #[test]
    fn a_daily_budget_is_spent_at_its_count_and_back_at_the_next_utc_midnight() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T23:59:30+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert!(budget_spent(2, 3, now).is_none());
        let (why, back) = budget_spent(3, 3, now).unwrap();
        assert_eq!(back.to_rfc3339(), "2026-12-03T00:00:00+00:00");
        assert!(
            why.contains("3 of 3") && why.ends_with("2026-12-03 00:00 UTC"),
            "{why}"
        );
    }
}
