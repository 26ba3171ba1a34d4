//! Restores of command targets, drills and their metrics (docs/restore.md).

use std::time::Duration;

use rpod::record::Status;
use serde_json::{Value, json};

use crate::support::*;

async fn first_success(app: &TestApp, target: &str) -> rpod::record::BackupRecord {
    eventually(Duration::from_secs(20), "a successful backup", || async {
        app.records(target)
            .await
            .into_iter()
            .find(|r| r.status == Status::Succeeded)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_restore_is_guarded_checked_against_its_record_and_fed_to_restore_command() {
    let identity = age::x25519::Identity::generate();
    let recipients = format!("{}\n", identity.to_public());
    let secret_key = {
        use age::secrecy::ExposeSecret as _;
        format!("{}\n", identity.to_string().expose_secret())
    };
    let data: Vec<u8> = b"line of the protected data\n".repeat(4000);
    let app = spawn_app_with(
        &command_config(
            "",
            &[command_target("docs", &["cat", "{dir}/data.txt"])
                .key(
                    "encrypt = { age_recipients_file = \"{dir}/recipients.txt\", age_identity_file = \
                     \"{dir}/identity.txt\" }",
                )
                .key("restore_command = [\"sh\", \"-c\", \"cat > {dir}/restored.txt\"]")
                .policy("rpo = \"1h\"")],
        ),
        &[
            ("data.txt", &data),
            ("recipients.txt", recipients.as_bytes()),
            ("identity.txt", secret_key.as_bytes()),
        ],
    )
    .await;
    let backup = first_success(&app, "docs").await;
    let restored = app.path("restored.txt");

    // Over the target's own system without --yes: refused, with an audit row and no restore.
    let (status, answer) = app.post_restore("docs", json!({})).await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with("confirmation:")
            && error.contains("overwrites")
            && error.contains("--yes"),
        "{error}"
    );
    let catalog = app.catalog().await;
    let audit = catalog.audit_log("docs").await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(_, _, action, _, detail)| action == "restore_refused"
                && detail.contains("confirmation")),
        "{audit:?}"
    );

    // A dry run prints every verdict and writes nothing.
    let audit_before = catalog.audit_log("docs").await.unwrap().len();
    let (status, plan) = app
        .post_restore("docs", json!({"dry_run": true, "yes": true}))
        .await;
    assert_eq!(status, 200, "{plan}");
    let guards = guards_of(&plan);
    assert_eq!(
        guards,
        [
            "destination",
            "confirmation",
            "backup",
            "artifact",
            "in_flight"
        ]
    );
    assert!(
        plan["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["passed"] == true)
    );
    assert_eq!(plan["backup_id"], backup.id);
    assert!(plan["restore_id"].is_null());
    assert!(!restored.exists());
    assert_eq!(catalog.audit_log("docs").await.unwrap().len(), audit_before);
    assert!(
        app.get_json("/api/v1/targets/docs/restores")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Confirmed: restored, decrypted and decompressed, to the byte.
    let (status, plan) = app.post_restore("docs", json!({"yes": true})).await;
    assert_eq!(status, 202, "{plan}");
    let id = plan["restore_id"].as_i64().unwrap();
    let record = app.finished_restore(id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["backup_id"], backup.id);
    assert_eq!(record["trigger"], "manual");
    assert!(record["duration_seconds"].as_f64().is_some(), "{record}");
    assert_eq!(std::fs::read(&restored).unwrap(), data);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_restores_total",
            &[
                ("target", "docs"),
                ("trigger", "manual"),
                ("outcome", "succeeded")
            ]
        ),
        1.0
    );

    // An artifact changed after the backup is refused by its record's size and sha256: nothing is fed.
    std::fs::remove_file(&restored).unwrap();
    let artifact = app
        .path("backups")
        .join(backup.artifact.as_deref().unwrap());
    let mut bytes = std::fs::read(&artifact).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let (status, plan) = app
        .post_restore("docs", json!({"yes": true, "backup_id": backup.id}))
        .await;
    assert_eq!(status, 202, "{plan}");
    let record = app
        .finished_restore(plan["restore_id"].as_i64().unwrap())
        .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["error_code"], "ArtifactCorrupt", "{record}");
    assert!(!restored.exists(), "a corrupt artifact reaches no program");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_refuse_pruned_expired_and_unknown_backups_with_their_reasons() {
    let app = spawn_app(&command_config(
        "",
        &[command_target("g", &["echo", "data"])
            .key("restore_command = [\"sh\", \"-c\", \"cat > /dev/null\"]")
            .policy("rpo = \"1h\"")],
    ))
    .await;
    let backup = first_success(&app, "g").await;
    let catalog = app.catalog().await;
    let now = chrono::Utc::now();
    let expired = insert_succeeded(
        &catalog,
        "g",
        now - chrono::TimeDelta::days(40),
        now - chrono::TimeDelta::days(10),
        |id| format!("g/old-{id}.zst"),
    )
    .await;
    let (status, answer) = app
        .post_restore("g", json!({"yes": true, "backup_id": expired}))
        .await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with("backup:") && error.contains("expired on"),
        "{error}"
    );

    let pruned = insert_succeeded(
        &catalog,
        "g",
        now - chrono::TimeDelta::hours(2),
        now + chrono::TimeDelta::days(10),
        |id| format!("g/pruned-{id}.zst"),
    )
    .await;
    let record = catalog.backup(pruned).await.unwrap().unwrap();
    catalog
        .mark_pruned(&record, now, "test", "keep_last")
        .await
        .unwrap();
    let (status, answer) = app
        .post_restore("g", json!({"yes": true, "backup_id": pruned}))
        .await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with("backup:") && error.contains("pruned"),
        "{error}"
    );

    let (status, answer) = app
        .post_restore("g", json!({"yes": true, "backup_id": 999_999}))
        .await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no backup 999999"),
        "{answer}"
    );

    // The artifact deleted behind rpod's back: refused before anything runs.
    std::fs::remove_file(
        app.path("backups")
            .join(backup.artifact.as_deref().unwrap()),
    )
    .unwrap();
    let (status, answer) = app
        .post_restore("g", json!({"yes": true, "backup_id": backup.id}))
        .await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with("artifact:") && error.contains("not in storage"),
        "{error}"
    );
    assert!(
        app.get_json("/api/v1/targets/g/restores")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_verify_the_stream_and_a_failing_verification_is_a_failed_drill() {
    let app = spawn_app(&command_config(
        "",
        &[
            command_target("good", &["tar", "-cf", "-", "-C", "{dir}", "rpod.toml"])
                .key("verify_command = [\"tar\", \"-t\"]")
                .key("[targets.drill]\nschedule = \"*/2 * * * * *\"")
                .policy("rpo = \"1h\"\nrto = \"10m\""),
            command_target("bad", &["echo", "not a tar archive"])
                .key("verify_command = [\"tar\", \"-t\"]")
                .key("[targets.drill]\nschedule = \"*/2 * * * * *\"")
                .policy("rpo = \"1h\""),
        ],
    ))
    .await;
    first_success(&app, "good").await;
    first_success(&app, "bad").await;
    let good = app.restore_where("good", "drill", "succeeded").await;
    assert!(
        good["verified"].as_str().unwrap().contains("sha256 match"),
        "{good}"
    );
    let bad = app.restore_where("bad", "drill", "failed").await;
    assert_eq!(bad["error_code"], "VerificationFailed", "{bad}");
    assert!(
        bad["error_message"].as_str().unwrap().contains("tar"),
        "{bad}"
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.value(
            "rpod_restore_drill_last_success_timestamp_seconds",
            &[("target", "good")]
        ) > 0.0
    );
    assert!(
        metrics
            .get("rpod_restore_drill_duration_seconds", &[("target", "good")])
            .is_some()
    );
    assert_eq!(
        metrics.value("rpod_target_rto_seconds", &[("target", "good")]),
        600.0
    );
    assert_eq!(
        metrics.value(
            "rpod_restore_drill_last_success_timestamp_seconds",
            &[("target", "bad")]
        ),
        0.0
    );
    assert!(
        metrics.value(
            "rpod_restore_drill_last_failure_timestamp_seconds",
            &[("target", "bad")]
        ) > 0.0
    );
    assert_eq!(
        metrics.value("rpod_restore_drill_max_age_seconds", &[("target", "bad")]),
        8.0 * 86400.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fails_on_a_corrupted_artifact_and_on_a_wrong_age_identity_and_status_shows_it() {
    let identity = age::x25519::Identity::generate();
    let wrong = age::x25519::Identity::generate();
    let recipients = format!("{}\n", identity.to_public());
    let wrong_key = {
        use age::secrecy::ExposeSecret as _;
        format!("{}\n", wrong.to_string().expose_secret())
    };
    let drill = "[targets.drill]\nschedule = \"*/2 * * * * *\"";
    let app = spawn_app_with(
        &command_config(
            "",
            &[
                command_target("locked", &["echo", "data"])
                    .key(
                        "encrypt = { age_recipients_file = \"{dir}/recipients.txt\", age_identity_file = \
                         \"{dir}/wrong.txt\" }",
                    )
                    .key("verify_command = [\"cat\"]")
                    .key(drill)
                    .policy("rpo = \"1h\""),
                command_target("damaged", &["echo", "data"])
                    .key("verify_command = [\"cat\"]")
                    .key(drill)
                    .policy("rpo = \"1h\"\nrto = \"1h\""),
            ],
        ),
        &[
            ("recipients.txt", recipients.as_bytes()),
            ("wrong.txt", wrong_key.as_bytes()),
        ],
    )
    .await;
    first_success(&app, "locked").await;
    let damaged = first_success(&app, "damaged").await;
    // Damage the artifact before a drill reads it: the record's size and sha256 no longer match.
    let artifact = app
        .path("backups")
        .join(damaged.artifact.as_deref().unwrap());
    std::fs::write(&artifact, b"not what was backed up").unwrap();
    let locked = app.restore_where("locked", "drill", "failed").await;
    assert_eq!(locked["error_code"], "DecryptFailed", "{locked}");
    let damaged_drill = app.restore_where("damaged", "drill", "failed").await;
    assert_eq!(
        damaged_drill["error_code"], "ArtifactCorrupt",
        "{damaged_drill}"
    );

    // The API's view of the last drill (what `rpod status` prints) agrees with the catalog.
    let view = eventually(
        Duration::from_secs(20),
        "the view and the catalog to agree",
        || async {
            let newest = app
                .catalog()
                .await
                .restores("damaged", Some(rpod::record::RestoreTrigger::Drill), 1)
                .await
                .unwrap()
                .remove(0);
            let targets = app.get_json("/api/v1/targets").await;
            let view = targets
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "damaged")
                .unwrap()["last_drill"]
                .clone();
            (view["restore_id"] == newest.id
                && newest.status == Status::Failed
                && view["status"] == "failed")
                .then_some(view)
        },
    )
    .await;
    assert!(
        view["detail"]
            .as_str()
            .unwrap()
            .starts_with("ArtifactCorrupt"),
        "{view}"
    );
    assert_eq!(
        view["within_rto"],
        Value::Null,
        "a failed drill says nothing about the RTO"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.value(
            "rpod_restore_drill_last_failure_timestamp_seconds",
            &[("target", "damaged")]
        ) > 0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_waits_for_its_slot_however_far_it_is() {
    // On the system clock rpod sleeps at most 30 s at a time; a yearly drill must not run when such a sleep ends.
    let app = spawn_app(&command_config(
        "",
        &[command_target("yearly", &["echo", "data"])
            .key("verify_command = [\"cat\"]")
            .key("[targets.drill]\nschedule = \"0 0 1 1 *\"")
            .policy("rpo = \"1h\"")],
    ))
    .await;
    first_success(&app, "yearly").await;
    tokio::time::sleep(Duration::from_secs(32)).await;
    let restores = app.get_json("/api/v1/targets/yearly/restores").await;
    assert!(
        restores.as_array().unwrap().is_empty(),
        "no drill before its slot: {restores}"
    );
    app.stop().await;
}
