//! The scheduler on tokio's paused clock with in-process providers: DST, coalescing, catch-up, retries,
//! deadlines, and 5,000 targets without a lost or doubled fire.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rpod::catalog::Catalog;
use rpod::clock::Clock;
use rpod::metrics::Metrics;
use rpod::providers::{BackupOutcome, BackupRequest, Provider, ProviderError};
use rpod::record::{BackupRecord, Status};
use rpod::scheduler::{self, Shared};
use rpod::target::TargetSpec;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Succeed,
    Take(Duration),
    FailTransient,
    FailPermanent,
    Hang,
}

#[derive(Debug)]
struct Fake {
    clock: Clock,
    behaviour: Behaviour,
    calls: Mutex<Vec<(String, DateTime<Utc>)>>,
    cancelled: Mutex<u32>,
}

#[async_trait::async_trait]
impl Provider for Fake {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        let now = self.clock.now();
        self.calls
            .lock()
            .unwrap()
            .push((request.target.clone(), now));
        let ok = |at| BackupOutcome {
            recovery_point: at,
            artifact: request.artifact.clone(),
            size_bytes: Some(0),
            sha256: None,
            sku: None,
            etag: None,
            expires_at: None,
            content: None,
        };
        match self.behaviour {
            Behaviour::Succeed => Ok(ok(now)),
            Behaviour::Take(duration) => tokio::select! {
                () = tokio::time::sleep(duration) => Ok(ok(now)),
                () = request.cancel.cancelled() => Err(ProviderError::cancelled("stopped")),
            },
            Behaviour::FailTransient => Err(ProviderError::transient("Busy", "try again")),
            Behaviour::FailPermanent => Err(ProviderError::permanent("Forbidden", "no access")),
            Behaviour::Hang => {
                request.cancel.cancelled().await;
                *self.cancelled.lock().unwrap() += 1;
                Err(ProviderError::cancelled("stopped"))
            }
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    metrics: Metrics,
    fake: Arc<Fake>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    shared: Shared,
}

fn config(targets: &str) -> String {
    format!("[storage.local]\nkind = \"directory\"\npath = \"/nonexistent\"\n\n{targets}")
}

fn target(name: &str, policy: &str) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\nkind = \"command\"\ncommand = [\"true\"]\nstorage = \"local\"\n[targets.policy]\n{policy}\n"
    )
}

async fn prepare(dir: &Path) -> Catalog {
    Catalog::open(dir).await.unwrap()
}

/// Starts the scheduler at virtual wall time `start` on `toml`, every provider replaced by one fake.
async fn start(
    toml: &str,
    behaviour: Behaviour,
    start: DateTime<Utc>,
    setup: impl AsyncFnOnce(&Catalog),
) -> Harness {
    start_limited(toml, behaviour, start, 64, setup).await
}

/// Like [`start`], with at most `permits` backups running at once.
async fn start_limited(
    toml: &str,
    behaviour: Behaviour,
    start: DateTime<Utc>,
    permits: usize,
    setup: impl AsyncFnOnce(&Catalog),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let catalog = prepare(dir.path()).await;
    setup(&catalog).await;
    // From here on time is virtual; catalog work holds it (see `Clock::hold`).
    tokio::time::pause();
    let config =
        rpod::config::Config::parse(toml, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
    let clock = Clock::starting_at(start);
    let fake = Arc::new(Fake {
        clock: clock.clone(),
        behaviour,
        calls: Mutex::new(Vec::new()),
        cancelled: Mutex::new(0),
    });
    let specs: Vec<TargetSpec> = rpod::app::build_targets(&config, Path::new("test.toml"))
        .unwrap()
        .into_iter()
        .map(|mut spec| {
            spec.provider = fake.clone();
            spec
        })
        .collect();
    let metrics = Metrics::new();
    let shared = Shared::new(catalog.clone(), metrics.clone(), clock, permits);
    let shutdown = CancellationToken::new();
    let (_handle, task) = scheduler::start(
        shared.clone(),
        specs.into_iter().map(Arc::new).collect(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    Harness {
        _dir: dir,
        catalog,
        metrics,
        fake,
        shutdown,
        task,
        shared,
    }
}

impl Harness {
    async fn records(&self, target: &str) -> Vec<BackupRecord> {
        let _hold = self.shared.clock.hold();
        let mut records = self.catalog.backups(Some(target), 100_000).await.unwrap();
        records.reverse();
        records
    }

    fn calls(&self) -> Vec<DateTime<Utc>> {
        self.fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| on_time(*at))
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.shared.tracker.close();
        self.shared.abort.cancel();
        self.shared.tracker.wait().await;
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn advance(duration: Duration) {
    tokio::time::sleep(duration).await;
}

async fn with_restorable_backup(catalog: &Catalog, target: &str, at: DateTime<Utc>) {
    let expires = at + TimeDelta::days(30);
    crate::support::insert_succeeded(catalog, target, at, expires, |id| format!("{target}/{id}"))
        .await;
}

/// Virtual timers resolve to the millisecond: "on time" means within 10 ms.
fn on_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::milliseconds(10)).unwrap()
}

fn scheduled(records: &[BackupRecord]) -> Vec<DateTime<Utc>> {
    records
        .iter()
        .filter(|r| r.trigger == "schedule")
        .map(|r| on_time(r.requested_at))
        .collect()
}

#[tokio::test]
async fn a_slot_in_the_spring_forward_gap_fires_right_after_the_gap() {
    let now = utc("2026-03-29T00:50:00Z"); // 01:50 CET; at 01:00 UTC clocks jump from 02:00 to 03:00.
    let toml = config(&target(
        "t",
        "rpo = \"2d\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Amsterdam\"",
    ));
    let h = start(&toml, Behaviour::Succeed, now, async |c| {
        with_restorable_backup(c, "t", now).await;
    })
    .await;
    advance(Duration::from_mins(20)).await;
    assert_eq!(
        scheduled(&h.records("t").await),
        vec![utc("2026-03-29T01:00:00Z")],
        "02:30 does not exist: 03:00 CEST"
    );
    advance(Duration::from_hours(25)).await;
    assert_eq!(
        scheduled(&h.records("t").await),
        vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")],
        "then 02:30 CEST again"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_ambiguous_slot_in_the_fall_back_hour_fires_once() {
    let now = utc("2026-10-25T00:00:00Z"); // 02:00 CEST; at 01:00 UTC clocks go from 03:00 back to 02:00.
    let toml = config(&target(
        "t",
        "rpo = \"2d\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Amsterdam\"",
    ));
    let h = start(&toml, Behaviour::Succeed, now, async |c| {
        with_restorable_backup(c, "t", now).await;
    })
    .await;
    advance(Duration::from_hours(3)).await;
    assert_eq!(
        scheduled(&h.records("t").await),
        vec![utc("2026-10-25T00:30:00Z")],
        "02:30 CEST only, not 02:30 CET"
    );
    h.stop().await;
}

#[tokio::test]
async fn triggers_during_a_running_backup_are_coalesced() {
    let now = utc("2026-01-01T00:00:00Z");
    let toml = config(&target("t", "rpo = \"1h\"\nschedule = \"* * * * * *\""));
    let h = start(
        &toml,
        Behaviour::Take(Duration::from_millis(4500)),
        now,
        async |_| {},
    )
    .await;
    advance(Duration::from_millis(9900)).await;
    let calls = h.calls();
    assert_eq!(
        calls,
        vec![now, now + TimeDelta::seconds(5)],
        "slots 1-4 coalesced into the running backup"
    );
    let records = h.records("t").await;
    assert_eq!(
        records
            .iter()
            .map(|r| r.trigger.as_str())
            .collect::<Vec<_>>(),
        vec!["rpo", "schedule"]
    );
    assert!(records.iter().all(|r| r.status != Status::Failed));
    h.stop().await;
}

#[tokio::test]
async fn missed_slots_after_downtime_run_once() {
    let now = utc("2026-01-01T12:00:30Z");
    let toml = config(&target("t", "rpo = \"1d\"\nschedule = \"* * * * *\""));
    let h = start(&toml, Behaviour::Succeed, now, async |c| {
        with_restorable_backup(c, "t", now - TimeDelta::minutes(61)).await;
        c.set_last_slot("t", now - TimeDelta::minutes(61))
            .await
            .unwrap();
    })
    .await;
    advance(Duration::from_secs(45)).await;
    let records = h.records("t").await;
    let triggers: Vec<&str> = records.iter().skip(1).map(|r| r.trigger.as_str()).collect();
    assert_eq!(
        triggers,
        vec!["catch_up", "schedule"],
        "60 missed slots, one catch-up, then the 12:01 slot"
    );
    assert_eq!(on_time(records[1].requested_at), now);
    assert_eq!(
        on_time(records[2].requested_at),
        utc("2026-01-01T12:01:00Z")
    );
    let hold = h.shared.clock.hold();
    assert_eq!(
        h.catalog.last_slot("t").await.unwrap(),
        Some(utc("2026-01-01T12:01:00Z"))
    );
    drop(hold);
    h.stop().await;
}

#[tokio::test]
async fn a_failed_attempt_does_not_use_the_slot() {
    let now = utc("2026-01-01T12:00:30Z");
    let toml = config(&target(
        "t",
        "rpo = \"1d\"\nschedule = \"* * * * *\"\nmax_attempts = 1\nretry_max_backoff = \"1h\"",
    ));
    let h = start(&toml, Behaviour::FailTransient, now, async |c| {
        with_restorable_backup(c, "t", now).await;
        c.set_last_slot("t", now).await.unwrap();
    })
    .await;
    advance(Duration::from_secs(45)).await;
    assert_eq!(
        scheduled(&h.records("t").await),
        vec![utc("2026-01-01T12:01:00Z")]
    );
    let hold = h.shared.clock.hold();
    assert_eq!(
        h.catalog.last_slot("t").await.unwrap(),
        Some(now),
        "the failed slot stays unused"
    );
    drop(hold);
    h.stop().await;
}

#[tokio::test]
async fn transient_failures_back_off_up_to_max_attempts_then_cool_down() {
    let now = utc("2026-01-01T00:00:00Z");
    let policy =
        "rpo = \"1h\"\nmax_attempts = 3\nretry_backoff = \"1s\"\nretry_max_backoff = \"4s\"";
    let h = start(
        &config(&target("t", policy)),
        Behaviour::FailTransient,
        now,
        async |_| {},
    )
    .await;
    advance(Duration::from_secs(3) + Duration::from_millis(500)).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0], now, "no restorable backup: at once");
    assert!(
        calls[1] - calls[0] <= TimeDelta::seconds(1),
        "first backoff within 1s"
    );
    assert!(
        calls[2] - calls[1] <= TimeDelta::seconds(2),
        "second backoff within 2s"
    );
    let records = h.records("t").await;
    assert_eq!(
        records.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        records
            .iter()
            .all(|r| r.status == Status::Failed && r.error_code.as_deref() == Some("Busy"))
    );
    advance(Duration::from_secs(3)).await;
    let later = h.calls();
    assert!(
        later.len() == 3 || later[3] - calls[2] >= TimeDelta::seconds(4),
        "cool-down of retry_max_backoff"
    );
    advance(Duration::from_secs(5)).await;
    let later = h.calls();
    assert!(later.len() >= 4, "the watchdog keeps trying within the RPO");
    assert!(later[3] - calls[2] >= TimeDelta::seconds(4));
    assert_eq!(h.records("t").await[3].attempt, 1, "a new chain");
    h.stop().await;
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let now = utc("2026-01-01T00:00:00Z");
    let policy =
        "rpo = \"1h\"\nmax_attempts = 5\nretry_backoff = \"1s\"\nretry_max_backoff = \"1m\"";
    let h = start(
        &config(&target("t", policy)),
        Behaviour::FailPermanent,
        now,
        async |_| {},
    )
    .await;
    advance(Duration::from_secs(30)).await;
    assert_eq!(h.calls().len(), 1);
    let record = &h.records("t").await[0];
    assert_eq!(record.error_code.as_deref(), Some("Forbidden"));
    assert_eq!(record.error_message.as_deref(), Some("no access"));
    let text = h.metrics.render();
    assert!(
        text.contains("rpod_backups_total{outcome=\"failed\",target=\"t\",trigger=\"rpo\"} 1"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_attempt_past_its_deadline_is_cancelled_and_timed_out() {
    let now = utc("2026-01-01T00:00:00Z");
    let policy =
        "rpo = \"1h\"\noperation_timeout = \"5s\"\nmax_attempts = 1\nretry_max_backoff = \"1h\"";
    let h = start(
        &config(&target("t", policy)),
        Behaviour::Hang,
        now,
        async |_| {},
    )
    .await;
    advance(Duration::from_secs(6)).await;
    let records = h.records("t").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::TimedOut);
    assert_eq!(
        records[0].completed_at.map(on_time),
        Some(now + TimeDelta::seconds(5))
    );
    assert_eq!(
        *h.fake.cancelled.lock().unwrap(),
        1,
        "the provider was told to stop"
    );
    let text = h.metrics.render();
    assert!(
        text.contains("rpod_backups_total{outcome=\"timed_out\",target=\"t\",trigger=\"rpo\"} 1"),
        "{text}"
    );
    assert!(text.contains("rpod_target_operation_in_progress{target=\"t\"} 0"));
    h.stop().await;
}

#[tokio::test]
async fn five_thousand_targets_fire_every_slot_exactly_once() {
    const TARGETS: usize = 5000;
    let now = utc("2026-01-01T00:00:05Z");
    let mut toml = config("");
    for i in 0..TARGETS {
        let _ = write!(
            toml,
            "{}",
            target(
                &format!("t{i}"),
                "rpo = \"1d\"\nschedule = \"*/10 * * * * *\""
            )
        );
    }
    let h = start(&toml, Behaviour::Succeed, now, async |_| {}).await;
    advance(Duration::from_secs(30)).await;
    let mut per_target: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    let hold = h.shared.clock.hold();
    let records = h.catalog.backups(None, 1_000_000).await.unwrap();
    for record in records.iter().filter(|r| r.trigger == "schedule") {
        per_target
            .entry(record.target.clone())
            .or_default()
            .push(on_time(record.requested_at));
    }
    assert_eq!(per_target.len(), TARGETS, "every target fired");
    let slots = vec![
        utc("2026-01-01T00:00:10Z"),
        utc("2026-01-01T00:00:20Z"),
        utc("2026-01-01T00:00:30Z"),
    ];
    for (target, mut fires) in per_target {
        fires.sort();
        assert_eq!(fires, slots, "{target}: each slot exactly once, on time");
    }
    assert!(records.iter().all(|r| r.status == Status::Succeeded));
    drop(hold);
    h.stop().await;
}

#[tokio::test]
async fn the_global_limit_caps_concurrent_backups() {
    let now = utc("2026-01-01T00:00:00Z");
    let mut toml = config("");
    for i in 0..5 {
        toml.push_str(&target(&format!("t{i}"), "rpo = \"1d\""));
    }
    let h = start_limited(
        &toml,
        Behaviour::Take(Duration::from_secs(10)),
        now,
        2,
        async |_| {},
    )
    .await;
    advance(Duration::from_secs(25)).await;
    let mut calls = h.calls();
    calls.sort();
    let seconds: Vec<i64> = calls.iter().map(|at| (*at - now).num_seconds()).collect();
    assert_eq!(
        seconds,
        vec![0, 0, 10, 10, 20],
        "two at a time, the rest queued, none lost"
    );
    let text = h.metrics.render();
    assert!(
        text.contains("rpod_dispatch_lateness_seconds_count 5"),
        "{text}"
    );
    h.stop().await;
}
