//! Replicas on a PostgreSQL catalog, measured against one replica on `SQLite` (docs/performance.md, "Replicas on
//! PostgreSQL"). Not part of the test suite; `cargo bench --bench replicas` runs three configurations of the real
//! binary (`rpod --config FILE run`, child processes) on command targets scheduled every ten seconds:
//!
//! - `sqlite-1`: one replica, the `SQLite` catalog in its state directory;
//! - `postgres-1`: one replica on a PostgreSQL catalog;
//! - `postgres-3`: three replicas sharing that catalog, the targets spread over them by their leases.
//!
//! ```text
//! cargo bench --bench replicas -- [--targets 1000] [--window 40] [--permits 64] [--only sqlite-1,postgres-3]
//! ```
//!
//! Run without options and without `cargo bench` (`cargo test --benches`), it only prints its usage.
//!
//! For each configuration it starts the replicas, waits until the targets are spread (every target held, no
//! replica above its share plus 10 %, as `GET /api/v1/replicas` says) and one full cycle of the schedule has run,
//! then measures a window that starts half a period after a slot:
//!
//! - dispatch lateness (`rpod_dispatch_lateness_seconds`): the histograms of all replicas, scraped at the start
//!   and the end of the window, subtracted and merged; quantiles are bounded by the histogram's buckets. The same
//!   lateness exactly, from the records: `requested_at` minus the slot;
//! - backups completed in the window, and every schedule slot of the window that did not run;
//! - on PostgreSQL, statements the server executed for rpod's database in the window (`pg_stat_statements`,
//!   reset at the start, `BEGIN` and `COMMIT` included) per backup completed: the catalog round trips a backup
//!   costs, lease renewals and evaluation passes included;
//! - CPU of the replicas (with the commands they ran) and of the PostgreSQL server, and the busy time of the whole
//!   machine, so that other work on it shows;
//! - over the whole run, whether a (target, slot) ran twice.
//!
//! The PostgreSQL server is the tests' throw-away cluster (tests/it/postgres.rs), restarted once with
//! `pg_stat_statements` preloaded. Results print as plain `name: value` lines, then one line per configuration.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rpod::catalog::{Catalog, PostgresCatalog};
use rpod::record::{BackupRecord, Status};

// What of the harness this bench does not use (`dir`) is dead code here.
#[allow(dead_code)]
#[path = "../tests/it/postgres.rs"]
mod postgres;

use postgres::Postgres;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The targets' schedule, and its period.
const SCHEDULE: &str = "*/10 * * * * *";
const PERIOD_SECS: i64 = 10;

// ---------------------------------------------------------------------------------------------------------------
// Command line.

struct Options {
    targets: usize,
    window: Duration,
    permits: usize,
    only: Option<Vec<String>>,
}

const USAGE: &str = "usage: cargo bench --bench replicas -- [--targets 1000] [--window 40] [--permits 64] \
                     [--only sqlite-1,postgres-1,postgres-3]";

impl Options {
    /// `--name value` or `--name=value`.
    fn parse(args: &[String]) -> std::result::Result<Self, String> {
        let mut options = Self {
            targets: 1000,
            window: Duration::from_secs(40),
            permits: 64,
            only: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((key, value)) => (key, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| format!("{key} needs a value"))
            };
            let number = |text: String| {
                text.replace('_', "")
                    .parse::<usize>()
                    .map_err(|_| format!("{key}: not a number: {text}"))
            };
            match key {
                "--targets" => options.targets = number(value()?)?,
                "--window" => options.window = Duration::from_secs(number(value()?)? as u64),
                "--permits" => options.permits = number(value()?)?,
                "--only" => {
                    options.only = Some(value()?.split(',').map(str::to_owned).collect());
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if options.targets == 0 || options.window.is_zero() || options.permits == 0 {
            return Err("--targets, --window and --permits must be positive".to_owned());
        }
        Ok(options)
    }

    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == name))
    }

    fn command(&self) -> String {
        let mut text = format!(
            "cargo bench --bench replicas -- --targets {} --window {}",
            self.targets,
            self.window.as_secs()
        );
        if self.permits != 64 {
            let _ = write!(text, " --permits {}", self.permits);
        }
        if let Some(only) = &self.only {
            let _ = write!(text, " --only {}", only.join(","));
        }
        text
    }
}

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing. This takes minutes: only on purpose.
    let benched = all.iter().any(|a| a == "--bench");
    let args: Vec<String> = all.into_iter().filter(|a| a != "--bench").collect();
    if !benched && args.is_empty() {
        eprintln!("{USAGE}\n(runs under `cargo bench` only, or with options)");
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("command: {}", options.command());
    println!(
        "setup: targets={} kind=command command=[\"echo\", \"state\"] schedule={SCHEDULE:?} window={} s \
         max_concurrent_operations={} evaluation_interval=1s lease=15s",
        options.targets,
        options.window.as_secs(),
        options.permits
    );
    println!(
        "cpus: {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!("loadavg_at_start: {}", loadavg());
    let started = Instant::now();
    let result = runtime.block_on(run(&options));
    println!("loadavg_at_end: {}", loadavg());
    println!("total_time: {:.0} s", started.elapsed().as_secs_f64());
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("checks: FAILED (see check_failed lines)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Runs every configuration asked for; `false` when a check failed (a doubled or missing slot).
async fn run(options: &Options) -> Result<bool> {
    let mut results = Vec::new();
    if options.wants("sqlite-1") {
        results.push(measure(options, "sqlite-1", 1, None).await?);
    }
    let needs_postgres = options.wants("postgres-1") || options.wants("postgres-3");
    let server = if needs_postgres {
        Some(Server::start().await?)
    } else {
        None
    };
    if let Some(server) = &server {
        for (name, replicas) in [("postgres-1", 1), ("postgres-3", 3)] {
            if options.wants(name) {
                results.push(measure(options, name, replicas, Some(server)).await?);
            }
        }
    }
    println!();
    println!("command: {}", options.command());
    for result in &results {
        println!("{}", result.line());
    }
    let mut ok = true;
    for result in &results {
        for failure in &result.failures {
            println!("check_failed: {}: {failure}", result.name);
            ok = false;
        }
    }
    if ok {
        println!("checks: ok (no slot ran twice, none of the window's slots was missed)");
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------------------------------------------
// The PostgreSQL server, with pg_stat_statements.

struct Server {
    postgres: Postgres,
    /// The superuser on database `postgres`, where the statistics are read (not counted: other database).
    admin: sqlx::PgPool,
}

impl Server {
    /// The throw-away cluster, restarted once so that `pg_stat_statements` is preloaded.
    async fn start() -> Result<Self> {
        let mut postgres = Postgres::start();
        let admin = sqlx::PgPool::connect(&postgres.url()).await?;
        // Written to postgresql.auto.conf, which the restart reads; the harness's own settings stay as they are.
        sqlx::query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            .execute(&admin)
            .await?;
        admin.close().await;
        postgres.stop();
        postgres.start_again();
        let admin = sqlx::PgPool::connect(&postgres.url()).await?;
        // BEGIN, COMMIT and the like are round trips too (on by default; said explicitly).
        for statement in [
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
            "ALTER SYSTEM SET pg_stat_statements.track_utility = on",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(statement).execute(&admin).await?;
        }
        let (version,): (String,) = sqlx::query_as("SHOW server_version")
            .fetch_one(&admin)
            .await?;
        let (utility,): (String,) = sqlx::query_as("SHOW pg_stat_statements.track_utility")
            .fetch_one(&admin)
            .await?;
        let (track,): (String,) = sqlx::query_as("SHOW pg_stat_statements.track")
            .fetch_one(&admin)
            .await?;
        println!(
            "postgres: version {version}, fsync=off synchronous_commit=off (the test harness), loopback only; \
             pg_stat_statements track={track} track_utility={utility}"
        );
        Ok(Self { postgres, admin })
    }

    /// CPU time of the server: the postmaster with the children it reaped, plus its live children (backends).
    fn cpu(&self) -> Duration {
        let postmaster = self.postgres.pid();
        let mut ticks = proc_ticks(postmaster, true);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.filter_map(std::result::Result::ok) {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if parent_of(pid) == Some(postmaster) {
                    ticks += proc_ticks(pid, false);
                }
            }
        }
        Duration::from_millis(ticks * 10)
    }

    async fn reset_statements(&self) -> Result<()> {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&self.admin)
            .await?;
        Ok(())
    }

    /// Statements executed for `database` since the reset, and the most frequent ones.
    async fn statements(&self, database: &str) -> Result<(i64, Vec<(i64, String)>, i64)> {
        let (calls,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(SUM(s.calls), 0)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
        )
        .bind(database)
        .fetch_one(&self.admin)
        .await?;
        let top: Vec<(i64, String)> = sqlx::query_as(
            "SELECT s.calls::bigint, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110)
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = $1 ORDER BY s.calls DESC LIMIT 20",
        )
        .bind(database)
        .fetch_all(&self.admin)
        .await?;
        // Entries evicted since the reset (more distinct statements than pg_stat_statements.max) would be lost.
        let (evicted,): (i64,) = sqlx::query_as("SELECT dealloc FROM pg_stat_statements_info")
            .fetch_one(&self.admin)
            .await?;
        Ok((calls, top, evicted))
    }
}

/// Busy and total CPU time of the whole machine, all cores (`/proc/stat`), in clock ticks.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already counted in user).
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy, busy + at(3) + at(4))
}

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 10)
}

/// utime + stime of a process (and cutime + cstime, its reaped children, when `children`), in clock ticks.
fn proc_ticks(pid: i32, children: bool) -> u64 {
    let fields = stat_fields(pid);
    // After the command name: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    let wanted: &[usize] = if children {
        &[11, 12, 13, 14]
    } else {
        &[11, 12]
    };
    wanted
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum()
}

fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid).get(1)?.parse().ok()
}

/// Fields of `/proc/<pid>/stat` after the command name (which is in parentheses and may contain spaces).
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------------
// Replicas: child processes of the built binary.

/// What a replica logged at warning level or above, and its last lines.
#[derive(Default)]
struct Log {
    warnings: usize,
    errors: usize,
    first_problems: Vec<String>,
    recent: VecDeque<String>,
}

struct Replica {
    name: String,
    child: Child,
    address: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Replica {
    fn start(name: &str, config: &Path) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpod"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let value = serde_json::from_str::<serde_json::Value>(&line).ok();
                if let Some(address) = value
                    .as_ref()
                    .and_then(|v| v.get("address"))
                    .and_then(|a| a.as_str())
                {
                    let _ = tx.send(address.to_owned());
                }
                let level = value
                    .as_ref()
                    .and_then(|v| v.get("level"))
                    .and_then(|l| l.as_str())
                    .unwrap_or("")
                    .to_owned();
                let mut log = sink.lock().expect("log lock");
                match level.as_str() {
                    "WARN" => log.warnings += 1,
                    "ERROR" => log.errors += 1,
                    _ => {}
                }
                if matches!(level.as_str(), "WARN" | "ERROR") && log.first_problems.len() < 5 {
                    log.first_problems.push(line.clone());
                }
                log.recent.push_back(line);
                if log.recent.len() > 20 {
                    log.recent.pop_front();
                }
            }
        });
        let Ok(address) = rx.recv_timeout(Duration::from_mins(1)) else {
            let _ = child.kill();
            let _ = child.wait();
            let recent: Vec<String> = log
                .lock()
                .expect("log lock")
                .recent
                .iter()
                .cloned()
                .collect();
            return Err(format!("replica {name} did not start: {recent:#?}").into());
        };
        Ok(Self {
            name: name.to_owned(),
            child,
            address: address.parse()?,
            log,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    /// CPU of the replica and of the commands it ran (reaped children).
    fn cpu(&self) -> Duration {
        Duration::from_millis(proc_ticks(self.pid(), true) * 10)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM to every replica, then waits for each (they drain and give their leases back).
fn stop_all(replicas: &mut [Replica]) -> Vec<String> {
    for replica in replicas.iter() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(replica.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let mut exits = Vec::new();
    for replica in replicas.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match replica.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break None,
            }
        };
        exits.push(match status {
            Some(status) => format!("{}: {status}", replica.name),
            None => format!("{}: did not stop within 30 s of SIGTERM", replica.name),
        });
    }
    exits
}

fn replica_config(
    dir: &Path,
    name: &str,
    catalog_url: Option<&str>,
    permits: usize,
    targets: &str,
) -> Result<PathBuf> {
    let state = dir.join(name);
    std::fs::create_dir_all(&state)?;
    let catalog = catalog_url.map_or_else(String::new, |url| {
        format!("[catalog]\nurl = \"{url}\"\nlease = \"15s\"\n\n")
    });
    let text = format!(
        "[daemon]\nstate_dir = {state:?}\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\nreplica_id = \"{name}\"\n\
         evaluation_interval = \"1s\"\nshutdown_timeout = \"5s\"\nmax_concurrent_operations = {permits}\n\n\
         {catalog}[storage.local]\nkind = \"directory\"\npath = {backups:?}\n\n{targets}",
        state = state.display().to_string(),
        backups = dir.join("backups").display().to_string(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn targets_toml(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        let _ = write!(
            text,
            "[[targets]]\nname = \"t{i:04}\"\nkind = \"command\"\ncommand = [\"echo\", \"state\"]\n\
             storage = \"local\"\n[targets.policy]\nrpo = \"1d\"\nschedule = \"{SCHEDULE}\"\n\n"
        );
    }
    text
}

// ---------------------------------------------------------------------------------------------------------------
// The lateness histogram.

/// `rpod_dispatch_lateness_seconds`: cumulative bucket counts by upper bound, and the observation count.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
}

impl Histogram {
    fn parse(text: &str) -> Self {
        let mut histogram = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("rpod_dispatch_lateness_seconds_bucket{") {
                let Some((labels, value)) = rest.split_once("} ") else {
                    continue;
                };
                let le = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("le=\""))
                    .map(|l| l.trim_end_matches('"'));
                let bound = match le {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::NAN),
                    None => continue,
                };
                histogram
                    .buckets
                    .push((bound, value.trim().parse().unwrap_or(0.0)));
            } else if let Some(value) = line.strip_prefix("rpod_dispatch_lateness_seconds_count ") {
                histogram.count = value.trim().parse().unwrap_or(0.0);
            }
        }
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        histogram
    }

    /// `self` plus `end` minus `start` (the same buckets in all three).
    fn add_difference(&mut self, start: &Self, end: &Self) {
        if self.buckets.is_empty() {
            self.buckets = end.buckets.iter().map(|(le, _)| (*le, 0.0)).collect();
        }
        for (i, (le, count)) in end.buckets.iter().enumerate() {
            let before = start
                .buckets
                .iter()
                .find(|(l, _)| l.to_bits() == le.to_bits())
                .map_or(0.0, |(_, c)| *c);
            if let Some(slot) = self.buckets.get_mut(i) {
                slot.1 += count - before;
            }
        }
        self.count += end.count - start.count;
    }

    /// The bucket holding quantile `q`: (lower bound, upper bound).
    fn quantile(&self, q: f64) -> Option<(f64, f64)> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let mut lower = 0.0;
        for (le, count) in &self.buckets {
            if *count >= q * total {
                return Some((lower, *le));
            }
            lower = *le;
        }
        None
    }

    fn describe_quantile(&self, q: f64) -> String {
        match self.quantile(q) {
            Some((lower, upper)) if upper.is_infinite() => format!("> {lower} s"),
            Some((lower, upper)) => format!("<= {upper} s (bucket {lower}-{upper} s)"),
            None => "n/a".to_owned(),
        }
    }

    fn short_quantile(&self, q: f64) -> String {
        match self.quantile(q) {
            Some((lower, upper)) if upper.is_infinite() => format!(">{lower}s"),
            Some((_, upper)) => format!("<={upper}s"),
            None => "n/a".to_owned(),
        }
    }

    fn listing(&self) -> String {
        let mut below = 0.0;
        self.buckets
            .iter()
            .map(|(le, count)| {
                let within = count - below;
                below = *count;
                format!("le={le}:{within}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn scrape(client: &reqwest::Client, replicas: &[Replica]) -> Result<Vec<String>> {
    let mut bodies = Vec::new();
    for replica in replicas {
        bodies.push(
            client
                .get(replica.url("/metrics"))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?,
        );
    }
    Ok(bodies)
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

// ---------------------------------------------------------------------------------------------------------------
// One configuration.

struct Outcome {
    name: String,
    window_secs: f64,
    backups: usize,
    expected: usize,
    missing: usize,
    doubled: usize,
    lateness: Histogram,
    /// p50 and p99 of `requested_at - slot` over the window's slots.
    exact: (f64, f64),
    statements_per_backup: Option<f64>,
    cpu_replicas: Duration,
    cpu_postgres: Option<Duration>,
    failures: Vec<String>,
}

impl Outcome {
    fn line(&self) -> String {
        let per_backup = self
            .statements_per_backup
            .map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1}"));
        let pg_cpu = self.cpu_postgres.map_or_else(String::new, |c| {
            format!(" + postgres {:.1} s", c.as_secs_f64())
        });
        format!(
            "result {}: backups_in_window={} (slots due {}, missed {}) in {:.1} s = {:.1}/s; lateness p50 {} p99 {} \
             (bucket-bounded, n={}; from the records {:.2}s / {:.2}s); statements_per_backup={per_backup}; doubled_slots={}; cpu: replicas {:.1} s{pg_cpu}",
            self.name,
            self.backups,
            self.expected,
            self.missing,
            self.window_secs,
            self.backups as f64 / self.window_secs,
            self.lateness.short_quantile(0.5),
            self.lateness.short_quantile(0.99),
            self.lateness.count,
            self.exact.0,
            self.exact.1,
            self.doubled,
            self.cpu_replicas.as_secs_f64(),
        )
    }
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

/// Next instant after `at` that is a whole multiple of the schedule's period.
fn next_slot(at: DateTime<Utc>) -> DateTime<Utc> {
    let secs = at.timestamp().div_euclid(PERIOD_SECS) * PERIOD_SECS + PERIOD_SECS;
    DateTime::from_timestamp(secs, 0).unwrap_or(at)
}

async fn sleep_until_wall(at: DateTime<Utc>) {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}

/// Waits until every replica is up and the targets are spread: `n` replicas, every target held, none above its
/// share plus 10 % (the lease keeper's rule). On `SQLite`, until the replica is ready.
async fn wait_spread(
    client: &reqwest::Client,
    replicas: &[Replica],
    targets: usize,
    postgres: bool,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_mins(2);
    let n = replicas.len();
    let share = targets.div_ceil(n);
    let most = share + share / 10;
    let mut last = String::new();
    loop {
        if postgres {
            if let Ok(response) = client.get(replicas[0].url("/api/v1/replicas")).send().await
                && let Ok(view) = response.json::<serde_json::Value>().await
                && let Some(list) = view.as_array()
            {
                let held: Vec<(String, usize)> = list
                    .iter()
                    .map(|r| {
                        (
                            r["replica"].as_str().unwrap_or("?").to_owned(),
                            r["leases"].as_array().map_or(0, Vec::len),
                        )
                    })
                    .collect();
                last = held
                    .iter()
                    .map(|(r, h)| format!("{r}={h}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                if held.len() == n
                    && held.iter().map(|(_, h)| h).sum::<usize>() == targets
                    && held.iter().all(|(_, h)| *h <= most)
                {
                    return Ok(last);
                }
            }
        } else if let Ok(response) = client.get(replicas[0].url("/readyz")).send().await
            && response.status().is_success()
        {
            return Ok("ready".to_owned());
        }
        if Instant::now() > deadline {
            return Err(format!("targets not spread within 2 minutes: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn measure(
    options: &Options,
    name: &str,
    count: usize,
    server: Option<&Server>,
) -> Result<Outcome> {
    println!();
    println!(
        "== {name}: {count} replica(s), {} catalog",
        if server.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!("{name}_loadavg_at_start: {}", loadavg());
    let dir = tempfile::tempdir()?;
    let database = format!("bench_{}", name.replace('-', "_"));
    let url = match server {
        Some(server) => Some(server.postgres.database(&database).await),
        None => None,
    };
    // The storage directory exists from the start (reconciliation at start lists it).
    std::fs::create_dir_all(dir.path().join("backups"))?;
    let targets = targets_toml(options.targets);
    let begun = Utc::now();
    let clock = Instant::now();
    let mut replicas = Vec::new();
    for i in 1..=count {
        let replica = format!("r{i}");
        let config = replica_config(
            dir.path(),
            &replica,
            url.as_deref(),
            options.permits,
            &targets,
        )?;
        replicas.push(Replica::start(&replica, &config)?);
    }
    println!(
        "{name}_listening_after: {:.1} s",
        clock.elapsed().as_secs_f64()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let spread = wait_spread(&client, &replicas, options.targets, server.is_some()).await?;
    let spread_at = Utc::now();
    println!(
        "{name}_spread_after: {:.1} s ({spread})",
        clock.elapsed().as_secs_f64()
    );

    // One full cycle after the spread (the first slot after it runs whole), then the window starts half a period
    // into the next cycle, so that it holds whole cycles: each slot's attempts fall in the window.
    let first = next_slot(spread_at);
    let window_start = first + TimeDelta::seconds(PERIOD_SECS + PERIOD_SECS / 2);
    let window = TimeDelta::from_std(options.window)?;
    sleep_until_wall(window_start).await;

    let before = scrape(&client, &replicas).await?;
    if let Some(server) = server {
        server.reset_statements().await?;
    }
    let started = Utc::now();
    let wall = Instant::now();
    let cpu_before: Vec<Duration> = replicas.iter().map(Replica::cpu).collect();
    let pg_cpu_before = server.map(Server::cpu);
    let machine_before = machine_ticks();
    let own = || {
        ticks(proc_ticks(
            i32::try_from(std::process::id()).unwrap_or(0),
            false,
        ))
    };
    let bench_before = own();
    sleep_until_wall(started + window).await;
    let statements = match server {
        Some(server) => Some(server.statements(&database).await?),
        None => None,
    };
    let pg_cpu = server
        .zip(pg_cpu_before)
        .map(|(server, before)| server.cpu().saturating_sub(before));
    let cpu_replicas: Duration = replicas
        .iter()
        .zip(&cpu_before)
        .map(|(r, before)| r.cpu().saturating_sub(*before))
        .sum();
    let machine_after = machine_ticks();
    let bench_cpu = own().saturating_sub(bench_before);
    let after = scrape(&client, &replicas).await?;
    let ended = Utc::now();
    let window_secs = wall.elapsed().as_secs_f64();
    println!(
        "{name}_window: {} .. {} ({window_secs:.1} s; started {:.1} s after the spread)",
        started.format("%H:%M:%S%.3f"),
        ended.format("%H:%M:%S%.3f"),
        (started - spread_at).as_seconds_f64()
    );

    let mut lateness = Histogram::default();
    for (body_before, body_after) in before.iter().zip(&after) {
        lateness.add_difference(
            &Histogram::parse(body_before),
            &Histogram::parse(body_after),
        );
    }
    let leases_end: Vec<String> = replicas
        .iter()
        .zip(&after)
        .map(|(r, body)| {
            format!(
                "{}={}",
                r.name,
                gauge(body, "rpod_replica_leases")
                    .map_or_else(|| "-".to_owned(), |v| v.to_string())
            )
        })
        .collect();
    println!("{name}_leases_at_window_end: {}", leases_end.join(" "));
    println!(
        "{name}_lateness: n={} p50 {} p99 {}",
        lateness.count,
        lateness.describe_quantile(0.5),
        lateness.describe_quantile(0.99)
    );
    println!("{name}_lateness_buckets: {}", lateness.listing());
    println!(
        "{name}_cpu_in_window: replicas {:.2} s ({:.0} % of one core; the commands they ran included){}",
        cpu_replicas.as_secs_f64(),
        cpu_replicas.as_secs_f64() / window_secs * 100.0,
        pg_cpu.map_or_else(String::new, |c| format!(
            ", postgres {:.2} s ({:.0} %)",
            c.as_secs_f64(),
            c.as_secs_f64() / window_secs * 100.0
        ))
    );
    // Whatever else ran on the machine meanwhile: busy CPU that was none of ours.
    let busy = ticks(machine_after.0.saturating_sub(machine_before.0));
    let capacity = ticks(machine_after.1.saturating_sub(machine_before.1));
    let others = busy
        .saturating_sub(cpu_replicas)
        .saturating_sub(pg_cpu.unwrap_or_default())
        .saturating_sub(bench_cpu);
    println!(
        "{name}_machine_cpu_in_window: busy {:.1} s of {:.1} s (all cores); replicas, PostgreSQL and this bench \
         {:.1} s; other processes about {:.1} s",
        busy.as_secs_f64(),
        capacity.as_secs_f64(),
        busy.saturating_sub(others).as_secs_f64(),
        others.as_secs_f64()
    );
    println!("{name}_loadavg_at_window_end: {}", loadavg());

    let exits = stop_all(&mut replicas);
    println!("{name}_exit: {}", exits.join(", "));
    for replica in &replicas {
        let log = replica.log.lock().expect("log lock");
        println!(
            "{name}_log_{}: {} warnings, {} errors",
            replica.name, log.warnings, log.errors
        );
        for line in &log.first_problems {
            println!("{name}_log_{}_problem: {line}", replica.name);
        }
    }

    // What the catalog recorded.
    let catalog = match &url {
        Some(url) => {
            Catalog::open_postgres(&PostgresCatalog {
                url: url.clone(),
                password: None,
                ca_file: None,
            })
            .await?
        }
        None => Catalog::open(&dir.path().join("r1")).await?,
    };
    let records = catalog.backups(None, 10_000_000).await?;
    catalog.close().await;
    let records: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| r.requested_at >= begun - TimeDelta::seconds(1))
        .collect();
    let in_window = |at: Option<DateTime<Utc>>| at.is_some_and(|at| at >= started && at < ended);
    let completed: Vec<&&BackupRecord> = records
        .iter()
        .filter(|r| in_window(r.completed_at))
        .collect();
    let backups = completed.len();
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_replica: BTreeMap<String, usize> = BTreeMap::new();
    for record in &completed {
        *by_outcome
            .entry(format!("{}/{}", record.trigger, record.status.as_str()))
            .or_default() += 1;
        *by_replica
            .entry(record.replica.clone().unwrap_or_else(|| "-".to_owned()))
            .or_default() += 1;
    }
    let join = |map: &BTreeMap<String, usize>| {
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{name}_backups_completed_in_window: {backups} ({}; by replica: {})",
        join(&by_outcome),
        join(&by_replica)
    );
    let succeeded = completed
        .iter()
        .filter(|r| r.status == Status::Succeeded)
        .count();
    let mut failures = Vec::new();
    if succeeded != backups {
        failures.push(format!(
            "{} of {backups} backups in the window did not succeed",
            backups - succeeded
        ));
    }

    // Every (target, slot), over the whole run.
    let mut slots: BTreeMap<(&str, DateTime<Utc>), Vec<&BackupRecord>> = BTreeMap::new();
    for record in &records {
        if let Some(slot) = record.slot {
            slots
                .entry((record.target.as_str(), slot))
                .or_default()
                .push(record);
        }
    }
    let doubled: Vec<_> = slots.iter().filter(|(_, runs)| runs.len() > 1).collect();
    println!(
        "{name}_slots_recorded_whole_run: {} (target, slot) pairs, {} of them ran more than once",
        slots.len(),
        doubled.len()
    );
    for ((target, slot), runs) in doubled.iter().take(5) {
        let detail: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "id={} replica={} trigger={} status={} requested_at={}",
                    r.id,
                    r.replica.as_deref().unwrap_or("-"),
                    r.trigger,
                    r.status.as_str(),
                    r.requested_at.format("%H:%M:%S%.3f")
                )
            })
            .collect();
        println!(
            "{name}_doubled_slot: {target} {slot}: {}",
            detail.join("; ")
        );
    }
    if !doubled.is_empty() {
        failures.push(format!(
            "{} (target, slot) pairs ran more than once",
            doubled.len()
        ));
    }

    // The window's slots: each target must have run each of them.
    let mut due = Vec::new();
    let mut slot = next_slot(started - TimeDelta::milliseconds(1));
    while slot < ended {
        due.push(slot);
        slot += TimeDelta::seconds(PERIOD_SECS);
    }
    let expected = due.len() * options.targets;
    let missing = (0..options.targets)
        .flat_map(|i| {
            let target = format!("t{i:04}");
            due.iter()
                .filter(|slot| !slots.contains_key(&(target.as_str(), **slot)))
                .map(|slot| (target.clone(), *slot))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    println!(
        "{name}_window_slots: {} slots x {} targets = {expected} due, {} did not run",
        due.len(),
        options.targets,
        missing.len()
    );
    if let Some((target, slot)) = missing.first() {
        failures.push(format!(
            "{} slots of the window did not run, e.g. {target} at {slot}",
            missing.len()
        ));
    }

    // The same lateness, exact, from the records: an attempt's `requested_at` is the instant its lateness is
    // observed, and a scheduled attempt's due instant is its slot.
    let mut late: Vec<f64> = Vec::new();
    let mut drained: Vec<f64> = Vec::new();
    for slot in &due {
        let mut last_done: Option<DateTime<Utc>> = None;
        for record in records.iter().filter(|r| r.slot == Some(*slot)) {
            late.push((record.requested_at - *slot).as_seconds_f64());
            last_done = last_done.max(record.completed_at);
        }
        if let Some(done) = last_done {
            drained.push((done - *slot).as_seconds_f64());
        }
    }
    late.sort_by(f64::total_cmp);
    println!(
        "{name}_lateness_from_records: n={} p50 {:.3} s p90 {:.3} s p99 {:.3} s max {:.3} s (requested_at - slot)",
        late.len(),
        percentile(&late, 50.0),
        percentile(&late, 90.0),
        percentile(&late, 99.0),
        late.last().copied().unwrap_or(f64::NAN)
    );
    let drained: Vec<String> = drained.iter().map(|d| format!("{d:.2}")).collect();
    println!(
        "{name}_slot_done_after: {} s (from each slot of the window to its last backup completed)",
        drained.join(" / ")
    );

    let statements_per_backup = statements.map(|(calls, top, evicted)| {
        println!(
            "{name}_statements_in_window: {calls} ({:.1} per backup completed, {:.0}/s); entries evicted: {evicted}",
            calls as f64 / backups.max(1) as f64,
            calls as f64 / window_secs
        );
        for (n, query) in top {
            println!(
                "{name}_statement: {n} ({:.2}/backup) {query}",
                n as f64 / backups.max(1) as f64
            );
        }
        if evicted > 0 {
            failures.push(format!(
                "pg_stat_statements evicted {evicted} entries: the statement count is low"
            ));
        }
        calls as f64 / backups.max(1) as f64
    });

    let outcome = Outcome {
        name: name.to_owned(),
        window_secs,
        backups,
        expected,
        missing: missing.len(),
        doubled: doubled.len(),
        lateness,
        exact: (percentile(&late, 50.0), percentile(&late, 99.0)),
        statements_per_backup,
        cpu_replicas,
        cpu_postgres: pg_cpu,
        failures,
    };
    println!("{}", outcome.line());
    Ok(outcome)
}
