//! Scale measurements of rpod on the machine it runs on (see docs/performance.md). Not part of the test suite:
//! each measurement runs in its own process so its memory numbers are its own.
//!
//! ```text
//! cargo bench --bench scale -- dispatch [targets=10000] [permits=64] ['schedule=*/20 * * * * *'] [slots=2]
//!                                       [catalog=sqlite|postgres]
//! cargo bench --bench scale -- idle     [targets=10000] [secs=10] [evals=5]
//! cargo bench --bench scale -- daemon   [targets=10000] [secs=60]
//! cargo bench --bench scale -- status   [targets=100] [rows=10000] [runs=7] [catalog=sqlite|postgres]
//! cargo bench --bench scale -- scrape   [targets=10000] [runs=10]
//! cargo bench --bench scale -- tcs      [jobs=10000] [channel=0] [slots=2] [idle_secs=0]
//! cargo bench --bench scale -- micro    [targets=10000]
//! cargo bench --bench scale -- apim     [targets=1000] [permits=1000] [op_secs=2] [retry_after=1] [timeout=300]
//! cargo bench --bench scale -- changes  [targets=1000] [poll=60s] [changes=100] [permits=1000] [op_secs=2]
//!                                       [retry_after=1] [timeout=300]
//! ```
//!
//! Results are printed as plain `name: value` lines, with the load average at the start and the end. With
//! `catalog=postgres` the catalog is on the tests' throw-away PostgreSQL cluster (tests/it/postgres.rs: loopback,
//! fsync off), one database per run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Timelike, Utc};
use rpod::catalog::Catalog;
use rpod::clock::Clock;
use rpod::config::{Config, Schedule};
use rpod::metrics::Metrics;
use rpod::providers::{BackupOutcome, BackupRequest, Provider, ProviderError};
use rpod::record::{BackupRecord, Status, Trigger};
use rpod::scheduler::{self, Shared};
use rpod::target::TargetSpec;
use tokio_util::sync::CancellationToken;

/// Job fires recorded by tokio-cron-scheduler jobs: job index and wall time.
type Fires = Arc<Mutex<Vec<(u32, DateTime<Utc>)>>>;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[allow(dead_code)]
#[path = "../tests/it/postgres.rs"]
mod postgres;

// ---------------------------------------------------------------------------------------------------------------
// Command line and small helpers.

/// `key=value` options after the subcommand.
struct Options(HashMap<String, String>);

impl Options {
    fn parse(args: &[String]) -> Self {
        Self(
            args.iter()
                .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect(),
        )
    }

    fn num(&self, key: &str, default: usize) -> usize {
        self.0
            .get(key)
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    }

    /// A duration written as `60s`, `2m` or plain seconds.
    fn duration(&self, key: &str, default: Duration) -> Duration {
        self.0
            .get(key)
            .and_then(|v| {
                v.parse::<u64>()
                    .map(Duration::from_secs)
                    .ok()
                    .or_else(|| humantime::parse_duration(v).ok())
            })
            .unwrap_or(default)
    }

    fn text(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    // Without a measurement (`cargo bench`, `cargo test --all-targets`) nothing runs: these take minutes.
    let Some(command) = args.first().filter(|a| !a.starts_with('-')).cloned() else {
        eprintln!(
            "usage: cargo bench --bench scale -- <dispatch|idle|daemon|status|scrape|tcs|micro|apim|changes|vm> [key=value ...]"
        );
        return ExitCode::SUCCESS;
    };
    let options = Options::parse(&args[1..]);
    // `log=warn` shows rpod's own warnings and errors (on stderr) during a measurement.
    if let Some(level) = options.0.get("log") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("measurement: {command}");
    // Other work on the machine distorts every number: the load average says whether there was any.
    println!(
        "loadavg_at_start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "cpus: {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let result = runtime.block_on(async {
        match command.as_str() {
            "dispatch" => dispatch(&options).await,
            "idle" => idle(&options).await,
            "daemon" => daemon(&options).await,
            "status" => status(&options).await,
            "scrape" => scrape(&options).await,
            "tcs" => tcs(&options).await,
            "micro" => micro(&options).await,
            "apim" => apim(&options).await,
            "changes" => changes(&options).await,
            "vm" => vm(&options).await,
            other => Err(format!("unknown measurement {other:?}").into()),
        }
    });
    println!(
        "loadavg_at_end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
fn proc_status_kb(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
                .and_then(|l| {
                    l[key.len() + 1..]
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse()
                        .ok()
                })
        })
        .unwrap_or(0)
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// `label: VmRSS … VmHWM …` of process `pid`.
fn print_memory_of(label: &str, pid: &str) {
    println!(
        "{label}: VmRSS {} VmHWM {}",
        mib(proc_status_kb(pid, "VmRSS")),
        mib(proc_status_kb(pid, "VmHWM"))
    );
}

fn print_memory(label: &str) {
    print_memory_of(label, "self");
}

/// CPU time (user + system) of this process, all threads.
fn cpu_self() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let micros = |tv: nix::sys::time::TimeVal| {
        u64::try_from(tv.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(tv.tv_usec()).unwrap_or(0)
    };
    Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
}

/// CPU time (user + system) of another process from `/proc/<pid>/stat` (clock ticks of 10 ms: `USER_HZ` 100).
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after the command name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn summary_line(label: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} min={:.1}ms p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
        values.len(),
        values.first().copied().unwrap_or(f64::NAN) * 1000.0,
        percentile(values, 50.0) * 1000.0,
        percentile(values, 90.0) * 1000.0,
        percentile(values, 99.0) * 1000.0,
        values.last().copied().unwrap_or(f64::NAN) * 1000.0,
    );
}

fn durations_line(label: &str, runs: &[Duration]) {
    let mut values: Vec<f64> = runs.iter().map(Duration::as_secs_f64).collect();
    values.sort_by(f64::total_cmp);
    println!(
        "{label}: runs={} min={:.1}ms median={:.1}ms max={:.1}ms",
        values.len(),
        values.first().copied().unwrap_or(f64::NAN) * 1000.0,
        percentile(&values, 50.0) * 1000.0,
        values.last().copied().unwrap_or(f64::NAN) * 1000.0,
    );
}

async fn sleep_until_wall(at: DateTime<Utc>) {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}

fn name(i: usize) -> String {
    format!("t{i:05}")
}

fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A daily cron slot twelve hours from now: nothing fires during a measurement.
fn far_daily_schedule() -> String {
    format!("0 0 {} * * *", (Utc::now().hour() + 12) % 24)
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration and catalog fixtures.

struct Fixture {
    _dir: tempfile::TempDir,
    state_dir: PathBuf,
    config_path: PathBuf,
    config_text: String,
}

/// A temp dir with `state/`, `storage/` and a configuration of `targets` command targets (`command = ["true"]`).
fn fixture(targets: usize, policy: &str, daemon_extra: &str) -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let storage_dir = dir.path().join("storage");
    std::fs::create_dir_all(&state_dir)?;
    std::fs::create_dir_all(&storage_dir)?;
    let mut text = format!(
        "[daemon]\nstate_dir = {:?}\n{daemon_extra}\n[storage.local]\nkind = \"directory\"\npath = {:?}\n\n",
        state_dir.display().to_string(),
        storage_dir.display().to_string()
    );
    for i in 0..targets {
        let _ = write!(
            text,
            "[[targets]]\nname = \"{}\"\nkind = \"command\"\ncommand = [\"true\"]\nstorage = \"local\"\n\
             [targets.policy]\n{policy}\n\n",
            name(i)
        );
    }
    let config_path = dir.path().join("rpod.toml");
    std::fs::write(&config_path, &text)?;
    Ok(Fixture {
        _dir: dir,
        state_dir,
        config_path,
        config_text: text,
    })
}

/// The catalog a measurement runs on (`catalog=sqlite`, the default, or `catalog=postgres`), the server when it is
/// PostgreSQL, and the `[catalog]` lines a configuration needs to reach it.
struct BenchCatalog {
    catalog: Catalog,
    _server: Option<postgres::Postgres>,
    config: String,
}

async fn bench_catalog(options: &Options, state_dir: &Path) -> Result<BenchCatalog> {
    match options.text("catalog", "sqlite").as_str() {
        "sqlite" => {
            println!("catalog: sqlite");
            Ok(BenchCatalog {
                catalog: Catalog::open(state_dir).await?,
                _server: None,
                config: String::new(),
            })
        }
        "postgres" => {
            let server = postgres::Postgres::start();
            let url = server.database("bench").await;
            println!("catalog: postgres (loopback, fsync off)");
            let catalog = Catalog::open_postgres(&rpod::catalog::PostgresCatalog {
                url: url.clone(),
                password: None,
                ca_file: None,
            })
            .await?;
            Ok(BenchCatalog {
                catalog,
                _server: Some(server),
                config: format!("[catalog]\nurl = {url:?}\n"),
            })
        }
        other => Err(format!("catalog={other}: sqlite or postgres").into()),
    }
}

/// Writes the artifact every record of [`seed_restorable`] names (`{target}/seed.zst`), a few bytes each.
fn write_seed_artifacts(fixture: &Fixture, targets: usize) -> Result<()> {
    let storage = fixture
        .state_dir
        .parent()
        .ok_or("the fixture has no parent directory")?
        .join("storage");
    for i in 0..targets {
        let dir = storage.join(name(i));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("seed.zst"), b"seed")?;
    }
    Ok(())
}

/// One backup record to load, in the catalog's units (Unix milliseconds).
struct Row {
    target: String,
    trigger: &'static str,
    status: &'static str,
    requested_at: i64,
    accepted_at: Option<i64>,
    completed_at: Option<i64>,
    expires_at: Option<i64>,
    artifact: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<&'static str>,
    error_code: Option<&'static str>,
    error_message: Option<&'static str>,
    pruned_at: Option<i64>,
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

impl Row {
    /// The record of a target of `kind` whose backups go to `storage`.
    fn record(self, kind: &str, storage: &str) -> BackupRecord {
        let time = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
        BackupRecord {
            id: 0,
            target: self.target,
            kind: kind.to_owned(),
            trigger: self.trigger.to_owned(),
            status: Status::parse(self.status),
            attempt: 1,
            requested_at: DateTime::from_timestamp_millis(self.requested_at).unwrap_or_default(),
            accepted_at: time(self.accepted_at),
            completed_at: time(self.completed_at),
            expires_at: time(self.expires_at),
            storage: Some(storage.to_owned()),
            artifact: self.artifact,
            size_bytes: self.size_bytes,
            sha256: self.sha256.map(str::to_owned),
            sku: None,
            etag: None,
            error_code: self.error_code.map(str::to_owned),
            error_message: self.error_message.map(str::to_owned),
            first_change_at: None,
            pruned_at: time(self.pruned_at),
            verified_at: None,
            content: None,
            replica: None,
            slot: None,
        }
    }
}

/// Loads rows of one kind of target and one storage through the catalog, in one transaction.
async fn insert_rows(catalog: &Catalog, rows: Vec<Row>, kind: &str, storage: &str) -> Result<()> {
    let records: Vec<BackupRecord> = rows
        .into_iter()
        .map(|row| row.record(kind, storage))
        .collect();
    catalog.load_backups(&records).await?;
    Ok(())
}

/// Gives every target one restorable backup taken an hour before `anchor` (so the RPO watchdog is far away) and
/// marks every slot up to `anchor` as used (so nothing is caught up at start). One transaction.
async fn seed_restorable(catalog: &Catalog, targets: usize, anchor: DateTime<Utc>) -> Result<()> {
    let at = to_ms(anchor - TimeDelta::hours(1));
    let names: Vec<String> = (0..targets).map(name).collect();
    let rows = names
        .iter()
        .map(|n| Row {
            target: n.clone(),
            trigger: "schedule",
            status: "succeeded",
            requested_at: at,
            accepted_at: Some(at),
            completed_at: Some(at + 60_000),
            expires_at: Some(at + 30 * 86_400_000),
            artifact: Some(format!("{n}/seed.zst")),
            size_bytes: Some(1 << 20),
            sha256: Some(SHA),
            error_code: None,
            error_message: None,
            pruned_at: None,
        })
        .collect();
    insert_rows(catalog, rows, "command", "local").await?;
    catalog.set_last_slots(&names, anchor).await?;
    Ok(())
}

/// `rows` backups per target, one every 2 hours up to an hour ago, expiring after 60 hours: about 30 restorable
/// per target; older ones pruned (1 in 500 `missing`); 3 % failed, 1 % timed out. One transaction per target.
async fn seed_history(
    catalog: &Catalog,
    targets: usize,
    rows: usize,
    now: DateTime<Utc>,
) -> Result<()> {
    let newest = to_ms(now) - 3_600_000;
    let names: Vec<String> = (0..targets).map(name).collect();
    for n in &names {
        let mut batch = Vec::with_capacity(rows);
        for j in 0..rows {
            let requested_at = newest - i64::try_from(rows - 1 - j).unwrap_or(0) * 7_200_000;
            let trigger = match j % 50 {
                0 => "rpo",
                25 if j % 1000 == 25 => "manual",
                _ => "schedule",
            };
            let kind = j % 100;
            let row = if kind < 4 {
                Row {
                    target: n.clone(),
                    trigger,
                    status: if kind < 3 { "failed" } else { "timed_out" },
                    requested_at,
                    accepted_at: None,
                    completed_at: Some(requested_at + 120_000),
                    expires_at: None,
                    artifact: None,
                    size_bytes: None,
                    sha256: None,
                    error_code: Some(if kind < 3 { "ExitStatus" } else { "TimedOut" }),
                    error_message: Some(
                        "the command exited with status 1: pg_dump: connection refused",
                    ),
                    pruned_at: None,
                }
            } else {
                let expires_at = requested_at + 60 * 3_600_000;
                let restorable = expires_at > to_ms(now);
                Row {
                    target: n.clone(),
                    trigger,
                    status: if restorable {
                        "succeeded"
                    } else if j % 500 == 7 {
                        "missing"
                    } else {
                        "pruned"
                    },
                    requested_at,
                    accepted_at: Some(requested_at + 1_000),
                    completed_at: Some(requested_at + 300_000),
                    expires_at: Some(expires_at),
                    artifact: Some(format!("{n}/20260101T000000Z-{j}.zst")),
                    size_bytes: Some(734_003_200),
                    sha256: Some(SHA),
                    error_code: None,
                    error_message: None,
                    pruned_at: (!restorable).then_some(expires_at + 15_000),
                }
            };
            batch.push(row);
        }
        insert_rows(catalog, batch, "command", "local").await?;
    }
    catalog
        .set_last_slots(
            &names,
            DateTime::from_timestamp_millis(newest).unwrap_or_default(),
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The in-process provider.

/// Returns at once and records which target it was called for, and when (wall time).
#[derive(Debug, Default)]
struct NoOp {
    calls: Mutex<Vec<(u32, DateTime<Utc>)>>,
}

#[async_trait::async_trait]
impl Provider for NoOp {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn backup(
        &self,
        request: BackupRequest,
    ) -> std::result::Result<BackupOutcome, ProviderError> {
        let now = Utc::now();
        let index = request.target[1..].parse().unwrap_or(u32::MAX);
        self.calls.lock().expect("calls").push((index, now));
        Ok(BackupOutcome {
            recovery_point: now,
            artifact: request.artifact,
            size_bytes: Some(0),
            sha256: None,
            sku: None,
            etag: None,
            expires_at: None,
            content: None,
        })
    }
}

/// Parses and builds the fixture's configuration with every provider replaced by `provider`.
fn build_specs(fixture: &Fixture, provider: &Arc<NoOp>) -> Result<(Config, Vec<TargetSpec>)> {
    let started = Instant::now();
    let config =
        Config::parse(&fixture.config_text, Path::new("bench.toml")).map_err(|e| e.to_string())?;
    let specs = rpod::app::build_targets(&config, Path::new("bench.toml"))
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|mut spec| {
            spec.provider = provider.clone();
            spec
        })
        .collect();
    println!(
        "config_parse_and_build: {} ({} targets)",
        ms(started.elapsed()),
        config.targets.len()
    );
    Ok((config, specs))
}

/// Upper bound of the bucket holding quantile `q` of `rpod_dispatch_lateness_seconds`, from the exposition.
fn histogram_quantiles(text: &str) -> String {
    let mut buckets: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("rpod_dispatch_lateness_seconds_bucket{le=\"")
            && let Some((le, count)) = rest.split_once("\"} ")
        {
            buckets.push((le.to_owned(), count.trim().parse().unwrap_or(0.0)));
        }
    }
    let total = buckets.last().map_or(0.0, |b| b.1);
    let bound = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map_or_else(|| "?".to_owned(), |(le, _)| le.clone())
    };
    let listing: Vec<String> = buckets
        .iter()
        .map(|(le, c)| format!("le={le}:{c}"))
        .collect();
    format!(
        "count={total} p50<={}s p99<={}s buckets[{}]",
        bound(0.5),
        bound(0.99),
        listing.join(" ")
    )
}

// ---------------------------------------------------------------------------------------------------------------
// 1 + 2. Dispatch lateness and memory.

async fn dispatch(options: &Options) -> Result<()> {
    let targets = options.num("targets", 10_000);
    let permits = options.num("permits", 64);
    let slots = options.num("slots", 2);
    let expression = options.text("schedule", "*/20 * * * * *");
    println!("targets: {targets}");
    println!("max_concurrent_operations: {permits}");
    println!("schedule: {expression}");
    print_memory("memory_at_start");
    let fixture = fixture(
        targets,
        &format!("rpo = \"1d\"\nschedule = {expression:?}"),
        "",
    )?;
    let bench = bench_catalog(options, &fixture.state_dir).await?;
    let catalog = bench.catalog.clone();
    let provider = Arc::new(NoOp::default());
    let (config, specs) = build_specs(&fixture, &provider)?;
    print_memory("memory_after_config");
    let schedule: Schedule = config.targets[0]
        .policy
        .schedule
        .clone()
        .ok_or("the targets need a schedule")?;

    // Start right after a slot, so a whole period lies between startup and the first measured slot.
    let boundary = schedule
        .next_after(Utc::now())
        .ok_or("the schedule never fires")?;
    sleep_until_wall(boundary + TimeDelta::milliseconds(100)).await;
    let anchor = Utc::now();
    let seeding = Instant::now();
    seed_restorable(&catalog, targets, anchor).await?;
    println!(
        "seed: {} ({targets} backups + target_state rows, one transaction)",
        ms(seeding.elapsed())
    );

    let metrics = Metrics::new();
    let shared = Shared::new(catalog.clone(), metrics.clone(), Clock::system(), permits);
    let shutdown = CancellationToken::new();
    let cpu_before_start = cpu_self();
    let starting = Instant::now();
    let start_instant = Utc::now();
    let (_handle, task) = scheduler::start(
        shared.clone(),
        specs.into_iter().map(Arc::new).collect(),
        shutdown.clone(),
    )
    .await?;
    let ready = Utc::now();
    // `Schedule::next_after` keeps the sub-second part of the instant it starts from, so the scheduler's slots
    // are the cron boundaries plus the sub-second part of its start time.
    let offset = schedule
        .next_after(start_instant)
        .map_or(TimeDelta::zero(), |s| s - s.trunc_subsecs(0));
    println!(
        "scheduler_slot_offset: slots fire at the cron boundary + {:.3} s (sub-second part of the start time)",
        offset.num_microseconds().unwrap_or(0) as f64 / 1e6
    );
    println!(
        "scheduler_start: {} wall, {} CPU",
        ms(starting.elapsed()),
        ms(cpu_self().saturating_sub(cpu_before_start))
    );
    print_memory("memory_after_startup");
    let early = provider.calls.lock().expect("calls").len();
    println!("provider_calls_during_startup: {early} (expected 0: no catch-up, no watchdog)");

    // The measured slots: the first `slots` after the scheduler is up.
    let mut measured = Vec::new();
    let mut at = ready;
    for _ in 0..=slots {
        at = schedule
            .next_after(at)
            .ok_or("the schedule never fires")?
            .trunc_subsecs(0);
        measured.push(at);
    }
    let after_last = measured.pop().ok_or("no slot")?;
    println!(
        "measured_slots: {}",
        measured
            .iter()
            .map(|s| s.format("%H:%M:%S").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cpu_before = cpu_self();
    for (k, slot) in measured.iter().enumerate() {
        let window_end =
            measured.get(k + 1).copied().unwrap_or(after_last) - TimeDelta::milliseconds(500);
        sleep_until_wall(*slot).await;
        let mut all_called = None;
        let mut all_finished = None;
        loop {
            let called = provider
                .calls
                .lock()
                .expect("calls")
                .iter()
                .filter(|(_, t)| t >= slot)
                .count();
            let now = Utc::now();
            if all_called.is_none() && called >= targets {
                all_called = Some(now - *slot);
            }
            if all_called.is_some() && shared.tracker.is_empty() {
                all_finished = Some(now - *slot);
                break;
            }
            if now >= window_end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let show = |d: Option<TimeDelta>| {
            d.map_or_else(
                || "not within the slot period".to_owned(),
                |d| format!("{d}"),
            )
        };
        println!(
            "slot {}: every provider called after {}; every attempt finished after {}",
            k + 1,
            show(all_called),
            show(all_finished)
        );
    }
    let cpu_used = cpu_self().saturating_sub(cpu_before);
    shutdown.cancel();
    task.await?;
    shared.tracker.close();
    if tokio::time::timeout(Duration::from_mins(1), shared.tracker.wait())
        .await
        .is_err()
    {
        shared.abort.cancel();
        shared.tracker.wait().await;
    }

    // Attribute each target's calls (in order) to the measured slots.
    let calls = provider.calls.lock().expect("calls").clone();
    let mut per_target: Vec<Vec<DateTime<Utc>>> = vec![Vec::new(); targets];
    for (index, at) in &calls {
        if let Some(list) = per_target.get_mut(*index as usize) {
            list.push(*at);
        }
    }
    let mut per_slot: Vec<Vec<f64>> = vec![Vec::new(); measured.len()];
    let mut missing = 0;
    let mut extra = 0;
    for list in &mut per_target {
        list.sort();
        list.retain(|at| *at >= measured[0]);
        missing += measured.len().saturating_sub(list.len());
        extra += list.len().saturating_sub(measured.len());
        for (k, at) in list.iter().take(measured.len()).enumerate() {
            per_slot[k].push((*at - measured[k]).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
    }
    println!(
        "provider_calls: {} in measured slots (expected {}), missing {missing}, extra {extra}",
        per_slot.iter().map(Vec::len).sum::<usize>(),
        targets * measured.len()
    );
    let mut all = Vec::new();
    for (k, values) in per_slot.iter_mut().enumerate() {
        all.extend_from_slice(values);
        summary_line(
            &format!("lateness slot {} (provider call - slot)", k + 1),
            values,
        );
    }
    summary_line("lateness all slots (provider call - slot)", &mut all);
    let offset_secs = offset.num_microseconds().unwrap_or(0) as f64 / 1e6;
    let mut from_due: Vec<f64> = all.iter().map(|l| l - offset_secs).collect();
    summary_line(
        "lateness all slots from the scheduler's due instant (slot + offset)",
        &mut from_due,
    );
    println!(
        "rpod_dispatch_lateness_seconds (attempt start, once its record is written): {}",
        histogram_quantiles(&metrics.render())
    );
    println!(
        "cpu_during_measured_slots: {} for {} attempts ({:.0} us per attempt)",
        ms(cpu_used),
        all.len(),
        cpu_used.as_secs_f64() * 1e6 / all.len().max(1) as f64
    );
    let rows: Vec<(String, String, i64, i64)> = catalog
        .record_counts(0)
        .await?
        .into_iter()
        .map(|c| (c.trigger, c.status, c.attempt, c.count))
        .collect();
    println!(
        "catalog_rows_after (trigger/status/attempt=count): {}",
        rows.iter()
            .map(|(t, s, a, c)| format!("{t}/{s}/{a}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    print_memory("memory_at_end");
    catalog.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Idle CPU and the evaluation pass.

async fn idle(options: &Options) -> Result<()> {
    let targets = options.num("targets", 10_000);
    let window = options.num("secs", 10);
    let evals = options.num("evals", 5);
    let expression = far_daily_schedule();
    println!("targets: {targets}");
    println!("schedule: {expression} (daily, 12 h away)");
    let fixture = fixture(
        targets,
        &format!("rpo = \"1d\"\nschedule = {expression:?}"),
        "",
    )?;
    let bench = bench_catalog(options, &fixture.state_dir).await?;
    let catalog = bench.catalog.clone();
    let provider = Arc::new(NoOp::default());
    let (_config, specs) = build_specs(&fixture, &provider)?;
    seed_restorable(&catalog, targets, Utc::now()).await?;
    let metrics = Metrics::new();
    let shared = Shared::new(catalog.clone(), metrics.clone(), Clock::system(), 64);
    let shutdown = CancellationToken::new();
    let views: Vec<Arc<TargetSpec>> = specs.iter().cloned().map(Arc::new).collect();
    let starting = Instant::now();
    let (_handle, task) = scheduler::start(
        shared.clone(),
        specs.into_iter().map(Arc::new).collect(),
        shutdown.clone(),
    )
    .await?;
    println!("scheduler_start: {}", ms(starting.elapsed()));
    print_memory("memory_after_startup");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let wall = Instant::now();
    let cpu = cpu_self();
    tokio::time::sleep(Duration::from_secs(u64::try_from(window).unwrap_or(10))).await;
    let used = cpu_self().saturating_sub(cpu);
    let elapsed = wall.elapsed();
    println!(
        "idle_scheduler_cpu: {} over {:.1} s = {:.4} % of one core",
        ms(used),
        elapsed.as_secs_f64(),
        used.as_secs_f64() / elapsed.as_secs_f64() * 100.0
    );
    println!(
        "provider_calls_while_idle: {}",
        provider.calls.lock().expect("calls").len()
    );

    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..evals {
        let now = Utc::now();
        let cpu = cpu_self();
        let wall = Instant::now();
        rpod::maintenance::evaluate(&catalog, &metrics, &views, Some(&views), now).await?;
        walls.push(wall.elapsed());
        cpus.push(cpu_self().saturating_sub(cpu));
    }
    durations_line("evaluate_wall", &walls);
    durations_line("evaluate_cpu", &cpus);
    let mut sorted = cpus.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    println!(
        "evaluate_cpu_share_at_15s: {:.3} % of one core (median CPU / 15 s)",
        median.as_secs_f64() / 15.0 * 100.0
    );
    print_memory("memory_at_end");
    shutdown.cancel();
    task.await?;
    catalog.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// The real daemon, idle with 10,000 targets: CPU (evaluation loop included), memory, HTTP.

/// `runs` GETs of `url`, one after the other: how long each took, and the size of the last body.
async fn timed_gets(
    client: &reqwest::Client,
    url: &str,
    runs: usize,
) -> Result<(Vec<Duration>, usize)> {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let body = client.get(url).send().await?.bytes().await?;
        times.push(t.elapsed());
        size = body.len();
    }
    Ok((times, size))
}

async fn daemon(options: &Options) -> Result<()> {
    let targets = options.num("targets", 10_000);
    let secs = options.num("secs", 60);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let expression = far_daily_schedule();
    println!("targets: {targets}");
    println!("schedule: {expression} (daily, 12 h away); evaluation_interval: default (15 s)");
    let fixture = fixture(
        targets,
        &format!("rpo = \"1d\"\nschedule = {expression:?}"),
        &format!("listen = \"127.0.0.1:{port}\"\nmax_concurrent_operations = 64\n"),
    )?;
    let catalog = Catalog::open(&fixture.state_dir).await?;
    seed_restorable(&catalog, targets, Utc::now()).await?;
    catalog.close().await;
    // The artifacts the seeded records name, so the first reconciliation finds every backup where it should be.
    let writing = Instant::now();
    write_seed_artifacts(&fixture, targets)?;
    println!(
        "seed_artifacts: {} ({targets} files)",
        ms(writing.elapsed())
    );

    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpod"))
        .arg("--config")
        .arg(&fixture.config_path)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    loop {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            break;
        }
        if started.elapsed() > Duration::from_mins(5) {
            return Err("the daemon did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid_text = pid.to_string();
    println!("daemon_ready_after: {}", ms(started.elapsed()));
    print_memory_of("daemon_memory_after_startup", &pid_text);
    // The first reconciliation runs right after startup: wait for its end (its own gauge), asking /readyz (which
    // fails when the scheduler's heartbeat is stale) every 100 ms meanwhile.
    let reconciling = Instant::now();
    let (mut samples, mut stale) = (0, 0);
    let cpu_before_reconciliation = cpu_of(pid);
    let reconciled = loop {
        let ready = client.get(format!("{base}/readyz")).send().await?;
        samples += 1;
        if !ready.status().is_success() {
            stale += 1;
        }
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        if value("rpod_last_reconciliation_timestamp_seconds") > 0.0 {
            break value("rpod_reconciliation_duration_seconds");
        }
        if reconciling.elapsed() > Duration::from_mins(10) {
            return Err("the first reconciliation did not end within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "daemon_first_reconciliation: {reconciled:.2} s by its gauge, over after {} from ready; CPU {}; \
         /readyz stale in {stale} of {samples} samples",
        ms(reconciling.elapsed()),
        ms(cpu_of(pid).saturating_sub(cpu_before_reconciliation))
    );
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let running = text
        .lines()
        .filter(|l| l.starts_with("rpod_target_operation_in_progress{") && l.ends_with(" 1"))
        .count();
    println!(
        "daemon_backups_running_after_reconciliation: {running} (expected 0: every backup was found)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    print_memory_of("daemon_memory_idle_before_scrapes", &pid_text);
    let wall = Instant::now();
    let cpu = cpu_of(pid);
    tokio::time::sleep(Duration::from_secs(u64::try_from(secs).unwrap_or(60))).await;
    let used = cpu_of(pid).saturating_sub(cpu);
    println!(
        "daemon_idle_cpu: {} over {:.1} s = {:.3} % of one core (evaluation loop and HTTP server included)",
        ms(used),
        wall.elapsed().as_secs_f64(),
        used.as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0
    );

    let (runs, size) = timed_gets(&client, &format!("{base}/metrics"), 10).await?;
    durations_line("daemon_http_metrics", &runs);
    println!("daemon_http_metrics_body: {size} bytes");
    print_memory_of("daemon_memory_after_10_scrapes", &pid_text);
    let (runs, size) = timed_gets(&client, &format!("{base}/api/v1/targets"), 5).await?;
    durations_line("daemon_http_api_targets", &runs);
    println!("daemon_http_api_targets_body: {size} bytes");
    print_memory_of("daemon_memory_at_end", &pid_text);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    println!("daemon_exit: {status}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 4. `rpod status` over a large catalog.

async fn status(options: &Options) -> Result<()> {
    let targets = options.num("targets", 100);
    let rows = options.num("rows", 10_000);
    let runs = options.num("runs", 7);
    println!("targets: {targets}");
    println!("rows_per_target: {rows} (total {})", targets * rows);
    let probe = tempfile::tempdir()?;
    let bench = bench_catalog(options, probe.path()).await?;
    let fixture = fixture(
        targets,
        "rpo = \"1d\"\nschedule = \"0 0 */2 * * *\"\nexpiry = \"60h\"",
        &bench.config,
    )?;
    let catalog = if bench.config.is_empty() {
        Catalog::open(&fixture.state_dir).await?
    } else {
        bench.catalog.clone()
    };
    let seeding = Instant::now();
    let now = Utc::now();
    seed_history(&catalog, targets, rows, now).await?;
    println!(
        "seed: {} (one transaction per target)",
        ms(seeding.elapsed())
    );
    let mut by_status = std::collections::BTreeMap::<String, i64>::new();
    for count in catalog.record_counts(0).await? {
        *by_status.entry(count.status).or_default() += count.count;
    }
    let mut mix: Vec<(String, i64)> = by_status.into_iter().collect();
    mix.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    println!(
        "status_mix: {}",
        mix.iter()
            .map(|(s, c)| format!("{s}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    catalog.close().await;
    let db = fixture.state_dir.join(rpod::catalog::CATALOG_FILE);
    if let Ok(meta) = std::fs::metadata(&db) {
        println!("catalog_file: {:.1} MiB", meta.len() as f64 / 1_048_576.0);
    }

    let mut times = Vec::new();
    let mut lines = 0;
    for _ in 0..=runs {
        let t = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rpod"))
            .arg("--config")
            .arg(&fixture.config_path)
            .arg("status")
            .output()?;
        times.push(t.elapsed());
        if !output.status.success() {
            return Err(format!(
                "rpod status failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        lines = String::from_utf8_lossy(&output.stdout).lines().count();
    }
    println!("rpod_status_first_run: {}", ms(times[0]));
    durations_line("rpod_status", &times[1..]);
    println!("rpod_status_output_lines: {lines}");

    // Where the time goes, in process, through the same public calls `rpod status` makes: opening the catalog,
    // then one `Catalog::summary` (several queries) per target; and, for comparison, the one grouped query the
    // evaluation pass uses for every target at once.
    let t = Instant::now();
    let catalog = if bench.config.is_empty() {
        Catalog::open(&fixture.state_dir).await?
    } else {
        Catalog::open_postgres_read_only(&rpod::catalog::PostgresCatalog {
            url: bench
                .config
                .split('"')
                .nth(1)
                .ok_or("no catalog url")?
                .to_owned(),
            password: None,
            ca_file: None,
        })
        .await?
    };
    println!("breakdown Catalog::open: {}", ms(t.elapsed()));
    let names: Vec<String> = (0..targets).map(name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = Instant::now();
    let _ = catalog.summaries(&refs, now).await?;
    let took = t.elapsed();
    println!(
        "breakdown Catalog::summaries for every target (what status runs): {} ({:.0} us per target)",
        ms(took),
        took.as_secs_f64() * 1e6 / targets as f64
    );
    let t = Instant::now();
    for i in 0..targets {
        let _ = catalog.summary(&name(i), now).await?;
    }
    let took = t.elapsed();
    println!(
        "breakdown Catalog::summary one target at a time (what status ran before): {} ({:.0} us per target)",
        ms(took),
        took.as_secs_f64() * 1e6 / targets as f64
    );
    let t = Instant::now();
    let all = catalog.restorability(now).await?;
    println!(
        "breakdown Catalog::restorability (one grouped query, {} targets): {}",
        all.len(),
        ms(t.elapsed())
    );
    catalog.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 5. /metrics with 10,000 targets.

async fn scrape(options: &Options) -> Result<()> {
    let targets = options.num("targets", 10_000);
    let runs = options.num("runs", 10);
    println!("targets: {targets}");
    let metrics = Metrics::new();
    let now = Utc::now();
    let registering = Instant::now();
    let triggers = [
        Trigger::Schedule,
        Trigger::Rpo,
        Trigger::Manual,
        Trigger::CatchUp,
    ];
    for i in 0..targets {
        let n = name(i);
        metrics.register_target(&n, "command", 86_400.0, &triggers, true);
        let summary = rpod::record::TargetSummary {
            newest_recovery_point: Some(now - TimeDelta::hours(3)),
            restorable_backups: 30,
            restorable_until: Some(now + TimeDelta::days(29)),
            last_success: Some(now - TimeDelta::hours(3)),
            last_attempt: Some(now - TimeDelta::hours(3)),
        };
        metrics.set_summary(&n, &summary, true);
        metrics.attempt_started(&n, now - TimeDelta::hours(3), 0.002);
        metrics.backup_finished(&n, Trigger::Schedule, "succeeded", 312.0);
    }
    println!("register_targets: {}", ms(registering.elapsed()));
    print_memory("memory_after_register");

    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        body = metrics.render();
        times.push(t.elapsed());
    }
    durations_line("metrics_render", &times);
    println!(
        "metrics_body: {} bytes, {} lines",
        body.len(),
        body.lines().count()
    );

    // The same through the HTTP router on loopback.
    let dir = tempfile::tempdir()?;
    let catalog = Catalog::open(dir.path()).await?;
    let shared = Shared::new(catalog.clone(), metrics.clone(), Clock::system(), 8);
    let heartbeat = shared.heartbeat.clone();
    let shutdown = CancellationToken::new();
    let (handle, task) = scheduler::start(shared, Vec::new(), shutdown.clone()).await?;
    let state = rpod::http::ApiState {
        catalog: catalog.clone(),
        metrics: metrics.clone(),
        scheduler: handle,
        targets: Arc::new(std::sync::RwLock::new(Arc::new(Vec::new()))),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        clock: Clock::system(),
        heartbeat,
        api_token: None,
        pruning: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server_stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, rpod::http::router(state))
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await
    });
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let response = client
            .get(format!("http://{address}/metrics"))
            .send()
            .await?;
        let bytes = response.bytes().await?;
        times.push(t.elapsed());
        size = bytes.len();
    }
    durations_line("http_get_metrics", &times);
    println!("http_metrics_body: {size} bytes");
    print_memory("memory_at_end");
    shutdown.cancel();
    let _ = server.await?;
    task.await?;
    catalog.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// 6. tokio-cron-scheduler 0.15 with one job per target.

async fn tcs(options: &Options) -> Result<()> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let jobs = options.num("jobs", 10_000);
    let channel = options.num("channel", 0);
    let slots = options.num("slots", 2);
    let idle_secs = options.num("idle_secs", 0);
    let expression = if idle_secs > 0 {
        far_daily_schedule()
    } else {
        options.text("schedule", "*/20 * * * * *")
    };
    let period = TimeDelta::seconds(i64::try_from(options.num("period", 20)).unwrap_or(20));
    println!("jobs: {jobs}");
    println!(
        "channel_size: {}",
        if channel == 0 {
            "default (JobScheduler::new(), 200)".to_owned()
        } else {
            channel.to_string()
        }
    );
    println!("schedule: {expression}");
    print_memory("memory_at_start");
    let schedule: Schedule = expression.parse().map_err(|e: String| e)?;
    if idle_secs == 0 {
        let boundary = schedule
            .next_after(Utc::now())
            .ok_or("the schedule never fires")?;
        sleep_until_wall(boundary + TimeDelta::milliseconds(100)).await;
    }
    let scheduler = if channel == 0 {
        JobScheduler::new().await?
    } else {
        JobScheduler::new_with_channel_size(channel).await?
    };
    let fires: Fires = Arc::new(Mutex::new(Vec::with_capacity(jobs * slots)));
    let adding = Instant::now();
    for i in 0..jobs {
        let fires = fires.clone();
        let index = u32::try_from(i)?;
        let job = Job::new_async(expression.as_str(), move |_id, _scheduler| {
            let at = Utc::now();
            fires.lock().expect("fires").push((index, at));
            Box::pin(async {})
        })?;
        scheduler.add(job).await?;
        if adding.elapsed() > Duration::from_mins(2) {
            return Err(format!("adding jobs took over 2 minutes ({i} added)").into());
        }
    }
    println!("add_jobs: {}", ms(adding.elapsed()));
    scheduler.start().await?;
    let ready = Utc::now();
    print_memory("memory_after_startup");

    if idle_secs > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let wall = Instant::now();
        let cpu = cpu_self();
        tokio::time::sleep(Duration::from_secs(u64::try_from(idle_secs).unwrap_or(10))).await;
        let used = cpu_self().saturating_sub(cpu);
        println!(
            "idle_cpu: {} over {:.1} s = {:.3} % of one core",
            ms(used),
            wall.elapsed().as_secs_f64(),
            used.as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0
        );
        print_memory("memory_at_end");
        let mut scheduler = scheduler;
        scheduler.shutdown().await?;
        return Ok(());
    }

    let mut measured = Vec::new();
    let mut at = ready;
    for _ in 0..slots {
        at = schedule
            .next_after(at)
            .ok_or("the schedule never fires")?
            .trunc_subsecs(0);
        measured.push(at);
    }
    println!(
        "measured_slots: {}",
        measured
            .iter()
            .map(|s| s.format("%H:%M:%S").to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let end = measured[measured.len() - 1] + period - TimeDelta::milliseconds(500);
    let cpu = cpu_self();
    sleep_until_wall(end).await;
    let cpu_used = cpu_self().saturating_sub(cpu);
    let recorded = fires.lock().expect("fires").clone();
    let mut scheduler = scheduler;
    let stopping = Instant::now();
    scheduler.shutdown().await?;
    println!("shutdown: {}", ms(stopping.elapsed()));

    // A fire belongs to the latest measured slot at or before it.
    let mut per_slot: Vec<Vec<f64>> = vec![Vec::new(); measured.len()];
    let mut seen: HashMap<(u32, usize), u32> = HashMap::new();
    let mut outside = 0;
    for (index, at) in &recorded {
        match measured.iter().rposition(|s| s <= at) {
            Some(k) => {
                per_slot[k].push((*at - measured[k]).num_microseconds().unwrap_or(0) as f64 / 1e6);
                *seen.entry((*index, k)).or_default() += 1;
            }
            None => outside += 1,
        }
    }
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    let distinct = seen.len();
    let expected = jobs * measured.len();
    println!(
        "fires: {} in measured slots, {distinct} distinct job-slot pairs of {expected} expected: lost {} ({:.1} %), \
         duplicates {duplicates}, before the first slot {outside}",
        per_slot.iter().map(Vec::len).sum::<usize>(),
        expected - distinct,
        (expected - distinct) as f64 * 100.0 / expected as f64
    );
    let mut all = Vec::new();
    for (k, values) in per_slot.iter_mut().enumerate() {
        println!("slot {}: {} fires", k + 1, values.len());
        all.extend_from_slice(values);
        summary_line(
            &format!("lateness slot {} (job call - slot)", k + 1),
            values,
        );
    }
    summary_line("lateness all slots (job call - slot)", &mut all);
    println!("cpu_during_measured_slots: {}", ms(cpu_used));
    print_memory("memory_at_end");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Costs of the per-target steps of one scheduler fire, to explain the dispatch numbers.

async fn micro(options: &Options) -> Result<()> {
    let n = options.num("targets", 10_000);
    let now = Utc::now();
    for expression in ["*/20 * * * * *", "0 */15 * * * *", "30 2 * * *"] {
        for zone in ["UTC", "Europe/Amsterdam"] {
            let schedule = Schedule::parse(expression, rpod::config::parse_timezone(zone)?)?;
            let t = Instant::now();
            let mut at = now;
            for _ in 0..n {
                at = schedule.next_after(now).unwrap_or(at);
            }
            let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            println!("Schedule::next_after({expression:?} in {zone}): {per:.1} us per call ({at})");
        }
    }
    let metrics = Metrics::new();
    let triggers = [
        Trigger::Schedule,
        Trigger::Rpo,
        Trigger::Manual,
        Trigger::CatchUp,
    ];
    let before = proc_status_kb("self", "VmRSS");
    let t = Instant::now();
    for i in 0..n {
        metrics.register_target(&name(i), "command", 86_400.0, &triggers, true);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let grown = proc_status_kb("self", "VmRSS").saturating_sub(before);
    println!(
        "Metrics::register_target: {per:.1} us per target; RSS grew {} for {n} targets ({:.1} KiB per target)",
        mib(grown),
        grown as f64 / n as f64
    );
    let names: Vec<String> = (0..n).map(name).collect();
    let t = Instant::now();
    for n in &names {
        metrics.set_in_progress(n, true);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("Metrics::set_in_progress: {per:.2} us per call with {n} targets registered");
    let mut text = String::new();
    for i in 0..n {
        let _ = write!(
            text,
            "[[targets]]\nname = \"{}\"\nkind = \"command\"\ncommand = [\"true\"]\nstorage = \"local\"\n\
             [targets.policy]\nrpo = \"1d\"\nschedule = \"*/20 * * * * *\"\n\n",
            name(i)
        );
    }
    let text = format!("[storage.local]\nkind = \"directory\"\npath = \"/nonexistent\"\n\n{text}");
    let before = proc_status_kb("self", "VmRSS");
    let t = Instant::now();
    let config = Config::parse(&text, Path::new("bench.toml")).map_err(|e| e.to_string())?;
    let parsed = t.elapsed();
    let after_parse = proc_status_kb("self", "VmRSS");
    let specs =
        rpod::app::build_targets(&config, Path::new("bench.toml")).map_err(|e| e.to_string())?;
    let after_build = proc_status_kb("self", "VmRSS");
    println!(
        "Config::parse: {} for {n} targets ({} bytes of TOML); RSS +{} after parse, +{} after build_targets",
        ms(parsed),
        text.len(),
        mib(after_parse.saturating_sub(before)),
        mib(after_build.saturating_sub(after_parse))
    );
    println!(
        "size_of: TargetConfig {} B, Schedule {} B, TargetSpec {} B",
        std::mem::size_of::<rpod::config::TargetConfig>(),
        std::mem::size_of::<Schedule>(),
        std::mem::size_of::<TargetSpec>()
    );
    let mut copies = Vec::new();
    for copy in 1..=3 {
        let before = proc_status_kb("self", "VmRSS");
        copies.push(
            specs
                .iter()
                .cloned()
                .map(Arc::new)
                .collect::<Vec<Arc<TargetSpec>>>(),
        );
        let grown = proc_status_kb("self", "VmRSS").saturating_sub(before);
        println!(
            "deep copy {copy} of the {n} TargetSpecs (as app::run makes for the HTTP view): RSS +{} ({:.1} KiB per target)",
            mib(grown),
            grown as f64 / n as f64
        );
    }
    drop(copies);
    drop(specs);
    drop(config);

    // One catalog round trip: a primary-key lookup, and a target summary (4 queries), per target.
    let dir = tempfile::tempdir()?;
    let catalog = Catalog::open(dir.path()).await?;
    seed_restorable(&catalog, n, now).await?;
    let cpu = cpu_self();
    let t = Instant::now();
    for name in &names {
        let _ = catalog.last_slot(name).await?;
    }
    println!(
        "Catalog::last_slot (one indexed SELECT): {:.1} us wall, {:.1} us CPU per call",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        cpu_self().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64
    );
    let cpu = cpu_self();
    let t = Instant::now();
    for name in &names {
        let _ = catalog.summary(name, now).await?;
    }
    println!(
        "Catalog::summary (4 SELECTs): {:.1} us wall, {:.1} us CPU per call",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        cpu_self().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64
    );
    let cpu = cpu_self();
    let t = Instant::now();
    for name in &names {
        catalog.set_last_slot(name, now).await?;
    }
    println!(
        "Catalog::set_last_slot (one UPSERT, its own transaction): {:.1} us wall, {:.1} us CPU per call",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        cpu_self().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64
    );
    catalog.close().await;
    print_memory("memory_at_end");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// APIM backups of many services in one subscription against the emulator's ARM token buckets.

const APIM_SUB: &str = "00000000-0000-0000-0000-0000000000aa";
const APIM_RG: &str = "rg-apim";
const APIM_CONTAINER: &str = "apim-backups";
/// ARM's per-subscription buckets as Azure enforces them today: (burst, refill per second).
const ARM_WRITES: (f64, f64) = (200.0, 10.0);
const ARM_READS: (f64, f64) = (250.0, 25.0);

/// Whether a logged request went to ARM (not to the token endpoints).
fn is_arm(request: &azure_emulator::LoggedRequest) -> bool {
    request.path().starts_with("/subscriptions/")
}

fn is_backup_post(request: &azure_emulator::LoggedRequest) -> bool {
    request.method == "POST" && request.path().ends_with("/backup")
}

fn is_poll(request: &azure_emulator::LoggedRequest) -> bool {
    request.method == "GET" && request.path().contains("operationresults")
}

/// Counts of the emulator's ARM requests by kind.
fn print_arm_requests(label: &str, requests: &[azure_emulator::LoggedRequest], backups: usize) {
    let arm: Vec<_> = requests.iter().filter(|r| is_arm(r)).collect();
    let posts = arm.iter().filter(|r| is_backup_post(r)).count();
    let posts_429 = arm
        .iter()
        .filter(|r| is_backup_post(r) && r.status == Some(429))
        .count();
    let polls = arm.iter().filter(|r| is_poll(r)).count();
    let polls_429 = arm
        .iter()
        .filter(|r| is_poll(r) && r.status == Some(429))
        .count();
    let other = arm.len() - posts - polls;
    let throttled = arm.iter().filter(|r| r.status == Some(429)).count();
    println!(
        "{label}: arm_requests={} backup_posts={posts} (429: {posts_429}) polls={polls} (429: {polls_429}) \
         other={other} throttled_429={throttled} per_backup={:.2}",
        arm.len(),
        arm.len() as f64 / backups.max(1) as f64
    );
}

/// `[daemon]`, `[azure]` and `[storage.blob]` of a daemon that backs up the emulator's services to Azurite with
/// the emulator's managed identity.
fn apim_daemon_toml(
    state_dir: &Path,
    permits: usize,
    emulator: &azure_emulator::Emulator,
    azurite: &azure_emulator::Azurite,
    key_path: &Path,
) -> String {
    format!(
        r#"[daemon]
state_dir = {state:?}
listen = "127.0.0.1:0"
shutdown_timeout = "5s"
max_concurrent_operations = {permits}

[azure]
credential = "managed_identity"
resource_manager_endpoint = "{arm}"
min_retry_after = "1s"
request_timeout = "30s"

[storage.blob]
kind = "azure_blob"
account = "{account}"
container = "{APIM_CONTAINER}"
endpoint = "{endpoint}"
access = "managed_identity"
auth = "access_key"
access_key_file = {key:?}

"#,
        state = state_dir.display().to_string(),
        arm = emulator.base_url(),
        account = azurite.account(),
        endpoint = azurite.blob_endpoint(),
        key = key_path.display().to_string(),
    )
}

/// Hosts service `svc-{i}` in the emulator and appends target `name(i)` protecting it (its policy comes from
/// `[defaults.policy]`).
fn add_apim_target(text: &mut String, emulator: &azure_emulator::Emulator, i: usize) {
    let service = apim_service(i);
    emulator.add_service(
        azure_emulator::ServiceSpec::new(APIM_SUB, APIM_RG, &service)
            .with_sku("Premium", 1)
            .with_system_identity(true),
    );
    let _ = write!(
        text,
        "[[targets]]\nname = \"{}\"\nkind = \"apim\"\nsubscription_id = \"{APIM_SUB}\"\n\
         resource_group = \"{APIM_RG}\"\nservice = \"{service}\"\nstorage = \"blob\"\n\n",
        name(i)
    );
}

fn apim_service(i: usize) -> String {
    format!("svc-{i:05}")
}

/// `rpod run` in this process against the Azure emulator: every SDK request stays on loopback, and the managed
/// identity endpoint (IMDS) is the emulator's.
struct EmulatedDaemon {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
    /// The main listener.
    address: std::net::SocketAddr,
}

impl EmulatedDaemon {
    async fn start(config_path: &Path, emulator: &azure_emulator::Emulator) -> Result<Self> {
        let environment = rpod::app::Environment::loopback(
            rpod::azure::transport::LoopbackOnly::transport(vec![(
                "http://169.254.169.254/".into(),
                format!("{}/", emulator.base_url()),
            )]),
        );
        let loading = tokio::time::Instant::now();
        let (config, targets) = rpod::app::load_in(config_path, &environment)?;
        let loaded = loading.elapsed();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let (_reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(rpod::app::run(rpod::app::RunOptions {
            config_path: config_path.to_path_buf(),
            config,
            targets,
            listener,
            webhook_listener: None,
            shutdown: shutdown.clone(),
            reloads,
            clock: rpod::clock::Clock::system(),
            environment,
            lock: None,
            notifier: None,
        }));
        println!("config_load: {}", ms(loaded));
        Ok(Self {
            task,
            shutdown,
            address,
        })
    }

    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Shuts the daemon down and says how it ended.
    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => println!("daemon_error: {err:#}"),
            Ok(Err(err)) => println!("daemon_panicked: {err}"),
            Err(_) => println!("daemon_shutdown: did not stop within 30 s"),
        }
    }
}

/// `targets` API Management services in one subscription, none ever backed up, so the RPO watchdog makes every
/// one due at start. The daemon runs in this process against the emulator, which enforces ARM's write and read
/// buckets, with backups written to Azurite. Measures how long until every backup POST is accepted (202)
/// against the bucket's physical limit, the 429s ARM answered, ARM requests per backup, and peak memory.
async fn apim(options: &Options) -> Result<()> {
    use azure_emulator::{Azurite, Emulator, EmulatorConfig, StorageAccount};

    let n = options.num("targets", 1000);
    let permits = options.num("permits", 1000);
    let op_secs = options.num("op_secs", 2);
    let retry_after = options.num("retry_after", 1);
    let timeout = Duration::from_secs(options.num("timeout", 300) as u64);
    let (burst, refill) = ARM_WRITES;
    // rpod's client-side write bucket keeps a tenth of the burst in reserve (`src/azure/throttle.rs`).
    let own_burst = burst - (burst * 0.1).max(2.0);
    let physical = (n as f64 - burst).max(0.0) / refill;
    let own_floor = (n as f64 - own_burst).max(0.0) / refill;
    println!(
        "setup: targets={n} permits={permits} operation={op_secs}s retry_after={retry_after}s \
         write_bucket={burst}/{refill}/s read_bucket={}/{}/s",
        ARM_READS.0, ARM_READS.1
    );
    println!("physical_limit: ({n} - {burst}) / {refill} = {physical:.1} s");
    println!("rpod_floor_with_headroom: ({n} - {own_burst}) / {refill} = {own_floor:.1} s");

    let azurite = Azurite::start().await?;
    azurite.create_container(APIM_CONTAINER).await?;
    let emulator = Emulator::start(EmulatorConfig {
        write_bucket: Some(ARM_WRITES),
        read_bucket: Some(ARM_READS),
        retry_after_secs: retry_after as u64,
        operation_duration: Duration::from_secs(op_secs as u64),
        ..EmulatorConfig::fast()
    })
    .await?;
    emulator.add_account(StorageAccount::azurite(&azurite));

    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, azurite.key().as_bytes())?;
    let mut text = apim_daemon_toml(&state_dir, permits, &emulator, &azurite, &key_path);
    text.push_str("[defaults.policy]\nrpo = \"1h\"\n\n");
    for i in 0..n {
        add_apim_target(&mut text, &emulator, i);
    }
    let config_path = dir.path().join("rpod.toml");
    std::fs::write(&config_path, &text)?;
    print_memory("memory_before_daemon");

    // Makespan starts when the daemon starts: loading the configuration is part of it.
    let start = tokio::time::Instant::now();
    let daemon = EmulatedDaemon::start(&config_path, &emulator).await?;

    // Every backup accepted: `n` POSTs answered 202.
    let accepted_all = loop {
        let requests = emulator.requests();
        let accepted: Vec<_> = requests
            .iter()
            .filter(|r| is_backup_post(r) && r.status == Some(202))
            .map(|r| r.at)
            .collect();
        if accepted.len() >= n {
            let last = accepted.iter().max().copied().unwrap_or(start);
            let first = accepted.iter().min().copied().unwrap_or(start);
            println!(
                "first_accepted_after: {:.2} s",
                first.saturating_duration_since(start).as_secs_f64()
            );
            let makespan = last.saturating_duration_since(start).as_secs_f64();
            println!(
                "makespan_all_accepted: {makespan:.2} s (physical limit {physical:.1} s, rpod floor \
                 {own_floor:.1} s, {:+.2} s over the rpod floor)",
                makespan - own_floor
            );
            print_arm_requests("arm_until_all_accepted", &requests, n);
            break true;
        }
        if daemon.is_finished() || start.elapsed() > timeout {
            println!(
                "timed_out: {} of {n} accepted after {:.1} s",
                accepted.len(),
                start.elapsed().as_secs_f64()
            );
            print_arm_requests("arm_at_timeout", &requests, n);
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    print_memory("memory_all_accepted");

    // Then every operation polled to completion (a poll answered 200), for the whole cost of a backup.
    if accepted_all {
        loop {
            let requests = emulator.requests();
            let done = requests
                .iter()
                .filter(|r| is_poll(r) && r.status == Some(200))
                .count();
            if done >= n || start.elapsed() > timeout {
                println!(
                    "all_operations_polled_to_completion: {done} of {n} after {:.2} s",
                    start.elapsed().as_secs_f64()
                );
                print_arm_requests("arm_until_all_completed", &requests, n);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!("emulator_throttled_count: {}", emulator.throttled_count());
    print_memory("memory_at_end");
    println!(
        "peak_rss_process: {} (daemon, emulator and bench in one process; Azurite is a separate process)",
        mib(proc_status_kb("self", "VmHWM"))
    );

    daemon.stop().await;
    if accepted_all {
        Ok(())
    } else {
        Err("not every backup was accepted in time".into())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Change detection (`on_change = { detect = "sync_state" }`) of many services in one subscription.

/// What an ARM request in the emulator's log was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArmCall {
    /// `GET .../tenant/configuration/syncState` (the first read of a change poll).
    SyncState,
    /// `GET` of the service resource (the second read of a change poll).
    GetService,
    /// `POST .../backup`.
    BackupPost,
    /// `GET .../operationresults/{id}` (polling a backup).
    OperationPoll,
    /// Any other ARM request.
    Other,
}

/// The service a request names (`.../service/{name}/...`).
fn service_of(request: &azure_emulator::LoggedRequest) -> Option<&str> {
    let (_, rest) = request.path().split_once("/service/")?;
    rest.split('/').next().filter(|s| !s.is_empty())
}

/// One ARM request of the emulator's log, in seconds since `start`.
struct Call {
    at: f64,
    kind: ArmCall,
    service: String,
    status: Option<u16>,
}

fn arm_calls(requests: &[azure_emulator::LoggedRequest], start: tokio::time::Instant) -> Vec<Call> {
    requests
        .iter()
        .filter(|r| is_arm(r))
        .map(|r| {
            let path = r.path();
            let service = service_of(r).unwrap_or_default();
            let kind = if r.method == "GET" && path.ends_with("/tenant/configuration/syncState") {
                ArmCall::SyncState
            } else if is_backup_post(r) {
                ArmCall::BackupPost
            } else if is_poll(r) {
                ArmCall::OperationPoll
            } else if r.method == "GET" && !service.is_empty() && path.ends_with(service) {
                ArmCall::GetService
            } else {
                ArmCall::Other
            };
            Call {
                at: r.at.saturating_duration_since(start).as_secs_f64(),
                kind,
                service: service.to_owned(),
                status: r.status,
            }
        })
        .collect()
}

fn is_change_read(call: &Call) -> bool {
    matches!(call.kind, ArmCall::SyncState | ArmCall::GetService)
}

/// Requests matching `keep` per `step` seconds in `[from, to)`, as `from+: count` entries.
fn timeline(calls: &[Call], keep: fn(&Call) -> bool, from: f64, to: f64, step: f64) -> String {
    let mut out = String::new();
    let mut at = from;
    while at < to {
        let end = (at + step).min(to);
        let count = calls
            .iter()
            .filter(|c| keep(c) && c.at >= at && c.at < end)
            .count();
        let _ = write!(
            out,
            "{}{at:.0}s+:{count}",
            if out.is_empty() { "" } else { " " }
        );
        at = end;
    }
    out
}

/// min, p50, p90 and max of values in seconds.
fn seconds_line(label: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} min={:.2}s p50={:.2}s p90={:.2}s max={:.2}s",
        values.len(),
        values.first().copied().unwrap_or(f64::NAN),
        percentile(values, 50.0),
        percentile(values, 90.0),
        values.last().copied().unwrap_or(f64::NAN),
    );
}

/// CPU time (user + system) of this process, split by thread: the emulator's runtime (threads named
/// `emulator`), the main thread (the bench's own loop), and the rest, which is the daemon (its Tokio workers and
/// blocking threads, and the `SQLite` workers of sqlx). Threads that have exited count in the process total only, so
/// they fall to the daemon; the emulator's workers never exit.
#[derive(Debug, Clone, Copy)]
struct CpuSplit {
    wall: Instant,
    process: Duration,
    emulator: Duration,
    main: Duration,
}

impl CpuSplit {
    fn now() -> Self {
        let main_tid = std::process::id().to_string();
        let (mut emulator, mut main) = (Duration::ZERO, Duration::ZERO);
        for entry in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let tid = entry.file_name().to_string_lossy().into_owned();
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let comm = stat
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map_or("", |(comm, _)| comm);
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = [11, 12]
                .iter()
                .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
                .sum();
            let cpu = Duration::from_millis(ticks * 10);
            if tid == main_tid {
                main += cpu;
            } else if comm.starts_with("emulator") {
                emulator += cpu;
            }
        }
        Self {
            wall: Instant::now(),
            process: cpu_self(),
            emulator,
            main,
        }
    }

    fn daemon(&self) -> Duration {
        self.process
            .saturating_sub(self.emulator)
            .saturating_sub(self.main)
    }

    /// Prints the CPU used since `earlier`.
    fn print_since(&self, label: &str, earlier: &Self) {
        let wall = self.wall.duration_since(earlier.wall).as_secs_f64();
        let daemon = self.daemon().saturating_sub(earlier.daemon());
        let emulator = self.emulator.saturating_sub(earlier.emulator);
        let process = self.process.saturating_sub(earlier.process);
        println!(
            "{label}: daemon {} over {wall:.1} s = {:.2} % of one core (emulator {}, whole process {})",
            ms(daemon),
            daemon.as_secs_f64() / wall * 100.0,
            ms(emulator),
            ms(process),
        );
    }
}

/// The emulator's own runtime, so that its CPU time can be told apart from the daemon's. Shut down without
/// blocking when dropped (dropping a runtime inside another one would panic).
struct EmulatorRuntime(Option<tokio::runtime::Runtime>);

impl Drop for EmulatorRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The sum of a metric's series in a Prometheus text exposition, of those whose line contains `filter`.
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Gives every target one restorable backup accepted two minutes before `now` (so `rpo = "1h"` holds for the
/// whole measurement and the RPO watchdog starts nothing) and returns the artifact names, which must exist in
/// storage: reconciliation at startup marks a backup whose artifact is missing as `missing`.
async fn seed_apim_backups(
    catalog: &Catalog,
    targets: usize,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let at = now - TimeDelta::minutes(2);
    let stamp = at.format("%Y%m%dT%H%M%SZ");
    let at = to_ms(at);
    let artifacts: Vec<String> = (0..targets)
        .map(|i| format!("{}/{stamp}-{}.apimbackup", name(i), i + 1))
        .collect();
    let rows = artifacts
        .iter()
        .enumerate()
        .map(|(i, artifact)| Row {
            target: name(i),
            trigger: "schedule",
            status: "succeeded",
            requested_at: at,
            accepted_at: Some(at + 1_000),
            completed_at: Some(at + 60_000),
            expires_at: Some(at + 30 * 86_400_000),
            artifact: Some(artifact.clone()),
            size_bytes: Some(4),
            sha256: None,
            error_code: None,
            error_message: None,
            pruned_at: None,
        })
        .collect();
    insert_rows(catalog, rows, "apim", "blob").await?;
    Ok(artifacts)
}

/// `targets` API Management services in one subscription, each with a recent restorable backup, polled for
/// changes (`detect = "sync_state"`) every `poll`. The daemon runs in this process against the emulator (on a
/// runtime of its own), which enforces ARM's read and write buckets; backups go to Azurite.
///
/// Phase A (steady polling): from the start until one `poll` after every service was first read. Reports the
/// change-poll reads per second once the first round is over, each target's effective poll interval, 429s,
/// backups started (none: nothing changed), the daemon's CPU and peak memory.
///
/// Phase B (reaction): `changes` services change at once. Reports, per changed service, the time from the change
/// to the poll that saw it and to its backup POST (answered 202), and checks that exactly one backup was
/// requested per changed service, none for the others, and that ARM answered no 429.
async fn changes(options: &Options) -> Result<()> {
    use azure_emulator::{Azurite, Emulator, EmulatorConfig, StorageAccount};
    use futures::StreamExt as _;

    let n = options.num("targets", 1000);
    let poll = options.duration("poll", Duration::from_mins(1));
    let m = options.num("changes", 100).min(n);
    let permits = options.num("permits", 1000);
    let op_secs = options.num("op_secs", 2);
    let retry_after = options.num("retry_after", 1);
    let timeout = Duration::from_secs(options.num("timeout", 300) as u64);
    let quiet = Duration::from_secs(5);
    let poll_s = poll.as_secs_f64();
    let (read_burst, read_rate) = ARM_READS;
    println!(
        "setup: targets={n} poll_interval={} quiet_period=5s max_delay=30s min_interval=0s changes={m} \
         permits={permits} operation={op_secs}s retry_after={retry_after}s write_bucket={}/{}/s \
         read_bucket={read_burst}/{read_rate}/s",
        humantime::format_duration(poll),
        ARM_WRITES.0,
        ARM_WRITES.1,
    );
    println!(
        "poll_demand: 2 reads x {n} targets / {poll_s:.0} s = {:.1} reads/s against a refill of {read_rate}/s \
         (rpod keeps {:.0} of the {read_burst} burst in reserve)",
        2.0 * n as f64 / poll_s,
        (read_burst * 0.1).max(2.0),
    );

    let azurite = Azurite::start().await?;
    azurite.create_container(APIM_CONTAINER).await?;
    let emulator_runtime = EmulatorRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("emulator")
            .enable_all()
            .build()?,
    ));
    let emulator = emulator_runtime
        .0
        .as_ref()
        .ok_or("no emulator runtime")?
        .spawn(Emulator::start(EmulatorConfig {
            write_bucket: Some(ARM_WRITES),
            read_bucket: Some(ARM_READS),
            retry_after_secs: retry_after as u64,
            operation_duration: Duration::from_secs(op_secs as u64),
            ..EmulatorConfig::fast()
        }))
        .await??;
    emulator.add_account(StorageAccount::azurite(&azurite));

    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let key_path = dir.path().join("key");
    std::fs::write(&key_path, azurite.key().as_bytes())?;
    let mut text = apim_daemon_toml(&state_dir, permits, &emulator, &azurite, &key_path);
    let _ = write!(
        text,
        "[defaults.policy]\nrpo = \"1h\"\non_change = {{ detect = \"sync_state\", poll_interval = \"{}\", \
         quiet_period = \"5s\", max_delay = \"30s\", min_interval = \"0s\" }}\n\n",
        humantime::format_duration(poll)
    );
    for i in 0..n {
        add_apim_target(&mut text, &emulator, i);
    }
    let config_path = dir.path().join("rpod.toml");
    std::fs::write(&config_path, &text)?;

    // Every target compliant with its RPO, and its artifact in storage.
    let catalog = Catalog::open(&state_dir).await?;
    let artifacts = seed_apim_backups(&catalog, n, Utc::now()).await?;
    catalog.close().await;
    let uploads: Vec<_> = futures::stream::iter(artifacts.iter())
        .map(|artifact| azurite.put_blob(APIM_CONTAINER, artifact, b"seed".to_vec()))
        .buffer_unordered(32)
        .collect()
        .await;
    uploads
        .into_iter()
        .collect::<std::result::Result<Vec<()>, _>>()?;
    println!("seeded: {n} restorable backups accepted 2 min ago, artifacts in Azurite");
    print_memory("memory_before_daemon");

    let cpu_start = CpuSplit::now();
    let start = tokio::time::Instant::now();
    let daemon = EmulatedDaemon::start(&config_path, &emulator).await?;
    let http = daemon.address;

    // Phase A. The first round ends when every service has been read once.
    let (round_end, cpu_round) = loop {
        let requests = emulator.requests();
        let mut first: HashMap<String, f64> = HashMap::new();
        for call in arm_calls(&requests, start) {
            if call.kind == ArmCall::GetService && call.status == Some(200) {
                first.entry(call.service).or_insert(call.at);
            }
        }
        if first.len() >= n {
            break (first.values().copied().fold(0.0, f64::max), CpuSplit::now());
        }
        if daemon.is_finished() || start.elapsed() > timeout {
            return Err(format!(
                "the first round of polls did not finish: {} of {n} services read after {:.1} s",
                first.len(),
                start.elapsed().as_secs_f64()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let a_end = round_end + poll_s;
    tokio::time::sleep_until(start + Duration::from_secs_f64(a_end)).await;
    let cpu_a = CpuSplit::now();
    let requests = emulator.requests();
    let calls = arm_calls(&requests, start);
    let mut failures: Vec<String> = Vec::new();

    println!(
        "phase_a: 0 s .. {a_end:.1} s (first round until {round_end:.1} s, then one poll interval)"
    );
    let first_round = calls
        .iter()
        .filter(|c| is_change_read(c) && c.at <= round_end)
        .count();
    println!(
        "phase_a_first_round: {first_round} reads in {round_end:.1} s = {:.1} reads/s (burst, then the refill)",
        first_round as f64 / round_end
    );
    let in_steady = |c: &&Call| c.at > round_end && c.at <= a_end;
    let sync = calls
        .iter()
        .filter(in_steady)
        .filter(|c| c.kind == ArmCall::SyncState)
        .count();
    let service = calls
        .iter()
        .filter(in_steady)
        .filter(|c| c.kind == ArmCall::GetService)
        .count();
    let other = calls
        .iter()
        .filter(in_steady)
        .filter(|c| !is_change_read(c))
        .count();
    println!(
        "phase_a_steady: {round_end:.1} s .. {a_end:.1} s: sync_state={sync} get_service={service} other_arm={other} \
         = {:.2} change-poll reads/s ({:.2} polls/s)",
        (sync + service) as f64 / poll_s,
        sync as f64 / poll_s,
    );
    println!(
        "phase_a_reads_per_10s: {}",
        timeline(&calls, is_change_read, 0.0, a_end, 10.0)
    );
    // Each target's effective poll interval: from one sync state read to the next.
    let mut poll_times: HashMap<&str, Vec<f64>> = HashMap::new();
    for call in calls.iter().filter(|c| c.kind == ArmCall::SyncState) {
        poll_times
            .entry(call.service.as_str())
            .or_default()
            .push(call.at);
    }
    let mut intervals: Vec<f64> = poll_times
        .values()
        .flat_map(|times| times.windows(2).map(|w| w[1] - w[0]))
        .collect();
    println!(
        "phase_a_polls_per_target: {} targets polled twice or more, {} once",
        poll_times.values().filter(|t| t.len() >= 2).count(),
        poll_times.values().filter(|t| t.len() == 1).count()
    );
    seconds_line("phase_a_effective_poll_interval", &mut intervals);
    let throttled_a = calls.iter().filter(|c| c.status == Some(429)).count();
    let posts_a = calls
        .iter()
        .filter(|c| c.kind == ArmCall::BackupPost)
        .count();
    println!("phase_a_429: {throttled_a}");
    println!("phase_a_backup_posts: {posts_a}");
    if throttled_a > 0 {
        failures.push(format!("phase A: {throttled_a} requests answered 429"));
    }
    if posts_a > 0 {
        failures.push(format!(
            "phase A: {posts_a} backups POSTed while nothing changed"
        ));
    }
    cpu_a.print_since("phase_a_cpu_whole", &cpu_start);
    cpu_a.print_since("phase_a_cpu_steady", &cpu_round);
    print_memory("memory_after_phase_a");

    // Phase B. `m` services spread over the list change at once.
    let changed: Vec<String> = (0..m).map(|k| apim_service(k * n / m)).collect();
    let mut changed_at: HashMap<&str, f64> = HashMap::new();
    let b_start = start.elapsed().as_secs_f64();
    let cpu_b_start = CpuSplit::now();
    for service in &changed {
        emulator.make_change(APIM_SUB, APIM_RG, service);
        changed_at.insert(service.as_str(), start.elapsed().as_secs_f64());
    }
    println!(
        "phase_b: {m} services changed at {b_start:.1} s (all within {} of each other)",
        ms(Duration::from_secs_f64(
            changed_at.values().copied().fold(0.0, f64::max) - b_start
        ))
    );
    // Until every changed service's backup is accepted, its operation completed, and the poll after it (which
    // must take the backup's own etag move for its own) plus a quiet period has passed without a follow-up.
    let b_deadline = start + Duration::from_secs_f64(b_start) + timeout;
    let (calls, settled) = loop {
        let requests = emulator.requests();
        let calls = arm_calls(&requests, start);
        let mut settle_at = Some(0.0_f64);
        for service in &changed {
            let since = changed_at[service.as_str()];
            let done = calls
                .iter()
                .filter(|c| {
                    c.kind == ArmCall::OperationPoll
                        && c.status == Some(200)
                        && c.service == *service
                        && c.at >= since
                })
                .map(|c| c.at)
                .next();
            let polled_after = done.and_then(|done| {
                calls
                    .iter()
                    .find(|c| {
                        c.kind == ArmCall::GetService && c.service == *service && c.at >= done + 1.0
                    })
                    .map(|c| c.at)
            });
            settle_at = match (settle_at, polled_after) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        let now = start.elapsed().as_secs_f64();
        if let Some(at) = settle_at
            && now >= at + quiet.as_secs_f64() + 3.0
        {
            break (calls, true);
        }
        if daemon.is_finished() || tokio::time::Instant::now() > b_deadline {
            break (calls, false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cpu_b = CpuSplit::now();
    let b_end = start.elapsed().as_secs_f64();
    if !settled {
        failures.push(format!(
            "phase B did not settle within {} s",
            timeout.as_secs()
        ));
    }
    let in_b = |c: &&Call| c.at >= b_start;
    let mut detect = Vec::new();
    let mut reaction = Vec::new();
    let mut after_seen = Vec::new();
    let mut missing = 0;
    // Changed services whose detecting poll read the service before the change and the sync state after it (rpod
    // reads the service first): that poll sees `configurationChangeDate` move with the old etag, and the etag move
    // reaches the next poll, where it must not count as a second change.
    let mut straddled: Vec<&str> = Vec::new();
    for service in &changed {
        let since = changed_at[service.as_str()];
        let seen = calls
            .iter()
            .find(|c| c.kind == ArmCall::SyncState && c.service == *service && c.at >= since)
            .map(|c| c.at);
        let service_read = seen.and_then(|seen| {
            calls
                .iter()
                .rev()
                .find(|c| c.kind == ArmCall::GetService && c.service == *service && c.at <= seen)
                .map(|c| c.at)
        });
        if service_read.is_some_and(|at| at < since) {
            straddled.push(service.as_str());
        }
        let post = calls
            .iter()
            .find(|c| {
                c.kind == ArmCall::BackupPost
                    && c.status == Some(202)
                    && c.service == *service
                    && c.at >= since
            })
            .map(|c| c.at);
        match (seen, post) {
            (Some(seen), Some(post)) => {
                detect.push(seen - since);
                reaction.push(post - since);
                after_seen.push(post - seen);
            }
            _ => missing += 1,
        }
    }
    println!(
        "phase_b_expected_bound: poll_interval {poll_s:.0} s + quiet_period {:.0} s + pacing",
        quiet.as_secs_f64()
    );
    seconds_line("phase_b_change_to_poll_that_saw_it", &mut detect);
    seconds_line("phase_b_poll_to_backup_post", &mut after_seen);
    seconds_line("phase_b_change_to_backup_post_202", &mut reaction);
    let mut posts: HashMap<&str, usize> = HashMap::new();
    for call in calls
        .iter()
        .filter(in_b)
        .filter(|c| c.kind == ArmCall::BackupPost)
    {
        *posts.entry(call.service.as_str()).or_default() += 1;
    }
    let posts_changed: usize = changed
        .iter()
        .map(|s| posts.get(s.as_str()).copied().unwrap_or(0))
        .sum();
    let posts_total: usize = posts.values().sum();
    let posts_unchanged = posts_total - posts_changed;
    let twice = changed
        .iter()
        .filter(|s| posts.get(s.as_str()).copied().unwrap_or(0) > 1)
        .count();
    println!(
        "phase_b_backup_posts: {posts_total} ({posts_changed} for the {m} changed services, {twice} of them more \
         than once; {posts_unchanged} for unchanged services; {missing} changed services without a 202)"
    );
    let twice_straddled = straddled
        .iter()
        .filter(|s| posts.get(**s).copied().unwrap_or(0) > 1)
        .count();
    println!(
        "phase_b_detecting_poll_straddled_the_change: {} of {m} (service read before the change, sync state \
         after it); {twice_straddled} of the {twice} services backed up more than once are among them",
        straddled.len()
    );
    if posts_changed != m || twice > 0 || posts_unchanged > 0 || missing > 0 {
        failures.push(format!(
            "phase B: expected exactly one backup POST per changed service ({m}), got {posts_changed} for them \
             and {posts_unchanged} for the others"
        ));
    }
    let throttled_b = calls
        .iter()
        .filter(in_b)
        .filter(|c| c.status == Some(429))
        .count();
    println!("phase_b_429: {throttled_b}");
    if throttled_b > 0 {
        failures.push(format!("phase B: {throttled_b} requests answered 429"));
    }
    let b_secs = b_end - b_start;
    let reads_b = calls
        .iter()
        .filter(in_b)
        .filter(|c| is_change_read(c))
        .count();
    let op_polls_b = calls
        .iter()
        .filter(in_b)
        .filter(|c| c.kind == ArmCall::OperationPoll)
        .count();
    println!(
        "phase_b_reads: {b_start:.1} s .. {b_end:.1} s: change-poll reads={reads_b} ({:.2}/s) operation polls={op_polls_b}",
        reads_b as f64 / b_secs
    );
    println!(
        "phase_b_reads_per_10s: {}",
        timeline(&calls, is_change_read, b_start, b_end, 10.0)
    );
    // Once the first round's queue has drained: from one sync state read to the next, over the whole run.
    let mut poll_times: HashMap<&str, Vec<f64>> = HashMap::new();
    for call in calls
        .iter()
        .filter(|c| c.kind == ArmCall::SyncState && c.at > round_end)
    {
        poll_times
            .entry(call.service.as_str())
            .or_default()
            .push(call.at);
    }
    let mut intervals: Vec<f64> = poll_times
        .values()
        .flat_map(|times| times.windows(2).map(|w| w[1] - w[0]))
        .collect();
    seconds_line(
        "effective_poll_interval_after_the_first_round",
        &mut intervals,
    );
    cpu_b.print_since("phase_b_cpu", &cpu_b_start);
    println!("emulator_throttled_count: {}", emulator.throttled_count());

    let body = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    println!(
        "metrics: rpod_change_events_total={} rpod_change_poll_errors_total={} \
         rpod_backups_total{{trigger=\"change\"}}={}",
        metric_sum(&body, "rpod_change_events_total", ""),
        metric_sum(&body, "rpod_change_poll_errors_total", ""),
        metric_sum(&body, "rpod_backups_total", "trigger=\"change\""),
    );
    print_memory("memory_at_end");
    println!(
        "peak_rss_process: {} (daemon, emulator and bench in one process; Azurite is a separate process)",
        mib(proc_status_kb("self", "VmHWM"))
    );

    daemon.stop().await;
    // What the catalog recorded besides the seeded backups.
    let catalog = Catalog::open(&state_dir).await?;
    let mut by_outcome = std::collections::BTreeMap::<(String, String), i64>::new();
    for count in catalog.record_counts(i64::try_from(n)?).await? {
        *by_outcome.entry((count.trigger, count.status)).or_default() += count.count;
    }
    let rows: Vec<(String, String, i64)> = by_outcome
        .into_iter()
        .map(|((trigger, status), count)| (trigger, status, count))
        .collect();
    catalog.close().await;
    let recorded: Vec<String> = rows
        .iter()
        .map(|(trigger, status, count)| format!("{trigger}/{status}={count}"))
        .collect();
    println!("catalog_backups_after_seed: {}", recorded.join(" "));
    let other_triggers: i64 = rows
        .iter()
        .filter(|(trigger, _, _)| trigger != "change")
        .map(|(_, _, count)| count)
        .sum();
    if other_triggers > 0 {
        failures.push(format!(
            "{other_triggers} backups with a trigger other than change"
        ));
    }
    drop(emulator_runtime);
    if failures.is_empty() {
        println!("checks: ok");
        Ok(())
    } else {
        for failure in &failures {
            println!("check_failed: {failure}");
        }
        Err(failures.join("; ").into())
    }
}

/// `targets` Azure VMs in one subscription (one vault), each with a fresh recovery point of the vault's own policy.
/// The daemon runs in this process against the emulator, which enforces ARM's read bucket, and reconciles every
/// target twice at start (once before scheduling, once in the first evaluation pass): each reconciliation reads
/// the protected item and lists its recovery points. Measures how long the two rounds take against the bucket's
/// physical limit, the 429s ARM answered, and that no on-demand backup was needed.
async fn vm(options: &Options) -> Result<()> {
    use azure_emulator::{Emulator, EmulatorConfig, ProtectedVmSpec};

    let n = options.num("targets", 500);
    let timeout = Duration::from_secs(options.num("timeout", 600) as u64);
    let (burst, refill) = ARM_READS;
    let reads = 2.0 * 2.0 * n as f64;
    println!(
        "setup: targets={n} reads_per_target_per_round=2 rounds=2 read_bucket={burst}/{refill}/s"
    );
    println!(
        "physical_limit: ({reads} - {burst}) / {refill} = {:.1} s",
        (reads - burst).max(0.0) / refill
    );
    let emulator = Emulator::start(EmulatorConfig {
        write_bucket: Some(ARM_WRITES),
        read_bucket: Some(ARM_READS),
        ..EmulatorConfig::fast()
    })
    .await?;
    let now = emulator.now();
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir)?;
    let mut text = format!(
        "[daemon]\nstate_dir = {:?}\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\nreconcile_interval = \"1h\"\n\n\
         [azure]\ncredential = \"managed_identity\"\nresource_manager_endpoint = \"{}\"\nmin_retry_after = \"1s\"\n\
         request_timeout = \"30s\"\n\n[defaults.policy]\nrpo = \"24h\"\n\n",
        state_dir.display().to_string(),
        emulator.base_url()
    );
    for i in 0..n {
        let vm = format!("vm-{i:05}");
        let spec = ProtectedVmSpec::new(APIM_SUB, "rg-vault", "vault-bench", "rg-vm", &vm);
        emulator.add_protected_vm(spec.clone());
        emulator.add_policy_recovery_point(
            &spec.reference(),
            now - chrono::TimeDelta::hours(1),
            now + chrono::TimeDelta::days(30),
        );
        let _ = write!(
            text,
            "[[targets]]\nname = \"{vm}\"\nkind = \"recovery_services_vm\"\nsubscription_id = \"{APIM_SUB}\"\n\
             vault_resource_group = \"rg-vault\"\nvault = \"vault-bench\"\nvm_resource_group = \"rg-vm\"\n\
             vm = \"{vm}\"\n\n"
        );
    }
    let config_path = dir.path().join("rpod.toml");
    std::fs::write(&config_path, &text)?;
    let start = tokio::time::Instant::now();
    let daemon = EmulatedDaemon::start(&config_path, &emulator).await?;
    let listings = |requests: &[azure_emulator::LoggedRequest]| {
        requests
            .iter()
            .filter(|r| {
                r.status == Some(200) && r.path().to_ascii_lowercase().ends_with("/recoverypoints")
            })
            .count()
    };
    loop {
        let requests = emulator.requests();
        if listings(&requests) >= 2 * n {
            println!(
                "two_rounds_reconciled_after: {:.2} s",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        if daemon.is_finished() || start.elapsed() > timeout {
            println!(
                "timed_out: {} of {} listings after {:.1} s",
                listings(&requests),
                2 * n,
                start.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = emulator.requests();
    let arm: Vec<_> = requests.iter().filter(|r| is_arm(r)).collect();
    println!(
        "arm_requests: {} (429: {}, POST: {})",
        arm.len(),
        arm.iter().filter(|r| r.status == Some(429)).count(),
        arm.iter().filter(|r| r.method == "POST").count()
    );
    print_memory("memory_after");
    daemon.stop().await;
    Ok(())
}
