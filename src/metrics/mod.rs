//! Every metric rpod exports, defined once with its help text (docs/design.md, "Metrics"). Labels stay low-cardinality:
//! `target`, `kind`, `trigger`, `outcome`, `storage` — never ids or URLs. The series every target has live in
//! `targets`, as rpod's own state written out at each scrape; the rest in a Prometheus registry.

mod targets;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::record::{TargetSummary, Trigger};

/// Outcomes of `rpod_backups_total`.
pub const OUTCOMES: [&str; 3] = ["succeeded", "failed", "timed_out"];

/// The registry and every metric in it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every target's own series (see `targets`).
    targets: std::sync::Arc<targets::TargetSeries>,
    storage_up: IntGaugeVec,
    arm_requests_total: IntCounterVec,
    arm_throttled_total: prometheus::IntCounter,
    change_events_total: IntCounterVec,
    change_poll_errors_total: IntCounterVec,
    webhook_requests_total: IntCounterVec,
    webhook_events_ignored_total: IntCounterVec,
    last_evaluation: Gauge,
    last_reconciliation: Gauge,
    reconciliation_duration: Gauge,
    dispatch_lateness: Histogram,
    restores: RestoreMetrics,
    shares: ShareMetrics,
    replica_leases: IntGaugeVec,
    replica_is_leader: prometheus::IntGauge,
}

/// Backup failures by reason, and the series of systems that keep their backups on a share (docs/azure-stack.md).
#[derive(Debug, Clone)]
struct ShareMetrics {
    failures_total: IntCounterVec,
    available_bytes: GaugeVec,
    backups_that_fit: GaugeVec,
    cert_changed: GaugeVec,
    /// The reasons each target has failed for, to remove their series with the target.
    failure_reasons: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>,
    >,
}

/// The restore, standby and drill series (docs/restore.md).
#[derive(Debug, Clone)]
struct RestoreMetrics {
    restore_duration: HistogramVec,
    rto_seconds: GaugeVec,
    drill_last_success: GaugeVec,
    drill_last_failure: GaugeVec,
    drill_duration: GaugeVec,
    drill_max_age: GaugeVec,
    standby_recovery_point: GaugeVec,
    standby_rpo: GaugeVec,
    budget_remaining: IntGaugeVec,
    protection_healthy: IntGaugeVec,
}

/// Outcomes of `rpod_restores_total`.
pub const RESTORE_OUTCOMES: [&str; 3] = ["succeeded", "failed", "timed_out"];

fn ts(at: Option<DateTime<Utc>>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    // milliseconds since 1970 fit f64's 53 bits for 285,000 years
    at.map_or(0.0, |at| at.timestamp_millis() as f64 / 1000.0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    /// Never in practice: names and labels are constants checked by the tests.
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let build_info = int_gauge(
            "rpod_build_info",
            "Always 1; the version label says which rpod runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let last_evaluation = Gauge::new(
            "rpod_last_evaluation_timestamp_seconds",
            "When the scheduler last serviced its due timers: the scheduler heartbeat.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_evaluation.clone()))
            .expect("unique metric");
        let last_reconciliation = Gauge::new(
            "rpod_last_reconciliation_timestamp_seconds",
            "When the last reconciliation pass (storage and systems compared with the catalog) ended; 0 before \
             the first.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_reconciliation.clone()))
            .expect("unique metric");
        let reconciliation_duration = Gauge::new(
            "rpod_reconciliation_duration_seconds",
            "How long the last reconciliation pass took.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconciliation_duration.clone()))
            .expect("unique metric");
        let dispatch_lateness = Histogram::with_opts(
            HistogramOpts::new(
                "rpod_dispatch_lateness_seconds",
                "Time from a backup's due time to its provider starting (queueing behind the concurrency limit \
                 included).",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(dispatch_lateness.clone()))
            .expect("unique metric");
        let arm_throttled_total = prometheus::IntCounter::new(
            "rpod_arm_throttled_total",
            "Azure Resource Manager answers 429 (throttled).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(arm_throttled_total.clone()))
            .expect("unique metric");
        let restore_duration = HistogramVec::new(
            HistogramOpts::new(
                "rpod_restore_duration_seconds",
                "Measured restore time (the system accepted it to it completed) of successful restores.",
            )
            .buckets(vec![
                1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
            ]),
            &["target"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(restore_duration.clone()))
            .expect("unique metric");
        let restores = RestoreMetrics {
            restore_duration,
            rto_seconds: gauge(
                "rpod_target_rto_seconds",
                "The target's declared recovery time objective (policy rto) in seconds.",
                &["target"],
            ),
            drill_last_success: gauge(
                "rpod_restore_drill_last_success_timestamp_seconds",
                "When the newest successful restore drill completed; 0 if none.",
                &["target"],
            ),
            drill_last_failure: gauge(
                "rpod_restore_drill_last_failure_timestamp_seconds",
                "When the newest failed restore drill ended; 0 if none.",
                &["target"],
            ),
            drill_duration: gauge(
                "rpod_restore_drill_duration_seconds",
                "Measured restore time of the newest successful restore drill.",
                &["target"],
            ),
            drill_max_age: gauge(
                "rpod_restore_drill_max_age_seconds",
                "The target's drill.max_age: a successful drill must be younger than this.",
                &["target"],
            ),
            standby_recovery_point: gauge(
                "rpod_standby_recovery_point_timestamp_seconds",
                "Recovery point of the backup last restored into the target's standby; 0 if none.",
                &["target"],
            ),
            standby_rpo: gauge(
                "rpod_standby_rpo_seconds",
                "The target's standby.rpo: the standby's recovery point must be younger than this.",
                &["target"],
            ),
            protection_healthy: int_gauge(
                "rpod_target_protection_healthy",
                "1 when the system that keeps the target's recovery points rates its protection healthy (a vault's \
                 item: protected, health Passed, last backup not failed), as read at the last reconciliation.",
                &["target"],
            ),
            budget_remaining: int_gauge(
                "rpod_on_demand_budget_remaining",
                "Backup attempts the target may still start this UTC day (a vault's on-demand budget).",
                &["target"],
            ),
        };
        let shares = ShareMetrics {
            failures_total: counter(
                "rpod_backup_failures_total",
                "Failed backup attempts by reason: the error code recorded with the backup (for Azure Stack Hub \
                 one of ShareOutOfCapacity, ShareUnreachable, SharePathNotFound, ShareAuthenticationFailed, \
                 BackupFault).",
                &["target", "reason"],
            ),
            available_bytes: gauge(
                "rpod_storage_available_bytes",
                "Free space on the target's backup share, as its system reports it (Azure Stack Hub's \
                 availableCapacity).",
                &["target"],
            ),
            backups_that_fit: gauge(
                "rpod_target_backups_that_fit",
                "How many more backups fit in the free space of the target's backup share, by the size of recent \
                 backups (else the documented 10 GB).",
                &["target"],
            ),
            cert_changed: gauge(
                "rpod_target_encryption_cert_changed_timestamp_seconds",
                "When the backup encryption certificate of the target's system was last seen to change; backups \
                 taken before need the old certificate's private key (.PFX) to recover. 0 if no change was seen.",
                &["target"],
            ),
            failure_reasons: std::sync::Arc::default(),
        };
        let replica_is_leader = prometheus::IntGauge::new(
            "rpod_replica_is_leader",
            "1 while this replica holds the leader lease and runs pruning, reconciliation and expiry warnings \
             (always 1 on a single node); 0 otherwise.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(replica_is_leader.clone()))
            .expect("unique metric");
        replica_is_leader.set(1);
        Self {
            restores,
            shares,
            replica_leases: int_gauge(
                "rpod_replica_leases",
                "Targets this replica holds a lease on and schedules (replicas on a PostgreSQL catalog).",
                &["replica"],
            ),
            replica_is_leader,
            arm_requests_total: counter(
                "rpod_arm_requests_total",
                "Azure Resource Manager requests by operation and status class (2xx, 4xx, 5xx, error).",
                &["operation", "status_class"],
            ),
            arm_throttled_total,
            change_events_total: counter(
                "rpod_change_events_total",
                "Configuration changes seen, by detector (sync_state, event_grid); rpod's own backups are not \
                 counted.",
                &["target", "source"],
            ),
            change_poll_errors_total: counter(
                "rpod_change_poll_errors_total",
                "Sync state polls that failed (they never trigger a backup by themselves).",
                &["target"],
            ),
            webhook_requests_total: counter(
                "rpod_webhook_requests_total",
                "Requests to the Event Grid webhook, by HTTP status answered.",
                &["code"],
            ),
            webhook_events_ignored_total: counter(
                "rpod_webhook_events_ignored_total",
                "Event Grid events delivered but not counted as a change: unknown_service (no target with \
                 detect = \"event_grid\" for it) or not_a_change (event types that change no configuration).",
                &["reason"],
            ),
            targets: std::sync::Arc::default(),
            storage_up: int_gauge(
                "rpod_storage_up",
                "1 when the storage's last probe succeeded.",
                &["storage"],
            ),
            last_evaluation,
            last_reconciliation,
            reconciliation_duration,
            dispatch_lateness,
            registry,
        }
    }

    /// Creates every per-target series at its zero value, so "never" differs from "rpod is down": the counters
    /// only for what the target can produce (`rpod_backups_total` for `triggers`, pruning when `prunes`).
    pub fn register_target(
        &self,
        target: &str,
        kind: &str,
        rpo_seconds: f64,
        triggers: &[Trigger],
        prunes: bool,
    ) {
        self.targets
            .register(target, kind, rpo_seconds, triggers, prunes);
    }

    /// Removes every series of a target that is no longer configured, so its alerts resolve.
    pub fn unregister_target(&self, target: &str, _kind: &str) {
        self.targets.unregister(target);
        self.register_change_sources(target, &[], false);
        self.unregister_restores(target);
    }

    /// Creates the restore series of a target (its declared RTO, drill and standby, when configured) and removes
    /// the ones it no longer has.
    pub fn register_restores(
        &self,
        target: &str,
        rto: Option<f64>,
        drill_max_age: Option<f64>,
        standby_rpo: Option<f64>,
    ) {
        let r = &self.restores;
        let set = |metric: &GaugeVec, value: Option<f64>| match value {
            Some(value) => metric.with_label_values(&[target]).set(value),
            None => {
                let _ = metric.remove_label_values(&[target]);
            }
        };
        set(&r.rto_seconds, rto);
        set(&r.drill_max_age, drill_max_age);
        set(&r.standby_rpo, standby_rpo);
        for metric in [&r.drill_last_success, &r.drill_last_failure] {
            if drill_max_age.is_some() {
                let _ = metric.with_label_values(&[target]);
            } else {
                let _ = metric.remove_label_values(&[target]);
            }
        }
        if drill_max_age.is_none() {
            let _ = r.drill_duration.remove_label_values(&[target]);
        }
        if standby_rpo.is_some() {
            let _ = r.standby_recovery_point.with_label_values(&[target]);
        } else {
            let _ = r.standby_recovery_point.remove_label_values(&[target]);
        }
        // Restore counters exist from the start for what the target does on its own (drills, standby); a
        // manual restore's appear with the first one.
        let mut triggers = Vec::new();
        if drill_max_age.is_some() {
            triggers.push(crate::record::RestoreTrigger::Drill);
        }
        if standby_rpo.is_some() {
            triggers.push(crate::record::RestoreTrigger::Standby);
        }
        self.targets.register_restores(target, &triggers);
    }

    /// How the system rates its protection of a target, as read at the last reconciliation.
    pub fn set_protection_healthy(&self, target: &str, healthy: bool) {
        self.restores
            .protection_healthy
            .with_label_values(&[target])
            .set(i64::from(healthy));
    }

    /// How many backup attempts a target with a daily budget may still start this UTC day.
    pub fn set_budget_remaining(&self, target: &str, remaining: u32) {
        self.restores
            .budget_remaining
            .with_label_values(&[target])
            .set(i64::from(remaining));
    }

    /// Counts a failed backup attempt by its error code.
    pub fn backup_failed(&self, target: &str, reason: &str) {
        self.shares
            .failures_total
            .with_label_values(&[target, reason])
            .inc();
        self.shares
            .failure_reasons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(target.to_owned())
            .or_default()
            .insert(reason.to_owned());
    }

    /// What this replica holds after a lease round: how many targets, and whether it is the leader.
    pub fn set_replica(&self, replica: &str, leases: usize, leader: bool) {
        self.replica_leases
            .with_label_values(&[replica])
            .set(i64::try_from(leases).unwrap_or(i64::MAX));
        self.replica_is_leader.set(i64::from(leader));
    }

    /// What a target's system says of its backup share: its free space, how many more backups fit, and when
    /// the encryption certificate was last seen to change.
    pub fn set_share(
        &self,
        target: &str,
        available_bytes: Option<u64>,
        backups_that_fit: Option<u64>,
        cert_changed_at: Option<DateTime<Utc>>,
    ) {
        let s = &self.shares;
        if let Some(bytes) = available_bytes {
            s.available_bytes
                .with_label_values(&[target])
                .set(bytes as f64);
        }
        if let Some(fit) = backups_that_fit {
            s.backups_that_fit
                .with_label_values(&[target])
                .set(fit as f64);
        }
        s.cert_changed
            .with_label_values(&[target])
            .set(ts(cert_changed_at));
    }

    /// Removes every restore series of a target that is no longer configured.
    pub fn unregister_restores(&self, target: &str) {
        self.register_restores(target, None, None, None);
        let _ = self
            .restores
            .restore_duration
            .remove_label_values(&[target]);
        let _ = self
            .restores
            .budget_remaining
            .remove_label_values(&[target]);
        let _ = self
            .restores
            .protection_healthy
            .remove_label_values(&[target]);
        let s = &self.shares;
        for metric in [&s.available_bytes, &s.backups_that_fit, &s.cert_changed] {
            let _ = metric.remove_label_values(&[target]);
        }
        // The failure series of a removed target go with it.
        let reasons = s
            .failure_reasons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(target)
            .unwrap_or_default();
        for reason in reasons {
            let _ = s.failures_total.remove_label_values(&[target, &reason]);
        }
    }

    /// A restore ended; `seconds` is its measured restore time when it succeeded.
    pub fn restore_finished(
        &self,
        target: &str,
        trigger: crate::record::RestoreTrigger,
        outcome: &str,
        seconds: Option<f64>,
    ) {
        self.targets.restore_finished(target, trigger, outcome);
        if let Some(seconds) = seconds {
            self.restores
                .restore_duration
                .with_label_values(&[target])
                .observe(seconds);
        }
    }

    /// A drill ended at `at`: successful with its measured restore time, or failed.
    pub fn drill_finished(&self, target: &str, at: DateTime<Utc>, seconds: Option<f64>) {
        let r = &self.restores;
        match seconds {
            Some(seconds) => {
                r.drill_last_success
                    .with_label_values(&[target])
                    .set(ts(Some(at)));
                r.drill_duration.with_label_values(&[target]).set(seconds);
            }
            None => r
                .drill_last_failure
                .with_label_values(&[target])
                .set(ts(Some(at))),
        }
    }

    /// The backup with this recovery point is now restored into the target's standby.
    pub fn standby_restored(&self, target: &str, recovery_point: Option<DateTime<Utc>>) {
        self.restores
            .standby_recovery_point
            .with_label_values(&[target])
            .set(ts(recovery_point));
    }

    /// Creates the change-detection series of a target for the detectors it uses (and removes the others).
    pub fn register_change_sources(&self, target: &str, sources: &[&str], polls: bool) {
        for source in [crate::config::SYNC_STATE, crate::config::EVENT_GRID] {
            if sources.contains(&source) {
                let _ = self
                    .change_events_total
                    .with_label_values(&[target, source]);
            } else {
                let _ = self
                    .change_events_total
                    .remove_label_values(&[target, source]);
            }
        }
        if polls {
            let _ = self.change_poll_errors_total.with_label_values(&[target]);
        } else {
            let _ = self.change_poll_errors_total.remove_label_values(&[target]);
        }
    }

    /// A configuration change was seen.
    pub fn change_event(&self, target: &str, source: &str) {
        self.change_events_total
            .with_label_values(&[target, source])
            .inc();
    }

    /// A sync state poll failed.
    pub fn change_poll_failed(&self, target: &str) {
        self.change_poll_errors_total
            .with_label_values(&[target])
            .inc();
    }

    /// The webhook answered a request with `status`.
    pub fn webhook_request(&self, status: u16) {
        self.webhook_requests_total
            .with_label_values(&[&status.to_string()])
            .inc();
    }

    /// A delivered event was not counted as a change, for `reason` (`unknown_service`, `not_a_change`).
    pub fn webhook_event_ignored(&self, reason: &str) {
        self.webhook_events_ignored_total
            .with_label_values(&[reason])
            .inc();
    }

    /// Sets the restorability gauges of a target from a catalog summary.
    pub fn set_summary(&self, target: &str, summary: &TargetSummary, compliant: bool) {
        self.targets.set_summary(
            target,
            ts(summary.last_success),
            ts(summary.last_attempt),
            i64::try_from(summary.restorable_backups).unwrap_or(i64::MAX),
            ts(summary.restorable_until),
            compliant,
        );
    }

    /// Sets the gauges that change as time passes (expiry), from an evaluation pass.
    pub fn set_restorability(
        &self,
        target: &str,
        count: u64,
        until: Option<DateTime<Utc>>,
        compliant: bool,
    ) {
        self.targets.set_restorability(
            target,
            i64::try_from(count).unwrap_or(i64::MAX),
            ts(until),
            compliant,
        );
    }

    /// Marks a backup as running or not.
    pub fn set_in_progress(&self, target: &str, running: bool) {
        self.targets.set_in_progress(target, running);
    }

    /// Records the start of an attempt.
    pub fn attempt_started(&self, target: &str, at: DateTime<Utc>, lateness_seconds: f64) {
        self.targets.set_last_attempt(target, ts(Some(at)));
        self.dispatch_lateness.observe(lateness_seconds.max(0.0));
    }

    /// Counts a completed attempt.
    pub fn backup_finished(&self, target: &str, trigger: Trigger, outcome: &str, seconds: f64) {
        self.targets
            .backup_finished(target, trigger, outcome, seconds);
    }

    /// Counts a pruned artifact.
    pub fn pruned(&self, target: &str) {
        self.targets.pruned(target);
    }

    /// Counts an expiry warning.
    pub fn expiry_warned(&self, target: &str) {
        self.targets.expiry_warned(target);
    }

    /// Records a storage probe result.
    pub fn set_storage_up(&self, storage: &str, up: bool) {
        self.storage_up
            .with_label_values(&[storage])
            .set(i64::from(up));
    }

    /// Counts an Azure Resource Manager request.
    pub fn arm_request(&self, operation: &str, status_class: &str) {
        self.arm_requests_total
            .with_label_values(&[operation, status_class])
            .inc();
    }

    /// Counts a 429 from Azure Resource Manager.
    pub fn arm_throttled(&self) {
        self.arm_throttled_total.inc();
    }

    /// Records the scheduler heartbeat (`scheduler::Heartbeat`).
    pub fn evaluated(&self, at: DateTime<Utc>) {
        self.last_evaluation.set(ts(Some(at)));
    }

    /// A reconciliation pass ended at `at` after `seconds`.
    pub fn reconciled(&self, at: DateTime<Utc>, seconds: f64) {
        self.last_reconciliation.set(ts(Some(at)));
        self.reconciliation_duration.set(seconds);
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(64 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        self.targets.render(&mut text);
        text
    }

    /// The dispatch lateness histogram, for benchmarks.
    #[must_use]
    pub fn dispatch_lateness(&self) -> &Histogram {
        &self.dispatch_lateness
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RestoreTrigger;

    fn lines_of<'a>(text: &'a str, target: &str) -> Vec<&'a str> {
        let label = format!("target=\"{target}\"");
        text.lines().filter(|line| line.contains(&label)).collect()
    }

    #[test]
    fn a_target_gets_only_the_series_it_can_produce() {
        let metrics = Metrics::new();
        // A command target on a schedule, with a drill.
        metrics.register_target(
            "db",
            "command",
            3600.0,
            &[Trigger::Schedule, Trigger::Rpo],
            true,
        );
        metrics.register_restores("db", None, Some(86_400.0), None);
        // A stamp in watch mode: rpod starts none of its backups and deletes none.
        metrics.register_target("stamp", "azure_stack_infra", 3600.0, &[], false);
        metrics.register_restores("stamp", None, None, None);
        let text = metrics.render();

        let db = lines_of(&text, "db");
        let backups = db
            .iter()
            .filter(|l| l.starts_with("rpod_backups_total{"))
            .count();
        assert_eq!(backups, 6, "schedule and rpo, three outcomes each: {db:#?}");
        assert!(
            db.iter()
                .any(|l| l.starts_with("rpod_backups_pruned_total{"))
        );
        let restores: Vec<_> = db
            .iter()
            .filter(|l| l.starts_with("rpod_restores_total{"))
            .collect();
        assert_eq!(
            restores.len(),
            3,
            "the drill's three outcomes: {restores:#?}"
        );
        assert!(
            restores
                .iter()
                .all(|l| l.contains("trigger=\"drill\"") && l.ends_with(" 0"))
        );
        assert!(
            !db.iter()
                .any(|l| l.starts_with("rpod_backup_duration_seconds")),
            "no histogram before a backup"
        );

        let stamp = lines_of(&text, "stamp");
        assert!(
            !stamp.iter().any(|l| l.starts_with("rpod_backups_total{")),
            "{stamp:#?}"
        );
        assert!(
            !stamp
                .iter()
                .any(|l| l.starts_with("rpod_backups_pruned_total{"))
        );
        assert!(!stamp.iter().any(|l| l.starts_with("rpod_restores_total{")));
        assert!(
            stamp
                .iter()
                .any(|l| l.starts_with("rpod_target_info{kind=\"azure_stack_infra\""))
        );

        // A manual restore's series appears with the first one; a backup brings the histogram.
        metrics.restore_finished("db", RestoreTrigger::Manual, "succeeded", Some(3.0));
        metrics.backup_finished("db", Trigger::Schedule, "succeeded", 42.0);
        let text = metrics.render();
        assert!(text.contains(
            "rpod_restores_total{outcome=\"succeeded\",target=\"db\",trigger=\"manual\"} 1"
        ));
        assert!(text.contains(
            "rpod_backups_total{outcome=\"succeeded\",target=\"db\",trigger=\"schedule\"} 1"
        ));
        assert!(text.contains("rpod_backup_duration_seconds_bucket{target=\"db\",le=\"60\"} 1"));
        assert!(text.contains("rpod_backup_duration_seconds_bucket{target=\"db\",le=\"10\"} 0"));
        assert!(text.contains("rpod_backup_duration_seconds_count{target=\"db\"} 1"));

        // A removed target loses every series.
        metrics.unregister_target("db", "command");
        assert!(lines_of(&metrics.render(), "db").is_empty());
    }
}
