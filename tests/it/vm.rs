//! Azure VM backups in a Recovery Services vault against the emulator (docs/azure-vm.md): an on-demand backup with
//! its expiry, the vault's own points counting toward the RPO, the daily budget, job endings and refusals.

use std::time::Duration;

use azure_emulator::{Fault, FaultKind, ProtectedVmRef, ProtectedVmSpec, ProtectionState, Route};
use chrono::{TimeDelta, Utc};
use rpod::record::Status;
use serde_json::Value;

use crate::cloud::{Cloud, SUB};
use crate::support::{TestApp, ended_backups as finished, eventually};

const VAULT_RG: &str = "rg-vault";
const VAULT: &str = "vault-1";
const VM_RG: &str = "rg-vm";

fn vm_spec(vm: &str) -> ProtectedVmSpec {
    ProtectedVmSpec::new(SUB, VAULT_RG, VAULT, VM_RG, vm)
}

fn vm_target(name: &str, vm: &str, extra: &str, policy: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
kind = "recovery_services_vm"
subscription_id = "{SUB}"
vault_resource_group = "{VAULT_RG}"
vault = "{VAULT}"
vm_resource_group = "{VM_RG}"
vm = "{vm}"
{extra}
[targets.policy]
{policy}
"#
    )
}

fn backup_posts(cloud: &Cloud, vm: &str) -> Vec<azure_emulator::LoggedRequest> {
    let needle = format!("{vm}/backup");
    cloud
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path().to_ascii_lowercase().ends_with(&needle))
        .collect()
}

async fn spawn(cloud: &Cloud, targets: &str) -> TestApp {
    cloud
        .spawn(&cloud.config("managed_identity", targets))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_backup_asks_its_expiry_follows_the_job_and_reads_the_point_back() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    let spec = vm_spec("vm-1");
    cloud.emulator.add_protected_vm(spec.clone());
    let app = spawn(
        &cloud,
        &vm_target("vm", "vm-1", "", "rpo = \"1h\"\nexpiry = \"10d\""),
    )
    .await;
    let record = finished(&app, "vm", 1).await.remove(0);
    assert_eq!(record.status, Status::Succeeded, "{record:?}");

    let posts = backup_posts(&cloud, "vm-1");
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].path().contains("%3B"),
        "';' sent as %3B: {}",
        posts[0].path()
    );
    let body: Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(body["properties"]["objectType"], "IaasVMBackupRequest");
    let asked = chrono::DateTime::parse_from_rfc3339(
        body["properties"]["recoveryPointExpiryTimeInUTC"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .with_timezone(&Utc);
    let in_ten_days = Utc::now() + TimeDelta::days(10);
    assert!((asked - in_ten_days).num_seconds().abs() < 60, "{asked}");

    let state = cloud.emulator.protected_vm(&spec.reference()).unwrap();
    let point = state.recovery_points.last().unwrap();
    assert_eq!(record.artifact.as_deref(), Some(point.name.as_str()));
    assert_eq!(
        record.accepted_at.unwrap().timestamp_millis(),
        point.time.timestamp_millis(),
        "the recovery point is the vault's"
    );
    let expires = record.expires_at.unwrap();
    assert!(
        (expires - point.expiry).num_seconds().abs() <= 1,
        "expiry read back: {expires} vs {}",
        point.expiry
    );
    let requests = cloud.emulator.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path().to_ascii_lowercase().contains("/backupjobs/")),
        "the job was followed"
    );
    assert!(
        requests.iter().all(|r| r.method != "DELETE"),
        "nothing deleted in the vault"
    );
    let view = app.get_json("/api/v1/targets").await;
    assert_eq!(view[0]["on_demand_budget_remaining"], 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vaults_own_points_keep_the_rpo_and_rpod_triggers_only_before_a_breach() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    let spec = vm_spec("vm-2");
    cloud.emulator.add_protected_vm(spec.clone());
    let vm = spec.reference();
    let now = cloud.emulator.now();
    // A policy point 5 s old that expires in 2 days: within a 20 s RPO for about 13 s more.
    let point_time = now - TimeDelta::seconds(5);
    cloud
        .emulator
        .add_policy_recovery_point(&vm, point_time, now + TimeDelta::days(2));
    let app = spawn(
        &cloud,
        &vm_target(
            "vm",
            "vm-2",
            "",
            "rpo = \"20s\"\nexpiry = \"10d\"\nwarn_before_expiry = \"7d\"",
        ),
    )
    .await;
    let imported = eventually(
        Duration::from_secs(10),
        "the vault's point imported",
        || async {
            app.records("vm")
                .await
                .into_iter()
                .find(|r| r.trigger == "discovered")
        },
    )
    .await;
    assert!(
        imported.is_restorable(Utc::now()),
        "the vault vouches for its points: {imported:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        backup_posts(&cloud, "vm-2").is_empty(),
        "a fresh policy point costs no on-demand backup"
    );
    let view = app.get_json("/api/v1/targets").await;
    assert_eq!(view[0]["compliant"], true, "{view}");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_expiry_warnings_total", &[("target", "vm")]),
        1.0,
        "the last point expires within warn_before_expiry: vault points alone warn"
    );

    // No more policy backups: rpod backs up before the RPO would be breached.
    eventually(Duration::from_secs(30), "an on-demand backup", || async {
        (!backup_posts(&cloud, "vm-2").is_empty()).then_some(())
    })
    .await;
    let post_at = Utc::now();
    assert!(
        post_at < point_time + TimeDelta::seconds(20) + TimeDelta::seconds(2),
        "before the breach"
    );
    assert!(
        cloud
            .emulator
            .requests()
            .iter()
            .all(|r| r.method != "DELETE")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_budget_stops_posts_and_says_why() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.emulator.add_protected_vm(vm_spec("vm-3"));
    cloud.emulator.inject(
        Fault::new(
            Route::VmBackup,
            FaultKind::fail_job("UserErrorVmProvisioningStateFailed", "the VM is failed"),
        )
        .times(5),
    );
    let app = spawn(
        &cloud,
        &vm_target(
            "vm",
            "vm-3",
            "max_on_demand_per_day = 2",
            "rpo = \"1h\"\nmax_attempts = 5\nretry_backoff = \"200ms\"\nretry_max_backoff = \"500ms\"",
        ),
    )
    .await;
    let records = finished(&app, "vm", 2).await;
    assert!(
        records.iter().all(|r| r.status == Status::Failed),
        "{records:#?}"
    );
    assert_eq!(
        records[0].error_code.as_deref(),
        Some("UserErrorVmProvisioningStateFailed")
    );
    // Retries and the watchdog's cool-down keep coming; no third POST that UTC day.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(backup_posts(&cloud, "vm-3").len(), 2);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_on_demand_budget_remaining", &[("target", "vm")]),
        0.0
    );
    let view = app.get_json("/api/v1/targets").await;
    assert_eq!(view[0]["on_demand_budget_remaining"], 0);
    // A backup asked for by hand is refused, saying when the budget is back, instead of answering "started" for
    // an attempt that would not send anything.
    let response = app
        .http
        .post(app.url("/api/v1/targets/vm/backup"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = response.text().await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("00:00 UTC"), "{body}");
    let until_midnight =
        (crate::support::utc_midnight_after(Utc::now()) - Utc::now()).num_seconds();
    assert!(
        retry_after.is_some_and(|s| s.abs_diff(until_midnight.unsigned_abs()) <= 5),
        "Retry-After until 00:00 UTC: {retry_after:?}"
    );
    assert_eq!(backup_posts(&cloud, "vm-3").len(), 2, "nothing was sent");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_endings_and_refusals_are_recorded_with_their_reasons() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.emulator.add_protected_vm(vm_spec("vm-4"));
    cloud.emulator.add_protected_vm(
        vm_spec("vm-5").with_protection_state(ProtectionState::ProtectionStopped),
    );
    cloud
        .emulator
        .inject(Fault::new(Route::VmBackup, FaultKind::cancel_job()));
    let targets = format!(
        "{}{}",
        vm_target(
            "ended",
            "vm-4",
            "max_on_demand_per_day = 9",
            "rpo = \"1h\"\nmax_attempts = 1"
        ),
        vm_target("stopped", "vm-5", "", "rpo = \"1h\"\nmax_attempts = 1"),
    );
    let app = spawn(&cloud, &targets).await;
    let cancelled = finished(&app, "ended", 1).await.remove(0);
    assert_eq!(cancelled.status, Status::Failed);
    assert_eq!(
        cancelled.error_code.as_deref(),
        Some("JobCancelled"),
        "{cancelled:?}"
    );
    let stopped = finished(&app, "stopped", 1).await.remove(0);
    assert_eq!(stopped.error_code.as_deref(), Some("ItemNotProtected"));
    assert!(
        stopped
            .error_message
            .as_deref()
            .unwrap()
            .contains("ProtectionStopped")
    );
    assert!(
        backup_posts(&cloud, "vm-5").is_empty(),
        "no POST for an unprotected item"
    );
    // The vault's view of each item, read before the scheduler started.
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_target_protection_healthy", &[("target", "ended")]),
        1.0
    );
    assert_eq!(
        metrics.value("rpod_target_protection_healthy", &[("target", "stopped")]),
        0.0
    );

    let post = |fault: FaultKind| {
        let (app, cloud) = (&app, &cloud);
        async move {
            cloud.emulator.inject(Fault::new(Route::VmBackup, fault));
            let before = app.records("ended").await.len();
            let response = app
                .http
                .post(app.url("/api/v1/targets/ended/backup"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            finished(app, "ended", before + 1).await.pop().unwrap()
        }
    };
    let failed = post(FaultKind::fail_job(
        "UserErrorGuestAgentStatusUnavailable",
        "agent down",
    ))
    .await;
    assert_eq!(
        failed.error_code.as_deref(),
        Some("UserErrorGuestAgentStatusUnavailable")
    );
    assert!(
        failed
            .error_message
            .as_deref()
            .unwrap()
            .contains("agent down")
    );
    let warned = post(FaultKind::job_with_warnings()).await;
    assert_eq!(warned.status, Status::Succeeded, "{warned:?}");
    assert!(
        warned.content.as_deref().unwrap().contains("warnings"),
        "{warned:?}"
    );
    let vm4 = ProtectedVmRef::new(SUB, VAULT_RG, VAULT, VM_RG, "vm-4");
    let refused = post(FaultKind::backup_authorization_failed(&vm4)).await;
    assert_eq!(refused.error_code.as_deref(), Some("AuthorizationFailed"));
    assert!(
        refused
            .error_message
            .as_deref()
            .unwrap()
            .contains("request id"),
        "{refused:?}"
    );
    assert!(
        cloud
            .emulator
            .requests()
            .iter()
            .all(|r| r.method != "DELETE")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_is_back_at_midnight_utc() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.emulator.add_protected_vm(vm_spec("vm-6"));
    cloud.emulator.inject(
        Fault::new(
            Route::VmBackup,
            FaultKind::fail_job("UserErrorVmNotFound", "gone"),
        )
        .times(10),
    );
    let config = cloud.config(
        "managed_identity",
        &vm_target(
            "vm",
            "vm-6",
            "max_on_demand_per_day = 2",
            "rpo = \"1h\"\nmax_attempts = 5\nretry_backoff = \"200ms\"\nretry_max_backoff = \"500ms\"",
        ),
    );
    // rpod's clock starts 20 s before midnight UTC and runs at the wall's pace.
    let midnight = crate::support::utc_midnight_after(Utc::now());
    let start = midnight - TimeDelta::seconds(20);
    let (key_name, key) = cloud.key_file();
    let app = crate::support::spawn_app_in(
        &config,
        &[(key_name, key.as_slice())],
        cloud.environment(),
        rpod::clock::Clock::starting_at(start),
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the day's two attempts",
        || async { (backup_posts(&cloud, "vm-6").len() >= 2).then_some(()) },
    )
    .await;
    let spent_at = std::time::Instant::now();
    // Until midnight (rpod's), no third POST however often the watchdog looks.
    while spent_at.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            backup_posts(&cloud, "vm-6").len(),
            2,
            "no third POST that UTC day"
        );
    }
    let view = app.get_json("/api/v1/targets").await;
    assert_eq!(view[0]["on_demand_budget_remaining"], 0);
    eventually(
        Duration::from_secs(30),
        "a POST on the next UTC day",
        || async { (backup_posts(&cloud, "vm-6").len() >= 3).then_some(()) },
    )
    .await;
    let records = app.records("vm").await;
    let third = records
        .iter()
        .filter(|r| r.trigger != "discovered")
        .nth(2)
        .unwrap();
    assert!(third.requested_at >= midnight, "{third:?}");
    app.stop().await;
}

#[test]
fn kill_9_during_the_job_follows_it_after_the_restart_without_a_second_post() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloud = runtime.block_on(Cloud::fast(Duration::from_millis(200)));
    let _guard = runtime.enter();
    cloud.emulator.add_protected_vm(vm_spec("vm-7"));
    cloud.emulator.set_vm_job_duration(Duration::from_secs(6));
    let (dir, path) = crate::support::write_config(&cloud.config(
        "managed_identity",
        &vm_target("vm", "vm-7", "", "rpo = \"1h\""),
    ));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let env = cloud.identity_env();
    let mut daemon = crate::support::DaemonProcess::start_with_env(&path, &env);
    runtime.block_on(eventually(
        Duration::from_secs(20),
        "the job being followed",
        || async {
            cloud
                .emulator
                .requests()
                .iter()
                .any(|r| r.path().to_ascii_lowercase().contains("/backupjobs/"))
                .then_some(())
        },
    ));
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");

    let daemon = crate::support::DaemonProcess::start_with_env(&path, &env);
    let state = dir.path().join("state");
    let records = runtime.block_on(crate::support::resumed_backup(&state, "vm"));
    assert_eq!(backup_posts(&cloud, "vm-7").len(), 1, "exactly one POST");
    let own: Vec<_> = records
        .iter()
        .filter(|r| r.trigger != "discovered")
        .collect();
    assert_eq!(own.len(), 1, "one backup, completed once: {records:#?}");
    assert!(daemon.log_contains("Resuming"), "the resume is logged");
    drop(daemon);
}

#[test]
fn check_config_online_refuses_an_rpo_the_policy_and_the_budget_cannot_keep() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloud = runtime.block_on(Cloud::fast(Duration::from_millis(200)));
    let hourly = azure_emulator::BackupPolicy::hourly(
        "Enhanced",
        4,
        chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        12,
    );
    cloud.emulator.add_protected_vm(vm_spec("vm-daily"));
    cloud
        .emulator
        .add_protected_vm(vm_spec("vm-hourly").with_policy(hourly));
    // Daily policy, rpo 12h: one on-demand backup a day fills the gap. Hourly every 4 h in a 12 h window: the
    // worst gap is 24 h - 2 * 4 h = 16 h; rpo 6h needs 2 a day, which a budget of 2 allows.
    let fine = format!(
        "{}{}",
        vm_target("daily", "vm-daily", "", "rpo = \"12h\""),
        vm_target(
            "hourly",
            "vm-hourly",
            "max_on_demand_per_day = 2",
            "rpo = \"6h\""
        ),
    );
    let (dir, path) = crate::support::write_config(&cloud.config("managed_identity", &fine));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let env = cloud.identity_env();
    let output = crate::support::run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("VM vm-daily in vault vault-1 (Protected)"),
        "{stdout}"
    );

    // The same hourly policy with a budget of 1, and a daily policy asked for rpo 4h with 3 a day: refused.
    let tight = format!(
        "{}{}",
        vm_target("daily", "vm-daily", "", "rpo = \"4h\""),
        vm_target(
            "hourly",
            "vm-hourly",
            "max_on_demand_per_day = 1",
            "rpo = \"6h\""
        ),
    );
    std::fs::write(
        &path,
        cloud
            .config("managed_identity", &tight)
            .replace("{dir}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let output = crate::support::run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a configuration that cannot keep its RPO: {stdout}"
    );
    assert!(
        stdout.contains("rpo 4h cannot be kept for VM vm-daily")
            && stdout
                .contains("need 5 on-demand backups a day, more than max_on_demand_per_day = 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every 4h within a 12h window") && stdout.contains("gaps of up to 16h"),
        "{stdout}"
    );

    // rpod's identity may not read the item: the answer names the role to grant.
    cloud.emulator.inject(Fault::new(
        Route::VmProtectedItem,
        FaultKind::authorization_failed(
            "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/read",
            "/subscriptions/x",
        ),
    ));
    let output = crate::support::run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("grant its identity Backup Operator on the vault"),
        "{stdout}"
    );
    let _guard = runtime.enter();
    drop(cloud);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_the_vault_lists_late_completes_its_backup_at_the_next_reconciliation() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.emulator.add_protected_vm(vm_spec("vm-8"));
    cloud.emulator.set_vm_job_duration(Duration::from_secs(2));
    let config = cloud
        .config(
            "managed_identity",
            &vm_target("vm", "vm-8", "", "rpo = \"1h\"\nmax_attempts = 1"),
        )
        .replace(
            "evaluation_interval = \"300ms\"",
            "evaluation_interval = \"300ms\"\nreconcile_interval = \"1s\"",
        );
    let app = cloud.spawn(&config).await;
    eventually(Duration::from_secs(10), "the POST", || async {
        (!backup_posts(&cloud, "vm-8").is_empty()).then_some(())
    })
    .await;
    // While the backup runs reconciliation leaves the vault alone, so the backup's own listing gets this answer.
    cloud.emulator.inject(Fault::new(
        Route::VmRecoveryPoints,
        FaultKind::answer(200, r#"{"value":[],"nextLink":null}"#),
    ));
    let failed = finished(&app, "vm", 1).await.remove(0);
    let completed = eventually(Duration::from_secs(15), "the record completed", || async {
        app.records("vm")
            .await
            .into_iter()
            .find(|r| r.id == failed.id && r.status == Status::Succeeded)
    })
    .await;
    let point = cloud
        .emulator
        .protected_vm(&vm_spec("vm-8").reference())
        .unwrap()
        .recovery_points
        .pop()
        .unwrap();
    assert_eq!(completed.artifact.as_deref(), Some(point.name.as_str()));
    let audit = app.catalog().await.audit_log("vm").await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, _, action, id, _)| action == "completed" && *id == Some(failed.id)),
        "completed by reconciliation, not by the backup itself: {audit:?}"
    );
    assert!(completed.is_restorable(Utc::now()), "{completed:?}");
    let records = app.records("vm").await;
    assert_eq!(records.len(), 1, "the point is recorded once: {records:#?}");
    assert_eq!(backup_posts(&cloud, "vm-8").len(), 1);
    app.stop().await;
}
