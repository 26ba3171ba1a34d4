//! Pruning against a real catalog and directory: `keep_last`, the newest-restorable invariant, dry runs, and a
//! failed listing that deletes nothing.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use rpod::catalog::Catalog;
use rpod::maintenance;
use rpod::record::Status;
use rpod::target::TargetSpec;

use crate::support::{command_config, command_target, insert_succeeded, run_rpod, write_config};

struct Fixture {
    dir: tempfile::TempDir,
    config_path: std::path::PathBuf,
    catalog: Catalog,
    targets: Vec<Arc<TargetSpec>>,
}

fn config() -> String {
    command_config(
        "",
        &[command_target("t", &["true"]).policy("rpo = \"1h\"\nexpiry = \"1d\"\nkeep_last = 2")],
    )
}

/// A catalog with backups of target `t` at the given ages (hours before now), each with an artifact file.
async fn fixture(ages_hours: &[i64], now: DateTime<Utc>) -> (Fixture, Vec<i64>) {
    let (dir, config_path) = write_config(&config());
    let (_, specs) = rpod::app::load(&config_path).unwrap();
    let catalog = Catalog::open(&dir.path().join("state")).await.unwrap();
    let mut ids = Vec::new();
    for age in ages_hours {
        let at = now - TimeDelta::hours(*age);
        let id = insert_succeeded(&catalog, "t", at, at + TimeDelta::days(1), |id| {
            format!("t/{id}.zst")
        })
        .await;
        let path = dir.path().join("backups").join(format!("t/{id}.zst"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
        ids.push(id);
    }
    let targets = specs.into_iter().map(Arc::new).collect();
    (
        Fixture {
            dir,
            config_path,
            catalog,
            targets,
        },
        ids,
    )
}

impl Fixture {
    fn artifact_exists(&self, id: i64) -> bool {
        self.dir.path().join(format!("backups/t/{id}.zst")).exists()
    }

    async fn status(&self, id: i64) -> Status {
        self.catalog.backup(id).await.unwrap().unwrap().status
    }
}

#[tokio::test]
async fn expired_and_surplus_backups_go_the_newest_restorable_stays() {
    let now = Utc::now();
    // Ages: two expired (30 h, 26 h), three restorable (5 h, 3 h, 1 h); keep_last = 2.
    let (fx, ids) = fixture(&[30, 26, 5, 3, 1], now).await;
    let report = maintenance::prune(&fx.catalog, None, &fx.targets, now, false, "test")
        .await
        .unwrap();
    let mut pruned: Vec<i64> = report.pruned.iter().map(|p| p.backup_id).collect();
    pruned.sort_unstable();
    assert_eq!(pruned, vec![ids[0], ids[1], ids[2]], "{report:#?}");
    assert!(report.errors.is_empty());
    for id in &ids[..3] {
        assert_eq!(fx.status(*id).await, Status::Pruned);
        assert!(!fx.artifact_exists(*id));
    }
    for id in &ids[3..] {
        assert_eq!(fx.status(*id).await, Status::Succeeded);
        assert!(fx.artifact_exists(*id));
    }
    let reasons: Vec<&str> = report.pruned.iter().map(|p| p.reason.as_str()).collect();
    assert!(reasons.contains(&"expired"));
    assert!(reasons.contains(&"beyond keep_last = 2"));
}

#[tokio::test]
async fn the_newest_backup_survives_even_when_everything_expired() {
    let now = Utc::now();
    let (fx, ids) = fixture(&[50, 40, 30], now).await;
    let report = maintenance::prune(&fx.catalog, None, &fx.targets, now, false, "test")
        .await
        .unwrap();
    let pruned: Vec<i64> = report.pruned.iter().map(|p| p.backup_id).collect();
    assert_eq!(pruned, vec![ids[0], ids[1]]);
    assert!(
        fx.artifact_exists(ids[2]),
        "backups stopped: the last artifact is kept as a last resort"
    );
}

#[tokio::test]
async fn a_dry_run_lists_without_deleting() {
    let now = Utc::now();
    let (fx, ids) = fixture(&[30, 26, 1], now).await;
    let report = maintenance::prune(&fx.catalog, None, &fx.targets, now, true, "test")
        .await
        .unwrap();
    assert_eq!(report.pruned.len(), 2);
    for id in &ids {
        assert_eq!(fx.status(*id).await, Status::Succeeded);
        assert!(fx.artifact_exists(*id));
    }
    fx.catalog.close().await;

    // The same through the command line.
    let output = run_rpod(&fx.config_path, &["prune", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("would prune t backup {}", ids[0])),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("would prune t backup {}", ids[1])),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("backup {} ", ids[2])), "{stdout}");
    for id in &ids {
        assert!(fx.artifact_exists(*id));
    }

    // And for real.
    let output = run_rpod(&fx.config_path, &["prune"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        !fx.artifact_exists(ids[0]) && !fx.artifact_exists(ids[1]) && fx.artifact_exists(ids[2])
    );
}

#[tokio::test]
async fn a_failed_listing_deletes_nothing() {
    let now = Utc::now();
    let (fx, ids) = fixture(&[30, 26, 1], now).await;
    let backups = fx.dir.path().join("backups");
    let parked = fx.dir.path().join("parked");
    // The storage becomes unreachable (an unmounted share): its root is gone.
    std::fs::rename(&backups, &parked).unwrap();
    let report = maintenance::prune(&fx.catalog, None, &fx.targets, now, false, "test")
        .await
        .unwrap();
    assert!(report.pruned.is_empty(), "{report:#?}");
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].contains("not pruned"),
        "{}",
        report.errors[0]
    );
    std::fs::rename(&parked, &backups).unwrap();
    for id in &ids {
        assert_eq!(
            fx.status(*id).await,
            Status::Succeeded,
            "nothing marked pruned"
        );
        assert!(fx.artifact_exists(*id), "nothing deleted");
    }
}
