//! The JSON of Recovery Services resources as ARM shows them: the vault, a VM backup policy, a protected item,
//! an operation status, a backup job and a recovery point. Shapes follow the spec examples and the recorded
//! exchange (§4 of the wire contracts); fields marked UNVERIFIED in the crate documentation are emulator
//! choices.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde_json::{Value, json};

use crate::service::iso;
use crate::timefmt::{UNSET, dotnet, dotnet_or_unset, iso_duration};
use crate::vault::{Backup, Item, OperationPhase, RecoveryPoint, Vault};
use crate::vm::{
    BackupPolicy, BackupSchedule, HealthStatus, JobOutcome, JobStatus, RecoveryPointSource,
};

/// `lastBackupTime` of an item never backed up.
const NEVER_BACKED_UP: &str = "2001-01-01T00:00:00Z";

/// The date policies write their times of day on (only the time counts).
const POLICY_DATE: &str = "2023-01-01";

/// `GET .../vaults/{vault}`: the vault resource (shape UNVERIFIED beyond id, name, type, location, sku).
pub(crate) fn vault(vault: &Vault, region: &str) -> Value {
    json!({
        "id": vault.id(),
        "name": vault.name,
        "type": "Microsoft.RecoveryServices/vaults",
        "location": region,
        "tags": {},
        "etag": "W/\"datetime'2023-01-01T00%3A00%3A00.0000000Z'\"",
        "sku": {"name": "RS0", "tier": "Standard"},
        "properties": {
            "provisioningState": "Succeeded",
            "privateEndpointStateForBackup": "None",
            "privateEndpointStateForSiteRecovery": "None",
            "publicNetworkAccess": "Enabled",
            "securitySettings": {
                "softDeleteSettings": {"softDeleteState": "Enabled", "softDeleteRetentionPeriodInDays": 14},
                "immutabilitySettings": {"state": "Disabled"}
            },
            "redundancySettings": {
                "standardTierStorageRedundancy": "GeoRedundant",
                "crossRegionRestore": "Disabled"
            }
        }
    })
}

/// A policy's id.
pub(crate) fn policy_id(vault: &Vault, name: &str) -> String {
    format!("{}/backupPolicies/{name}", vault.id())
}

/// A time of day on [`POLICY_DATE`], as policies write `scheduleRunTimes` and window starts.
fn time_of_day(time: NaiveTime) -> String {
    format!("{POLICY_DATE}T{}Z", time.format("%H:%M:%S"))
}

/// `GET .../backupPolicies/{name}`: an `AzureIaasVM` policy. Daily: `SimpleSchedulePolicy` (V1); hourly:
/// `SimpleSchedulePolicyV2` with `hourlySchedule` (V2, the enhanced policy; shape partly UNVERIFIED).
pub(crate) fn policy(vault: &Vault, policy: &BackupPolicy) -> Value {
    let (policy_type, schedule, retention_time) = match policy.schedule {
        BackupSchedule::Daily { at } => (
            "V1",
            json!({
                "schedulePolicyType": "SimpleSchedulePolicy",
                "scheduleRunFrequency": "Daily",
                "scheduleRunTimes": [time_of_day(at)],
                "scheduleWeeklyFrequency": 0
            }),
            at,
        ),
        BackupSchedule::Hourly {
            interval_hours,
            window_start,
            window_duration_hours,
        } => (
            "V2",
            json!({
                "schedulePolicyType": "SimpleSchedulePolicyV2",
                "scheduleRunFrequency": "Hourly",
                "hourlySchedule": {
                    "interval": interval_hours,
                    "scheduleWindowStartTime": time_of_day(window_start),
                    "scheduleWindowDuration": window_duration_hours
                }
            }),
            window_start,
        ),
    };
    json!({
        "id": policy_id(vault, &policy.name),
        "name": policy.name,
        "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
        "properties": {
            "backupManagementType": "AzureIaasVM",
            "policyType": policy_type,
            "instantRpRetentionRangeInDays": 2,
            "schedulePolicy": schedule,
            "retentionPolicy": {
                "retentionPolicyType": "LongTermRetentionPolicy",
                "dailySchedule": {
                    "retentionTimes": [time_of_day(retention_time)],
                    "retentionDuration": {"count": policy.retention_days, "durationType": "Days"}
                }
            },
            "timeZone": "UTC",
            "protectedItemsCount": vault.protected_by(&policy.name)
        }
    })
}

/// `GET .../protectedItems/{item}`: the `ProtectedItemResource` (§4.4), with `extendedInfo` when asked for.
pub(crate) fn protected_item(
    vault: &Vault,
    item: &Item,
    now: DateTime<Utc>,
    extended: bool,
) -> Value {
    let vm = item.reference();
    let spec = &item.spec;
    let protection_status = if spec.health_status == HealthStatus::Passed {
        "Healthy"
    } else {
        "Unhealthy"
    };
    let mut properties = json!({
        "friendlyName": spec.vm,
        "virtualMachineId": vm.vm_id(),
        "protectionStatus": protection_status,
        "protectionState": spec.protection_state.as_str(),
        "healthStatus": spec.health_status.as_str(),
        "lastBackupStatus": item.last_backup_status.clone().unwrap_or_default(),
        "lastBackupTime": item.last_backup_time.map_or_else(|| NEVER_BACKED_UP.to_owned(), iso),
        "protectedItemDataId": item.data_id.to_string(),
        "protectedItemType": "Microsoft.Compute/virtualMachines",
        "backupManagementType": "AzureIaasVM",
        "workloadType": "VM",
        "containerName": format!("iaasvmcontainerv2;{};{}", spec.vm_resource_group, spec.vm),
        "sourceResourceId": vm.vm_id(),
        "policyId": policy_id(vault, &spec.policy.name),
        "policyName": spec.policy.name,
        "lastRecoveryPoint": item.last_recovery_point(now).map(iso),
        "isScheduledForDeferredDelete": false
    });
    if extended {
        let live: Vec<&RecoveryPoint> = item.live_points(now).collect();
        properties["extendedInfo"] = json!({
            "recoveryPointCount": live.len(),
            "policyInconsistent": false,
            "oldestRecoveryPoint": live.iter().map(|p| p.time).min().map(iso),
        });
    }
    json!({
        "id": vm.item_id(),
        "name": vm.item_name(),
        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems",
        "properties": properties
    })
}

/// `GET .../operationsStatus/{id}` and `.../backupOperations/{id}`: the `OperationStatus`. `InProgress` has an
/// unset `endTime` and no `properties`; `Succeeded` carries `properties.jobId`; `Failed` an `error`.
pub(crate) fn operation_status(backup: &Backup) -> Value {
    let mut status = json!({
        "id": backup.operation_id,
        "name": backup.operation_id,
        "startTime": dotnet(backup.accepted_at),
    });
    match &backup.phase {
        OperationPhase::Running => {
            status["status"] = json!("InProgress");
            status["endTime"] = json!(UNSET);
        }
        OperationPhase::Succeeded => {
            status["status"] = json!("Succeeded");
            status["endTime"] = json!(dotnet(backup.operation_ends));
            status["properties"] = json!({
                "objectType": "OperationStatusJobExtendedInfo",
                "jobId": backup.job_id
            });
        }
        OperationPhase::Failed { code, message } => {
            status["status"] = json!("Failed");
            status["endTime"] = json!(dotnet(backup.operation_ends));
            status["error"] = json!({"code": code, "message": message});
        }
    }
    status
}

/// One task of a job's `extendedInfo.tasksList`.
fn task(
    name: &str,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    status: &str,
    now: DateTime<Utc>,
) -> Value {
    let duration = match (start, end) {
        (Some(start), Some(end)) => end - start,
        (Some(start), None) => now - start,
        _ => Duration::zero(),
    };
    json!({
        "taskId": name,
        "startTime": dotnet_or_unset(start),
        "endTime": dotnet_or_unset(end),
        "duration": iso_duration(duration),
        "status": status
    })
}

/// `GET .../backupJobs/{id}`: the `JobResource` of an `AzureIaaSVMJob` backup, as of `now`.
pub(crate) fn job(vault: &Vault, backup: &Backup, item: &Item, now: DateTime<Utc>) -> Value {
    let spec = &item.spec;
    let status = backup.job_status();
    let ended = backup.job_ended_at();
    let duration = ended.unwrap_or(now) - backup.accepted_at;
    let snapshot_done = now >= backup.snapshot_ends;
    let (snapshot_status, transfer_status) = match status {
        JobStatus::InProgress if snapshot_done => ("Completed", "InProgress"),
        JobStatus::InProgress => ("InProgress", "NotStarted"),
        JobStatus::Completed | JobStatus::CompletedWithWarnings => ("Completed", "Completed"),
        JobStatus::Failed => ("Failed", "NotStarted"),
        JobStatus::Cancelled => ("Cancelled", "NotStarted"),
    };
    let snapshot_end = (snapshot_done).then_some(backup.snapshot_ends);
    let transfer_start = (transfer_status != "NotStarted").then_some(backup.snapshot_ends);
    let transfer_end = (transfer_status == "Completed").then_some(backup.job_ends);
    let mut property_bag = json!({"VM Name": spec.vm});
    if status.made_a_point() {
        property_bag["Backup Size"] = json!("33854 MB");
    }
    let mut properties = json!({
        "jobType": "AzureIaaSVMJob",
        "actionsInfo": if status == JobStatus::InProgress { json!([1]) } else { json!([]) },
        "containerName": format!("iaasvmcontainerv2;{};{}", spec.vm_resource_group, spec.vm),
        "duration": iso_duration(duration),
        "virtualMachineVersion": "Compute",
        "extendedInfo": {
            "tasksList": [
                task("Take Snapshot", Some(backup.accepted_at), snapshot_end, snapshot_status, now),
                task("Transfer data to vault", transfer_start, transfer_end, transfer_status, now),
            ],
            "propertyBag": property_bag,
            "internalPropertyBag": {"IsInstantRpJob": "True"}
        },
        "entityFriendlyName": spec.vm,
        "backupManagementType": "AzureIaasVM",
        "operation": "Backup",
        "status": status.as_str(),
        "startTime": dotnet(backup.accepted_at),
        "endTime": dotnet_or_unset(ended),
        "activityId": backup.activity_id,
    });
    match (&backup.outcome, status) {
        (Some(JobOutcome::Failed { code, message }), JobStatus::Failed) => {
            properties["errorDetails"] = json!([{
                "errorCode": code,
                "errorString": message,
                "recommendations": ["Retry the operation after some time. If the issue persists, contact Microsoft support."]
            }]);
        }
        (Some(JobOutcome::CompletedWithWarnings), JobStatus::CompletedWithWarnings) => {
            properties["errorDetails"] = json!([{
                "errorCode": "UserErrorAppConsistentSnapshotFailed",
                "errorString": "An application-consistent snapshot could not be taken; the recovery point is crash consistent.",
                "recommendations": ["Check the backup extension on the VM and retry the backup."]
            }]);
        }
        _ => {}
    }
    json!({
        "id": format!("{}/backupJobs/{}", vault.id(), backup.job_id),
        "name": backup.job_id,
        "type": "Microsoft.RecoveryServices/vaults/backupJobs",
        "properties": properties
    })
}

/// One recovery point (`IaasVMRecoveryPoint`).
pub(crate) fn recovery_point(item: &Item, point: &RecoveryPoint) -> Value {
    let rule = match point.source {
        RecoveryPointSource::Policy => "Daily",
        RecoveryPointSource::OnDemand => "OnDemand",
    };
    json!({
        "id": format!("{}/recoveryPoints/{}", item.reference().item_id(), point.name),
        "name": point.name,
        "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints",
        "properties": {
            "objectType": "IaasVMRecoveryPoint",
            "recoveryPointType": point.kind,
            "recoveryPointTime": dotnet(point.time),
            "recoveryPointAdditionalInfo": "",
            "sourceVMStorageType": "NormalStorage",
            "isSourceVMEncrypted": false,
            "recoveryPointTierDetails": [
                {"type": "InstantRP", "status": "Valid"},
                {"type": "HardenedRP", "status": "Valid"}
            ],
            "isManagedVirtualMachine": true,
            "virtualMachineSize": "Standard_D2s_v3",
            "originalStorageAccountOption": false,
            "recoveryPointProperties": {
                "expiryTime": dotnet(point.expiry),
                "ruleName": rule,
                "isSoftDeleted": false
            }
        }
    })
}
