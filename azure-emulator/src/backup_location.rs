//! Azure Stack Hub infrastructure backup as a test describes and reads it: a stamp's backup location
//! ([`BackupLocationSpec`], [`BackupLocationRef`]), what can go wrong on its external share
//! ([`ShareCondition`]), and the read-only snapshot of a location ([`BackupLocationState`],
//! [`StackBackupState`]).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::GIB;

/// The infrastructure roles every backup reports in `roleStatus`, in this order.
pub const STACK_ROLES: [&str; 11] = [
    "ACS",
    "ADFS",
    "BRP",
    "CA",
    "CRP",
    "Domain",
    "ECE",
    "KeyVaultDataPlane",
    "NRP",
    "SRP",
    "WAS",
];

/// The thumbprint of the encryption certificate a new backup location has.
pub const DEFAULT_ENCRYPTION_CERT_THUMBPRINT: &str = "3A6F1E9B2C4D5E6F708192A3B4C5D6E7F8091A2B";

/// Names one backup location: its subscription, resource group (`System.{region}` on a stamp) and location
/// (the stamp's region, e.g. `local`). Names compare ignoring case, as ARM does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackupLocationRef {
    /// The default provider subscription of the stamp.
    pub subscription: String,
    /// Resource group, e.g. `System.local`.
    pub resource_group: String,
    /// The location's name, the stamp's region, e.g. `local`.
    pub location: String,
}

impl BackupLocationRef {
    /// The location `location` of group `resource_group` in `subscription`.
    #[must_use]
    pub fn new(subscription: &str, resource_group: &str, location: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            location: location.to_owned(),
        }
    }

    /// The ARM id,
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Backup.Admin/backupLocations/{location}`.
    #[must_use]
    pub fn location_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Backup.Admin/backupLocations/{}",
            self.subscription, self.resource_group, self.location
        )
    }

    /// The ARM id of one of its backups, `{location id}/backups/{name}`.
    #[must_use]
    pub fn backup_id(&self, name: &str) -> String {
        format!("{}/backups/{name}", self.location_id())
    }
}

/// A condition of the external share that makes backups fail, modelled on the five backup alerts a stamp
/// raises. A backup started while one holds ends `Failed` at its end time, every role `Failed`, and its
/// operation answers 400 with [`Self::code`] and [`Self::message`] (UNVERIFIED: the stamp's alerts are
/// documented, not the codes of a failed operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShareCondition {
    /// The share is full: `ExternalStoreOutOfCapacity`.
    OutOfCapacity,
    /// The share cannot be reached: `ExternalStoreUnreachable`.
    Unreachable,
    /// The share's path does not exist: `ExternalStorePathNotFound`.
    PathNotFound,
    /// The share refuses the stamp's credentials: `ExternalStoreAuthenticationFailed`.
    AuthenticationFailed,
    /// Anything else: `BackupFault`.
    Fault,
}

impl ShareCondition {
    const ALL: [Self; 5] = [
        Self::OutOfCapacity,
        Self::Unreachable,
        Self::PathNotFound,
        Self::AuthenticationFailed,
        Self::Fault,
    ];

    /// The name used by the control endpoint: `OutOfCapacity`, `Unreachable`, `PathNotFound`,
    /// `AuthenticationFailed` or `Fault`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfCapacity => "OutOfCapacity",
            Self::Unreachable => "Unreachable",
            Self::PathNotFound => "PathNotFound",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::Fault => "Fault",
        }
    }

    /// The error code a failed backup's operation answers with.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::OutOfCapacity => "ExternalStoreOutOfCapacity",
            Self::Unreachable => "ExternalStoreUnreachable",
            Self::PathNotFound => "ExternalStorePathNotFound",
            Self::AuthenticationFailed => "ExternalStoreAuthenticationFailed",
            Self::Fault => "BackupFault",
        }
    }

    /// The error message a failed backup's operation answers with.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::OutOfCapacity => "The external storage location has exceeded its capacity.",
            Self::Unreachable => "The external storage location could not be reached.",
            Self::PathNotFound => "The external storage location path could not be found.",
            Self::AuthenticationFailed => {
                "The credentials for the external storage location are not valid."
            }
            Self::Fault => "Backup failed due to an internal error.",
        }
    }
}

impl fmt::Display for ShareCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ShareCondition {
    type Err = String;

    /// Parses [`Self::as_str`], ignoring case.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|condition| condition.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "'{text}' is not a share condition (OutOfCapacity, Unreachable, PathNotFound, \
                     AuthenticationFailed, Fault)"
                )
            })
    }
}

/// One backup location of an Azure Stack Hub stamp. Build it with [`BackupLocationSpec::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLocationSpec {
    /// The default provider subscription.
    pub subscription: String,
    /// Resource group, e.g. `System.local`.
    pub resource_group: String,
    /// The location's name (the stamp's region), e.g. `local`.
    pub location: String,
    /// `externalStoreDefault.path` (default `\\fileserver\share\stamp`).
    pub path: String,
    /// `externalStoreDefault.userName` (default `DOMAIN\backupadmin`).
    pub user_name: String,
    /// `backupRetentionPeriodInDays` (2 to 14, default 7).
    pub retention_days: u32,
    /// `backupFrequencyInHours` (4 to 12, default 12).
    pub frequency_hours: u32,
    /// `isBackupSchedulerEnabled` (default false).
    pub scheduler_enabled: bool,
    /// `encryptionCertThumbprint` (default [`DEFAULT_ENCRYPTION_CERT_THUMBPRINT`]); without one, backups are
    /// refused.
    pub encryption_cert_thumbprint: Option<String>,
    /// Free bytes on the external share (default 60 GiB, shown as `"60 GB"`).
    pub available_bytes: u64,
    /// How long this location's backups run; `None` (the default) takes
    /// [`crate::EmulatorConfig::stack_backup_duration`].
    pub backup_duration: Option<Duration>,
}

impl BackupLocationSpec {
    /// A location keeping backups 7 days, scheduler off (every 12 hours when on), with an encryption
    /// certificate and 60 GiB free on its share.
    #[must_use]
    pub fn new(subscription: &str, resource_group: &str, location: &str) -> Self {
        Self {
            subscription: subscription.to_owned(),
            resource_group: resource_group.to_owned(),
            location: location.to_owned(),
            path: r"\\fileserver\share\stamp".to_owned(),
            user_name: r"DOMAIN\backupadmin".to_owned(),
            retention_days: 7,
            frequency_hours: 12,
            scheduler_enabled: false,
            encryption_cert_thumbprint: Some(DEFAULT_ENCRYPTION_CERT_THUMBPRINT.to_owned()),
            available_bytes: 60 * GIB,
            backup_duration: None,
        }
    }

    /// The same location keeping backups `days` days.
    ///
    /// # Panics
    /// Outside 2 to 14, which a stamp does not offer: that is a mistake in the test.
    #[must_use]
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_days = offered(days, 2..=14, "keeps backups", "days");
        self
    }

    /// The same location with its scheduler running every `hours` hours.
    ///
    /// # Panics
    /// Outside 4 to 12, which a stamp does not offer: that is a mistake in the test.
    #[must_use]
    pub fn with_frequency_hours(mut self, hours: u32) -> Self {
        self.frequency_hours = offered(hours, 4..=12, "backs up every", "hours");
        self
    }

    /// The same location with its built-in scheduler on or off.
    #[must_use]
    pub fn with_scheduler(mut self, enabled: bool) -> Self {
        self.scheduler_enabled = enabled;
        self
    }

    /// The same location with this encryption certificate thumbprint, or none.
    #[must_use]
    pub fn with_encryption_cert(mut self, thumbprint: Option<&str>) -> Self {
        self.encryption_cert_thumbprint = thumbprint.map(str::to_owned);
        self
    }

    /// The same location with `bytes` free on its share.
    #[must_use]
    pub fn with_available_capacity(mut self, bytes: u64) -> Self {
        self.available_bytes = bytes;
        self
    }

    /// The same location with backups running `duration` (instead of the emulator's setting).
    #[must_use]
    pub fn with_backup_duration(mut self, duration: Duration) -> Self {
        self.backup_duration = Some(duration);
        self
    }

    /// The name of this location, for the other `Emulator` methods.
    #[must_use]
    pub fn reference(&self) -> BackupLocationRef {
        BackupLocationRef::new(&self.subscription, &self.resource_group, &self.location)
    }
}

/// `value`, which must lie in `range`, what a stamp offers ("a stamp {does} {start} to {end} {unit}").
///
/// # Panics
/// Outside `range`: that is a mistake in the test.
#[track_caller]
fn offered(value: u32, range: RangeInclusive<u32>, does: &str, unit: &str) -> u32 {
    assert!(
        range.contains(&value),
        "a stamp {does} {} to {} {unit}, not {value}",
        range.start(),
        range.end()
    );
    value
}

/// One backup of a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackBackupState {
    /// Its name: a GUID, the last segment of its id (ARM's `name` is `{location}/{this}`).
    pub name: String,
    /// Its status as its operation sees it: `Running` until its end, then `Succeeded`, `PartialSucceeded` or
    /// `Failed` (the list may say `Succeeded` earlier).
    pub status: String,
    /// `createdDateTime`: when it started.
    pub created: DateTime<Utc>,
    /// When it ended, if it has.
    pub ended: Option<DateTime<Utc>>,
    /// Whether the built-in scheduler started it (rather than a `createBackup` POST or a test).
    pub by_scheduler: bool,
    /// The roles that failed.
    pub failed_roles: Vec<String>,
    /// The share condition that failed it, if one did.
    pub share_condition: Option<ShareCondition>,
}

/// A read-only snapshot of a backup location, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLocationState {
    /// The location as added, with its current settings (scheduler, certificate, free bytes).
    pub spec: BackupLocationSpec,
    /// Every `createBackup` POST that reached the location, whatever its answer (202, 400 or 409); requests
    /// answered by an injected fault are not counted.
    pub create_backup_posts: usize,
    /// The backups not yet pruned by retention, oldest first.
    pub backups: Vec<StackBackupState>,
    /// Free bytes on the share now.
    pub available_bytes: u64,
    /// Whether the built-in scheduler is on.
    pub scheduler_enabled: bool,
    /// The share condition in force, if any.
    pub share_condition: Option<ShareCondition>,
    /// `nextBackupTime`: when the scheduler starts the next backup (`None` while it is off).
    pub next_backup_time: Option<DateTime<Utc>>,
    /// `lastBackupTime`: the `createdDateTime` of the newest backup that ended `Succeeded` or
    /// `PartialSucceeded`.
    pub last_backup_time: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spec() {
        let location = BackupLocationSpec::new("s", "System.local", "local").reference();
        assert_eq!(
            location.backup_id("64e8"),
            "/subscriptions/s/resourceGroups/System.local/providers/Microsoft.Backup.Admin/backupLocations/\
             local/backups/64e8"
        );
    }

    #[test]
    fn conditions_parse_back_ignoring_case() {
        for condition in ShareCondition::ALL {
            assert_eq!(condition.to_string().parse(), Ok(condition));
        }
        assert_eq!("unreachable".parse(), Ok(ShareCondition::Unreachable));
        assert!("Full".parse::<ShareCondition>().is_err());
    }

    #[test]
    #[should_panic(expected = "2 to 14 days")]
    fn retention_is_what_a_stamp_offers() {
        let _ = BackupLocationSpec::new("s", "rg", "local").with_retention_days(30);
    }
}
