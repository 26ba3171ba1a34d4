//! Test support: an in-process daemon on port 0, a daemon child process, config templating, metric parsing,
//! and polling with deadlines (never fixed sleeps).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rpod::app::{self, RunOptions};
use rpod::catalog::{Catalog, Finish, NewBackup};
use rpod::clock::Clock;
use rpod::record::{BackupRecord, Status, Trigger};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Writes `body` as rpod.toml in a fresh temp dir, with `{dir}` replaced by that dir, and a `[daemon]` section
/// pointing the state dir there (unless the body has its own).
pub fn write_config(body: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let path = dir.path().join("rpod.toml");
    rewrite_config(&path, dir.path(), body);
    (dir, path)
}

/// Rewrites a config file in place, with the same templating as [`write_config`].
pub fn rewrite_config(path: &Path, dir: &Path, body: &str) {
    let body = body.replace("{dir}", dir.to_str().unwrap());
    let text = if body.contains("[daemon]") {
        body
    } else {
        format!(
            "[daemon]\nstate_dir = \"{}/state\"\nlisten = \"127.0.0.1:0\"\nevaluation_interval = \"300ms\"\n\
             shutdown_timeout = \"2s\"\n\n{body}",
            dir.display()
        )
    };
    std::fs::write(path, text).unwrap();
}

/// A daemon running in this process on a loopback port chosen by the OS.
pub struct TestApp {
    pub dir: TempDir,
    pub address: SocketAddr,
    /// The webhook's own listener, when the configuration gives it one.
    pub webhook_address: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

/// Starts the daemon in-process on `config` (templated as in [`write_config`]). Binds first, then spawns.
pub async fn spawn_app(config: &str) -> TestApp {
    spawn_app_with(config, &[]).await
}

/// Like [`spawn_app`], with files (relative to the temp dir) written before the configuration is loaded.
pub async fn spawn_app_with(config: &str, files: &[(&str, &[u8])]) -> TestApp {
    spawn_app_in(config, files, app::Environment::default(), Clock::system()).await
}

/// Like [`spawn_app_with`], in a given environment (Azure transport) and on a given clock.
pub async fn spawn_app_in(
    config: &str,
    files: &[(&str, &[u8])],
    environment: app::Environment,
    clock: Clock,
) -> TestApp {
    let (dir, config_path) = write_config(config);
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    start_in(dir, config_path, environment, clock).await
}

/// Starts the daemon on the configuration at `config_path` inside `dir` (kept across restarts).
pub async fn start_in(
    dir: TempDir,
    config_path: PathBuf,
    environment: app::Environment,
    clock: Clock,
) -> TestApp {
    let (config, targets) =
        app::load_in(&config_path, &environment).unwrap_or_else(|err| panic!("{err}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // A configured webhook listener gets a free loopback port instead of the one written in the file.
    let webhook_listener = match config.webhook.as_ref().and_then(|w| w.listen) {
        Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        None => None,
    };
    let webhook_address = webhook_listener.as_ref().map(|l| l.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    // Reloads are exercised through SIGHUP on a child process (lifecycle tests).
    let (_reload, reloads) = mpsc::unbounded_channel();
    let task = tokio::spawn(app::run(RunOptions {
        config_path: config_path.clone(),
        config,
        targets,
        listener,
        webhook_listener,
        shutdown: shutdown.clone(),
        reloads,
        clock,
        environment,
        lock: None,
        notifier: None,
    }));
    TestApp {
        dir,
        address,
        webhook_address,
        shutdown,
        task,
        http: reqwest::Client::new(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub async fn catalog(&self) -> Catalog {
        Catalog::open(&self.state_dir()).await.unwrap()
    }

    /// The target's records, oldest first.
    pub async fn records(&self, target: &str) -> Vec<BackupRecord> {
        records_in(&self.state_dir(), target).await
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// `POST /api/v1/targets/{target}/restore` with `body`: the status and the JSON answer.
    pub async fn post_restore(
        &self,
        target: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(&format!("/api/v1/targets/{target}/restore")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Restore `id` once it has ended, as the API shows it.
    pub async fn finished_restore(&self, id: i64) -> serde_json::Value {
        eventually(Duration::from_secs(40), "the restore to end", || async {
            let record = self.get_json(&format!("/api/v1/restores/{id}")).await;
            (record["status"] != "running").then_some(record)
        })
        .await
    }

    /// The newest restore of `target` with this trigger and status, once there is one.
    pub async fn restore_where(
        &self,
        target: &str,
        trigger: &str,
        status: &str,
    ) -> serde_json::Value {
        eventually(
            Duration::from_secs(40),
            &format!("a {status} {trigger} restore of {target}"),
            || async {
                let restores = self
                    .get_json(&format!("/api/v1/targets/{target}/restores"))
                    .await;
                restores
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["trigger"] == trigger && r["status"] == status)
                    .cloned()
            },
        )
        .await
    }

    pub async fn metrics(&self) -> Metrics {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        Metrics::parse(&text)
    }

    pub async fn stop(self) -> TempDir {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.dir
    }

    /// Stops the daemon and starts it again on the same configuration and state directory.
    pub async fn restart(self, environment: app::Environment) -> TestApp {
        let dir = self.stop().await;
        let config_path = dir.path().join("rpod.toml");
        start_in(dir, config_path, environment, Clock::system()).await
    }
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
        let samples = scrape
            .samples
            .into_iter()
            .map(|s| {
                let value = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                };
                let labels = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (s.metric, labels, value)
            })
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} samples",
            matching.len()
        );
        matching.first().copied()
    }

    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in\n{}", self.text))
    }
}

/// The target's records in `state_dir` once one of rpod's own backups (not an imported one) succeeded: after a
/// restart, the backup it resumed.
pub async fn resumed_backup(state_dir: &Path, target: &str) -> Vec<BackupRecord> {
    eventually(Duration::from_secs(40), "the resumed backup", || async {
        let records = records_in(state_dir, target).await;
        records
            .iter()
            .any(|r| r.status == Status::Succeeded && r.trigger != "discovered")
            .then_some(records)
    })
    .await
}

/// The target's own (not imported) records, oldest first, once `count` of them have ended.
pub async fn ended_backups(app: &TestApp, target: &str, count: usize) -> Vec<BackupRecord> {
    eventually(Duration::from_secs(40), "ended backups", || async {
        let records: Vec<BackupRecord> = app
            .records(target)
            .await
            .into_iter()
            .filter(|r| r.status != Status::Running && r.trigger != "discovered")
            .collect();
        (records.len() >= count).then_some(records)
    })
    .await
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon child process (`rpod run`) whose JSON log lines are collected.
pub struct DaemonProcess {
    pub child: Child,
    pub address: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl DaemonProcess {
    /// Starts `rpod --config PATH run` and waits for it to report its address.
    pub fn start(config_path: &Path) -> Self {
        Self::start_with_env(config_path, &[])
    }

    /// Like [`DaemonProcess::start`], with extra environment variables for the child.
    pub fn start_with_env(config_path: &Path, env: &[(String, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpod"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(address) = value.get("address").and_then(|a| a.as_str())
                {
                    let _ = tx.send(address.to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the daemon did not start: {:?}", log.lock().unwrap()))
            .parse()
            .unwrap();
        Self {
            child,
            address,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process with this pid exists (zombies excluded).
pub fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match stat {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Decompresses a zstd artifact.
pub fn unzstd(bytes: &[u8]) -> Vec<u8> {
    zstd::decode_all(bytes).unwrap()
}

/// A target's records, oldest first, from the catalog in `state_dir` (opened and closed around the read).
/// The `SQLite` catalog file in `state_dir` opened directly, beside rpod: for tests that break the database on
/// purpose or read its file format, never for what the catalog itself answers.
pub async fn catalog_file(state_dir: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(state_dir.join(rpod::catalog::CATALOG_FILE))
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}

pub async fn records_in(state_dir: &Path, target: &str) -> Vec<BackupRecord> {
    let catalog = Catalog::open(state_dir).await.unwrap();
    let mut records = catalog.backups(Some(target), 1_000_000).await.unwrap();
    catalog.close().await;
    records.reverse();
    records
}

/// Records a succeeded backup with recovery point `at` straight into the catalog; returns its id.
pub async fn insert_succeeded(
    catalog: &Catalog,
    target: &str,
    at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    artifact: impl Fn(i64) -> String,
) -> i64 {
    let id = catalog
        .insert_backup(&NewBackup {
            target,
            kind: "command",
            trigger: Trigger::Manual,
            attempt: 1,
            requested_at: at,
            storage: "local",
            first_change_at: None,
            slot: None,
        })
        .await
        .unwrap();
    let finish = Finish {
        status: Status::Succeeded,
        accepted_at: Some(at),
        completed_at: at,
        expires_at: Some(expires_at),
        artifact: Some(artifact(id)),
        size_bytes: Some(1),
        sha256: None,
        sku: None,
        etag: None,
        error_code: None,
        error_message: None,
        content: None,
    };
    catalog.finish_backup(id, &finish).await.unwrap();
    id
}

/// Runs the `rpod` binary with `--config CONFIG ARGS...` and returns what it printed.
pub fn run_rpod(config: &Path, args: &[&str]) -> std::process::Output {
    run_rpod_with_env(config, args, &[])
}

/// Like [`run_rpod`], with extra environment variables.
pub fn run_rpod_with_env(
    config: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rpod"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// The target's succeeded backups, once there are `count` of them.
pub async fn succeeded_backups(app: &TestApp, target: &str, count: usize) -> Vec<BackupRecord> {
    eventually(
        Duration::from_secs(40),
        "succeeded APIM backups",
        || async {
            let records: Vec<BackupRecord> = app
                .records(target)
                .await
                .into_iter()
                .filter(|r| r.status == Status::Succeeded)
                .collect();
            (records.len() >= count).then_some(records)
        },
    )
    .await
}

/// The first midnight UTC after `at`.
pub fn utc_midnight_after(at: DateTime<Utc>) -> DateTime<Utc> {
    rpod::policy::utc_day_start(at) + chrono::TimeDelta::days(1)
}

/// The guards of a restore plan, in the order they were checked.
pub fn guards_of(plan: &serde_json::Value) -> Vec<&str> {
    plan["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["guard"].as_str().unwrap())
        .collect()
}

/// One `command` target of a test configuration (see [`command_config`]).
#[derive(Debug, Clone)]
pub struct CommandTarget {
    target: String,
    policy: String,
}

/// A `command` target `name` running `argv` into the storage `local`.
pub fn command_target(name: &str, argv: &[&str]) -> CommandTarget {
    let argv: Vec<String> = argv
        .iter()
        .map(|arg| serde_json::to_string(arg).unwrap())
        .collect();
    CommandTarget {
        target: format!(
            "[[targets]]\nname = \"{name}\"\nkind = \"command\"\ncommand = [{}]\nstorage = \"local\"\n",
            argv.join(", ")
        ),
        policy: String::new(),
    }
}

impl CommandTarget {
    /// Another key of the target, as a TOML line (`allow_empty = true`).
    pub fn key(mut self, line: &str) -> Self {
        self.target.push_str(line);
        self.target.push('\n');
        self
    }

    /// Lines of its `[targets.policy]`.
    pub fn policy(mut self, lines: &str) -> Self {
        self.policy.push_str(lines.trim());
        self.policy.push('\n');
        self
    }

    fn toml(&self) -> String {
        if self.policy.is_empty() {
            self.target.clone()
        } else {
            format!("{}[targets.policy]\n{}", self.target, self.policy)
        }
    }
}

/// The configuration most tests need: `head` (a `[daemon]` or `[defaults.policy]` section, or nothing), the
/// directory storage `local` at `{dir}/backups`, and `targets`; templated by [`write_config`].
pub fn command_config(head: &str, targets: &[CommandTarget]) -> String {
    let mut text =
        format!("{head}\n[storage.local]\nkind = \"directory\"\npath = \"{{dir}}/backups\"\n");
    for target in targets {
        text.push('\n');
        text.push_str(&target.toml());
    }
    text
}

/// A succeeded backup of command target `target` with recovery point `at`, restorable for 30 days and stored as
/// `{target}/seed.zst` in storage `local`, to load with [`Catalog::load_backups`].
pub fn succeeded_record(target: &str, at: DateTime<Utc>) -> rpod::record::BackupRecord {
    rpod::record::BackupRecord {
        id: 0,
        target: target.to_owned(),
        kind: "command".to_owned(),
        trigger: "schedule".to_owned(),
        status: Status::Succeeded,
        attempt: 1,
        requested_at: at,
        accepted_at: Some(at),
        completed_at: Some(at + chrono::TimeDelta::seconds(1)),
        expires_at: Some(at + chrono::TimeDelta::days(30)),
        storage: Some("local".to_owned()),
        artifact: Some(format!("{target}/seed.zst")),
        size_bytes: Some(1),
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
