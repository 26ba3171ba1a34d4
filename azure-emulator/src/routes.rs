//! Which endpoint a request path names, parsed by hand: ARM paths are case-insensitive and a real Azure
//! `Location` contained `//operationresults/`, which a framework router would not match. Empty segments
//! (double slashes) are skipped anywhere and segments are percent-decoded.

use crate::backup_location::BackupLocationRef;
use crate::fault::Route;
use crate::vm::ProtectedVmRef;

/// The endpoint a path names (the method is checked by the handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/{tenant}/oauth2/v2.0/token`.
    EntraToken { tenant: String },
    /// `/msi/token` (App Service managed identity).
    AppServiceToken,
    /// `/metadata/identity/oauth2/token` (IMDS).
    ImdsToken,
    /// `/metadata/endpoints`: an Azure Stack Hub stamp's endpoint discovery.
    StackMetadata,
    /// `/adfs/oauth2/token`: an Azure Stack Hub stamp's AD FS.
    AdfsToken,
    /// Under `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{name}`.
    Apim {
        service: ServicePath,
        action: Action,
    },
    /// Under `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}`
    /// (the vault's subscription, group and name in a [`ServicePath`]).
    RecoveryServices {
        vault: ServicePath,
        action: VaultAction,
    },
    /// Under `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Backup.Admin/backupLocations`: the
    /// subscription, group and location (empty for the collection itself) in a [`ServicePath`].
    BackupAdmin {
        location: ServicePath,
        action: StackAction,
    },
    /// Another path under `/subscriptions/`.
    OtherArm { subscription: String },
    /// Under `/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}`: the emulator's own control
    /// endpoints, not ARM (no token, no throttling, no faults).
    Control {
        service: ServicePath,
        action: Control,
    },
    /// `/emulator/subscriptions/{sub}/resourceGroups/{rg}/vaults/{vault}/protectedVms/{vmRg}/{vm}/{action}`:
    /// control endpoints for a protected VM.
    VmControl {
        vm: ProtectedVmRef,
        action: VmControl,
    },
    /// `/emulator/recoveryServices`: the Recovery Services knobs (durations, page size).
    RecoveryServicesSettings,
    /// `/emulator/subscriptions/{sub}/resourceGroups/{rg}/backupLocations/{location}/{action}`: control
    /// endpoints for an Azure Stack Hub backup location.
    StackControl {
        location: BackupLocationRef,
        action: StackControl,
    },
    /// Anything else.
    Unknown,
}

/// What is asked of a Recovery Services vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaultAction {
    /// The vault itself.
    Vault,
    /// `backupPolicies/{name}`.
    Policy { name: String },
    /// `backupJobs/{id}`.
    Job { id: String },
    /// `backupOperations/{id}`.
    Operation { id: String },
    /// `backupFabrics/Azure/protectionContainers/{container}/protectedItems/{item}/...`.
    Item {
        container: String,
        item: String,
        action: ItemAction,
    },
    /// Anything else under the vault.
    Other,
}

/// What is asked of a protected item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemAction {
    /// The item itself.
    Get,
    /// `backup`.
    Backup,
    /// `operationsStatus/{id}`.
    OperationStatus { id: String },
    /// `operationResults/{id}`.
    OperationResult { id: String },
    /// `recoveryPoints`.
    RecoveryPoints,
    /// `recoveryPoints/{id}`.
    RecoveryPoint { id: String },
    /// Anything else under the item.
    Other,
}

/// What is asked of `Microsoft.Backup.Admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StackAction {
    /// `backupLocations`: the collection.
    Locations,
    /// `backupLocations/{location}`.
    Location,
    /// `backupLocations/{location}/createBackup`.
    CreateBackup,
    /// `backupLocations/{location}/operationResults/{id}`.
    Operation { id: String },
    /// `backupLocations/{location}/backups`.
    Backups,
    /// `backupLocations/{location}/backups/{name}`.
    Backup { name: String },
    /// Anything else under the provider.
    Other,
}

/// What a control request does to a backup location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StackControl {
    /// `scheduler`, like [`crate::Emulator::set_backup_scheduler`].
    Scheduler,
    /// `shareCondition`, like [`crate::Emulator::set_share_condition`].
    ShareCondition,
    /// `encryptionCert`, like [`crate::Emulator::set_encryption_cert`].
    EncryptionCert,
    /// `availableCapacity`, like [`crate::Emulator::set_available_capacity`].
    AvailableCapacity,
    /// `failedRoles`, like [`crate::Emulator::fail_roles`].
    FailedRoles,
}

/// What a control request does to a protected VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmControl {
    /// `protectionState`, like [`crate::Emulator::set_protection_state`].
    ProtectionState,
    /// `healthStatus`, like [`crate::Emulator::set_health_status`].
    HealthStatus,
    /// `policyRecoveryPoints`, like [`crate::Emulator::add_policy_recovery_point`].
    PolicyRecoveryPoint,
}

impl VmControl {
    /// The method the endpoint takes.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Self::PolicyRecoveryPoint => "POST",
            _ => "PUT",
        }
    }
}

/// The service named by an ARM path, as written in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePath {
    pub(crate) subscription: String,
    pub(crate) resource_group: String,
    pub(crate) name: String,
}

/// What is asked of an API Management service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// The service itself.
    Get,
    /// `tenant/configuration/syncState`.
    SyncState,
    /// `backup`.
    Backup,
    /// `restore`.
    Restore,
    /// `operationresults/{id}`.
    Poll { operation_id: String },
    /// `apis`: the collection of APIs.
    Apis,
    /// `products`: the collection of products.
    Products,
    /// `portalRevisions`: the collection of developer portal revisions.
    PortalRevisions,
    /// Anything else under the service.
    Other,
}

/// What a control request does to a hosted service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// `change`: a configuration change now, like [`crate::Emulator::make_change`].
    Change,
    /// `configurationChangeDate`: set that date alone, like [`crate::Emulator::set_configuration_change_date`].
    ConfigurationChangeDate,
    /// `content`: the API and product counts, like [`crate::Emulator::set_content`].
    Content,
    /// `portalPublished`: like [`crate::Emulator::set_portal_published`].
    PortalPublished,
    /// `customHostname`: add or replace one, like [`crate::Emulator::set_custom_hostname`].
    CustomHostname,
    /// `identity`: like [`crate::Emulator::set_identity`].
    Identity,
    /// `virtualNetworkType`: like [`crate::Emulator::set_virtual_network_type`].
    VirtualNetworkType,
}

impl Control {
    /// The method the endpoint takes.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Self::Change => "POST",
            _ => "PUT",
        }
    }
}

impl Endpoint {
    /// The fault route a request on this endpoint belongs to; `None` for paths nothing can be injected on.
    pub(crate) fn route(&self) -> Option<Route> {
        match self {
            Self::EntraToken { .. } | Self::AppServiceToken | Self::ImdsToken | Self::AdfsToken => {
                Some(Route::Token)
            }
            Self::StackMetadata => Some(Route::StackMetadata),
            Self::BackupAdmin { action, .. } => Some(match action {
                StackAction::Locations | StackAction::Location => Route::StackLocation,
                StackAction::CreateBackup => Route::StackCreateBackup,
                StackAction::Operation { .. } => Route::StackOperation,
                StackAction::Backups | StackAction::Backup { .. } => Route::StackBackups,
                StackAction::Other => Route::AnyArm,
            }),
            Self::Apim { action, .. } => match action {
                Action::Get => Some(Route::GetService),
                Action::SyncState => Some(Route::SyncState),
                Action::Backup => Some(Route::Backup),
                Action::Restore => Some(Route::Restore),
                Action::Poll { .. } => Some(Route::Poll),
                Action::Apis => Some(Route::Apis),
                Action::Products => Some(Route::Products),
                Action::PortalRevisions => Some(Route::PortalRevisions),
                Action::Other => Some(Route::AnyArm),
            },
            Self::RecoveryServices { action, .. } => Some(match action {
                VaultAction::Job { .. } => Route::VmJob,
                VaultAction::Operation { .. } => Route::VmOperationStatus,
                VaultAction::Item { action, .. } => match action {
                    ItemAction::Get => Route::VmProtectedItem,
                    ItemAction::Backup => Route::VmBackup,
                    ItemAction::OperationStatus { .. } | ItemAction::OperationResult { .. } => {
                        Route::VmOperationStatus
                    }
                    ItemAction::RecoveryPoints | ItemAction::RecoveryPoint { .. } => {
                        Route::VmRecoveryPoints
                    }
                    ItemAction::Other => Route::AnyArm,
                },
                VaultAction::Vault | VaultAction::Policy { .. } | VaultAction::Other => {
                    Route::AnyArm
                }
            }),
            Self::OtherArm { .. } => Some(Route::AnyArm),
            Self::Control { .. }
            | Self::VmControl { .. }
            | Self::StackControl { .. }
            | Self::RecoveryServicesSettings
            | Self::Unknown => None,
        }
    }

    /// The subscription of an ARM endpoint.
    pub(crate) fn subscription(&self) -> Option<&str> {
        match self {
            Self::Apim { service, .. } => Some(&service.subscription),
            Self::RecoveryServices { vault, .. } => Some(&vault.subscription),
            Self::BackupAdmin { location, .. } => Some(&location.subscription),
            Self::OtherArm { subscription } => Some(subscription),
            _ => None,
        }
    }
}

/// Parses a request path (without its query).
pub(crate) fn parse(path: &str) -> Endpoint {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["msi", "token"] => Endpoint::AppServiceToken,
        ["metadata", "identity", "oauth2", "token"] => Endpoint::ImdsToken,
        ["metadata", "endpoints"] => Endpoint::StackMetadata,
        ["adfs", "oauth2", "token"] => Endpoint::AdfsToken,
        [_, "oauth2", "v2.0", "token"] => Endpoint::EntraToken {
            tenant: segments[0].clone(),
        },
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.apimanagement",
            "service",
            _,
            rest @ ..,
        ] => Endpoint::Apim {
            service: ServicePath {
                subscription: segments[1].clone(),
                resource_group: segments[3].clone(),
                name: segments[7].clone(),
            },
            action: match rest {
                [] => Action::Get,
                ["tenant", "configuration", "syncstate"] => Action::SyncState,
                ["backup"] => Action::Backup,
                ["restore"] => Action::Restore,
                ["operationresults", _] => Action::Poll {
                    operation_id: segments[9].clone(),
                },
                ["apis"] => Action::Apis,
                ["products"] => Action::Products,
                ["portalrevisions"] => Action::PortalRevisions,
                _ => Action::Other,
            },
        },
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.recoveryservices",
            "vaults",
            _,
            rest @ ..,
        ] => recovery_services(rest, &segments),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.backup.admin",
            "backuplocations",
            rest @ ..,
        ] => backup_admin(rest, &segments),
        ["emulator", ..] => emulator_control(&lower, &segments),
        ["subscriptions", ..] => Endpoint::OtherArm {
            subscription: segments.get(1).cloned().unwrap_or_default(),
        },
        _ => Endpoint::Unknown,
    }
}

/// Under `/emulator/`: the emulator's own control endpoints (`lower` and `segments` are the whole path).
fn emulator_control(lower: &[&str], segments: &[String]) -> Endpoint {
    match lower {
        ["emulator", "recoveryservices"] => Endpoint::RecoveryServicesSettings,
        [
            "emulator",
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "backuplocations",
            _,
            action,
        ] => stack_control(action, segments),
        [
            "emulator",
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "vaults",
            ..,
        ] => vm_control(lower, segments),
        [
            "emulator",
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "services",
            _,
            action,
        ] => {
            let action = match *action {
                "change" => Control::Change,
                "configurationchangedate" => Control::ConfigurationChangeDate,
                "content" => Control::Content,
                "portalpublished" => Control::PortalPublished,
                "customhostname" => Control::CustomHostname,
                "identity" => Control::Identity,
                "virtualnetworktype" => Control::VirtualNetworkType,
                _ => return Endpoint::Unknown,
            };
            Endpoint::Control {
                service: ServicePath {
                    subscription: segments[2].clone(),
                    resource_group: segments[4].clone(),
                    name: segments[6].clone(),
                },
                action,
            }
        }
        _ => Endpoint::Unknown,
    }
}

/// Under `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{vault}`: `rest`
/// (lower-cased) follows the vault's name.
fn recovery_services(rest: &[&str], segments: &[String]) -> Endpoint {
    Endpoint::RecoveryServices {
        vault: ServicePath {
            subscription: segments[1].clone(),
            resource_group: segments[3].clone(),
            name: segments[7].clone(),
        },
        action: vault_action(rest, &segments[8..]),
    }
}

/// Under `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Backup.Admin/backupLocations`: `rest`
/// (lower-cased) follows `backupLocations`.
fn backup_admin(rest: &[&str], segments: &[String]) -> Endpoint {
    let location = segments.get(7).cloned().unwrap_or_default();
    let action = match rest {
        [] => StackAction::Locations,
        [_] => StackAction::Location,
        [_, "createbackup"] => StackAction::CreateBackup,
        [_, "operationresults", _] => StackAction::Operation {
            id: segments[9].clone(),
        },
        [_, "backups"] => StackAction::Backups,
        [_, "backups", _] => StackAction::Backup {
            name: segments[9].clone(),
        },
        _ => StackAction::Other,
    };
    Endpoint::BackupAdmin {
        location: ServicePath {
            subscription: segments[1].clone(),
            resource_group: segments[3].clone(),
            name: location,
        },
        action,
    }
}

/// `/emulator/subscriptions/{sub}/resourceGroups/{rg}/backupLocations/{location}/{action}` (`action`
/// lower-cased).
fn stack_control(action: &str, segments: &[String]) -> Endpoint {
    let action = match action {
        "scheduler" => StackControl::Scheduler,
        "sharecondition" => StackControl::ShareCondition,
        "encryptioncert" => StackControl::EncryptionCert,
        "availablecapacity" => StackControl::AvailableCapacity,
        "failedroles" => StackControl::FailedRoles,
        _ => return Endpoint::Unknown,
    };
    Endpoint::StackControl {
        location: BackupLocationRef::new(&segments[2], &segments[4], &segments[6]),
        action,
    }
}

/// `/emulator/subscriptions/{sub}/resourceGroups/{rg}/vaults/{vault}/protectedVms/{vmRg}/{vm}/{action}`.
fn vm_control(lower: &[&str], segments: &[String]) -> Endpoint {
    let action = match lower {
        [_, _, _, _, _, _, _, "protectedvms", _, _, action] => match *action {
            "protectionstate" => VmControl::ProtectionState,
            "healthstatus" => VmControl::HealthStatus,
            "policyrecoverypoints" => VmControl::PolicyRecoveryPoint,
            _ => return Endpoint::Unknown,
        },
        _ => return Endpoint::Unknown,
    };
    Endpoint::VmControl {
        vm: ProtectedVmRef::new(
            &segments[2],
            &segments[4],
            &segments[6],
            &segments[8],
            &segments[9],
        ),
        action,
    }
}

/// What the path below a vault names: `lower` and `segments` (as written) start after the vault's name.
fn vault_action(lower: &[&str], segments: &[String]) -> VaultAction {
    match lower {
        [] => VaultAction::Vault,
        ["backuppolicies", _] => VaultAction::Policy {
            name: segments[1].clone(),
        },
        ["backupjobs", _] => VaultAction::Job {
            id: segments[1].clone(),
        },
        ["backupoperations", _] => VaultAction::Operation {
            id: segments[1].clone(),
        },
        [
            "backupfabrics",
            "azure",
            "protectioncontainers",
            _,
            "protecteditems",
            _,
            rest @ ..,
        ] => VaultAction::Item {
            container: segments[3].clone(),
            item: segments[5].clone(),
            action: match rest {
                [] => ItemAction::Get,
                ["backup"] => ItemAction::Backup,
                ["operationsstatus", _] => ItemAction::OperationStatus {
                    id: segments[7].clone(),
                },
                ["operationresults", _] => ItemAction::OperationResult {
                    id: segments[7].clone(),
                },
                ["recoverypoints"] => ItemAction::RecoveryPoints,
                ["recoverypoints", _] => ItemAction::RecoveryPoint {
                    id: segments[7].clone(),
                },
                _ => ItemAction::Other,
            },
        },
        _ => VaultAction::Other,
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str =
        "/subscriptions/S1/resourceGroups/RG/providers/Microsoft.ApiManagement/service/Svc";

    fn apim(action: Action) -> Endpoint {
        Endpoint::Apim {
            service: ServicePath {
                subscription: "S1".into(),
                resource_group: "RG".into(),
                name: "Svc".into(),
            },
            action,
        }
    }

    #[test]
    fn arm_paths_are_case_insensitive_and_accept_double_slashes() {
        assert_eq!(parse(SVC), apim(Action::Get));
        assert_eq!(parse(&SVC.to_uppercase()).route(), Some(Route::GetService));
        assert_eq!(parse(&format!("{SVC}/backup")), apim(Action::Backup));
        assert_eq!(parse(&format!("{SVC}/Restore")), apim(Action::Restore));
        assert_eq!(
            parse(&format!("{SVC}/tenant/configuration/syncState")),
            apim(Action::SyncState)
        );
        let poll = apim(Action::Poll {
            operation_id: "d2Vz==".into(),
        });
        assert_eq!(parse(&format!("{SVC}//operationresults/d2Vz==")), poll);
        assert_eq!(parse(&format!("{SVC}/operationResults/d2Vz%3D%3D")), poll);
        assert_eq!(parse(&format!("{SVC}/apis")), apim(Action::Apis));
        assert_eq!(parse(&format!("{SVC}/APIS")).route(), Some(Route::Apis));
        assert_eq!(parse(&format!("{SVC}/products")), apim(Action::Products));
        assert_eq!(
            parse(&format!("{SVC}/products")).route(),
            Some(Route::Products)
        );
        assert_eq!(
            parse(&format!("{SVC}/portalRevisions")),
            apim(Action::PortalRevisions)
        );
        assert_eq!(
            parse(&format!("{SVC}/portalrevisions")).route(),
            Some(Route::PortalRevisions)
        );
        assert_eq!(
            parse(&format!("{SVC}/apis/echo-api")).route(),
            Some(Route::AnyArm),
            "single entities are not served"
        );
        assert_eq!(
            parse("/subscriptions/S1/resourcegroups").subscription(),
            Some("S1")
        );
    }

    #[test]
    fn control_paths_are_case_insensitive_and_take_no_faults() {
        let control = |action| Endpoint::Control {
            service: ServicePath {
                subscription: "S1".into(),
                resource_group: "RG".into(),
                name: "Svc".into(),
            },
            action,
        };
        let base = "/emulator/subscriptions/S1/resourceGroups/RG/services/Svc";
        assert_eq!(parse(&format!("{base}/change")), control(Control::Change));
        assert_eq!(
            parse(&format!("{base}/configurationChangeDate")),
            control(Control::ConfigurationChangeDate)
        );
        for (segment, action) in [
            ("content", Control::Content),
            ("portalPublished", Control::PortalPublished),
            ("customHostname", Control::CustomHostname),
            ("identity", Control::Identity),
            ("virtualNetworkType", Control::VirtualNetworkType),
        ] {
            assert_eq!(parse(&format!("{base}/{segment}")), control(action));
            assert_eq!(action.method(), "PUT");
        }
        assert_eq!(Control::Change.method(), "POST");
        assert_eq!(
            parse("/EMULATOR/Subscriptions/S1/RESOURCEGROUPS/RG/Services/Svc/CHANGE"),
            control(Control::Change)
        );
        assert_eq!(
            parse(
                "/emulator//subscriptions/S1/resourcegroups/RG/services/Svc/configurationchangedate"
            ),
            control(Control::ConfigurationChangeDate)
        );
        assert_eq!(
            parse("/emulator/subscriptions/S%31/resourceGroups/RG/services/Svc/change"),
            control(Control::Change)
        );
        let endpoint = parse(&format!("{base}/change"));
        assert_eq!(endpoint.route(), None, "faults do not apply");
        assert_eq!(endpoint.subscription(), None, "not ARM");
        for unknown in [
            format!("{base}/other"),
            format!("{base}/change/more"),
            base.to_owned(),
            "/emulator/subscriptions/S1/resourceGroups/RG/services".to_owned(),
        ] {
            assert_eq!(parse(&unknown), Endpoint::Unknown, "{unknown}");
        }
    }

    #[test]
    fn recovery_services_paths_are_case_insensitive_and_decode_semicolons() {
        let vault = ServicePath {
            subscription: "S1".into(),
            resource_group: "RG".into(),
            name: "Vault".into(),
        };
        let base =
            "/Subscriptions/S1/resourcegroups/RG/providers/microsoft.recoveryservices/Vaults/Vault";
        let item = |action| Endpoint::RecoveryServices {
            vault: vault.clone(),
            action: VaultAction::Item {
                container: "IaasVMContainer;iaasvmcontainerv2;rg-vm;vm1".into(),
                item: "VM;iaasvmcontainerv2;rg-vm;vm1".into(),
                action,
            },
        };
        let encoded = format!(
            "{base}/backupFabrics/Azure/protectionContainers/IaasVMContainer%3Biaasvmcontainerv2%3Brg-vm%3Bvm1\
             /protectedItems/VM%3biaasvmcontainerv2%3Brg-vm%3Bvm1"
        );
        let raw = format!(
            "{base}/BACKUPFABRICS/azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg-vm;vm1\
             /protectedItems/VM;iaasvmcontainerv2;rg-vm;vm1"
        );
        for prefix in [&encoded, &raw] {
            assert_eq!(parse(prefix), item(ItemAction::Get));
            assert_eq!(parse(&format!("{prefix}/backup")), item(ItemAction::Backup));
            assert_eq!(
                parse(&format!("{prefix}/operationsStatus/Op1")),
                item(ItemAction::OperationStatus { id: "Op1".into() })
            );
            assert_eq!(
                parse(&format!("{prefix}/operationResults/Op1")),
                item(ItemAction::OperationResult { id: "Op1".into() })
            );
            assert_eq!(
                parse(&format!("{prefix}/recoveryPoints")),
                item(ItemAction::RecoveryPoints)
            );
            assert_eq!(
                parse(&format!("{prefix}/recoveryPoints/123")),
                item(ItemAction::RecoveryPoint { id: "123".into() })
            );
        }
        let routes = [
            (format!("{encoded}/backup"), Route::VmBackup),
            (
                format!("{encoded}/operationsStatus/x"),
                Route::VmOperationStatus,
            ),
            (
                format!("{encoded}/operationResults/x"),
                Route::VmOperationStatus,
            ),
            (
                format!("{base}/backupOperations/x"),
                Route::VmOperationStatus,
            ),
            (format!("{base}/backupJobs/x"), Route::VmJob),
            (format!("{encoded}/recoveryPoints"), Route::VmRecoveryPoints),
            (encoded.clone(), Route::VmProtectedItem),
            (
                format!("{base}/backupPolicies/DefaultPolicy"),
                Route::AnyArm,
            ),
            (base.to_owned(), Route::AnyArm),
            (format!("{encoded}/other"), Route::AnyArm),
        ];
        for (path, route) in routes {
            assert_eq!(parse(&path).route(), Some(route), "{path}");
            assert_eq!(parse(&path).subscription(), Some("S1"), "{path}");
        }
        assert_eq!(
            parse(&format!(
                "{base}/backupFabrics/Other/protectionContainers/c/protectedItems/i"
            )),
            Endpoint::RecoveryServices {
                vault,
                action: VaultAction::Other
            }
        );
        assert_eq!(
            parse("/emulator/recoveryServices"),
            Endpoint::RecoveryServicesSettings
        );
        assert_eq!(
            parse(
                "/emulator/subscriptions/S1/resourceGroups/RG/vaults/V/protectedVms/rg-vm/vm1/protectionState"
            ),
            Endpoint::VmControl {
                vm: ProtectedVmRef::new("S1", "RG", "V", "rg-vm", "vm1"),
                action: VmControl::ProtectionState
            }
        );
    }

    #[test]
    fn token_paths() {
        assert_eq!(
            parse("/tenant-1/oauth2/v2.0/token"),
            Endpoint::EntraToken {
                tenant: "tenant-1".into()
            }
        );
        assert_eq!(parse("/msi/token"), Endpoint::AppServiceToken);
        assert_eq!(
            parse("/metadata/identity/oauth2/token"),
            Endpoint::ImdsToken
        );
        assert_eq!(parse("/favicon.ico"), Endpoint::Unknown);
        assert_eq!(parse("/metadata/endpoints"), Endpoint::StackMetadata);
        assert_eq!(parse("/ADFS/oauth2/token"), Endpoint::AdfsToken);
        assert_eq!(parse("/adfs/oauth2/token").route(), Some(Route::Token));
        assert_eq!(
            parse("/metadata/endpoints").route(),
            Some(Route::StackMetadata)
        );
    }

    #[test]
    fn backup_admin_paths_are_case_insensitive() {
        const LOC: &str = "/Subscriptions/S1/resourcegroups/System.Local/providers/Microsoft.Backup.Admin/backupLocations";
        let at = |name: &str, action| Endpoint::BackupAdmin {
            location: ServicePath {
                subscription: "S1".into(),
                resource_group: "System.Local".into(),
                name: name.into(),
            },
            action,
        };
        assert_eq!(parse(LOC), at("", StackAction::Locations));
        assert_eq!(
            parse(&format!("{LOC}/Local")),
            at("Local", StackAction::Location)
        );
        assert_eq!(
            parse(&format!("{LOC}/local/CREATEBACKUP")),
            at("local", StackAction::CreateBackup)
        );
        assert_eq!(
            parse(&format!("{LOC}/local/operationResults/Op-1")),
            at("local", StackAction::Operation { id: "Op-1".into() })
        );
        assert_eq!(
            parse(&format!("{LOC}/local/backups")),
            at("local", StackAction::Backups)
        );
        assert_eq!(
            parse(&format!("{LOC}/local/backups/B-1")),
            at("local", StackAction::Backup { name: "B-1".into() })
        );
        let restore = parse(&format!("{LOC}/local/backups/b/restore"));
        assert_eq!(restore, at("local", StackAction::Other));
        assert_eq!(restore.route(), Some(Route::AnyArm));
        assert_eq!(parse(LOC).subscription(), Some("S1"));
        assert_eq!(
            parse(
                "/emulator/subscriptions/s/resourceGroups/rg/backupLocations/local/shareCondition"
            ),
            Endpoint::StackControl {
                location: BackupLocationRef::new("s", "rg", "local"),
                action: StackControl::ShareCondition,
            }
        );
        assert_eq!(
            parse("/emulator/subscriptions/s/resourceGroups/rg/backupLocations/local/other"),
            Endpoint::Unknown
        );
    }

    #[test]
    fn malformed_escapes_are_kept() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz%41"), "a%zzA");
    }
}
