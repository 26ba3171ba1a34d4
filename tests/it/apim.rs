//! API Management end to end: the daemon against the in-repo Azure emulator, with backups landing in a real
//! Azurite. Every request stays on loopback: the SDK transport refuses other hosts and rewrites the managed
//! identity endpoint to the emulator.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use azure_emulator::{
    CorsRule, EmulatorConfig, Fault, FaultKind, LoggedRequest, Route, ServiceSpec,
};
use chrono::Utc;
use rpod::clock::Clock;
use rpod::record::Status;

use crate::cloud::{CONTAINER, Cloud, RG, SUB, THIRTY_DAYS_MS, target};
use crate::support::{
    DaemonProcess, eventually, run_rpod, run_rpod_with_env, spawn_app_in,
    succeeded_backups as succeeded, write_config,
};

/// GETs of each operation, grouped by operation id in order of the first poll.
fn polls_by_operation(requests: &[LoggedRequest]) -> Vec<Vec<LoggedRequest>> {
    let mut groups: BTreeMap<usize, (String, Vec<LoggedRequest>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for request in requests.iter().filter(|r| r.method == "GET") {
        let Some((_, id)) = request.path().split_once("operationresults/") else {
            continue;
        };
        let index = order.iter().position(|o| o == id).unwrap_or_else(|| {
            order.push(id.to_owned());
            order.len() - 1
        });
        groups
            .entry(index)
            .or_insert_with(|| (id.to_owned(), Vec::new()))
            .1
            .push(request.clone());
    }
    groups.into_values().map(|(_, polls)| polls).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_backups_for_each_access_type_land_in_azurite_with_their_expiry() {
    let cloud = Cloud::fast(Duration::from_millis(2500)).await;
    let policy = "rpo = \"1h\"\nschedule = \"*/4 * * * * *\"";
    let mut config = String::new();
    let mut targets = Vec::new();
    for (index, access) in ["access_key", "managed_identity", "user_managed_identity"]
        .into_iter()
        .enumerate()
    {
        let storage = format!("blob{index}");
        let body = cloud
            .config(access, "")
            .split("[storage.blob]")
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if index == 0 {
            config.push_str(&body[0]);
        }
        let _ = write!(config, "[storage.{storage}]{}", body[1]);
        let service = format!("svc-{index}");
        cloud.service(&service);
        config.push_str(
            &target(&format!("apim-{index}"), &service, policy)
                .replace("storage = \"blob\"", &format!("storage = \"{storage}\"")),
        );
        targets.push((format!("apim-{index}"), service, access));
    }
    let app = cloud.spawn(&config).await;

    for (name, service, access) in &targets {
        let records = eventually(
            Duration::from_secs(40),
            "a scheduled APIM backup",
            || async {
                let records = app.records(name).await;
                records
                    .iter()
                    .any(|r| r.status == Status::Succeeded && r.trigger == "schedule")
                    .then_some(records)
            },
        )
        .await;
        let blobs = cloud.blobs().await;
        for record in records.iter().filter(|r| r.status == Status::Succeeded) {
            let accepted = record.accepted_at.expect("recovery point recorded");
            assert_eq!(
                record.expires_at.unwrap().timestamp_millis() - accepted.timestamp_millis(),
                THIRTY_DAYS_MS,
                "expires_at = accepted_at + 30 days"
            );
            assert!(accepted >= record.requested_at && accepted <= record.completed_at.unwrap());
            assert_eq!(record.sku.as_deref(), Some("Premium"));
            assert!(record.etag.is_some(), "etag of the final resource recorded");
            let artifact = record.artifact.clone().unwrap();
            assert!(
                blobs.contains(&artifact),
                "{artifact} in Azurite: {blobs:?}"
            );
            assert!(
                record.size_bytes.is_some_and(|s| s > 0),
                "blob size read back"
            );
        }
        // The request log: one POST per backup, then one GET per Retry-After (1 s) until the 200.
        let requests = cloud.requests_for(service);
        let posts: Vec<_> = requests.iter().filter(|r| r.method == "POST").collect();
        let started = records.iter().filter(|r| r.accepted_at.is_some()).count();
        assert_eq!(posts.len(), started, "one POST per backup: {requests:#?}");
        let expected_body = match *access {
            "access_key" => "\"accessType\":\"AccessKey\"",
            "managed_identity" => "\"accessType\":\"SystemAssignedManagedIdentity\"",
            _ => "\"accessType\":\"UserAssignedManagedIdentity\"",
        };
        for post in &posts {
            assert!(post.body.contains(expected_body), "{}", post.body);
            assert_eq!(post.body.contains("accessKey"), *access == "access_key");
            assert_eq!(
                post.body.contains("clientId"),
                *access == "user_managed_identity"
            );
        }
        let operations = polls_by_operation(&requests);
        for (post, polls) in posts.iter().zip(&operations) {
            let mut previous = post.at;
            for poll in polls {
                let gap = poll.at.duration_since(previous);
                assert!(gap >= Duration::from_millis(950), "polled after {gap:?}");
                previous = poll.at;
            }
            // 2.5 s operations polled every second: done at the third poll, never more than one extra.
            assert!((2..=4).contains(&polls.len()), "{polls:#?}");
            assert_eq!(polls.last().unwrap().status, Some(200));
        }
        let metrics = app.metrics().await;
        assert!(
            metrics.value(
                "rpod_backups_total",
                &[
                    ("target", name),
                    ("trigger", "schedule"),
                    ("outcome", "succeeded")
                ]
            ) >= 1.0
        );
        let until = app
            .records(name)
            .await
            .iter()
            .filter(|r| r.status == Status::Succeeded)
            .filter_map(|r| r.expires_at)
            .max()
            .unwrap();
        let horizon = metrics.value(
            "rpod_target_restorable_until_timestamp_seconds",
            &[("target", name)],
        );
        assert!(
            (horizon - until.timestamp() as f64).abs() <= 1.0,
            "restorable horizon {horizon} vs {until}"
        );
        assert_eq!(
            metrics.value("rpod_target_rpo_compliant", &[("target", name)]),
            1.0
        );
    }
    assert!(
        app.metrics().await.value(
            "rpod_arm_requests_total",
            &[("operation", "backup"), ("status_class", "2xx")]
        ) >= 3.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_slash_first_location_is_followed_as_given() {
    let cloud = Cloud::fast(Duration::from_millis(1500)).await;
    cloud.service("svc-slash");
    let config = cloud.config(
        "managed_identity",
        &target("slash", "svc-slash", "rpo = \"1h\""),
    );
    let app = cloud.spawn(&config).await;
    succeeded(&app, "slash", 1).await;
    let polls: Vec<_> = cloud
        .requests_for("svc-slash")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(
        polls[0].path().contains("/svc-slash//operationresults/"),
        "first poll follows the double-slash Location verbatim: {}",
        polls[0].path_and_query
    );
    assert!(
        polls[1..]
            .iter()
            .all(|p| !p.path().contains("//operationresults/")),
        "later polls follow the newest (single-slash) Location"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_2020_12_01_sends_the_four_field_body() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("svc-old");
    let config = cloud.config(
        "access_key",
        &target("old", "svc-old", "rpo = \"1h\"").replace(
            "storage = \"blob\"",
            "storage = \"blob\"\napi_version = \"2020-12-01\"",
        ),
    );
    let app = cloud.spawn(&config).await;
    succeeded(&app, "old", 1).await;
    let post = &cloud.backup_posts("svc-old")[0];
    assert!(post.path_and_query.ends_with("api-version=2020-12-01"));
    let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["accessKey", "backupName", "containerName", "storageAccount"],
        "exactly the four fields of the old contract"
    );
    assert_eq!(body["accessKey"], cloud.azurite.key());
    app.stop().await;
}

#[test]
fn a_managed_identity_with_api_version_2020_12_01_is_a_config_error() {
    let (_dir, path) = write_config(
        r#"
[storage.blob]
kind = "azure_blob"
account = "contoso"
container = "apim-backups"
access = "managed_identity"

[[targets]]
name = "old"
kind = "apim"
subscription_id = "s"
resource_group = "rg"
service = "svc"
storage = "blob"
api_version = "2020-12-01"
"#,
    );
    let output = run_rpod(&path, &["check-config"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("targets[0].api_version"), "{stderr}");
    assert!(stderr.contains("managed-identity"), "{stderr}");
}

#[test]
fn kill_9_while_polling_resumes_the_operation_without_a_second_post() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloud = runtime.block_on(Cloud::fast(Duration::from_secs(5)));
    let _guard = runtime.enter();
    cloud.service("svc-crash");
    let (dir, path) = write_config(&cloud.config(
        "managed_identity",
        &target("crash", "svc-crash", "rpo = \"1h\""),
    ));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let env = cloud.identity_env();
    let mut daemon = DaemonProcess::start_with_env(&path, &env);
    runtime.block_on(eventually(
        Duration::from_secs(20),
        "the operation being polled",
        || async {
            cloud
                .requests_for("svc-crash")
                .iter()
                .any(|r| r.method == "GET" && r.status == Some(202))
                .then_some(())
        },
    ));
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5)).expect("killed");
    let polls_before = cloud.requests_for("svc-crash").len();

    let daemon = DaemonProcess::start_with_env(&path, &env);
    let state = dir.path().join("state");
    let records = runtime.block_on(crate::support::resumed_backup(&state, "crash"));
    assert_eq!(cloud.backup_posts("svc-crash").len(), 1, "no second POST");
    assert_eq!(records.len(), 1, "one backup, completed once: {records:#?}");
    assert!(
        cloud.requests_for("svc-crash").len() > polls_before,
        "polling resumed"
    );
    assert!(daemon.log_contains("Resuming"), "the resume is logged");
    let record = &records[0];
    assert_eq!(
        record.trigger, "rpo",
        "the record keeps its original trigger"
    );
    let blobs = runtime.block_on(cloud.blobs());
    assert!(blobs.contains(record.artifact.as_ref().unwrap()));
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_and_503s_are_retried_honouring_retry_after() {
    let cloud = Cloud::fast(Duration::from_millis(1200)).await;
    cloud.service("svc-storm");
    cloud
        .emulator
        .inject(Fault::new(Route::Backup, FaultKind::throttled(1)).times(3));
    cloud.emulator.inject(
        Fault::new(
            Route::Poll,
            FaultKind::status(503, "ServiceUnavailable", "try later"),
        )
        .times(2),
    );
    let config = cloud.config(
        "managed_identity",
        &target("storm", "svc-storm", "rpo = \"1h\""),
    );
    let app = cloud.spawn(&config).await;
    let records = succeeded(&app, "storm", 1).await;
    assert_eq!(records[0].attempt, 1, "retried inside one attempt");
    let posts = cloud.backup_posts("svc-storm");
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [Some(429), Some(429), Some(429), Some(202)]
    );
    for pair in posts.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(950));
    }
    let metrics = app.metrics().await;
    assert_eq!(metrics.value("rpod_arm_throttled_total", &[]), 3.0);
    assert!(
        metrics.value(
            "rpod_arm_requests_total",
            &[("operation", "poll"), ("status_class", "5xx")]
        ) >= 2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameters_fail_at_once_with_code_message_and_request_id() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("svc-bad");
    // APIM is given a key the account does not have.
    let config = cloud.config("access_key", &target("bad", "svc-bad", "rpo = \"1h\""));
    let app = spawn_app_in(
        &config,
        &[("key", b"bm90LXRoZS1rZXk=")],
        cloud.environment(),
        Clock::system(),
    )
    .await;
    let record = eventually(Duration::from_secs(20), "a failed backup", || async {
        app.records("bad")
            .await
            .into_iter()
            .find(|r| r.status == Status::Failed)
    })
    .await;
    assert_eq!(record.error_code.as_deref(), Some("InvalidParameters"));
    let message = record.error_message.clone().unwrap();
    assert!(message.contains("not authorized"), "{message}");
    assert!(message.contains("request id"), "{message}");
    assert_eq!(cloud.backup_posts("svc-bad").len(), 1, "not retried");
    let api = app.get_json("/api/v1/targets/bad/backups").await;
    assert!(api.to_string().contains("InvalidParameters"), "{api}");
    let dir = app.stop().await;
    let output = run_rpod(&dir.path().join("rpod.toml"), &["backups", "bad"]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("InvalidParameters") && printed.contains("request id"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_reported_on_a_poll_fails_the_backup_with_its_code() {
    let cloud = Cloud::fast(Duration::from_secs(3)).await;
    cloud.service("svc-fail");
    cloud.emulator.inject(Fault::new(
        Route::Backup,
        FaultKind::fail_operation("BackupFailed", "Cannot back up: storage unreachable"),
    ));
    let config = cloud.config(
        "managed_identity",
        &target("fail", "svc-fail", "rpo = \"1h\"\nmax_attempts = 1"),
    );
    let app = cloud.spawn(&config).await;
    let record = eventually(Duration::from_secs(20), "a failed backup", || async {
        app.records("fail")
            .await
            .into_iter()
            .find(|r| r.status == Status::Failed)
    })
    .await;
    assert_eq!(record.error_code.as_deref(), Some("BackupFailed"));
    assert!(
        record.accepted_at.is_some(),
        "it was accepted before it failed"
    );
    assert!(
        record.artifact.is_some(),
        "an accepted backup keeps its name, so reconciliation never imports what it left behind"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_backups_total",
            &[
                ("target", "fail"),
                ("trigger", "rpo"),
                ("outcome", "failed")
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "fail")]),
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_that_never_finishes_times_out_and_the_next_trigger_starts_afresh() {
    let cloud = Cloud::fast(Duration::from_hours(1)).await;
    cloud.service("svc-stuck");
    let config = cloud.config(
        "managed_identity",
        &target(
            "stuck",
            "svc-stuck",
            "rpo = \"1h\"\noperation_timeout = \"3s\"\nretry_backoff = \"1s\"\nmax_attempts = 2",
        ),
    );
    let app = cloud.spawn(&config).await;
    let record = eventually(Duration::from_secs(20), "a timed-out backup", || async {
        app.records("stuck")
            .await
            .into_iter()
            .find(|r| r.status == Status::TimedOut)
    })
    .await;
    assert_eq!(record.error_code.as_deref(), Some("TimedOut"));
    // The retry is a fresh backup: a new record and a new POST (which finds the service still busy: 409).
    eventually(Duration::from_secs(20), "a fresh backup", || async {
        let posts = cloud.backup_posts("svc-stuck");
        let records = app.records("stuck").await;
        (posts.len() >= 2 && records.iter().any(|r| r.id > record.id)).then_some(())
    })
    .await;
    assert!(
        cloud.backup_posts("svc-stuck")[1..]
            .iter()
            .all(|p| p.status == Some(409)),
        "the stuck operation keeps the service busy"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_while_the_service_is_busy_is_retried_until_it_is_free() {
    let cloud = Cloud::fast(Duration::from_secs(3)).await;
    cloud.service("svc-busy");
    // Someone else's backup keeps the service busy for 3 s.
    let token = cloud.emulator.issue_token();
    let url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/svc-busy/backup?api-version=2024-05-01",
        cloud.emulator.base_url()
    );
    let status = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({
            "storageAccount": cloud.azurite.account(), "containerName": CONTAINER,
            "backupName": "manual.apimbackup", "accessType": "SystemAssignedManagedIdentity"
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    let config = cloud.config(
        "managed_identity",
        &target("busy", "svc-busy", "rpo = \"1h\""),
    );
    let app = cloud.spawn(&config).await;
    let records = succeeded(&app, "busy", 1).await;
    let statuses: Vec<_> = cloud
        .backup_posts("svc-busy")
        .iter()
        .map(|p| p.status)
        .collect();
    assert!(statuses.contains(&Some(409)), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&Some(202)));
    assert!(
        app.records("busy")
            .await
            .iter()
            .all(|r| r.status != Status::Failed || r.error_code.as_deref() == Some("Conflict")),
        "a busy service is not a permanent failure"
    );
    assert_eq!(records[0].status, Status::Succeeded);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_targets_in_one_subscription_earn_no_429() {
    let mut config = EmulatorConfig::fast();
    config.operation_duration = Duration::from_millis(500);
    // ARM's write bucket, which backups drain. (Reads are paced by rpod too, but a poll that earns a 429 is
    // only retried; the write bucket is what decides whether backups start.)
    config.write_bucket = Some((200.0, 10.0));
    let cloud = Cloud::start(config).await;
    let mut targets = String::new();
    for index in 0..300 {
        let service = format!("svc-{index}");
        cloud.service(&service);
        targets.push_str(&target(&format!("t{index}"), &service, "rpo = \"1h\""));
    }
    let config = cloud.config("managed_identity", &targets).replace(
        "log_format = \"json\"",
        "log_format = \"json\"\nmax_concurrent_operations = 1000",
    );
    let app = cloud.spawn(&config).await;
    eventually(
        Duration::from_mins(1),
        "every target's backup accepted",
        || async {
            let accepted = cloud
                .emulator
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.status == Some(202))
                .count();
            (accepted >= 300).then_some(())
        },
    )
    .await;
    let throttled: Vec<_> = cloud
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(429))
        .map(|r| (r.method, r.path_and_query))
        .collect();
    assert_eq!(
        cloud.emulator.throttled_count(),
        0,
        "no 429 from ARM: {throttled:?}"
    );
    assert_eq!(
        app.metrics().await.value("rpod_arm_throttled_total", &[]),
        0.0
    );
    let started = cloud
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(started, 300, "one POST per target");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_blobs_are_pruned_from_azurite_and_a_failed_listing_deletes_nothing() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("svc-prune");
    let config = cloud.config(
        "managed_identity",
        &target("prune", "svc-prune", "rpo = \"1h\""),
    );
    let app = cloud.spawn(&config).await;
    let first = succeeded(&app, "prune", 1).await.remove(0);
    // A second backup at least a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = app
        .http
        .post(app.url("/api/v1/targets/prune/backup"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let records = succeeded(&app, "prune", 2).await;
    let second = records.iter().find(|r| r.id != first.id).unwrap().clone();
    let dir = app.stop().await;

    // Thirty days and a second after the first backup: it has expired, the second has not.
    let now = first.expires_at.unwrap() + chrono::Duration::seconds(1);
    assert!(second.expires_at.unwrap() > now);
    let environment = cloud.environment();
    let config_path = dir.path().join("rpod.toml");
    let catalog = rpod::catalog::Catalog::open(&dir.path().join("state"))
        .await
        .unwrap();

    // A storage rpod cannot list (wrong key): nothing is deleted.
    std::fs::write(dir.path().join("key"), "bm90LXRoZS1rZXk=").unwrap();
    let (_, specs) = rpod::app::load_in(&config_path, &environment).unwrap();
    let specs: Vec<_> = specs.into_iter().map(std::sync::Arc::new).collect();
    let report = rpod::maintenance::prune(&catalog, None, &specs, now, false, "test")
        .await
        .unwrap();
    assert!(report.pruned.is_empty(), "{report:?}");
    assert!(!report.errors.is_empty());
    let blobs = cloud.blobs().await;
    assert!(blobs.contains(first.artifact.as_ref().unwrap()));

    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let environment = cloud.environment();
    let (_, specs) = rpod::app::load_in(&config_path, &environment).unwrap();
    let specs: Vec<_> = specs.into_iter().map(std::sync::Arc::new).collect();
    let report = rpod::maintenance::prune(&catalog, None, &specs, now, false, "test")
        .await
        .unwrap();
    assert_eq!(report.pruned.len(), 1, "{report:?}");
    assert_eq!(report.pruned[0].backup_id, first.id);
    let blobs = cloud.blobs().await;
    assert!(
        !blobs.contains(first.artifact.as_ref().unwrap()),
        "the expired blob is gone from Azurite: {blobs:?}"
    );
    assert!(
        blobs.contains(second.artifact.as_ref().unwrap()),
        "the newest restorable is kept"
    );
    let pruned = catalog.backup(first.id).await.unwrap().unwrap();
    assert_eq!(pruned.status, Status::Pruned);
    catalog.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_marks_vanished_blobs_missing_and_imports_blobs_added_by_hand() {
    let cloud = Cloud::fast(Duration::from_millis(200)).await;
    cloud.service("svc-rec");
    let config = cloud
        .config(
            "managed_identity",
            &target("rec", "svc-rec", "rpo = \"1h\""),
        )
        .replace(
            "evaluation_interval = \"300ms\"",
            "evaluation_interval = \"300ms\"\nreconcile_interval = \"300ms\"",
        );
    let app = cloud.spawn(&config).await;
    let backup = succeeded(&app, "rec", 1).await.remove(0);
    let artifact = backup.artifact.clone().unwrap();

    // Added by hand under the target's prefix, named like rpod names them: its name says 2026-01-01, so that is
    // its recovery point (not the moment it was put there), and it expired 30 days later.
    let manual = "rec/20260101T000000Z-9999.apimbackup";
    cloud
        .azurite
        .put_blob(CONTAINER, manual, b"restorable bytes")
        .await
        .unwrap();
    // Named like a fresh backup, but empty.
    let empty = format!(
        "rec/{}-9998.apimbackup",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    cloud
        .azurite
        .put_blob(CONTAINER, &empty, b"")
        .await
        .unwrap();
    // Not rpod's naming scheme: left alone.
    cloud
        .azurite
        .put_blob(CONTAINER, "rec/notes.txt", b"x")
        .await
        .unwrap();
    let found = |name: String| {
        let app = &app;
        async move {
            app.records("rec")
                .await
                .into_iter()
                .find(|r| r.artifact.as_deref() == Some(name.as_str()))
        }
    };
    let imported = eventually(Duration::from_secs(15), "the blob imported", || {
        found(manual.to_owned())
    })
    .await;
    assert_eq!(imported.status, Status::Discovered);
    assert_eq!(imported.trigger, "discovered");
    assert_eq!(
        imported.accepted_at.unwrap(),
        "2026-01-01T00:00:00Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        "recovery point = the time its name encodes"
    );
    assert_eq!(
        imported.expires_at.unwrap().timestamp_millis()
            - imported.accepted_at.unwrap().timestamp_millis(),
        THIRTY_DAYS_MS
    );
    assert!(!imported.is_restorable(Utc::now()), "{imported:?}");
    assert!(
        imported
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("expired")),
        "{imported:?}"
    );
    let empty = eventually(Duration::from_secs(15), "the empty blob recorded", || {
        found(empty.clone())
    })
    .await;
    assert!(!empty.is_restorable(Utc::now()), "{empty:?}");
    assert_eq!(empty.error_message.as_deref(), Some("it is empty"));
    assert!(
        app.records("rec")
            .await
            .iter()
            .all(|r| r.artifact.as_deref() != Some("rec/notes.txt"))
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_target_restorable_backups", &[("target", "rec")]),
        1.0,
        "only rpod's own backup is restorable"
    );

    // Deleted behind rpod's back.
    cloud
        .azurite
        .delete_blob(CONTAINER, &artifact)
        .await
        .unwrap();
    let missing = eventually(
        Duration::from_secs(15),
        "the record marked missing",
        || async {
            app.catalog()
                .await
                .backup(backup.id)
                .await
                .unwrap()
                .filter(|r| r.status == Status::Missing)
        },
    )
    .await;
    assert_eq!(missing.id, backup.id);
    eventually(Duration::from_secs(10), "metrics follow", || async {
        (app.metrics()
            .await
            .value("rpod_target_restorable_backups", &[("target", "rec")])
            == 0.0)
            .then_some(())
    })
    .await;
    app.stop().await;
}

#[test]
fn check_config_online_reads_each_service_and_refuses_tiers_without_backup() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloud = runtime.block_on(Cloud::fast(Duration::from_millis(200)));
    cloud.service("svc-ok");
    cloud
        .emulator
        .add_service(ServiceSpec::new(SUB, RG, "svc-v2").with_sku("StandardV2", 1));
    let ok = target("ok", "svc-ok", "rpo = \"1h\"");
    let (dir, path) = write_config(&cloud.config("managed_identity", &ok));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let env = cloud.identity_env();
    let output = run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("service svc-ok (Premium)"), "{stdout}");

    let both = format!("{ok}{}", target("v2", "svc-v2", "rpo = \"1h\""));
    let text = cloud.config("managed_identity", &both);
    std::fs::write(&path, text.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let output = run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a tier without backup is a configuration error: {stdout}"
    );
    assert!(
        stdout.contains("svc-v2 is on the StandardV2 tier"),
        "{stdout}"
    );
    let _guard = runtime.enter();
    drop(cloud);
}

/// Every way an operation can end without a backup that rpod has seen: none is taken for a success, and each
/// record names the reason. Before, any 2xx but 202 was success, any JSON object was the service, an unreadable
/// body was accepted on the third read and a blob that never appeared still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_this_services_succeeded_resource_and_its_blob_make_a_backup() {
    let cloud = Cloud::fast(Duration::from_millis(300)).await;
    let other = ServiceSpec::new(SUB, RG, "someone-else").resource_id();
    let cases: Vec<(&str, Route, FaultKind, &str, &str)> = vec![
        (
            "failed",
            Route::Poll,
            FaultKind::answer(200, ""),
            "BackupNotSucceeded",
            "provisioningState 'Failed'",
        ),
        (
            "other",
            Route::Poll,
            FaultKind::answer(
                200,
                format!(
                    r#"{{"id":"{other}","name":"someone-else","properties":{{"provisioningState":"Succeeded"}}}}"#
                ),
            ),
            "InvalidResponse",
            "describes",
        ),
        (
            "unreadable",
            Route::Poll,
            FaultKind::answer(200, "{\"id\": truncated"),
            "InvalidResponse",
            "not the service resource",
        ),
        (
            "nocontent",
            Route::Poll,
            FaultKind::answer(204, ""),
            "UnexpectedAnswer",
            "HTTP 204",
        ),
        (
            "syncfailed",
            Route::Backup,
            FaultKind::answer(200, ""),
            "BackupNotSucceeded",
            "provisioningState 'Failed'",
        ),
        (
            "noblob",
            Route::Backup,
            FaultKind::SkipBlob,
            "ArtifactMissing",
            "it is not there",
        ),
        (
            "nolocation",
            Route::Backup,
            FaultKind::answer(202, ""),
            "InvalidResponse",
            "without an operation to follow",
        ),
    ];
    for (name, route, fault, code, reason) in cases {
        let service = format!("svc-{name}");
        let spec = cloud.service(&service);
        // The "Failed" answers carry this service's own resource, so only the state is wrong.
        let fault = match fault {
            FaultKind::Answer { status, body } if body.is_empty() && status == 200 => {
                FaultKind::answer(
                    200,
                    format!(
                        r#"{{"id":"{}","name":"{service}","sku":{{"name":"Premium","capacity":1}},"properties":{{"provisioningState":"Failed"}}}}"#,
                        spec.resource_id()
                    ),
                )
            }
            other => other,
        };
        cloud.emulator.inject(Fault::new(route, fault));
        let config = cloud.config(
            "managed_identity",
            &target(name, &service, "rpo = \"1h\"\nmax_attempts = 1"),
        );
        let app = cloud.spawn(&config).await;
        let record = eventually(Duration::from_secs(30), "a failed backup", || async {
            app.records(name)
                .await
                .into_iter()
                .find(|r| r.status == Status::Failed)
        })
        .await;
        assert_eq!(
            record.error_code.as_deref(),
            Some(code),
            "{name}: {record:?}"
        );
        assert!(
            record
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains(reason)),
            "{name}: {record:?}"
        );
        assert!(
            app.records(name)
                .await
                .iter()
                .all(|r| r.status != Status::Succeeded),
            "{name}: nothing succeeded"
        );
        let metrics = app.metrics().await;
        assert_eq!(
            metrics.value("rpod_target_rpo_compliant", &[("target", name)]),
            0.0,
            "{name}"
        );
        assert_eq!(
            metrics.value(
                "rpod_backups_total",
                &[
                    ("target", name),
                    ("trigger", "rpo"),
                    ("outcome", "succeeded")
                ]
            ),
            0.0,
            "{name}"
        );
        app.stop().await;
    }
}

#[test]
fn check_config_online_refuses_a_busy_service_and_an_account_with_blob_cors_rules() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cloud = runtime.block_on(Cloud::fast(Duration::from_millis(200)));
    let spec = cloud.service("svc-busy");
    let ok = target("busy", "svc-busy", "rpo = \"1h\"");
    let (dir, path) = write_config(&cloud.config("managed_identity", &ok));
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let env = cloud.identity_env();
    cloud.emulator.inject(Fault::new(
        Route::GetService,
        FaultKind::answer(
            200,
            format!(
                r#"{{"id":"{}","name":"svc-busy","sku":{{"name":"Premium","capacity":1}},"properties":{{"provisioningState":"Updating"}}}}"#,
                spec.resource_id()
            ),
        ),
    ));
    let output = run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "busy is not a configuration error: {stdout}"
    );
    assert!(stdout.contains("svc-busy is Updating"), "{stdout}");

    runtime
        .block_on(cloud.azurite.set_cors_rules(&[CorsRule::default()]))
        .unwrap();
    let output = run_rpod_with_env(&path, &["check-config", "--online"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("has 1 Blob service CORS rule(s)")
            && stdout.contains("remove the account's Blob"),
        "{stdout}"
    );
    runtime.block_on(cloud.azurite.set_cors_rules(&[])).unwrap();
    let output = run_rpod_with_env(&path, &["check-config", "--online"], &env);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let _guard = runtime.enter();
    drop(cloud);
}

/// A crash between asking Azure for a backup and recording that it accepted leaves a `running` record with no
/// saved operation. The next attempt looks at the service first: while it is `Updating` (perhaps with that very
/// backup) rpod asks for nothing and waits, instead of posting into a busy service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_with_nothing_saved_rpod_looks_for_a_running_operation_before_posting_again()
{
    let cloud = Cloud::fast(Duration::from_secs(4)).await;
    cloud.service("svc-look");
    let config = cloud.config(
        "access_key",
        &target(
            "look",
            "svc-look",
            "rpo = \"1h\"\nretry_backoff = \"1s\"\nretry_max_backoff = \"2s\"",
        ),
    );
    let (dir, config_path) = write_config(&config);
    let (key_name, key) = cloud.key_file();
    std::fs::write(dir.path().join(key_name), &key).unwrap();
    // What the crashed rpod left: a running record, and the backup it asked for, still running on the service.
    let catalog = rpod::catalog::Catalog::open(&dir.path().join("state"))
        .await
        .unwrap();
    let cut_off = catalog
        .insert_backup(&rpod::catalog::NewBackup {
            target: "look",
            kind: "apim",
            trigger: rpod::record::Trigger::Rpo,
            attempt: 1,
            requested_at: Utc::now(),
            storage: "blob",
            first_change_at: None,
            slot: None,
        })
        .await
        .unwrap();
    catalog.close().await;
    let url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/svc-look/backup\
         ?api-version={}",
        cloud.emulator.base_url(),
        rpod::config::DEFAULT_APIM_API_VERSION
    );
    let posted = reqwest::Client::new()
        .post(url)
        .bearer_auth(cloud.emulator.issue_token())
        .json(&serde_json::json!({
            "storageAccount": cloud.azurite.account(),
            "containerName": CONTAINER,
            "backupName": "look/left-behind.apimbackup",
            "accessType": "AccessKey",
            "accessKey": cloud.azurite.key(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202, "{}", posted.text().await.unwrap());
    let busy_until = std::time::Instant::now() + Duration::from_secs(4);

    let app =
        crate::support::start_in(dir, config_path, cloud.environment(), Clock::system()).await;
    let records = succeeded(&app, "look", 1).await;
    let posts = cloud.backup_posts("svc-look");
    assert_eq!(posts.len(), 2, "the left-behind backup and one of rpod's");
    assert!(
        posts.iter().all(|p| p.status == Some(202)),
        "rpod never posted into the busy service: {posts:?}"
    );
    assert!(
        std::time::Instant::now() >= busy_until,
        "rpod's backup was asked for after the service's operation ended"
    );
    let all = app.records("look").await;
    let first = all.iter().find(|r| r.id == cut_off).unwrap();
    assert_eq!(
        first.status,
        Status::Interrupted,
        "the cut-off attempt is closed"
    );
    assert!(
        all.iter()
            .any(|r| r.error_code.as_deref() == Some("ServiceBusy")),
        "an attempt waited, saying why: {all:#?}"
    );
    assert_eq!(records.len(), 1);
    app.stop().await;
}
