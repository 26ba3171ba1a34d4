//! What the catalog takes and gives beyond the shared record vocabulary (`crate::record`), and the decoding of
//! its rows.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, SqliteConnection};

use super::driver::CatalogRow;

use crate::record::{BackupRecord, Status, Trigger};

/// A new attempt.
#[derive(Debug, Clone)]
pub struct NewBackup<'a> {
    /// Target name.
    pub target: &'a str,
    /// Provider kind.
    pub kind: &'a str,
    /// Why it runs.
    pub trigger: Trigger,
    /// 1 for the first attempt of a trigger.
    pub attempt: u32,
    /// When rpod started it.
    pub requested_at: DateTime<Utc>,
    /// Storage name.
    pub storage: &'a str,
    /// First unbacked change, for change-triggered backups.
    pub first_change_at: Option<DateTime<Utc>>,
    /// The schedule slot it serves, when a slot started it.
    pub slot: Option<DateTime<Utc>>,
}

/// A long-running operation a provider got accepted (see [`super::Catalog::operation_accepted`]).
#[derive(Debug, Clone)]
pub struct OperationAccepted<'a> {
    /// The backup it belongs to.
    pub backup_id: i64,
    /// Target name.
    pub target: &'a str,
    /// When the service accepted it: the recovery point.
    pub accepted_at: DateTime<Utc>,
    /// What the provider needs to resume polling it (opaque to the catalog; JSON).
    pub handle: &'a str,
    /// What was asked, for operators (never secrets).
    pub request: Option<&'a str>,
    /// When to give up.
    pub deadline_at: DateTime<Utc>,
    /// The schedule slot it serves, marked used in the same transaction.
    pub slot: Option<DateTime<Utc>>,
}

/// An artifact found in storage that no record names (reconciliation), as rpod dated and checked it.
#[derive(Debug, Clone)]
pub struct Discovered<'a> {
    /// Target whose naming scheme it matches.
    pub target: &'a str,
    /// The target's kind.
    pub kind: &'a str,
    /// Storage name.
    pub storage: &'a str,
    /// Artifact name.
    pub artifact: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// The time its name encodes, else the earlier of its storage times; `None` when neither says.
    pub recovery_point: Option<DateTime<Utc>>,
    /// The recovery point plus the target's expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// `None` when its content checked out; otherwise why it does not count as restorable.
    pub unverified: Option<String>,
}

/// An artifact name the catalog knows for a target (reconciliation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownArtifact {
    /// The backup's id.
    pub id: i64,
    /// Artifact name.
    pub name: String,
    /// The backup's status.
    pub status: Status,
    /// A discovered backup an earlier rpod imported without checking it: reconciliation checks it again.
    pub imported_unchecked: bool,
}

/// An accepted operation that has not finished (found at start, to resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOperation {
    /// The backup it belongs to.
    pub backup_id: i64,
    /// Target name.
    pub target: String,
    /// Why the backup started.
    pub trigger: Trigger,
    /// Attempt number.
    pub attempt: u32,
    /// When rpod started the backup.
    pub requested_at: DateTime<Utc>,
    /// When the service accepted it.
    pub accepted_at: DateTime<Utc>,
    /// The backup's artifact name.
    pub artifact: String,
    /// What its provider saved to resume polling it (opaque to the catalog; JSON).
    pub handle: String,
    /// When to give up.
    pub deadline_at: DateTime<Utc>,
    /// The schedule slot it serves.
    pub slot: Option<DateTime<Utc>>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Final status.
    pub status: Status,
    /// Recovery point time, when the provider got that far.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: DateTime<Utc>,
    /// When it stops being restorable (successes only).
    pub expires_at: Option<DateTime<Utc>>,
    /// Artifact name in the storage.
    pub artifact: Option<String>,
    /// Artifact size as stored.
    pub size_bytes: Option<i64>,
    /// SHA-256 of the artifact as stored.
    pub sha256: Option<String>,
    /// Tier of the protected service, where it matters.
    pub sku: Option<String>,
    /// The protected resource's etag when the backup completed, where it has one.
    pub etag: Option<String>,
    /// Machine-readable error code.
    pub error_code: Option<String>,
    /// Operator-readable error message.
    pub error_message: Option<String>,
    /// What the provider read of the source's content at completion (its own JSON), where it reads any.
    pub content: Option<String>,
}

impl Finish {
    /// A backup that ended without an outcome: rpod (or its configuration) stopped following it.
    #[must_use]
    pub fn interrupted(at: DateTime<Utc>, why: &str) -> Self {
        Self {
            status: Status::Interrupted,
            accepted_at: None,
            completed_at: at,
            expires_at: None,
            artifact: None,
            size_bytes: None,
            sha256: None,
            sku: None,
            etag: None,
            error_code: Some("Interrupted".to_owned()),
            error_message: Some(why.to_owned()),
            content: None,
        }
    }
}

/// The columns [`record_from_row`] reads, in order; a macro so queries are `'static` strings.
macro_rules! backup_columns {
    () => {
        "id, target, kind, trigger, status, attempt, requested_at, accepted_at, completed_at, expires_at, \
         storage, artifact, size_bytes, sha256, sku, error_code, error_message, first_change_at, pruned_at, etag, \
         verified_at, content, replica, slot_at"
    };
}
pub(super) use backup_columns;

/// The SQL condition of a restorable row apart from its expiry: rpod's own success, or a discovered artifact it
/// verified. The first half lets the partial indexes on `status IN ('succeeded', 'discovered')` serve it.
macro_rules! restorable {
    () => {
        "status IN ('succeeded', 'discovered') AND (status = 'succeeded' OR verified_at IS NOT NULL)"
    };
}
pub(super) use restorable;

/// Decodes a row of [`backup_columns!`] as a [`BackupRecord`].
pub(super) fn record_from_row(row: &impl CatalogRow) -> BackupRecord {
    let time = |i: usize| row.opt_int(i).map(from_ms);
    BackupRecord {
        id: row.int(0),
        target: row.text(1),
        kind: row.text(2),
        trigger: row.text(3),
        status: Status::parse(&row.text(4)),
        attempt: u32::try_from(row.int(5)).unwrap_or(1),
        requested_at: from_ms(row.int(6)),
        accepted_at: time(7),
        completed_at: time(8),
        expires_at: time(9),
        storage: row.opt_text(10),
        artifact: row.opt_text(11),
        size_bytes: row.opt_int(12),
        sha256: row.opt_text(13),
        sku: row.opt_text(14),
        error_code: row.opt_text(15),
        error_message: row.opt_text(16),
        first_change_at: time(17),
        pruned_at: time(18),
        etag: row.opt_text(19),
        verified_at: time(20),
        content: row.opt_text(21),
        replica: row.opt_text(22),
        slot: time(23),
    }
}

/// A time as the catalog stores it: milliseconds since the Unix epoch.
pub(crate) fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A stored time back; a value out of range reads as the epoch.
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Writes that several catalog operations share, inside their transactions, on either database.
pub(super) trait Writes {
    /// Writes one audit row.
    async fn audit(
        &mut self,
        at: DateTime<Utc>,
        actor: &str,
        action: &str,
        target: &str,
        backup_id: Option<i64>,
        detail: &str,
    ) -> Result<(), sqlx::Error>;

    /// Records that every schedule slot of `target` at or before `slot` is used (never moving it back).
    async fn set_last_slot(
        &mut self,
        target: &str,
        slot: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error>;
}

macro_rules! writes {
    ($connection:ty) => {
        impl Writes for $connection {
            async fn audit(
                &mut self,
                at: DateTime<Utc>,
                actor: &str,
                action: &str,
                target: &str,
                backup_id: Option<i64>,
                detail: &str,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO audit (at, actor, action, target, backup_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(to_ms(at))
                .bind(actor)
                .bind(action)
                .bind(target)
                .bind(backup_id)
                .bind(detail)
                .execute(&mut *self)
                .await?;
                Ok(())
            }

            async fn set_last_slot(
                &mut self,
                target: &str,
                slot: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO target_state (target, last_slot_at, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (target) DO UPDATE
                        SET last_slot_at = CASE WHEN target_state.last_slot_at > $2 THEN target_state.last_slot_at
                                                ELSE $2 END,
                            updated_at = $3",
                )
                .bind(target)
                .bind(to_ms(slot))
                .bind(to_ms(now))
                .execute(&mut *self)
                .await?;
                Ok(())
            }
        }
    };
}
writes!(SqliteConnection);
writes!(PgConnection);
