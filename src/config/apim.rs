//! `kind = "apim"` targets: an Azure API Management service, backed up through Resource Manager into an
//! `azure_blob` storage. The raw model, its validation and its defaults, together (docs/configuration.md,
//! "`[[targets]]` (`kind = \"apim\"`)").

use std::time::Duration;

use serde::Deserialize;

use super::azure::BlobAccess;
use super::error::Problem;
use super::kind::{KindParts, KindSpec, RawKind, StorageConfig};
use super::raw::{RawPolicy, Section};
use super::restore::{RawDrill, RawStandby, RestoreParts};

/// The newest stable API Management api-version.
pub const DEFAULT_APIM_API_VERSION: &str = "2024-05-01";

/// Default backup name of `apim` targets.
pub const DEFAULT_APIM_BACKUP_NAME: &str = "{target}/{utc:%Y%m%dT%H%M%SZ}-{id}.apimbackup";

/// API Management deletes nothing, but refuses to restore a backup older than this.
pub const APIM_EXPIRY: Duration = Duration::from_hours(720);

/// Default overall deadline of an API Management backup: real ones have polled for hours.
pub const DEFAULT_APIM_TIMEOUT: Duration = Duration::from_hours(6);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApimTarget {
    name: String,
    storage: String,
    subscription_id: String,
    resource_group: String,
    service: String,
    api_version: Option<String>,
    backup_name: Option<String>,
    #[serde(default)]
    restore_into: Vec<Section<RawRestoreInto>>,
    standby: Option<Section<RawStandby>>,
    drill: Option<Section<RawDrill>>,
    #[serde(default)]
    policy: Section<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestoreInto {
    name: String,
    service: String,
    subscription_id: Option<String>,
    resource_group: Option<String>,
}

/// A service a backup may be restored into besides the target's own (`[[targets.restore_into]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreInto {
    /// What `--into`, `standby.into` and `drill.into` call it.
    pub name: String,
    /// Subscription id (the target's unless given).
    pub subscription_id: String,
    /// Resource group (the target's unless given).
    pub resource_group: String,
    /// Service name.
    pub service: String,
}

/// An `apim` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApimSpec {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Service name.
    pub service: String,
    /// api-version of the backup requests.
    pub api_version: String,
    /// Where a backup may be restored besides the service itself.
    pub restore_into: Vec<RestoreInto>,
}

impl ApimSpec {
    /// The service's ARM path, without the endpoint.
    #[must_use]
    pub fn resource_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            self.subscription_id, self.resource_group, self.service
        )
    }

    /// Whether the api-version predates `accessType` (2021-04-01-preview): then the request has exactly the four
    /// fields of the old contract and only an access key can be used.
    #[must_use]
    pub fn legacy_body(&self) -> bool {
        legacy_api_version(&self.api_version)
    }
}

fn legacy_api_version(version: &str) -> bool {
    version.get(..10).is_some_and(|date| date < "2021-04-01")
}

fn valid_api_version(version: &str) -> bool {
    let (date, rest) = version.split_at(version.len().min(10));
    let digits = date.char_indices().all(|(i, c)| {
        if i == 4 || i == 7 {
            c == '-'
        } else {
            c.is_ascii_digit()
        }
    });
    date.len() == 10 && digits && (rest.is_empty() || rest == "-preview")
}

/// Validates what only an `apim` target has. `access` is the target's storage's access mode, when that storage
/// is a valid `azure_blob` one.
fn validate_spec(
    raw: &RawApimTarget,
    path: &str,
    access: Option<&BlobAccess>,
    problems: &mut Vec<Problem>,
) -> ApimSpec {
    let segment = |value: &str, key: &str, problems: &mut Vec<Problem>| {
        if value.trim().is_empty() || value.contains(['/', '?', '#', ' ']) {
            problems.push(Problem::at(
                format!("{path}.{key}"),
                format!("invalid {key} {value:?}"),
            ));
        }
    };
    segment(&raw.subscription_id, "subscription_id", problems);
    segment(&raw.resource_group, "resource_group", problems);
    segment(&raw.service, "service", problems);
    let api_version = raw
        .api_version
        .clone()
        .unwrap_or_else(|| DEFAULT_APIM_API_VERSION.to_owned());
    if !valid_api_version(&api_version) {
        problems.push(Problem::at(
            format!("{path}.api_version"),
            format!(
                "invalid api-version {api_version:?}: write e.g. \"{DEFAULT_APIM_API_VERSION}\" or \
                 \"2021-04-01-preview\""
            ),
        ));
    } else if legacy_api_version(&api_version)
        && let Some(access) = access
        && !matches!(access, BlobAccess::AccessKey(_))
    {
        problems.push(Problem::at(
            format!("{path}.api_version"),
            format!(
                "api-version {api_version} predates managed-identity access (2021-04-01-preview): storage {:?} \
                 has access = {:?}; use api_version = \"{DEFAULT_APIM_API_VERSION}\" or access = \"access_key\"",
                raw.storage,
                access.kind()
            ),
        ));
    }
    let mut restore_into: Vec<RestoreInto> = Vec::new();
    for (index, into) in raw.restore_into.iter().enumerate() {
        let into_path = format!("{path}.restore_into[{index}]");
        if into.name.trim().is_empty() {
            problems.push(Problem::at(
                format!("{into_path}.name"),
                "must not be empty",
            ));
        } else if restore_into.iter().any(|known| known.name == into.name) {
            problems.push(Problem::at(
                format!("{into_path}.name"),
                format!("restore destination {:?} is named twice", into.name),
            ));
        }
        let destination = RestoreInto {
            name: into.name.clone(),
            subscription_id: into
                .subscription_id
                .clone()
                .unwrap_or_else(|| raw.subscription_id.clone()),
            resource_group: into
                .resource_group
                .clone()
                .unwrap_or_else(|| raw.resource_group.clone()),
            service: into.service.clone(),
        };
        segment(
            &destination.subscription_id,
            &format!("restore_into[{index}].subscription_id"),
            problems,
        );
        segment(
            &destination.resource_group,
            &format!("restore_into[{index}].resource_group"),
            problems,
        );
        segment(
            &destination.service,
            &format!("restore_into[{index}].service"),
            problems,
        );
        if destination
            .subscription_id
            .eq_ignore_ascii_case(&raw.subscription_id)
            && destination
                .resource_group
                .eq_ignore_ascii_case(&raw.resource_group)
            && destination.service.eq_ignore_ascii_case(&raw.service)
        {
            problems.push(Problem::at(
                format!("{into_path}.service"),
                "is the target's own service: restore over it with `rpod restore` and no --into (it asks for \
                 --yes), never as a named destination",
            ));
        }
        restore_into.push(destination);
    }
    ApimSpec {
        subscription_id: raw.subscription_id.clone(),
        resource_group: raw.resource_group.clone(),
        service: raw.service.clone(),
        api_version,
        restore_into,
    }
}

impl KindSpec for ApimSpec {
    fn storage_kind(&self) -> &'static str {
        "azure_blob"
    }

    fn reaches_azure(&self) -> bool {
        true
    }

    fn detects_changes(&self) -> bool {
        true
    }

    fn event_grid_resource(&self) -> Option<String> {
        Some(self.resource_path())
    }
}

impl RawKind for RawApimTarget {
    type Spec = ApimSpec;

    fn name(&self) -> &str {
        &self.name
    }

    fn storage(&self) -> Option<&str> {
        Some(&self.storage)
    }

    fn policy(&self) -> &RawPolicy {
        &self.policy
    }

    fn validate(
        &self,
        path: &str,
        storage: Option<&StorageConfig>,
        problems: &mut Vec<Problem>,
    ) -> KindParts<ApimSpec> {
        let access = match storage {
            Some(StorageConfig::AzureBlob(blob)) => Some(&blob.access),
            _ => None,
        };
        KindParts {
            kind: Some(validate_spec(self, path, access, problems)),
            template: self
                .backup_name
                .clone()
                .unwrap_or_else(|| DEFAULT_APIM_BACKUP_NAME.to_owned()),
            template_key: "backup_name",
            timeout: DEFAULT_APIM_TIMEOUT,
            max_expiry: Some((
                APIM_EXPIRY,
                "API Management backups cannot be restored after 30 days",
            )),
            restore: RestoreParts {
                drill: self.drill.as_ref().map(|d| d.0.clone()),
                standby: self.standby.as_ref().map(|s| s.0.clone()),
                destinations: self.restore_into.iter().map(|i| i.name.clone()).collect(),
                drill_into: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_before_2021_04_01_use_the_legacy_body() {
        assert!(legacy_api_version("2020-12-01"));
        assert!(legacy_api_version("2021-01-01-preview"));
        assert!(!legacy_api_version("2021-04-01-preview"));
        assert!(!legacy_api_version("2024-05-01"));
        assert!(valid_api_version("2021-04-01-preview"));
        assert!(!valid_api_version("2021-4-1"));
        assert!(!valid_api_version("latest"));
    }
}
