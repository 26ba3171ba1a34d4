//! Leases, terms and the leader, for replicas that share a PostgreSQL catalog (docs/high-availability.md).
//!
//! A target is worked on by at most one replica at a time: the owner of its row in `leases`, until the row's
//! `expires_at` by the database's clock. Taking a lease raises its term. Every write about a target carries the
//! term it was made under and is refused once the row names another owner or term ([`Fence`]); the check locks
//! the row (`FOR SHARE`), so a takeover waits for a write under way and every later write of the deposed owner
//! fails. The replica itself trusts a lease for less than its length from the moment it asked
//! ([`LeaseBook::may_start`]), so it stops starting work before the lease could lapse, however late it learns.
//! The cluster's singletons are held the same way through the one row of `leader`. No session-level advisory
//! lock is used anywhere: they break behind a transaction-pooling PgBouncer.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, SqliteConnection};

use super::driver::Pool;
use super::model::from_ms;
use super::{Catalog, CatalogError};

/// Who counts as live for a reader without a lease book (a tool): seen within this long.
const VIEW_LEASE: Duration = Duration::from_secs(15);

/// A replica trusts a lease for this share of its length, counted from when it asked for it.
const TRUST: f64 = 2.0 / 3.0;

/// One lease this replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The term it was taken under.
    pub term: i64,
    /// When it lapses by the database's clock, unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Until when this replica starts work under it (its own monotonic clock).
    trusted_until: Instant,
}

/// What this replica holds, as its last lease round left it; shared by the catalog (terms for its writes) and the
/// scheduler (whether it may start work).
#[derive(Debug)]
pub struct LeaseBook {
    replica: String,
    lease: Duration,
    targets: RwLock<HashMap<String, Held>>,
    leader: RwLock<Option<Held>>,
}

/// What a write is about, for its fence.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fence<'a> {
    /// A target, by name.
    Target(&'a str),
    /// The target of a backup.
    Backup(i64),
    /// The target of a restore.
    Restore(i64),
    /// The cluster's singletons (pruning, reconciliation, expiry warnings).
    Leader,
}

/// The outcome of one lease round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseRound {
    /// Targets taken in this round, with their new terms.
    pub gained: Vec<String>,
    /// Targets this replica held before the round and no longer does.
    pub lost: Vec<String>,
    /// How many targets it holds now.
    pub held: usize,
    /// Its fair share: the configured targets over the live replicas, rounded up.
    pub share: usize,
    /// How many targets above its share plus 10 % it holds: it should give that many up.
    pub surplus: usize,
    /// Whether it holds the leader lease.
    pub leader: bool,
}

/// One replica as `GET /api/v1/replicas` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    /// Its id (`[daemon] replica_id`).
    pub replica: String,
    /// Whether it holds the leader lease.
    pub leader: bool,
    /// The targets it holds.
    pub leases: Vec<LeaseView>,
}

/// One lease as `GET /api/v1/replicas` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    /// The target.
    pub target: String,
    /// The term it was taken under.
    pub term: i64,
    /// When it lapses unless renewed (the database's clock).
    pub expires_at: DateTime<Utc>,
}

impl LeaseBook {
    /// An empty book for `replica`, whose leases last `lease`.
    #[must_use]
    pub fn new(replica: &str, lease: Duration) -> Self {
        Self {
            replica: replica.to_owned(),
            lease,
            targets: RwLock::default(),
            leader: RwLock::default(),
        }
    }

    /// This replica's id.
    #[must_use]
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a lease lasts.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often leases are renewed: three times per lease.
    #[must_use]
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// Whether this replica may start work on `target` now: it holds the lease and asked for it less than the
    /// trust window ago.
    #[must_use]
    pub fn may_start(&self, target: &str) -> bool {
        self.targets
            .read()
            .ok()
            .and_then(|held| held.get(target).copied())
            .is_some_and(|held| held.trusted_until > Instant::now())
    }

    /// Whether this replica runs the singletons now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leader
            .read()
            .ok()
            .and_then(|leader| *leader)
            .is_some_and(|held| held.trusted_until > Instant::now())
    }

    /// The term this replica holds `target` under, if it does.
    #[must_use]
    pub fn term(&self, target: &str) -> Option<i64> {
        self.targets
            .read()
            .ok()
            .and_then(|held| held.get(target).map(|held| held.term))
    }

    /// The leader term this replica holds, if it does.
    #[must_use]
    pub fn leader_term(&self) -> Option<i64> {
        self.leader
            .read()
            .ok()
            .and_then(|leader| leader.map(|held| held.term))
    }

    /// The targets this replica holds, sorted.
    #[must_use]
    pub fn held(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .targets
            .read()
            .map(|held| held.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Forgets every lease: the replica stops starting work at once (it could not renew in time, or resigns).
    pub fn forget(&self) -> Vec<String> {
        let lost = self.held();
        if let Ok(mut held) = self.targets.write() {
            held.clear();
        }
        if let Ok(mut leader) = self.leader.write() {
            *leader = None;
        }
        lost
    }

    /// Whether the trust in every lease has run out (the last round that reached the database is too old).
    #[must_use]
    pub fn lapsed(&self) -> bool {
        let now = Instant::now();
        let targets_lapsed = self
            .targets
            .read()
            .map_or(true, |held| held.values().all(|h| h.trusted_until <= now));
        targets_lapsed && !self.is_leader()
    }

    fn trusted_from(&self, asked: Instant) -> Instant {
        asked + self.lease.mul_f64(TRUST)
    }
}

/// Seconds of a duration, as PostgreSQL's `make_interval` takes them.
fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// `expires_at` as Unix milliseconds, in SQL.
const EXPIRES_MS: &str = "(extract(epoch FROM expires_at) * 1000)::bigint";

impl Catalog {
    /// The same catalog, keeping `book`'s terms on every write about a target (see [`Fence`]).
    #[must_use]
    pub fn with_leases(mut self, book: std::sync::Arc<LeaseBook>) -> Self {
        self.leases = Some(book);
        self
    }

    /// The replica's lease book, when several replicas share the catalog.
    #[must_use]
    pub fn leases(&self) -> Option<&std::sync::Arc<LeaseBook>> {
        self.leases.as_ref()
    }

    /// The same catalog with `target`'s writes made under `term` (the term its attempt started under), so a write
    /// of an attempt that outlived its lease is refused even if the replica holds the target again by now.
    #[must_use]
    pub fn pinned(&self, target: &str, term: Option<i64>) -> Self {
        let mut pinned = self.clone();
        pinned.pin = term.map(|term| (std::sync::Arc::from(target), term));
        pinned
    }

    /// Whether this process may start work on `target`: always with `SQLite` (one daemon), and with PostgreSQL
    /// while it trusts its lease on the target.
    #[must_use]
    pub fn may_start(&self, target: &str) -> bool {
        self.leases
            .as_ref()
            .is_none_or(|book| book.may_start(target))
    }

    /// Whether this process runs the singletons (pruning, reconciliation, expiry warnings): always with `SQLite`,
    /// and with PostgreSQL while it trusts its leader lease.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leases.as_ref().is_none_or(|book| book.is_leader())
    }

    /// The term `target`'s writes are made under: the pinned one, else the book's.
    pub(super) fn term_for(&self, target: &str) -> Option<i64> {
        match &self.pin {
            Some((pinned, term)) if &**pinned == target => Some(*term),
            _ => self.leases.as_ref().and_then(|book| book.term(target)),
        }
    }

    /// One lease round (PostgreSQL only): says this replica is alive, renews what it holds among `targets`, takes
    /// free or lapsed leases up to its share, and takes or keeps the leader lease. The book is updated.
    ///
    /// # Errors
    /// The catalog could not be reached; the book is left as it was (its trust runs out on its own).
    pub async fn lease_round(&self, targets: &[String]) -> Result<LeaseRound, CatalogError> {
        let (Pool::Postgres(pool), Some(book)) = (&self.pool, &self.leases) else {
            return Ok(LeaseRound::default());
        };
        let asked = Instant::now();
        let lease = seconds(book.lease);
        let me = book.replica.as_str();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO replicas (replica, started_at, seen_at) VALUES ($1, now(), now())
             ON CONFLICT (replica) DO UPDATE SET seen_at = now()",
        )
        .bind(me)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO leases (target) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
            .bind(targets)
            .execute(&mut *tx)
            .await?;
        let mut held: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $3)
             WHERE owner = $1 AND target = ANY($2) RETURNING target, term, {EXPIRES_MS}"
        )))
        .bind(me)
        .bind(targets)
        .bind(lease)
        .fetch_all(&mut *tx)
        .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM replicas WHERE seen_at > now() - make_interval(secs => $1)",
        )
        .bind(lease)
        .fetch_one(&mut *tx)
        .await?;
        let live = usize::try_from(live.max(1)).unwrap_or(1);
        let share = targets.len().div_ceil(live);
        let mut gained = Vec::new();
        if held.len() < share {
            let want = i64::try_from(share - held.len()).unwrap_or(i64::MAX);
            let taken: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE leases SET owner = $1, term = term + 1, expires_at = now() + make_interval(secs => $3)
                 WHERE target IN (SELECT target FROM leases
                                   WHERE target = ANY($2) AND (owner IS NULL OR expires_at < now())
                                   ORDER BY target FOR UPDATE SKIP LOCKED LIMIT $4)
                 RETURNING target, term, {EXPIRES_MS}"
            )))
            .bind(me)
            .bind(targets)
            .bind(lease)
            .bind(want)
            .fetch_all(&mut *tx)
            .await?;
            gained = taken.iter().map(|(target, _, _)| target.clone()).collect();
            held.extend(taken);
        }
        let leader: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE leader SET term = CASE WHEN owner = $1 THEN term ELSE term + 1 END, owner = $1,
                    expires_at = now() + make_interval(secs => $2)
             WHERE id = 1 AND (owner = $1 OR owner IS NULL OR expires_at < now())
             RETURNING term, {EXPIRES_MS}"
        )))
        .bind(me)
        .bind(lease)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;

        let trusted_until = book.trusted_from(asked);
        let now_held: HashMap<String, Held> = held
            .into_iter()
            .map(|(target, term, expires)| {
                let expires_at = from_ms(expires);
                (
                    target,
                    Held {
                        term,
                        expires_at,
                        trusted_until,
                    },
                )
            })
            .collect();
        let mut lost: Vec<String> = match book.targets.read() {
            Ok(before) => before
                .keys()
                .filter(|target| !now_held.contains_key(*target))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        lost.sort();
        let count = now_held.len();
        if let Ok(mut book_targets) = book.targets.write() {
            *book_targets = now_held;
        }
        if let Ok(mut book_leader) = book.leader.write() {
            *book_leader = leader.map(|(term, expires)| Held {
                term,
                expires_at: from_ms(expires),
                trusted_until,
            });
        }
        // More than 10 % above the share while others are live: the surplus goes back.
        let ceiling = share + share / 10;
        let surplus = if live > 1 && count > ceiling {
            count - share
        } else {
            0
        };
        gained.sort();
        Ok(LeaseRound {
            gained,
            lost,
            held: count,
            share,
            surplus,
            leader: leader.is_some(),
        })
    }

    /// Gives leases back (PostgreSQL only): another replica may take them at its next round. The caller has
    /// stopped working on them.
    ///
    /// # Errors
    /// The catalog could not be written; the leases then lapse on their own.
    pub async fn release_leases(&self, targets: &[String]) -> Result<(), CatalogError> {
        let (Pool::Postgres(pool), Some(book)) = (&self.pool, &self.leases) else {
            return Ok(());
        };
        if let Ok(mut held) = book.targets.write() {
            for target in targets {
                held.remove(target);
            }
        }
        sqlx::query(
            "UPDATE leases SET owner = NULL, expires_at = '-infinity' WHERE owner = $1 AND target = ANY($2)",
        )
        .bind(book.replica.as_str())
        .bind(targets)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Resigns (PostgreSQL only, at shutdown): every lease and the leader lease go back at once and the replica
    /// is no longer counted as live, so the others take over without waiting for the leases to lapse.
    ///
    /// # Errors
    /// The catalog could not be written; the leases then lapse on their own.
    pub async fn resign(&self) -> Result<(), CatalogError> {
        let (Pool::Postgres(pool), Some(book)) = (&self.pool, &self.leases) else {
            return Ok(());
        };
        book.forget();
        let me = book.replica.as_str();
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE leases SET owner = NULL, expires_at = '-infinity' WHERE owner = $1")
            .bind(me)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE leader SET owner = NULL, expires_at = '-infinity' WHERE owner = $1")
            .bind(me)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE replica = $1")
            .bind(me)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live replicas with what each holds until when (PostgreSQL); with `SQLite`, this process alone, the
    /// leader, with no leases (a single node leases nothing).
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn replicas(&self) -> Result<Vec<ReplicaView>, CatalogError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(vec![ReplicaView {
                replica: self.replica.to_string(),
                leader: true,
                leases: Vec::new(),
            }]);
        };
        let lease = self.leases.as_ref().map_or(VIEW_LEASE, |book| book.lease);
        let replicas: Vec<(String,)> = sqlx::query_as(
            "SELECT replica FROM replicas WHERE seen_at > now() - make_interval(secs => $1) ORDER BY replica",
        )
        .bind(seconds(lease))
        .fetch_all(pool)
        .await?;
        let leader: Option<String> =
            sqlx::query_scalar("SELECT owner FROM leader WHERE id = 1 AND expires_at > now()")
                .fetch_optional(pool)
                .await?
                .flatten();
        let leases: Vec<(String, String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT owner, target, term, {EXPIRES_MS} FROM leases
             WHERE owner IS NOT NULL AND expires_at > now() ORDER BY owner, target"
        )))
        .fetch_all(pool)
        .await?;
        let mut views: Vec<ReplicaView> = replicas
            .into_iter()
            .map(|(replica,)| ReplicaView {
                leader: leader.as_deref() == Some(replica.as_str()),
                replica,
                leases: Vec::new(),
            })
            .collect();
        for (owner, target, term, expires) in leases {
            let lease = LeaseView {
                target,
                term,
                expires_at: from_ms(expires),
            };
            match views.iter_mut().find(|view| view.replica == owner) {
                Some(view) => view.leases.push(lease),
                None => views.push(ReplicaView {
                    leader: leader.as_deref() == Some(owner.as_str()),
                    replica: owner,
                    leases: vec![lease],
                }),
            }
        }
        Ok(views)
    }
}

/// A change a replica recorded for the target's owner (see [`Catalog::record_change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedChange {
    /// The target.
    pub target: String,
    /// Which detector saw it (`event_grid`, `sync_state`).
    pub source: String,
    /// When it happened, as the signal said.
    pub changed_at: Option<DateTime<Utc>>,
}

impl Catalog {
    /// Keeps a change for whichever replica holds `target` (PostgreSQL only; a single node acts on it itself).
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn record_change(
        &self,
        change: &RecordedChange,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO change_notices (target, source, changed_at, received_at, received_by)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&change.target)
        .bind(&change.source)
        .bind(change.changed_at.map(super::model::to_ms))
        .bind(super::model::to_ms(now))
        .bind(&*self.replica)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Takes (and removes) the changes recorded for `targets`, oldest first (PostgreSQL only).
    ///
    /// # Errors
    /// The catalog could not be written; the changes stay for the next call.
    pub async fn take_changes(
        &self,
        targets: &[String],
    ) -> Result<Vec<RecordedChange>, CatalogError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows: Vec<(i64, String, String, Option<i64>)> = sqlx::query_as(
            "DELETE FROM change_notices WHERE target = ANY($1) RETURNING id, target, source, changed_at",
        )
        .bind(targets)
        .fetch_all(pool)
        .await?;
        rows.sort_by_key(|(id, ..)| *id);
        Ok(rows
            .into_iter()
            .map(|(_, target, source, changed_at)| RecordedChange {
                target,
                source,
                changed_at: changed_at.map(from_ms),
            })
            .collect())
    }
}

/// The check that a write's lease is still this replica's (`leases::fence`); nothing to check on `SQLite`.
pub(super) trait Fenced {
    /// Refuses the write, or holds the lease row until it commits.
    async fn fence(&mut self, catalog: &Catalog, what: Fence<'_>) -> Result<(), CatalogError>;

    /// The fences of a batch of writes about targets (`catalog` carrying each write's term), in one statement
    /// that locks the lease rows in the targets' order: one answer per write.
    async fn fence_each(
        &mut self,
        checks: &[(&Catalog, &str)],
    ) -> Result<Vec<Result<(), CatalogError>>, sqlx::Error>;
}

impl Fenced for SqliteConnection {
    async fn fence(&mut self, _catalog: &Catalog, _what: Fence<'_>) -> Result<(), CatalogError> {
        Ok(())
    }

    async fn fence_each(
        &mut self,
        checks: &[(&Catalog, &str)],
    ) -> Result<Vec<Result<(), CatalogError>>, sqlx::Error> {
        Ok(checks.iter().map(|_| Ok(())).collect())
    }
}

impl Fenced for PgConnection {
    async fn fence(&mut self, catalog: &Catalog, what: Fence<'_>) -> Result<(), CatalogError> {
        fence(self, catalog, what).await
    }

    async fn fence_each(
        &mut self,
        checks: &[(&Catalog, &str)],
    ) -> Result<Vec<Result<(), CatalogError>>, sqlx::Error> {
        let Some(book) = checks
            .first()
            .and_then(|(catalog, _)| catalog.leases.clone())
        else {
            return Ok(checks.iter().map(|_| Ok(())).collect());
        };
        let mut targets: Vec<&str> = checks.iter().map(|(_, target)| *target).collect();
        targets.sort_unstable();
        targets.dedup();
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT target, owner, term FROM leases WHERE target = ANY($1) ORDER BY target FOR SHARE",
        )
        .bind(&targets)
        .fetch_all(&mut *self)
        .await?;
        let found: HashMap<&str, (Option<&str>, i64)> = rows
            .iter()
            .map(|(target, owner, term)| (target.as_str(), (owner.as_deref(), *term)))
            .collect();
        let me = book.replica.as_str();
        Ok(checks
            .iter()
            .map(|(catalog, target)| {
                let expected = catalog.term_for(target);
                match (found.get(target), expected) {
                    (Some((Some(owner), term)), Some(mine)) if *owner == me && *term == mine => {
                        Ok(())
                    }
                    _ => Err(CatalogError::Fenced {
                        target: (*target).to_owned(),
                        replica: me.to_owned(),
                        term: expected,
                    }),
                }
            })
            .collect())
    }
}

/// Refuses a write whose lease (or leader lease) this replica no longer holds under the term it writes with,
/// and holds the lease row until the write commits.
pub(super) async fn fence(
    connection: &mut PgConnection,
    catalog: &Catalog,
    what: Fence<'_>,
) -> Result<(), CatalogError> {
    let Some(book) = &catalog.leases else {
        return Ok(());
    };
    let me = book.replica.as_str();
    let found: Option<(String, Option<String>, i64)> = match what {
        Fence::Target(target) => {
            sqlx::query_as("SELECT target, owner, term FROM leases WHERE target = $1 FOR SHARE")
                .bind(target)
                .fetch_optional(&mut *connection)
                .await?
        }
        Fence::Backup(id) => sqlx::query_as(
            "SELECT l.target, l.owner, l.term FROM leases l JOIN backups b ON b.target = l.target
                 WHERE b.id = $1 FOR SHARE OF l",
        )
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?,
        Fence::Restore(id) => sqlx::query_as(
            "SELECT l.target, l.owner, l.term FROM leases l JOIN restores r ON r.target = l.target
                 WHERE r.id = $1 FOR SHARE OF l",
        )
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?,
        Fence::Leader => {
            let term: Option<i64> =
                sqlx::query_scalar("SELECT term FROM leader WHERE id = 1 AND owner = $1 FOR SHARE")
                    .bind(me)
                    .fetch_optional(&mut *connection)
                    .await?;
            return match (term, book.leader_term()) {
                (Some(found), Some(mine)) if found == mine => Ok(()),
                _ => Err(CatalogError::Fenced {
                    target: "the cluster's singletons".to_owned(),
                    replica: me.to_owned(),
                    term: book.leader_term(),
                }),
            };
        }
    };
    let target = match (what, &found) {
        (_, Some((target, _, _))) => target.clone(),
        (Fence::Target(target), None) => target.to_owned(),
        (other, None) => format!("{other:?}"),
    };
    let expected = catalog.term_for(&target);
    match (found, expected) {
        (Some((_, Some(owner), term)), Some(mine)) if owner == me && term == mine => Ok(()),
        _ => Err(CatalogError::Fenced {
            target,
            replica: me.to_owned(),
            term: expected,
        }),
    }
}
