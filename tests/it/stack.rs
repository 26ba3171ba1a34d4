//! Azure Stack Hub infrastructure backups against the emulator over HTTPS with a test CA (docs/azure-stack.md):
//! trigger mode end to end, one backup at a time and kill -9, watch mode, failure classes, capacity and
//! certificate metrics, and the list's early "succeeded".

use std::time::Duration;

use azure_emulator::{
    BackupLocationRef, BackupLocationSpec, Emulator, EmulatorConfig, LoggedRequest, ShareCondition,
    TokenKind,
};
use chrono::TimeDelta;
use rpod::app::Environment;
use rpod::azure::transport::LoopbackOnly;
use rpod::clock::Clock;
use rpod::record::{BackupRecord, Status};

use crate::support::{TestApp, ended_backups as ended, eventually, spawn_app_in};

const SUB: &str = "00000000-0000-0000-0000-00000000a5a5";
const REGION: &str = "local";
const RG: &str = "System.local";

/// A stamp: the emulator over HTTPS with its test CA, and one backup location.
struct Stamp {
    emulator: Emulator,
    location: BackupLocationRef,
}

impl Stamp {
    async fn start(tweak: impl FnOnce(&mut EmulatorConfig), spec: BackupLocationSpec) -> Self {
        let mut config = EmulatorConfig::fast();
        config.tls = true;
        tweak(&mut config);
        let emulator = Emulator::start(config).await.unwrap();
        let location = spec.reference();
        emulator.add_backup_location(spec);
        Self { emulator, location }
    }

    async fn trigger(duration: Duration, spec: BackupLocationSpec) -> Self {
        Self::start(|c| c.stack_backup_duration = duration, spec).await
    }

    fn ca(&self) -> Vec<u8> {
        self.emulator
            .ca_pem()
            .expect("served over TLS")
            .into_bytes()
    }

    /// The daemon's settings, the stamp's profile (its CA in `{dir}/stamp-ca.pem` when `with_ca`) and `targets`.
    fn config(&self, with_ca: bool, targets: &str) -> String {
        let ca = if with_ca {
            "ca_file = \"{dir}/stamp-ca.pem\""
        } else {
            ""
        };
        format!(
            r#"
[daemon]
state_dir = "{{dir}}/state"
listen = "127.0.0.1:0"
evaluation_interval = "300ms"
reconcile_interval = "1s"
shutdown_timeout = "2s"
log_format = "json"

[azure.profiles.stamp]
resource_manager_endpoint = "{arm}"
credential = "client_secret"
tenant_id = "adfs"
client_id = "rpod-backup"
client_secret_file = "{{dir}}/stamp-secret"
min_retry_after = "1s"
max_retry_after = "1s"
request_timeout = "5s"
{ca}
{targets}
"#,
            arm = self.emulator.base_url(),
        )
    }

    /// The files the configuration names: the CA and the client secret.
    fn files(&self) -> [(&'static str, Vec<u8>); 2] {
        [
            ("stamp-ca.pem", self.ca()),
            ("stamp-secret", b"stamp-secret-value".to_vec()),
        ]
    }

    async fn spawn(&self, with_ca: bool, targets: &str) -> TestApp {
        self.spawn_config(&self.config(with_ca, targets)).await
    }

    async fn spawn_config(&self, config: &str) -> TestApp {
        let files = self.files();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
        spawn_app_in(
            config,
            &files,
            Environment::loopback(LoopbackOnly::transport(Vec::new())),
            Clock::system(),
        )
        .await
    }

    /// The configuration with `targets` and its files written for a child process.
    fn write(&self, targets: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, path) = crate::support::write_config(&self.config(true, targets));
        for (name, content) in self.files() {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        (dir, path)
    }

    fn create_posts(&self) -> Vec<LoggedRequest> {
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST" && r.path().to_ascii_lowercase().ends_with("/createbackup")
            })
            .collect()
    }
}

fn location() -> BackupLocationSpec {
    BackupLocationSpec::new(SUB, RG, REGION)
}

fn target(name: &str, extra: &str, policy: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
kind = "azure_stack_infra"
azure_profile = "stamp"
region = "{REGION}"
subscription_id = "{SUB}"
{extra}
[targets.policy]
{policy}
"#
    )
}

/// Starts a backup of the target by hand and returns its record once it has ended.
async fn next_backup(app: &TestApp, target: &str) -> BackupRecord {
    let before = ended(app, target, 0).await.len();
    backup_now(app, target).await;
    ended(app, target, before + 1).await.remove(before)
}

/// The record failed with `code`, and its message says `says`.
fn assert_failed(record: &BackupRecord, code: &str, says: &str) {
    assert_eq!(record.error_code.as_deref(), Some(code), "{record:?}");
    assert!(
        record
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains(says),
        "{record:?}"
    );
}

async fn backup_now(app: &TestApp, target: &str) -> (u16, String) {
    let response = app
        .http
        .post(app.url(&format!("/api/v1/targets/{target}/backup")))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_over_https_with_the_stamps_ca_records_the_stamps_backup() {
    let stamp = Stamp::trigger(
        Duration::from_millis(1500),
        location().with_retention_days(5),
    )
    .await;
    let app = stamp
        .spawn(true, &target("stamp", "", "rpo = \"1h\""))
        .await;
    let record = ended(&app, "stamp", 1).await.remove(0);
    assert_eq!(record.status, Status::Succeeded, "{record:?}");
    assert_eq!(stamp.create_posts().len(), 1, "one createBackup");

    let state = stamp.emulator.backup_location(&stamp.location).unwrap();
    let made = &state.backups[0];
    assert_eq!(
        record.artifact.as_deref(),
        Some(made.name.as_str()),
        "the artifact is the stamp's backup id"
    );
    let recovery_point = record.accepted_at.unwrap();
    assert_eq!(
        recovery_point.timestamp_millis(),
        made.created.timestamp_millis(),
        "the recovery point is createdDateTime"
    );
    assert_eq!(
        record.expires_at.unwrap() - recovery_point,
        TimeDelta::days(5),
        "expiry from the location's retention"
    );
    let ended_at = made.ended.expect("the operation ended");
    assert!(
        record.completed_at.unwrap() >= ended_at,
        "completed only once the operation ended"
    );
    let content: serde_json::Value = serde_json::from_str(
        record
            .content
            .as_deref()
            .expect("recorded with its content"),
    )
    .unwrap();
    assert_eq!(content["backup"], made.name.as_str());
    assert!(
        content["time_taken"]
            .as_str()
            .is_some_and(|t| t.starts_with("PT")),
        "timeTakenToCreate recorded: {content}"
    );
    assert_eq!(
        content["encryption_cert_thumbprint"].as_str(),
        state.spec.encryption_cert_thumbprint.as_deref(),
        "the certificate recorded with the backup"
    );

    // AD FS signed rpod in, for the audience the stamp's metadata names.
    let tokens = stamp.emulator.token_requests();
    assert!(
        tokens.iter().any(|t| t.kind == Some(TokenKind::Adfs)
            && t.issued
            && t.scope.as_deref() == Some(azure_emulator::DEFAULT_STACK_AUDIENCE)),
        "{tokens:?}"
    );
    app.stop().await;

    // Without the CA, the stamp is not trusted and the error names the CA to add; nothing reaches its ARM.
    let other = Stamp::trigger(Duration::from_millis(500), location()).await;
    let app = other
        .spawn(
            false,
            &target("stamp", "", "rpo = \"1h\"\nmax_attempts = 1"),
        )
        .await;
    let record = ended(&app, "stamp", 1).await.remove(0);
    assert_ne!(record.status, Status::Succeeded);
    let message = record.error_message.clone().unwrap_or_default();
    assert!(message.contains("rpod emulator test root CA"), "{message}");
    assert!(
        message.contains("ca_file in [azure.profiles.stamp]"),
        "{message}"
    );
    assert!(other.create_posts().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_trigger_while_one_runs_sends_nothing_and_a_running_stamp_backup_is_waited_for() {
    // Backups take 3 s; the stamp's scheduler, once on, starts one every 4 "hours" of 1 s.
    let stamp = Stamp::start(
        |c| {
            c.stack_backup_duration = Duration::from_secs(3);
            c.stack_scheduler_hour = Duration::from_secs(1);
        },
        location().with_frequency_hours(4),
    )
    .await;
    let app = stamp
        .spawn(true, &target("stamp", "", "rpo = \"1h\""))
        .await;
    eventually(
        Duration::from_secs(20),
        "the first createBackup",
        || async { (!stamp.create_posts().is_empty()).then_some(()) },
    )
    .await;
    let (status, body) = backup_now(&app, "stamp").await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("coalesced"), "{body}");
    let first = ended(&app, "stamp", 1).await;
    assert_eq!(first[0].status, Status::Succeeded, "{first:?}");
    assert_eq!(
        stamp.create_posts().len(),
        1,
        "the second trigger sent nothing"
    );

    // A backup the stamp's own scheduler runs: rpod's next one waits for it to end, then asks.
    stamp.emulator.set_backup_scheduler(&stamp.location, true);
    let foreign = eventually(
        Duration::from_secs(20),
        "a backup of the stamp's scheduler",
        || async {
            let state = stamp.emulator.backup_location(&stamp.location)?;
            state
                .backups
                .iter()
                .find(|b| b.by_scheduler && b.ended.is_none())
                .cloned()
        },
    )
    .await;
    stamp.emulator.set_backup_scheduler(&stamp.location, false);
    let (status, body) = backup_now(&app, "stamp").await;
    assert_eq!(status, 202, "{body}");
    let second = ended(&app, "stamp", 2).await.remove(1);
    assert_eq!(second.status, Status::Succeeded, "{second:?}");
    // The stamp lists its own backup as done before it ends: a request rpod sent in that window was refused
    // (409) and waited out, never accepted.
    let accepted: Vec<_> = stamp
        .create_posts()
        .into_iter()
        .filter(|p| p.status == Some(202))
        .collect();
    assert_eq!(
        accepted.len(),
        2,
        "one more backup accepted, after the stamp's own"
    );
    let foreign_ended = stamp
        .emulator
        .backup_location(&stamp.location)
        .unwrap()
        .backups
        .iter()
        .find(|b| b.name == foreign.name)
        .and_then(|b| b.ended)
        .unwrap();
    assert!(
        second.requested_at <= foreign_ended && second.accepted_at.unwrap() >= foreign_ended,
        "rpod's backup was asked for while the stamp's ran and created after it ended: {second:?}, {foreign_ended}"
    );
    app.stop().await;
}

#[test]
fn kill_9_during_create_backup_resumes_the_same_operation() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stamp = runtime.block_on(Stamp::trigger(Duration::from_secs(6), location()));
    let _guard = runtime.enter();
    let (dir, path) = stamp.write(&target("stamp", "", "rpo = \"1h\""));
    let mut daemon = crate::support::DaemonProcess::start(&path);
    runtime.block_on(eventually(
        Duration::from_secs(20),
        "the operation being polled",
        || async {
            stamp
                .emulator
                .requests()
                .iter()
                .any(|r| {
                    r.method == "GET"
                        && r.path().to_ascii_lowercase().contains("/operationresults/")
                })
                .then_some(())
        },
    ));
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");

    let daemon = crate::support::DaemonProcess::start(&path);
    let state = dir.path().join("state");
    let records = runtime.block_on(crate::support::resumed_backup(&state, "stamp"));
    assert_eq!(stamp.create_posts().len(), 1, "exactly one createBackup");
    let own: Vec<_> = records
        .iter()
        .filter(|r| r.trigger != "discovered")
        .collect();
    assert_eq!(own.len(), 1, "one backup, completed once: {records:#?}");
    assert!(daemon.log_contains("Resuming"), "the resume is logged");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_imports_the_stamps_backups_and_breaks_at_the_rpo_when_they_stop() {
    // The stamp's scheduler starts a 2 s backup every 4 "hours" of 1 s, and lists it as done 0.8 s early; rpod
    // watches with an RPO of 12 s and counts a listed backup once it has been listed as done for 1 s.
    let stamp = Stamp::start(
        |c| {
            c.stack_backup_duration = Duration::from_secs(2);
            c.stack_scheduler_hour = Duration::from_secs(1);
        },
        location().with_scheduler(true).with_frequency_hours(4),
    )
    .await;
    let app = stamp
        .spawn(
            true,
            &target(
                "stamp",
                "mode = \"watch\"\nsettle = \"1s\"",
                "rpo = \"12s\"",
            ),
        )
        .await;
    let imported = eventually(
        Duration::from_secs(30),
        "two imported stamp backups",
        || async {
            let records: Vec<BackupRecord> = app
                .records("stamp")
                .await
                .into_iter()
                .filter(|r| r.trigger == "discovered")
                .collect();
            (records.len() >= 2).then_some(records)
        },
    )
    .await;
    let state = stamp.emulator.backup_location(&stamp.location).unwrap();
    for record in &imported {
        let made = state
            .backups
            .iter()
            .find(|b| Some(b.name.as_str()) == record.artifact.as_deref())
            .expect("an imported backup is the stamp's");
        assert!(made.by_scheduler, "{made:?}");
        let really_ended = made.ended.unwrap_or_else(|| {
            panic!("imported while the stamp still ran it (its list said succeeded early): {record:?} {made:?}")
        });
        assert!(
            record.completed_at.unwrap() >= really_ended - TimeDelta::milliseconds(100),
            "imported only once it really ended, not at the list's early success: {record:?} {made:?}"
        );
        assert_eq!(
            record.expires_at.unwrap() - record.accepted_at.unwrap(),
            TimeDelta::days(7),
            "expiry from the location's default retention"
        );
    }
    eventually(
        Duration::from_secs(10),
        "compliance from the stamp's backups",
        || async {
            (app.metrics()
                .await
                .get("rpod_target_rpo_compliant", &[("target", "stamp")])
                == Some(1.0))
            .then_some(())
        },
    )
    .await;
    let (status, body) = backup_now(&app, "stamp").await;
    assert_eq!(
        status, 409,
        "a watched target is never backed up by rpod: {body}"
    );

    // The stamp's scheduler stops: compliance breaks at the RPO, and rpod still never asks for a backup.
    stamp.emulator.set_backup_scheduler(&stamp.location, false);
    eventually(Duration::from_secs(30), "the RPO breached", || async {
        (app.metrics()
            .await
            .get("rpod_target_rpo_compliant", &[("target", "stamp")])
            == Some(0.0))
        .then_some(())
    })
    .await;
    assert!(
        stamp.create_posts().is_empty(),
        "rpod never POSTs in watch mode"
    );
    assert!(
        app.records("stamp")
            .await
            .iter()
            .all(|r| r.trigger == "discovered"),
        "no backup of rpod's own"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_map_to_the_stamps_classes_and_share_metrics_follow_the_stamp() {
    let stamp = Stamp::trigger(
        Duration::from_millis(300),
        location().with_available_capacity(45 * 1024 * 1024 * 1024),
    )
    .await;
    let app = stamp
        .spawn(true, &target("stamp", "", "rpo = \"1h\"\nmax_attempts = 1"))
        .await;
    let first = ended(&app, "stamp", 1).await;
    assert_eq!(first[0].status, Status::Succeeded, "{first:?}");
    assert_eq!(
        first[0].size_bytes,
        Some(10 * 1024 * 1024 * 1024),
        "the share's loss is the backup's size"
    );

    // One role fails: the backup counts, with the role as a warning.
    stamp.emulator.fail_roles(&stamp.location, &["NRP"]);
    let partial = next_backup(&app, "stamp").await;
    assert_eq!(partial.status, Status::Succeeded, "{partial:?}");
    assert!(
        partial
            .content
            .as_deref()
            .unwrap_or_default()
            .contains("role NRP failed"),
        "{partial:?}"
    );

    // The share fills up: the failure is ShareOutOfCapacity with its remedy first, counted by reason; and so on
    // for each of the stamp's classes.
    for (condition, code, says) in [
        (
            ShareCondition::OutOfCapacity,
            "ShareOutOfCapacity",
            "the backup share is full",
        ),
        (
            ShareCondition::Unreachable,
            "ShareUnreachable",
            "the stamp cannot reach the backup share",
        ),
        (
            ShareCondition::PathNotFound,
            "SharePathNotFound",
            "the backup path does not exist",
        ),
        (
            ShareCondition::AuthenticationFailed,
            "ShareAuthenticationFailed",
            "the stamp cannot sign in to the backup share",
        ),
        (
            ShareCondition::Fault,
            "BackupFault",
            "the stamp's backup failed",
        ),
    ] {
        stamp
            .emulator
            .set_share_condition(&stamp.location, Some(condition));
        let failed = next_backup(&app, "stamp").await;
        assert_eq!(failed.status, Status::Failed, "{failed:?}");
        assert_failed(&failed, code, says);
        assert!(
            failed
                .error_message
                .as_deref()
                .unwrap_or_default()
                .starts_with(says),
            "the remedy comes first: {failed:?}"
        );
    }
    stamp.emulator.set_share_condition(&stamp.location, None);
    // Every role fails: Failed, as a BackupFault naming them.
    stamp
        .emulator
        .fail_roles(&stamp.location, &azure_emulator::STACK_ROLES);
    assert_failed(&next_backup(&app, "stamp").await, "BackupFault", "NRP");

    // The certificate changes and the share shrinks: the metrics follow at the next reconciliation.
    stamp.emulator.set_encryption_cert(
        &stamp.location,
        Some("0123456789ABCDEF0123456789ABCDEF01234567"),
    );
    stamp
        .emulator
        .set_available_capacity(&stamp.location, 15 * 1024 * 1024 * 1024);
    let metrics = eventually(Duration::from_secs(20), "the share's metrics", || async {
        let metrics = app.metrics().await;
        let changed = metrics.get(
            "rpod_target_encryption_cert_changed_timestamp_seconds",
            &[("target", "stamp")],
        );
        let available = metrics.get("rpod_storage_available_bytes", &[("target", "stamp")]);
        (changed.is_some_and(|c| c > 0.0) && available == Some(15.0 * 1024.0 * 1024.0 * 1024.0))
            .then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.value("rpod_target_backups_that_fit", &[("target", "stamp")]),
        1.0,
        "15 GiB free holds one more 10 GiB backup"
    );
    assert_eq!(
        metrics.value("rpod_target_protection_healthy", &[("target", "stamp")]),
        0.0,
        "a share with room for fewer than two backups is unhealthy"
    );
    for (reason, count) in [
        ("ShareOutOfCapacity", 1.0),
        ("ShareUnreachable", 1.0),
        ("SharePathNotFound", 1.0),
        ("ShareAuthenticationFailed", 1.0),
        ("BackupFault", 2.0),
    ] {
        assert_eq!(
            metrics.value(
                "rpod_backup_failures_total",
                &[("target", "stamp"), ("reason", reason)]
            ),
            count,
            "{reason}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lists_early_success_does_not_complete_a_backup_before_its_operation() {
    // A 5 s backup that the list shows as succeeded after 3 s; reconciliation runs every second meanwhile.
    let stamp = Stamp::trigger(Duration::from_secs(5), location()).await;
    let app = stamp
        .spawn(true, &target("stamp", "settle = \"0s\"", "rpo = \"1h\""))
        .await;
    let early = eventually(
        Duration::from_secs(20),
        "the list's early success",
        || async {
            let state = stamp.emulator.backup_location(&stamp.location)?;
            let backup = state.backups.first()?.clone();
            let listed_done =
                stamp.emulator.now() >= backup.created + TimeDelta::milliseconds(3200);
            (listed_done && backup.ended.is_none()).then_some(backup)
        },
    )
    .await;
    // Two reconciliation rounds while the list says "succeeded" and the operation still runs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let still_running = stamp.emulator.backup_location(&stamp.location).unwrap();
    assert!(
        still_running.backups[0].ended.is_none(),
        "the test outran the backup"
    );
    let records = app.records("stamp").await;
    assert!(
        records
            .iter()
            .all(|r| r.status == Status::Running && r.trigger != "discovered"),
        "nothing completed or imported before the operation ended: {records:#?}"
    );
    let record = ended(&app, "stamp", 1).await.remove(0);
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(record.artifact.as_deref(), Some(early.name.as_str()));
    let ended_at = stamp
        .emulator
        .backup_location(&stamp.location)
        .unwrap()
        .backups[0]
        .ended
        .unwrap();
    assert!(
        record.completed_at.unwrap() >= ended_at,
        "completed after the operation ended"
    );
    assert!(
        app.records("stamp")
            .await
            .iter()
            .all(|r| r.trigger != "discovered"),
        "the backup was recorded once"
    );
    app.stop().await;
}

#[test]
fn check_config_online_says_how_to_turn_the_stamps_scheduler_off() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stamp = runtime.block_on(Stamp::trigger(
        Duration::from_secs(1),
        location().with_scheduler(true),
    ));
    let _guard = runtime.enter();
    let (_dir, path) = stamp.write(&target("stamp", "", "rpo = \"12h\""));
    let output = crate::support::run_rpod(&path, &["check-config", "--online"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("Disable automatic backups"),
        "{stdout}{stderr}"
    );

    stamp.emulator.set_backup_scheduler(&stamp.location, false);
    let output = crate::support::run_rpod(&path, &["check-config", "--online"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("backup location local"), "{stdout}");
    assert!(
        stamp.create_posts().is_empty(),
        "check-config never starts a backup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entra_id_stamp_signs_in_for_the_audience_of_its_metadata_and_a_scheduler_left_on_is_unhealthy()
 {
    // An Entra ID stamp whose built-in scheduler (every 12 "hours" of an hour: not within this test) is on while
    // rpod triggers.
    let stamp = Stamp::start(
        |c| {
            c.stack_backup_duration = Duration::from_millis(300);
            c.stack_identity = azure_emulator::StackIdentity::EntraId;
        },
        location().with_scheduler(true),
    )
    .await;
    let config = stamp
        .config(true, &target("stamp", "", "rpo = \"1h\""))
        .replace(
            "tenant_id = \"adfs\"",
            "tenant_id = \"tenant-of-the-stamp\"",
        );
    let app = stamp.spawn_config(&config).await;
    let record = ended(&app, "stamp", 1).await.remove(0);
    assert_eq!(record.status, Status::Succeeded, "{record:?}");
    let tokens = stamp.emulator.token_requests();
    let audience_scope = format!("{}/.default", azure_emulator::DEFAULT_STACK_AUDIENCE);
    assert!(
        tokens
            .iter()
            .any(|t| t.kind == Some(TokenKind::ClientSecret)
                && t.tenant.as_deref() == Some("tenant-of-the-stamp")
                && t.scope.as_deref() == Some(audience_scope.as_str())
                && t.issued),
        "{tokens:?}"
    );
    assert_eq!(
        app.metrics()
            .await
            .value("rpod_target_protection_healthy", &[("target", "stamp")]),
        0.0,
        "the stamp's scheduler is on while rpod triggers"
    );

    // A location without an encryption certificate: the backup fails saying so, and nothing is asked of the stamp.
    stamp.emulator.set_encryption_cert(&stamp.location, None);
    assert_failed(
        &next_backup(&app, "stamp").await,
        "BackupFault",
        "no encryption certificate",
    );
    assert_eq!(
        stamp.create_posts().len(),
        1,
        "no createBackup without a certificate"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_the_stamp_prunes_after_its_retention_is_marked_pruned_by_the_platform() {
    // The stamp keeps backups 2 days; one of its backups has 4 seconds left.
    let stamp = Stamp::trigger(
        Duration::from_millis(300),
        location().with_retention_days(2),
    )
    .await;
    let created = stamp.emulator.now() - TimeDelta::days(2) + TimeDelta::seconds(4);
    let name = stamp
        .emulator
        .add_stack_backup(&stamp.location, created, "Succeeded");
    let app = stamp
        .spawn(
            true,
            &target("stamp", "mode = \"watch\"\nsettle = \"0s\"", "rpo = \"1h\""),
        )
        .await;
    let imported = eventually(
        Duration::from_secs(20),
        "the stamp's backup imported",
        || async {
            app.records("stamp")
                .await
                .into_iter()
                .find(|r| r.artifact.as_deref() == Some(name.as_str()))
        },
    )
    .await;
    assert_eq!(imported.status, Status::Discovered, "{imported:?}");
    assert_eq!(
        imported.expires_at.unwrap().timestamp_millis(),
        (created + TimeDelta::days(2)).timestamp_millis(),
        "expiry from the stamp's retention"
    );
    let pruned = eventually(
        Duration::from_secs(20),
        "the backup pruned by the stamp",
        || async {
            app.records("stamp")
                .await
                .into_iter()
                .find(|r| r.id == imported.id && r.status != Status::Discovered)
        },
    )
    .await;
    assert_eq!(
        pruned.status,
        Status::Pruned,
        "gone after its expiry is pruned, not missing: {pruned:?}"
    );
    let audit = app.catalog().await.audit_log("stamp").await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, actor, action, backup_id, _)| actor == "platform"
                && action == "pruned"
                && *backup_id == Some(imported.id)),
        "{audit:#?}"
    );
    app.stop().await;
}
