//! The JSON of `Microsoft.Backup.Admin` resources as the stamp's administrator ARM shows them (api-version
//! 2018-09-01 shapes, wire contracts §5 and §10): a backup location and a backup. Values the spec leaves open
//! (versions, the deployment id) are fixed emulator choices. Dates are written as the stamp (a .NET service)
//! writes them, with seven fractional digits and a `Z`; durations as .NET writes a `TimeSpan`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::backup_location::STACK_ROLES;
use crate::stack_state::{Location, StackBackup, Status};
use crate::timefmt::{dotnet, iso_duration};

/// `backupDataVersion` of every backup (emulator choice).
const BACKUP_DATA_VERSION: &str = "1.0.1";
/// `stampVersion` of every backup (emulator choice).
const STAMP_VERSION: &str = "1.2406.0.8";
/// `oemVersion` of every backup (emulator choice).
const OEM_VERSION: &str = "2.4.2406.1";

/// Units of `availableCapacity`, each 1024 times the one before.
const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];

/// `availableCapacity` as the stamp writes it: the bytes in the largest unit they reach (B, KB, MB, GB, TB;
/// 1024-based; TB at most), rounded half up to one decimal, the decimal left out when it is zero: `"60 GB"`,
/// `"29.6 TB"`, `"512 B"`. A value that rounds up to 1024 of a unit is written in the next one (`"1 MB"`).
pub(crate) fn capacity(bytes: u64) -> String {
    let tenths_in = |unit: u32| {
        let scale = 1024_u128.pow(unit);
        (u128::from(bytes) * 10 + scale / 2) / scale
    };
    let top = u32::try_from(UNITS.len() - 1).unwrap_or(0);
    let mut unit = 0;
    while unit < top && u128::from(bytes) >= 1024_u128.pow(unit + 1) {
        unit += 1;
    }
    let mut tenths = tenths_in(unit);
    if tenths >= 10_240 && unit < top {
        unit += 1;
        tenths = tenths_in(unit);
    }
    let name = UNITS[usize::try_from(unit).unwrap_or(0)];
    if tenths % 10 == 0 {
        format!("{} {name}", tenths / 10)
    } else {
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    }
}

/// `GET .../backupLocations/{location}`: the location, its `externalStoreDefault` without the password and the
/// certificate itself.
pub(crate) fn location(location: &Location) -> Value {
    let spec = &location.spec;
    json!({
        "id": spec.reference().location_id(),
        "name": spec.location,
        "type": "Microsoft.Backup.Admin/backupLocations",
        "location": spec.location,
        "tags": {},
        "properties": {
            "externalStoreDefault": {
                "path": spec.path,
                "userName": spec.user_name,
                "encryptionCertThumbprint": spec.encryption_cert_thumbprint,
                "backupFrequencyInHours": spec.frequency_hours,
                "backupRetentionPeriodInDays": spec.retention_days,
                "isBackupSchedulerEnabled": spec.scheduler_enabled,
                "availableCapacity": capacity(spec.available_bytes),
                "nextBackupTime": location.next_backup.filter(|_| spec.scheduler_enabled).map(dotnet),
                "lastBackupTime": location.last_backup.map(dotnet),
            }
        }
    })
}

/// One backup as the list shows it at `now` (the early `Succeeded` included).
pub(crate) fn backup(location: &Location, backup: &StackBackup, now: DateTime<Utc>) -> Value {
    let view = backup.view(now);
    let roles: Vec<Value> = STACK_ROLES
        .iter()
        .map(|role| {
            let status = if view.failed_roles.contains(role) {
                Status::Failed
            } else if view.status == Status::Running {
                Status::Running
            } else {
                Status::Succeeded
            };
            json!({"roleName": role, "status": status.as_str()})
        })
        .collect();
    json!({
        "id": location.spec.reference().backup_id(&backup.name),
        "name": format!("{}/{}", location.spec.location, backup.name),
        "type": "Microsoft.Backup.Admin/backupLocations/backups",
        "location": location.spec.location,
        "tags": {},
        "properties": {
            "backupInfo": {
                "backupDataVersion": BACKUP_DATA_VERSION,
                "roleStatus": roles,
                "status": view.status.as_str(),
                "createdDateTime": dotnet(backup.created),
                "timeTakenToCreate": view.time_taken.map(iso_duration),
                "deploymentID": location.deployment_id,
                "stampVersion": STAMP_VERSION,
                "oemVersion": OEM_VERSION,
                "isCloudRecoveryReady": view.status == Status::Succeeded,
                "encryptionCertThumbprint": backup.thumbprint,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_reads_like_the_stamp() {
        const GIB: u64 = 1 << 30;
        assert_eq!(capacity(60 * GIB), "60 GB");
        assert_eq!(capacity(50 * GIB), "50 GB");
        assert_eq!(capacity(29 * 1024 * GIB + 614 * GIB), "29.6 TB");
        assert_eq!(capacity(0), "0 B");
        assert_eq!(capacity(1023), "1023 B");
        assert_eq!(capacity(1536), "1.5 KB");
        assert_eq!(capacity(1024 * 1024 - 1), "1 MB");
        assert_eq!(capacity(GIB + GIB / 4), "1.3 GB", "1.25 rounds half up");
        assert_eq!(capacity(5000 * 1024 * GIB), "5000 TB");
        assert_eq!(capacity(u64::MAX), "16777216 TB");
    }
}
