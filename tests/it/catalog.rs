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
            slot: None,
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
    .execute(&crate::support::catalog_file(&dir.path().join("state")).await)
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
        .fetch_one(&crate::support::catalog_file(&state).await)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_opened_at_once_on_a_new_state_directory_all_open() {
    // The daemon starting while `rpod check-config` or another opener creates the same catalog: the migrations
    // run once, and nobody sees a half-migrated schema as corruption.
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let state = state.clone();
                tokio::spawn(async move { Catalog::open(&state).await })
            })
            .collect();
        for open in opens {
            let catalog = open.await.unwrap().expect("every opener gets the catalog");
            assert!(catalog.ping().await);
            catalog.close().await;
        }
    }
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
    catalog
        .interrupt_running(chrono::Utc::now(), None)
        .await
        .unwrap();
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
        content: None,
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

/// A catalog in `state` as an rpod that knew the migrations before `version` left it, open for raw writes.
async fn catalog_before(
    dir: &std::path::Path,
    state: &std::path::Path,
    version: &str,
) -> sqlx::SqlitePool {
    let earlier = dir.join("migrations");
    std::fs::create_dir(&earlier).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join("sqlite");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < version {
            std::fs::copy(&path, earlier.join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(state).unwrap();
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
    pool
}

#[tokio::test]
async fn reading_a_catalog_an_older_rpod_wrote_asks_for_the_daemon_to_upgrade_it() {
    let (dir, config) = write_config(&config());
    catalog_before(dir.path(), &dir.path().join("state"), "0004")
        .await
        .close()
        .await;
    let (code, stderr) = rpod(&config, &["status"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("schema version 3") && stderr.contains("start the daemon (rpod run) once"),
        "{stderr}"
    );
}

#[tokio::test]
async fn discovered_backups_an_earlier_rpod_imported_unchecked_are_checked_again() {
    use rpod::record::Status;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pool = catalog_before(dir.path(), &state, "0003").await;
    let now = chrono::Utc::now();
    let name = |at: chrono::DateTime<chrono::Utc>, id: u32| {
        format!("t/{}-{id}.zst", at.format("%Y%m%dT%H%M%SZ"))
    };
    let taken = now - chrono::TimeDelta::hours(2);
    let (good, junk) = (name(taken, 1), name(taken, 2));
    let backups = dir.path().join("backups/t");
    std::fs::create_dir_all(&backups).unwrap();
    std::fs::write(
        dir.path().join("backups").join(&good),
        zstd::encode_all(&b"a real backup"[..], 3).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("backups").join(&junk), b"not zstd at all").unwrap();
    // The earlier rpod imported both with "now" as their recovery point, restorable for 30 days.
    for (id, artifact) in [(1, &good), (2, &junk)] {
        sqlx::query(
            "INSERT INTO backups (id, target, kind, trigger, status, attempt, requested_at, accepted_at,
                                  completed_at, expires_at, storage, artifact, size_bytes)
             VALUES (?, 't', 'command', 'discovered', 'discovered', 1, ?, ?, ?, ?, 'local', ?, 15)",
        )
        .bind(id)
        .bind(now.timestamp_millis())
        .bind(now.timestamp_millis())
        .bind(now.timestamp_millis())
        .bind((now + chrono::TimeDelta::days(30)).timestamp_millis())
        .bind(artifact)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let catalog = Catalog::open(&state).await.unwrap();
    assert_eq!(
        catalog.summary("t", now).await.unwrap().restorable_backups,
        0,
        "unchecked imports stop counting with the upgrade"
    );
    let toml = format!(
        "[daemon]\nstate_dir = \"{0}/state\"\n{1}",
        dir.path().display(),
        config().replace("{dir}", dir.path().to_str().unwrap())
    );
    let parsed = rpod::config::Config::parse(&toml, std::path::Path::new("rpod.toml")).unwrap();
    let targets: Vec<_> = rpod::app::build_targets(&parsed, std::path::Path::new("rpod.toml"))
        .unwrap()
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    let report = rpod::reconcile::reconcile(&catalog, &targets, now)
        .await
        .unwrap();
    assert_eq!(report.discovered.len(), 2, "{report:?}");
    let checked = catalog.backup(1).await.unwrap().unwrap();
    assert_eq!(checked.status, Status::Discovered);
    assert_eq!(
        checked.accepted_at.map(|t| t.timestamp()),
        Some(taken.timestamp()),
        "dated by its name now"
    );
    assert!(checked.is_restorable(now), "{checked:?}");
    let refused = catalog.backup(2).await.unwrap().unwrap();
    assert!(!refused.is_restorable(now), "{refused:?}");
    assert!(
        refused
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("zstd")),
        "{refused:?}"
    );
    // Checked once: the next pass leaves them as they are.
    let report = rpod::reconcile::reconcile(&catalog, &targets, now)
        .await
        .unwrap();
    assert!(report.discovered.is_empty(), "{report:?}");
    catalog.close().await;
}

#[tokio::test]
async fn operations_saved_by_an_earlier_rpod_are_carried_over_as_handles() {
    use rpod::azure::lro::{Handle, Pattern};
    // A catalog as the previous version left it, with one API Management backup being polled.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let pool = catalog_before(dir.path(), &state, "0004").await;
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
    let pending = catalog.pending_operations(None).await.unwrap();
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
