//! An honest state (docs/operations.md, "What restorable means"): nothing counts as restorable until rpod has seen
//! it, an outcome is reported only once it is recorded, one daemon runs per state directory, the liveness signals
//! come from the scheduler itself, and strangers cannot drive the API.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rpod::catalog::Catalog;
use rpod::clock::Clock;
use rpod::http::{self, ApiState};
use rpod::metrics::Metrics;
use rpod::notify::Notifier;
use rpod::record::Status;
use rpod::scheduler::{self, Heartbeat, Shared};
use tokio_util::sync::CancellationToken;

use crate::support::{
    self, DaemonProcess, eventually, process_alive, rewrite_config, run_rpod, start_in,
    write_config,
};

/// A target `t` running `argv`, reconciled every 300 ms, and `more` targets.
fn failing(argv: &[&str], more: &[support::CommandTarget]) -> String {
    let mut targets =
        vec![support::command_target("t", argv).policy("rpo = \"3h\"\nmax_attempts = 1")];
    targets.extend_from_slice(more);
    support::command_config(
        "[daemon]\nstate_dir = \"{dir}/state\"\nlisten = \"127.0.0.1:0\"\nevaluation_interval = \"300ms\"\n\
         reconcile_interval = \"300ms\"\nshutdown_timeout = \"2s\"\n",
        &targets,
    )
}

fn artifact_name(at: DateTime<Utc>, id: u32) -> String {
    format!("t/{}-{id}.zst", at.format("%Y%m%dT%H%M%SZ"))
}

fn seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap()
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join("backups").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn status_line(config: &Path) -> String {
    let output = run_rpod(config, &["status"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("t "))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_named_like_backups_are_dated_by_their_names_and_count_only_once_verified() {
    let now = Utc::now();
    // A real artifact of a command target, and the same cut short.
    let content: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i * 7919).to_le_bytes())
        .collect();
    let real = zstd::encode_all(content.as_slice(), 3).unwrap();
    let truncated = &real[..real.len() / 2];
    let (dir, config) = write_config(&failing(&["false"], &[]));
    let junk = "t/19990101T000000Z-424242.zst";
    put(dir.path(), junk, b"twenty bytes of junk");
    let empty = artifact_name(now - TimeDelta::minutes(10), 1001);
    put(dir.path(), &empty, b"");
    let cut = artifact_name(now - TimeDelta::minutes(20), 1002);
    put(dir.path(), &cut, truncated);
    let app = start_in(
        dir,
        config.clone(),
        rpod::app::Environment::default(),
        Clock::system(),
    )
    .await;

    let records = eventually(Duration::from_secs(20), "three imports", || async {
        let records: Vec<_> = app
            .records("t")
            .await
            .into_iter()
            .filter(|r| r.status == Status::Discovered)
            .collect();
        (records.len() == 3).then_some(records)
    })
    .await;
    let find = |name: &str| {
        records
            .iter()
            .find(|r| r.artifact.as_deref() == Some(name))
            .unwrap()
            .clone()
    };
    let junk_record = find(junk);
    assert_eq!(
        junk_record.accepted_at,
        Some("1999-01-01T00:00:00Z".parse().unwrap()),
        "the recovery point its name encodes, not the time it was found"
    );
    assert!(
        junk_record
            .expires_at
            .is_some_and(|e| e < "2000-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap())
    );
    assert!(
        junk_record
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("expired")),
        "{junk_record:?}"
    );
    let empty_record = find(&empty);
    assert_eq!(
        empty_record.accepted_at,
        Some(seconds(now - TimeDelta::minutes(10)))
    );
    assert_eq!(empty_record.error_message.as_deref(), Some("it is empty"));
    let cut_record = find(&cut);
    assert!(
        cut_record
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("zstd stream")),
        "{cut_record:?}"
    );
    for record in &records {
        assert!(!record.is_restorable(Utc::now()), "{record:?}");
        assert_eq!(record.error_code.as_deref(), Some("Unverified"));
    }
    let view = &app.get_json("/api/v1/targets").await[0];
    assert_eq!(view["compliant"], false, "{view}");
    assert_eq!(view["restorable_backups"], 0, "{view}");
    // `status` reads the catalog while the daemon writes it.
    assert!(status_line(&config).contains(" NO "), "not compliant");
    assert!(
        app.path("backups").join(junk).exists(),
        "what rpod did not verify is not rpod's to delete"
    );

    // A real backup copied back in (from tape, another container): written now, dated by its name.
    let taken = now - TimeDelta::hours(2);
    let copied = artifact_name(taken, 1003);
    put(app.dir.path(), &copied, &real);
    let record = eventually(Duration::from_secs(20), "the copy imported", || async {
        app.records("t")
            .await
            .into_iter()
            .find(|r| r.artifact.as_deref() == Some(copied.as_str()))
    })
    .await;
    assert_eq!(record.accepted_at, Some(seconds(taken)));
    assert!(record.verified_at.is_some() && record.is_restorable(Utc::now()));
    let view = eventually(Duration::from_secs(10), "compliance", || async {
        let view = app.get_json("/api/v1/targets").await[0].clone();
        (view["compliant"] == true).then_some(view)
    })
    .await;
    assert_eq!(view["restorable_backups"], 1);
    assert!(
        view["age_seconds"].as_i64().unwrap() >= 7190,
        "as old as its name says: {view}"
    );
    assert!(status_line(&config).contains(" yes "));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_writes_nothing_makes_no_backup_unless_that_is_allowed() {
    let config = failing(
        &["true"],
        &[support::command_target("allowed", &["true"])
            .key("allow_empty = true")
            .policy("rpo = \"3h\"")],
    );
    let app = support::spawn_app(&config).await;
    let failed = eventually(Duration::from_secs(20), "a failed backup", || async {
        app.records("t")
            .await
            .into_iter()
            .find(|r| r.status == Status::Failed)
    })
    .await;
    assert_eq!(failed.error_code.as_deref(), Some("EmptyBackup"));
    assert!(
        failed
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("wrote nothing") && m.contains("allow_empty")),
        "{failed:?}"
    );
    eventually(
        Duration::from_secs(20),
        "the allowed empty backup",
        || async {
            app.records("allowed")
                .await
                .into_iter()
                .find(|r| r.status == Status::Succeeded)
        },
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "t")]),
        0.0
    );
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "allowed")]),
        1.0
    );
    let left: Vec<_> = std::fs::read_dir(app.path("backups").join("t"))
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no artifact is kept: {left:?}");
    app.stop().await;
}

/// Makes every write that would mark a backup succeeded fail, as a full disk or a broken catalog would.
async fn refuse_successes(state: &Path) {
    let catalog = Catalog::open(state).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_success BEFORE UPDATE OF status ON backups WHEN NEW.status = 'succeeded'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    .execute(&crate::support::catalog_file(state).await)
    .await
    .unwrap();
    catalog.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_outcome_cannot_be_recorded_is_a_failure_everywhere() {
    let config = failing(&["echo", "hello"], &[]);
    let (dir, path) = write_config(&config);
    refuse_successes(&dir.path().join("state")).await;
    let app = start_in(
        dir,
        path.clone(),
        rpod::app::Environment::default(),
        Clock::system(),
    )
    .await;
    let labels = |outcome| [("target", "t"), ("trigger", "rpo"), ("outcome", outcome)];
    eventually(Duration::from_secs(20), "a failed attempt", || async {
        (app.metrics()
            .await
            .value("rpod_backups_total", &labels("failed"))
            == 1.0)
            .then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_backups_total", &labels("succeeded")),
        0.0
    );
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "t")]),
        0.0
    );
    assert_eq!(
        metrics.value(
            "rpod_target_last_success_timestamp_seconds",
            &[("target", "t")]
        ),
        0.0
    );
    let dir = app.stop().await;
    // Stand-alone, the same: exit 1 with the reason, never "succeeded".
    let output = run_rpod(&path, &["backup", "t"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("succeeded"), "{stdout}");
    assert!(
        stderr.contains("backup failed: CatalogUnavailable") && stderr.contains("disk is full"),
        "{stderr}"
    );
    drop(dir);
}

/// The scheduler's heartbeat, `WATCHDOG=1` and `/readyz`, with a heartbeat every 200 ms.
struct Liveness {
    socket: std::os::unix::net::UnixDatagram,
    metrics: Metrics,
    scheduler: scheduler::SchedulerHandle,
    address: std::net::SocketAddr,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
}

impl Liveness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let notifier = Notifier::connect(path.as_os_str(), Some(Duration::from_secs(5))).unwrap();
        let catalog = Catalog::open(&dir.path().join("state")).await.unwrap();
        let metrics = Metrics::new();
        let mut shared = Shared::new(catalog.clone(), metrics.clone(), Clock::system(), 1);
        shared.heartbeat = Heartbeat::new(Duration::from_millis(200), notifier);
        shared.heartbeat.serving();
        let heartbeat = shared.heartbeat.clone();
        let shutdown = CancellationToken::new();
        let (scheduler, _task) = scheduler::start(shared, Vec::new(), shutdown.clone())
            .await
            .unwrap();
        let state = ApiState {
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            scheduler: scheduler.clone(),
            targets: Arc::default(),
            ready: Arc::new(AtomicBool::new(true)),
            clock: Clock::system(),
            heartbeat,
            api_token: None,
            pruning: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, http::router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Self {
            socket,
            metrics,
            scheduler,
            address,
            shutdown,
            dir,
        }
    }

    /// How many `WATCHDOG=1` arrived since the last call.
    fn watchdogs(&self) -> usize {
        let mut buffer = [0u8; 512];
        let mut count = 0;
        while let Ok(n) = self.socket.recv(&mut buffer) {
            if String::from_utf8_lossy(&buffer[..n]).contains("WATCHDOG=1") {
                count += 1;
            }
        }
        count
    }

    fn heartbeat(&self) -> f64 {
        support::Metrics::parse(&self.metrics.render())
            .value("rpod_last_evaluation_timestamp_seconds", &[])
    }

    async fn readyz(&self) -> (u16, String) {
        let response = reqwest::get(format!("http://{}/readyz", self.address))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits `window` of real time: what must not happen has to be given the time to happen.
    async fn quiet(window: Duration) {
        tokio::time::sleep(window).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_scheduler_turns_the_heartbeat_the_watchdog_and_readiness_stale() {
    let live = Liveness::start().await;
    eventually(Duration::from_secs(5), "watchdog pings", || async {
        (live.watchdogs() >= 1 && live.heartbeat() > 0.0).then_some(())
    })
    .await;
    assert_eq!(live.readyz().await.0, 200);

    let frozen = live.scheduler.freeze();
    let (code, body) = eventually(Duration::from_secs(5), "readiness to fail", || async {
        let answer = live.readyz().await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!(code, 503);
    assert!(
        body.contains("scheduler has not serviced its timers"),
        "{body}"
    );
    live.watchdogs();
    let stamped = live.heartbeat();
    Liveness::quiet(Duration::from_secs(1)).await;
    assert_eq!(live.watchdogs(), 0, "no WATCHDOG=1 while frozen");
    assert_eq!(
        live.heartbeat(),
        stamped,
        "the heartbeat metric stands still"
    );

    drop(frozen);
    eventually(Duration::from_secs(5), "recovery", || async {
        (live.readyz().await.0 == 200 && live.watchdogs() >= 1 && live.heartbeat() > stamped)
            .then_some(())
    })
    .await;

    // A catalog that cannot take a write is not ready either.
    let file = crate::support::catalog_file(&live.dir.path().join("state")).await;
    let mut blocker = file.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO liveness (id, at) VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET at = 0",
    )
    .execute(&mut *blocker)
    .await
    .unwrap();
    let (code, body) = live.readyz().await;
    assert_eq!(code, 503);
    assert!(body.contains("the catalog cannot be written"), "{body}");
    blocker.rollback().await.unwrap();
    assert_eq!(live.readyz().await.0, 200);
    live.shutdown.cancel();
}

/// A daemon with an API token at `{dir}/api-token`, listening at `listen`, and one target `t`.
fn with_token(listen: &str) -> String {
    support::command_config(
        &format!(
            "[daemon]\nstate_dir = \"{{dir}}/state\"\nlisten = \"{listen}\"\nevaluation_interval = \"300ms\"\n\
             shutdown_timeout = \"2s\"\nlog_format = \"json\"\napi_token_file = \"{{dir}}/api-token\"\n"
        ),
        &[support::command_target("t", &["echo", "hello"]).policy("rpo = \"1h\"")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_need_the_api_token_and_reading_does_not() {
    let app = support::spawn_app_with(
        &with_token("127.0.0.1:0"),
        &[("api-token", b"open-sesame\n")],
    )
    .await;
    let post = |path: &str, token: Option<&str>| {
        let mut request = app.http.post(app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for path in ["/api/v1/targets/t/backup", "/api/v1/prune"] {
        let refused = post(path, None).await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Bearer realm=\"rpod\""
        );
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("Authorization: Bearer")
        );
        assert_eq!(post(path, Some("open-sesam")).await.unwrap().status(), 401);
    }
    let started = post("/api/v1/targets/t/backup", Some("open-sesame"))
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let pruned = post("/api/v1/prune", Some("open-sesame")).await.unwrap();
    assert_eq!(pruned.status(), 200);
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/targets",
        "/api/v1/targets/t/backups",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} stays open to readers");
    }
    app.stop().await;
}

#[test]
fn a_listener_beyond_loopback_without_a_token_is_a_configuration_error() {
    let (_dir, config) = write_config(
        &with_token("0.0.0.0:0").replace("api_token_file = \"{dir}/api-token\"\n", ""),
    );
    let output = run_rpod(&config, &["run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("daemon.listen") && stderr.contains("api_token_file"),
        "{stderr}"
    );
}

/// Points the configuration's `listen` at `address`, so that the command line finds the daemon there.
fn listen_at(config: &Path, dir: &Path, address: std::net::SocketAddr) {
    rewrite_config(config, dir, &with_token(&address.to_string()));
}

#[test]
fn one_daemon_per_state_directory_and_the_command_line_goes_through_it() {
    let (dir, config) = write_config(&with_token("127.0.0.1:0"));
    std::fs::write(dir.path().join("api-token"), "open-sesame\n").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let health = |url: String| {
        runtime
            .block_on(async { reqwest::get(url).await.map(|r| r.status().as_u16()) })
            .unwrap()
    };
    let mut first = DaemonProcess::start(&config);
    let pid = first.child.id();

    // A second daemon on the same state directory gives up at once, naming the lock and its holder.
    let started = Instant::now();
    let output = run_rpod(&config, &["run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        stderr.contains(&format!("PID {pid}")) && stderr.contains("state/rpod.lock"),
        "{stderr}"
    );
    assert_eq!(
        health(first.url("/healthz")),
        200,
        "the first keeps running"
    );

    // The command line goes through the running daemon, with the token from the same configuration.
    listen_at(&config, dir.path(), first.address);
    let output = run_rpod(&config, &["backup", "t"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("by the running daemon"));
    let output = run_rpod(&config, &["prune", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    std::fs::write(dir.path().join("api-token"), "wrong\n").unwrap();
    let output = run_rpod(&config, &["backup", "t"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
    std::fs::write(dir.path().join("api-token"), "open-sesame\n").unwrap();
    // Reading works beside it.
    let output = run_rpod(&config, &["backups", "t"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // A daemon that holds the state directory but does not answer where the configuration says is not raced.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    listen_at(&config, dir.path(), unused);
    let output = run_rpod(&config, &["backup", "t"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("PID {pid}")), "{stderr}");

    // Nothing the second daemon or the command line did touched the first one's records.
    let records = runtime.block_on(support::records_in(&dir.path().join("state"), "t"));
    assert!(
        records.iter().all(|r| r.status != Status::Interrupted),
        "{records:?}"
    );

    // The lock dies with its holder, kill -9 included.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(!process_alive(i32::try_from(pid).unwrap()));
    listen_at(&config, dir.path(), "127.0.0.1:0".parse().unwrap());
    let second = DaemonProcess::start(&config);
    assert_eq!(health(second.url("/healthz")), 200);
}

/// A provider whose backups never end on their own: the attempts the watchdog starts hold their permit and stay
/// out of the way of what is measured.
#[derive(Debug)]
struct Endless;

#[async_trait::async_trait]
impl rpod::providers::Provider for Endless {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn backup(
        &self,
        request: rpod::providers::BackupRequest,
    ) -> Result<rpod::providers::BackupOutcome, rpod::providers::ProviderError> {
        request.cancel.cancelled().await;
        Err(rpod::providers::ProviderError::cancelled("stopped"))
    }
}

/// Thousands of targets whose artifacts all vanished: the reconciliation pass marks every backup missing and the
/// scheduler re-reads every target's restorability. Neither runs on the scheduler's loop, so its heartbeat never
/// goes stale and a manual backup is answered at once while they run; the watchdog then acts on what is really
/// restorable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_thousands_of_targets_never_delays_the_heartbeat() {
    const TARGETS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let mut toml = format!(
        "[storage.local]\nkind = \"directory\"\npath = {:?}\n\n",
        storage.display().to_string()
    );
    for i in 0..TARGETS {
        let _ = write!(
            toml,
            "[[targets]]\nname = \"t{i}\"\nkind = \"command\"\ncommand = [\"true\"]\nstorage = \"local\"\n\
             [targets.policy]\nrpo = \"1d\"\n"
        );
    }
    let config = rpod::config::Config::parse(&toml, Path::new("test.toml")).unwrap();
    let endless: Arc<dyn rpod::providers::Provider> = Arc::new(Endless);
    let specs: Vec<Arc<rpod::target::TargetSpec>> =
        rpod::app::build_targets(&config, Path::new("test.toml"))
            .unwrap()
            .into_iter()
            .map(|mut spec| {
                spec.provider = endless.clone();
                Arc::new(spec)
            })
            .collect();
    let catalog = Catalog::open(&dir.path().join("state")).await.unwrap();
    let now = Utc::now();
    let seeded: Vec<rpod::record::BackupRecord> = (0..TARGETS)
        .map(|i| support::succeeded_record(&format!("t{i}"), now - TimeDelta::hours(1)))
        .collect();
    catalog.load_backups(&seeded).await.unwrap();

    let metrics = Metrics::new();
    let mut shared = Shared::new(catalog.clone(), metrics.clone(), Clock::system(), 1);
    shared.heartbeat = Heartbeat::new(Duration::from_millis(200), Notifier::from_env());
    let heartbeat = shared.heartbeat.clone();
    let shutdown = CancellationToken::new();
    let (scheduler, _task) = scheduler::start(shared, specs.clone(), shutdown.clone())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the first heartbeat", || async {
        heartbeat.last().map(|_| ())
    })
    .await;

    // Sample the heartbeat and the loop's answers while the pass and the re-read run.
    let watching = CancellationToken::new();
    let watcher = {
        let heartbeat = heartbeat.clone();
        let scheduler = scheduler.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut stale = Vec::new();
            let mut slowest_answer = Duration::ZERO;
            let mut samples = 0;
            while !watching.is_cancelled() {
                if let Some(why) = heartbeat.stale(Utc::now()) {
                    stale.push(why);
                }
                let asked = Instant::now();
                let _ = scheduler.backup_now("no-such-target").await;
                slowest_answer = slowest_answer.max(asked.elapsed());
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (stale, slowest_answer, samples)
        })
    };
    let began = Instant::now();
    let report = rpod::reconcile::reconcile(&catalog, &specs, Utc::now())
        .await
        .unwrap();
    assert_eq!(report.missing.len(), TARGETS, "every artifact vanished");
    scheduler.refresh(report.changed_targets());
    let last = format!("t{}", TARGETS - 1);
    eventually(Duration::from_mins(1), "every target re-read", || async {
        let text = metrics.render();
        let parsed = support::Metrics::parse(&text);
        (parsed.value("rpod_target_restorable_backups", &[("target", &last)]) == 0.0
            && parsed.value("rpod_target_restorable_backups", &[("target", "t0")]) == 0.0)
            .then_some(())
    })
    .await;
    let took = began.elapsed();
    watching.cancel();
    let (stale, slowest_answer, samples) = watcher.await.unwrap();
    assert!(
        samples > 5,
        "the loop was watched throughout ({samples} samples in {took:?})"
    );
    assert!(stale.is_empty(), "the heartbeat went stale: {stale:?}");
    assert!(
        slowest_answer < Duration::from_millis(500),
        "the scheduler's loop answered within half a second throughout, slowest {slowest_answer:?}"
    );
    // The watchdog acts on what is restorable now: a backup of a target that lost its only one is under way.
    eventually(
        Duration::from_secs(10),
        "the watchdog to start a backup",
        || async {
            let running = catalog.backups(None, 10).await.ok()?;
            running
                .iter()
                .any(|r| r.status == Status::Running)
                .then_some(())
        },
    )
    .await;
    shutdown.cancel();
}
