//! End to end, in-process: `command` targets into a `directory` storage, the catalog, the API and /metrics agree.

use rpod::record::{BackupRecord, Status};
use sha2::{Digest, Sha256};
use std::time::Duration;

use crate::support::{
    Metrics, TestApp, command_config, command_target, eventually, spawn_app, spawn_app_with, unzstd,
};

fn payload() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| format!("line {i} of the protected data\n").into_bytes())
        .take(300_000)
        .collect()
}

async fn succeeded(app: &TestApp, target: &str) -> Vec<BackupRecord> {
    let records = app.records(target).await;
    records
        .into_iter()
        .filter(|r| r.status == Status::Succeeded)
        .collect()
}

/// Reads /metrics twice around a catalog read until nothing changed in between, so they can be compared.
async fn consistent_view(app: &TestApp, target: &str) -> (Metrics, Vec<BackupRecord>) {
    eventually(
        Duration::from_secs(20),
        "a moment with nothing running",
        || async {
            let before = app.metrics().await;
            let records = app.records(target).await;
            let after = app.metrics().await;
            let idle =
                before.value("rpod_target_operation_in_progress", &[("target", target)]) == 0.0;
            let quiet =
                before.text == after.text && records.iter().all(|r| r.status != Status::Running);
            (idle && quiet).then(|| (after, records.into_iter().rev().collect()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_command_backups_land_in_the_directory_and_everything_agrees() {
    let data = payload();
    let app = spawn_app(&command_config(
        "",
        &[command_target("data", &["cat", "{dir}/data.txt"])
            .policy("schedule = \"*/2 * * * * *\"\nrpo = \"1h\"")],
    ))
    .await;
    std::fs::write(app.path("data.txt"), &data).unwrap();

    let records = eventually(Duration::from_secs(20), "two scheduled backups", || async {
        let records = succeeded(&app, "data").await;
        (records.iter().filter(|r| r.trigger == "schedule").count() >= 2).then_some(records)
    })
    .await;

    for record in &records {
        let artifact = record.artifact.as_deref().unwrap();
        let bytes = std::fs::read(app.path("backups").join(artifact)).unwrap();
        assert_eq!(
            unzstd(&bytes),
            data,
            "backup {} decompresses to the command's output",
            record.id
        );
        assert_eq!(record.size_bytes, Some(i64::try_from(bytes.len()).unwrap()));
        assert_eq!(
            record.sha256.as_deref(),
            Some(format!("{:x}", Sha256::digest(&bytes)).as_str())
        );
        assert!(bytes.len() < data.len() / 3, "the artifact is compressed");
        let accepted = record.accepted_at.unwrap();
        assert_eq!(
            record.expires_at,
            Some(accepted + chrono::TimeDelta::days(30)),
            "default expiry 30 d"
        );
        assert!(artifact.starts_with("data/"), "{artifact}");
    }

    let (metrics, records) = consistent_view(&app, "data").await;
    let api = app.get_json("/api/v1/targets/data/backups").await;
    let api: Vec<BackupRecord> = serde_json::from_value(api).unwrap();
    assert_eq!(api, records, "the API shows exactly the catalog's records");

    let ok: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| r.status == Status::Succeeded)
        .collect();
    let count = |trigger: &str| ok.iter().filter(|r| r.trigger == trigger).count() as f64;
    let labels = |trigger: &'static str| {
        [
            ("target", "data"),
            ("trigger", trigger),
            ("outcome", "succeeded"),
        ]
    };
    assert_eq!(
        metrics.value("rpod_backups_total", &labels("schedule")),
        count("schedule")
    );
    assert_eq!(
        metrics.value("rpod_backups_total", &labels("rpo")),
        count("rpo")
    );
    assert_eq!(
        metrics.value(
            "rpod_backups_total",
            &[
                ("target", "data"),
                ("trigger", "schedule"),
                ("outcome", "failed")
            ]
        ),
        0.0,
        "failure series exist from startup at 0"
    );
    let newest = ok.iter().map(|r| r.accepted_at.unwrap()).max().unwrap();
    let until = ok.iter().map(|r| r.expires_at.unwrap()).max().unwrap();
    let ts = |at: chrono::DateTime<chrono::Utc>| at.timestamp_millis() as f64 / 1000.0;
    assert_eq!(
        metrics.value(
            "rpod_target_last_success_timestamp_seconds",
            &[("target", "data")]
        ),
        ts(newest)
    );
    assert_eq!(
        metrics.value(
            "rpod_target_restorable_until_timestamp_seconds",
            &[("target", "data")]
        ),
        ts(until)
    );
    assert_eq!(
        metrics.value("rpod_target_restorable_backups", &[("target", "data")]),
        ok.len() as f64
    );
    assert_eq!(
        metrics.value("rpod_target_rpo_compliant", &[("target", "data")]),
        1.0
    );
    assert_eq!(
        metrics.value("rpod_target_rpo_seconds", &[("target", "data")]),
        3600.0
    );
    assert_eq!(
        metrics.value(
            "rpod_target_info",
            &[("target", "data"), ("kind", "command")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("rpod_target_operation_in_progress", &[("target", "data")]),
        0.0
    );
    assert_eq!(
        metrics.value("rpod_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let newest_attempt = records.iter().map(|r| r.requested_at).max().unwrap();
    assert_eq!(
        metrics.value(
            "rpod_target_last_attempt_timestamp_seconds",
            &[("target", "data")]
        ),
        ts(newest_attempt)
    );
    let heartbeat = eventually(Duration::from_secs(5), "an evaluation pass", || async {
        let m = app.metrics().await;
        let beat = m.value("rpod_last_evaluation_timestamp_seconds", &[]);
        (beat > 0.0).then_some(m)
    })
    .await;
    assert_eq!(
        heartbeat.value("rpod_storage_up", &[("storage", "local")]),
        1.0
    );
    let durations = heartbeat
        .text
        .lines()
        .find(|l| l.starts_with("rpod_backup_duration_seconds_count{target=\"data\"}"));
    assert!(durations.is_some(), "duration histogram per target");
    // The first reconciliation ran at start, beside the scheduler, and says when it ended and how long it took.
    let reconciled = eventually(Duration::from_secs(5), "a reconciliation pass", || async {
        let m = app.metrics().await;
        (m.value("rpod_last_reconciliation_timestamp_seconds", &[]) > 0.0).then_some(m)
    })
    .await;
    assert!(reconciled.value("rpod_reconciliation_duration_seconds", &[]) >= 0.0);

    let targets = app.get_json("/api/v1/targets").await;
    assert_eq!(targets[0]["name"], "data");
    assert_eq!(targets[0]["compliant"], true);
    assert_eq!(targets[0]["schedule"], "*/2 * * * * *");

    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_artifacts_decrypt_with_the_identity_and_hold_no_plaintext() {
    let identity = age::x25519::Identity::generate();
    let data: Vec<u8> = b"TOP-SECRET-PAYLOAD ".repeat(5000);
    let recipients = format!("# backup key\n{}\n", identity.to_public());
    let app = spawn_app_with(
        &command_config(
            "",
            &[command_target("secret", &["cat", "{dir}/data.txt"])
                .key("encrypt = { age_recipients_file = \"{dir}/recipients.txt\" }")
                .policy("rpo = \"1h\"")],
        ),
        &[
            ("data.txt", &data),
            ("recipients.txt", recipients.as_bytes()),
        ],
    )
    .await;
    let record = eventually(Duration::from_secs(20), "an encrypted backup", || async {
        succeeded(&app, "secret").await.into_iter().next()
    })
    .await;
    let artifact = record.artifact.unwrap();
    assert!(artifact.ends_with(".zst.age"), "{artifact}");
    let bytes = std::fs::read(app.path("backups").join(&artifact)).unwrap();
    assert!(
        !bytes
            .windows(b"TOP-SECRET".len())
            .any(|w| w == b"TOP-SECRET"),
        "no plaintext in the artifact"
    );
    let decryptor = age::Decryptor::new(&bytes[..]).unwrap();
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap();
    let mut compressed = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut compressed).unwrap();
    assert_eq!(
        unzstd(&compressed),
        data,
        "decrypts, then decompresses, to the command's output"
    );
    let wrong = age::x25519::Identity::generate();
    let decryptor = age::Decryptor::new(&bytes[..]).unwrap();
    assert!(
        decryptor
            .decrypt(std::iter::once(&wrong as &dyn age::Identity))
            .is_err()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_working_directory_and_secrets_reach_the_command_only() {
    let secret = "s3cr3t-value-9f8e";
    let app = spawn_app_with(
        &command_config(
            "",
            &[command_target(
                "env",
                &[
                    "/bin/sh",
                    "-c",
                    "pwd; echo \"$GREETING\"; echo \"${HOME:-no-home}\"; echo \"$TOKEN\"",
                ],
            )
            .key("working_dir = \"{dir}\"\nclear_env = true\nenv = { GREETING = \"hello\" }")
            .key("secret_env = [{ name = \"TOKEN\", value_file = \"{dir}/token\" }]")
            .policy("rpo = \"1h\"")],
        ),
        &[("token", format!("{secret}\n").as_bytes())],
    )
    .await;
    let record = eventually(Duration::from_secs(20), "a backup", || async {
        let records = app.records("env").await;
        records.into_iter().find(|r| r.status == Status::Succeeded)
    })
    .await;
    let bytes = std::fs::read(
        app.path("backups")
            .join(record.artifact.as_deref().unwrap()),
    )
    .unwrap();
    let output = String::from_utf8(unzstd(&bytes)).unwrap();
    let work = std::fs::canonicalize(app.path("")).unwrap();
    assert_eq!(
        output,
        format!("{}\nhello\nno-home\n{secret}\n", work.display())
    );
    let dir = app.stop().await;
    let db = std::fs::read(dir.path().join("state/rpod.db")).unwrap();
    let wal = std::fs::read(dir.path().join("state/rpod.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is not in the catalog"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_deadline_is_killed_and_timed_out() {
    let app = spawn_app(&command_config(
        "",
        &[command_target(
            "slow",
            &["sh", "-c", "echo $$ > {dir}/pid; sleep 600 & wait"],
        )
        .policy(
            "rpo = \"1h\"\noperation_timeout = \"1s\"\nmax_attempts = 1\nretry_backoff = \"1h\"\n\
                 retry_max_backoff = \"1h\"",
        )],
    ))
    .await;
    let record = eventually(Duration::from_secs(20), "the timed-out record", || async {
        app.records("slow")
            .await
            .into_iter()
            .find(|r| r.status == Status::TimedOut)
    })
    .await;
    assert_eq!(record.error_code.as_deref(), Some("TimedOut"));
    let pid: i32 = std::fs::read_to_string(app.path("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !crate::support::process_alive(pid),
        "the command was killed"
    );
    // The grandchild (`sleep 600 &`) was in the command's process group and went with it.
    let group = std::process::Command::new("pgrep")
        .args(["-g", &pid.to_string()])
        .output();
    if let Ok(group) = group {
        let living: Vec<i32> = String::from_utf8_lossy(&group.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| crate::support::process_alive(*p))
            .collect();
        assert!(
            living.is_empty(),
            "no living process left in the group: {living:?}"
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value(
            "rpod_backups_total",
            &[
                ("target", "slow"),
                ("trigger", "rpo"),
                ("outcome", "timed_out")
            ]
        ),
        1.0
    );
    assert!(
        walk_partials(&app.path("backups")).is_empty(),
        "the partial artifact was discarded"
    );
    app.stop().await;
}

fn walk_partials(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk_partials(&path));
        } else {
            found.push(path);
        }
    }
    found
}
