//! The catalog's contract, run the same on both of its databases: `SQLite` (a file in a temporary state
//! directory) and PostgreSQL (a database of its own per case on the throw-away cluster). What a case asserts is
//! what rpod's scheduler, API and reconciliation rely on, whichever database holds the catalog.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rpod::catalog::{
    ArtifactName, Catalog, CatalogError, Discovered, EndBackup, Finish, NewBackup, NewRestore,
    OperationAccepted, PostgresCatalog, RestoreFinish, StartBackup, Started,
};
use rpod::record::{BackupRecord, RestoreTrigger, Status, Trigger};

use crate::postgres::Postgres;

type Case = fn(Catalog) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every case, by name.
const CASES: &[(&str, Case)] = &[
    ("a_backup_round_trips", |c| {
        Box::pin(a_backup_round_trips(c))
    }),
    ("a_closed_record_is_not_overwritten", |c| {
        Box::pin(a_closed_record_is_not_overwritten(c))
    }),
    ("artifact_names_stay_unique", |c| {
        Box::pin(artifact_names_stay_unique(c))
    }),
    ("operations_are_saved_resumed_and_closed", |c| {
        Box::pin(operations_are_saved_resumed_and_closed(c))
    }),
    ("restorability_counts_what_was_seen", |c| {
        Box::pin(restorability_counts_what_was_seen(c))
    }),
    ("expiry_pruning_and_the_audit_trail", |c| {
        Box::pin(expiry_pruning_and_the_audit_trail(c))
    }),
    ("discovered_artifacts_are_imported_once", |c| {
        Box::pin(discovered_artifacts_are_imported_once(c))
    }),
    ("slots_and_change_state", |c| {
        Box::pin(slots_and_change_state(c))
    }),
    ("restores_from_start_to_end", |c| {
        Box::pin(restores_from_start_to_end(c))
    }),
    ("bulk_loading_and_counts", |c| {
        Box::pin(bulk_loading_and_counts(c))
    }),
    (
        "attempts_started_and_ended_together_keep_every_guarantee",
        |c| Box::pin(attempts_started_and_ended_together_keep_every_guarantee(c)),
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_suite_passes_on_sqlite() {
    for (name, case) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).await.unwrap();
        run(name, case(catalog)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_suite_passes_on_postgres() {
    let postgres = Postgres::start();
    for (name, case) in CASES {
        let url = postgres.database(name).await;
        let catalog = Catalog::open_postgres(&PostgresCatalog {
            url,
            password: None,
            ca_file: None,
        })
        .await
        .unwrap();
        run(name, case(catalog)).await;
    }
}

async fn run(name: &str, case: Pin<Box<dyn Future<Output = ()> + Send>>) {
    if let Err(panic) = tokio::spawn(case).await {
        panic!("catalog case {name} failed: {panic}");
    }
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, hour, 0, 0).unwrap()
}

async fn start(catalog: &Catalog, target: &str, requested_at: DateTime<Utc>) -> i64 {
    catalog
        .insert_backup(&NewBackup {
            target,
            kind: "command",
            trigger: Trigger::Schedule,
            attempt: 1,
            requested_at,
            storage: "local",
            first_change_at: None,
            slot: Some(requested_at),
        })
        .await
        .unwrap()
}

fn succeeded(point: DateTime<Utc>, expires: DateTime<Utc>, artifact: &str) -> Finish {
    Finish {
        status: Status::Succeeded,
        accepted_at: Some(point),
        completed_at: point + TimeDelta::minutes(1),
        expires_at: Some(expires),
        artifact: Some(artifact.to_owned()),
        size_bytes: Some(42),
        sha256: Some("ab".repeat(32)),
        sku: None,
        etag: Some("\"e1\"".to_owned()),
        error_code: None,
        error_message: None,
        content: Some(r#"{"apis":3}"#.to_owned()),
    }
}

async fn backup_of(catalog: &Catalog, target: &str, point: DateTime<Utc>, days: i64) -> i64 {
    let id = start(catalog, target, point).await;
    let artifact = format!("{target}/{}.zst", point.timestamp());
    catalog
        .finish_backup(
            id,
            &succeeded(point, point + TimeDelta::days(days), &artifact),
        )
        .await
        .unwrap();
    id
}

async fn a_backup_round_trips(catalog: Catalog) {
    let catalog = catalog.with_replica("replica-a");
    assert!(catalog.ping().await);
    catalog
        .probe_write(at(0), std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let id = start(&catalog, "db", at(1)).await;
    let running = catalog.backup(id).await.unwrap().unwrap();
    assert_eq!(running.status, Status::Running);
    assert_eq!(running.replica.as_deref(), Some("replica-a"));
    assert_eq!(running.slot, Some(at(1)));
    catalog
        .finish_backup(
            id,
            &succeeded(at(1), at(1) + TimeDelta::days(7), "db/1.zst"),
        )
        .await
        .unwrap();
    let done = catalog.backup(id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.accepted_at, Some(at(1)));
    assert_eq!(done.expires_at, Some(at(1) + TimeDelta::days(7)));
    assert_eq!(done.artifact.as_deref(), Some("db/1.zst"));
    assert_eq!(done.size_bytes, Some(42));
    assert_eq!(done.etag.as_deref(), Some("\"e1\""));
    assert_eq!(done.content.as_deref(), Some(r#"{"apis":3}"#));
    assert_eq!(done.attempt, 1);
    assert_eq!(
        catalog.backups(Some("db"), 10).await.unwrap(),
        vec![done.clone()]
    );
    assert_eq!(catalog.backups(None, 10).await.unwrap(), vec![done]);
    assert_eq!(catalog.attempts_since("db", at(0)).await.unwrap(), 1);
    assert_eq!(catalog.attempts_since("db", at(2)).await.unwrap(), 0);
    assert_eq!(
        catalog.recent_durations("db", 5).await.unwrap(),
        vec![std::time::Duration::from_mins(1)]
    );
    assert!(catalog.backup(id + 1000).await.unwrap().is_none());
}

async fn a_closed_record_is_not_overwritten(catalog: Catalog) {
    let id = start(&catalog, "db", at(1)).await;
    catalog
        .finish_backup(id, &Finish::interrupted(at(2), "stopped"))
        .await
        .unwrap();
    let err = catalog
        .finish_backup(id, &succeeded(at(1), at(9), "db/late.zst"))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Conflict { .. }), "{err:?}");
    let kept = catalog.backup(id).await.unwrap().unwrap();
    assert_eq!(kept.status, Status::Interrupted);
    assert_eq!(
        kept.artifact, None,
        "an unaccepted backup releases its name"
    );
    // Two writers race to close one record: exactly one wins.
    let id = start(&catalog, "db", at(3)).await;
    let (won, raced) = (
        succeeded(at(3), at(9), "db/a.zst"),
        Finish::interrupted(at(3), "raced"),
    );
    let (a, b) = tokio::join!(
        catalog.finish_backup(id, &won),
        catalog.finish_backup(id, &raced),
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "one of two closes wins: {a:?} {b:?}"
    );
}

async fn artifact_names_stay_unique(catalog: Catalog) {
    let first = start(&catalog, "db", at(1)).await;
    let second = start(&catalog, "db", at(1)).await;
    let other = start(&catalog, "web", at(1)).await;
    assert_eq!(
        catalog
            .claim_artifact(first, "db", "db/x.zst")
            .await
            .unwrap(),
        "db/x.zst"
    );
    assert_eq!(
        catalog
            .claim_artifact(second, "db", "db/x.zst")
            .await
            .unwrap(),
        format!("db/x-{second}.zst")
    );
    assert_eq!(
        catalog
            .claim_artifact(other, "web", "db/x.zst")
            .await
            .unwrap(),
        "db/x.zst",
        "names are unique per target"
    );
    let known = catalog.artifacts("db").await.unwrap();
    assert_eq!(known.len(), 2);
    assert!(
        known
            .iter()
            .all(|a| a.status == Status::Running && !a.imported_unchecked)
    );
}

async fn operations_are_saved_resumed_and_closed(catalog: Catalog) {
    let with_operation = start(&catalog, "apim", at(1)).await;
    let without = start(&catalog, "cmd", at(1)).await;
    catalog
        .operation_accepted(&OperationAccepted {
            backup_id: with_operation,
            target: "apim",
            accepted_at: at(1) + TimeDelta::seconds(5),
            handle: r#"{"pattern":"location","url":"https://x/op"}"#,
            request: Some("backup to container c"),
            deadline_at: at(4),
            slot: Some(at(1)),
        })
        .await
        .unwrap();
    assert_eq!(catalog.last_slot("apim").await.unwrap(), Some(at(1)));
    catalog
        .operation_polled(
            with_operation,
            r#"{"pattern":"location","url":"https://x/op2"}"#,
        )
        .await
        .unwrap();
    let interrupted = catalog.interrupt_running(at(2), None).await.unwrap();
    assert_eq!(
        interrupted,
        vec!["cmd".to_owned()],
        "a saved operation is resumed, not interrupted"
    );
    assert_eq!(
        catalog.backup(without).await.unwrap().unwrap().status,
        Status::Interrupted
    );
    let pending = catalog.pending_operations(None).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].backup_id, with_operation);
    assert_eq!(pending[0].target, "apim");
    assert_eq!(
        pending[0].handle,
        r#"{"pattern":"location","url":"https://x/op2"}"#
    );
    assert_eq!(pending[0].accepted_at, at(1) + TimeDelta::seconds(5));
    assert_eq!(pending[0].deadline_at, at(4));
    assert_eq!(pending[0].slot, Some(at(1)));
    catalog
        .finish_backup(with_operation, &succeeded(at(1), at(9), "apim/1"))
        .await
        .unwrap();
    assert!(catalog.pending_operations(None).await.unwrap().is_empty());
}

async fn restorability_counts_what_was_seen(catalog: Catalog) {
    let now = at(12);
    backup_of(&catalog, "db", at(0) - TimeDelta::days(3), 1).await; // expired
    let old = backup_of(&catalog, "db", at(1), 1).await;
    let newest = backup_of(&catalog, "db", at(2), 1).await;
    let failed = start(&catalog, "db", at(3)).await;
    catalog
        .finish_backup(
            failed,
            &Finish {
                status: Status::Failed,
                error_code: Some("ExitStatus".to_owned()),
                error_message: Some("exit 1".to_owned()),
                ..Finish::interrupted(at(3), "")
            },
        )
        .await
        .unwrap();
    let summary = catalog.summary("db", now).await.unwrap();
    assert_eq!(summary.restorable_backups, 2);
    assert_eq!(summary.newest_recovery_point, Some(at(2)));
    assert_eq!(summary.restorable_until, Some(at(2) + TimeDelta::days(1)));
    assert_eq!(summary.last_success, Some(at(2)));
    assert_eq!(summary.last_attempt, Some(at(3)));
    let restorable: Vec<i64> = catalog
        .restorable("db", now)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(restorable, vec![newest, old]);
    let all = catalog.restorability(now).await.unwrap();
    assert_eq!(all["db"].count, 2);
    assert_eq!(all["db"].newest_recovery_point, Some(at(2)));
    assert_eq!(catalog.newest_success_id("db").await.unwrap(), Some(newest));
    // An artifact found in storage but not verified is not restorable.
    catalog
        .import_discovered(
            &Discovered {
                target: "db",
                kind: "command",
                storage: "local",
                artifact: "db/found.zst",
                size: 7,
                recovery_point: Some(at(5)),
                expires_at: Some(at(5) + TimeDelta::days(1)),
                unverified: Some("not a complete zstd stream".to_owned()),
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        catalog.summary("db", now).await.unwrap().restorable_backups,
        2
    );
    assert_eq!(
        catalog
            .summary("nothing", now)
            .await
            .unwrap()
            .restorable_backups,
        0
    );
}

async fn expiry_pruning_and_the_audit_trail(catalog: Catalog) {
    let expired = backup_of(&catalog, "db", at(1), 1).await;
    let kept = backup_of(&catalog, "db", at(2), 30).await;
    let later = at(1) + TimeDelta::days(2);
    let due = catalog.expired_unpruned(later, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), vec![expired]);
    assert!(catalog.mark_expiry_warned(kept, later).await.unwrap());
    assert!(
        !catalog.mark_expiry_warned(kept, later).await.unwrap(),
        "warned once"
    );
    catalog
        .mark_pruned(&due[0], later, "rpod", "expired")
        .await
        .unwrap();
    let err = catalog
        .mark_pruned(&due[0], later, "rpod", "expired")
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Conflict { .. }), "{err:?}");
    let pruned = catalog.backup(expired).await.unwrap().unwrap();
    assert_eq!(pruned.status, Status::Pruned);
    assert_eq!(pruned.pruned_at, Some(later));
    assert!(
        catalog
            .expired_unpruned(later, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        catalog
            .mark_missing("db", kept, later, "gone from storage")
            .await
            .unwrap()
    );
    assert!(
        !catalog
            .mark_missing("db", kept, later, "again")
            .await
            .unwrap()
    );
    let audit = catalog.audit_log("db").await.unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .map(|(_, _, action, _, _)| action.as_str())
        .collect();
    assert_eq!(actions, vec!["missing", "pruned"], "newest first");
    assert_eq!(audit[1].1, "rpod");
    assert!(audit[1].4.contains("expired"), "{:?}", audit[1]);
    assert_eq!(audit[1].3, Some(expired));
}

async fn discovered_artifacts_are_imported_once(catalog: Catalog) {
    let found = Discovered {
        target: "db",
        kind: "command",
        storage: "local",
        artifact: "db/20261102T010000Z.zst",
        size: 1024,
        recovery_point: Some(at(1)),
        expires_at: Some(at(1) + TimeDelta::days(3)),
        unverified: None,
    };
    let id = catalog
        .import_discovered(&found, at(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        catalog.import_discovered(&found, at(3)).await.unwrap(),
        None
    );
    let record = catalog.backup(id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Discovered);
    assert_eq!(record.verified_at, Some(at(2)));
    assert_eq!(record.size_bytes, Some(1024));
    assert!(record.replica.is_none(), "no replica ran it");
    assert_eq!(
        catalog
            .summary("db", at(2))
            .await
            .unwrap()
            .restorable_backups,
        1
    );
    assert_eq!(
        catalog.newest_success_id("db").await.unwrap(),
        None,
        "a discovered artifact never takes the place of rpod's own newest success"
    );
    // A backup that failed because its point was not listed yet is completed once it is.
    let pending = start(&catalog, "vm", at(4)).await;
    catalog
        .operation_accepted(&OperationAccepted {
            backup_id: pending,
            target: "vm",
            accepted_at: at(4),
            handle: "{}",
            request: None,
            deadline_at: at(6),
            slot: None,
        })
        .await
        .unwrap();
    catalog
        .finish_backup(
            pending,
            &Finish {
                status: Status::Failed,
                accepted_at: Some(at(4)),
                error_code: Some(rpod::record::POINT_NOT_LISTED.to_owned()),
                error_message: Some("not listed yet".to_owned()),
                ..Finish::interrupted(at(4), "")
            },
        )
        .await
        .unwrap();
    let completed = catalog
        .complete_unlisted("vm", "point-1", at(4), at(4) + TimeDelta::days(2), at(5))
        .await
        .unwrap();
    assert_eq!(completed, Some(pending));
    let record = catalog.backup(pending).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Succeeded);
    assert_eq!(record.artifact.as_deref(), Some("point-1"));
}

async fn slots_and_change_state(catalog: Catalog) {
    assert_eq!(catalog.last_slot("db").await.unwrap(), None);
    catalog.set_last_slot("db", at(3)).await.unwrap();
    catalog.set_last_slot("db", at(2)).await.unwrap();
    assert_eq!(
        catalog.last_slot("db").await.unwrap(),
        Some(at(3)),
        "a used slot is never given back"
    );
    assert_eq!(catalog.change_state("db").await.unwrap(), None);
    catalog
        .set_change_state("db", r#"{"etag":"1"}"#, at(1))
        .await
        .unwrap();
    catalog
        .set_change_state("db", r#"{"etag":"2"}"#, at(2))
        .await
        .unwrap();
    assert_eq!(
        catalog.change_state("db").await.unwrap().as_deref(),
        Some(r#"{"etag":"2"}"#)
    );
    assert_eq!(catalog.last_slot("db").await.unwrap(), Some(at(3)));
}

async fn restores_from_start_to_end(catalog: Catalog) {
    let backup = backup_of(&catalog, "db", at(1), 7).await;
    let new = |trigger, requested_at| NewRestore {
        target: "db",
        backup_id: backup,
        into: Some("staging"),
        destination: "restore_command",
        trigger,
        requested_at,
        deadline_at: requested_at + TimeDelta::hours(1),
        actor: "api",
    };
    let drill = catalog
        .insert_restore(&new(RestoreTrigger::Drill, at(2)))
        .await
        .unwrap();
    catalog
        .restore_accepted(drill, at(2) + TimeDelta::seconds(1), Some("{}"))
        .await
        .unwrap();
    catalog.restore_polled(drill, r#"{"n":2}"#).await.unwrap();
    let running = catalog.running_restores().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].handle.as_deref(), Some(r#"{"n":2}"#));
    catalog
        .finish_restore(
            drill,
            &RestoreFinish {
                status: Status::Succeeded,
                accepted_at: None,
                completed_at: at(2) + TimeDelta::seconds(31),
                warnings: vec!["named values were not carried over".to_owned()],
                verified: Some("3 APIs, as backed up".to_owned()),
                error_code: None,
                error_message: None,
            },
        )
        .await
        .unwrap();
    let err = catalog
        .finish_restore(
            drill,
            &RestoreFinish {
                status: Status::Failed,
                accepted_at: None,
                completed_at: at(3),
                warnings: Vec::new(),
                verified: None,
                error_code: None,
                error_message: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::RestoreConflict(_)), "{err:?}");
    let done = catalog.restore(drill).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.duration_seconds, Some(30.0), "accepted to completed");
    assert_eq!(done.warnings.len(), 1);
    let manual = catalog
        .insert_restore(&new(RestoreTrigger::Manual, at(4)))
        .await
        .unwrap();
    assert_eq!(catalog.restores("db", None, 10).await.unwrap().len(), 2);
    let drills = catalog
        .restores("db", Some(RestoreTrigger::Drill), 10)
        .await
        .unwrap();
    assert_eq!(drills.iter().map(|r| r.id).collect::<Vec<_>>(), vec![drill]);
    assert_eq!(
        catalog
            .last_restore_succeeded("db", RestoreTrigger::Drill)
            .await
            .unwrap()
            .map(|r| r.id),
        Some(drill)
    );
    assert!(
        catalog
            .last_restore_succeeded("db", RestoreTrigger::Manual)
            .await
            .unwrap()
            .is_none()
    );
    catalog
        .restore_refused(at(5), "api", "db", Some(backup), "another restore runs")
        .await
        .unwrap();
    let audit = catalog.audit_log("db").await.unwrap();
    assert_eq!(audit[0].2, "restore_refused");
    assert_eq!(
        catalog.running_restores().await.unwrap()[0].record.id,
        manual
    );
}

async fn bulk_loading_and_counts(catalog: Catalog) {
    let record = |target: &str, status: Status, hour: u32| BackupRecord {
        id: 0,
        target: target.to_owned(),
        kind: "command".to_owned(),
        trigger: "schedule".to_owned(),
        status,
        attempt: 1,
        requested_at: at(hour),
        accepted_at: Some(at(hour)),
        completed_at: Some(at(hour) + TimeDelta::minutes(1)),
        expires_at: Some(at(hour) + TimeDelta::days(1)),
        storage: Some("local".to_owned()),
        artifact: Some(format!("{target}/{hour}.zst")),
        size_bytes: Some(1),
        sha256: None,
        sku: None,
        etag: None,
        error_code: None,
        error_message: None,
        first_change_at: None,
        pruned_at: None,
        verified_at: None,
        content: None,
        replica: Some("r1".to_owned()),
        slot: Some(at(hour)),
    };
    let records: Vec<BackupRecord> = (0..2500_u32)
        .map(|i| record(&format!("t{}", i % 50), Status::Succeeded, 1 + i % 3))
        .collect();
    assert_eq!(catalog.load_backups(&records).await.unwrap(), 2500);
    let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    catalog.set_last_slots(&names, at(4)).await.unwrap();
    assert_eq!(catalog.last_slot("t49").await.unwrap(), Some(at(4)));
    let counts = catalog.record_counts(0).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].status.as_str(), counts[0].count),
        ("succeeded", 2500)
    );
    assert_eq!(
        catalog
            .summary("t7", at(5))
            .await
            .unwrap()
            .restorable_backups,
        50
    );
    let loaded = &catalog.backups(Some("t7"), 1).await.unwrap()[0];
    assert_eq!(loaded.replica.as_deref(), Some("r1"));
}

/// Many attempts starting at once, then ending at once, go through the catalog's batches: each gets its own
/// record and a name no other backup of its target has, a closed record refuses its late end alone, and each
/// end reads its own target's restorability back, with the slot it served marked used.
async fn attempts_started_and_ended_together_keep_every_guarantee(catalog: Catalog) {
    let begin = |target: &str, i: usize| {
        let catalog = catalog.clone();
        let target = target.to_owned();
        async move {
            let artifact = if i.is_multiple_of(2) {
                ArtifactName::Known(format!("{target}/same.zst"))
            } else {
                let prefix = target.clone();
                ArtifactName::FromId(Box::new(move |id| format!("{prefix}/{id}.zst")))
            };
            let started = catalog
                .start_backup(StartBackup {
                    target: target.clone(),
                    kind: "command",
                    trigger: Trigger::Schedule,
                    attempt: 1,
                    requested_at: at(1),
                    storage: "local".to_owned(),
                    first_change_at: None,
                    slot: Some(at(1)),
                    artifact,
                })
                .await
                .unwrap();
            match started {
                Started::Recorded { id, artifact } => (target, id, artifact),
                Started::SlotTaken => panic!("a single node never loses a slot"),
            }
        }
    };
    let starts: Vec<_> = (0..60)
        .map(|i| begin(if i % 3 == 0 { "web" } else { "db" }, i))
        .collect();
    let started = futures::future::join_all(starts).await;
    let mut ids: Vec<i64> = started.iter().map(|(_, id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 60, "one record per attempt");
    for target in ["db", "web"] {
        let mut names: Vec<&str> = started
            .iter()
            .filter(|(t, ..)| t == target)
            .map(|(.., artifact)| artifact.as_str())
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "no two backups of {target} share a name"
        );
        assert!(names.contains(&format!("{target}/same.zst").as_str()));
    }
    // One record is closed by another writer before its attempt ends: that end alone is refused.
    let (_, closed, _) = started[1].clone();
    catalog
        .finish_backup(closed, &Finish::interrupted(at(2), "stopped"))
        .await
        .unwrap();
    let ends = started.iter().map(|(target, id, artifact)| {
        let catalog = catalog.clone();
        let end = EndBackup {
            id: *id,
            target: target.clone(),
            finish: succeeded(at(1), at(20), artifact),
            slot: Some(at(1)),
            operation_saved: id % 2 == 0,
        };
        async move { (end.id, catalog.end_backup(end).await) }
    });
    let ended = futures::future::join_all(ends).await;
    for (id, result) in &ended {
        if *id == closed {
            assert!(
                matches!(result, Err(CatalogError::Conflict { .. })),
                "the closed record refuses its end: {result:?}"
            );
        } else {
            let ended = result.as_ref().unwrap();
            assert!(ended.summary.restorable_backups >= 1);
            assert_eq!(ended.summary.newest_recovery_point, Some(at(1)));
            assert_eq!(ended.summary.last_success, Some(at(1)));
        }
    }
    let now = at(2);
    let db = catalog.summary("db", now).await.unwrap();
    let web = catalog.summary("web", now).await.unwrap();
    assert_eq!(db.restorable_backups + web.restorable_backups, 59);
    let durations = catalog.recent_durations("db", 100).await.unwrap();
    assert_eq!(
        durations.len(),
        39,
        "db's successes, the closed one not among them"
    );
    assert!(durations.iter().all(|d| d.as_secs() == 60));
    assert_eq!(catalog.last_slot("db").await.unwrap(), Some(at(1)));
    assert_eq!(catalog.last_slot("web").await.unwrap(), Some(at(1)));
}
