//! Restores in the catalog (docs/restore.md): a row per restore, from `running` to its end, with the operation it
//! follows while it runs; refusals leave an audit row and no restore.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::model::{audit, from_ms, to_ms};
use crate::record::{RestoreRecord, RestoreTrigger, Status};

/// A restore about to start.
#[derive(Debug, Clone)]
pub struct NewRestore<'a> {
    /// Target whose backup it restores.
    pub target: &'a str,
    /// The backup.
    pub backup_id: i64,
    /// The `restore_into` name; `None`: the target's own system.
    pub into: Option<&'a str>,
    /// What is restored into, for operators.
    pub destination: &'a str,
    /// Why it runs.
    pub trigger: RestoreTrigger,
    /// Now.
    pub requested_at: DateTime<Utc>,
    /// When rpod stops following it.
    pub deadline_at: DateTime<Utc>,
    /// Who asked (audit).
    pub actor: &'a str,
}

/// How a restore ended.
#[derive(Debug, Clone)]
pub struct RestoreFinish {
    /// `succeeded`, `failed`, `timed_out` or `interrupted`.
    pub status: Status,
    /// When the system accepted it, when it got that far.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: DateTime<Utc>,
    /// What it did not carry over.
    pub warnings: Vec<String>,
    /// What verification found.
    pub verified: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
}

/// A restore that was running when rpod stopped, with what its provider needs to follow it again.
#[derive(Debug, Clone)]
pub struct RunningRestore {
    /// The record.
    pub record: RestoreRecord,
    /// The saved operation (the provider's own JSON); `None` when it was never accepted.
    pub handle: Option<String>,
    /// When rpod stops following it.
    pub deadline_at: DateTime<Utc>,
}

/// The columns [`record_from_row`] reads, in order; a macro so queries are `'static` strings.
macro_rules! columns {
    () => {
        "id, target, backup_id, into_name, destination, trigger, status, requested_at, accepted_at, completed_at, \
         duration_ms, warnings, verified, error_code, error_message, handle, deadline_at"
    };
}

fn record_from_row(row: &SqliteRow) -> RestoreRecord {
    let time = |i: usize| row.get::<Option<i64>, _>(i).map(from_ms);
    RestoreRecord {
        id: row.get(0),
        target: row.get(1),
        backup_id: row.get(2),
        into: row.get(3),
        destination: row.get(4),
        trigger: RestoreTrigger::parse(row.get::<&str, _>(5)),
        status: Status::parse(row.get::<&str, _>(6)),
        requested_at: from_ms(row.get(7)),
        accepted_at: time(8),
        completed_at: time(9),
        #[allow(clippy::cast_precision_loss)]
        duration_seconds: row.get::<Option<i64>, _>(10).map(|ms| ms as f64 / 1000.0),
        warnings: row
            .get::<Option<String>, _>(11)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
        verified: row.get(12),
        error_code: row.get(13),
        error_message: row.get(14),
    }
}

pub(super) async fn insert(pool: &SqlitePool, new: &NewRestore<'_>) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id = sqlx::query(
        "INSERT INTO restores (target, backup_id, into_name, destination, trigger, status, requested_at, deadline_at)
         VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
    )
    .bind(new.target)
    .bind(new.backup_id)
    .bind(new.into)
    .bind(new.destination)
    .bind(new.trigger.as_str())
    .bind(to_ms(new.requested_at))
    .bind(to_ms(new.deadline_at))
    .execute(&mut *tx)
    .await?
    .last_insert_rowid();
    let detail = format!(
        "restore {id} ({}) into {}",
        new.trigger.as_str(),
        new.destination
    );
    audit(
        &mut tx,
        new.requested_at,
        new.actor,
        "restore",
        new.target,
        Some(new.backup_id),
        &detail,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn refused(
    pool: &SqlitePool,
    at: DateTime<Utc>,
    actor: &str,
    target: &str,
    backup_id: Option<i64>,
    why: &str,
) -> Result<(), sqlx::Error> {
    let mut connection = pool.acquire().await?;
    audit(
        &mut connection,
        at,
        actor,
        "restore_refused",
        target,
        backup_id,
        why,
    )
    .await
}

/// Returns whether the row was still running.
pub(super) async fn accepted(
    pool: &SqlitePool,
    id: i64,
    accepted_at: DateTime<Utc>,
    handle: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE restores SET accepted_at = ?, handle = ? WHERE id = ? AND status = 'running'",
    )
    .bind(to_ms(accepted_at))
    .bind(handle)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

pub(super) async fn polled(pool: &SqlitePool, id: i64, handle: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE restores SET handle = ? WHERE id = ? AND status = 'running'")
        .bind(handle)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Returns whether the row was still running (nothing is written otherwise).
pub(super) async fn finish(
    pool: &SqlitePool,
    id: i64,
    finish: &RestoreFinish,
) -> Result<bool, sqlx::Error> {
    let duration_ms = match (finish.status, finish.accepted_at) {
        (Status::Succeeded, Some(accepted)) => {
            Some((finish.completed_at - accepted).num_milliseconds().max(0))
        }
        _ => None,
    };
    let warnings = if finish.warnings.is_empty() {
        None
    } else {
        serde_json::to_string(&finish.warnings).ok()
    };
    let updated = sqlx::query(
        "UPDATE restores SET status = ?1, accepted_at = COALESCE(?2, accepted_at), completed_at = ?3,
                duration_ms = ?4, warnings = ?5, verified = ?6, error_code = ?7, error_message = ?8, handle = NULL
         WHERE id = ?9 AND status = 'running'",
    )
    .bind(finish.status.as_str())
    .bind(finish.accepted_at.map(to_ms))
    .bind(to_ms(finish.completed_at))
    .bind(duration_ms)
    .bind(warnings)
    .bind(finish.verified.as_deref())
    .bind(finish.error_code.as_deref())
    .bind(finish.error_message.as_deref())
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

pub(super) async fn one(pool: &SqlitePool, id: i64) -> Result<Option<RestoreRecord>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM restores WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(record_from_row))
}

pub(super) async fn of_target(
    pool: &SqlitePool,
    target: &str,
    trigger: Option<RestoreTrigger>,
    limit: u32,
) -> Result<Vec<RestoreRecord>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM restores WHERE target = ?1 AND (?2 IS NULL OR trigger = ?2) ORDER BY id DESC LIMIT ?3"
    ))
    .bind(target)
    .bind(trigger.map(RestoreTrigger::as_str))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(record_from_row).collect())
}

pub(super) async fn running(pool: &SqlitePool) -> Result<Vec<RunningRestore>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM restores WHERE status = 'running' ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| RunningRestore {
            record: record_from_row(row),
            handle: row.get(15),
            deadline_at: from_ms(row.get(16)),
        })
        .collect())
}

/// The newest successful restore of `trigger` for a target, if any.
pub(super) async fn last_succeeded(
    pool: &SqlitePool,
    target: &str,
    trigger: RestoreTrigger,
) -> Result<Option<RestoreRecord>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM restores WHERE target = ? AND trigger = ? AND status = 'succeeded' ORDER BY id DESC LIMIT 1"
    ))
    .bind(target)
    .bind(trigger.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(record_from_row))
}
