//! Several replicas (child processes) on one PostgreSQL catalog (docs/high-availability.md): slots run once
//! across replicas, targets are spread, a frozen replica is fenced, an outage of the database is ridden out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rpod::catalog::{Catalog, PostgresCatalog};
use rpod::record::BackupRecord;

use crate::postgres::Postgres;
use crate::support::{DaemonProcess, eventually};

/// A replica's configuration: its own state directory and listener, the shared catalog and storage.
fn replica_config(dir: &Path, name: &str, url: &str, lease: &str, targets: &str) -> PathBuf {
    let state = dir.join(name);
    let text = format!(
        "[daemon]\nstate_dir = \"{state}\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\nreplica_id = \"{name}\"\n\
         evaluation_interval = \"1s\"\nshutdown_timeout = \"5s\"\n\n\
         [catalog]\nurl = \"{url}\"\nlease = \"{lease}\"\n\n\
         [storage.local]\nkind = \"directory\"\npath = \"{backups}\"\n\n{targets}",
        state = state.display(),
        backups = dir.join("backups").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `count` command targets backed up every two seconds.
fn every_two_seconds(count: usize, argv: &str) -> String {
    (0..count)
        .map(|i| {
            format!(
                "[[targets]]\nname = \"t{i:03}\"\nkind = \"command\"\ncommand = {argv}\nstorage = \"local\"\n\
                 [targets.policy]\nrpo = \"1d\"\nschedule = \"*/2 * * * * *\"\n\n"
            )
        })
        .collect()
}

async fn catalog(url: &str) -> Catalog {
    Catalog::open_postgres(&PostgresCatalog {
        url: url.to_owned(),
        password: None,
        ca_file: None,
    })
    .await
    .unwrap()
}

async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Every record that served a schedule slot, by target and slot.
fn by_slot(records: &[BackupRecord]) -> BTreeMap<(String, DateTime<Utc>), Vec<&BackupRecord>> {
    let mut slots: BTreeMap<(String, DateTime<Utc>), Vec<&BackupRecord>> = BTreeMap::new();
    for record in records {
        if let Some(slot) = record.slot {
            slots
                .entry((record.target.clone(), slot))
                .or_default()
                .push(record);
        }
    }
    slots
}

/// Stops a replica the way systemd or Kubernetes does (SIGTERM: drain, give the leases back).
fn stop(replica: &mut DaemonProcess) {
    replica.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        replica.wait_exit(Duration::from_secs(30)).is_some(),
        "replica stops on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_every_slot_of_200_targets_once_and_spread_them() {
    let postgres = Postgres::start();
    let url = postgres.database("three").await;
    let dir = tempfile::tempdir().unwrap();
    let targets = every_two_seconds(200, r#"["echo", "state"]"#);
    let mut replicas: Vec<DaemonProcess> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| DaemonProcess::start(&replica_config(dir.path(), name, &url, "3s", &targets)))
        .collect();
    let started = Utc::now();

    // Spread: each replica holds about a third; none more than its share plus 10 %.
    let spread = eventually(
        Duration::from_secs(30),
        "targets spread over three replicas",
        || async {
            let view = get_json(&replicas[0].url("/api/v1/replicas")).await;
            let held: Vec<usize> = view
                .as_array()?
                .iter()
                .map(|r| r["leases"].as_array().map_or(0, Vec::len))
                .collect();
            (held.len() == 3 && held.iter().sum::<usize>() == 200 && held.iter().all(|&n| n <= 74))
                .then_some(view)
        },
    )
    .await;
    let leaders = spread
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["leader"] == true)
        .count();
    assert_eq!(leaders, 1, "one leader: {spread}");
    let lease = &spread[0]["leases"][0];
    assert!(lease["term"].as_i64().unwrap() >= 1 && lease["expires_at"].is_string());
    let spread_at = Utc::now();

    tokio::time::sleep(Duration::from_secs(60)).await;
    let measured_until = Utc::now();
    for replica in &mut replicas {
        stop(replica);
    }

    let catalog = catalog(&url).await;
    let records = catalog.backups(None, 100_000).await.unwrap();
    let slots = by_slot(&records);
    let doubled: Vec<_> = slots.iter().filter(|(_, runs)| runs.len() > 1).collect();
    assert!(doubled.is_empty(), "a slot ran twice: {doubled:?}");
    // Every slot of every target from the moment the targets were spread until the end ran exactly once.
    let schedule: rpod::config::Schedule = "*/2 * * * * *".parse().unwrap();
    let mut missing = Vec::new();
    for i in 0..200 {
        let target = format!("t{i:03}");
        let mut slot = schedule.next_after(spread_at).unwrap();
        while slot < measured_until - chrono::TimeDelta::seconds(2) {
            if !slots.contains_key(&(target.clone(), slot)) {
                missing.push((target.clone(), slot));
            }
            slot = schedule.next_after(slot).unwrap();
        }
    }
    assert!(
        missing.is_empty(),
        "{} slots never ran, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Every record names the replica that ran it; all three ran backups.
    let ran_by: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.replica.as_deref())
        .collect();
    assert_eq!(ran_by, BTreeSet::from(["r1", "r2", "r3"]));
    assert!(
        records.iter().all(|r| r.replica.is_some()),
        "every backup names its replica"
    );
    assert!(
        records
            .iter()
            .all(|r| r.requested_at >= started - chrono::TimeDelta::seconds(1))
    );
}
