//! API Management restores against the emulator and Azurite (docs/restore.md): guards before any POST, a
//! restore into a second service with its duration and warnings, failures with Azure's words, resumption after
//! kill -9, the standby and drills.

use std::time::Duration;

use azure_emulator::{CertificateSource, Fault, FaultKind, Route, ServiceSpec};
use rpod::record::Status;
use serde_json::{Value, json};

use crate::cloud::{CONTAINER, Cloud, RG, SUB, target};
use crate::support::{
    DaemonProcess, eventually, guards_of, insert_succeeded, succeeded_backups as succeeded,
    write_config,
};

const POLL: &str = "200ms";

/// An `apim` target `name` on `service` with the given extra TOML after its keys.
fn apim_target(name: &str, service: &str, policy: &str, extra: &str) -> String {
    target(name, service, policy).replace("[targets.policy]", &format!("{extra}\n[targets.policy]"))
}

fn restore_into(name: &str, service: &str) -> String {
    format!("[[targets.restore_into]]\nname = \"{name}\"\nservice = \"{service}\"\n")
}

fn restore_posts(cloud: &Cloud, service: &str) -> usize {
    cloud
        .requests_for(service)
        .iter()
        .filter(|r| r.method == "POST" && r.path().ends_with("/restore"))
        .count()
}

fn refused_by(answer: &Value) -> &str {
    answer["error"]
        .as_str()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_a_second_service_is_measured_warns_what_it_does_not_carry_and_is_no_change()
{
    let cloud = Cloud::fast(Duration::from_millis(600)).await;
    cloud.emulator.add_service(
        ServiceSpec::new(SUB, RG, "prod")
            .with_sku("Premium", 1)
            .with_system_identity(true)
            .with_user_identity("11111111-2222-3333-4444-555555555555")
            .with_custom_hostname("api.contoso.example", CertificateSource::KeyVault),
    );
    cloud.emulator.add_service(
        ServiceSpec::new(SUB, RG, "dr")
            .with_sku("Premium", 1)
            .with_portal_published(false),
    );
    let on_change = format!(
        "rpo = \"1h\"\non_change = {{ detect = \"sync_state\", poll_interval = \"{POLL}\", quiet_period = \
         \"300ms\", max_delay = \"5s\", min_interval = \"0s\" }}"
    );
    let config = cloud.config(
        "managed_identity",
        &format!(
            "{}{}",
            apim_target("prod", "prod", "rpo = \"1h\"", &restore_into("dr", "dr")),
            target("dr", "dr", &on_change)
        ),
    );
    let app = cloud.spawn(&config).await;
    let backup = succeeded(&app, "prod", 1).await.remove(0);
    succeeded(&app, "dr", 1).await;
    // The destination's change detection has its baseline.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let dr_backups = app.records("dr").await.len();

    let (status, plan) = app.post_restore("prod", json!({"into": "dr"})).await;
    assert_eq!(status, 202, "{plan}");
    let guards = guards_of(&plan);
    assert_eq!(
        guards,
        [
            "destination",
            "backup",
            "artifact",
            "in_flight",
            "destination_exists",
            "destination_tier",
            "destination_sku",
            "destination_busy"
        ],
        "no confirmation is asked for another service"
    );
    let record = app
        .finished_restore(plan["restore_id"].as_i64().unwrap())
        .await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["backup_id"], backup.id);
    assert_eq!(record["into"], "dr");
    assert!(
        record["destination"]
            .as_str()
            .unwrap()
            .ends_with("/service/dr")
    );
    assert!(
        record["duration_seconds"].as_f64().unwrap() >= 0.5,
        "accepted to completed: {record}"
    );
    let warnings: Vec<&str> = record["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("api.contoso.example") && w.contains("KeyVault")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("managed identity")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("developer portal")),
        "{warnings:?}"
    );
    assert_eq!(restore_posts(&cloud, "dr"), 1);
    let state = cloud.emulator.service(SUB, RG, "dr").unwrap();
    assert_eq!(state.restores_completed, 1);

    // The restore moved dr's etag and configuration date; that is rpod's own doing, not a change to back up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<_> = app.records("dr").await;
    assert_eq!(
        after.len(),
        dr_backups,
        "no change backup of the destination: {after:#?}"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_change_events_total",
            &[("target", "dr"), ("source", "sync_state")]
        ),
        0.0
    );
    assert_eq!(
        metrics.value(
            "rpod_restores_total",
            &[
                ("target", "prod"),
                ("trigger", "manual"),
                ("outcome", "succeeded")
            ]
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guard_refuses_before_any_post_with_its_reason() {
    let cloud = Cloud::fast(Duration::from_millis(400)).await;
    cloud.service("src");
    cloud
        .emulator
        .add_service(ServiceSpec::new(SUB, RG, "standard").with_sku("Standard", 1));
    cloud
        .emulator
        .add_service(ServiceSpec::new(SUB, RG, "v2").with_sku("StandardV2", 1));
    cloud.service("busy");
    cloud.service("slow");
    let extra = [
        restore_into("standard", "standard"),
        restore_into("v2", "v2"),
        restore_into("busy", "busy"),
        restore_into("slow", "slow"),
        restore_into("missing", "nowhere"),
    ]
    .concat();
    let config = cloud.config(
        "managed_identity",
        &apim_target("src", "src", "rpo = \"1h\"", &extra),
    );
    let app = cloud.spawn(&config).await;
    let backup = succeeded(&app, "src", 1).await.remove(0);
    let catalog = app.catalog().await;
    let now = chrono::Utc::now();
    let expired = insert_succeeded(
        &catalog,
        "src",
        now - chrono::TimeDelta::days(40),
        now - chrono::TimeDelta::days(10),
        |id| format!("src/old-{id}.apimbackup"),
    )
    .await;

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"into": "slow", "backup_id": expired}),
            "backup",
            "expired on",
        ),
        (
            json!({"into": "standard"}),
            "destination_sku",
            "current SKU is 'Standard', backup SKU is 'Premium'",
        ),
        (json!({"into": "v2"}), "destination_tier", "StandardV2"),
        (
            json!({"into": "missing"}),
            "destination_exists",
            "does not exist",
        ),
        (
            json!({"into": "elsewhere"}),
            "destination",
            "unknown restore destination",
        ),
        (json!({}), "confirmation", "--yes"),
    ];
    for (body, guard, words) in cases {
        let (status, answer) = app.post_restore("src", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(refused_by(&answer), guard, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(words),
            "{body}: {answer}"
        );
    }

    // Busy: another operation (not rpod's) runs on the destination.
    let token = cloud.emulator.issue_token();
    let url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/busy/backup?api-version=2024-05-01",
        cloud.emulator.base_url()
    );
    cloud
        .emulator
        .set_operation_duration(Duration::from_secs(20));
    let accepted = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&json!({
            "storageAccount": cloud.azurite.account(), "containerName": CONTAINER,
            "backupName": "other-tool", "accessType": "SystemAssignedManagedIdentity"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let (status, answer) = app.post_restore("src", json!({"into": "busy"})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(refused_by(&answer), "destination_busy", "{answer}");

    // In flight: rpod's own restore into the same service runs.
    let (status, first) = app.post_restore("src", json!({"into": "slow"})).await;
    assert_eq!(status, 202, "{first}");
    let (status, answer) = app.post_restore("src", json!({"into": "slow"})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(refused_by(&answer), "in_flight", "{answer}");

    // The artifact vanished from the container.
    cloud
        .azurite
        .delete_blob(CONTAINER, backup.artifact.as_deref().unwrap())
        .await
        .unwrap();
    let (status, answer) = app
        .post_restore("src", json!({"into": "standard", "backup_id": backup.id}))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(refused_by(&answer), "artifact", "{answer}");

    for service in ["standard", "v2", "busy", "nowhere"] {
        assert_eq!(
            restore_posts(&cloud, service),
            0,
            "no restore POST to {service}"
        );
    }
    assert_eq!(
        restore_posts(&cloud, "src"),
        0,
        "nothing restored over the source"
    );
    assert_eq!(
        restore_posts(&cloud, "slow"),
        1,
        "only the one restore that passed"
    );
    let refusals = catalog
        .audit_log("src")
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, _, action, _, _)| action == "restore_refused")
        .count();
    assert_eq!(refusals, 9, "one audit row per refusal");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_azure_fails_on_a_poll_is_failed_with_its_code_message_and_request_id() {
    let cloud = Cloud::fast(Duration::from_millis(600)).await;
    cloud.service("p");
    cloud.service("q");
    let config = cloud.config(
        "managed_identity",
        &apim_target("p", "p", "rpo = \"1h\"", &restore_into("q", "q")),
    );
    let app = cloud.spawn(&config).await;
    succeeded(&app, "p", 1).await;
    // Long enough to be polled while it runs: the failure shows on a poll.
    cloud.emulator.set_restore_duration(Duration::from_secs(3));
    cloud.emulator.inject(Fault::new(
        Route::Restore,
        FaultKind::fail_operation(
            "RestoreFailed",
            "Cannot restore: the storage account is unreachable",
        ),
    ));
    let (status, plan) = app.post_restore("p", json!({"into": "q"})).await;
    assert_eq!(status, 202, "{plan}");
    let record = app
        .finished_restore(plan["restore_id"].as_i64().unwrap())
        .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["error_code"], "RestoreFailed", "{record}");
    let message = record["error_message"].as_str().unwrap();
    assert!(
        message.contains("storage account is unreachable"),
        "{message}"
    );
    assert!(message.contains("request id"), "{message}");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_restores_total",
            &[
                ("target", "p"),
                ("trigger", "manual"),
                ("outcome", "failed")
            ]
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_follows_every_backup_and_its_metric_follows_the_standby() {
    let cloud = Cloud::fast(Duration::from_millis(300)).await;
    cloud.service("primary");
    cloud.service("warm");
    let extra = format!(
        "{}[targets.standby]\ninto = \"warm\"\nrpo = \"1h\"\n",
        restore_into("warm", "warm")
    );
    let config = cloud.config(
        "managed_identity",
        &apim_target(
            "primary",
            "primary",
            "rpo = \"1h\"\nschedule = \"*/3 * * * * *\"",
            &extra,
        ),
    );
    let app = cloud.spawn(&config).await;
    let standby = eventually(Duration::from_secs(40), "two standby restores", || async {
        let restores = app.get_json("/api/v1/targets/primary/restores").await;
        let done: Vec<Value> = restores
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "standby" && r["status"] == "succeeded")
            .cloned()
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    assert_ne!(
        standby[0]["backup_id"], standby[1]["backup_id"],
        "each backup restored"
    );
    let newest = app
        .catalog()
        .await
        .backup(standby[0]["backup_id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    let metrics = app.metrics().await;
    let at = metrics.value(
        "rpod_standby_recovery_point_timestamp_seconds",
        &[("target", "primary")],
    );
    #[allow(clippy::cast_precision_loss)]
    let restored = newest.accepted_at.unwrap().timestamp_millis() as f64 / 1000.0;
    assert!(at >= restored, "{at} >= {restored}");
    assert_eq!(
        metrics.value("rpod_standby_rpo_seconds", &[("target", "primary")]),
        3600.0
    );
    assert!(restore_posts(&cloud, "warm") >= 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apim_drills_restore_into_scratch_and_verify_counts_and_a_failed_restore_fails_the_drill() {
    let cloud = Cloud::fast(Duration::from_millis(300)).await;
    cloud.emulator.add_service(
        ServiceSpec::new(SUB, RG, "live")
            .with_sku("Premium", 1)
            .with_system_identity(true)
            .with_content(7, 3),
    );
    cloud
        .emulator
        .add_service(ServiceSpec::new(SUB, RG, "scratch").with_sku("Premium", 1));
    let extra = format!(
        "{}[targets.drill]\nschedule = \"*/2 * * * * *\"\ninto = \"scratch\"\n",
        restore_into("scratch", "scratch")
    );
    let config = cloud.config(
        "managed_identity",
        &apim_target("live", "live", "rpo = \"1h\"\nrto = \"1m\"", &extra),
    );
    let app = cloud.spawn(&config).await;
    let backup = succeeded(&app, "live", 1).await.remove(0);
    assert_eq!(
        backup.content.as_deref(),
        Some(r#"{"apis":7,"products":3}"#)
    );
    let drill = app.restore_where("live", "drill", "succeeded").await;
    let verified = drill["verified"].as_str().unwrap();
    assert!(verified.contains("7 APIs and 3 products"), "{verified}");
    assert_eq!(drill["into"], "scratch");
    let metrics = app.metrics().await;
    assert!(
        metrics.value(
            "rpod_restore_drill_last_success_timestamp_seconds",
            &[("target", "live")]
        ) > 0.0
    );
    assert_eq!(
        metrics.value("rpod_target_rto_seconds", &[("target", "live")]),
        60.0
    );

    cloud.emulator.set_restore_duration(Duration::from_secs(3));
    cloud.emulator.inject(Fault::new(
        Route::Restore,
        FaultKind::fail_operation("RestoreFailed", "Cannot restore: backup expired"),
    ));
    let failed = app.restore_where("live", "drill", "failed").await;
    assert_eq!(failed["error_code"], "RestoreFailed", "{failed}");
    let metrics = app.metrics().await;
    assert!(
        metrics.value(
            "rpod_restore_drill_last_failure_timestamp_seconds",
            &[("target", "live")]
        ) > 0.0
    );
    // `rpod status` shows the last drill.
    let status = app.get_json("/api/v1/targets").await;
    let live = status
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "live")
        .unwrap();
    assert!(live["last_drill"].is_object(), "{live}");
    app.stop().await;
}

#[test]
fn kill_9_during_a_restore_follows_the_same_operation_after_the_restart_with_one_post() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloud = runtime.block_on(Cloud::fast(Duration::from_millis(300)));
    let _guard = runtime.enter();
    cloud.service("origin");
    cloud.service("target-svc");
    let (dir, path) = write_config(&cloud.config(
        "managed_identity",
        &format!(
            "{}\n",
            apim_target(
                "origin",
                "origin",
                "rpo = \"1h\"",
                &restore_into("t", "target-svc")
            )
        ),
    ));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let env = cloud.identity_env();
    let mut daemon = DaemonProcess::start_with_env(&path, &env);
    let state = dir.path().join("state");
    runtime.block_on(eventually(Duration::from_secs(30), "a backup", || async {
        crate::support::records_in(&state, "origin")
            .await
            .into_iter()
            .find(|r| r.status == Status::Succeeded)
    }));
    cloud.emulator.set_restore_duration(Duration::from_secs(6));
    let answer: Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(daemon.url("/api/v1/targets/origin/restore"))
            .json(&json!({"into": "t"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let id = answer["restore_id"].as_i64().expect("started");
    runtime.block_on(eventually(
        Duration::from_secs(20),
        "the restore being polled",
        || async {
            cloud
                .requests_for("target-svc")
                .iter()
                .any(|r| r.method == "GET" && r.status == Some(202))
                .then_some(())
        },
    ));
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");

    let daemon = DaemonProcess::start_with_env(&path, &env);
    let record = runtime.block_on(eventually(
        Duration::from_secs(40),
        "the resumed restore",
        || async {
            let catalog = rpod::catalog::Catalog::open_read_only(&state).await.ok()?;
            let record = catalog.restore(id).await.ok().flatten();
            catalog.close().await;
            record.filter(|r| r.status != Status::Running)
        },
    ));
    assert_eq!(record.status, Status::Succeeded, "{record:?}");
    assert_eq!(restore_posts(&cloud, "target-svc"), 1, "exactly one POST");
    assert!(record.duration_seconds.unwrap() >= 5.0, "{record:?}");
    assert_eq!(
        cloud
            .emulator
            .service(SUB, RG, "target-svc")
            .unwrap()
            .restores_completed,
        1
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpod_restore_dry_run_prints_every_verdict_and_writes_nothing() {
    let cloud = Cloud::fast(Duration::from_millis(300)).await;
    cloud.service("live-dry");
    cloud.service("dr-dry");
    cloud
        .emulator
        .add_service(ServiceSpec::new(SUB, RG, "dr-standard").with_sku("Standard", 1));
    let extra = [
        restore_into("dr", "dr-dry"),
        restore_into("std", "dr-standard"),
    ]
    .concat();
    let config = cloud.config(
        "managed_identity",
        &apim_target("live", "live-dry", "rpo = \"1h\"", &extra),
    );
    let app = cloud.spawn(&config).await;
    let backup = succeeded(&app, "live", 1).await.remove(0);
    let dir = app.stop().await;
    let path = dir.path().join("rpod.toml");
    let state = dir.path().join("state");
    let catalog_state = || async {
        let catalog = rpod::catalog::Catalog::open_read_only(&state)
            .await
            .unwrap();
        let audit = catalog.audit_log("live").await.unwrap().len();
        let restores = catalog.restores("live", None, 100).await.unwrap().len();
        catalog.close().await;
        (audit, restores)
    };
    let before = catalog_state().await;
    let requests_before = cloud.emulator.requests().len();
    let env = cloud.identity_env();

    let output = crate::support::run_rpod_with_env(
        &path,
        &["restore", "live", "--into", "dr", "--dry-run"],
        &env,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for guard in [
        "destination",
        "backup",
        "artifact",
        "in_flight",
        "destination_exists",
        "destination_tier",
        "destination_sku",
        "destination_busy",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(guard)),
            "{guard} in {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("backup {}", backup.id)),
        "{stdout}"
    );
    assert!(stdout.contains("nothing was written"), "{stdout}");

    // A refused dry run names the guard and exits 1, and writes nothing either.
    let output = crate::support::run_rpod_with_env(
        &path,
        &["restore", "live", "--into", "std", "--dry-run"],
        &env,
    );
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("NO") && l.contains("destination_sku")),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("restore refused: destination_sku"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(catalog_state().await, before, "no audit row, no restore");
    let writes: Vec<_> = cloud.emulator.requests()[requests_before..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    assert!(writes.is_empty(), "only reads reached Azure: {writes:?}");
    assert_eq!(restore_posts(&cloud, "dr-dry"), 0);
}
