//! The daemon as a child process: restart after SIGKILL, graceful SIGTERM, SIGHUP reloads.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use nix::sys::signal::Signal;
use rpod::record::{BackupRecord, Status};

use crate::support::{
    DaemonProcess, command_config, command_target, process_alive, rewrite_config, run_rpod,
    write_config,
};

fn daemon_config(body: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{{dir}}/state\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
         evaluation_interval = \"300ms\"\nshutdown_timeout = \"1s\"\n\n{body}"
    )
}

async fn records(dir: &std::path::Path) -> Vec<BackupRecord> {
    crate::support::records_in(&dir.join("state"), "t").await
}

async fn wait_for<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    crate::support::eventually(limit, what, check).await
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A backup command that hangs (recording its pid) while the file `slow` exists.
fn switchable() -> String {
    command_config(
        "",
        &[command_target(
            "t",
            &[
                "sh",
                "-c",
                "if [ -e {dir}/slow ]; then echo $$ > {dir}/pid; exec sleep 600; fi; echo data",
            ],
        )
        .policy("rpo = \"1h\"\nschedule = \"*/2 * * * * *\"")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_resumes_without_duplicates_and_catches_up_once() {
    let (dir, config) = write_config(&daemon_config(&switchable()));
    let mut daemon = DaemonProcess::start(&config);
    wait_for(Duration::from_secs(20), "a scheduled backup", || async {
        records(dir.path())
            .await
            .iter()
            .any(|r| r.trigger == "schedule" && r.status == Status::Succeeded)
            .then_some(())
    })
    .await;
    std::fs::write(dir.path().join("slow"), "").unwrap();
    let pid = wait_for(Duration::from_secs(20), "a hanging backup", || async {
        read_pid(&dir.path().join("pid"))
    })
    .await;
    let hanging = wait_for(Duration::from_secs(10), "the running record", || async {
        records(dir.path())
            .await
            .into_iter()
            .find(|r| r.status == Status::Running)
    })
    .await;
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10)).expect("killed");
    let killed_at = chrono::Utc::now();
    // The orphaned command is not ours to keep: end it, as an operator's reboot would.
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    std::fs::remove_file(dir.path().join("slow")).unwrap();
    // Stay down across at least one slot.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_restart = records(dir.path()).await.len();

    let daemon = DaemonProcess::start(&config);
    let restarted_at = chrono::Utc::now();
    let after = wait_for(
        Duration::from_secs(20),
        "catch-up and two more slots",
        || async {
            let records = records(dir.path()).await;
            let later = records
                .iter()
                .filter(|r| {
                    r.trigger == "schedule"
                        && r.requested_at > restarted_at
                        && r.status == Status::Succeeded
                })
                .count();
            (later >= 2).then_some(records)
        },
    )
    .await;
    drop(daemon);

    assert!(
        after.iter().all(|r| r.status != Status::Running),
        "no record stuck running: {after:#?}"
    );
    let interrupted = after.iter().find(|r| r.id == hanging.id).unwrap();
    assert_eq!(interrupted.status, Status::Interrupted);
    assert!(
        interrupted
            .error_message
            .as_deref()
            .unwrap()
            .contains("retried")
    );
    let catch_ups: Vec<&BackupRecord> = after.iter().filter(|r| r.trigger == "catch_up").collect();
    assert_eq!(
        catch_ups.len(),
        1,
        "one catch-up for the missed slots and the interrupted attempt: {after:#?}"
    );
    assert_eq!(catch_ups[0].status, Status::Succeeded);
    assert!(catch_ups[0].requested_at >= restarted_at - TimeDelta::seconds(1));
    // No slot ran twice: scheduled attempts fall in distinct 2-second slots, none between the kill and restart.
    let mut slots: Vec<i64> = after
        .iter()
        .filter(|r| r.trigger == "schedule")
        .map(|r| r.requested_at.timestamp() / 2)
        .collect();
    let total = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), total, "a slot ran twice: {after:#?}");
    assert!(
        after[before_restart..]
            .iter()
            .all(|r| r.requested_at > killed_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_backup_exits_within_the_drain_deadline_and_kills_the_command() {
    let (dir, config) = write_config(&daemon_config(&switchable()));
    std::fs::write(dir.path().join("slow"), "").unwrap();
    let mut daemon = DaemonProcess::start(&config);
    let pid = wait_for(Duration::from_secs(20), "the backup command", || async {
        read_pid(&dir.path().join("pid"))
    })
    .await;
    assert!(process_alive(pid));
    let sent = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon exits");
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    // shutdown_timeout = 1s, then the command gets SIGTERM (sleep obeys at once).
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(!process_alive(pid), "the backup command was killed");
    let records = records(dir.path()).await;
    let last = records.last().unwrap();
    assert_eq!(last.status, Status::Interrupted, "{records:#?}");
    assert!(daemon.log_contains("stopping them"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rejects_an_invalid_config_and_applies_a_valid_one() {
    let body = |extra: &str| {
        daemon_config(&format!(
            "{}{extra}",
            command_config(
                "",
                &[command_target("t", &["echo", "a"]).policy("rpo = \"1h\"")]
            )
        ))
    };
    let (dir, config) = write_config(&body(""));
    let daemon = DaemonProcess::start(&config);
    let client = reqwest::Client::new();
    let metrics = || async {
        client
            .get(daemon.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        metrics()
            .await
            .contains("rpod_target_info{kind=\"command\",target=\"t\"} 1")
    );

    rewrite_config(
        &config,
        dir.path(),
        &body(
            "\n[[targets]]\nname = \"t2\"\nkind = \"command\"\ncommand = []\nstorage = \"nowhere\"\n",
        ),
    );
    daemon.signal(Signal::SIGHUP);
    wait_for(
        Duration::from_secs(10),
        "the rejection in the log",
        || async { daemon.log_contains("reload rejected").then_some(()) },
    )
    .await;
    assert!(
        daemon.log_contains("targets[1].storage"),
        "the log says why"
    );
    let text = metrics().await;
    assert!(
        text.contains("target=\"t\""),
        "the old configuration keeps running"
    );
    assert!(!text.contains("target=\"t2\""));

    rewrite_config(
        &config,
        dir.path(),
        &body(
            "\n[[targets]]\nname = \"t2\"\nkind = \"command\"\ncommand = [\"echo\", \"b\"]\nstorage = \"local\"\n",
        ),
    );
    daemon.signal(Signal::SIGHUP);
    wait_for(
        Duration::from_secs(10),
        "the new target in /metrics",
        || async {
            metrics()
                .await
                .contains("rpod_target_info{kind=\"command\",target=\"t2\"} 1")
                .then_some(())
        },
    )
    .await;
    // And it is backed up (no restorable backup yet: at once).
    wait_for(
        Duration::from_secs(10),
        "a backup of the new target",
        || async {
            metrics()
                .await
                .contains(
                    "rpod_backups_total{outcome=\"succeeded\",target=\"t2\",trigger=\"rpo\"} 1",
                )
                .then_some(())
        },
    )
    .await;

    // Removing a target removes its series.
    rewrite_config(&config, dir.path(), &body(""));
    daemon.signal(Signal::SIGHUP);
    wait_for(
        Duration::from_secs(10),
        "the removed target's series gone",
        || async { (!metrics().await.contains("target=\"t2\"")).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_backups_go_through_the_daemon_or_run_standalone() {
    let body = &command_config(
        "",
        &[command_target("t", &["echo", "manual"]).policy("rpo = \"1h\"")],
    );
    // No daemon: the backup runs in the command itself.
    let (dir, config) = write_config(&daemon_config(body));
    let output = run_rpod(&config, &["backup", "t"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let first = records(dir.path()).await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].trigger.as_str(), first[0].status),
        ("manual", Status::Succeeded)
    );
    assert!(
        dir.path()
            .join("backups")
            .join(first[0].artifact.as_deref().unwrap())
            .exists()
    );

    let output = run_rpod(&config, &["backup", "nope"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unknown target is a usage error"
    );

    // With a daemon listening where the configuration says, the daemon takes the backup.
    let daemon = DaemonProcess::start(&config);
    let port = daemon.address.port().to_string();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let output = run_rpod(&config, &["backup", "t"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("by the running daemon"),
        "{output:?}"
    );
    let all = wait_for(
        Duration::from_secs(10),
        "the daemon's manual backup",
        || async {
            let all = records(dir.path()).await;
            (all.iter()
                .filter(|r| r.trigger == "manual" && r.status == Status::Succeeded)
                .count()
                == 2)
                .then_some(all)
        },
    )
    .await;
    assert!(
        daemon.log_contains("\"trigger\":\"manual\""),
        "the daemon logged it"
    );
    assert_eq!(
        all.iter().filter(|r| r.trigger == "rpo").count(),
        0,
        "the standalone backup kept the RPO"
    );

    let output = run_rpod(&config, &["status"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("t "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("command") && line.contains("yes"), "{line}");
    let output = run_rpod(&config, &["backups", "t", "--json"]);
    let listed: Vec<BackupRecord> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.len(), 2);
}
