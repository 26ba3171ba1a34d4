//! `kind = "recovery_services_vm"` targets: an Azure virtual machine protected by Azure Backup in a Recovery
//! Services vault. Its recovery points live in the vault (no `storage`); rpod triggers on-demand backups within a
//! daily budget and counts the vault's own policy backups. The raw model, its validation and its defaults,
//! together (docs/configuration.md, "`[[targets]]` (`kind = \"recovery_services_vm\"`)").

use std::time::Duration;

use serde::Deserialize;

use super::error::Problem;
use super::kind::{KindParts, KindSpec, RawKind, StorageConfig};
use super::raw::{RawPolicy, Section};
use super::restore::RestoreParts;

/// The newest stable api-version of Recovery Services backups; the calls rpod makes are the same from 2019-05-13 on.
pub const DEFAULT_RSV_API_VERSION: &str = "2026-02-01";

/// Default overall deadline of an on-demand VM backup: the snapshot and the transfer to the vault take hours.
pub const DEFAULT_RSV_TIMEOUT: Duration = Duration::from_hours(24);

/// On-demand backups per item and UTC day that rpod allows itself unless told otherwise (Azure recommends 3).
pub const DEFAULT_ON_DEMAND_PER_DAY: u32 = 3;

/// Azure's hard limit of on-demand backup attempts per item and UTC day.
pub const MAX_ON_DEMAND_PER_DAY: u32 = 9;

/// The longest expiry a vault recovery point may have (99 years).
const MAX_VAULT_EXPIRY: Duration = Duration::from_hours(99 * 365 * 24);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecoveryServicesVmTarget {
    name: String,
    subscription_id: String,
    vault_resource_group: String,
    vault: String,
    vm_resource_group: String,
    vm: String,
    container: Option<String>,
    protected_item: Option<String>,
    api_version: Option<String>,
    max_on_demand_per_day: Option<u32>,
    #[serde(default)]
    policy: Section<RawPolicy>,
}

/// A `recovery_services_vm` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryServicesVmSpec {
    /// Subscription of the vault.
    pub subscription_id: String,
    /// Resource group of the vault.
    pub vault_resource_group: String,
    /// Vault name.
    pub vault: String,
    /// The VM's name (for messages).
    pub vm: String,
    /// Protection container, e.g. `IaasVMContainer;iaasvmcontainerv2;rg;vm`.
    pub container: String,
    /// Protected item, e.g. `VM;iaasvmcontainerv2;rg;vm`.
    pub protected_item: String,
    /// api-version of the requests.
    pub api_version: String,
    /// On-demand backup attempts allowed per UTC day.
    pub max_on_demand_per_day: u32,
}

impl RecoveryServicesVmSpec {
    /// The vault's ARM path, without the endpoint.
    #[must_use]
    pub fn vault_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
            self.subscription_id, self.vault_resource_group, self.vault
        )
    }

    /// The protected item's ARM path, `;` percent-encoded as clients send it.
    #[must_use]
    pub fn item_path(&self) -> String {
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            self.vault_path(),
            self.container.replace(';', "%3B"),
            self.protected_item.replace(';', "%3B")
        )
    }
}

fn validate_spec(
    raw: &RawRecoveryServicesVmTarget,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<RecoveryServicesVmSpec> {
    let before = problems.len();
    for (key, value) in [
        ("subscription_id", &raw.subscription_id),
        ("vault_resource_group", &raw.vault_resource_group),
        ("vault", &raw.vault),
        ("vm_resource_group", &raw.vm_resource_group),
        ("vm", &raw.vm),
    ] {
        if value.trim().is_empty() || value.contains(['/', '?', '#', ' ', ';']) {
            problems.push(Problem::at(
                format!("{path}.{key}"),
                format!("invalid {key} {value:?}"),
            ));
        }
    }
    for (key, value) in [
        ("container", &raw.container),
        ("protected_item", &raw.protected_item),
    ] {
        if let Some(value) = value
            && (value.trim().is_empty() || value.contains(['/', '?', '#', ' ']))
        {
            problems.push(Problem::at(
                format!("{path}.{key}"),
                format!("invalid {key} {value:?}"),
            ));
        }
    }
    let budget = raw
        .max_on_demand_per_day
        .unwrap_or(DEFAULT_ON_DEMAND_PER_DAY);
    if budget == 0 || budget > MAX_ON_DEMAND_PER_DAY {
        problems.push(Problem::at(
            format!("{path}.max_on_demand_per_day"),
            format!(
                "must be 1 to {MAX_ON_DEMAND_PER_DAY}: Azure refuses more than {MAX_ON_DEMAND_PER_DAY} on-demand \
                 backups of an item per UTC day, and recommends 3"
            ),
        ));
    }
    let api_version = raw
        .api_version
        .clone()
        .unwrap_or_else(|| DEFAULT_RSV_API_VERSION.to_owned());
    if api_version.get(..10).is_none_or(|date| {
        !date.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
    }) {
        problems.push(Problem::at(
            format!("{path}.api_version"),
            format!(
                "invalid api-version {api_version:?}: write e.g. \"{DEFAULT_RSV_API_VERSION}\""
            ),
        ));
    }
    if problems.len() != before {
        return None;
    }
    let rg_vm = format!("iaasvmcontainerv2;{};{}", raw.vm_resource_group, raw.vm);
    Some(RecoveryServicesVmSpec {
        subscription_id: raw.subscription_id.clone(),
        vault_resource_group: raw.vault_resource_group.clone(),
        vault: raw.vault.clone(),
        vm: raw.vm.clone(),
        container: raw
            .container
            .clone()
            .unwrap_or_else(|| format!("IaasVMContainer;{rg_vm}")),
        protected_item: raw
            .protected_item
            .clone()
            .unwrap_or_else(|| format!("VM;{rg_vm}")),
        api_version,
        max_on_demand_per_day: budget,
    })
}

impl KindSpec for RecoveryServicesVmSpec {
    fn storage_kind(&self) -> &'static str {
        "vault"
    }

    fn reaches_azure(&self) -> bool {
        true
    }
}

impl RawKind for RawRecoveryServicesVmTarget {
    type Spec = RecoveryServicesVmSpec;

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
    ) -> KindParts<RecoveryServicesVmSpec> {
        KindParts {
            kind: validate_spec(self, path, problems),
            // The record's artifact becomes the recovery point's id once the vault made it.
            template: "{target}/{utc:%Y%m%dT%H%M%SZ}-{id}".to_owned(),
            template_key: "name",
            timeout: DEFAULT_RSV_TIMEOUT,
            max_expiry: Some((
                MAX_VAULT_EXPIRY,
                "a vault recovery point expires after 99 years at most",
            )),
            restore: RestoreParts::default(),
        }
    }
}
