//! Providers: how one kind of target is backed up. A small trait plus one file per kind.
//!
//! What does not live here: when to back up, retries and deadlines (`scheduler`), or bookkeeping (`catalog`).

mod apim;
mod command;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use apim::ApimProvider;
pub use command::CommandProvider;

use crate::storage::Storage;

/// What a provider is asked to do.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// Target name.
    pub target: String,
    /// Catalog id of this attempt.
    pub backup_id: i64,
    /// Name the artifact gets in the storage.
    pub artifact: String,
    /// Where the artifact goes.
    pub storage: Arc<dyn Storage>,
    /// Cancelled on deadline or shutdown: stop, clean up, return [`ProviderError::cancelled`].
    pub cancel: CancellationToken,
}

/// A completed backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOutcome {
    /// The instant whose state the backup captures.
    pub recovery_point: DateTime<Utc>,
    /// Artifact name as stored.
    pub artifact: String,
    /// Size as stored, when known.
    pub size_bytes: Option<u64>,
    /// SHA-256 (hex) as stored, when known.
    pub sha256: Option<String>,
    /// Tier of the protected service, where it matters.
    pub sku: Option<String>,
}

/// How an attempt failed; retry decisions follow [`ProviderError::retryable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// Machine-readable code (`ExitStatus`, `SpawnFailed`, Azure's error code, ...).
    pub code: String,
    /// Operator-readable message; never contains secrets.
    pub message: String,
    /// Transient failures are retried with backoff; permanent ones fail the attempt at once.
    pub retryable: bool,
    /// The attempt stopped because it was cancelled.
    pub cancelled: bool,
    /// The recovery point, when the provider got that far.
    pub recovery_point: Option<DateTime<Utc>>,
}

impl ProviderError {
    /// A failure worth retrying.
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            retryable: true,
            cancelled: false,
            recovery_point: None,
        }
    }

    /// A failure that will not go away by itself.
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::transient(code, message)
        }
    }

    /// The attempt was cancelled (deadline or shutdown).
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self {
            cancelled: true,
            ..Self::transient("Cancelled", message)
        }
    }
}

/// Backs up one kind of target.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The `kind` label.
    fn kind(&self) -> &'static str;

    /// Runs one backup to its end.
    ///
    /// # Errors
    /// A [`ProviderError`] saying what failed and whether retrying may help.
    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError>;
}
