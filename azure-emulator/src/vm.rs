//! Azure Backup of `IaaS` VMs as a test describes and reads it: which VM is protected in which Recovery Services
//! vault and how ([`ProtectedVmSpec`], [`ProtectedVmRef`], [`ProtectionState`], [`HealthStatus`],
//! [`BackupPolicy`], [`BackupSchedule`]), how a job is to end ([`JobOutcome`]), and the read-only snapshot of a
//! protected VM ([`ProtectedVmState`], [`VmJobState`], [`RecoveryPointState`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveTime, Utc};

/// Names one protected VM: its vault (subscription, resource group, name) and the VM (resource group, name).
/// Names compare ignoring case, as ARM does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProtectedVmRef {
    /// Subscription id of the vault (and of the VM).
    pub subscription: String,
    /// Resource group of the Recovery Services vault.
    pub vault_resource_group: String,
    /// Name of the Recovery Services vault.
    pub vault: String,
    /// Resource group of the VM.
    pub vm_resource_group: String,
    /// Name of the VM.
    pub vm: String,
}

impl ProtectedVmRef {
    /// The VM `vm` of group `vm_resource_group`, protected in vault `vault` of group `vault_resource_group`.
    #[must_use]
    pub fn new(
        subscription: &str,
        vault_resource_group: &str,
        vault: &str,
        vm_resource_group: &str,
        vm: &str,
    ) -> Self {
        Self {
            subscription: subscription.to_owned(),
            vault_resource_group: vault_resource_group.to_owned(),
            vault: vault.to_owned(),
            vm_resource_group: vm_resource_group.to_owned(),
            vm: vm.to_owned(),
        }
    }

    /// The vault's ARM id, `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}`.
    #[must_use]
    pub fn vault_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
            self.subscription, self.vault_resource_group, self.vault
        )
    }

    /// `IaasVMContainer;iaasvmcontainerv2;{vmRg};{vm}`.
    #[must_use]
    pub fn container_name(&self) -> String {
        format!(
            "IaasVMContainer;iaasvmcontainerv2;{};{}",
            self.vm_resource_group, self.vm
        )
    }

    /// `VM;iaasvmcontainerv2;{vmRg};{vm}`.
    #[must_use]
    pub fn item_name(&self) -> String {
        format!(
            "VM;iaasvmcontainerv2;{};{}",
            self.vm_resource_group, self.vm
        )
    }

    /// The protected item's ARM id (raw `;`, fabric `Azure`):
    /// `{vault id}/backupFabrics/Azure/protectionContainers/{container}/protectedItems/{item}`.
    #[must_use]
    pub fn item_id(&self) -> String {
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            self.vault_id(),
            self.container_name(),
            self.item_name()
        )
    }

    /// The VM's ARM id, `/subscriptions/{sub}/resourceGroups/{vmRg}/providers/Microsoft.Compute/virtualMachines/{vm}`.
    #[must_use]
    pub fn vm_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
            self.subscription, self.vm_resource_group, self.vm
        )
    }
}

/// `properties.protectionState` of a protected item. Only `Protected` and `IRPending` accept on-demand backups.
/// The values besides `Protected` and `IRPending` are from memory (UNVERIFIED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtectionState {
    /// Backups run (the default).
    #[default]
    Protected,
    /// Protection configured, initial backup pending.
    IRPending,
    /// Protection stopped (data retained or deleted).
    ProtectionStopped,
    /// Protection paused.
    ProtectionPaused,
    /// Backups suspended (stop protection with retain-as-per-policy, or an immutable vault's soft state).
    BackupsSuspended,
    /// Protection in error.
    ProtectionError,
    /// Unknown state.
    Invalid,
}

impl ProtectionState {
    const ALL: [Self; 7] = [
        Self::Protected,
        Self::IRPending,
        Self::ProtectionStopped,
        Self::ProtectionPaused,
        Self::BackupsSuspended,
        Self::ProtectionError,
        Self::Invalid,
    ];

    /// The value ARM writes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protected => "Protected",
            Self::IRPending => "IRPending",
            Self::ProtectionStopped => "ProtectionStopped",
            Self::ProtectionPaused => "ProtectionPaused",
            Self::BackupsSuspended => "BackupsSuspended",
            Self::ProtectionError => "ProtectionError",
            Self::Invalid => "Invalid",
        }
    }

    /// Whether an on-demand backup is accepted in this state.
    #[must_use]
    pub fn accepts_backups(self) -> bool {
        matches!(self, Self::Protected | Self::IRPending)
    }
}

impl fmt::Display for ProtectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProtectionState {
    type Err = String;

    /// Parses ARM's value, ignoring case.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "'{text}' is not a protection state (Protected, IRPending, ProtectionStopped, \
                     ProtectionPaused, BackupsSuspended, ProtectionError, Invalid)"
                )
            })
    }
}

/// `properties.healthStatus` of a protected item (`Passed` seen in specs; the others from memory, UNVERIFIED).
/// `protectionStatus` follows it: `Healthy` when `Passed`, else `Unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HealthStatus {
    /// Healthy (the default).
    #[default]
    Passed,
    /// Something needs fixing.
    ActionRequired,
    /// Something should be fixed.
    ActionSuggested,
    /// Unknown.
    Invalid,
}

impl HealthStatus {
    const ALL: [Self; 4] = [
        Self::Passed,
        Self::ActionRequired,
        Self::ActionSuggested,
        Self::Invalid,
    ];

    /// The value ARM writes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "Passed",
            Self::ActionRequired => "ActionRequired",
            Self::ActionSuggested => "ActionSuggested",
            Self::Invalid => "Invalid",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HealthStatus {
    type Err = String;

    /// Parses ARM's value, ignoring case.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!(
                    "'{text}' is not a health status (Passed, ActionRequired, ActionSuggested, Invalid)"
                )
            })
    }
}

/// When a backup policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupSchedule {
    /// Standard policy: once a day at `at` (UTC); `SimpleSchedulePolicy` with `scheduleRunTimes`.
    Daily {
        /// Time of day, UTC.
        at: NaiveTime,
    },
    /// Enhanced policy: every `interval_hours` (4, 6, 8, 12 or 24) within a daily window starting at
    /// `window_start` (UTC) and lasting `window_duration_hours`; `SimpleSchedulePolicyV2` with
    /// `hourlySchedule`.
    Hourly {
        /// 4, 6, 8, 12 or 24.
        interval_hours: u32,
        /// Start of the window, UTC.
        window_start: NaiveTime,
        /// Length of the window in hours (4 to 24).
        window_duration_hours: u32,
    },
}

/// A vault's backup policy for VMs (`backupManagementType` `AzureIaasVM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPolicy {
    /// Policy name, e.g. `DefaultPolicy`.
    pub name: String,
    /// When it runs.
    pub schedule: BackupSchedule,
    /// How long its daily points are kept (`retentionPolicy.dailySchedule.retentionDuration`, default 30 days).
    pub retention_days: u32,
}

impl BackupPolicy {
    /// A standard policy running daily at `at` UTC, keeping points 30 days.
    #[must_use]
    pub fn daily(name: &str, at: NaiveTime) -> Self {
        Self {
            name: name.to_owned(),
            schedule: BackupSchedule::Daily { at },
            retention_days: 30,
        }
    }

    /// An enhanced policy running every `interval_hours` hours (4, 6, 8, 12 or 24) in a window of
    /// `window_duration_hours` (4 to 24) starting at `window_start` UTC, keeping points 30 days.
    ///
    /// # Panics
    /// When the interval or the window is not one Azure offers: that is a mistake in the test.
    #[must_use]
    pub fn hourly(
        name: &str,
        interval_hours: u32,
        window_start: NaiveTime,
        window_duration_hours: u32,
    ) -> Self {
        assert!(
            [4, 6, 8, 12, 24].contains(&interval_hours),
            "an enhanced policy runs every 4, 6, 8, 12 or 24 hours, not {interval_hours}"
        );
        assert!(
            (4..=24).contains(&window_duration_hours),
            "an enhanced policy's window lasts 4 to 24 hours, not {window_duration_hours}"
        );
        Self {
            name: name.to_owned(),
            schedule: BackupSchedule::Hourly {
                interval_hours,
                window_start,
                window_duration_hours,
            },
            retention_days: 30,
        }
    }

    /// The same policy keeping points `days` days.
    #[must_use]
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_days = days;
        self
    }
}

impl Default for BackupPolicy {
    /// `DefaultPolicy`: daily at 22:30 UTC, 30 days.
    fn default() -> Self {
        Self::daily(
            "DefaultPolicy",
            NaiveTime::from_hms_opt(22, 30, 0).expect("a valid time"),
        )
    }
}

/// One VM protected in a Recovery Services vault. Build it with [`ProtectedVmSpec::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedVmSpec {
    /// Subscription id of the vault (and of the VM).
    pub subscription: String,
    /// Resource group of the vault.
    pub vault_resource_group: String,
    /// Vault name.
    pub vault: String,
    /// Resource group of the VM.
    pub vm_resource_group: String,
    /// VM name.
    pub vm: String,
    /// `protectionState` (default `Protected`).
    pub protection_state: ProtectionState,
    /// `healthStatus` (default `Passed`).
    pub health_status: HealthStatus,
    /// The vault's policy protecting the VM (default [`BackupPolicy::default`]). Adding a VM with a policy
    /// replaces the vault's policy of that name.
    pub policy: BackupPolicy,
}

impl ProtectedVmSpec {
    /// A `Protected`, `Passed` VM under the default policy.
    #[must_use]
    pub fn new(
        subscription: &str,
        vault_resource_group: &str,
        vault: &str,
        vm_resource_group: &str,
        vm: &str,
    ) -> Self {
        Self {
            subscription: subscription.to_owned(),
            vault_resource_group: vault_resource_group.to_owned(),
            vault: vault.to_owned(),
            vm_resource_group: vm_resource_group.to_owned(),
            vm: vm.to_owned(),
            protection_state: ProtectionState::default(),
            health_status: HealthStatus::default(),
            policy: BackupPolicy::default(),
        }
    }

    /// The same VM in another protection state.
    #[must_use]
    pub fn with_protection_state(mut self, state: ProtectionState) -> Self {
        self.protection_state = state;
        self
    }

    /// The same VM with another health status.
    #[must_use]
    pub fn with_health_status(mut self, status: HealthStatus) -> Self {
        self.health_status = status;
        self
    }

    /// The same VM under another policy.
    #[must_use]
    pub fn with_policy(mut self, policy: BackupPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The name of this VM, for the other `Emulator` methods.
    #[must_use]
    pub fn reference(&self) -> ProtectedVmRef {
        ProtectedVmRef::new(
            &self.subscription,
            &self.vault_resource_group,
            &self.vault,
            &self.vm_resource_group,
            &self.vm,
        )
    }
}

/// How a backup job is to end, when a fault says so (by default it ends `Completed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// `Failed` at the end of the snapshot phase, with `properties.errorDetails[0]` carrying this code and
    /// message. No recovery point is made.
    Failed {
        /// `errorCode`, e.g. `UserErrorVmNotFound`.
        code: String,
        /// `errorString`.
        message: String,
    },
    /// `Cancelled` at the end of the snapshot phase (a job can only be cancelled while it takes the
    /// snapshot). No recovery point is made.
    Cancelled,
    /// `CompletedWithWarnings` after the full duration; a recovery point is made.
    CompletedWithWarnings,
}

/// `properties.status` of a backup job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Running.
    InProgress,
    /// Done; a recovery point was made.
    Completed,
    /// Done with warnings; a recovery point was made.
    CompletedWithWarnings,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// The value ARM writes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::CompletedWithWarnings => "CompletedWithWarnings",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }

    /// Whether a recovery point came of it.
    #[must_use]
    pub fn made_a_point(self) -> bool {
        matches!(self, Self::Completed | Self::CompletedWithWarnings)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted on-demand backup of a protected VM: its operation and, once the operation phase is over, its
/// job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmJobState {
    /// The operation id of the `Azure-AsyncOperation` and `Location` headers.
    pub operation_id: String,
    /// `InProgress`, `Succeeded` or `Failed` (a `FailOperation` fault).
    pub operation_status: String,
    /// The job id, once the operation phase is over (`None` while it runs and when the operation failed).
    pub job_id: Option<String>,
    /// The job's status, once there is a job.
    pub job_status: Option<JobStatus>,
    /// When the backup POST was accepted (also the job's `startTime`).
    pub accepted_at: DateTime<Utc>,
    /// When the job ended, if it has.
    pub ended_at: Option<DateTime<Utc>>,
    /// The expiry asked for (`recoveryPointExpiryTimeInUTC`, or 30 days after acceptance).
    pub requested_expiry: DateTime<Utc>,
}

/// Who made a recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryPointSource {
    /// The vault's own policy ([`crate::Emulator::add_policy_recovery_point`]).
    Policy,
    /// An on-demand backup (a backup POST whose job completed).
    OnDemand,
}

/// One recovery point of a protected VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPointState {
    /// Its name: a numeric string, also the last segment of its id.
    pub name: String,
    /// `recoveryPointTime`.
    pub time: DateTime<Utc>,
    /// `recoveryPointProperties.expiryTime`.
    pub expiry: DateTime<Utc>,
    /// Who made it.
    pub source: RecoveryPointSource,
}

/// A read-only snapshot of a protected VM, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedVmState {
    /// The VM as added, with its current protection state and health status.
    pub spec: ProtectedVmSpec,
    /// Backup POSTs that reached this item during the current UTC day of the emulator's clock, whatever their
    /// answer (202, or 400 for the daily limit, the protection state or the body); requests answered by an
    /// injected fault are not counted.
    pub backup_posts_today: u32,
    /// Backup POSTs accepted (202) during the current UTC day: the count the limit of nine applies to.
    pub accepted_backups_today: u32,
    /// Every accepted backup, oldest first.
    pub jobs: Vec<VmJobState>,
    /// The recovery points ARM lists (unexpired), oldest first.
    pub recovery_points: Vec<RecoveryPointState>,
    /// `lastBackupStatus` (`None` before any backup ended, shown as `""`).
    pub last_backup_status: Option<String>,
    /// `lastBackupTime` (`None` before any, shown as `2001-01-01T00:00:00Z`).
    pub last_backup_time: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_follow_azure() {
        let vm = ProtectedVmSpec::new("s", "rg-vault", "vault1", "rg-vm", "vm1").reference();
        assert_eq!(
            vm.container_name(),
            "IaasVMContainer;iaasvmcontainerv2;rg-vm;vm1"
        );
        assert_eq!(vm.item_name(), "VM;iaasvmcontainerv2;rg-vm;vm1");
        assert_eq!(
            vm.item_id(),
            "/subscriptions/s/resourceGroups/rg-vault/providers/Microsoft.RecoveryServices/vaults/vault1/\
             backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg-vm;vm1/\
             protectedItems/VM;iaasvmcontainerv2;rg-vm;vm1"
        );
    }

    #[test]
    fn states_parse_back_ignoring_case() {
        for state in ProtectionState::ALL {
            assert_eq!(state.as_str().parse::<ProtectionState>(), Ok(state));
        }
        assert_eq!(
            "protectionstopped".parse(),
            Ok(ProtectionState::ProtectionStopped)
        );
        assert!("Stopped".parse::<ProtectionState>().is_err());
        for status in HealthStatus::ALL {
            assert_eq!(status.to_string().parse::<HealthStatus>(), Ok(status));
        }
        assert!(ProtectionState::IRPending.accepts_backups());
        assert!(!ProtectionState::BackupsSuspended.accepts_backups());
    }

    #[test]
    #[should_panic(expected = "every 4, 6, 8, 12 or 24 hours")]
    fn enhanced_policies_take_azure_intervals_only() {
        let _ = BackupPolicy::hourly("p", 5, NaiveTime::MIN, 12);
    }
}
