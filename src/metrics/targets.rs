//! The per-target series, kept as rpod's own compact state and written out at each scrape
//! (docs/metrics.md, "Cost"). A target costs one row of atomics here, not a registry entry per series, so ten
//! thousand targets take a few megabytes, a scrape allocates only its text, and updating a value never waits
//! for a scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::record::{RestoreTrigger, Trigger};

use super::{OUTCOMES, RESTORE_OUTCOMES};

/// Upper bounds of `rpod_backup_duration_seconds`' buckets.
const DURATION_BUCKETS: [f64; 10] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
];

/// A gauge kept as the bits of an `f64`.
#[derive(Debug, Default)]
struct F64(AtomicU64);

impl F64 {
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A counter that exists once created: 0 means "no series", n + 1 means the value n.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn create(&self) {
        let _ = self
            .0
            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn inc(&self) {
        self.create();
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// Completed attempts' durations, once the first completed.
#[derive(Debug, Default, Clone)]
struct Durations {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Every per-target value.
#[derive(Debug, Default)]
struct Row {
    kind: Box<str>,
    rpo_seconds: F64,
    last_success: F64,
    last_attempt: F64,
    restorable_until: F64,
    compliant: AtomicI64,
    restorable: AtomicI64,
    in_progress: AtomicI64,
    /// `rpod_backups_total` by [`Trigger::ALL`] and [`OUTCOMES`].
    backups: [[Counter; OUTCOMES.len()]; Trigger::ALL.len()],
    pruned: Counter,
    expiry_warnings: Counter,
    durations: Mutex<Option<Box<Durations>>>,
    /// `rpod_restores_total` by [`RestoreTrigger::ALL`] and [`RESTORE_OUTCOMES`].
    restores: [[Counter; RESTORE_OUTCOMES.len()]; RestoreTrigger::ALL.len()],
}

/// The per-target series of every configured target.
#[derive(Debug, Default)]
pub(super) struct TargetSeries {
    rows: RwLock<HashMap<Arc<str>, Arc<Row>>>,
}

fn trigger_index(trigger: Trigger) -> usize {
    Trigger::ALL.iter().position(|t| *t == trigger).unwrap_or(0)
}

fn restore_index(trigger: RestoreTrigger) -> usize {
    RestoreTrigger::ALL
        .iter()
        .position(|t| *t == trigger)
        .unwrap_or(0)
}

fn outcome_index(outcome: &str) -> Option<usize> {
    OUTCOMES.iter().position(|o| *o == outcome)
}

impl TargetSeries {
    fn row(&self, target: &str) -> Option<Arc<Row>> {
        self.rows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target)
            .cloned()
    }

    /// Adds (or re-reads) a target: its info, RPO and restorability series at zero, and the counters it can
    /// produce: `rpod_backups_total` for `triggers` and every outcome, and `rpod_backups_pruned_total` when
    /// rpod prunes its backups.
    pub(super) fn register(
        &self,
        target: &str,
        kind: &str,
        rpo_seconds: f64,
        triggers: &[Trigger],
        prunes: bool,
    ) {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let row = rows.entry(Arc::from(target)).or_insert_with(|| {
            Arc::new(Row {
                kind: kind.into(),
                ..Row::default()
            })
        });
        if &*row.kind != kind {
            *row = Arc::new(Row {
                kind: kind.into(),
                ..Row::default()
            });
        }
        row.rpo_seconds.set(rpo_seconds);
        for trigger in triggers {
            for counter in &row.backups[trigger_index(*trigger)] {
                counter.create();
            }
        }
        if prunes {
            row.pruned.create();
        }
        row.expiry_warnings.create();
    }

    /// Removes a target and every series of it.
    pub(super) fn unregister(&self, target: &str) {
        self.rows
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target);
    }

    pub(super) fn set_summary(
        &self,
        target: &str,
        last_success: f64,
        last_attempt: f64,
        restorable: i64,
        until: f64,
        compliant: bool,
    ) {
        if let Some(row) = self.row(target) {
            row.last_success.set(last_success);
            row.last_attempt.set(last_attempt);
            row.restorable.store(restorable, Ordering::Relaxed);
            row.restorable_until.set(until);
            row.compliant.store(i64::from(compliant), Ordering::Relaxed);
        }
    }

    pub(super) fn set_restorability(
        &self,
        target: &str,
        restorable: i64,
        until: f64,
        compliant: bool,
    ) {
        if let Some(row) = self.row(target) {
            row.restorable.store(restorable, Ordering::Relaxed);
            row.restorable_until.set(until);
            row.compliant.store(i64::from(compliant), Ordering::Relaxed);
        }
    }

    pub(super) fn set_in_progress(&self, target: &str, running: bool) {
        if let Some(row) = self.row(target) {
            row.in_progress.store(i64::from(running), Ordering::Relaxed);
        }
    }

    pub(super) fn set_last_attempt(&self, target: &str, at: f64) {
        if let Some(row) = self.row(target) {
            row.last_attempt.set(at);
        }
    }

    pub(super) fn backup_finished(
        &self,
        target: &str,
        trigger: Trigger,
        outcome: &str,
        seconds: f64,
    ) {
        let Some(row) = self.row(target) else { return };
        if let Some(outcome) = outcome_index(outcome) {
            row.backups[trigger_index(trigger)][outcome].inc();
        }
        let mut durations = row.durations.lock().unwrap_or_else(PoisonError::into_inner);
        let durations = durations.get_or_insert_with(Box::default);
        for (bucket, bound) in durations.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        durations.sum += seconds;
        durations.count += 1;
    }

    /// Creates the restore counters of `triggers` (a drill or a standby the target has), every outcome.
    pub(super) fn register_restores(&self, target: &str, triggers: &[RestoreTrigger]) {
        if let Some(row) = self.row(target) {
            for trigger in triggers {
                for counter in &row.restores[restore_index(*trigger)] {
                    counter.create();
                }
            }
        }
    }

    pub(super) fn restore_finished(&self, target: &str, trigger: RestoreTrigger, outcome: &str) {
        if let Some(row) = self.row(target)
            && let Some(outcome) = RESTORE_OUTCOMES.iter().position(|o| *o == outcome)
        {
            row.restores[restore_index(trigger)][outcome].inc();
        }
    }

    pub(super) fn pruned(&self, target: &str) {
        if let Some(row) = self.row(target) {
            row.pruned.inc();
        }
    }

    pub(super) fn expiry_warned(&self, target: &str) {
        if let Some(row) = self.row(target) {
            row.expiry_warnings.inc();
        }
    }

    /// Appends every per-target family in the text format, targets in name order.
    pub(super) fn render(&self, out: &mut String) {
        let mut rows: Vec<(Arc<str>, Arc<Row>)> = self
            .rows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, row)| (name.clone(), row.clone()))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.reserve(rows.len() * 1200);
        let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&Row) -> Sample| {
            header(out, name, help, "gauge");
            for (target, row) in &rows {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{}\"}} {}",
                    Escaped(target),
                    value(row)
                );
            }
        };
        header(
            out,
            "rpod_backup_duration_seconds",
            "Duration of completed backup attempts.",
            "histogram",
        );
        for (target, row) in &rows {
            let durations = row
                .durations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_deref()
                .cloned();
            let Some(durations) = durations else { continue };
            let target = Escaped(target);
            for (count, bound) in durations.buckets.iter().zip(DURATION_BUCKETS) {
                let _ = writeln!(
                    out,
                    "rpod_backup_duration_seconds_bucket{{target=\"{target}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "rpod_backup_duration_seconds_bucket{{target=\"{target}\",le=\"+Inf\"}} {}\n\
                 rpod_backup_duration_seconds_sum{{target=\"{target}\"}} {}\n\
                 rpod_backup_duration_seconds_count{{target=\"{target}\"}} {}",
                durations.count,
                Value(durations.sum),
                durations.count
            );
        }
        header(
            out,
            "rpod_backups_pruned_total",
            "Backup artifacts deleted by pruning.",
            "counter",
        );
        for (target, row) in &rows {
            if let Some(count) = row.pruned.get() {
                let _ = writeln!(
                    out,
                    "rpod_backups_pruned_total{{target=\"{}\"}} {count}",
                    Escaped(target)
                );
            }
        }
        header(
            out,
            "rpod_backups_total",
            "Completed backup attempts by trigger and outcome (succeeded, failed, timed_out).",
            "counter",
        );
        for (target, row) in &rows {
            let target = Escaped(target);
            for (trigger, counters) in Trigger::ALL.iter().zip(&row.backups) {
                for (outcome, counter) in OUTCOMES.iter().zip(counters) {
                    if let Some(count) = counter.get() {
                        let _ = writeln!(
                            out,
                            "rpod_backups_total{{outcome=\"{outcome}\",target=\"{target}\",trigger=\"{}\"}} {count}",
                            trigger.as_str()
                        );
                    }
                }
            }
        }
        header(
            out,
            "rpod_expiry_warnings_total",
            "Warnings that the last restorable backup expires within warn_before_expiry (once per backup).",
            "counter",
        );
        for (target, row) in &rows {
            if let Some(count) = row.expiry_warnings.get() {
                let _ = writeln!(
                    out,
                    "rpod_expiry_warnings_total{{target=\"{}\"}} {count}",
                    Escaped(target)
                );
            }
        }
        header(
            out,
            "rpod_restores_total",
            "Completed restores by trigger (manual, standby, drill) and outcome (succeeded, failed, timed_out).",
            "counter",
        );
        for (target, row) in &rows {
            let target = Escaped(target);
            for (trigger, counters) in RestoreTrigger::ALL.iter().zip(&row.restores) {
                for (outcome, counter) in RESTORE_OUTCOMES.iter().zip(counters) {
                    if let Some(count) = counter.get() {
                        let _ = writeln!(
                            out,
                            "rpod_restores_total{{outcome=\"{outcome}\",target=\"{target}\",trigger=\"{}\"}} {count}",
                            trigger.as_str()
                        );
                    }
                }
            }
        }
        header(
            out,
            "rpod_target_info",
            "1 for every configured target.",
            "gauge",
        );
        for (target, row) in &rows {
            let _ = writeln!(
                out,
                "rpod_target_info{{kind=\"{}\",target=\"{}\"}} 1",
                Escaped(&row.kind),
                Escaped(target)
            );
        }
        gauge(
            out,
            "rpod_target_last_attempt_timestamp_seconds",
            "Start of the newest backup attempt; 0 if none.",
            &|row| Sample::Float(row.last_attempt.get()),
        );
        gauge(
            out,
            "rpod_target_last_success_timestamp_seconds",
            "Recovery point time of the newest successful backup; 0 if none.",
            &|row| Sample::Float(row.last_success.get()),
        );
        gauge(
            out,
            "rpod_target_operation_in_progress",
            "1 while a backup of the target runs.",
            &|row| Sample::Int(row.in_progress.load(Ordering::Relaxed)),
        );
        gauge(
            out,
            "rpod_target_restorable_backups",
            "Number of restorable backups (succeeded, or discovered and verified; not expired, pruned or missing).",
            &|row| Sample::Int(row.restorable.load(Ordering::Relaxed)),
        );
        gauge(
            out,
            "rpod_target_restorable_until_timestamp_seconds",
            "Latest expiry among restorable backups; 0 if none.",
            &|row| Sample::Float(row.restorable_until.get()),
        );
        gauge(
            out,
            "rpod_target_rpo_compliant",
            "1 when a restorable backup is younger than the RPO, as evaluated by rpod; else 0.",
            &|row| Sample::Int(row.compliant.load(Ordering::Relaxed)),
        );
        gauge(
            out,
            "rpod_target_rpo_seconds",
            "The target's declared RPO in seconds.",
            &|row| Sample::Float(row.rpo_seconds.get()),
        );
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.0.contains(['\\', '"', '\n']) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A gauge's value.
enum Sample {
    Float(f64),
    Int(i64),
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Float(value) => Value(*value).fmt(f),
            Self::Int(value) => value.fmt(f),
        }
    }
}

/// A sample value as the text format writes it.
struct Value(f64);

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}
