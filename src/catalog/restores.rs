//! Restores in the catalog (docs/restore.md): a row per restore, from `running` to its end, with the operation it
//! follows while it runs; refusals leave an audit row and no restore.

use chrono::{DateTime, Utc};

use super::driver::{CatalogRow, each};
use super::leases::{Fence, Fenced as _};
use super::model::{Writes as _, from_ms, to_ms};
use super::{Catalog, CatalogError};
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

fn record_from_row(row: &impl CatalogRow) -> RestoreRecord {
    let time = |i: usize| row.opt_int(i).map(from_ms);
    RestoreRecord {
        id: row.int(0),
        target: row.text(1),
        backup_id: row.int(2),
        into: row.opt_text(3),
        destination: row.text(4),
        trigger: RestoreTrigger::parse(&row.text(5)),
        status: Status::parse(&row.text(6)),
        requested_at: from_ms(row.int(7)),
        accepted_at: time(8),
        completed_at: time(9),
        #[allow(clippy::cast_precision_loss)]
        duration_seconds: row.opt_int(10).map(|ms| ms as f64 / 1000.0),
        warnings: row
            .opt_text(11)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
        verified: row.opt_text(12),
        error_code: row.opt_text(13),
        error_message: row.opt_text(14),
    }
}

impl Catalog {
    /// Records a restore about to start (status `running`, with an audit row); returns its id.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn insert_restore(&self, new: &NewRestore<'_>) -> Result<i64, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Target(new.target)).await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO restores (target, backup_id, into_name, destination, trigger, status, requested_at,
                                       deadline_at)
                 VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)
                 RETURNING id",
            )
            .bind(new.target)
            .bind(new.backup_id)
            .bind(new.into)
            .bind(new.destination)
            .bind(new.trigger.as_str())
            .bind(to_ms(new.requested_at))
            .bind(to_ms(new.deadline_at))
            .fetch_one(&mut *tx)
            .await?;
            let detail = format!(
                "restore {id} ({}) into {}",
                new.trigger.as_str(),
                new.destination
            );
            tx.audit(
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
        })
    }

    /// Records a refused restore in the audit trail (no restore record).
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn restore_refused(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        target: &str,
        backup_id: Option<i64>,
        why: &str,
    ) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut connection = pool.acquire().await?;
            connection
                .audit(at, actor, "restore_refused", target, backup_id, why)
                .await?;
            Ok(())
        })
    }

    /// Records that the system accepted a restore, with the operation to follow (before its first poll).
    ///
    /// # Errors
    /// The catalog could not be written, or the restore is no longer running.
    pub async fn restore_accepted(
        &self,
        id: i64,
        accepted_at: DateTime<Utc>,
        handle: Option<&str>,
    ) -> Result<(), CatalogError> {
        let updated = each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Restore(id)).await?;
            let updated = sqlx::query(
                "UPDATE restores SET accepted_at = $1, handle = $2 WHERE id = $3 AND status = 'running'",
            )
            .bind(to_ms(accepted_at))
            .bind(handle)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            updated
        });
        if updated == 1 {
            Ok(())
        } else {
            Err(CatalogError::RestoreConflict(id))
        }
    }

    /// Moves a restore's operation on.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn restore_polled(&self, id: i64, handle: &str) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Restore(id)).await?;
            sqlx::query("UPDATE restores SET handle = $1 WHERE id = $2 AND status = 'running'")
                .bind(handle)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records how a restore ended; its duration is accepted (as `finish` says, else as recorded) to completed
    /// when it succeeded.
    ///
    /// # Errors
    /// The catalog could not be written, or the restore is no longer running.
    pub async fn finish_restore(
        &self,
        id: i64,
        finish: &RestoreFinish,
    ) -> Result<(), CatalogError> {
        let warnings = if finish.warnings.is_empty() {
            None
        } else {
            serde_json::to_string(&finish.warnings).ok()
        };
        let updated = each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Restore(id)).await?;
            let updated = sqlx::query(
                // The measured restore time runs from acceptance (as given now, else as recorded) to the end.
                "UPDATE restores SET status = $1, accepted_at = COALESCE($2, accepted_at), completed_at = $3,
                        duration_ms = CASE WHEN $1 = 'succeeded' AND COALESCE($2, accepted_at) IS NOT NULL
                                           THEN CASE WHEN $3 > COALESCE($2, accepted_at)
                                                     THEN $3 - COALESCE($2, accepted_at) ELSE 0 END END,
                        warnings = $4, verified = $5, error_code = $6, error_message = $7, handle = NULL
                 WHERE id = $8 AND status = 'running'",
            )
            .bind(finish.status.as_str())
            .bind(finish.accepted_at.map(to_ms))
            .bind(to_ms(finish.completed_at))
            .bind(warnings.as_deref())
            .bind(finish.verified.as_deref())
            .bind(finish.error_code.as_deref())
            .bind(finish.error_message.as_deref())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            updated
        });
        if updated == 1 {
            Ok(())
        } else {
            Err(CatalogError::RestoreConflict(id))
        }
    }

    /// One restore.
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn restore(&self, id: i64) -> Result<Option<RestoreRecord>, CatalogError> {
        each!(&self.pool, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM restores WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(record_from_row))
        })
    }

    /// A target's restores, newest first, of one trigger or all.
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn restores(
        &self,
        target: &str,
        trigger: Option<RestoreTrigger>,
        limit: u32,
    ) -> Result<Vec<RestoreRecord>, CatalogError> {
        each!(&self.pool, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM restores WHERE target = $1 AND ($2 IS NULL OR trigger = $2) ORDER BY id DESC LIMIT $3"
            ))
            .bind(target)
            .bind(trigger.map(RestoreTrigger::as_str))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(record_from_row).collect())
        })
    }

    /// Every restore still `running`, oldest first (at start: to follow again, or to close).
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn running_restores(&self) -> Result<Vec<RunningRestore>, CatalogError> {
        each!(&self.pool, |pool| {
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
                    handle: row.opt_text(15),
                    deadline_at: from_ms(row.int(16)),
                })
                .collect())
        })
    }

    /// The newest successful restore of `trigger` for a target.
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn last_restore_succeeded(
        &self,
        target: &str,
        trigger: RestoreTrigger,
    ) -> Result<Option<RestoreRecord>, CatalogError> {
        each!(&self.pool, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM restores WHERE target = $1 AND trigger = $2 AND status = 'succeeded' ORDER BY id DESC LIMIT 1"
            ))
            .bind(target)
            .bind(trigger.as_str())
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(record_from_row))
        })
    }
}
