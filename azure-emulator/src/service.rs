//! One hosted API Management service: its changing state (etag, provisioning state, change dates, content and
//! settings) and its JSON as ARM shows it (`GET .../service/{name}` and `.../tenant/configuration/syncState`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::config::ServiceSpec;
use crate::settings::{self, CustomHostname, VirtualNetworkType};

/// A read-only snapshot of a hosted service, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The service's settings: what it was created with, as changed since by the `Emulator::set_*` methods (or
    /// the control endpoints) and, for [`ServiceSpec::apis`] and [`ServiceSpec::products`], by completed
    /// restores.
    pub spec: ServiceSpec,
    /// Current etag (unquoted, e.g. `AAAAAAAAAAE=`).
    pub etag: String,
    /// `Succeeded`, or `Updating` while a backup or restore runs.
    pub provisioning_state: String,
    /// `systemData.lastModifiedAt`: moved, with the etag, when a backup or restore is accepted, again when it
    /// completes, and by [`crate::Emulator::make_change`].
    pub last_modified_at: DateTime<Utc>,
    /// `configurationChangeDate` of the sync state: moved by completed restores and `make_change`, set by
    /// [`crate::Emulator::set_configuration_change_date`]; never moved by backups.
    pub configuration_change_date: DateTime<Utc>,
    /// Backups completed successfully.
    pub backups_taken: u32,
    /// Restores completed successfully.
    pub restores_completed: u32,
}

/// The configuration a backup carries and a restore replaces: how many APIs and products a service has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Content {
    pub(crate) apis: u32,
    pub(crate) products: u32,
}

/// A hosted service's state.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) spec: ServiceSpec,
    /// When the developer portal's current revision was published (meaningful while `spec.portal_published`).
    portal_published_at: DateTime<Utc>,
    etag_counter: u64,
    created_at: DateTime<Utc>,
    last_modified_at: DateTime<Utc>,
    configuration_change_date: DateTime<Utc>,
    sync_date: DateTime<Utc>,
    /// The backup or restore currently running, if any.
    pub(crate) busy_with: Option<String>,
    backups_taken: u32,
    restores_completed: u32,
}

impl Service {
    /// A service created at `now`, in sync, idle.
    pub(crate) fn new(spec: ServiceSpec, now: DateTime<Utc>) -> Self {
        Self {
            spec,
            portal_published_at: now,
            etag_counter: 1,
            created_at: now,
            last_modified_at: now,
            configuration_change_date: now,
            sync_date: now,
            busy_with: None,
            backups_taken: 0,
            restores_completed: 0,
        }
    }

    /// The etag ARM shows: base64 of a big-endian counter, like Azure's `AAAAAAAHZ5U=`.
    pub(crate) fn etag(&self) -> String {
        BASE64.encode(self.etag_counter.to_be_bytes())
    }

    /// A service-level (ARM resource) modification at `now`: new etag and `lastModifiedAt`.
    pub(crate) fn touch(&mut self, now: DateTime<Utc>) {
        self.etag_counter += 1;
        self.last_modified_at = now;
    }

    /// A configuration change at `now`: everything [`Self::touch`] does, plus `configurationChangeDate`.
    pub(crate) fn change_configuration(&mut self, now: DateTime<Utc>) {
        self.touch(now);
        self.configuration_change_date = now;
    }

    /// Sets `configurationChangeDate` alone: a configuration change that the ARM resource does not show, so the
    /// etag and `lastModifiedAt` stay.
    pub(crate) fn set_configuration_change_date(&mut self, at: DateTime<Utc>) {
        self.configuration_change_date = at;
    }

    /// An accepted backup or restore (`what` names it) at `now`: the service goes to `Updating`, which like any
    /// ARM action on the resource moves its etag and `lastModifiedAt`. The configuration does not change.
    pub(crate) fn accept_operation(&mut self, what: String, now: DateTime<Utc>) {
        self.busy_with = Some(what);
        self.touch(now);
    }

    /// A completed backup at `now`.
    pub(crate) fn backed_up(&mut self, now: DateTime<Utc>) {
        self.touch(now);
        self.backups_taken += 1;
    }

    /// A completed restore at `now` of a backup carrying `content`: the configuration is replaced. Nothing a
    /// backup does not carry changes: the developer portal's publication, custom hostnames, the managed identity
    /// and the virtual network stay as they are.
    pub(crate) fn restored(&mut self, now: DateTime<Utc>, content: Content) {
        self.change_configuration(now);
        self.spec.apis = content.apis;
        self.spec.products = content.products;
        self.restores_completed += 1;
    }

    /// The configuration a backup taken now would carry.
    pub(crate) fn content(&self) -> Content {
        Content {
            apis: self.spec.apis,
            products: self.spec.products,
        }
    }

    /// Sets the API and product counts at `now`. When they differ from the current ones this is a configuration
    /// change that the ARM resource does not show: `configurationChangeDate` moves, the etag and
    /// `lastModifiedAt` stay.
    pub(crate) fn set_content(&mut self, content: Content, now: DateTime<Utc>) {
        if content != self.content() {
            self.spec.apis = content.apis;
            self.spec.products = content.products;
            self.configuration_change_date = now;
        }
    }

    /// Publishes the developer portal at `now` (a new current revision, unless one is already published), or
    /// unpublishes it (no revision at all, as on a service whose portal was never published). No change signal
    /// moves.
    pub(crate) fn set_portal_published(&mut self, published: bool, now: DateTime<Utc>) {
        if published && !self.spec.portal_published {
            self.portal_published_at = now;
        }
        self.spec.portal_published = published;
    }

    /// When the current developer portal revision was published, if there is one.
    pub(crate) fn portal_revision(&self) -> Option<DateTime<Utc>> {
        self.spec
            .portal_published
            .then_some(self.portal_published_at)
    }

    /// Adds or replaces a custom hostname at `now`: an update of the ARM resource (etag and `lastModifiedAt`
    /// move).
    pub(crate) fn set_custom_hostname(&mut self, hostname: CustomHostname, now: DateTime<Utc>) {
        self.spec.set_custom_hostname(hostname);
        self.touch(now);
    }

    /// Sets the managed identities at `now`: an update of the ARM resource (etag and `lastModifiedAt` move).
    pub(crate) fn set_identity(
        &mut self,
        system_assigned: bool,
        user_assigned_client_ids: Vec<String>,
        now: DateTime<Utc>,
    ) {
        self.spec.system_identity = system_assigned;
        self.spec.user_identity_client_ids = user_assigned_client_ids;
        self.touch(now);
    }

    /// Sets the virtual network type at `now`: an update of the ARM resource (etag and `lastModifiedAt` move).
    pub(crate) fn set_virtual_network_type(
        &mut self,
        kind: VirtualNetworkType,
        now: DateTime<Utc>,
    ) {
        self.spec.virtual_network_type = kind;
        self.touch(now);
    }

    fn provisioning_state(&self) -> &'static str {
        if self.busy_with.is_some() {
            "Updating"
        } else {
            "Succeeded"
        }
    }

    /// Whether the SKU cannot be backed up or restored (Consumption and the v2 tiers).
    pub(crate) fn tier_lacks_backup(&self) -> bool {
        let sku = self.spec.sku.to_ascii_lowercase();
        sku == "consumption" || sku.ends_with("v2")
    }

    /// The snapshot handed to tests.
    pub(crate) fn snapshot(&self) -> ServiceState {
        ServiceState {
            spec: self.spec.clone(),
            etag: self.etag(),
            provisioning_state: self.provisioning_state().to_owned(),
            last_modified_at: self.last_modified_at,
            configuration_change_date: self.configuration_change_date,
            backups_taken: self.backups_taken,
            restores_completed: self.restores_completed,
        }
    }

    /// The `ApiManagementServiceResource` JSON, shaped like a real `GET .../service/{name}` answer.
    pub(crate) fn resource_json(&self, region: &str) -> Value {
        let spec = &self.spec;
        let name = &spec.name;
        let state = self.provisioning_state();
        let in_network = spec.virtual_network_type != VirtualNetworkType::None;
        let target_state = if self.busy_with.is_some() {
            "Updating"
        } else {
            ""
        };
        json!({
            "id": spec.resource_id(),
            "name": name,
            "type": "Microsoft.ApiManagement/service",
            "tags": {},
            "location": region_display_name(region),
            "etag": self.etag(),
            "properties": {
                "publisherEmail": "apim@contoso.example",
                "publisherName": "Contoso",
                "notificationSenderEmail": "apimgmt-noreply@mail.windowsazure.com",
                "provisioningState": state,
                "targetProvisioningState": target_state,
                "createdAtUtc": iso(self.created_at),
                "gatewayUrl": format!("https://{name}.azure-api.net"),
                "gatewayRegionalUrl": format!("https://{name}-{region}-01.regional.azure-api.net"),
                "portalUrl": format!("https://{name}.portal.azure-api.net"),
                "developerPortalUrl": format!("https://{name}.developer.azure-api.net"),
                "managementApiUrl": format!("https://{name}.management.azure-api.net"),
                "scmUrl": format!("https://{name}.scm.azure-api.net"),
                "hostnameConfigurations": settings::hostname_configurations(name, &spec.custom_hostnames),
                "publicIPAddresses": ["203.0.113.10"],
                "privateIPAddresses": in_network.then(|| json!(["10.0.0.4"])),
                "additionalLocations": null,
                "virtualNetworkConfiguration": settings::virtual_network_configuration(
                    spec.virtual_network_type,
                    &spec.subscription,
                    &spec.resource_group,
                ),
                "customProperties": {},
                "virtualNetworkType": spec.virtual_network_type.as_str(),
                "disableGateway": false,
                "natGatewayState": "Disabled",
                "apiVersionConstraint": {"minApiVersion": null},
                "publicNetworkAccess": "Enabled",
                "developerPortalStatus": "Enabled",
                "platformVersion": if self.tier_lacks_backup() { "mtv1" } else { "stv2" }
            },
            "sku": {"name": spec.sku, "capacity": spec.capacity},
            "identity": self.identity_json(),
            "systemData": {
                "createdBy": "emulator@contoso.example",
                "createdByType": "User",
                "createdAt": iso(self.created_at),
                "lastModifiedBy": "emulator@contoso.example",
                "lastModifiedByType": "User",
                "lastModifiedAt": iso(self.last_modified_at)
            },
            "zones": null
        })
    }

    fn identity_json(&self) -> Value {
        let spec = &self.spec;
        let kind = match (
            spec.system_identity,
            spec.user_identity_client_ids.is_empty(),
        ) {
            (true, true) => "SystemAssigned",
            (true, false) => "SystemAssigned, UserAssigned",
            (false, false) => "UserAssigned",
            (false, true) => return json!({"type": "None"}),
        };
        let mut identity =
            json!({"type": kind, "tenantId": "00000000-0000-0000-0000-000000000000"});
        if spec.system_identity {
            identity["principalId"] = json!("11111111-1111-1111-1111-111111111111");
        }
        if !spec.user_identity_client_ids.is_empty() {
            let users: serde_json::Map<String, Value> = spec
                .user_identity_client_ids
                .iter()
                .enumerate()
                .map(|(i, client_id)| {
                    let id = format!(
                        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/identity-{i}",
                        spec.subscription, spec.resource_group
                    );
                    (id, json!({"principalId": format!("principal-{i}"), "clientId": client_id}))
                })
                .collect();
            identity["userAssignedIdentities"] = Value::Object(users);
        }
        identity
    }

    /// The `TenantConfigurationSyncStateContract` JSON.
    pub(crate) fn sync_state_json(&self) -> Value {
        json!({
            "id": format!("{}/tenant/configuration/syncState", self.spec.resource_id()),
            "type": "Microsoft.ApiManagement/service/tenant/syncState",
            "name": "syncState",
            "properties": {
                "branch": "master",
                "commitId": format!("{:040x}", self.etag_counter),
                "isExport": true,
                "isSynced": self.sync_date >= self.configuration_change_date,
                "isGitEnabled": false,
                "syncDate": iso(self.sync_date),
                "configurationChangeDate": iso(self.configuration_change_date),
                "lastOperationId": null
            }
        })
    }
}

/// ISO 8601 in UTC with a `Z`, as ARM writes dates.
pub(crate) fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The display name ARM puts in `location` for a region id.
fn region_display_name(region: &str) -> String {
    match region {
        "westeurope" => "West Europe".to_owned(),
        "northeurope" => "North Europe".to_owned(),
        "westcentralus" => "West Central US".to_owned(),
        "eastus" => "East US".to_owned(),
        "westus" => "West US".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_look_like_azure_and_move_on_touch() {
        let now = Utc::now();
        let mut service = Service::new(ServiceSpec::new("s", "rg", "svc"), now);
        assert_eq!(service.etag(), "AAAAAAAAAAE=");
        service.backed_up(now);
        assert_eq!(service.etag(), "AAAAAAAAAAI=");
        assert_eq!(service.snapshot().configuration_change_date, now);
    }

    #[test]
    fn a_backup_moves_the_resource_when_accepted_and_when_completed_but_not_the_configuration() {
        let created = Utc::now();
        let mut service = Service::new(ServiceSpec::new("s", "rg", "svc"), created);
        let before = service.snapshot();

        let accepted_at = created + chrono::Duration::seconds(5);
        service.accept_operation("Backup op-1".to_owned(), accepted_at);
        let running = service.snapshot();
        assert_eq!(running.provisioning_state, "Updating");
        assert_ne!(running.etag, before.etag, "accepting moves the etag");
        assert_eq!(running.last_modified_at, accepted_at);
        assert_eq!(running.configuration_change_date, created);
        let resource = service.resource_json("westeurope");
        assert_eq!(resource["etag"], running.etag.as_str());
        assert_eq!(resource["properties"]["provisioningState"], "Updating");

        let completed_at = accepted_at + chrono::Duration::seconds(540);
        service.busy_with = None;
        service.backed_up(completed_at);
        let done = service.snapshot();
        assert_ne!(done.etag, running.etag, "completing moves it again");
        assert_eq!(done.last_modified_at, completed_at);
        assert_eq!(
            done.configuration_change_date, created,
            "a backup changes no configuration"
        );
        assert_eq!(
            service.resource_json("westeurope")["etag"],
            done.etag.as_str()
        );
        assert_eq!(
            service.sync_state_json()["properties"]["configurationChangeDate"],
            iso(created)
        );
    }

    #[test]
    fn a_restore_moves_the_resource_when_accepted_and_the_configuration_when_completed() {
        let created = Utc::now();
        let mut service = Service::new(ServiceSpec::new("s", "rg", "svc"), created);
        let accepted_at = created + chrono::Duration::seconds(5);
        service.accept_operation("Restore op-1".to_owned(), accepted_at);
        let running = service.snapshot();
        assert_eq!(running.configuration_change_date, created);
        assert_eq!(running.last_modified_at, accepted_at);

        let completed_at = accepted_at + chrono::Duration::seconds(1800);
        service.busy_with = None;
        service.restored(
            completed_at,
            Content {
                apis: 7,
                products: 3,
            },
        );
        let done = service.snapshot();
        assert_ne!(done.etag, running.etag);
        assert_eq!(done.last_modified_at, completed_at);
        assert_eq!(done.configuration_change_date, completed_at);
        assert_eq!((done.spec.apis, done.spec.products), (7, 3));
        assert_eq!(done.restores_completed, 1);
    }

    #[test]
    fn a_new_service_looks_like_a_fresh_api_management() {
        let service = Service::new(ServiceSpec::new("s", "rg", "svc"), Utc::now());
        let spec = &service.snapshot().spec;
        assert_eq!((spec.apis, spec.products), (1, 2));
        assert!(spec.portal_published && spec.custom_hostnames.is_empty());
        assert_eq!(spec.virtual_network_type, VirtualNetworkType::None);
        let resource = service.resource_json("westeurope");
        let properties = &resource["properties"];
        assert_eq!(resource["identity"]["type"], "SystemAssigned");
        assert!(resource["identity"]["principalId"].is_string());
        assert_eq!(properties["virtualNetworkType"], "None");
        assert_eq!(properties["virtualNetworkConfiguration"], Value::Null);
        assert_eq!(properties["privateIPAddresses"], Value::Null);
        assert_eq!(properties["developerPortalStatus"], "Enabled");
        let hostnames = properties["hostnameConfigurations"].as_array().unwrap();
        assert_eq!(hostnames.len(), 1);
        assert_eq!(hostnames[0]["hostName"], "svc.azure-api.net");
        assert_eq!(hostnames[0]["certificateSource"], "BuiltIn");
        assert!(service.portal_revision().is_some());
    }

    #[test]
    fn content_is_configuration_and_the_other_settings_are_the_arm_resource() {
        let created = Utc::now();
        let mut service = Service::new(ServiceSpec::new("s", "rg", "svc"), created);
        let before = service.snapshot();
        let later = created + chrono::Duration::seconds(10);

        let same = service.content();
        service.set_content(same, later);
        assert_eq!(service.snapshot(), before, "the same counts change nothing");
        let content = Content {
            apis: 3,
            products: 0,
        };
        service.set_content(content, later);
        let counted = service.snapshot();
        assert_eq!(service.content(), content);
        assert_eq!(counted.configuration_change_date, later);
        assert_eq!(
            (counted.etag.as_str(), counted.last_modified_at),
            (before.etag.as_str(), before.last_modified_at),
            "the ARM resource does not show content"
        );

        service.set_portal_published(false, later);
        assert_eq!(service.portal_revision(), None);
        let unpublished = service.snapshot();
        assert_eq!(
            (
                unpublished.etag.as_str(),
                unpublished.configuration_change_date
            ),
            (counted.etag.as_str(), counted.configuration_change_date),
            "publication moves no signal"
        );

        let even_later = later + chrono::Duration::seconds(10);
        for change in [
            |s: &mut Service, at| {
                s.set_custom_hostname(
                    CustomHostname::new("api.contoso.example", settings::CertificateSource::Custom),
                    at,
                );
            },
            |s: &mut Service, at| s.set_identity(false, Vec::new(), at),
            |s: &mut Service, at| s.set_virtual_network_type(VirtualNetworkType::External, at),
        ] {
            let etag = service.etag();
            change(&mut service, even_later);
            let after = service.snapshot();
            assert_ne!(after.etag, etag);
            assert_eq!(after.last_modified_at, even_later);
            assert_eq!(after.configuration_change_date, later);
        }
        let resource = service.resource_json("westeurope");
        assert_eq!(resource["identity"], json!({"type": "None"}));
        assert_eq!(resource["properties"]["virtualNetworkType"], "External");
        assert!(resource["properties"]["virtualNetworkConfiguration"].is_object());
        assert_eq!(
            resource["properties"]["privateIPAddresses"],
            json!(["10.0.0.4"])
        );
        assert_eq!(
            resource["properties"]["hostnameConfigurations"][1]["certificateSource"],
            "Custom"
        );

        service.set_custom_hostname(
            CustomHostname::new("API.contoso.example", settings::CertificateSource::KeyVault),
            even_later,
        );
        assert_eq!(
            service.spec.custom_hostnames,
            [CustomHostname::new(
                "API.contoso.example",
                settings::CertificateSource::KeyVault
            )],
            "the same hostname is replaced"
        );
    }

    #[test]
    fn a_set_configuration_change_date_leaves_the_resource_alone() {
        let created = Utc::now();
        let mut service = Service::new(ServiceSpec::new("s", "rg", "svc"), created);
        let before = service.snapshot();
        let at = created + chrono::Duration::hours(1);
        service.set_configuration_change_date(at);
        let after = service.snapshot();
        assert_eq!(after.configuration_change_date, at);
        assert_eq!(
            (after.etag.as_str(), after.last_modified_at),
            (before.etag.as_str(), before.last_modified_at)
        );
        let sync = service.sync_state_json();
        assert_eq!(sync["properties"]["configurationChangeDate"], iso(at));
        assert_eq!(sync["properties"]["isSynced"], false);
    }

    #[test]
    fn consumption_and_v2_tiers_lack_backup() {
        let spec = |sku| ServiceSpec::new("s", "rg", "svc").with_sku(sku, 1);
        for (sku, lacks) in [
            ("Developer", false),
            ("Premium", false),
            ("Consumption", true),
            ("StandardV2", true),
            ("BasicV2", true),
        ] {
            assert_eq!(
                Service::new(spec(sku), Utc::now()).tier_lacks_backup(),
                lacks,
                "{sku}"
            );
        }
    }
}
