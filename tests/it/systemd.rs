//! Running under systemd: the unit in deploy/systemd/ passes `systemd-analyze verify`, its sysusers file parses,
//! and the daemon speaks the notification protocol to a `NOTIFY_SOCKET` this test binds: READY=1 once it serves,
//! WATCHDOG=1 from its heartbeat, RELOADING=1 and READY=1 around a SIGHUP reload, STOPPING=1 at shutdown. The
//! programs of command targets do not see systemd's variables.
//!
//! The tools come from Debian's `systemd` package (scripts/tools.d/systemd.sh installs it).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rpod::config::Config;
use rpod::record::Status;
use tokio::net::UnixDatagram;

use crate::helpers::{printed, repo_root, run_tool};
use crate::support::{
    DaemonProcess, command_config, command_target, eventually, records_in, unzstd, write_config,
};

const UNIT: &str = "deploy/systemd/rpod.service";
const SYSUSERS: &str = "deploy/systemd/rpod.sysusers";
/// The binary path the unit (and docs/operations.md) installs rpod at.
const INSTALLED: &str = "/usr/bin/rpod";

fn repository(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

fn tool(program: &str, args: &[&str]) -> Output {
    run_tool(program, args, "", "systemd.sh")
}

/// The unit's `Key=value` settings, in order (comments and section headers left out).
fn settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    settings(unit)
        .into_iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("{UNIT} sets no {key}="))
        .1
}

/// A copy of the unit in a temp dir with the built binary in place of /usr/bin/rpod (which `verify` insists
/// exists), plus `extra` lines at the end of [Service].
fn unit_copy(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let unit = std::fs::read_to_string(repository(UNIT)).unwrap();
    let unit = unit
        .replace(INSTALLED, env!("CARGO_BIN_EXE_rpod"))
        .replace("\n[Install]", &format!("{extra}\n[Install]"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpod.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

/// `systemd-analyze verify` exits 0 on unknown keys and bad values: what it says about the unit is the verdict.
fn verify(path: &Path) -> (Output, Vec<String>) {
    let output = tool("systemd-analyze", &["verify", path.to_str().unwrap()]);
    let complaints = String::from_utf8_lossy(&output.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&output.stdout).lines())
        .filter(|line| line.contains("rpod.service"))
        .map(str::to_owned)
        .collect();
    (output, complaints)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let (_dir, path) = unit_copy("");
    let (output, complaints) = verify(&path);
    assert!(output.status.success(), "{}", printed(&output));
    assert!(complaints.is_empty(), "{}", printed(&output));

    // The check would notice a mistake: a misspelt key in the same unit is reported.
    let (_dir, path) = unit_copy("WatchdogSecs=5min\n");
    let (output, complaints) = verify(&path);
    assert!(
        complaints.iter().any(|c| c.contains("WatchdogSecs")),
        "a misspelt key went unnoticed: {}",
        printed(&output)
    );
}

#[test]
fn the_unit_runs_the_installed_binary_as_a_watched_notify_service() {
    let unit = std::fs::read_to_string(repository(UNIT)).unwrap();
    let config = format!("--config {}", rpod::config::DEFAULT_CONFIG_PATH);
    assert_eq!(setting(&unit, "Type"), "notify");
    assert_eq!(setting(&unit, "NotifyAccess"), "main");
    assert_eq!(
        setting(&unit, "ExecStart"),
        format!("{INSTALLED} {config} run")
    );
    assert_eq!(
        setting(&unit, "ExecStartPre"),
        format!("{INSTALLED} {config} check-config")
    );
    assert_eq!(setting(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(setting(&unit, "User"), "rpod");
    assert_eq!(setting(&unit, "StateDirectory"), "rpod");
    assert_eq!(setting(&unit, "KillMode"), "mixed");

    // The unit's timeouts fit rpod's defaults: the heartbeat comes well within the watchdog, and a stop waits
    // for the drain deadline plus the 15 s rpod gives stopped programs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpod.toml");
    let target = command_config("", &[command_target("env", &["env"])]);
    std::fs::write(&path, target.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let defaults = Config::load(&path).unwrap().daemon;
    let watchdog = humantime::parse_duration(setting(&unit, "WatchdogSec")).unwrap();
    let stop = humantime::parse_duration(setting(&unit, "TimeoutStopSec")).unwrap();
    assert!(
        defaults.evaluation_interval * 4 <= watchdog,
        "evaluation_interval {:?}, WatchdogSec {watchdog:?}",
        defaults.evaluation_interval
    );
    assert!(
        stop >= defaults.shutdown_timeout + Duration::from_secs(30),
        "shutdown_timeout {:?}, TimeoutStopSec {stop:?}",
        defaults.shutdown_timeout
    );
    assert_eq!(
        defaults.state_dir,
        Path::new("/var/lib").join(setting(&unit, "StateDirectory"))
    );
}

#[test]
fn the_hardening_keeps_the_exposure_low() {
    let (_dir, path) = unit_copy("");
    // The threshold is exposure x 10. The unit scores 1.8 with systemd 252; 2.5 leaves room for checks that later
    // versions add, and dropping, say, ProtectSystem=, PrivateDevices= and SystemCallFilter= scores 3.6.
    let output = tool(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--threshold=25",
            path.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", printed(&output));
}

#[test]
fn the_sysusers_file_creates_the_rpod_user() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let output = tool(
        "systemd-sysusers",
        &[
            "--dry-run",
            &format!("--root={}", root.path().display()),
            repository(SYSUSERS).to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", printed(&output));
    let said = printed(&output);
    assert!(said.contains("Creating group 'rpod'"), "{said}");
    assert!(
        said.contains("Creating user 'rpod' (rpod backup daemon)"),
        "{said}"
    );
    assert!(!said.contains("ignoring"), "{said}");
}

/// A daemon configuration with a fast heartbeat and JSON logs (which `DaemonProcess` reads its address from), and
/// a command target whose backup is its program's environment.
fn daemon_config() -> String {
    command_config(
        "[daemon]\nstate_dir = \"{dir}/state\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
         evaluation_interval = \"200ms\"\nshutdown_timeout = \"1s\"\n",
        &[command_target("env", &["env"])],
    )
}

/// Stands in for systemd's notification socket: a datagram socket bound in `dir`.
struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message received so far, for failure messages.
    seen: Vec<String>,
}

impl FakeSystemd {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        Self {
            socket: UnixDatagram::bind(&path).unwrap(),
            path,
            seen: Vec::new(),
        }
    }

    /// The daemon's environment as systemd would set it, with a watchdog of `watchdog_usec`.
    fn env(&self, watchdog_usec: u64) -> Vec<(String, String)> {
        vec![
            (
                "NOTIFY_SOCKET".to_owned(),
                self.path.to_str().unwrap().to_owned(),
            ),
            ("WATCHDOG_USEC".to_owned(), watchdog_usec.to_string()),
        ]
    }

    /// Receives messages until one satisfies `wanted`, which it returns; fails the test after 20 s.
    async fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(received) = tokio::time::timeout(left, self.socket.recv(&mut buf)).await else {
                panic!("no {what} within 20 s; received: {:#?}", self.seen);
            };
            let message = String::from_utf8(buf[..received.unwrap()].to_vec()).unwrap();
            self.seen.push(message.clone());
            if wanted(&message) {
                return message;
            }
        }
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_notifies_ready_watchdog_reloading_and_stopping() {
    let (dir, config) = write_config(&daemon_config());
    let mut systemd = FakeSystemd::bind(dir.path());
    let mut daemon = DaemonProcess::start_with_env(&config, &systemd.env(10_000_000));

    let ready = systemd.until("READY=1", |m| has_line(m, "READY=1")).await;
    // Ready means serving: the health check answers as soon as READY=1 is in.
    let health = reqwest::get(daemon.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        has_line(
            &ready,
            &format!("STATUS=Serving on {}; targets: 1.", daemon.address)
        ),
        "{ready:?}"
    );
    assert!(
        !systemd.seen[..systemd.seen.len() - 1]
            .iter()
            .any(|m| has_line(m, "WATCHDOG=1")),
        "a heartbeat before READY=1: {:#?}",
        systemd.seen
    );

    // The heartbeat: the scheduler's, at least every evaluation_interval (200 ms here).
    for _ in 0..2 {
        systemd.until("WATCHDOG=1", |m| m == "WATCHDOG=1").await;
    }

    daemon.signal(Signal::SIGHUP);
    let reloading = systemd
        .until("RELOADING=1", |m| has_line(m, "RELOADING=1"))
        .await;
    assert!(
        reloading.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "{reloading:?}"
    );
    let reloaded = systemd
        .until("READY=1 after the reload", |m| has_line(m, "READY=1"))
        .await;
    assert!(
        has_line(&reloaded, "STATUS=Configuration reloaded."),
        "{reloaded:?}"
    );
    systemd
        .until("WATCHDOG=1 after the reload", |m| m == "WATCHDOG=1")
        .await;

    daemon.signal(Signal::SIGTERM);
    systemd
        .until("STOPPING=1", |m| has_line(m, "STOPPING=1"))
        .await;
    // shutdown_timeout (1 s) + 30 s.
    let extend = systemd
        .until("EXTEND_TIMEOUT_USEC", |m| {
            m.starts_with("EXTEND_TIMEOUT_USEC=")
        })
        .await;
    assert_eq!(extend, "EXTEND_TIMEOUT_USEC=31000000");
    let status = daemon.wait_exit(Duration::from_secs(20)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(
        !daemon.log_contains("Could not notify") && !daemon.log_contains("WatchdogSec"),
        "{:#?}",
        daemon.log.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_too_short_for_the_evaluation_interval_is_warned_about() {
    let (dir, config) = write_config(&daemon_config());
    let mut systemd = FakeSystemd::bind(dir.path());
    // 300 ms: two 200 ms passes do not fit.
    let daemon = DaemonProcess::start_with_env(&config, &systemd.env(300_000));
    systemd.until("READY=1", |m| has_line(m, "READY=1")).await;
    assert!(
        daemon.log_contains("evaluation_interval is too long for the service's watchdog"),
        "{:#?}",
        daemon.log.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_of_command_targets_do_not_see_systemds_variables() {
    let (dir, config) = write_config(&daemon_config());
    let mut systemd = FakeSystemd::bind(dir.path());
    let mut env = systemd.env(10_000_000);
    env.push(("WATCHDOG_PID".to_owned(), "1".to_owned()));
    env.push(("RPOD_TEST_MARKER".to_owned(), "inherited".to_owned()));
    let _daemon = DaemonProcess::start_with_env(&config, &env);
    systemd.until("READY=1", |m| has_line(m, "READY=1")).await;

    // The target has no backup yet, so it is backed up at once.
    let artifact = eventually(Duration::from_secs(20), "the env backup", || async {
        records_in(&dir.path().join("state"), "env")
            .await
            .into_iter()
            .find(|r| r.status == Status::Succeeded)
            .and_then(|r| r.artifact)
    })
    .await;
    let bytes = std::fs::read(dir.path().join("backups").join(artifact)).unwrap();
    let environment = String::from_utf8(unzstd(&bytes)).unwrap();
    // Names only: the test's environment may hold secrets of the machine it runs on.
    let names: Vec<&str> = environment
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    assert!(
        names.contains(&"RPOD_TEST_MARKER"),
        "the program inherits rpod's environment otherwise: {names:?}"
    );
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(
            !names.contains(&name),
            "{name} reached the program: {names:?}"
        );
    }
}
