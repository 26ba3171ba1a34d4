//! Several replicas (child processes) on one PostgreSQL catalog (docs/high-availability.md): slots run once
//! across replicas, targets are spread, a frozen replica is fenced, an outage of the database is ridden out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
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
    let mut text = String::new();
    for i in 0..count {
        let _ = write!(
            text,
            "[[targets]]\nname = \"t{i:03}\"\nkind = \"command\"\ncommand = {argv}\nstorage = \"local\"\n\
             [targets.policy]\nrpo = \"1d\"\nschedule = \"*/2 * * * * *\"\n\n"
        );
    }
    text
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

    // Spread: each replica holds about a third; none more than its share (67) plus 10 % (73).
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
            (held.len() == 3 && held.iter().sum::<usize>() == 200 && held.iter().all(|&n| n <= 73))
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

    tokio::time::sleep(Duration::from_mins(1)).await;
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

/// The replica holding `target` now, as `GET /api/v1/replicas` on `asked` says.
async fn holder(asked: &DaemonProcess, target: &str) -> Option<String> {
    let view = get_json(&asked.url("/api/v1/replicas")).await;
    view.as_array()?.iter().find_map(|r| {
        r["leases"]
            .as_array()?
            .iter()
            .any(|l| l["target"] == target)
            .then(|| r["replica"].as_str().unwrap_or_default().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_is_taken_over_and_its_late_writes_are_refused() {
    let postgres = Postgres::start();
    let url = postgres.database("frozen").await;
    let dir = tempfile::tempdir().unwrap();
    // No schedule: the backups here are the one each target gets at start (nothing is restorable yet) and one
    // asked for, each taking three seconds.
    let mut targets = String::new();
    for i in 0..2 {
        let _ = write!(
            targets,
            "[[targets]]\nname = \"t{i:03}\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 3; echo state\"]\n\
             storage = \"local\"\n[targets.policy]\nrpo = \"1d\"\n\n"
        );
    }
    let replicas: Vec<DaemonProcess> = ["r1", "r2"]
        .iter()
        .map(|name| DaemonProcess::start(&replica_config(dir.path(), name, &url, "3s", &targets)))
        .collect();
    let catalog = catalog(&url).await;
    eventually(
        Duration::from_secs(30),
        "each replica holds one target, each backed up once",
        || async {
            let (a, b) = (
                holder(&replicas[0], "t000").await?,
                holder(&replicas[0], "t001").await?,
            );
            let done = catalog.backups(None, 100).await.ok()?;
            let succeeded = done
                .iter()
                .filter(|r| r.status == rpod::record::Status::Succeeded)
                .count();
            (a != b && succeeded >= 2).then_some(())
        },
    )
    .await;
    let owner_name = holder(&replicas[0], "t000").await.unwrap();
    let (owner, other) = if owner_name == "r1" {
        (&replicas[0], &replicas[1])
    } else {
        (&replicas[1], &replicas[0])
    };
    let asked = reqwest::Client::new()
        .post(owner.url("/api/v1/targets/t000/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    let in_flight = eventually(
        Duration::from_secs(10),
        "the backup asked for runs",
        || async {
            let records = catalog.backups(Some("t000"), 10).await.ok()?;
            records
                .into_iter()
                .find(|r| r.status == rpod::record::Status::Running && r.trigger == "manual")
        },
    )
    .await;
    assert_eq!(in_flight.replica.as_deref(), Some(owner_name.as_str()));

    owner.signal(nix::sys::signal::Signal::SIGSTOP);
    let other_name = if owner_name == "r1" { "r2" } else { "r1" };
    eventually(
        Duration::from_secs(20),
        "the other replica takes the target over",
        || async { (holder(other, "t000").await.as_deref() == Some(other_name)).then_some(()) },
    )
    .await;
    let taken_over = eventually(
        Duration::from_secs(10),
        "the frozen attempt closed by the new owner",
        || async {
            let record = catalog.backup(in_flight.id).await.ok()??;
            (record.status == rpod::record::Status::Interrupted).then_some(record)
        },
    )
    .await;
    // The new owner retries what was interrupted.
    eventually(
        Duration::from_secs(20),
        "the new owner backs the target up",
        || async {
            let records = catalog.backups(Some("t000"), 10).await.ok()?;
            records
                .iter()
                .any(|r| {
                    r.replica.as_deref() == Some(other_name)
                        && r.status == rpod::record::Status::Succeeded
                })
                .then_some(())
        },
    )
    .await;

    owner.signal(nix::sys::signal::Signal::SIGCONT);
    let continued = Utc::now();
    // Its command ends, and the outcome it tries to record is refused.
    eventually(
        Duration::from_secs(15),
        "the late write refused",
        || async {
            owner
                .log_contains(&format!("replica {owner_name} no longer holds target t000"))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let record = catalog.backup(in_flight.id).await.unwrap().unwrap();
    assert_eq!(
        record, taken_over,
        "the record stays as the new owner wrote it"
    );
    let started_since: Vec<BackupRecord> = catalog
        .backups(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.replica.as_deref() == Some(owner_name.as_str()) && r.requested_at >= continued
        })
        .collect();
    assert!(
        started_since.is_empty(),
        "the woken replica started nothing: {started_since:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_for_20_seconds_is_ridden_out() {
    let mut postgres = Postgres::start();
    let url = postgres.database("outage").await;
    let dir = tempfile::tempdir().unwrap();
    let targets = every_two_seconds(6, r#"["echo", "state"]"#);
    let mut replicas: Vec<DaemonProcess> = ["r1", "r2"]
        .iter()
        .map(|name| DaemonProcess::start(&replica_config(dir.path(), name, &url, "3s", &targets)))
        .collect();
    {
        let catalog = catalog(&url).await;
        eventually(
            Duration::from_secs(30),
            "both replicas back targets up",
            || async {
                let records = catalog.backups(None, 1000).await.ok()?;
                let by: BTreeSet<&str> = records
                    .iter()
                    .filter_map(|r| r.replica.as_deref())
                    .collect();
                (by.len() == 2).then_some(())
            },
        )
        .await;
        catalog.close().await;
    }
    let client = reqwest::Client::new();
    let ready = |replica: &DaemonProcess| {
        let request = client.get(replica.url("/readyz")).send();
        async move { request.await.map_or(0, |r| r.status().as_u16()) }
    };

    postgres.stop();
    let stopped = Utc::now();
    let stopped_at = Instant::now();
    for replica in &replicas {
        eventually(
            Duration::from_secs(10),
            "not ready while the catalog is down",
            || async { (ready(replica).await == 503).then_some(()) },
        )
        .await;
    }
    while stopped_at.elapsed() < Duration::from_secs(20) {
        for replica in &mut replicas {
            assert!(
                replica.child.try_wait().unwrap().is_none(),
                "a replica crashed"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    postgres.start_again();
    let restarted = Utc::now();
    for replica in &replicas {
        eventually(Duration::from_secs(30), "ready again", || async {
            (ready(replica).await == 200).then_some(())
        })
        .await;
    }
    let catalog = catalog(&url).await;
    eventually(
        Duration::from_secs(30),
        "every target backed up again",
        || async {
            let records = catalog.backups(None, 10_000).await.ok()?;
            (0..6)
                .all(|i| {
                    records.iter().any(|r| {
                        r.target == format!("t{i:03}")
                            && r.requested_at > restarted
                            && r.status == rpod::record::Status::Succeeded
                    })
                })
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let until = Utc::now();
    for replica in &mut replicas {
        assert!(
            replica.child.try_wait().unwrap().is_none(),
            "a replica crashed"
        );
        stop(replica);
    }

    let records = catalog.backups(None, 10_000).await.unwrap();
    let slots = by_slot(&records);
    let doubled: Vec<_> = slots.iter().filter(|(_, runs)| runs.len() > 1).collect();
    assert!(doubled.is_empty(), "a slot ran twice: {doubled:?}");
    // Every slot before the outage and after the recovery ran; of the slots in between, the newest was caught up
    // once per target when the replicas took their targets back.
    let schedule: rpod::config::Schedule = "*/2 * * * * *".parse().unwrap();
    let first =
        records.iter().map(|r| r.requested_at).min().unwrap() + chrono::TimeDelta::seconds(8);
    let recovered = restarted + chrono::TimeDelta::seconds(12);
    for i in 0..6 {
        let target = format!("t{i:03}");
        let mut slot = schedule.next_after(first).unwrap();
        while slot < until - chrono::TimeDelta::seconds(2) {
            let outage = slot > stopped - chrono::TimeDelta::seconds(4) && slot < recovered;
            assert!(
                outage || slots.contains_key(&(target.clone(), slot)),
                "{target}: slot {slot} never ran (outage {stopped} to {restarted})"
            );
            slot = schedule.next_after(slot).unwrap();
        }
        let caught_up: Vec<_> = records
            .iter()
            .filter(|r| r.target == target && r.trigger == "catch_up" && r.requested_at > restarted)
            .map(|r| {
                (
                    r.requested_at,
                    r.attempt,
                    r.status,
                    r.replica.clone(),
                    r.slot,
                    r.error_code.clone(),
                )
            })
            .collect();
        // Each replica that takes the target back catches it up at most once; when the targets are spread again
        // after the recovery, a slot that passed during that handover is the next owner's to catch up.
        let mut by_replica = BTreeMap::<Option<String>, usize>::new();
        for (.., replica, _, _) in &caught_up {
            *by_replica.entry(replica.clone()).or_default() += 1;
        }
        assert!(
            by_replica.values().all(|count| *count <= 1),
            "{target}: caught up more than once by one replica: {caught_up:?}"
        );
    }
}

/// Replicas `r1` and `r2` of `base` (a configuration of the test cloud) on the catalog at `url`, each with its own
/// state directory in `dir`, signing in to the emulator.
fn cloud_replicas(
    cloud: &crate::cloud::Cloud,
    base: &str,
    url: &str,
    dir: &Path,
) -> BTreeMap<String, DaemonProcess> {
    let env = cloud.identity_env();
    let mut replicas = BTreeMap::new();
    for name in ["r1", "r2"] {
        let text = base.replace(
            "state_dir = \"{dir}/state\"",
            &format!("state_dir = \"{{dir}}/{name}\"\nreplica_id = \"{name}\""),
        ) + &format!("\n[catalog]\nurl = \"{url}\"\nlease = \"3s\"\n");
        let path = dir.join(format!("{name}.toml"));
        crate::support::rewrite_config(&path, dir, &text);
        replicas.insert(name.to_owned(), DaemonProcess::start_with_env(&path, &env));
    }
    replicas
}

#[test]
fn a_replica_killed_during_an_apim_backup_is_taken_over_and_the_operation_followed_to_its_end() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let postgres = Postgres::start();
    let url = runtime.block_on(postgres.database("apim"));
    // The operation takes 8 s: the replica that posted it dies while it runs.
    let cloud = runtime.block_on(crate::cloud::Cloud::fast(Duration::from_secs(8)));
    cloud.service("svc-ha");
    let base = cloud.config(
        "managed_identity",
        &crate::cloud::target("ha", "svc-ha", "rpo = \"1h\""),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    let mut replicas = cloud_replicas(&cloud, &base, &url, dir.path());
    runtime.block_on(eventually(
        Duration::from_secs(20),
        "the backup's operation being polled",
        || async {
            cloud
                .requests_for("svc-ha")
                .iter()
                .any(|r| r.method == "GET" && r.status == Some(202))
                .then_some(())
        },
    ));
    let any = replicas.values().next().unwrap();
    let poster = runtime
        .block_on(holder(any, "ha"))
        .expect("a replica holds the target");
    let mut killed = replicas.remove(&poster).unwrap();
    killed.signal(nix::sys::signal::Signal::SIGKILL);
    killed.wait_exit(Duration::from_secs(5)).expect("killed");
    let survivor = replicas.values().next().unwrap();

    let catalog = runtime.block_on(catalog(&url));
    let records = runtime.block_on(eventually(
        Duration::from_secs(40),
        "the backup completed by the other replica",
        || async {
            let records = catalog.backups(Some("ha"), 10).await.ok()?;
            records
                .iter()
                .any(|r| r.status == rpod::record::Status::Succeeded)
                .then_some(records)
        },
    ));
    assert_eq!(
        cloud.backup_posts("svc-ha").len(),
        1,
        "exactly one POST: the operation was followed, not re-run"
    );
    assert_eq!(records.len(), 1, "one backup, completed once: {records:#?}");
    assert_eq!(
        records[0].replica.as_deref(),
        Some(poster.as_str()),
        "the record names the replica that started it"
    );
    assert!(
        survivor.log_contains("Resuming an unfinished operation"),
        "the survivor resumed it"
    );
    assert_eq!(
        runtime.block_on(holder(survivor, "ha")).as_deref(),
        Some(if poster == "r1" { "r2" } else { "r1" })
    );
    let blobs = runtime.block_on(cloud.blobs());
    assert!(blobs.contains(records[0].artifact.as_ref().unwrap()));
}

#[test]
fn a_webhook_delivery_to_any_replica_is_acted_on_by_the_targets_owner() {
    use crate::changes::{SECRET, api_updated, policy, webhook_section};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let postgres = Postgres::start();
    let url = runtime.block_on(postgres.database("hooks"));
    let cloud = runtime.block_on(crate::cloud::Cloud::fast(Duration::from_millis(200)));
    cloud.service("apim-w");
    let on_change = policy(
        "detect = \"event_grid\", quiet_period = \"300ms\", max_delay = \"5s\", min_interval = \"0s\"",
    );
    let base = cloud.config(
        "managed_identity",
        &format!(
            "{}{}",
            webhook_section(false),
            crate::cloud::target("w", "apim-w", &on_change)
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), cloud.azurite.key()).unwrap();
    std::fs::write(dir.path().join("webhook-secret"), SECRET).unwrap();
    let replicas = cloud_replicas(&cloud, &base, &url, dir.path());
    let catalog = runtime.block_on(catalog(&url));
    runtime.block_on(eventually(
        Duration::from_secs(30),
        "the first backup",
        || async {
            let records = catalog.backups(Some("w"), 10).await.ok()?;
            records
                .iter()
                .any(|r| r.status == rpod::record::Status::Succeeded)
                .then_some(())
        },
    ));
    let owner = runtime
        .block_on(holder(replicas.values().next().unwrap(), "w"))
        .unwrap();
    let (_, other) = replicas.iter().find(|(name, _)| **name != owner).unwrap();
    let delivered = runtime.block_on(
        reqwest::Client::new()
            .post(other.url(&format!("/hooks/eventgrid?code={SECRET}")))
            .header("aeg-event-type", "Notification")
            .json(&serde_json::json!([api_updated("apim-w")]))
            .send(),
    );
    assert_eq!(delivered.unwrap().status(), 200);
    let change = runtime.block_on(eventually(
        Duration::from_secs(30),
        "a change backup by the target's owner",
        || async {
            let records = catalog.backups(Some("w"), 10).await.ok()?;
            records
                .into_iter()
                .find(|r| r.trigger == "change" && r.status == rpod::record::Status::Succeeded)
        },
    ));
    assert_eq!(
        change.replica.as_deref(),
        Some(owner.as_str()),
        "the owner acted on it"
    );
    let records = runtime.block_on(catalog.backups(Some("w"), 10)).unwrap();
    assert_eq!(
        records.iter().filter(|r| r.trigger == "change").count(),
        1,
        "one change, one backup"
    );
}
