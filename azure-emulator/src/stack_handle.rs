//! The [`Emulator`] knobs of Azure Stack Hub infrastructure backup: host backup locations, change their
//! settings and their share, decide how the next backup ends, and read a location's snapshot.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backup_location::{
    BackupLocationRef, BackupLocationSpec, BackupLocationState, ShareCondition,
};
use crate::emulator::Emulator;
use crate::stack;
use crate::stack_state::{Location, known_roles};

impl Emulator {
    /// Hosts an Azure Stack Hub backup location (replacing one with the same subscription, group and name,
    /// with its backups). With its scheduler on, the first scheduled backup starts one period from now.
    pub fn add_backup_location(&self, spec: BackupLocationSpec) {
        stack::host(&mut self.shared.lock(), spec);
    }

    /// A snapshot of a backup location (found ignoring case), brought up to the emulator's clock first.
    #[must_use]
    pub fn backup_location(&self, location: &BackupLocationRef) -> Option<BackupLocationState> {
        stack::snapshot(&mut self.shared.lock(), location)
    }

    /// Turns a location's built-in scheduler on or off (`isBackupSchedulerEnabled`). Turned on, it starts a
    /// backup every `backupFrequencyInHours` × [`crate::EmulatorConfig::stack_scheduler_hour`], the first one
    /// period from now (`nextBackupTime`). The control endpoint `PUT .../backupLocations/{location}/scheduler`
    /// with `{"enabled":true}` does the same.
    ///
    /// # Panics
    /// When no such location is hosted: that is a mistake in the test.
    pub fn set_backup_scheduler(&self, location: &BackupLocationRef, enabled: bool) {
        self.change_location("set_backup_scheduler", location, |hosted, now, calendar| {
            hosted.set_scheduler(enabled, now, calendar);
        });
    }

    /// Sets a location's encryption certificate thumbprint (`None`: no certificate, and `createBackup` is
    /// refused with 400 `EncryptionCertificateNotFound`). Backups record the thumbprint they start with. The
    /// control endpoint `PUT .../encryptionCert` with `{"thumbprint":"…"}` does the same.
    ///
    /// # Panics
    /// When no such location is hosted: that is a mistake in the test.
    pub fn set_encryption_cert(&self, location: &BackupLocationRef, thumbprint: Option<&str>) {
        self.change_location("set_encryption_cert", location, |hosted, _, _| {
            hosted.spec.encryption_cert_thumbprint = thumbprint.map(str::to_owned);
        });
    }

    /// Sets (or clears with `None`) a condition of the location's external share. It holds until cleared: every
    /// backup started meanwhile ends `Failed` at its end time, every role `Failed`, and its operation answers
    /// 400 with the condition's code. The control endpoint `PUT .../shareCondition` with
    /// `{"condition":"OutOfCapacity"}` does the same.
    ///
    /// # Panics
    /// When no such location is hosted: that is a mistake in the test.
    pub fn set_share_condition(
        &self,
        location: &BackupLocationRef,
        condition: Option<ShareCondition>,
    ) {
        self.change_location("set_share_condition", location, |hosted, _, _| {
            hosted.share_condition = condition;
        });
    }

    /// Makes these infrastructure roles (names from [`crate::STACK_ROLES`], ignoring case) fail in the next
    /// backup to start at the location (by a POST or by the scheduler): it ends `PartialSucceeded` with those
    /// roles `Failed`, or `Failed` when every role is listed. An empty list clears it. The control endpoint
    /// `PUT .../failedRoles` with `{"roles":["ECE"]}` does the same.
    ///
    /// # Panics
    /// When no such location is hosted or a role is unknown: that is a mistake in the test.
    pub fn fail_roles(&self, location: &BackupLocationRef, roles: &[&str]) {
        let roles = known_roles(roles).unwrap_or_else(|why| panic!("fail_roles: {why}"));
        self.change_location("fail_roles", location, |hosted, _, _| {
            hosted.pending_failed_roles = roles;
        });
    }

    /// Sets the free bytes on a location's share (`availableCapacity`). A backup ending with less free than
    /// [`crate::EmulatorConfig::stack_backup_size_bytes`] fails as `OutOfCapacity`. The control endpoint
    /// `PUT .../availableCapacity` with `{"bytes":N}` does the same.
    ///
    /// # Panics
    /// When no such location is hosted: that is a mistake in the test.
    pub fn set_available_capacity(&self, location: &BackupLocationRef, bytes: u64) {
        self.change_location("set_available_capacity", location, |hosted, _, _| {
            hosted.spec.available_bytes = bytes;
        });
    }

    /// Puts a finished backup on a location's share, as if taken before: created at `created`, ended one backup
    /// duration later with `status` (`Succeeded`; `PartialSucceeded`, with the first role failed; or `Failed`,
    /// every role failed; ignoring case). Its data is counted as already on the share: its size comes back to
    /// the free bytes when retention prunes it. A `Succeeded` or `PartialSucceeded` one moves `lastBackupTime`
    /// to `created` if later. Returns its name (a GUID).
    ///
    /// # Panics
    /// When no such location is hosted or the status is none of those: that is a mistake in the test.
    // Tests often want the backup only, not its name.
    #[allow(clippy::must_use_candidate)]
    pub fn add_stack_backup(
        &self,
        location: &BackupLocationRef,
        created: DateTime<Utc>,
        status: &str,
    ) -> String {
        let status = stack::finished_status(status).unwrap_or_else(|| {
            panic!("add_stack_backup: '{status}' is not Succeeded, PartialSucceeded or Failed")
        });
        let mut name = None;
        self.change_location("add_stack_backup", location, |hosted, _, calendar| {
            name = Some(hosted.add_finished(created, status, calendar));
        });
        name.unwrap_or_default()
    }

    /// Sets how long Azure Stack Hub backups started from now on run (locations with their own duration keep
    /// it).
    pub fn set_stack_backup_duration(&self, duration: Duration) {
        self.shared.lock().config.stack_backup_duration = duration;
    }

    /// Sets how many backups a page of `GET .../backups` holds (at least 1).
    pub fn set_stack_backup_page_size(&self, size: usize) {
        self.shared.lock().config.stack_backup_page_size = size.max(1);
    }

    /// Runs `change` on a hosted location (settled first); `what` names the caller in the panic for an unknown
    /// location.
    fn change_location(
        &self,
        what: &str,
        location: &BackupLocationRef,
        change: impl FnOnce(&mut Location, DateTime<Utc>, crate::stack_state::Calendar),
    ) {
        // The lock is released before a panic, so a test that expects one leaves the emulator usable.
        let found = stack::with_location(&mut self.shared.lock(), location, change).is_some();
        assert!(found, "{what}: no backup location {location:?}");
    }
}
