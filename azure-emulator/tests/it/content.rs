//! A service's content and settings over real HTTP: the `apis`, `products` and `portalRevisions` collections, the
//! settings a restore leaves alone (custom hostnames, identity, virtual network, portal publication), the content
//! a restore carries, and restores that take their own duration.

use std::time::Duration;

use azure_emulator::{
    Azurite, CertificateSource, Fault, FaultKind, Route, StorageAccount, VirtualNetworkType,
};
use serde_json::{Value, json};

use crate::support::{API, Arm, RG, SUB, header, json, key_body};

impl Arm {
    /// `GET .../service/{name}/{collection}?api-version={API}{extra}`: status and JSON.
    async fn collection(&self, name: &str, collection: &str, extra: &str) -> (u16, Value) {
        let url = format!(
            "{}/{collection}?api-version={API}{extra}",
            self.service_url(name)
        );
        let response = self.get(&url).await;
        let status = response.status().as_u16();
        (status, json(response).await)
    }

    /// The `count` of a collection, read as a client would cheaply: with `$top=1`.
    async fn count(&self, name: &str, collection: &str) -> u64 {
        let (status, page) = self.collection(name, collection, "&$top=1").await;
        assert_eq!(status, 200, "{page}");
        assert!(page["value"].as_array().is_some_and(|v| v.len() <= 1));
        page["count"].as_u64().expect("a count")
    }

    /// The service resource.
    async fn resource(&self, name: &str) -> Value {
        let response = self
            .get(&format!("{}?api-version={API}", self.service_url(name)))
            .await;
        assert_eq!(response.status(), 200);
        json(response).await
    }
}

/// What a restore must leave alone on a service resource.
fn untouched(resource: &Value) -> Value {
    json!({
        "identity": resource["identity"],
        "hostnameConfigurations": resource["properties"]["hostnameConfigurations"],
        "virtualNetworkType": resource["properties"]["virtualNetworkType"],
        "virtualNetworkConfiguration": resource["properties"]["virtualNetworkConfiguration"],
        "developerPortalStatus": resource["properties"]["developerPortalStatus"],
    })
}

#[tokio::test]
async fn the_collections_list_what_the_service_has() {
    let arm = Arm::with_service("apim-1").await;
    let (status, apis) = arm.collection("apim-1", "apis", "").await;
    assert_eq!(status, 200);
    assert_eq!(apis["count"], 1);
    assert_eq!(apis["value"][0]["name"], "echo-api");
    assert_eq!(apis["nextLink"], Value::Null);
    assert_eq!(arm.count("apim-1", "products").await, 2);

    arm.emulator.set_content(SUB, RG, "apim-1", 40, 7);
    let (status, first) = arm.collection("apim-1", "apis", "&%24top=1").await;
    assert_eq!(status, 200);
    assert_eq!(first["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(first["count"], 40, "count stays the total");
    let next = first["nextLink"].as_str().expect("a next page");
    let response = arm.get(next).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["value"][0]["name"], "api-2");
    assert_eq!(arm.count("apim-1", "products").await, 7);

    let (_, revisions) = arm.collection("apim-1", "portalRevisions", "").await;
    assert_eq!(revisions["count"], 1);
    assert_eq!(revisions["value"][0]["properties"]["isCurrent"], true);
    assert_eq!(revisions["value"][0]["properties"]["status"], "completed");
    arm.emulator.set_portal_published(SUB, RG, "apim-1", false);
    assert_eq!(arm.count("apim-1", "portalRevisions").await, 0);

    let response = arm
        .get(&format!(
            "{}/apis?api-version={API}",
            arm.service_url("apim-1")
        ))
        .await;
    assert!(
        header(&response, "x-ms-request-id").is_some(),
        "an ARM answer"
    );
    arm.emulator.inject(Fault::new(
        Route::Products,
        FaultKind::status(503, "ServiceUnavailable", "later"),
    ));
    let (status, _) = arm.collection("apim-1", "apis", "").await;
    assert_eq!(status, 200, "a products fault leaves apis alone");
    let (status, _) = arm.collection("apim-1", "products", "").await;
    assert_eq!(status, 503);
    let (status, error) = arm.collection("nope", "apis", "").await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (404, &json!("ResourceNotFound"))
    );
}

#[tokio::test]
async fn settings_show_on_the_service_and_control_endpoints_set_them() {
    let arm = Arm::with_service("apim-1").await;
    let resource = arm.resource("apim-1").await;
    assert_eq!(resource["identity"]["type"], "SystemAssigned");
    assert_eq!(resource["properties"]["virtualNetworkType"], "None");
    assert_eq!(resource["properties"]["developerPortalStatus"], "Enabled");
    let hostnames = &resource["properties"]["hostnameConfigurations"];
    assert_eq!(hostnames.as_array().map(Vec::len), Some(1));
    assert_eq!(hostnames[0]["hostName"], "apim-1.azure-api.net");
    assert_eq!(hostnames[0]["certificateSource"], "BuiltIn");

    let control = format!(
        "{}/emulator/subscriptions/{SUB}/resourceGroups/{RG}/services/apim-1",
        arm.emulator.base_url()
    );
    for (action, body) in [
        ("content", json!({"apis": 3, "products": 1})),
        ("portalPublished", json!({"published": false})),
        (
            "customHostname",
            json!({"hostName": "api.contoso.example", "certificateSource": "Managed"}),
        ),
        (
            "identity",
            json!({"type": "SystemAssigned, UserAssigned", "userAssignedClientIds": ["uami-1"]}),
        ),
        (
            "virtualNetworkType",
            json!({"virtualNetworkType": "External"}),
        ),
    ] {
        let response = arm
            .http
            .put(format!("{control}/{action}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{action}");
    }
    let bad = arm
        .http
        .put(format!("{control}/identity"))
        .body(r#"{"type":"UserAssigned"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    assert_eq!(arm.count("apim-1", "apis").await, 3);
    assert_eq!(arm.count("apim-1", "products").await, 1);
    assert_eq!(arm.count("apim-1", "portalRevisions").await, 0);
    let resource = arm.resource("apim-1").await;
    assert_eq!(resource["identity"]["type"], "SystemAssigned, UserAssigned");
    assert_eq!(resource["properties"]["virtualNetworkType"], "External");
    let custom = &resource["properties"]["hostnameConfigurations"][1];
    assert_eq!(custom["hostName"], "api.contoso.example");
    assert_eq!(custom["certificateSource"], "Managed");
    assert_eq!(custom["defaultSslBinding"], true);
}

#[tokio::test]
async fn a_restore_carries_the_content_and_leaves_everything_else_on_the_destination() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    azurite.create_container("apim-backups").await.unwrap();
    let arm = Arm::with_service("apim-src").await;
    arm.emulator.add_account(StorageAccount::azurite(&azurite));
    arm.emulator
        .add_service(azure_emulator::ServiceSpec::new(SUB, RG, "apim-dst"));
    let emulator = &arm.emulator;
    emulator.set_content(SUB, RG, "apim-src", 6, 4);
    emulator.set_custom_hostname(
        SUB,
        RG,
        "apim-src",
        "api.src.example",
        CertificateSource::Custom,
    );
    emulator.set_custom_hostname(
        SUB,
        RG,
        "apim-dst",
        "api.dst.example",
        CertificateSource::KeyVault,
    );
    emulator.set_identity(SUB, RG, "apim-dst", false, &["uami-dst"]);
    emulator.set_virtual_network_type(SUB, RG, "apim-dst", VirtualNetworkType::Internal);
    emulator.set_portal_published(SUB, RG, "apim-dst", false);

    let body = key_body(
        azurite.account(),
        azurite.key(),
        "apim-backups",
        "src.apimbackup",
    );
    let accepted = arm.start_operation("apim-src", "backup", API, &body).await;
    let (done, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(done.status(), 200);
    // Changes after the backup completed are not in it.
    emulator.set_content(SUB, RG, "apim-src", 8, 8);

    let before = arm.resource("apim-dst").await;
    let (_, revisions_before) = arm.collection("apim-dst", "portalRevisions", "").await;
    let accepted = arm.start_operation("apim-dst", "restore", API, &body).await;
    assert_eq!(accepted.status(), 202);
    let (done, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(done.status(), 200);
    let result = json(done).await;

    assert_eq!(arm.count("apim-dst", "apis").await, 6);
    assert_eq!(arm.count("apim-dst", "products").await, 4);
    let (_, revisions_after) = arm.collection("apim-dst", "portalRevisions", "").await;
    assert_eq!(
        revisions_after, revisions_before,
        "portal publication is not restored"
    );
    assert_eq!(revisions_after["count"], 0);
    let after = arm.resource("apim-dst").await;
    assert_eq!(untouched(&after), untouched(&before));
    assert_eq!(
        untouched(&result),
        untouched(&before),
        "the operation's 200 too"
    );
    assert_eq!(after["identity"]["type"], "UserAssigned");
    assert_eq!(after["properties"]["virtualNetworkType"], "Internal");
    let hostnames: Vec<&str> = after["properties"]["hostnameConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hostName"].as_str().unwrap())
        .collect();
    assert_eq!(hostnames, ["apim-dst.azure-api.net", "api.dst.example"]);
    let state = emulator.service(SUB, RG, "apim-dst").unwrap();
    assert_eq!((state.spec.apis, state.spec.products), (6, 4));
    assert_eq!(state.restores_completed, 1);
}

#[tokio::test]
async fn a_restore_runs_for_its_own_duration() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator
        .add_service(azure_emulator::ServiceSpec::new(SUB, RG, "apim-2"));
    arm.emulator.add_account(StorageAccount::new(
        "contosobackups",
        "http://127.0.0.1:9/contosobackups",
        "a2V5LTE=",
    ));
    arm.emulator.set_restore_duration(Duration::from_hours(1));
    let body = key_body("contosobackups", "a2V5LTE=", "c", "b");
    let restore = arm.start_operation("apim-1", "restore", API, &body).await;
    assert_eq!(restore.status(), 202);
    let backup = arm.start_operation("apim-2", "backup", API, &body).await;
    let (backup_done, _) = arm.poll_to_end(&backup).await;
    assert_eq!(
        backup_done.status(),
        400,
        "the backup ended (it cannot reach its storage)"
    );
    let location = header(&restore, "location").unwrap();
    assert_eq!(
        arm.get(&location).await.status(),
        202,
        "the restore still runs"
    );
    let busy = arm.start_operation("apim-1", "restore", API, &body).await;
    assert_eq!(busy.status(), 409);
    assert_eq!(json(busy).await["error"]["code"], "Conflict");
}
