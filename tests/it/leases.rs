//! Leases, terms and fencing on a real PostgreSQL catalog, through the catalog's interface, with two replicas
//! in one process (their books are what the daemon's lease keeper keeps; docs/high-availability.md).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rpod::catalog::{Catalog, CatalogError, Finish, LeaseBook, NewBackup, PostgresCatalog};
use rpod::record::{Status, Trigger};

use crate::postgres::Postgres;

async fn replica(url: &str, name: &str, lease: Duration) -> Catalog {
    Catalog::open_postgres(&PostgresCatalog {
        url: url.to_owned(),
        password: None,
        ca_file: None,
    })
    .await
    .unwrap()
    .with_replica(name)
    .with_leases(Arc::new(LeaseBook::new(name, lease)))
}

async fn running(catalog: &Catalog, target: &str) -> Result<i64, CatalogError> {
    catalog
        .insert_backup(&NewBackup {
            target,
            kind: "command",
            trigger: Trigger::Schedule,
            attempt: 1,
            requested_at: Utc::now(),
            storage: "local",
            first_change_at: None,
            slot: None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_spread_and_a_deposed_replica_can_no_longer_write() {
    let postgres = Postgres::start();
    let url = postgres.database("leases").await;
    let lease = Duration::from_millis(600);
    let a = replica(&url, "a", lease).await;
    let b = replica(&url, "b", lease).await;
    let targets: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();

    // Alone, a replica takes every target and the leader lease.
    let round = a.lease_round(&targets).await.unwrap();
    assert_eq!((round.held, round.share, round.leader), (10, 10, true));
    assert!(a.may_start("t9") && a.is_leader());
    let id = running(&a, "t9").await.unwrap();
    // A second replica finds nothing free, and the first gives up what exceeds its share.
    let round = b.lease_round(&targets).await.unwrap();
    assert_eq!((round.held, round.share, round.leader), (0, 5, false));
    assert!(!b.may_start("t0") && !b.is_leader());
    assert!(
        matches!(running(&b, "t0").await, Err(CatalogError::Fenced { .. })),
        "no write about a target without its lease"
    );
    let round = a.lease_round(&targets).await.unwrap();
    assert_eq!(round.surplus, 5);
    let give_up: Vec<String> = targets[..5].to_vec();
    a.release_leases(&give_up).await.unwrap();
    assert!(!a.may_start("t0"));
    let round = b.lease_round(&targets).await.unwrap();
    assert_eq!(round.gained, give_up);
    assert!(b.may_start("t0"));

    // The first replica stops renewing (frozen): after its lease lapses by the database's clock, the second takes
    // the rest over under new terms, and the leader lease with them.
    let views = b.replicas().await.unwrap();
    let held_by_a = views.iter().find(|v| v.replica == "a").unwrap();
    let old_term = held_by_a
        .leases
        .iter()
        .find(|l| l.target == "t9")
        .unwrap()
        .term;
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(!a.may_start("t9"), "trust runs out before the lease does");
    let round = b.lease_round(&targets).await.unwrap();
    assert_eq!(round.held, 10);
    assert!(round.leader);
    let views = b.replicas().await.unwrap();
    assert_eq!(
        views.len(),
        1,
        "the frozen replica no longer counts as live: {views:?}"
    );
    let t9 = views[0].leases.iter().find(|l| l.target == "t9").unwrap();
    assert!(t9.term > old_term, "a takeover raises the term");

    // The deposed replica's late writes are refused and the record stays as the new owner leaves it.
    let late = a
        .finish_backup(id, &Finish::interrupted(Utc::now(), "late"))
        .await
        .unwrap_err();
    assert!(matches!(late, CatalogError::Fenced { .. }), "{late:?}");
    assert_eq!(a.backup(id).await.unwrap().unwrap().status, Status::Running);
    assert_eq!(
        b.interrupt_running(Utc::now(), Some("t9")).await.unwrap(),
        vec!["t9".to_owned()]
    );
    let record = b.backup(id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Interrupted);
    assert!(matches!(
        a.mark_expiry_warned(id, Utc::now()).await,
        Err(CatalogError::Fenced { .. })
    ));
    // When it wakes, its round says what it lost.
    let round = a.lease_round(&targets).await.unwrap();
    assert!(round.lost.contains(&"t9".to_owned()) && !round.leader);

    // A schedule slot is claimed once across replicas: by its owner (again by its retries), never by the deposed.
    let slot = Utc::now();
    assert!(b.claim_slot("t9", slot).await.unwrap());
    assert!(
        b.claim_slot("t9", slot).await.unwrap(),
        "a retry of the same term"
    );
    assert!(
        !b.claim_slot("t9", slot - chrono::TimeDelta::seconds(2))
            .await
            .unwrap(),
        "an earlier slot is never run after a later one"
    );
    assert!(matches!(
        a.claim_slot("t9", slot).await,
        Err(CatalogError::Fenced { .. })
    ));

    // Resigning hands everything over at once; a slot claimed but never used may be claimed by the next owner,
    // one that was used may not.
    b.set_last_slot("t8", slot).await.unwrap();
    assert!(b.claim_slot("t8", slot).await.unwrap());
    b.resign().await.unwrap();
    let round = a.lease_round(&targets).await.unwrap();
    assert_eq!((round.held, round.leader), (10, true));
    assert!(
        a.claim_slot("t9", slot).await.unwrap(),
        "claimed, never used"
    );
    assert!(!a.claim_slot("t8", slot).await.unwrap(), "used");
}
