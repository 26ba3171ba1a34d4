//! RPO watchdog, failures, expiry and pruning, end to end.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rpod::record::{BackupRecord, Status};

use crate::support::{command_config, command_target, eventually, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_backs_up_before_each_breach_and_failures_show() {
    let app = spawn_app(&command_config(
        "[defaults.policy]\nrpo = \"3s\"\nrpo_lead = \"1s\"\nretry_backoff = \"100ms\"\n\
         retry_max_backoff = \"300ms\"\nmax_attempts = 2\n",
        &[
            command_target("good", &["echo", "fresh"]),
            command_target(
                "bad",
                &[
                    "sh",
                    "-c",
                    "echo partial; echo 'pg_dump: connection refused' >&2; exit 3",
                ],
            ),
        ],
    ))
    .await;
    let started: DateTime<Utc> = Utc::now();
    // Three RPO periods.
    let good = eventually(
        Duration::from_secs(15),
        "three watchdog periods",
        || async {
            let records = app.records("good").await;
            let last = records.last()?.accepted_at?;
            (last - started > TimeDelta::milliseconds(6500)).then_some(records)
        },
    )
    .await;
    assert!(
        good.iter()
            .all(|r| r.status == Status::Succeeded && r.trigger == "rpo"),
        "{good:#?}"
    );
    assert!(good.len() >= 3, "{} backups", good.len());
    let mut previous = good[0].accepted_at.unwrap();
    assert!(
        previous - started < TimeDelta::seconds(1),
        "no restorable backup at start: backed up at once"
    );
    for record in &good[1..] {
        let at = record.accepted_at.unwrap();
        assert!(
            at - previous < TimeDelta::seconds(3),
            "the next backup came before the RPO was breached"
        );
        assert!(
            at - previous > TimeDelta::milliseconds(2000),
            "not earlier than rpo - lead"
        );
        previous = at;
    }

    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "good")]),
        1.0
    );
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "bad")]),
        0.0
    );
    let bad = app.records("bad").await;
    let failed: Vec<&BackupRecord> = bad.iter().filter(|r| r.status == Status::Failed).collect();
    assert!(failed.len() >= 2, "{bad:#?}");
    assert_eq!(failed[0].attempt, 1);
    assert_eq!(failed[1].attempt, 2, "a transient failure is retried");
    let failed_metric = metrics.value(
        "rpod_backups_total",
        &[("target", "bad"), ("trigger", "rpo"), ("outcome", "failed")],
    );
    assert!(failed_metric >= 2.0 && failed_metric <= failed.len() as f64);
    let message = failed[0].error_message.as_deref().unwrap();
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(
        message.contains("pg_dump: connection refused"),
        "the stderr tail is in the record: {message}"
    );
    assert_eq!(failed[0].error_code.as_deref(), Some("ExitStatus"));
    assert!(
        failed[0].artifact.is_none(),
        "a failed backup has no artifact"
    );
    let leftovers: Vec<_> = walk(&app.path("backups/bad"));
    assert!(
        leftovers.is_empty(),
        "a failed backup leaves nothing in storage: {leftovers:?}"
    );
    assert_eq!(
        metrics.value(
            "rpod_target_last_success_timestamp_seconds",
            &[("target", "bad")]
        ),
        0.0
    );
    assert_eq!(
        metrics.value("rpod_target_restorable_backups", &[("target", "bad")]),
        0.0
    );
    app.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries.flatten().map(|e| e.path()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_backups_are_pruned_but_the_newest_stays() {
    let app = spawn_app(&command_config(
        "",
        &[command_target("short", &["echo", "data"])
            .policy("rpo = \"2s\"\nexpiry = \"4s\"\nwarn_before_expiry = \"1s\"")],
    ))
    .await;
    let pruned = eventually(
        Duration::from_secs(20),
        "expired backups pruned",
        || async {
            let records = app.records("short").await;
            let pruned: Vec<BackupRecord> = records
                .into_iter()
                .filter(|r| r.status == Status::Pruned)
                .collect();
            (pruned.len() >= 2).then_some(pruned)
        },
    )
    .await;
    for record in &pruned {
        assert!(
            record.expires_at.unwrap() <= record.pruned_at.unwrap(),
            "pruned only after expiry"
        );
        let path = app
            .path("backups")
            .join(record.artifact.as_deref().unwrap());
        assert!(
            !path.exists(),
            "artifact of a pruned backup is deleted: {}",
            path.display()
        );
    }
    let catalog = app.catalog().await;
    let audit = catalog.audit_log("short").await.unwrap();
    catalog.close().await;
    assert!(audit.iter().any(|(_, actor, action, id, detail)| {
        actor == "rpod"
            && action == "pruned"
            && *id == Some(pruned[0].id)
            && detail.contains("expired")
    }));
    let all = app.records("short").await;
    let newest = all
        .iter()
        .rev()
        .find(|r| r.status == Status::Succeeded)
        .expect("the newest backup is kept");
    assert!(
        app.path("backups")
            .join(newest.artifact.as_deref().unwrap())
            .exists()
    );
    let metrics = app.metrics().await;
    assert!(metrics.value("rpod_backups_pruned_total", &[("target", "short")]) >= 2.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_that_stop_raise_one_expiry_warning_per_backup() {
    let app = spawn_app(&command_config(
        "",
        &[
            command_target("w", &["sh", "-c", "test ! -e {dir}/broken && echo ok"]).policy(
                "rpo = \"3s\"\nexpiry = \"4s\"\nwarn_before_expiry = \"2s\"\nretry_backoff = \"1s\"\n\
                 retry_max_backoff = \"10s\"\nmax_attempts = 1",
            ),
        ],
    ))
    .await;
    eventually(Duration::from_secs(10), "a first backup", || async {
        app.records("w")
            .await
            .iter()
            .any(|r| r.status == Status::Succeeded)
            .then_some(())
    })
    .await;
    std::fs::write(app.path("broken"), "").unwrap();
    let warned = eventually(Duration::from_secs(10), "the expiry warning", || async {
        let m = app.metrics().await;
        (m.value("rpod_expiry_warnings_total", &[("target", "w")]) > 0.0).then_some(m)
    })
    .await;
    assert!(
        warned.value(
            "rpod_target_restorable_until_timestamp_seconds",
            &[("target", "w")]
        ) > 0.0
    );
    // Several evaluation passes later the one backup has still been warned about once, then it expires.
    let expired = eventually(
        Duration::from_secs(10),
        "the last backup expired",
        || async {
            let m = app.metrics().await;
            (m.value("rpod_target_restorable_backups", &[("target", "w")]) == 0.0).then_some(m)
        },
    )
    .await;
    assert_eq!(
        expired.value("rpod_expiry_warnings_total", &[("target", "w")]),
        1.0,
        "once per backup"
    );
    assert_eq!(
        expired.value(
            "rpod_target_restorable_until_timestamp_seconds",
            &[("target", "w")]
        ),
        0.0
    );
    assert_eq!(
        expired.value("rpod_target_rpo_compliant", &[("target", "w")]),
        0.0
    );
    app.stop().await;
}
