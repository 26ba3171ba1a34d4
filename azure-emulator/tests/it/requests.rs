//! Reading services, sync state and the request log; ARM's generic answers (404, missing api-version, paths in
//! any case).

use azure_emulator::EmulatorConfig;

use crate::support::{API, Arm, RG, SUB, header, json};

#[tokio::test]
async fn the_service_and_its_sync_state_reflect_changes() {
    let arm = Arm::with_service("apim-1").await;
    let url = format!("{}?api-version={API}", arm.service_url("apim-1"));
    let service = json(arm.get(&url).await).await;
    assert_eq!(service["name"], "apim-1");
    assert_eq!(service["type"], "Microsoft.ApiManagement/service");
    assert_eq!(service["location"], "West Europe");
    assert_eq!(service["properties"]["provisioningState"], "Succeeded");
    assert_eq!(service["properties"]["targetProvisioningState"], "");
    assert!(service["systemData"]["lastModifiedAt"].is_string());

    let sync_url = format!(
        "{}/tenant/configuration/syncState?api-version={API}",
        arm.service_url("apim-1")
    );
    let before = json(arm.get(&sync_url).await).await;
    assert_eq!(before["properties"]["isSynced"], true);
    arm.emulator.make_change(SUB, RG, "apim-1");
    let after = json(arm.get(&sync_url).await).await;
    assert_ne!(
        after["properties"]["configurationChangeDate"],
        before["properties"]["configurationChangeDate"]
    );
    assert_eq!(after["properties"]["isSynced"], false);
    let changed = json(arm.get(&url).await).await;
    assert_ne!(changed["etag"], service["etag"]);
}

#[tokio::test]
async fn arm_paths_are_case_insensitive_and_errors_have_arms_shape() {
    let arm = Arm::with_service("apim-1").await;
    let upper = format!(
        "{}?api-version={API}",
        arm.service_url("APIM-1")
            .replace("resourceGroups", "RESOURCEGROUPS")
    );
    assert_eq!(arm.get(&upper).await.status(), 200);

    let missing = arm
        .get(&format!("{}?api-version={API}", arm.service_url("nope")))
        .await;
    assert_eq!(missing.status(), 404);
    assert!(header(&missing, "x-ms-request-id").is_some());
    assert_eq!(json(missing).await["error"]["code"], "ResourceNotFound");

    let no_version = arm.get(&arm.service_url("apim-1")).await;
    assert_eq!(no_version.status(), 400);
    assert_eq!(
        json(no_version).await["error"]["code"],
        "MissingApiVersionParameter"
    );
}

#[tokio::test]
async fn the_log_keeps_raw_paths_bodies_and_client_request_ids() {
    let arm = Arm::start(EmulatorConfig {
        require_token: false,
        ..EmulatorConfig::fast()
    })
    .await;
    arm.emulator
        .add_service(azure_emulator::ServiceSpec::new(SUB, RG, "apim-1"));
    let url = format!(
        "{}//tenant/configuration/syncState?api-version={API}",
        arm.service_url("apim-1")
    );
    let response = arm
        .http
        .get(&url)
        .header("x-ms-client-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "double slashes are accepted anywhere"
    );
    assert_eq!(
        header(&response, "x-ms-client-request-id").as_deref(),
        Some("req-42")
    );
    let logged = &arm.emulator.requests()[0];
    assert_eq!(logged.method, "GET");
    assert!(
        logged.path_and_query.contains("apim-1//tenant/"),
        "{}",
        logged.path_and_query
    );
    assert!(logged.path_and_query.ends_with("?api-version=2024-05-01"));
    assert_eq!(logged.client_request_id.as_deref(), Some("req-42"));
    assert!(!logged.authorization);
    assert_eq!(logged.status, Some(200));
}
