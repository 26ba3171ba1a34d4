//! What every storage is and gives: the [`Storage`] trait, the artifacts it lists and writes, its errors. Each
//! kind's file implements it; `storage::build` picks the kind.

use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};

/// One artifact as a storage lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// Name relative to the storage root, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When the storage created it, where it keeps that.
    pub created_at: Option<DateTime<Utc>>,
    /// When its content was last written, where the storage keeps that.
    pub modified_at: Option<DateTime<Utc>>,
}

impl ArtifactInfo {
    /// The earlier of its creation and modification times: the latest its content can date from. A copy keeps
    /// an old modification time (`cp -p`, `rsync -t`) while getting a new creation time, and a file written in
    /// place keeps its creation time; the earlier of the two is never later than the content.
    #[must_use]
    pub fn stored_at(&self) -> Option<DateTime<Utc>> {
        match (self.created_at, self.modified_at) {
            (Some(created), Some(modified)) => Some(created.min(modified)),
            (created, modified) => created.or(modified),
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[error("storage {storage}: {action}: {source}")]
pub struct StorageError {
    /// Storage name.
    pub storage: String,
    /// What was being done, e.g. `listing "etc/"`.
    pub action: String,
    /// What the system said.
    #[source]
    pub source: io::Error,
}

/// An artifact being written. Dropping it without [`ArtifactWriter::commit`] discards it, so a failed backup
/// never leaves a half-written artifact that looks complete.
pub trait ArtifactWriter: Write + Send {
    /// Makes the artifact durable and visible under its final name.
    ///
    /// # Errors
    /// Flushing, syncing or renaming failed.
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// A place backups land.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The configured name.
    fn name(&self) -> &str;

    /// The configured kind (metric and log label).
    fn kind(&self) -> &'static str;

    /// Starts writing an artifact. Blocking: call from a blocking context.
    ///
    /// # Errors
    /// The artifact cannot be created.
    fn create(&self, name: &str) -> Result<Box<dyn ArtifactWriter>, StorageError>;

    /// Lists the artifacts whose names start with `prefix`.
    ///
    /// # Errors
    /// The listing failed; callers must not act on a partial view.
    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactInfo>, StorageError>;

    /// One artifact, or `None` when there is none by that name.
    ///
    /// # Errors
    /// The storage could not say (unreachable, not authorized, the container or root itself is missing).
    async fn stat(&self, name: &str) -> Result<Option<ArtifactInfo>, StorageError>;

    /// Opens an artifact to read it from the start, as [`Self::create`] wrote it. Blocking: call from a blocking
    /// context. Storages rpod does not write into answer `Unsupported`.
    ///
    /// # Errors
    /// The artifact cannot be opened.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        Err(StorageError {
            storage: self.name().to_owned(),
            action: format!("reading {name:?}"),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "this kind of storage is not read by rpod",
            ),
        })
    }

    /// Deletes an artifact; an artifact that is already gone is not an error.
    ///
    /// # Errors
    /// The deletion failed.
    async fn delete(&self, name: &str) -> Result<(), StorageError>;

    /// How many CORS rules the storage's Blob service has; `None` for kinds without one.
    ///
    /// # Errors
    /// The rules could not be read.
    async fn blob_cors_rules(&self) -> Result<Option<usize>, StorageError> {
        Ok(None)
    }

    /// Checks that the storage is reachable and writable.
    ///
    /// # Errors
    /// It is not.
    async fn probe(&self) -> Result<(), StorageError>;
}
