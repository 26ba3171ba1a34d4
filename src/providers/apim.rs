//! `apim` targets: API Management backups through Azure Resource Manager (docs/design.md, "Azure wire contracts").
//!
//! `POST .../service/{name}/backup` answers 202 with a `Location` to poll. The moment of that answer is the
//! recovery point; the operation is recorded in the catalog before the first poll, then polled exactly at the
//! URL ARM gave (the newest one wins, a double slash included) every `Retry-After`, until a 200 carries the
//! service resource or an error ends it. After a restart the recorded operation is polled again; it is never
//! requested twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::arm::{follow_for, followed, provider_error, start_following};
use super::interface::{
    BackupOutcome, BackupRequest, BuildProvider, BuildSite, CheckProblem, CheckReport, Destination,
    Provider, ProviderError, RestoreOutcome, RestoreRequest, Verdict,
};
use crate::azure::lro::{Handle, Pattern};
use crate::azure::{ArmClient, ArmError, ArmResponse};
use crate::changes::ChangeSignals;
use crate::config::{ApimSpec, AzureBlobConfig, BlobAccess, Problem, StorageConfig};
use crate::record::{BackupRecord, RestoreTrigger};
use crate::storage::Storage;

/// Tiers that have no backup (docs/design.md, "Azure wire contracts").
fn tier_without_backup(sku: &str) -> bool {
    sku.eq_ignore_ascii_case("Consumption") || sku.to_ascii_uppercase().ends_with("V2")
}

/// How long rpod looks for the blob of a backup Azure reports done before it fails the attempt: the waits
/// between the reads of the container (docs/azure.md, "How a backup runs").
const ARTIFACT_WAITS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Backs up one API Management service into a blob container.
#[derive(Debug)]
pub struct ApimProvider {
    spec: ApimSpec,
    storage: AzureBlobConfig,
    arm: ArmClient,
    endpoint: String,
    service_url: String,
    /// Read the service's API and product counts when a backup completes (the target has drills to compare).
    read_content: bool,
}

/// A service a restore goes into: the target's own, or one of its `restore_into`.
#[derive(Debug, Clone)]
struct Place {
    /// Its ARM path, without the endpoint.
    path: String,
    /// Its URL.
    url: String,
    subscription: String,
    service: String,
}

/// What a backup read of the source's content (`BackupOutcome::content`), for a drill to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
struct Content {
    apis: u64,
    products: u64,
}

/// The parts of the service resource rpod checks and records.
#[derive(Debug, Default, Deserialize)]
struct ServiceResource {
    id: Option<String>,
    name: Option<String>,
    etag: Option<String>,
    sku: Option<Sku>,
    properties: Option<ServiceProperties>,
}

#[derive(Debug, Deserialize)]
struct Sku {
    name: Option<String>,
    capacity: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceProperties {
    provisioning_state: Option<String>,
}

impl ServiceResource {
    fn sku_name(&self) -> Option<&str> {
        self.sku.as_ref().and_then(|s| s.name.as_deref())
    }
}

impl BuildProvider for ApimSpec {
    fn build_provider(&self, site: &BuildSite<'_>) -> Result<Option<Arc<dyn Provider>>, Problem> {
        let (Some(arm), Some(StorageConfig::AzureBlob(blob))) = (site.arm, site.storage()) else {
            return Ok(None);
        };
        match arm {
            Ok(arm) => Ok(Some(Arc::new(
                ApimProvider::new(
                    self.clone(),
                    blob.clone(),
                    arm.clone(),
                    &site.config.azure.resource_manager_endpoint,
                )
                .reading_content(site.target.drill.is_some()),
            ))),
            Err(message) => Err(Problem::at("azure", message.clone())),
        }
    }
}

impl ApimProvider {
    /// A provider for `spec`, writing into `storage`, through `arm` at `endpoint` (Resource Manager's base URL).
    #[must_use]
    pub fn new(spec: ApimSpec, storage: AzureBlobConfig, arm: ArmClient, endpoint: &str) -> Self {
        let service_url = format!("{endpoint}{}", spec.resource_path());
        Self {
            spec,
            storage,
            arm,
            endpoint: endpoint.to_owned(),
            service_url,
            read_content: false,
        }
    }

    /// Makes completed backups read the service's API and product counts, for drills to compare.
    #[must_use]
    pub fn reading_content(mut self, read: bool) -> Self {
        self.read_content = read;
        self
    }

    /// The target's own service, as a place.
    fn own_place(&self) -> Place {
        Place {
            path: self.spec.resource_path(),
            url: self.service_url.clone(),
            subscription: self.spec.subscription_id.clone(),
            service: self.spec.service.clone(),
        }
    }

    /// The service a restore into `into` goes to.
    fn place(&self, into: Option<&str>) -> Result<Place, String> {
        let Some(name) = into else {
            return Ok(self.own_place());
        };
        let destination = self
            .spec
            .restore_into
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .spec
                    .restore_into
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                format!(
                    "unknown restore destination {name:?} (restore_into names: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            })?;
        let path = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            destination.subscription_id, destination.resource_group, destination.service
        );
        Ok(Place {
            url: format!("{}{path}", self.endpoint),
            path,
            subscription: destination.subscription_id.clone(),
            service: destination.service.clone(),
        })
    }

    /// GETs `{place}/{suffix}` (suffix empty: the service itself) as JSON.
    async fn read(&self, operation: &str, place: &Place, suffix: &str) -> Result<Value, ArmError> {
        let (suffix, query) = match suffix.split_once('?') {
            Some((suffix, query)) => (suffix, format!("&{query}")),
            None => (suffix, String::new()),
        };
        let url = format!(
            "{}{suffix}?api-version={}{query}",
            place.url, self.spec.api_version
        );
        let response = self
            .arm
            .send(operation, &place.subscription, Method::GET, &url, None)
            .await?;
        serde_json::from_slice(&response.body)
            .map_err(|err| ArmError::invalid_answer(&response, format!("unreadable answer: {err}")))
    }

    /// How many APIs and products a service has: two GETs of one item each, whose `count` is the total.
    async fn content(&self, place: &Place) -> Result<Content, ArmError> {
        let total = |collection: &Value| {
            collection
                .get("count")
                .and_then(Value::as_u64)
                .or_else(|| {
                    collection
                        .get("value")
                        .and_then(Value::as_array)
                        .map(|v| v.len() as u64)
                })
                .unwrap_or(0)
        };
        let apis = self.read("list_apis", place, "/apis?$top=1").await?;
        let products = self
            .read("list_products", place, "/products?$top=1")
            .await?;
        Ok(Content {
            apis: total(&apis),
            products: total(&products),
        })
    }

    /// Whether the service's developer portal has a published (current, completed) revision.
    async fn portal_published(&self, place: &Place) -> Result<bool, ArmError> {
        let revisions = self
            .read("portal_revisions", place, "/portalRevisions")
            .await?;
        Ok(revisions
            .get("value")
            .and_then(Value::as_array)
            .is_some_and(|revisions| {
                revisions.iter().any(|r| {
                    r.pointer("/properties/isCurrent").and_then(Value::as_bool) == Some(true)
                        && r.pointer("/properties/status").and_then(Value::as_str)
                            == Some("completed")
                })
            }))
    }

    fn action_url(&self, action: &str) -> String {
        format!(
            "{}/{action}?api-version={}",
            self.service_url, self.spec.api_version
        )
    }

    /// The backup request body for the configured api-version, and the same without secrets (kept in the
    /// catalog).
    fn body(&self, backup_name: &str) -> Result<(Value, Value), ProviderError> {
        let mut body = json!({
            "storageAccount": self.storage.account,
            "containerName": self.storage.container,
            "backupName": backup_name,
        });
        let key =
            match &self.storage.access {
                BlobAccess::AccessKey(source) => Some(source.load().map_err(|message| {
                    ProviderError::permanent("StorageKeyUnavailable", message)
                })?),
                _ => None,
            };
        if !self.spec.legacy_body() {
            let (access_type, client_id) = match &self.storage.access {
                BlobAccess::AccessKey(_) => ("AccessKey", None),
                BlobAccess::ManagedIdentity => ("SystemAssignedManagedIdentity", None),
                BlobAccess::UserManagedIdentity { client_id } => {
                    ("UserAssignedManagedIdentity", Some(client_id))
                }
            };
            body["accessType"] = json!(access_type);
            if let Some(client_id) = client_id {
                body["clientId"] = json!(client_id);
            }
        }
        let recorded = body.clone();
        if let Some(key) = key {
            body["accessKey"] = json!(key.expose());
        }
        Ok((body, recorded))
    }

    /// Reads the service resource.
    /// Refuses to ask for a backup while the service is `Updating`: after an attempt cut off between asking and
    /// recording, that may be its own operation, which Azure finishes without rpod (its blob is then imported by
    /// reconciliation); a second request would only be refused (409) or back the service up twice.
    async fn not_busy(&self) -> Result<(), ProviderError> {
        let resource = self
            .service()
            .await
            .map_err(|err| provider_error(&err, None))?;
        let state = resource
            .properties
            .as_ref()
            .and_then(|p| p.provisioning_state.as_deref());
        if state.is_some_and(|s| s.eq_ignore_ascii_case("Updating")) {
            return Err(ProviderError::transient(
                crate::providers::SERVICE_BUSY,
                format!(
                    "API Management service {} is Updating: an operation runs on it (perhaps the backup whose \
                     acceptance rpod could not record before it stopped), so rpod waits for it to end instead of \
                     asking for another",
                    self.spec.service
                ),
            ));
        }
        Ok(())
    }

    async fn service(&self) -> Result<ServiceResource, ArmError> {
        let url = format!("{}?api-version={}", self.service_url, self.spec.api_version);
        let response = self
            .arm
            .send(
                "get_service",
                &self.spec.subscription_id,
                Method::GET,
                &url,
                None,
            )
            .await?;
        Ok(serde_json::from_slice(&response.body).unwrap_or_default())
    }

    /// Reads the service resource, then `tenant/configuration/syncState`: two GETs through the read bucket.
    ///
    /// The order matters. A configuration change moves both `configurationChangeDate` and the etag. One that
    /// lands between the two reads shows, in this order, as a moved date with the old etag: a change now, whose
    /// etag move the next poll sees while (or right after) the backup it caused runs, where the backup's own
    /// moves are absorbed. In the other order it would show as a moved etag alone, and the date moving at the next
    /// poll would count as a second change, after its backup had started: a second backup of the same change.
    async fn signals(&self) -> Result<ChangeSignals, ArmError> {
        let subscription = &self.spec.subscription_id;
        let url = format!("{}?api-version={}", self.service_url, self.spec.api_version);
        let service = self
            .arm
            .send("get_service", subscription, Method::GET, &url, None)
            .await?;
        let resource: Value = serde_json::from_slice(&service.body).map_err(|err| {
            ArmError::invalid_answer(&service, format!("unreadable service resource: {err}"))
        })?;
        let url = format!(
            "{}/tenant/configuration/syncState?api-version={}",
            self.service_url, self.spec.api_version
        );
        let sync = self
            .arm
            .send("sync_state", subscription, Method::GET, &url, None)
            .await?;
        let sync: Value = serde_json::from_slice(&sync.body).map_err(|err| {
            ArmError::invalid_answer(&sync, format!("unreadable sync state: {err}"))
        })?;
        // api-versions before 2020 answer the properties flat.
        let properties = sync.get("properties").unwrap_or(&sync);
        Ok(ChangeSignals {
            configuration_change_date: properties
                .get("configurationChangeDate")
                .and_then(Value::as_str)
                .map(str::to_owned),
            etag: resource
                .get("etag")
                .and_then(Value::as_str)
                .map(str::to_owned),
            last_modified_at: resource
                .pointer("/systemData/lastModifiedAt")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Follows an accepted operation to its end, saving each step through the request's journal, and reads the
    /// answer that ended it.
    async fn poll(
        &self,
        request: &BackupRequest,
        handle: Handle,
        accepted_at: DateTime<Utc>,
    ) -> Result<BackupOutcome, ProviderError> {
        let response = follow_for(&self.arm, &self.spec.subscription_id, request, handle)
            .await
            .map_err(|err| followed(err, accepted_at))?;
        let resource =
            Self::completed(&response, &self.own_place(), "backup").map_err(|mut error| {
                error.recovery_point = Some(accepted_at);
                error
            })?;
        Ok(self.outcome(request, accepted_at, &resource))
    }

    fn outcome(
        &self,
        request: &BackupRequest,
        accepted_at: DateTime<Utc>,
        resource: &ServiceResource,
    ) -> BackupOutcome {
        info!(
            target = %request.target, backup_id = request.backup_id, service = %self.spec.service,
            sku = resource.sku_name().unwrap_or("-"),
            capacity = resource.sku.as_ref().and_then(|s| s.capacity).unwrap_or(0),
            "Azure reports the API Management backup done; looking for its blob."
        );
        BackupOutcome {
            recovery_point: accepted_at,
            artifact: request.artifact.clone(),
            size_bytes: None,
            sha256: None,
            sku: resource.sku_name().map(str::to_owned),
            etag: resource.etag.clone(),
            expires_at: None,
            content: None,
        }
    }

    /// Reads the answer that ended an operation (a poll's, or the POST's own synchronous one): success only on
    /// a 200 whose body is this service's resource with `provisioningState` `Succeeded`. Anything else fails the
    /// attempt with what Azure said; an answer that cannot be read is never taken for a success.
    fn completed(
        response: &ArmResponse,
        place: &Place,
        operation: &str,
    ) -> Result<ServiceResource, ProviderError> {
        let request_id = response.request_id.as_deref().unwrap_or("-");
        if response.status != 200 {
            return Err(ProviderError::transient(
                "UnexpectedAnswer",
                format!(
                    "Azure ended the {operation} operation with HTTP {} instead of 200 and the service resource \
                     (request id {request_id}); the {operation} is not taken for done",
                    response.status
                ),
            ));
        }
        let resource: ServiceResource = serde_json::from_slice(&response.body).map_err(|err| {
            ProviderError::transient(
                "InvalidResponse",
                format!(
                    "the answer that ended the {operation} operation is not the service resource ({err}; request id \
                     {request_id}); the {operation} is not taken for done"
                ),
            )
        })?;
        let path = &place.path;
        let id_matches = resource
            .id
            .as_deref()
            .is_none_or(|id| id.eq_ignore_ascii_case(path));
        let name_matches = resource
            .name
            .as_deref()
            .is_none_or(|name| name.eq_ignore_ascii_case(&place.service));
        if !(id_matches && name_matches) || (resource.id.is_none() && resource.name.is_none()) {
            return Err(ProviderError::transient(
                "InvalidResponse",
                format!(
                    "the answer that ended the {operation} operation describes {} instead of service {} (request id \
                     {request_id}); the {operation} is not taken for done",
                    resource
                        .id
                        .as_deref()
                        .or(resource.name.as_deref())
                        .unwrap_or("no resource"),
                    place.service
                ),
            ));
        }
        let state = resource
            .properties
            .as_ref()
            .and_then(|p| p.provisioning_state.as_deref());
        if !state.is_some_and(|state| state.eq_ignore_ascii_case("Succeeded")) {
            let code = if operation == "restore" {
                "RestoreNotSucceeded"
            } else {
                "BackupNotSucceeded"
            };
            return Err(ProviderError::permanent(
                code,
                format!(
                    "the {operation} operation ended with service {} in provisioningState {} instead of \
                     Succeeded (request id {request_id})",
                    place.service,
                    state.map_or_else(|| "(none)".to_owned(), |s| format!("'{s}'"))
                ),
            ));
        }
        Ok(resource)
    }

    /// The guards only API Management knows (docs/restore.md, "Guards"): the destination exists, its tier has
    /// restore, its SKU is the backup's, and it is not busy. One GET of the destination.
    async fn guards(&self, backup: &BackupRecord, into: Option<&str>) -> Vec<Verdict> {
        let place = match self.place(into) {
            Ok(place) => place,
            Err(message) => return vec![Verdict::refuse("destination_exists", message)],
        };
        let service = &place.service;
        let resource = match self.read("get_service", &place, "").await {
            Ok(resource) => resource,
            Err(err) if err.status == Some(404) => {
                return vec![Verdict::refuse(
                    "destination_exists",
                    format!(
                        "API Management service {} does not exist: create it on the {} tier, or correct \
                         restore_into",
                        place.path,
                        backup.sku.as_deref().unwrap_or("backup's")
                    ),
                )];
            }
            Err(err) => {
                return vec![Verdict::refuse(
                    "destination_exists",
                    format!("cannot read API Management service {}: {err}", place.path),
                )];
            }
        };
        let resource: ServiceResource = serde_json::from_value(resource).unwrap_or_default();
        let mut verdicts = vec![Verdict::pass(
            "destination_exists",
            format!("service {service} exists"),
        )];
        let sku = resource.sku_name().unwrap_or("unknown").to_owned();
        if tier_without_backup(&sku) {
            verdicts.push(Verdict::refuse(
                "destination_tier",
                format!(
                    "service {service} is on the {sku} tier, which has no restore (Consumption and the v2 tiers): \
                     restore into a Developer, Basic, Standard or Premium service"
                ),
            ));
            return verdicts;
        }
        verdicts.push(Verdict::pass(
            "destination_tier",
            format!("the {sku} tier has restore"),
        ));
        match backup.sku.as_deref() {
            Some(taken_on) if !taken_on.eq_ignore_ascii_case(&sku) => {
                verdicts.push(Verdict::refuse(
                    "destination_sku",
                    format!(
                        "service {service} is on the {sku} tier and the backup was taken on {taken_on}: Azure \
                         fails such a restore with RestoreFailed \"Cannot restore: current SKU is '{sku}', backup \
                         SKU is '{taken_on}'\"; restore into a {taken_on} service"
                    ),
                ));
                return verdicts;
            }
            Some(_) => verdicts.push(Verdict::pass(
                "destination_sku",
                format!("service {service} is on {sku}, as the backup"),
            )),
            None => verdicts.push(Verdict::pass(
                "destination_sku",
                "the backup's SKU was not recorded; Azure checks it when it restores",
            )),
        }
        let state = resource
            .properties
            .as_ref()
            .and_then(|p| p.provisioning_state.as_deref())
            .unwrap_or("unknown");
        if state.eq_ignore_ascii_case("Updating") {
            verdicts.push(Verdict::refuse(
                "destination_busy",
                format!(
                    "service {service} is Updating (another operation runs on it): Azure refuses a restore until \
                     it finishes; try again then, or find what changes it in its activity log"
                ),
            ));
        } else {
            verdicts.push(Verdict::pass(
                "destination_busy",
                format!("service {service} is {state}"),
            ));
        }
        verdicts
    }

    /// Runs a restore: POST `restore` with the storage access the backups use, follow it to its end, check the
    /// destination, and (into another service) say what it does not carry over; a drill verifies it.
    async fn run_restore(&self, request: RestoreRequest) -> Result<RestoreOutcome, ProviderError> {
        let place = self
            .place(request.into.as_deref())
            .map_err(|message| ProviderError::permanent("UnknownDestination", message))?;
        let (accepted_at, response) = if let Some(resume) = &request.resume {
            let handle = Handle::from_json(&resume.handle)
                .map_err(|message| ProviderError::permanent("InvalidOperation", message))?;
            let response = follow_for(&self.arm, &place.subscription, &request, handle)
                .await
                .map_err(|err| followed(err, resume.accepted_at))?;
            (resume.accepted_at, response)
        } else {
            let artifact = request.backup.artifact.clone().ok_or_else(|| {
                ProviderError::permanent(
                    "ArtifactMissing",
                    format!("backup {} names no blob", request.backup.id),
                )
            })?;
            let (body, recorded) = self.body(&artifact)?;
            let url = format!(
                "{}/restore?api-version={}",
                place.url, self.spec.api_version
            );
            let response = tokio::select! {
                response = self.arm.send("restore", &place.subscription, Method::POST, &url, Some(&body)) => response,
                () = request.cancel.cancelled() => return Err(ProviderError::cancelled("stopped before Azure accepted the restore")),
            };
            let response = response.map_err(|err| provider_error(&err, None))?;
            let accepted_at = request.clock.now();
            if response.status == 202 {
                let handle = start_following(
                    &self.arm,
                    request.journal.as_ref(),
                    &response,
                    &[Pattern::Location],
                    accepted_at,
                    &recorded.to_string(),
                    "restore",
                )
                .await?;
                info!(
                    target = %request.target, restore_id = request.restore_id, service = %place.service,
                    request_id = response.request_id.as_deref().unwrap_or("-"), "Azure accepted the restore."
                );
                let response = follow_for(&self.arm, &place.subscription, &request, handle)
                    .await
                    .map_err(|err| followed(err, accepted_at))?;
                (accepted_at, response)
            } else {
                (accepted_at, response)
            }
        };
        let with_point = |mut error: ProviderError| {
            error.recovery_point = Some(accepted_at);
            error
        };
        let resource = Self::completed(&response, &place, "restore").map_err(with_point)?;
        let mut outcome = RestoreOutcome {
            accepted_at: Some(accepted_at),
            warnings: Vec::new(),
            verified: None,
        };
        if request.into.is_some() {
            let destination: Value = serde_json::from_slice(&response.body).unwrap_or_default();
            outcome.warnings = self.not_carried_over(&place, &destination).await;
        }
        if request.trigger == RestoreTrigger::Drill {
            outcome.verified = Some(
                self.verify_drill(&request.backup, &place, &resource)
                    .await
                    .map_err(with_point)?,
            );
        }
        Ok(outcome)
    }

    /// What a restore into another service does not carry over from the source (docs/azure.md, "What a
    /// restore does not carry over"), each as a warning that says what to re-apply.
    async fn not_carried_over(&self, place: &Place, destination: &Value) -> Vec<String> {
        let own = self.own_place();
        let source = match self.read("get_service", &own, "").await {
            Ok(source) => source,
            Err(err) => {
                return vec![format!(
                    "could not read the source service {} to compare: {err}; check custom hostnames, managed \
                     identity, virtual network and the developer portal by hand",
                    self.spec.service
                )];
            }
        };
        let mut warnings = Vec::new();
        let hostnames = |service: &Value| -> Vec<(String, String)> {
            service
                .pointer("/properties/hostnameConfigurations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|h| {
                    let name = h.get("hostName")?.as_str()?.to_ascii_lowercase();
                    let source = h
                        .get("certificateSource")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_owned();
                    (!name.ends_with(".azure-api.net")).then_some((name, source))
                })
                .collect()
        };
        let on_destination = hostnames(destination);
        for (name, certificate) in hostnames(&source) {
            if !on_destination.iter().any(|(host, _)| *host == name) {
                warnings.push(format!(
                    "custom hostname {name} (certificate from {certificate}) is not on {}: add it and its \
                     certificate (a backup holds neither)",
                    place.service
                ));
            }
        }
        let identity = |service: &Value| {
            service
                .pointer("/identity/type")
                .and_then(Value::as_str)
                .unwrap_or("None")
                .to_owned()
        };
        let (had, has) = (identity(&source), identity(destination));
        if !had.eq_ignore_ascii_case("None") && !had.eq_ignore_ascii_case(&has) {
            warnings.push(format!(
                "managed identity: {} has {had}, {} has {has}; enable it and grant it the access the source's \
                 has (Key Vault certificates, storage, backends)",
                self.spec.service, place.service
            ));
        }
        let network = |service: &Value| {
            service
                .pointer("/properties/virtualNetworkType")
                .and_then(Value::as_str)
                .unwrap_or("None")
                .to_owned()
        };
        let (had, has) = (network(&source), network(destination));
        if !had.eq_ignore_ascii_case("None") && !had.eq_ignore_ascii_case(&has) {
            warnings.push(format!(
                "virtual network: {} is in a virtual network ({had}), {} is not ({has}); connect it as the \
                 source is",
                self.spec.service, place.service
            ));
        }
        match (
            self.portal_published(&own).await,
            self.portal_published(place).await,
        ) {
            (Ok(true), Ok(false)) => warnings.push(format!(
                "the developer portal of {} is not published: publish it (a restore does not carry the \
                 portal's publication over)",
                place.service
            )),
            (Ok(_), Ok(_)) => {}
            (Err(err), _) | (_, Err(err)) => warnings.push(format!(
                "could not compare the developer portals' publication ({err}); check that {}'s is published",
                place.service
            )),
        }
        warnings
    }

    /// A drill's verification: the destination ends on the backup's SKU with the source's API and product
    /// counts at the recovery point (as the backup read them).
    async fn verify_drill(
        &self,
        backup: &BackupRecord,
        place: &Place,
        resource: &ServiceResource,
    ) -> Result<String, ProviderError> {
        let sku = resource.sku_name().unwrap_or("unknown");
        if let Some(taken_on) = backup.sku.as_deref()
            && !taken_on.eq_ignore_ascii_case(sku)
        {
            return Err(ProviderError::permanent(
                "VerificationFailed",
                format!(
                    "service {} ended on {sku}, the backup was taken on {taken_on}",
                    place.service
                ),
            ));
        }
        let found = self
            .content(place)
            .await
            .map_err(|err| provider_error(&err, None))?;
        let Some(expected) = backup
            .content
            .as_deref()
            .and_then(|json| serde_json::from_str::<Content>(json).ok())
        else {
            return Ok(format!(
                "service {} Succeeded on {sku} with {} APIs and {} products; the backup recorded no counts to \
                 compare with",
                place.service, found.apis, found.products
            ));
        };
        if found != expected {
            return Err(ProviderError::permanent(
                "VerificationFailed",
                format!(
                    "service {} has {} APIs and {} products after the restore; the source had {} and {} at the \
                     recovery point",
                    place.service, found.apis, found.products, expected.apis, expected.products
                ),
            ));
        }
        Ok(format!(
            "service {} Succeeded on {sku} with {} APIs and {} products, as the source at the recovery point",
            place.service, found.apis, found.products
        ))
    }

    /// Takes one backup to its end (see [`Provider::backup`]).
    async fn take_backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        if let Some(resume) = &request.resume {
            let handle = Handle::from_json(&resume.handle)
                .map_err(|message| ProviderError::permanent("InvalidOperation", message))?;
            let outcome = self.poll(&request, handle, resume.accepted_at).await?;
            return self.observed(&request, outcome).await;
        }
        if request.look_first {
            self.not_busy().await?;
        }
        let (body, recorded) = self.body(&request.artifact)?;
        let url = self.action_url("backup");
        let response = tokio::select! {
            response = self.arm.send("backup", &self.spec.subscription_id, Method::POST, &url, Some(&body)) => response,
            () = request.cancel.cancelled() => return Err(ProviderError::cancelled("stopped before Azure accepted the backup")),
        };
        let response = response.map_err(|err| provider_error(&err, None))?;
        let accepted_at = request.clock.now();
        if response.status != 202 {
            // Completed synchronously (the spec allows a 200): the same rule as for a poll's final answer (the
            // attempt marks its slot used).
            let resource =
                Self::completed(&response, &self.own_place(), "backup").map_err(|mut error| {
                    error.recovery_point = Some(accepted_at);
                    error
                })?;
            let outcome = self.outcome(&request, accepted_at, &resource);
            return self.observed(&request, outcome).await;
        }
        let handle = start_following(
            &self.arm,
            request.journal.as_ref(),
            &response,
            &[Pattern::Location],
            accepted_at,
            &recorded.to_string(),
            "backup",
        )
        .await?;
        info!(
            target = %request.target, backup_id = request.backup_id, backup_name = %request.artifact,
            request_id = response.request_id.as_deref().unwrap_or("-"), "Azure accepted the backup."
        );
        let outcome = self.poll(&request, handle, accepted_at).await?;
        self.observed(&request, outcome).await
    }

    /// Looks for the finished backup's blob in the container, a few times over a few seconds: a backup counts
    /// only once its blob is seen there with some content. Its size goes into the record.
    async fn observed(
        &self,
        request: &BackupRequest,
        mut outcome: BackupOutcome,
    ) -> Result<BackupOutcome, ProviderError> {
        let mut waits = ARTIFACT_WAITS.iter();
        let last = loop {
            let seen = request.storage.stat(&outcome.artifact).await;
            match (&seen, waits.next()) {
                (Ok(Some(info)), _) if info.size > 0 => {
                    outcome.size_bytes = Some(info.size);
                    return Ok(outcome);
                }
                (_, Some(wait)) => {
                    tokio::select! {
                        () = tokio::time::sleep(*wait) => {}
                        () = request.cancel.cancelled() => break seen,
                        () = request.stopping.cancelled() => break seen,
                    }
                }
                (_, None) => break seen,
            }
        };
        let found = match last {
            Ok(Some(_)) => "it is empty".to_owned(),
            Ok(None) => "it is not there".to_owned(),
            Err(err) => format!("rpod could not look: {err}"),
        };
        let mut error = ProviderError::transient(
            "ArtifactMissing",
            format!(
                "Azure reports the backup done, but its blob {} in storage {}: {found}; the backup does not count",
                outcome.artifact,
                request.storage.name()
            ),
        );
        error.recovery_point = Some(outcome.recovery_point);
        Err(error)
    }
}

#[async_trait::async_trait]
impl Provider for ApimProvider {
    fn kind(&self) -> &'static str {
        "apim"
    }

    async fn check(&self, storage: &Arc<dyn Storage>) -> CheckReport {
        let mut report = CheckReport::default();
        let service = &self.spec.service;
        match self.service().await {
            Err(err) => report.problems.push(CheckProblem::Unreachable(format!(
                "cannot read API Management service {service}: {err}"
            ))),
            Ok(resource) => {
                let sku = resource.sku_name().unwrap_or("unknown");
                report.found = Some(format!("service {service} ({sku})"));
                if tier_without_backup(sku) {
                    report.problems.push(CheckProblem::Refused(format!(
                        "API Management service {service} is on the {sku} tier, which has no backup and restore \
                         (Consumption and the v2 tiers): remove the target, or move the service to Developer, \
                         Basic, Standard or Premium; on this tier export its configuration instead (APIOps or \
                         the Resource Manager template export)"
                    )));
                }
                let state = resource
                    .properties
                    .as_ref()
                    .and_then(|p| p.provisioning_state.as_deref());
                if state.is_some_and(|s| s.eq_ignore_ascii_case("Updating")) {
                    report.problems.push(CheckProblem::Busy(format!(
                        "API Management service {service} is Updating (another operation runs on it): a backup \
                         started now is refused with 409 Conflict until it finishes; wait for it, or find what \
                         changes the service in its activity log"
                    )));
                }
            }
        }
        match storage.blob_cors_rules().await {
            Ok(Some(0) | None) => {}
            Ok(Some(rules)) => report.problems.push(CheckProblem::Refused(format!(
                "storage account {} has {rules} Blob service CORS rule(s): API Management's backup fails with \
                 400 naming the allowed methods (GET,HEAD,POST,...) while any exists; remove the account's Blob \
                 CORS rules (portal: Resource sharing (CORS), Blob service), or back up into another account",
                self.storage.account
            ))),
            Err(err) => report.problems.push(CheckProblem::Unchecked(format!(
                "could not read the Blob CORS rules of storage account {} ({err}); make sure it has none, or \
                 API Management's backup fails with 400",
                self.storage.account
            ))),
        }
        report
    }

    async fn change_signals(&self) -> Option<Result<ChangeSignals, ProviderError>> {
        Some(
            self.signals()
                .await
                .map_err(|err| provider_error(&err, None)),
        )
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        let mut outcome = self.take_backup(request).await?;
        if self.read_content {
            // What a drill compares the restored service with; a backup does not fail for want of it.
            match self.content(&self.own_place()).await {
                Ok(content) => outcome.content = serde_json::to_string(&content).ok(),
                Err(err) => {
                    tracing::warn!(service = %self.spec.service, error = %err, "Could not read the service's API and product counts for drills.");
                }
            }
        }
        Ok(outcome)
    }

    fn busy_key(&self) -> Option<String> {
        Some(self.spec.resource_path().to_ascii_lowercase())
    }

    fn destination(
        &self,
        into: Option<&str>,
        trigger: RestoreTrigger,
    ) -> Result<Destination, String> {
        if into.is_none() && trigger != RestoreTrigger::Manual {
            return Err(format!(
                "a {} restores into a restore_into service, never into the target's own service {}",
                trigger.as_str(),
                self.spec.service
            ));
        }
        let place = self.place(into)?;
        Ok(Destination {
            describe: place.path.clone(),
            busy_key: Some(place.path.to_ascii_lowercase()),
            own: into.is_none(),
        })
    }

    async fn restore_guards(&self, backup: &BackupRecord, into: Option<&str>) -> Vec<Verdict> {
        self.guards(backup, into).await
    }

    async fn restore(&self, request: RestoreRequest) -> Result<RestoreOutcome, ProviderError> {
        self.run_restore(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumption_and_v2_tiers_have_no_backup() {
        for sku in ["Consumption", "StandardV2", "BasicV2", "PremiumV2"] {
            assert!(tier_without_backup(sku), "{sku}");
        }
        for sku in ["Developer", "Basic", "Standard", "Premium", "Isolated"] {
            assert!(!tier_without_backup(sku), "{sku}");
        }
    }
}
