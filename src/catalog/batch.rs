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

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use sqlx::{PgConnection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::driver::{Dialect, Pool, each};
use super::leases::Fenced as _;
use super::model::{Finish, NewBackup, from_ms, restorable, to_ms};
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
}

/// One attempt's bookkeeping, with the catalog handle (replica, pinned term) it is written under.
enum Work {
    Start(
        Catalog,
        StartBackup,
        oneshot::Sender<Result<Started, CatalogError>>,
    ),
    End(
        Catalog,
        EndBackup,
        oneshot::Sender<Result<Ended, CatalogError>>,
    ),
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

/// One transaction for `works`: the fences of all (replicas), then the starts, then the ends, each kind in a few
/// statements for all of its attempts (`Bookkeeping::start_all`, `Bookkeeping::end_all`). A target has at most
/// one attempt under way, so it appears at most once in each kind; were it to appear twice, the second waits for
/// the next round of the same transaction.
async fn apply(pool: &Pool, works: &[Work]) -> Result<Vec<Answer>, sqlx::Error> {
    each!(pool, |pool| {
        let mut tx = pool.begin().await?;
        let checks: Vec<(&Catalog, &str)> =
            works.iter().map(|w| (w.catalog(), w.target())).collect();
        let fences = tx.fence_each(&checks).await?;
        let mut answers: Vec<Option<Answer>> = works.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = Vec::with_capacity(works.len());
        for (index, (work, fence)) in works.iter().zip(fences).enumerate() {
            match fence {
                Err(refused) => answers[index] = Some(work.refused(refused)),
                Ok(()) => pending.push(index),
            }
        }
        while !pending.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) = pending.iter().partition(|&&index| {
                seen.insert((
                    matches!(works[index], Work::Start(..)),
                    works[index].target(),
                ))
            });
            let starts: Vec<(usize, &Catalog, &StartBackup)> = round
                .iter()
                .filter_map(|&index| match &works[index] {
                    Work::Start(catalog, start, _) => Some((index, catalog, start)),
                    Work::End(..) => None,
                })
                .collect();
            let ends: Vec<(usize, &EndBackup)> = round
                .iter()
                .filter_map(|&index| match &works[index] {
                    Work::End(_, end, _) => Some((index, end)),
                    Work::Start(..) => None,
                })
                .collect();
            for chunk in starts.chunks(CHUNK) {
                for (index, answer) in tx.start_all(chunk).await? {
                    answers[index] = Some(Answer::Start(answer));
                }
            }
            for chunk in ends.chunks(CHUNK) {
                for (index, answer) in tx.end_all(chunk).await? {
                    answers[index] = Some(Answer::End(answer));
                }
            }
            pending = later;
        }
        tx.commit().await?;
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Answer::Start(Err(stopped()))))
            .collect())
    })
}

/// The most attempts one statement carries (`SQLite` takes up to 32,766 parameters; an end binds 13 per attempt).
const CHUNK: usize = 256;

/// `rows` rows of `width` parameters each, comma-separated, for a `VALUES` list whose parameters come first in
/// their statement: `($1, $2), ($3, $4)` on PostgreSQL; on `SQLite` plain `(?, ?), (?, ?)`, which it numbers in
/// order without the name lookup that makes thousands of `$N` cost their square to prepare and bind.
fn values(rows: usize, width: usize, dialect: Dialect) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            match dialect {
                Dialect::Sqlite => sql.push('?'),
                Dialect::Postgres => {
                    let _ = write!(sql, "${}", row * width + column + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Parameter number `n` after a `VALUES` list of [`values`] (`?n` on `SQLite`, `$n` on PostgreSQL).
fn param(n: usize, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("${n}"),
    }
}

/// One attempt's writes and reads inside a transaction, on either database (see [`Bookkeeping`]'s uses in the
/// catalog for the single-attempt forms).
pub(super) trait Bookkeeping {
    /// Records a new attempt in status `running`; returns its id.
    async fn insert_running(
        &mut self,
        new: &NewBackup<'_>,
        replica: &str,
    ) -> Result<i64, sqlx::Error>;

    /// Names the artifact of running backup `id`, adding the id before the extension when another backup of the
    /// target has the name already. Returns the name used.
    async fn name_artifact(
        &mut self,
        id: i64,
        target: &str,
        name: &str,
    ) -> Result<String, sqlx::Error>;

    /// Closes the running backups `closes` (id, how it ended) and releases the operations of `released`, in
    /// two statements; returns the ids that were still running and are closed now.
    async fn close_all(
        &mut self,
        closes: &[(i64, &Finish)],
        released: &[i64],
    ) -> Result<std::collections::HashSet<i64>, sqlx::Error>;

    /// Claims schedule slot `slot` of `target` under `term` (docs/high-availability.md, "Ticks").
    async fn claim_slot_under(
        &mut self,
        target: &str,
        slot: DateTime<Utc>,
        term: i64,
    ) -> Result<bool, sqlx::Error>;

    /// Durations of the target's `limit` most recent successful backups, newest first.
    async fn durations_of(
        &mut self,
        target: &str,
        limit: u32,
    ) -> Result<Vec<Duration>, sqlx::Error>;

    /// [`Self::summary_of`] of up to 500 targets in one statement; a target without any backup is absent.
    async fn summaries_of(
        &mut self,
        targets: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, TargetSummary)>, sqlx::Error>;

    /// The starts of a batch (no target twice): slots claimed among replicas one by one, then every attempt
    /// recorded in one statement and every artifact named in another; a name another backup of the target has
    /// already is made unique one by one. `Err` inside when the attempt alone is refused.
    async fn start_all(
        &mut self,
        starts: &[(usize, &Catalog, &StartBackup)],
    ) -> Result<Vec<(usize, Result<Started, CatalogError>)>, sqlx::Error>;

    /// The ends of a batch (no target twice): every record closed in one statement, the saved operations released
    /// in one, the schedule slots marked used in one, and the targets' restorability read back in one.
    async fn end_all(
        &mut self,
        ends: &[(usize, &EndBackup)],
    ) -> Result<Vec<(usize, Result<Ended, CatalogError>)>, sqlx::Error>;
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

            async fn summaries_of(
                &mut self,
                targets: &[&str],
                now: DateTime<Utc>,
            ) -> Result<Vec<(String, TargetSummary)>, sqlx::Error> {
                if targets.is_empty() {
                    return Ok(Vec::new());
                }
                let mut sql = format!("WITH wanted (target) AS (VALUES {}) ", values(targets.len(), 1, $dialect));
                sql.push_str(&$dialect.sql(concat!(
                    "SELECT w.target,
                       (SELECT accepted_at FROM backups INDEXED BY backups_restorable_by_point
                         WHERE target = w.target AND ", restorable!(), " AND expires_at > $NOW
                         ORDER BY accepted_at DESC LIMIT 1),
                       (SELECT COUNT(*) FROM backups INDEXED BY backups_restorable_by_expiry
                         WHERE target = w.target AND ", restorable!(), " AND expires_at > $NOW),
                       (SELECT MAX(expires_at) FROM backups INDEXED BY backups_restorable_by_expiry
                         WHERE target = w.target AND ", restorable!(), " AND expires_at > $NOW),
                       (SELECT accepted_at FROM backups INDEXED BY backups_by_target
                         WHERE target = w.target AND status IN ('succeeded', 'pruned', 'missing')
                         ORDER BY id DESC LIMIT 1),
                       (SELECT requested_at FROM backups INDEXED BY backups_by_target
                         WHERE target = w.target AND trigger != 'discovered' ORDER BY id DESC LIMIT 1)
                     FROM wanted w"
                )).replace("$NOW", &param(targets.len() + 1, $dialect)));
                let mut query = sqlx::query_as::<
                    _,
                    (String, Option<i64>, i64, Option<i64>, Option<i64>, Option<i64>),
                >(sqlx::AssertSqlSafe(sql))
                .persistent(targets.len() == 1);
                for target in targets {
                    query = query.bind(*target);
                }
                let query = query.bind(to_ms(now));
                Ok(query
                    .fetch_all(&mut *self)
                    .await?
                    .into_iter()
                    .map(|(target, newest, count, until, last_success, last_attempt)| {
                        (
                            target,
                            TargetSummary {
                                newest_recovery_point: newest.map(from_ms),
                                restorable_backups: u64::try_from(count).unwrap_or(0),
                                restorable_until: until.map(from_ms),
                                last_success: last_success.map(from_ms),
                                last_attempt: last_attempt.map(from_ms),
                            },
                        )
                    })
                    .collect())
            }

            async fn start_all(
                &mut self,
                starts: &[(usize, &Catalog, &StartBackup)],
            ) -> Result<Vec<(usize, Result<Started, CatalogError>)>, sqlx::Error> {
                let mut answers = Vec::with_capacity(starts.len());
                let mut recording = Vec::with_capacity(starts.len());
                for &(index, catalog, start) in starts {
                    if let Some(slot) = start.slot
                        && catalog.is_shared()
                        && !self
                            .claim_slot_under(&start.target, slot, catalog.term_for(&start.target).unwrap_or(0))
                            .await?
                    {
                        answers.push((index, Ok(Started::SlotTaken)));
                    } else {
                        recording.push((index, catalog, start));
                    }
                }
                if recording.is_empty() {
                    return Ok(answers);
                }
                let sql = format!(
                    "INSERT INTO backups (target, kind, trigger, status, attempt, requested_at, storage,
                                          first_change_at, replica, slot_at)
                     SELECT column1, column2, column3, 'running', column4, column5, column6, column7, column8, column9
                     FROM (VALUES {}) AS v
                     RETURNING id, target",
                    values(recording.len(), 9, $dialect)
                );
                let mut insert = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (_, catalog, start) in &recording {
                    insert = insert
                        .bind(start.target.as_str())
                        .bind(start.kind)
                        .bind(start.trigger.as_str())
                        .bind(i64::from(start.attempt))
                        .bind(to_ms(start.requested_at))
                        .bind(start.storage.as_str())
                        .bind(start.first_change_at.map(to_ms))
                        .bind(catalog.replica())
                        .bind(start.slot.map(to_ms));
                }
                let ids: HashMap<String, i64> = insert.fetch_all(&mut *self).await?.into_iter().map(|(id, target)| (target, id)).collect();
                let mut named = Vec::with_capacity(recording.len());
                for (index, _, start) in &recording {
                    let Some(&id) = ids.get(&start.target) else {
                        return Err(sqlx::Error::Protocol(format!("no record came back for {}", start.target)));
                    };
                    let name = match &start.artifact {
                        ArtifactName::Known(name) => name.clone(),
                        ArtifactName::FromId(render) => render(id),
                    };
                    named.push((*index, start, id, name));
                }
                let sql = format!(
                    "UPDATE backups SET artifact = v.column2 FROM (VALUES {}) AS v
                     WHERE backups.id = v.column1 AND NOT EXISTS
                       (SELECT 1 FROM backups other WHERE other.target = backups.target AND other.artifact = v.column2
                          AND other.id != backups.id)
                     RETURNING backups.id",
                    values(named.len(), 2, $dialect)
                );
                let mut update = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).persistent(false);
                for (_, _, id, name) in &named {
                    update = update.bind(*id).bind(name.as_str());
                }
                let claimed: std::collections::HashSet<i64> = update.fetch_all(&mut *self).await?.into_iter().collect();
                for (index, start, id, name) in named {
                    let artifact = if claimed.contains(&id) {
                        name
                    } else {
                        // Another backup of the target has the name: this one's is made unique with its id.
                        self.name_artifact(id, &start.target, &name).await?
                    };
                    answers.push((index, Ok(Started::Recorded { id, artifact })));
                }
                Ok(answers)
            }

            async fn close_all(
                &mut self,
                closes: &[(i64, &Finish)],
                released: &[i64],
            ) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
                if closes.is_empty() {
                    return Ok(std::collections::HashSet::new());
                }
                // A backup that never got accepted leaves no artifact: its claimed name is released. One that was
                // accepted keeps the name, so reconciliation never imports what its operation left behind.
                let sql = format!(
                    "UPDATE backups SET status = v.column2, accepted_at = COALESCE(v.column3, backups.accepted_at),
                            completed_at = v.column4, expires_at = v.column5,
                            artifact = CASE WHEN v.column6 IS NOT NULL THEN v.column6
                                            WHEN COALESCE(v.column3, backups.accepted_at) IS NOT NULL
                                            THEN backups.artifact END,
                            size_bytes = v.column7, sha256 = v.column8, sku = v.column9, etag = v.column10,
                            error_code = v.column11, error_message = v.column12, content = v.column13
                     FROM (VALUES {}) AS v
                     WHERE backups.id = v.column1 AND backups.status = 'running'
                     RETURNING backups.id",
                    values(closes.len(), 13, $dialect)
                );
                let mut close = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).persistent(closes.len() == 1);
                for (id, finish) in closes {
                    close = close
                        .bind(*id)
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
                        .bind(finish.content.as_deref());
                }
                let closed: std::collections::HashSet<i64> = close.fetch_all(&mut *self).await?.into_iter().collect();
                let released: Vec<i64> = released.iter().copied().filter(|id| closed.contains(id)).collect();
                if !released.is_empty() {
                    let sql = format!(
                        "DELETE FROM operations WHERE backup_id IN (SELECT column1 FROM (VALUES {}) AS v)",
                        values(released.len(), 1, $dialect)
                    );
                    let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(released.len() == 1);
                    for id in &released {
                        delete = delete.bind(*id);
                    }
                    delete.execute(&mut *self).await?;
                }
                Ok(closed)
            }

            async fn end_all(
                &mut self,
                ends: &[(usize, &EndBackup)],
            ) -> Result<Vec<(usize, Result<Ended, CatalogError>)>, sqlx::Error> {
                if ends.is_empty() {
                    return Ok(Vec::new());
                }
                let closes: Vec<(i64, &Finish)> = ends.iter().map(|(_, end)| (end.id, &end.finish)).collect();
                let saved: Vec<i64> = ends
                    .iter()
                    .filter(|(_, end)| end.operation_saved)
                    .map(|(_, end)| end.id)
                    .collect();
                let closed = self.close_all(&closes, &saved).await?;
                let used: Vec<(&str, i64)> = ends
                    .iter()
                    .filter(|(_, end)| end.finish.status == Status::Succeeded && closed.contains(&end.id))
                    .filter_map(|(_, end)| end.slot.map(|slot| (end.target.as_str(), to_ms(slot))))
                    .collect();
                if !used.is_empty() {
                    let sql = format!(
                        "INSERT INTO target_state (target, last_slot_at, updated_at)
                         SELECT column1, column2, column2 FROM (VALUES {}) AS v WHERE true
                         ON CONFLICT (target) DO UPDATE
                            SET last_slot_at = CASE WHEN target_state.last_slot_at > excluded.last_slot_at
                                                    THEN target_state.last_slot_at ELSE excluded.last_slot_at END,
                                updated_at = excluded.updated_at",
                        values(used.len(), 2, $dialect)
                    );
                    let mut upsert = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
                    for (target, slot) in &used {
                        upsert = upsert.bind(*target).bind(*slot);
                    }
                    upsert.execute(&mut *self).await?;
                }
                let targets: Vec<&str> = ends
                    .iter()
                    .filter(|(_, end)| closed.contains(&end.id))
                    .map(|(_, end)| end.target.as_str())
                    .collect();
                // The ends of one batch share the newest completion time as "now": what expires in between the
                // attempts' own ends is not restorable at the batch's end either.
                let now = ends.iter().map(|(_, end)| end.finish.completed_at).max().unwrap_or_else(Utc::now);
                let mut summaries: HashMap<String, TargetSummary> = self.summaries_of(&targets, now).await?.into_iter().collect();
                Ok(ends
                    .iter()
                    .map(|(index, end)| {
                        let answer = if closed.contains(&end.id) {
                            Ok(Ended {
                                summary: summaries.remove(&end.target).unwrap_or_default(),
                            })
                        } else {
                            // Another writer closed this record (it can only be `running` while this attempt owns it).
                            Err(CatalogError::Conflict {
                                id: end.id,
                                expected: "running",
                            })
                        };
                        (*index, answer)
                    })
                    .collect())
            }
        }
    };
}
bookkeeping!(SqliteConnection, Dialect::Sqlite);
bookkeeping!(PgConnection, Dialect::Postgres);
