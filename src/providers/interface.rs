//! What every provider is and gives: the [`Provider`] trait, what it is asked and what it answers, the journal
//! it reports a long-running operation to, and how a kind's spec becomes its provider ([`BuildProvider`]). Each
//! kind's file implements them; `providers::build` picks the kind.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::azure::ArmClient;
use crate::clock::Clock;
use crate::config::{Config, Problem, StorageConfig, TargetConfig};
use crate::record::{BackupRecord, RestoreTrigger};
use crate::storage::{ArtifactInfo, Storage};

/// Where a provider is built: the target, the whole configuration and the Resource Manager client (see
/// [`build`](super::build)).
#[derive(Debug, Clone, Copy)]
pub struct BuildSite<'a> {
    /// The target's index in `[[targets]]`, for the key of a problem.
    pub index: usize,
    /// The target.
    pub target: &'a TargetConfig,
    /// The whole configuration, for the target's storage and `[azure]`.
    pub config: &'a Config,
    /// The Resource Manager client, when one was set up (or why it could not be).
    pub arm: Option<&'a Result<ArmClient, String>>,
    /// The Resource Manager client of the `[azure.profiles.NAME]` the target names, when it names one.
    pub profile_arm: Option<&'a Result<ArmClient, String>>,
}

impl BuildSite<'_> {
    /// The configuration of the storage the target names, when it names one.
    #[must_use]
    pub fn storage(&self) -> Option<&StorageConfig> {
        self.target
            .storage
            .as_ref()
            .and_then(|name| self.config.storages.get(name))
    }
}

/// How a kind's validated spec becomes its provider; each provider file implements it for its kind's spec.
pub trait BuildProvider {
    /// The provider, `None` when the target cannot run here (see [`build`](super::build)).
    ///
    /// # Errors
    /// A configuration problem with its key.
    fn build_provider(&self, site: &BuildSite<'_>) -> Result<Option<Arc<dyn Provider>>, Problem>;
}

/// The error code of an attempt that found an operation already running on the service after a cut-off
/// attempt (see [`BackupRequest::look_first`]); its retry looks again before asking.
pub const SERVICE_BUSY: &str = "ServiceBusy";

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
    /// Cancelled when rpod begins to stop. A provider whose operation goes on without rpod (an accepted ARM
    /// operation) returns [`ProviderError::detached`] at once; it is resumed at the next start.
    pub stopping: CancellationToken,
    /// Where a long-running operation is recorded: once accepted (before its first poll), then at every step.
    pub journal: Arc<dyn OperationJournal>,
    /// Wall time.
    pub clock: Clock,
    /// The attempt's overall deadline.
    pub deadline_at: DateTime<Utc>,
    /// An operation accepted before rpod restarted: poll it instead of starting a new one.
    pub resume: Option<Resume>,
    /// The target's previous attempt was cut off with nothing saved (a crash between asking the service and
    /// recording that it accepted): look for an operation still running on the service before asking again
    /// (docs/high-availability.md, "Resume, never re-run").
    pub look_first: bool,
}

/// An operation accepted before rpod restarted, to poll to its end instead of requesting it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// When the service accepted it: the recovery point.
    pub accepted_at: DateTime<Utc>,
    /// What the provider saved to poll it (its own format).
    pub handle: String,
}

/// Where a provider reports a long-running operation. The attempt implements it on the catalog, so that a
/// backup's record, its saved operation and its schedule slot are written in one place.
#[async_trait::async_trait]
pub trait OperationJournal: Send + Sync + std::fmt::Debug {
    /// The service accepted the operation at `accepted_at` (the recovery point). `handle` is what the provider
    /// needs to poll it again after a restart, `request` what was asked (never secrets). Called before the first
    /// poll: an operation that could not be recorded must not be polled (a restart would lose it).
    ///
    /// # Errors
    /// It could not be recorded.
    async fn accepted(
        &self,
        accepted_at: DateTime<Utc>,
        handle: &str,
        request: Option<&str>,
    ) -> Result<(), String>;

    /// The operation moved on; `handle` says where and when to poll next.
    ///
    /// # Errors
    /// It could not be recorded (the previous step still resumes).
    async fn polled(&self, handle: &str) -> Result<(), String>;
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
    /// The protected resource's etag at completion, where it has one.
    pub etag: Option<String>,
    /// When the backup stops being restorable, where the service decides that (a vault, a platform); `None`:
    /// the recovery point plus the policy's `expiry`.
    pub expires_at: Option<DateTime<Utc>>,
    /// What the provider read of the source's content at completion (its own JSON), for drills to compare.
    pub content: Option<String>,
}

/// A recovery point that the protected system made without rpod (a vault's own policy, a platform's own
/// scheduler), as its provider lists it for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPoint {
    /// Its name or id, unique within the target (recorded as the backup's artifact).
    pub name: String,
    /// The instant whose state it captures.
    pub recovery_point: DateTime<Utc>,
    /// When it stops being restorable, as the system says; `None`: the recovery point plus the policy's expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its size, when known.
    pub size: Option<u64>,
    /// Listed, but not to be counted yet (a platform that lists a backup as done before it is): reconciliation
    /// neither imports it nor takes its record for missing.
    pub pending: bool,
}

/// Why an attempt stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Its deadline passed, or rpod gave up waiting for it at shutdown.
    Cancelled,
    /// rpod is stopping and the operation goes on without it: leave the record running; it is resumed at the
    /// next start.
    Detached,
    /// The provider saw the attempt's deadline pass.
    TimedOut,
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
    /// Why the attempt stopped before its end, when it was stopped rather than failed.
    pub stopped: Option<Stopped>,
    /// The recovery point, when the provider got that far.
    pub recovery_point: Option<DateTime<Utc>>,
    /// The service asked to wait this long before trying again.
    pub retry_after: Option<std::time::Duration>,
}

impl ProviderError {
    /// A failure worth retrying.
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            retryable: true,
            stopped: None,
            recovery_point: None,
            retry_after: None,
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
            stopped: Some(Stopped::Cancelled),
            ..Self::transient("Cancelled", message)
        }
    }

    /// The attempt's deadline passed before the operation ended.
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self {
            stopped: Some(Stopped::TimedOut),
            ..Self::transient("TimedOut", message)
        }
    }

    /// rpod is stopping and the operation goes on without it; it is resumed at the next start.
    pub fn detached(message: impl Into<String>) -> Self {
        Self {
            stopped: Some(Stopped::Detached),
            ..Self::transient("Detached", message)
        }
    }
}

/// What a pre-flight check (`check-config --online`, and the checks logged at start) found wrong with a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckProblem {
    /// The target cannot be backed up as configured: something must change first (a configuration problem).
    #[error("{0}")]
    Refused(String),
    /// The check itself failed (network, permissions).
    #[error("{0}")]
    Unreachable(String),
    /// The target cannot be backed up right now (the service is busy); it may pass later.
    #[error("{0}")]
    Busy(String),
    /// Something that could not be checked; worth a look, not a failure.
    #[error("{0}")]
    Unchecked(String),
}

/// What the pre-flight checks of one target found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// A short description of what was found, e.g. the service and its tier.
    pub found: Option<String>,
    /// Every problem, each saying what to change.
    pub problems: Vec<CheckProblem>,
}

/// What a provider is asked to restore (docs/restore.md).
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Target name.
    pub target: String,
    /// Catalog id of this restore.
    pub restore_id: i64,
    /// The backup to restore.
    pub backup: BackupRecord,
    /// The `restore_into` name; `None`: the target's own system.
    pub into: Option<String>,
    /// Why it runs: a drill verifies what it restored.
    pub trigger: RestoreTrigger,
    /// Where the backup's artifact is.
    pub storage: Arc<dyn Storage>,
    /// Cancelled on deadline or shutdown.
    pub cancel: CancellationToken,
    /// Cancelled when rpod begins to stop: an accepted operation is detached and resumed at the next start.
    pub stopping: CancellationToken,
    /// Where an accepted long-running operation is recorded, before its first poll.
    pub journal: Arc<dyn OperationJournal>,
    /// Wall time.
    pub clock: Clock,
    /// The restore's deadline.
    pub deadline_at: DateTime<Utc>,
    /// An operation accepted before rpod restarted: follow it instead of starting a new one.
    pub resume: Option<Resume>,
}

/// A completed restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// When the system accepted it (or rpod began feeding the stream).
    pub accepted_at: Option<DateTime<Utc>>,
    /// What it did not carry over, for an operator to re-apply.
    pub warnings: Vec<String>,
    /// What verification found (drills).
    pub verified: Option<String>,
}

/// One guard's verdict on a restore, before anything is written (docs/restore.md, "Guards").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// What it checks, e.g. `destination_sku`.
    pub guard: &'static str,
    /// Whether the restore may go on as far as this guard is concerned.
    pub passed: bool,
    /// What it found; for a refusal, what to do.
    pub message: String,
}

impl Verdict {
    /// A guard that passed.
    #[must_use]
    pub fn pass(guard: &'static str, message: impl Into<String>) -> Self {
        Self {
            guard,
            passed: true,
            message: message.into(),
        }
    }

    /// A guard that refuses.
    #[must_use]
    pub fn refuse(guard: &'static str, message: impl Into<String>) -> Self {
        Self {
            guard,
            passed: false,
            message: message.into(),
        }
    }
}

/// Where a restore goes, as its provider names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// For operators and the record: a service's resource path, or the command that reads the stream.
    pub describe: String,
    /// What no two operations may share at once (a service's resource path, case-folded); `None` when the
    /// destination is not a system of its own (a command).
    pub busy_key: Option<String>,
    /// The target's own (production) system: restoring over it needs `--yes`.
    pub own: bool,
}

/// How the protected system rates its own protection of the target (a vault's protected item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Backups can run and the last one did not fail.
    pub healthy: bool,
    /// What the system says, for the log.
    pub detail: String,
    /// What a system that keeps its backups on a share says of it (Azure Stack Hub).
    pub share: Option<ShareReading>,
}

/// The state of a backup share, as its system reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ShareReading {
    /// Free space on the share.
    pub available_bytes: Option<u64>,
    /// How many more backups fit in it (by the recent backups' size, else the documented one).
    pub backups_that_fit: Option<u64>,
    /// When the encryption certificate was last seen to change.
    pub encryption_cert_changed_at: Option<DateTime<Utc>>,
}

/// Backs up one kind of target.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The `kind` label.
    fn kind(&self) -> &'static str;

    /// Checks, online, that the target can be backed up into `storage` at all (`check-config --online`, and
    /// logged at start): what was found, and every problem with what to change.
    async fn check(&self, storage: &Arc<dyn Storage>) -> CheckReport {
        let _ = storage;
        CheckReport::default()
    }

    /// Reads the signals change detection compares (docs/design.md, "Change-driven backups"); `None` for kinds that have none.
    async fn change_signals(&self) -> Option<Result<crate::changes::ChangeSignals, ProviderError>> {
        None
    }

    /// Checks an artifact found in storage that no record names before it may count as restorable: `Ok` when it
    /// checked out, otherwise why it does not. The default asks only that it is not empty; a kind whose
    /// artifacts rpod writes itself knows their format and checks it.
    ///
    /// # Errors
    /// Why the artifact does not count as a backup.
    async fn verify(
        &self,
        storage: &Arc<dyn Storage>,
        artifact: &ArtifactInfo,
    ) -> Result<(), String> {
        let _ = storage;
        if artifact.size == 0 {
            Err("it is empty".to_owned())
        } else {
            Ok(())
        }
    }

    /// The recovery points made outside rpod, for kinds whose system makes its own (a vault's policy, a
    /// platform's scheduler); `None` for kinds whose backups are all rpod's own (the default). The system vouches
    /// for them: reconciliation imports them as restorable, with the expiry the system gives.
    async fn recovery_points(&self) -> Option<Result<Vec<ExternalPoint>, ProviderError>> {
        None
    }

    /// Runs one backup to its end.
    ///
    /// # Errors
    /// A [`ProviderError`] saying what failed and whether retrying may help.
    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError>;

    /// How the protected system rates its protection of the target, read at every reconciliation; `None` for
    /// kinds whose system says nothing of it (the default).
    async fn health(&self) -> Option<Result<Health, ProviderError>> {
        None
    }

    /// Whether rpod starts this target's backups; `false`: its system backs itself up and rpod only measures
    /// (no schedule, watchdog or manual backup starts an attempt).
    fn starts_backups(&self) -> bool {
        true
    }

    /// How many backup attempts the protected system allows per UTC day (a vault's on-demand budget); `None`: no
    /// limit. The attempt does not start one more when the day's attempts reached it.
    fn daily_budget(&self) -> Option<u32> {
        None
    }

    /// What no two operations on the target's own system may share at once (see [`Destination::busy_key`]).
    fn busy_key(&self) -> Option<String> {
        None
    }

    /// Where a restore of `trigger` into `into` (a `restore_into` name; `None`: the target's own system) goes.
    ///
    /// # Errors
    /// This kind cannot restore there (an unknown name, no `restore_command`), saying what to configure.
    fn destination(
        &self,
        into: Option<&str>,
        trigger: RestoreTrigger,
    ) -> Result<Destination, String> {
        let _ = (into, trigger);
        Err(format!(
            "{} targets cannot be restored by rpod",
            self.kind()
        ))
    }

    /// The guards only this kind knows (the destination exists, its tier and SKU fit the backup, it is not
    /// busy), each with its verdict. Read-only: nothing is written.
    async fn restore_guards(&self, backup: &BackupRecord, into: Option<&str>) -> Vec<Verdict> {
        let _ = (backup, into);
        Vec::new()
    }

    /// Runs one restore to its end.
    ///
    /// # Errors
    /// A [`ProviderError`] saying what failed.
    async fn restore(&self, request: RestoreRequest) -> Result<RestoreOutcome, ProviderError> {
        let _ = request;
        Err(ProviderError::permanent(
            "RestoreUnsupported",
            format!("{} targets cannot be restored by rpod", self.kind()),
        ))
    }
}
