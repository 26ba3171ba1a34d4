//! The catalog: every backup, its recovery point and expiry, per-target scheduler state, long-running
//! operations and an audit trail, via sqlx: in one `SQLite` file (`<state_dir>/rpod.db`) for a single node, or in
//! a PostgreSQL database that several replicas share (`driver`, docs/high-availability.md).
//!
//! What does not live here: deciding what is restorable or prunable (`policy`), or when to run (`scheduler`).

mod batch;
mod bulk;
mod driver;
mod leases;
mod model;
mod postgres;
mod restores;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use driver::{Pool, SQLITE_MIGRATOR, each};

pub use batch::{ArtifactName, EndBackup, Ended, RECENT_DURATIONS, StartBackup, Started};
pub use bulk::RecordCount;
pub use leases::{Held, LeaseBook, LeaseRound, LeaseView, RecordedChange, ReplicaView};
pub use model::{
    Discovered, Finish, KnownArtifact, NewBackup, OperationAccepted, PendingOperation,
};
pub use postgres::server_name;
pub use restores::{NewRestore, RestoreFinish, RunningRestore};

use crate::record::{BackupRecord, Restorability, Status, TargetSummary, Trigger};
use batch::Bookkeeping as _;
use leases::{Fence, Fenced as _};
use model::{Writes as _, backup_columns, from_ms, record_from_row, restorable, to_ms};

/// File name of the catalog inside the state directory.
pub const CATALOG_FILE: &str = "rpod.db";

/// Why the catalog could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The state directory exists but is not writable.
    #[error("state directory {path} is not writable ({detail}): rpod keeps its catalog there")]
    StateDirReadOnly {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        detail: String,
    },
    /// The file is not a `SQLite` database, or is damaged.
    #[error(
        "catalog {path} is corrupt ({detail}): restore it from its backup, or move it aside and restart with an \
         empty catalog (backup history is lost; the artifacts stay in storage)"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What `SQLite` said.
        detail: String,
    },
    /// The catalog was written by a newer rpod.
    #[error(
        "catalog {path} was written by a newer rpod (schema version {found}, this rpod knows up to {known}): \
         upgrade rpod or restore the catalog's backup"
    )]
    TooNew {
        /// The database file, or the PostgreSQL server and database.
        path: String,
        /// Newest schema version found in the file.
        found: i64,
        /// Newest schema version this build knows.
        known: i64,
    },
    /// A read-only open found a catalog an older rpod wrote, which only the daemon upgrades.
    #[error(
        "catalog {path} has schema version {found}, this rpod expects {known}: start the daemon (rpod run) once \
         to upgrade it"
    )]
    TooOld {
        /// The database file.
        path: String,
        /// Newest schema version found in the file.
        found: i64,
        /// Newest schema version this build knows.
        known: i64,
    },
    /// A record was not in the state the update expected (another writer changed it): nothing was written.
    #[error("backup {id} is no longer {expected} in the catalog; nothing was recorded")]
    Conflict {
        /// The backup.
        id: i64,
        /// The status the update expected.
        expected: &'static str,
    },
    /// A restore was no longer running (another writer closed it): nothing was written.
    #[error("restore {0} is no longer running in the catalog; nothing was recorded")]
    RestoreConflict(i64),
    /// The PostgreSQL catalog cannot be reached or refused the login.
    #[error("catalog {server} cannot be used: {detail}")]
    Unreachable {
        /// The server and database (never the password).
        server: String,
        /// What went wrong, and what to do.
        detail: String,
    },
    /// This replica no longer holds the lease it wrote under (another replica took the target over): nothing
    /// was written (docs/high-availability.md, "Terms").
    #[error(
        "replica {replica} no longer holds target {target}{}; nothing was recorded",
        term.map(|term| format!(" (it wrote under term {term})")).unwrap_or_default()
    )]
    Fenced {
        /// The target.
        target: String,
        /// This replica.
        replica: String,
        /// The term it wrote under; `None` when it holds no term for the target any more.
        term: Option<i64>,
    },
    /// The state directory cannot be used.
    #[error(transparent)]
    StateDir(#[from] crate::state_dir::StateDirError),
    /// Any other database failure.
    #[error("catalog error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A handle to the catalog; cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: Pool,
    /// The replica this process is, as its backup records name it.
    replica: Arc<str>,
    /// What this replica holds, when several share the catalog.
    leases: Option<Arc<LeaseBook>>,
    /// A target whose writes are made under a given term (see [`Catalog::pinned`]).
    pin: Option<(Arc<str>, i64)>,
    /// The task that writes the attempts' bookkeeping in batches (`batch`), shared by every clone.
    batches: Arc<batch::Batches>,
}

/// Where a PostgreSQL catalog is and how to reach it (`[catalog]`). Its `Debug` never shows the password.
#[derive(Clone)]
pub struct PostgresCatalog {
    /// `postgres://user@host:port/database?...`, without a password.
    pub url: String,
    /// The password, read from `password_file` or `password_env`.
    pub password: Option<String>,
    /// A CA certificate (PEM) to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCatalog")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Waits for, and holds until dropped, the exclusive lock on `<catalog>-open.lock` beside the catalog file, so
/// that one opener at a time sets the catalog up and migrates it. A lock of its own: the daemon's `rpod.lock` is
/// held for its whole life and would keep every other opener out.
async fn opening_turn(catalog: &Path) -> Result<std::fs::File, CatalogError> {
    let mut name = catalog.as_os_str().to_owned();
    name.push("-open.lock");
    let lock_path = PathBuf::from(name);
    let unusable = |err: std::io::Error| CatalogError::StateDirReadOnly {
        path: catalog.parent().unwrap_or(catalog).into(),
        detail: err.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(unusable)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|err| unusable(std::io::Error::other(err)))?
        .map_err(unusable)
}

/// The name a replica gives itself when `[daemon] replica_id` is not set: its host name and process id.
#[must_use]
pub fn default_replica_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "rpod".to_owned());
    format!("{host}-{}", std::process::id())
}

impl Catalog {
    /// Opens (creating if needed) the `SQLite` catalog in `state_dir` and applies pending migrations. A missing
    /// `state_dir` whose parent exists is created (see [`crate::state_dir::prepare`]). Only one process should
    /// write: the daemon holds [`crate::state_dir::StateLock`] while it does.
    ///
    /// # Errors
    /// A [`CatalogError`] that says what is wrong and what to do.
    pub async fn open(state_dir: &Path) -> Result<Self, CatalogError> {
        crate::state_dir::prepare(state_dir)?;
        let probe = state_dir.join(".rpod-write-probe");
        std::fs::write(&probe, b"").map_err(|err| CatalogError::StateDirReadOnly {
            path: state_dir.into(),
            detail: err.to_string(),
        })?;
        let _ = std::fs::remove_file(&probe);
        let path = state_dir.join(CATALOG_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let corrupt = |err: sqlx::Error| classify(err, &path);
        // Two openers at once (the daemon starting while `rpod check-config` runs) would both create the file
        // and switch it to WAL, or both see a migration pending and the second would run it again on the
        // migrated schema; they take turns instead.
        let _turn = opening_turn(&path).await?;
        // A local file has no connection to lose: no ping before each use.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(corrupt)?;
        migrate_sqlite(&pool, &path).await?;
        Ok(Self::with_pool(Pool::Sqlite(pool)))
    }

    /// Connects to a PostgreSQL catalog that several replicas share, creating its tables or applying pending
    /// migrations (one replica at a time; docs/high-availability.md).
    ///
    /// # Errors
    /// The URL is not a PostgreSQL URL, the server cannot be reached or refuses the login, or its catalog was
    /// written by a newer rpod.
    pub async fn open_postgres(config: &PostgresCatalog) -> Result<Self, CatalogError> {
        let pool = postgres::connect(config).await?;
        postgres::migrate(&pool, &config.url).await?;
        Ok(Self::with_pool(Pool::Postgres(pool)))
    }

    /// Connects to a PostgreSQL catalog for reading, as `rpod status` does while replicas write it: nothing is
    /// created or migrated.
    ///
    /// # Errors
    /// The server cannot be reached, or the catalog's schema is not the one this rpod knows (a replica migrates
    /// it when it starts).
    pub async fn open_postgres_read_only(config: &PostgresCatalog) -> Result<Self, CatalogError> {
        let pool = postgres::connect(config).await?;
        postgres::check_version(&pool, &config.url).await?;
        Ok(Self::with_pool(Pool::Postgres(pool)))
    }

    fn with_pool(pool: Pool) -> Self {
        Self {
            pool,
            replica: default_replica_id().into(),
            leases: None,
            pin: None,
            batches: Arc::default(),
        }
    }

    /// The same catalog, with backup records naming `replica` as the one that ran them.
    #[must_use]
    pub fn with_replica(mut self, replica: &str) -> Self {
        self.replica = replica.into();
        self
    }

    /// The replica this process is.
    #[must_use]
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether several replicas share this catalog (PostgreSQL), so targets are leased (docs/high-availability.md).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Opens the catalog in `state_dir` for reading only, as `rpod status` and `rpod backups` do while the daemon
    /// writes it. Nothing is created or migrated: without a catalog file yet, an empty catalog in memory answers.
    ///
    /// # Errors
    /// The file is not a catalog, was written by another version of rpod, or cannot be read.
    pub async fn open_read_only(state_dir: &Path) -> Result<Self, CatalogError> {
        let path = state_dir.join(CATALOG_FILE);
        if !path.exists() {
            // One connection that never closes: every in-memory connection is a database of its own.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(SqliteConnectOptions::from_str("sqlite::memory:")?)
                .await?;
            SQLITE_MIGRATOR
                .run(&pool)
                .await
                .map_err(|err| CatalogError::Database(err.into()))?;
            return Ok(Self::with_pool(Pool::Sqlite(pool)));
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|err| classify(err, &path))?;
        let known = newest(&SQLITE_MIGRATOR);
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .map_err(|err| classify(err, &path))?;
        let found = found.unwrap_or(0);
        let path = path.display().to_string();
        if found > known {
            return Err(CatalogError::TooNew { path, found, known });
        }
        if found < known {
            return Err(CatalogError::TooOld { path, found, known });
        }
        Ok(Self::with_pool(Pool::Sqlite(pool)))
    }

    /// Writes one row, to prove the catalog accepts writes (readiness). Fails rather than waits when another
    /// writer holds the database for longer than `within`.
    ///
    /// # Errors
    /// The write failed or did not finish in time.
    pub async fn probe_write(&self, now: DateTime<Utc>, within: Duration) -> Result<(), String> {
        each!(&self.pool, |pool| {
            let write = sqlx::query(
                "INSERT INTO liveness (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = $1",
            )
            .bind(to_ms(now))
            .execute(pool);
            match tokio::time::timeout(within, write).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!(
                    "a write did not finish within {}",
                    humantime::format_duration(within)
                )),
            }
        })
    }

    /// Closes the pool (for `SQLite`, checkpointing the WAL).
    pub async fn close(&self) {
        each!(&self.pool, |pool| pool.close().await);
    }

    /// Whether the catalog answers.
    pub async fn ping(&self) -> bool {
        each!(&self.pool, |pool| {
            sqlx::query("SELECT 1").execute(pool).await.is_ok()
        })
    }

    /// Records a new attempt in status `running` and returns its id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_backup(&self, new: &NewBackup<'_>) -> Result<i64, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Target(new.target)).await?;
            let id = tx.insert_running(new, &self.replica).await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    /// Records how an attempt ended.
    ///
    /// # Errors
    /// Database failures.
    pub async fn finish_backup(&self, id: i64, finish: &Finish) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Backup(id)).await?;
            if !tx.close_all(&[(id, finish)], &[id]).await?.contains(&id) {
                // Another writer closed this record (it can only be `running` while this attempt owns it).
                return Err(CatalogError::Conflict {
                    id,
                    expected: "running",
                });
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Names the artifact of a running backup. When another backup of the target already has that name, the
    /// backup's id is added before the extension, so no backup ever overwrites another. Returns the name used.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn claim_artifact(
        &self,
        id: i64,
        target: &str,
        name: &str,
    ) -> Result<String, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Target(target)).await?;
            let used = tx.name_artifact(id, target, name).await?;
            tx.commit().await?;
            Ok(used)
        })
    }

    /// Records that a provider's long-running operation was accepted, before its first poll: the recovery point,
    /// what its provider needs to poll it again, and (in the same transaction) the schedule slot it serves as used.
    ///
    /// # Errors
    /// The catalog could not be written; the caller must not poll an operation it could not record.
    pub async fn operation_accepted(
        &self,
        accepted: &OperationAccepted<'_>,
    ) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Target(accepted.target)).await?;
            let updated = sqlx::query(
                "UPDATE backups SET accepted_at = $1 WHERE id = $2 AND status = 'running'",
            )
            .bind(to_ms(accepted.accepted_at))
            .bind(accepted.backup_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                return Err(CatalogError::Conflict {
                    id: accepted.backup_id,
                    expected: "running",
                });
            }
            sqlx::query(
                "INSERT INTO operations (backup_id, kind, handle, request, deadline_at, slot_at)
                 VALUES ($1, 'backup', $2, $3, $4, $5)",
            )
            .bind(accepted.backup_id)
            .bind(accepted.handle)
            .bind(accepted.request)
            .bind(to_ms(accepted.deadline_at))
            .bind(accepted.slot.map(to_ms))
            .execute(&mut *tx)
            .await?;
            if let Some(slot) = accepted.slot {
                tx.set_last_slot(accepted.target, slot, accepted.accepted_at)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Moves an operation on: what its provider needs to poll it next (where, and when).
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn operation_polled(&self, backup_id: i64, handle: &str) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Backup(backup_id)).await?;
            sqlx::query("UPDATE operations SET handle = $1 WHERE backup_id = $2")
                .bind(handle)
                .bind(backup_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every artifact name the catalog knows for a target.
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn artifacts(&self, target: &str) -> Result<Vec<KnownArtifact>, CatalogError> {
        each!(&self.pool, |pool| {
            let rows = sqlx::query(
                "SELECT id, artifact, status,
                        status = 'discovered' AND verified_at IS NULL AND error_code = 'Unverified'
                        AND error_message LIKE 'imported before%'
                 FROM backups WHERE target = $1 AND artifact IS NOT NULL",
            )
            .bind(target)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|row| KnownArtifact {
                    id: row.get(0),
                    name: row.get(1),
                    status: Status::parse(row.get::<&str, _>(2)),
                    imported_unchecked: row.get(3),
                })
                .collect())
        })
    }

    /// Marks a restorable backup whose artifact vanished from storage as `missing`, with an audit row.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn mark_missing(
        &self,
        target: &str,
        id: i64,
        now: DateTime<Utc>,
        detail: &str,
    ) -> Result<bool, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Leader).await?;
            let changed = sqlx::query(
                "UPDATE backups SET status = 'missing' WHERE id = $1 AND status IN ('succeeded', 'discovered')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                tx.audit(now, "reconcile", "missing", target, Some(id), detail)
                    .await?;
            }
            tx.commit().await?;
            Ok(changed == 1)
        })
    }

    /// Imports an artifact found in storage that no record names, as a `discovered` backup dated and checked as
    /// `found` says (restorable only when verified). Does nothing (returns `None`) when a record names it by now.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn import_discovered(
        &self,
        found: &Discovered<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Leader).await?;
            let (verified_at, error_code) = match &found.unverified {
                None => (Some(to_ms(now)), None),
                Some(_) => (None, Some(UNVERIFIED)),
            };
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO backups (target, kind, trigger, status, attempt, requested_at, accepted_at, completed_at,
                                      expires_at, storage, artifact, size_bytes, verified_at, error_code, error_message)
                 SELECT $1, $2, 'discovered', 'discovered', 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
                 WHERE NOT EXISTS (SELECT 1 FROM backups WHERE target = $1 AND artifact = $8)
                 RETURNING id",
            )
            .bind(found.target)
            .bind(found.kind)
            .bind(to_ms(found.recovery_point.unwrap_or(now)))
            .bind(found.recovery_point.map(to_ms))
            .bind(to_ms(now))
            .bind(found.expires_at.map(to_ms))
            .bind(found.storage)
            .bind(found.artifact)
            .bind(i64::try_from(found.size).unwrap_or(i64::MAX))
            .bind(verified_at)
            .bind(error_code)
            .bind(found.unverified.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = inserted else {
                return Ok(None);
            };
            let detail = discovered_detail(found);
            tx.audit(
                now,
                "reconcile",
                "discovered",
                found.target,
                Some(id),
                &detail,
            )
            .await?;
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    /// Records a new check of a discovered backup that an earlier rpod imported unchecked (error code
    /// `Unverified`): its recovery point, expiry and verdict, with an audit row.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn reverify_discovered(
        &self,
        id: i64,
        found: &Discovered<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Leader).await?;
            let verified_at = found.unverified.is_none().then(|| to_ms(now));
            let updated = sqlx::query(
                "UPDATE backups SET accepted_at = $1, expires_at = $2, size_bytes = $3, verified_at = $4,
                        error_code = $5, error_message = $6
                 WHERE id = $7 AND status = 'discovered' AND verified_at IS NULL AND error_code = 'Unverified'
                   AND error_message LIKE 'imported before%'",
            )
            .bind(found.recovery_point.map(to_ms))
            .bind(found.expires_at.map(to_ms))
            .bind(i64::try_from(found.size).unwrap_or(i64::MAX))
            .bind(verified_at)
            .bind(found.unverified.as_ref().map(|_| UNVERIFIED))
            .bind(found.unverified.as_deref())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 1 {
                let detail = discovered_detail(found);
                tx.audit(
                    now,
                    "reconcile",
                    "verified",
                    found.target,
                    Some(id),
                    &detail,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(updated == 1)
        })
    }

    /// Every operation that was accepted and has not finished (of `target`, or of all targets), oldest first.
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn pending_operations(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<PendingOperation>, CatalogError> {
        each!(&self.pool, |pool| {
            let rows = sqlx::query(
                "SELECT o.backup_id, b.target, b.trigger, b.attempt, b.requested_at, b.accepted_at, b.artifact,
                        o.handle, o.deadline_at, o.slot_at
                 FROM operations o JOIN backups b ON b.id = o.backup_id
                 WHERE b.status = 'running' AND ($1 IS NULL OR b.target = $1)
                 ORDER BY o.backup_id",
            )
            .bind(target)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|row| PendingOperation {
                    backup_id: row.get(0),
                    target: row.get(1),
                    trigger: row.get::<String, _>(2).parse().unwrap_or(Trigger::Manual),
                    attempt: u32::try_from(row.get::<i64, _>(3)).unwrap_or(1),
                    requested_at: from_ms(row.get(4)),
                    accepted_at: from_ms(
                        row.get::<Option<i64>, _>(5).unwrap_or_else(|| row.get(4)),
                    ),
                    artifact: row.get::<Option<String>, _>(6).unwrap_or_default(),
                    handle: row.get(7),
                    deadline_at: from_ms(row.get(8)),
                    slot: row.get::<Option<i64>, _>(9).map(from_ms),
                })
                .collect())
        })
    }

    /// Marks every `running` attempt (of `target`, or of all targets) that has no saved operation as `interrupted`
    /// and returns the targets they belonged to. Called when work on them begins: at start on a single node, and
    /// when a replica takes a target over (whatever ran there before is gone).
    ///
    /// # Errors
    /// Database failures, or (replicas) the target's lease is no longer this replica's.
    pub async fn interrupt_running(
        &self,
        now: DateTime<Utc>,
        target: Option<&str>,
    ) -> Result<Vec<String>, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            if let Some(target) = target {
                tx.fence(self, Fence::Target(target)).await?;
            }
            // Rows with an accepted operation are not interrupted: the operation goes on in the cloud and is resumed.
            let rows = sqlx::query(
                "SELECT id, target FROM backups WHERE status = 'running' AND ($1 IS NULL OR target = $1)
                 AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.backup_id = backups.id)",
            )
            .bind(target)
            .fetch_all(&mut *tx)
            .await?;
            let mut targets = Vec::new();
            for row in rows {
                let id: i64 = row.get(0);
                let target: String = row.get(1);
                sqlx::query(
                    "UPDATE backups SET status = 'interrupted', completed_at = $1, error_code = 'Interrupted',
                            error_message = 'rpod stopped while this backup was running; it will be retried'
                     WHERE id = $2 AND status = 'running'",
                )
                .bind(to_ms(now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.audit(
                    now,
                    "rpod",
                    "interrupted",
                    &target,
                    Some(id),
                    &format!(
                        "found running when replica {} began work on the target",
                        self.replica
                    ),
                )
                .await?;
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
            tx.commit().await?;
            Ok(targets)
        })
    }

    /// The instant up to which schedule slots are used, if recorded.
    ///
    /// # Errors
    /// Database failures.
    pub async fn last_slot(&self, target: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        each!(&self.pool, |pool| {
            let ms: Option<Option<i64>> =
                sqlx::query_scalar("SELECT last_slot_at FROM target_state WHERE target = $1")
                    .bind(target)
                    .fetch_optional(pool)
                    .await?;
            Ok(ms.flatten().map(from_ms))
        })
    }

    /// Records that every slot at or before `at` is used.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_last_slot(&self, target: &str, at: DateTime<Utc>) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Target(target)).await?;
            tx.set_last_slot(target, at, at).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Claims schedule slot `slot` of `target` for this replica by compare-and-set on the target's last claimed
    /// slot: true for exactly one claimer of each slot across all replicas (docs/high-availability.md, "Ticks").
    /// A single node has nobody to race: always true.
    ///
    /// # Errors
    /// Database failures, or the target's lease is no longer this replica's.
    pub async fn claim_slot(
        &self,
        target: &str,
        slot: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(true);
        };
        let mut tx = pool.begin().await?;
        tx.fence(self, Fence::Target(target)).await?;
        let claimed = tx
            .claim_slot_under(target, slot, self.term_for(target).unwrap_or(0))
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// The target's change-detection state (docs/design.md, "Change-driven backups"), as the scheduler last wrote it.
    ///
    /// # Errors
    /// Database failures.
    pub async fn change_state(&self, target: &str) -> Result<Option<String>, CatalogError> {
        each!(&self.pool, |pool| {
            let state: Option<Option<String>> =
                sqlx::query_scalar("SELECT change_watermark FROM target_state WHERE target = $1")
                    .bind(target)
                    .fetch_optional(pool)
                    .await?;
            Ok(state.flatten())
        })
    }

    /// Replaces the target's change-detection state.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_change_state(
        &self,
        target: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Target(target)).await?;
            sqlx::query(
                "INSERT INTO target_state (target, change_watermark, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (target) DO UPDATE SET change_watermark = $2, updated_at = $3",
            )
            .bind(target)
            .bind(state)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Restorable backups, the newest recovery point and the last success of one target.
    ///
    /// # Errors
    /// Database failures.
    pub async fn summary(
        &self,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<TargetSummary, CatalogError> {
        each!(&self.pool, |pool| {
            let mut found = pool.acquire().await?.summaries_of(&[target], now).await?;
            Ok(found.pop().map(|(_, summary)| summary).unwrap_or_default())
        })
    }

    /// [`Catalog::summary`] of many targets at once: one statement per 500 targets, each target found through the
    /// same newest-first indexes. Targets with no backup at all get an empty summary.
    ///
    /// # Errors
    /// Database failures.
    pub async fn summaries(
        &self,
        targets: &[&str],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, TargetSummary>, CatalogError> {
        const CHUNK: usize = 500;
        let mut found = HashMap::with_capacity(targets.len());
        for chunk in targets.chunks(CHUNK) {
            each!(&self.pool, |pool| {
                found.extend(pool.acquire().await?.summaries_of(chunk, now).await?);
            });
        }
        Ok(found)
    }

    /// Restorability of every target with at least one restorable backup, in one pass over restorable rows.
    ///
    /// # Errors
    /// Database failures.
    pub async fn restorability(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Restorability>, CatalogError> {
        each!(&self.pool, |pool, d| {
            let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(d.sql(concat!(
                "SELECT target, COUNT(*), MAX(accepted_at), MAX(expires_at) FROM backups INDEXED BY backups_expiring
                 WHERE ",
                restorable!(),
                " AND expires_at > $1
                 GROUP BY target"
            )))
            .bind(to_ms(now))
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(target, count, newest, until)| {
                    (
                        target,
                        Restorability {
                            count: u64::try_from(count).unwrap_or(0),
                            newest_recovery_point: Some(from_ms(newest)),
                            until: Some(from_ms(until)),
                        },
                    )
                })
                .collect())
        })
    }

    /// Id of the target's newest successful backup of rpod's own whose artifact has not been deleted, expired or
    /// not. Discovered artifacts never take this place: a file put into the storage does not displace rpod's own
    /// newest success from pruning's protection.
    ///
    /// # Errors
    /// Database failures.
    pub async fn newest_success_id(&self, target: &str) -> Result<Option<i64>, CatalogError> {
        each!(&self.pool, |pool, d| {
            Ok(sqlx::query_scalar(d.sql(
                "SELECT id FROM backups INDEXED BY backups_restorable_by_point
                 WHERE target = $1 AND status IN ('succeeded', 'discovered') AND status = 'succeeded'
                 ORDER BY accepted_at DESC LIMIT 1"))
            .bind(target)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Durations of the target's most recent successful backups, newest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn recent_durations(
        &self,
        target: &str,
        limit: u32,
    ) -> Result<Vec<Duration>, CatalogError> {
        each!(&self.pool, |pool| {
            Ok(pool.acquire().await?.durations_of(target, limit).await?)
        })
    }

    /// Restorable backups of one target, newest recovery point first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn restorable(
        &self,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<BackupRecord>, CatalogError> {
        each!(&self.pool, |pool, d| {
            let rows = sqlx::query(d.sql(concat!(
                "SELECT ",
                backup_columns!(),
                " FROM backups INDEXED BY backups_restorable_by_point
                 WHERE target = $1 AND ",
                restorable!(),
                " AND expires_at > $2
                 ORDER BY accepted_at DESC"
            )))
            .bind(target)
            .bind(to_ms(now))
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(record_from_row).collect())
        })
    }

    /// Backups whose expiry has passed but whose artifact has not been pruned yet, oldest first: rpod's own, and
    /// discovered ones it verified while they were still valid. An artifact found already expired, or one that
    /// failed verification, is not rpod's to delete: it stays where it is, recorded as not restorable.
    ///
    /// # Errors
    /// Database failures.
    pub async fn expired_unpruned(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<BackupRecord>, CatalogError> {
        each!(&self.pool, |pool, d| {
            let rows = sqlx::query(d.sql(concat!(
                "SELECT ",
                backup_columns!(),
                " FROM backups INDEXED BY backups_expiring
                 WHERE status IN ('succeeded', 'discovered') AND expires_at <= $1
                   AND (status = 'succeeded' OR (verified_at IS NOT NULL AND expires_at > completed_at))
                 ORDER BY expires_at LIMIT $2"
            )))
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(record_from_row).collect())
        })
    }

    /// Marks a backup's artifact as deleted, with an audit row saying who and why.
    ///
    /// # Errors
    /// Database failures.
    pub async fn mark_pruned(
        &self,
        record: &BackupRecord,
        now: DateTime<Utc>,
        actor: &str,
        reason: &str,
    ) -> Result<(), CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Leader).await?;
            let updated = sqlx::query(
                "UPDATE backups SET status = 'pruned', pruned_at = $1 WHERE id = $2 AND status IN ('succeeded', 'discovered')",
            )
            .bind(to_ms(now))
            .bind(record.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                return Err(CatalogError::Conflict {
                    id: record.id,
                    expected: "restorable",
                });
            }
            let detail = format!(
                "{reason}; artifact {}",
                record.artifact.as_deref().unwrap_or("-")
            );
            tx.audit(
                now,
                actor,
                "pruned",
                &record.target,
                Some(record.id),
                &detail,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Marks that the expiry warning for this backup was given; returns false if it already was.
    ///
    /// # Errors
    /// Database failures.
    pub async fn mark_expiry_warned(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Leader).await?;
            let changed = sqlx::query(
                "UPDATE backups SET expiry_warned_at = $1 WHERE id = $2 AND expiry_warned_at IS NULL",
            )
            .bind(to_ms(now))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(changed == 1)
        })
    }

    /// The newest attempts of a target (all targets when `None`), newest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn backups(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BackupRecord>, CatalogError> {
        each!(&self.pool, |pool, d| {
            let rows = match target {
                Some(target) => {
                    sqlx::query(d.sql(concat!("SELECT ", backup_columns!(), " FROM backups INDEXED BY backups_by_target WHERE target = $1 ORDER BY id DESC LIMIT $2")))
                    .bind(target)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?
                }
                None => {
                    sqlx::query(concat!("SELECT ", backup_columns!(), " FROM backups ORDER BY id DESC LIMIT $1"))
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await?
                }
            };
            Ok(rows.iter().map(record_from_row).collect())
        })
    }

    /// One backup by id.
    ///
    /// # Errors
    /// Database failures.
    pub async fn backup(&self, id: i64) -> Result<Option<BackupRecord>, CatalogError> {
        each!(&self.pool, |pool| {
            let row = sqlx::query(concat!(
                "SELECT ",
                backup_columns!(),
                " FROM backups WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(record_from_row))
        })
    }

    /// Audit rows of one target, newest first: `(at, actor, action, backup_id, detail)`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit_log(
        &self,
        target: &str,
    ) -> Result<Vec<(DateTime<Utc>, String, String, Option<i64>, String)>, CatalogError> {
        each!(&self.pool, |pool| {
            let rows: Vec<(i64, String, String, Option<i64>, String)> = sqlx::query_as(
                "SELECT at, actor, action, backup_id, detail FROM audit WHERE target = $1 ORDER BY id DESC",
            )
            .bind(target)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(at, actor, action, id, detail)| (from_ms(at), actor, action, id, detail))
                .collect())
        })
    }

    /// Completes, with the recovery point `point` its system lists now, the newest backup of `target` that failed
    /// only because the system had not listed its point yet ([`crate::record::POINT_NOT_LISTED`]) and was
    /// accepted before the point (within five minutes). Returns its id, or `None` when there is none.
    ///
    /// # Errors
    /// The catalog could not be written.
    pub async fn complete_unlisted(
        &self,
        target: &str,
        point: &str,
        recovery_point: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, CatalogError> {
        each!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            tx.fence(self, Fence::Leader).await?;
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM backups WHERE target = $1 AND status = 'failed' AND error_code = $2
                 AND accepted_at <= $3 ORDER BY id DESC LIMIT 1",
            )
            .bind(target)
            .bind(crate::record::POINT_NOT_LISTED)
            .bind(to_ms(recovery_point + chrono::TimeDelta::minutes(5)))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else {
                return Ok(None);
            };
            sqlx::query(
                "UPDATE backups SET status = 'succeeded', artifact = $1, accepted_at = $2, expires_at = $3,
                        error_code = NULL, error_message = NULL
                 WHERE id = $4 AND status = 'failed'",
            )
            .bind(point)
            .bind(to_ms(recovery_point))
            .bind(to_ms(expires_at))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.audit(
                now,
                "reconcile",
                "completed",
                target,
                Some(id),
                &format!("the system lists its recovery point {point} now"),
            )
            .await?;
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    /// How many backup attempts of a target started at or after `since` (imported backups not counted).
    ///
    /// # Errors
    /// The catalog could not be read.
    pub async fn attempts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<u32, CatalogError> {
        each!(&self.pool, |pool| {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM backups WHERE target = $1 AND trigger != 'discovered' AND requested_at >= $2",
            )
            .bind(target)
            .bind(to_ms(since))
            .fetch_one(pool)
            .await?;
            Ok(u32::try_from(count).unwrap_or(u32::MAX))
        })
    }
}

/// The error code of a discovered backup that does not count as restorable.
const UNVERIFIED: &str = "Unverified";

fn discovered_detail(found: &Discovered<'_>) -> String {
    let verdict = match &found.unverified {
        None => "verified".to_owned(),
        Some(why) => format!("not restorable: {why}"),
    };
    let point = found.recovery_point.map_or_else(
        || "no recovery point".to_owned(),
        |at| format!("recovery point {}", at.format("%Y-%m-%dT%H:%M:%SZ")),
    );
    format!(
        "found in storage {} as {} ({} bytes, {point}); {verdict}",
        found.storage, found.artifact, found.size
    )
}

/// The newest schema version `migrator` knows.
fn newest(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuses a catalog written by a newer rpod, then applies pending migrations to a `SQLite` catalog.
async fn migrate_sqlite(pool: &SqlitePool, path: &Path) -> Result<(), CatalogError> {
    // Reading the schema touches the header and the schema pages: a file that is not a database, or whose
    // first pages are damaged, is reported as corrupt here. (A full `quick_check` would read the whole file
    // on every start and every `rpod status`; damage deeper in surfaces as an error on the rows it hits.)
    sqlx::query("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(pool)
        .await
        .map_err(|err| classify(err, path))?;
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if has_table {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await?;
        let known = newest(&SQLITE_MIGRATOR);
        if let Some(found) = found
            && found > known
        {
            return Err(CatalogError::TooNew {
                path: path.display().to_string(),
                found,
                known,
            });
        }
    }
    SQLITE_MIGRATOR.run(pool).await.map_err(|err| match err {
        sqlx::migrate::MigrateError::Execute(inner) => classify(inner, path),
        other => CatalogError::Corrupt {
            path: path.into(),
            detail: other.to_string(),
        },
    })
}

fn classify(err: sqlx::Error, path: &Path) -> CatalogError {
    if let sqlx::Error::Database(db) = &err {
        let code = db.code().unwrap_or_default();
        // SQLITE_CORRUPT (11), SQLITE_NOTADB (26)
        if code == "11" || code == "26" || db.message().contains("not a database") {
            return CatalogError::Corrupt {
                path: path.into(),
                detail: db.message().to_owned(),
            };
        }
        // SQLITE_READONLY (8), SQLITE_CANTOPEN (14)
        if code == "8" || code == "14" {
            return CatalogError::StateDirReadOnly {
                path: path.parent().unwrap_or(path).into(),
                detail: db.message().to_owned(),
            };
        }
    }
    CatalogError::Database(err)
}
