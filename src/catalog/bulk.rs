//! Many rows at once: loading backup records as they are (copying a catalog to another database, loading
//! history for benchmarks), marking many targets' slots, and counting what the catalog holds.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::driver::each;
use super::model::to_ms;
use super::{Catalog, CatalogError};
use crate::record::BackupRecord;

/// Rows per multi-row `INSERT` (`SQLite` takes at most 32,766 parameters in one statement).
const CHUNK: usize = 1000;

/// How many records have one trigger, status and attempt number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordCount {
    /// Why they ran.
    pub trigger: String,
    /// Where they stand.
    pub status: String,
    /// Their attempt number.
    pub attempt: i64,
    /// How many.
    pub count: i64,
}

/// A query builder for the pool's own database.
fn builder<DB: sqlx::Database>(_pool: &sqlx::Pool<DB>, init: &str) -> sqlx::QueryBuilder<DB> {
    sqlx::QueryBuilder::new(init)
}

impl Catalog {
    /// Loads backup records as they are (status, times, artifact, replica, slot), with new ids, in one
    /// transaction; returns how many.
    ///
    /// # Errors
    /// The catalog could not be written; nothing was.
    pub async fn load_backups(&self, records: &[BackupRecord]) -> Result<u64, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            let mut loaded = 0;
            for chunk in records.chunks(CHUNK) {
                let mut insert = builder(
                    pool,
                    "INSERT INTO backups (target, kind, trigger, status, attempt, requested_at, accepted_at, \
                     completed_at, expires_at, storage, artifact, size_bytes, sha256, sku, error_code, \
                     error_message, first_change_at, pruned_at, etag, verified_at, content, replica, slot_at) ",
                );
                insert.push_values(chunk, |mut row, record| {
                    row.push_bind(record.target.clone())
                        .push_bind(record.kind.clone())
                        .push_bind(record.trigger.clone())
                        .push_bind(record.status.as_str())
                        .push_bind(i64::from(record.attempt))
                        .push_bind(to_ms(record.requested_at))
                        .push_bind(record.accepted_at.map(to_ms))
                        .push_bind(record.completed_at.map(to_ms))
                        .push_bind(record.expires_at.map(to_ms))
                        .push_bind(record.storage.clone())
                        .push_bind(record.artifact.clone())
                        .push_bind(record.size_bytes)
                        .push_bind(record.sha256.clone())
                        .push_bind(record.sku.clone())
                        .push_bind(record.error_code.clone())
                        .push_bind(record.error_message.clone())
                        .push_bind(record.first_change_at.map(to_ms))
                        .push_bind(record.pruned_at.map(to_ms))
                        .push_bind(record.etag.clone())
                        .push_bind(record.verified_at.map(to_ms))
                        .push_bind(record.content.clone())
                        .push_bind(record.replica.clone())
                        .push_bind(record.slot.map(to_ms));
                });
                loaded += insert.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(loaded)
        })
    }

    /// Records, in one transaction, that every schedule slot at or before `at` is used for each of `targets`.
    ///
    /// # Errors
    /// The catalog could not be written; nothing was.
    pub async fn set_last_slots(
        &self,
        targets: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in targets.chunks(CHUNK) {
                let mut upsert = builder(
                    pool,
                    "INSERT INTO target_state (target, last_slot_at, updated_at) ",
                );
                upsert.push_values(chunk, |mut row, target| {
                    row.push_bind(target.clone())
                        .push_bind(to_ms(at))
                        .push_bind(to_ms(at));
                });
                upsert.push(
                    " ON CONFLICT (target) DO UPDATE SET last_slot_at = excluded.last_slot_at, \
                     updated_at = excluded.updated_at",
                );
                upsert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// How many records with an id above `after` have each trigger, status and attempt number, most first.
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn record_counts(&self, after: i64) -> Result<Vec<RecordCount>, CatalogError> {
        each!(&self.pool, |pool| {
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                "SELECT trigger, status, attempt, COUNT(*) FROM backups WHERE id > $1
                 GROUP BY trigger, status, attempt ORDER BY 4 DESC, 1, 2, 3",
            )
            .bind(after)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(trigger, status, attempt, count)| RecordCount {
                    trigger,
                    status,
                    attempt,
                    count,
                })
                .collect())
        })
    }
}
