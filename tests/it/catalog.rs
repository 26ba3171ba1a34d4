//! The catalog refuses clearly (never panics) when its state directory or file is unusable.

use rpod::catalog::{Catalog, CatalogError};

use crate::support::{command_config, command_target, run_rpod, write_config};

fn config() -> String {
    command_config("", &[command_target("t", &["echo", "hello"])])
}

/// Records a new `running` manual backup and returns its id.
async fn running(catalog: &Catalog, target: &str, kind: &str, storage: &str) -> i64 {
    catalog
        .insert_backup(&rpod::catalog::NewBackup {
            target,
            kind,
            trigger: rpod::record::Trigger::Manual,
            attempt: 1,
            requested_at: chrono::Utc::now(),
            storage,
            first_change_at: None,
        })
        .await
        .unwrap()
}

fn rpod(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = run_rpod(config, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code(), stderr)
}

#[tokio::test]
async fn a_missing_state_directory_is_created_owner_only_when_its_parent_exists() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, config) = write_config(&config());
    let state = dir.path().join("state");
    std::fs::remove_dir(&state).unwrap();
    // Reading creates nothing: an empty catalog answers.
    let output = run_rpod(&config, &["status"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("never") && stdout.contains("NO"),
        "{stdout}"
    );
    assert!(!state.exists(), "status is read-only");
    // Writing creates the directory, readable by its owner only.
    let output = run_rpod(&config, &["backup", "t"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(state.join("rpod.db").exists());
}

#[tokio::test]
async fn a_state_directory_whose_parent_is_missing_is_a_clear_runtime_error() {
    let (dir, config) = write_config(&config());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{}/state", dir.path().display()),
        &format!("{}/nowhere/state", dir.path().display()),
    );
    std::fs::write(&config, text).unwrap();
    let (code, stderr) = rpod(&config, &["run"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("state directory") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!dir.path().join("nowhere").exists());
}

#[tokio::test]
async fn a_corrupt_catalog_is_reported_not_overwritten() {
    let (dir, config) = write_config(&config());
    let db = dir.path().join("state/rpod.db");
    let garbage = b"this is not a database, but it might be someone's data".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    let err = Catalog::open(&dir.path().join("state")).await.unwrap_err();
    assert!(matches!(err, CatalogError::Corrupt { .. }), "{err:?}");
    let (code, stderr) = rpod(&config, &["backups"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the file is left as it was"
    );
}

#[tokio::test]
async fn a_catalog_from_a_newer_rpod_is_refused() {
    let (dir, config) = write_config(&config());
    let catalog = Catalog::open(&dir.path().join("state")).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(catalog.pool())
    .await
    .unwrap();
    catalog.close().await;
    let err = Catalog::open(&dir.path().join("state")).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::TooNew { found: 9999, .. }),
        "{err:?}"
    );
    let (code, stderr) = rpod(&config, &["status"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("newer rpod"), "{stderr}");
}

#[tokio::test]
async fn reopening_keeps_the_records_and_is_idempotent() {
    let (dir, _config) = write_config(&config());
    let state = dir.path().join("state");
    let catalog = Catalog::open(&state).await.unwrap();
    let id = running(&catalog, "t", "command", "local").await;
    catalog.close().await;
    let catalog = Catalog::open(&state).await.unwrap();
    assert!(catalog.backup(id).await.unwrap().is_some());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(catalog.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn check_config_online_probes_every_storage() {
    let (dir, config) = write_config(&config());
    let output = run_rpod(&config, &["check-config", "--online"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("storage local (directory): reachable")
    );
    // A storage that cannot be written: its path lies under a regular file.
    std::fs::remove_dir_all(dir.path().join("backups")).unwrap();
    std::fs::write(dir.path().join("backups"), "not a directory").unwrap();
    let output = run_rpod(&config, &["check-config", "--online"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("storage local (directory): FAILED"),
        "{stdout}"
    );
    // Offline, the same configuration is valid.
    let output = run_rpod(&config, &["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

#[tokio::test]
async fn a_backup_name_already_taken_gets_the_backup_id_before_its_extension() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = running(&catalog, "svc", "apim", "blob").await;
        ids.push(id);
    }
    let name = "svc/20260101T000000Z.apimbackup";
    assert_eq!(
        catalog.claim_artifact(ids[0], "svc", name).await.unwrap(),
        name
    );
    assert_eq!(
        catalog.claim_artifact(ids[1], "svc", name).await.unwrap(),
        format!("svc/20260101T000000Z-{}.apimbackup", ids[1]),
        "no backup overwrites another"
    );
    assert_eq!(
        catalog.claim_artifact(ids[1], "other", name).await.unwrap(),
        name,
        "names are per target"
    );
    catalog.close().await;
}

#[tokio::test]
async fn a_record_closed_by_another_writer_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(dir.path()).await.unwrap();
    let id = running(&catalog, "t", "command", "local").await;
    // What a second daemon starting on the same catalog did: it found the backup running and closed it.
    catalog.interrupt_running(chrono::Utc::now()).await.unwrap();
    let now = chrono::Utc::now();
    let finish = rpod::catalog::Finish {
        status: rpod::record::Status::Succeeded,
        accepted_at: Some(now),
        completed_at: now,
        expires_at: Some(now + chrono::TimeDelta::days(30)),
        artifact: Some("t/1.zst".to_owned()),
        size_bytes: Some(9),
        sha256: None,
        sku: None,
        etag: None,
        error_code: None,
        error_message: None,
    };
    let err = catalog.finish_backup(id, &finish).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::Conflict { id: found, .. } if found == id),
        "{err:?}"
    );
    let record = catalog.backup(id).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        rpod::record::Status::Interrupted,
        "no running -> interrupted -> succeeded flip"
    );
    catalog.close().await;
}

#[tokio::test]
async fn operations_saved_by_an_earlier_rpod_are_carried_over_as_handles() {
    use rpod::azure::lro::{Handle, Pattern};
    // A catalog as the previous version left it, with one API Management backup being polled.
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("migrations");
    std::fs::create_dir(&earlier).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&path, earlier.join(&name)).unwrap();
        }
    }
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(state.join("rpod.db"))
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let url =
        "https://management.example/subscriptions/s//operationresults/abc?api-version=2024-05-01";
    sqlx::query(
        "INSERT INTO backups (id, target, kind, trigger, status, attempt, requested_at, accepted_at, artifact)
         VALUES (7, 'apim-a', 'apim', 'schedule', 'running', 1, 1000, 2000, 'apim-a/x.apimbackup')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO operations (backup_id, url, request, next_poll_at, deadline_at, slot_at, polls)
         VALUES (7, ?, '{}', 1764672000123, 1764700000000, 1500, 3)",
    )
    .bind(url)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let catalog = Catalog::open(&state).await.unwrap();
    let pending = catalog.pending_operations().await.unwrap();
    assert_eq!(pending.len(), 1);
    let handle = Handle::from_json(&pending[0].handle).unwrap();
    assert_eq!(handle.pattern, Pattern::Location);
    assert_eq!(handle.url, url, "polled exactly as Azure gave it");
    assert_eq!(handle.next_poll_at.timestamp_millis(), 1_764_672_000_123);
    assert_eq!(handle.polls, 3);
    assert_eq!(pending[0].deadline_at.timestamp_millis(), 1_764_700_000_000);
    assert_eq!(pending[0].slot.map(|s| s.timestamp_millis()), Some(1500));
    catalog.close().await;
}
