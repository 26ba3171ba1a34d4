//! The words every layer speaks about a backup: why it started ([`Trigger`]), where it stands ([`Status`]), the
//! record itself ([`BackupRecord`]) and what a target's records add up to ([`TargetSummary`], [`Restorability`]).
//! Plain data: no I/O and no database here; the catalog stores and decodes them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a backup started (docs/design.md, "Vocabulary").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A cron slot.
    Schedule,
    /// The RPO watchdog.
    Rpo,
    /// A configuration change of the protected system.
    Change,
    /// A slot missed while rpod was down, or an attempt a crash interrupted.
    CatchUp,
    /// An operator asked for it.
    Manual,
    /// Imported by reconciliation.
    Discovered,
}

impl Trigger {
    /// Every trigger, in metric label order.
    pub const ALL: [Trigger; 6] = [
        Trigger::Schedule,
        Trigger::Rpo,
        Trigger::Change,
        Trigger::CatchUp,
        Trigger::Manual,
        Trigger::Discovered,
    ];

    /// The label and catalog value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Rpo => "rpo",
            Trigger::Change => "change",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
            Trigger::Discovered => "discovered",
        }
    }
}

/// Where a backup record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In progress.
    Running,
    /// Completed; restorable until `expires_at`.
    Succeeded,
    /// Ended with an error.
    Failed,
    /// Exceeded `operation_timeout`.
    TimedOut,
    /// rpod stopped while it ran.
    Interrupted,
    /// Its artifact was deleted.
    Pruned,
    /// Its artifact vanished from storage.
    Missing,
    /// Imported from storage by reconciliation.
    Discovered,
}

impl Status {
    /// The catalog value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Interrupted => "interrupted",
            Status::Pruned => "pruned",
            Status::Missing => "missing",
            Status::Discovered => "discovered",
        }
    }

    /// The status a catalog value names; an unknown one reads as `failed` (it is not restorable).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "timed_out" => Status::TimedOut,
            "interrupted" => Status::Interrupted,
            "pruned" => Status::Pruned,
            "missing" => Status::Missing,
            "discovered" => Status::Discovered,
            _ => Status::Failed,
        }
    }
}

/// One backup attempt as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Catalog id.
    pub id: i64,
    /// Target name.
    pub target: String,
    /// Provider kind.
    pub kind: String,
    /// Why it ran.
    pub trigger: String,
    /// Where it stands.
    pub status: Status,
    /// Attempt number within its trigger.
    pub attempt: u32,
    /// When rpod started it.
    pub requested_at: DateTime<Utc>,
    /// Recovery point time.
    pub accepted_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it stops being restorable.
    pub expires_at: Option<DateTime<Utc>>,
    /// Storage name.
    pub storage: Option<String>,
    /// Artifact name in the storage.
    pub artifact: Option<String>,
    /// Artifact size.
    pub size_bytes: Option<i64>,
    /// Artifact SHA-256 (hex).
    pub sha256: Option<String>,
    /// Service tier.
    pub sku: Option<String>,
    /// The protected resource's etag when the backup completed.
    pub etag: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// First change this backup covers.
    pub first_change_at: Option<DateTime<Utc>>,
    /// When its artifact was deleted.
    pub pruned_at: Option<DateTime<Utc>>,
    /// When rpod verified a discovered artifact's content; a `discovered` backup is restorable only once set.
    pub verified_at: Option<DateTime<Utc>>,
    /// What the provider read of the source's content when the backup completed (its own JSON, e.g. API
    /// Management's API and product counts); a drill compares the restored destination with it.
    #[serde(default)]
    pub content: Option<String>,
    /// The replica that ran it (docs/high-availability.md); `None` for imported backups and older records.
    #[serde(default)]
    pub replica: Option<String>,
    /// The schedule slot it served, when a slot started it.
    #[serde(default)]
    pub slot: Option<DateTime<Utc>>,
}

impl BackupRecord {
    /// Status `succeeded`, or `discovered` and verified, and not yet expired.
    #[must_use]
    pub fn is_restorable(&self, now: DateTime<Utc>) -> bool {
        let observed = match self.status {
            Status::Succeeded => true,
            Status::Discovered => self.verified_at.is_some(),
            _ => false,
        };
        observed && self.expires_at.is_some_and(|e| e > now)
    }
}

/// What the catalog says about one target's restorability right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetSummary {
    /// Recovery point of the newest restorable backup.
    pub newest_recovery_point: Option<DateTime<Utc>>,
    /// How many backups are restorable.
    pub restorable_backups: u64,
    /// Latest expiry among restorable backups.
    pub restorable_until: Option<DateTime<Utc>>,
    /// Recovery point of the newest successful backup, expired or not.
    pub last_success: Option<DateTime<Utc>>,
    /// Start of the newest attempt.
    pub last_attempt: Option<DateTime<Utc>>,
}

/// Restorable backups of one target at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restorability {
    /// How many.
    pub count: u64,
    /// Recovery point of the newest.
    pub newest_recovery_point: Option<DateTime<Utc>>,
    /// Latest expiry.
    pub until: Option<DateTime<Utc>>,
}

impl FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown trigger {s:?}"))
    }
}

/// The error code of a backup whose system did the backup but did not list its recovery point yet; reconciliation
/// completes it when the point is listed (docs/azure-vm.md).
pub const POINT_NOT_LISTED: &str = "RecoveryPointNotListed";

/// Why a restore ran (docs/restore.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreTrigger {
    /// An operator asked for it (`rpod restore`, `POST /api/v1/targets/{name}/restore`).
    Manual,
    /// A successful backup of a target with a warm standby.
    Standby,
    /// A restore drill on its schedule.
    Drill,
}

impl RestoreTrigger {
    /// Every trigger, in metric label order.
    pub const ALL: [RestoreTrigger; 3] = [
        RestoreTrigger::Manual,
        RestoreTrigger::Standby,
        RestoreTrigger::Drill,
    ];

    /// The label and catalog value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreTrigger::Manual => "manual",
            RestoreTrigger::Standby => "standby",
            RestoreTrigger::Drill => "drill",
        }
    }

    /// The trigger a catalog value names; an unknown one reads as `manual`.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        RestoreTrigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .unwrap_or(RestoreTrigger::Manual)
    }
}

/// One restore as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// Catalog id.
    pub id: i64,
    /// Target whose backup it restores.
    pub target: String,
    /// The backup restored.
    pub backup_id: i64,
    /// The `restore_into` name; `None`: the target's own system.
    pub into: Option<String>,
    /// What was restored into: a service's resource path, or the command that read the stream.
    pub destination: String,
    /// Why it ran.
    pub trigger: RestoreTrigger,
    /// `running`, then `succeeded`, `failed`, `timed_out` or `interrupted`.
    pub status: Status,
    /// When rpod started it.
    pub requested_at: DateTime<Utc>,
    /// When the system accepted it (or rpod began feeding the stream).
    pub accepted_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Accepted to completed, for a successful restore: the measured restore time.
    pub duration_seconds: Option<f64>,
    /// What the restore did not carry over, for an operator to re-apply.
    pub warnings: Vec<String>,
    /// What verification found (drills).
    pub verified: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
}
