//! `kind = "azure_stack_infra"` targets: the infrastructure backup of an Azure Stack Hub stamp, reached through
//! the stamp's administrator Resource Manager (an `[azure.profiles.NAME]`). The backups live on the stamp's
//! external share (no `storage`), and the stamp keeps them for its location's retention. In `trigger` mode rpod
//! starts them; in `watch` mode the stamp's own scheduler does and rpod only measures. The raw model, its
//! validation and its defaults, together (docs/configuration.md, "`[[targets]]` (`kind = \"azure_stack_infra\"`)").

use std::time::Duration;

use serde::Deserialize;

use super::duration::HumanDuration;
use super::error::Problem;
use super::kind::{KindParts, KindSpec, RawKind, StorageConfig};
use super::raw::{RawPolicy, Section};
use super::restore::RestoreParts;

/// The supported api-version of the Backup admin API (`2021-09-01` is a preview).
pub const DEFAULT_STACK_API_VERSION: &str = "2018-09-01";

/// Default overall deadline of one stamp backup: they take 20 to 40 minutes, and one may have to wait for
/// another.
pub const DEFAULT_STACK_TIMEOUT: Duration = Duration::from_hours(4);

/// How long a backup the stamp lists as done must stay listed so before rpod counts it, when no operation of
/// rpod's vouches for it: the stamp shows a backup as completed 10 to 15 minutes before it really ends.
pub const DEFAULT_STACK_SETTLE: Duration = Duration::from_mins(15);

/// Who starts the stamp's backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StackMode {
    /// rpod owns the cadence: it starts backups (the stamp's scheduler must be off).
    Trigger,
    /// The stamp's scheduler starts them; rpod never does and only measures.
    Watch,
}

impl StackMode {
    /// The `mode` as written in the file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Watch => "watch",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzureStackInfraTarget {
    name: String,
    azure_profile: String,
    region: String,
    subscription_id: String,
    resource_group: Option<String>,
    api_version: Option<String>,
    mode: Option<StackMode>,
    settle: Option<HumanDuration>,
    #[serde(default)]
    policy: Section<RawPolicy>,
}

/// An `azure_stack_infra` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureStackInfraSpec {
    /// The `[azure.profiles.NAME]` that reaches the stamp's administrator Resource Manager.
    pub azure_profile: String,
    /// The stamp's region, which is also the name of its backup location.
    pub region: String,
    /// The default provider subscription.
    pub subscription_id: String,
    /// The resource group of the backup location (`System.{region}`).
    pub resource_group: String,
    /// api-version of the requests.
    pub api_version: String,
    /// Who starts the backups.
    pub mode: StackMode,
    /// How long a listed backup that no operation of rpod's vouches for must stay listed as done before it counts.
    pub settle: Duration,
}

impl AzureStackInfraSpec {
    /// The backup location's ARM path, without the endpoint.
    #[must_use]
    pub fn location_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Backup.Admin/backupLocations/{}",
            self.subscription_id, self.resource_group, self.region
        )
    }
}

fn validate_spec(
    raw: &RawAzureStackInfraTarget,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<AzureStackInfraSpec> {
    let before = problems.len();
    let resource_group = raw
        .resource_group
        .clone()
        .unwrap_or_else(|| format!("System.{}", raw.region));
    for (key, value) in [
        ("azure_profile", &raw.azure_profile),
        ("region", &raw.region),
        ("subscription_id", &raw.subscription_id),
        ("resource_group", &resource_group),
    ] {
        if value.trim().is_empty() || value.contains(['/', '?', '#', ' ', ';', '%']) {
            problems.push(Problem::at(
                format!("{path}.{key}"),
                format!("invalid {key} {value:?}"),
            ));
        }
    }
    let api_version = raw
        .api_version
        .clone()
        .unwrap_or_else(|| DEFAULT_STACK_API_VERSION.to_owned());
    if !matches!(
        api_version.as_str(),
        "2016-05-01" | "2018-09-01" | "2021-09-01"
    ) {
        problems.push(Problem::at(
            format!("{path}.api_version"),
            format!(
                "unknown Backup admin api-version {api_version:?}: \"{DEFAULT_STACK_API_VERSION}\" is the supported \
                 one (\"2021-09-01\" is a preview)"
            ),
        ));
    }
    let mode = raw.mode.unwrap_or(StackMode::Trigger);
    if mode == StackMode::Watch {
        for (set, key) in [
            (raw.policy.schedule.is_some(), "schedule"),
            (raw.policy.on_change.is_some(), "on_change"),
        ] {
            if set {
                problems.push(Problem::at(
                    format!("{path}.policy.{key}"),
                    "mode = \"watch\" never starts a backup: the stamp's own scheduler does; remove it, or use \
                     mode = \"trigger\" and turn the stamp's scheduler off",
                ));
            }
        }
    }
    if raw.policy.expiry.is_some() {
        problems.push(Problem::at(
            format!("{path}.policy.expiry"),
            "the stamp keeps its backups for its backup location's backupRetentionPeriodInDays, which rpod \
             reads; remove expiry here (change the retention on the stamp)",
        ));
    }
    let settle = raw.settle.map_or(DEFAULT_STACK_SETTLE, |d| d.0);
    if problems.len() != before {
        return None;
    }
    Some(AzureStackInfraSpec {
        azure_profile: raw.azure_profile.clone(),
        region: raw.region.clone(),
        subscription_id: raw.subscription_id.clone(),
        resource_group,
        api_version,
        mode,
        settle,
    })
}

impl KindSpec for AzureStackInfraSpec {
    fn storage_kind(&self) -> &'static str {
        "share"
    }

    fn azure_profile(&self) -> Option<&str> {
        Some(&self.azure_profile)
    }
}

impl RawKind for RawAzureStackInfraTarget {
    type Spec = AzureStackInfraSpec;

    fn name(&self) -> &str {
        &self.name
    }

    fn storage(&self) -> Option<&str> {
        None
    }

    fn policy(&self) -> &RawPolicy {
        &self.policy
    }

    fn validate(
        &self,
        path: &str,
        _storage: Option<&StorageConfig>,
        problems: &mut Vec<Problem>,
    ) -> KindParts<AzureStackInfraSpec> {
        KindParts {
            kind: validate_spec(self, path, problems),
            // The record's artifact becomes the stamp's backup id once the backup ends.
            template: "{target}/{utc:%Y%m%dT%H%M%SZ}-{id}".to_owned(),
            template_key: "name",
            timeout: DEFAULT_STACK_TIMEOUT,
            max_expiry: None,
            restore: RestoreParts::default(),
        }
    }
}
