//! Group commit of the attempts' bookkeeping (docs/architecture.md, "Batched bookkeeping").
//!
//! Every backup attempt writes to the catalog twice: when it starts (claim the schedule slot among replicas,
//! record the attempt, name its artifact) and when it ends (close the record, mark the slot used, read the
//! target's restorability back). One task writes them: whatever arrived while it wrote the last batch goes into
//! the next, in one transaction on one connection, so ten thousand attempts due at once cost a few hundred
//! commits rather than forty thousand, and no attempt waits on another's lock. At low load a batch is one
//! attempt, as before. Each attempt gets its answer only after its batch committed: nothing is reported before
//! it is durable.
//!
//! A write one attempt may be refused (its lease moved to another replica, its record closed by another writer)
//! is refused for that attempt alone; a database error fails the batch, which is then written again one attempt
//! per transaction, so a bad attempt never takes its neighbours down with it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::driver::{Dialect, Pool, each};
use super::leases::Fenced as _;
use super::model::{Finish, NewBackup, Writes as _, from_ms, restorable, to_ms};
use super::{Catalog, CatalogError};
use crate::record::{Status, TargetSummary, Trigger};

/// The most attempts one transaction carries.
const MAX_BATCH: usize = 512;

/// How many recent durations an ended attempt reads back (the watchdog's lead is their 90th percentile).
pub const RECENT_DURATIONS: u32 = 20;

/// An attempt about to start, as [`Catalog::start_backup`] records it.
pub struct StartBackup {
    /// Target name.
    pub target: String,
    /// Provider kind.
    pub kind: &'static str,
    /// Why it runs.
    pub trigger: Trigger,
    /// 1 for the first attempt of a trigger.
    pub attempt: u32,
    /// When rpod started it.
    pub requested_at: DateTime<Utc>,
    /// Storage name.
    pub storage: String,
    /// First unbacked change, for change-triggered backups.
    pub first_change_at: Option<DateTime<Utc>>,
    /// The schedule slot it serves, when a slot started it.
    pub slot: Option<DateTime<Utc>>,
    /// The artifact's name (see [`Catalog::claim_artifact`] for a name already taken).
    pub artifact: ArtifactName,
}

/// How an attempt's artifact is named.
pub enum ArtifactName {
    /// Known before the attempt is recorded: recorded with it, in the same statement.
    Known(String),
    /// Made from the backup's id, once it is recorded.
    FromId(Box<dyn Fn(i64) -> String + Send + Sync>),
}

impl std::fmt::Debug for StartBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartBackup")
            .field("target", &self.target)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// What [`Catalog::start_backup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The attempt is recorded as `running`, with this id and artifact name.
    Recorded {
        /// The backup's id.
        id: i64,
        /// The artifact's name, unique among the target's backups.
        artifact: String,
    },
    /// Another replica claimed the schedule slot first: nothing was recorded.
    SlotTaken,
}

/// How an attempt ended, as [`Catalog::end_backup`] records it.
#[derive(Debug, Clone)]
pub struct EndBackup {
    /// The backup.
    pub id: i64,
    /// Its target.
    pub target: String,
    /// How it ended.
    pub finish: Finish,
    /// The schedule slot it served: marked used if it succeeded.
    pub slot: Option<DateTime<Utc>>,
    /// Whether the attempt saved a long-running operation, which its end releases.
    pub operation_saved: bool,
}

/// The target as the ended attempt left it.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Its restorability at the attempt's end.
    pub summary: TargetSummary,
    /// Durations of its most recent successful backups, newest first.
    pub durations: Vec<Duration>,
}

/// One attempt's bookkeeping, with the catalog handle (replica, pinned term) it is written under.
enum Work {
    Start(Catalog, StartBackup, oneshot::Sender<Result<Started, CatalogError>>),
    End(Catalog, EndBackup, oneshot::Sender<Result<Ended, CatalogError>>),
}

enum Answer {
    Start(Result<Started, CatalogError>),
    End(Result<Ended, CatalogError>),
}

impl Work {
    fn catalog(&self) -> &Catalog {
        match self {
            Self::Start(catalog, ..) | Self::End(catalog, ..) => catalog,
        }
    }

    fn target(&self) -> &str {
        match self {
            Self::Start(_, start, _) => &start.target,
            Self::End(_, end, _) => &end.target,
        }
    }

    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Self::Start(.., reply), Answer::Start(answer)) => {
                let _ = reply.send(answer);
            }
            (Self::End(.., reply), Answer::End(answer)) => {
                let _ = reply.send(answer);
            }
            (work, Answer::Start(Err(err)) | Answer::End(Err(err))) => work.fail(err),
            (work, _) => work.fail(CatalogError::Database(sqlx::Error::Protocol(
                "a batch answered out of order".to_owned(),
            ))),
        }
    }

    fn fail(self, err: CatalogError) {
        match self {
            Self::Start(.., reply) => {
                let _ = reply.send(Err(err));
            }
            Self::End(.., reply) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    fn refused(&self, err: CatalogError) -> Answer {
        match self {
            Self::Start(..) => Answer::Start(Err(err)),
            Self::End(..) => Answer::End(Err(err)),
        }
    }
}

/// The sending side of the catalog's bookkeeping task, started at its first use.
#[derive(Debug, Default)]
pub(super) struct Batches(std::sync::OnceLock<mpsc::UnboundedSender<Work>>);

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Work")
    }
}

impl Catalog {
    /// Records an attempt about to start, in a batch with the attempts starting at the same moment: claims its
    /// schedule slot among replicas, records it as `running` and names its artifact, in one transaction.
    ///
    /// # Errors
    /// The catalog could not be written, or this replica no longer holds the target (nothing was recorded).
    pub async fn start_backup(&self, start: StartBackup) -> Result<Started, CatalogError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Start(self.clone(), start, reply));
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Records how an attempt ended, in a batch with the attempts ending at the same moment: closes its record
    /// (releasing its operation), marks its schedule slot used if it succeeded, and reads the target's
    /// restorability back, in one transaction.
    ///
    /// # Errors
    /// The catalog could not be written, another writer closed the record, or this replica no longer holds the
    /// target (nothing was recorded).
    pub async fn end_backup(&self, end: EndBackup) -> Result<Ended, CatalogError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::End(self.clone(), end, reply));
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    fn send(&self, work: Work) {
        let sender = self.batches.0.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(serve(self.pool.clone(), receiver));
            sender
        });
        if let Err(mpsc::error::SendError(work)) = sender.send(work) {
            work.fail(stopped());
        }
    }
}

fn stopped() -> CatalogError {
    CatalogError::Database(sqlx::Error::PoolClosed)
}

/// Writes batches until every handle to the catalog is gone.
async fn serve(pool: Pool, mut receiver: mpsc::UnboundedReceiver<Work>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let works = std::mem::take(&mut batch);
        match apply(&pool, &works).await {
            Ok(answers) => {
                for (work, answer) in works.into_iter().zip(answers) {
                    work.answer(answer);
                }
            }
            Err(err) if works.len() == 1 => {
                if let Some(work) = works.into_iter().next() {
                    work.fail(CatalogError::Database(err));
                }
            }
            Err(_) => {
                // Written again one by one, so the attempt the database refused fails alone.
                for work in works {
                    match apply(&pool, std::slice::from_ref(&work)).await {
                        Ok(mut answers) if answers.len() == 1 => {
                            let answer = answers.remove(0);
                            work.answer(answer);
                        }
                        Ok(_) => work.fail(stopped()),
                        Err(err) => work.fail(CatalogError::Database(err)),
                    }
                }
            }
        }
    }
}

/// One transaction for `works`: the fences of all (replicas), then each attempt's writes in order.
async fn apply(pool: &Pool, works: &[Work]) -> Result<Vec<Answer>, sqlx::Error> {
    each!(pool, |pool| {
        let mut tx = pool.begin().await?;
        let checks: Vec<(&Catalog, &str)> = works.iter().map(|w| (w.catalog(), w.target())).collect();
        let fences = tx.fence_each(&checks).await?;
        let mut answers = Vec::with_capacity(works.len());
        for (work, fence) in works.iter().zip(fences) {
            let answer = match fence {
                Err(refused) => work.refused(refused),
                Ok(()) => match work {
                    Work::Start(catalog, start, _) => Answer::Start(tx.start(catalog, start).await?),
                    Work::End(_, end, _) => Answer::End(tx.end(end).await?),
                },
            };
            answers.push(answer);
        }
        tx.commit().await?;
        Ok(answers)
    })
}

/// One attempt's writes and reads inside a transaction, on either database (see [`Bookkeeping`]'s uses in the
/// catalog for the single-attempt forms).
pub(super) trait Bookkeeping {
    /// Records a new attempt in status `running`; returns its id.
    async fn insert_running(&mut self, new: &NewBackup<'_>, replica: &str) -> Result<i64, sqlx::Error>;

    /// Records a new attempt in status `running` with its artifact's name, unless another backup of the target
    /// has that name already; returns its id and whether the name was recorded.
    async fn insert_named(
        &mut self,
        new: &NewBackup<'_>,
        replica: &str,
        artifact: &str,
    ) -> Result<(i64, bool), sqlx::Error>;

    /// Names the artifact of running backup `id`, adding the id before the extension when another backup of the
    /// target has the name already. Returns the name used.
    async fn name_artifact(&mut self, id: i64, target: &str, name: &str) -> Result<String, sqlx::Error>;

    /// Closes running backup `id`, releasing its operation if `operation` says it saved one; false when it was not
    /// running any more.
    async fn close_running(&mut self, id: i64, finish: &Finish, operation: bool) -> Result<bool, sqlx::Error>;

    /// Claims schedule slot `slot` of `target` under `term` (docs/high-availability.md, "Ticks").
    async fn claim_slot_under(
        &mut self,
        target: &str,
        slot: DateTime<Utc>,
        term: i64,
    ) -> Result<bool, sqlx::Error>;

    /// Restorable backups, the newest recovery point and the last success of one target.
    async fn summary_of(&mut self, target: &str, now: DateTime<Utc>) -> Result<TargetSummary, sqlx::Error>;

    /// Durations of the target's `limit` most recent successful backups, newest first.
    async fn durations_of(&mut self, target: &str, limit: u32) -> Result<Vec<Duration>, sqlx::Error>;

    /// [`Self::summary_of`] and [`Self::durations_of`] (the latest [`RECENT_DURATIONS`]) in one statement.
    async fn summary_and_durations(
        &mut self,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<(TargetSummary, Vec<Duration>), sqlx::Error>;

    /// An attempt's start; `Err` inside when the attempt alone is refused.
    async fn start(
        &mut self,
        catalog: &Catalog,
        start: &StartBackup,
    ) -> Result<Result<Started, CatalogError>, sqlx::Error> {
        if let Some(slot) = start.slot
            && catalog.is_shared()
            && !self
                .claim_slot_under(&start.target, slot, catalog.term_for(&start.target).unwrap_or(0))
                .await?
        {
            return Ok(Ok(Started::SlotTaken));
        }
        let new = NewBackup {
            target: &start.target,
            kind: start.kind,
            trigger: start.trigger,
            attempt: start.attempt,
            requested_at: start.requested_at,
            storage: &start.storage,
            first_change_at: start.first_change_at,
            slot: start.slot,
        };
        let (id, artifact) = match &start.artifact {
            ArtifactName::Known(name) => {
                let (id, named) = self.insert_named(&new, catalog.replica(), name).await?;
                let artifact = if named {
                    name.clone()
                } else {
                    self.name_artifact(id, &start.target, name).await?
                };
                (id, artifact)
            }
            ArtifactName::FromId(render) => {
                let id = self.insert_running(&new, catalog.replica()).await?;
                (id, self.name_artifact(id, &start.target, &render(id)).await?)
            }
        };
        Ok(Ok(Started::Recorded { id, artifact }))
    }

    /// An attempt's end; `Err` inside when the attempt alone is refused.
    async fn end(&mut self, end: &EndBackup) -> Result<Result<Ended, CatalogError>, sqlx::Error> {
        if !self
            .close_running(end.id, &end.finish, end.operation_saved)
            .await?
        {
            // Another writer closed this record (it can only be `running` while this attempt owns it).
            return Ok(Err(CatalogError::Conflict {
                id: end.id,
                expected: "running",
            }));
        }
        if end.finish.status == Status::Succeeded
            && let Some(slot) = end.slot
        {
            self.mark_slot(&end.target, slot).await?;
        }
        let (summary, durations) = self
            .summary_and_durations(&end.target, end.finish.completed_at)
            .await?;
        Ok(Ok(Ended { summary, durations }))
    }

    /// Marks every slot of `target` up to `slot` used.
    async fn mark_slot(&mut self, target: &str, slot: DateTime<Utc>) -> Result<(), sqlx::Error>;
}

macro_rules! bookkeeping {
    ($connection:ty, $dialect:expr) => {
        impl Bookkeeping for $connection {
            async fn insert_running(&mut self, new: &NewBackup<'_>, replica: &str) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar(
                    "INSERT INTO backups (target, kind, trigger, status, attempt, requested_at, storage,
                                          first_change_at, replica, slot_at)
                     VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9)
                     RETURNING id",
                )
                .bind(new.target)
                .bind(new.kind)
                .bind(new.trigger.as_str())
                .bind(i64::from(new.attempt))
                .bind(to_ms(new.requested_at))
                .bind(new.storage)
                .bind(new.first_change_at.map(to_ms))
                .bind(replica)
                .bind(new.slot.map(to_ms))
                .fetch_one(&mut *self)
                .await
            }

            async fn insert_named(
                &mut self,
                new: &NewBackup<'_>,
                replica: &str,
                artifact: &str,
            ) -> Result<(i64, bool), sqlx::Error> {
                let (id, named): (i64, Option<String>) = sqlx::query_as(
                    "INSERT INTO backups (target, kind, trigger, status, attempt, requested_at, storage,
                                          first_change_at, replica, slot_at, artifact)
                     VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9,
                             CASE WHEN EXISTS (SELECT 1 FROM backups WHERE target = $1 AND artifact = $10)
                                  THEN NULL ELSE $10 END)
                     RETURNING id, artifact",
                )
                .bind(new.target)
                .bind(new.kind)
                .bind(new.trigger.as_str())
                .bind(i64::from(new.attempt))
                .bind(to_ms(new.requested_at))
                .bind(new.storage)
                .bind(new.first_change_at.map(to_ms))
                .bind(replica)
                .bind(new.slot.map(to_ms))
                .bind(artifact)
                .fetch_one(&mut *self)
                .await?;
                Ok((id, named.is_some()))
            }

            async fn name_artifact(&mut self, id: i64, target: &str, name: &str) -> Result<String, sqlx::Error> {
                let claimed = sqlx::query(
                    "UPDATE backups SET artifact = $1 WHERE id = $2 AND NOT EXISTS
                     (SELECT 1 FROM backups WHERE target = $3 AND artifact = $1 AND id != $2)",
                )
                .bind(name)
                .bind(id)
                .bind(target)
                .execute(&mut *self)
                .await?
                .rows_affected();
                if claimed == 1 {
                    return Ok(name.to_owned());
                }
                let (stem, extension) = match name.rfind('.') {
                    Some(dot) if dot > name.rfind('/').map_or(0, |slash| slash + 1) => name.split_at(dot),
                    _ => (name, ""),
                };
                let unique = format!("{stem}-{id}{extension}");
                sqlx::query("UPDATE backups SET artifact = $1 WHERE id = $2")
                    .bind(&unique)
                    .bind(id)
                    .execute(&mut *self)
                    .await?;
                Ok(unique)
            }

            async fn close_running(&mut self, id: i64, finish: &Finish, operation: bool) -> Result<bool, sqlx::Error> {
                let updated = sqlx::query(
                    // A backup that never got accepted leaves no artifact: its claimed name is released. One that
                    // was accepted keeps the name, so reconciliation never imports what its operation left behind.
                    "UPDATE backups SET status = $1, accepted_at = COALESCE($2, accepted_at), completed_at = $3,
                            expires_at = $4,
                            artifact = CASE WHEN $5 IS NOT NULL THEN $5
                                            WHEN COALESCE($2, accepted_at) IS NOT NULL THEN artifact END,
                            size_bytes = $6, sha256 = $7, sku = $8, etag = $9, error_code = $10,
                            error_message = $11, content = $13
                     WHERE id = $12 AND status = 'running'",
                )
                .bind(finish.status.as_str())
                .bind(finish.accepted_at.map(to_ms))
                .bind(to_ms(finish.completed_at))
                .bind(finish.expires_at.map(to_ms))
                .bind(finish.artifact.as_deref())
                .bind(finish.size_bytes)
                .bind(finish.sha256.as_deref())
                .bind(finish.sku.as_deref())
                .bind(finish.etag.as_deref())
                .bind(finish.error_code.as_deref())
                .bind(finish.error_message.as_deref())
                .bind(id)
                .bind(finish.content.as_deref())
                .execute(&mut *self)
                .await?
                .rows_affected();
                if updated != 1 {
                    return Ok(false);
                }
                if !operation {
                    return Ok(true);
                }
                sqlx::query("DELETE FROM operations WHERE backup_id = $1")
                    .bind(id)
                    .execute(&mut *self)
                    .await?;
                Ok(true)
            }

            async fn claim_slot_under(
                &mut self,
                target: &str,
                slot: DateTime<Utc>,
                term: i64,
            ) -> Result<bool, sqlx::Error> {
                // A slot claimed under an older term whose claimer never used it (the replica died), or under this
                // very term (a retry of the attempt that claimed it), may be claimed again; an older slot never.
                let claimed = sqlx::query(
                    "INSERT INTO target_state (target, claimed_slot_at, claimed_term, updated_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (target) DO UPDATE SET claimed_slot_at = $2, claimed_term = $3, updated_at = $4
                     WHERE COALESCE(target_state.claimed_slot_at, 0) < $2
                        OR (target_state.claimed_slot_at = $2 AND target_state.claimed_term <= $3
                            AND COALESCE(target_state.last_slot_at, 0) < $2)",
                )
                .bind(target)
                .bind(to_ms(slot))
                .bind(term)
                .bind(to_ms(Utc::now()))
                .execute(&mut *self)
                .await?
                .rows_affected();
                Ok(claimed == 1)
            }

            async fn summary_of(&mut self, target: &str, now: DateTime<Utc>) -> Result<TargetSummary, sqlx::Error> {
                // One round trip: five index lookups as scalar subqueries. Newest-first walks along (target, id)
                // stop at the first matching row instead of reading the target's whole history.
                let (newest, count, until, last_success, last_attempt): (
                    Option<i64>,
                    i64,
                    Option<i64>,
                    Option<i64>,
                    Option<i64>,
                ) = sqlx::query_as($dialect.sql(concat!(
                    "SELECT
                       (SELECT accepted_at FROM backups INDEXED BY backups_restorable_by_point
                         WHERE target = $1 AND ", restorable!(), " AND expires_at > $2
                         ORDER BY accepted_at DESC LIMIT 1),
                       (SELECT COUNT(*) FROM backups INDEXED BY backups_restorable_by_expiry
                         WHERE target = $1 AND ", restorable!(), " AND expires_at > $2),
                       (SELECT MAX(expires_at) FROM backups INDEXED BY backups_restorable_by_expiry
                         WHERE target = $1 AND ", restorable!(), " AND expires_at > $2),
                       (SELECT accepted_at FROM backups INDEXED BY backups_by_target
                         WHERE target = $1 AND status IN ('succeeded', 'pruned', 'missing') ORDER BY id DESC LIMIT 1),
                       (SELECT requested_at FROM backups INDEXED BY backups_by_target
                         WHERE target = $1 AND trigger != 'discovered' ORDER BY id DESC LIMIT 1)")))
                .bind(target)
                .bind(to_ms(now))
                .fetch_one(&mut *self)
                .await?;
                Ok(TargetSummary {
                    newest_recovery_point: newest.map(from_ms),
                    restorable_backups: u64::try_from(count).unwrap_or(0),
                    restorable_until: until.map(from_ms),
                    last_success: last_success.map(from_ms),
                    last_attempt: last_attempt.map(from_ms),
                })
            }

            async fn durations_of(&mut self, target: &str, limit: u32) -> Result<Vec<Duration>, sqlx::Error> {
                let rows: Vec<(i64, i64)> = sqlx::query_as($dialect.sql(
                    "SELECT requested_at, completed_at FROM backups INDEXED BY backups_by_target
                     WHERE target = $1 AND status IN ('succeeded', 'pruned', 'missing') AND completed_at IS NOT NULL
                     ORDER BY id DESC LIMIT $2",
                ))
                .bind(target)
                .bind(i64::from(limit))
                .fetch_all(&mut *self)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(start, end)| Duration::from_millis(u64::try_from(end - start).unwrap_or(0)))
                    .collect())
            }

            async fn summary_and_durations(
                &mut self,
                target: &str,
                now: DateTime<Utc>,
            ) -> Result<(TargetSummary, Vec<Duration>), sqlx::Error> {
                // The summary's row first (kind 0), then one row per recent duration (kind 1), newest first.
                let rows: Vec<(i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>)> =
                    sqlx::query_as($dialect.sql(concat!(
                    "SELECT CAST(0 AS BIGINT), (SELECT accepted_at FROM backups INDEXED BY backups_restorable_by_point
                         WHERE target = $1 AND ", restorable!(), " AND expires_at > $2
                         ORDER BY accepted_at DESC LIMIT 1),
                       (SELECT COUNT(*) FROM backups INDEXED BY backups_restorable_by_expiry
                         WHERE target = $1 AND ", restorable!(), " AND expires_at > $2),
                       (SELECT MAX(expires_at) FROM backups INDEXED BY backups_restorable_by_expiry
                         WHERE target = $1 AND ", restorable!(), " AND expires_at > $2),
                       (SELECT accepted_at FROM backups INDEXED BY backups_by_target
                         WHERE target = $1 AND status IN ('succeeded', 'pruned', 'missing') ORDER BY id DESC LIMIT 1),
                       (SELECT requested_at FROM backups INDEXED BY backups_by_target
                         WHERE target = $1 AND trigger != 'discovered' ORDER BY id DESC LIMIT 1)
                     UNION ALL
                     SELECT CAST(1 AS BIGINT), completed_at - requested_at, NULL, NULL, NULL, NULL FROM
                       (SELECT requested_at, completed_at FROM backups INDEXED BY backups_by_target
                         WHERE target = $1 AND status IN ('succeeded', 'pruned', 'missing') AND completed_at IS NOT NULL
                         ORDER BY id DESC LIMIT $3) recent")))
                    .bind(target)
                    .bind(to_ms(now))
                    .bind(i64::from(RECENT_DURATIONS))
                    .fetch_all(&mut *self)
                    .await?;
                let mut summary = TargetSummary::default();
                let mut durations = Vec::new();
                for (kind, a, b, c, d, e) in rows {
                    if kind == 0 {
                        summary = TargetSummary {
                            newest_recovery_point: a.map(from_ms),
                            restorable_backups: b.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                            restorable_until: c.map(from_ms),
                            last_success: d.map(from_ms),
                            last_attempt: e.map(from_ms),
                        };
                    } else {
                        durations.push(Duration::from_millis(
                            a.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0),
                        ));
                    }
                }
                Ok((summary, durations))
            }

            async fn mark_slot(&mut self, target: &str, slot: DateTime<Utc>) -> Result<(), sqlx::Error> {
                self.set_last_slot(target, slot, slot).await
            }
        }
    };
}
bookkeeping!(SqliteConnection, Dialect::Sqlite);
bookkeeping!(PgConnection, Dialect::Postgres);
