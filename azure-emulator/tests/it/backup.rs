//! Backups: the Location-only long-running operation with Azure's quirks, a real blob in Azurite (or none, with
//! a `SkipBlob` fault), body validation per api-version, refusals, and one operation at a time.

use std::time::Duration;

use azure_emulator::{
    Azurite, EmulatorConfig, Fault, FaultKind, Route, ServiceSpec, StorageAccount,
};
use serde_json::json;

use crate::support::{API, Arm, RG, SUB, header, json, key_body};

/// An account the emulator accepts but whose endpoint refuses connections (for tests that never complete).
fn unreachable_account() -> StorageAccount {
    StorageAccount::new(
        "contosobackups",
        "http://127.0.0.1:9/contosobackups",
        "a2V5LTE=",
    )
}

#[tokio::test]
async fn backup_writes_a_blob_and_follows_azures_polling_contract() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    azurite.create_container("apim-backups").await.unwrap();
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(StorageAccount::azurite(&azurite));
    let before = arm.emulator.service(SUB, RG, "apim-1").unwrap();

    let name = "apim-1/20260101T000000Z.apimbackup";
    let body = key_body(azurite.account(), azurite.key(), "apim-backups", name);
    let accepted = arm.start_operation("apim-1", "backup", API, &body).await;
    assert_eq!(accepted.status(), 202);
    assert_eq!(header(&accepted, "content-length").as_deref(), Some("0"));
    assert_eq!(header(&accepted, "retry-after").as_deref(), Some("1"));
    assert!(header(&accepted, "azure-asyncoperation").is_none());
    for name in [
        "x-ms-request-id",
        "x-ms-correlation-request-id",
        "x-ms-ratelimit-remaining-subscription-writes",
    ] {
        assert!(header(&accepted, name).is_some(), "{name}");
    }
    let first = header(&accepted, "location").unwrap();
    let prefix = format!("{}//operationresults/", arm.service_url("apim-1"));
    assert!(
        first.starts_with(&prefix) && first.ends_with("?api-version=2024-05-01"),
        "{first}"
    );
    let op_id = &first[prefix.len()..first.find('?').unwrap()];
    let decoded = String::from_utf8(base64_decode(op_id)).unwrap();
    assert!(
        decoded.starts_with("westeurope:apim-1_Backup_")
            && decoded.len() == "westeurope:apim-1_Backup_".len() + 8
    );

    let running = arm
        .get(&format!("{}?api-version={API}", arm.service_url("apim-1")))
        .await;
    let resource = json(running).await;
    assert_eq!(resource["properties"]["provisioningState"], "Updating");

    let first_poll = arm.get(&first).await;
    assert_eq!(first_poll.status(), 202);
    let second = header(&first_poll, "location").unwrap();
    assert_eq!(
        second,
        first.replace("//operationresults/", "/operationresults/"),
        "later polls: single slash"
    );
    assert_eq!(first_poll.text().await.unwrap(), "");

    let (done, _) = arm.poll_location(second.clone()).await;
    assert_eq!(done.status(), 200);
    assert!(header(&done, "location").is_none() && header(&done, "retry-after").is_none());
    let result = json(done).await;
    assert_eq!(result["sku"], json!({"name": "Developer", "capacity": 1}));
    assert_eq!(result["properties"]["provisioningState"], "Succeeded");
    assert_ne!(result["etag"], before.etag.as_str());

    for url in [&second, &first] {
        let again = arm.get(url).await;
        assert_eq!(
            again.status(),
            200,
            "a completed operation keeps answering 200"
        );
        assert_eq!(json(again).await, result);
    }

    let blobs = azurite.list_blobs("apim-backups", "").await.unwrap();
    assert_eq!(
        blobs.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        [name]
    );
    let after = arm.emulator.service(SUB, RG, "apim-1").unwrap();
    assert_eq!(after.backups_taken, 1);
    assert_eq!(after.etag, result["etag"].as_str().unwrap());
    assert!(after.last_modified_at > before.last_modified_at);
    assert_eq!(
        after.configuration_change_date, before.configuration_change_date,
        "backups change no configuration"
    );
    let fetched = arm
        .get(&format!("{}?api-version={API}", arm.service_url("apim-1")))
        .await;
    assert_eq!(
        header(&fetched, "etag"),
        Some(format!("\"{}\"", after.etag))
    );
}

#[tokio::test]
async fn a_failed_blob_write_fails_the_operation_on_every_poll() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(StorageAccount::azurite(&azurite));
    let body = key_body(
        azurite.account(),
        azurite.key(),
        "no-such-container",
        "b.apimbackup",
    );
    let accepted = arm.start_operation("apim-1", "backup", API, &body).await;
    let (done, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(done.status(), 400);
    let error = json(done).await;
    assert_eq!(error["error"]["code"], "BackupFailed");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-container"),
        "{error}"
    );
    let again = arm.get(&header(&accepted, "location").unwrap()).await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        arm.emulator
            .service(SUB, RG, "apim-1")
            .unwrap()
            .provisioning_state,
        "Succeeded"
    );
}

#[tokio::test]
async fn legacy_api_versions_take_the_four_fields_and_no_managed_identity() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(unreachable_account());
    let four = key_body("contosobackups", "a2V5LTE=", "c", "b");
    assert_eq!(
        arm.start_operation("apim-1", "backup", "2020-12-01", &four)
            .await
            .status(),
        202
    );

    let arm = Arm::with_service("apim-2").await;
    arm.emulator.add_account(unreachable_account());
    let identity = json!({"storageAccount": "contosobackups", "containerName": "c", "backupName": "b",
        "accessType": "SystemAssignedManagedIdentity"});
    let refused = arm
        .start_operation("apim-2", "backup", "2020-12-01", &identity)
        .await;
    assert_eq!(refused.status(), 400);
    let error = json(refused).await;
    assert_eq!(error["error"]["code"], "InvalidParameters");
    assert_eq!(error["error"]["details"], serde_json::Value::Null);
    assert!(
        error["error"]
            .as_object()
            .unwrap()
            .contains_key("innerError")
    );
    let missing =
        json!({"storageAccount": "contosobackups", "containerName": "c", "backupName": "b"});
    assert_eq!(
        arm.start_operation("apim-2", "backup", "2019-12-01", &missing)
            .await
            .status(),
        400
    );
    assert_eq!(
        arm.start_operation("apim-2", "backup", "2021-08-01", &identity)
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn storage_that_does_not_admit_the_service_is_refused_with_azures_message() {
    let arm = Arm::start(EmulatorConfig::fast()).await;
    arm.emulator
        .add_service(ServiceSpec::new(SUB, RG, "apim-1").with_user_identity("uami-1"));
    arm.emulator
        .add_service(ServiceSpec::new(SUB, RG, "apim-plain").with_system_identity(false));
    arm.emulator.add_account(unreachable_account());
    arm.emulator.add_account(
        StorageAccount::new("closed", "http://127.0.0.1:9/closed", "a2V5LTI=")
            .with_managed_identities_authorized(false),
    );
    let expected = "Invalid parameter: This request is not authorized to perform this operation.\r\nParameter name: backupContainerName (value: [c])";

    let system = |account: &str| json!({"storageAccount": account, "containerName": "c", "backupName": "b", "accessType": "SystemAssignedManagedIdentity"});
    for (service, body) in [
        ("apim-1", key_body("contosobackups", "d3Jvbmc=", "c", "b")),
        ("apim-1", key_body("unknownaccount", "a2V5LTE=", "c", "b")),
        ("apim-1", system("closed")),
    ] {
        let refused = arm.start_operation(service, "backup", API, &body).await;
        assert_eq!(refused.status(), 400, "{body}");
        let error = json(refused).await;
        assert_eq!(error["error"]["code"], "InvalidParameters");
        assert_eq!(error["error"]["message"], expected);
    }
    let no_identity = arm
        .start_operation("apim-plain", "backup", API, &system("contosobackups"))
        .await;
    assert_eq!(no_identity.status(), 400);
    let user = |client: &str| {
        json!({"storageAccount": "contosobackups", "containerName": "c", "backupName": "b",
        "accessType": "UserAssignedManagedIdentity", "clientId": client})
    };
    assert_eq!(
        arm.start_operation("apim-1", "backup", API, &user("someone-else"))
            .await
            .status(),
        400
    );
    assert_eq!(
        arm.start_operation("apim-1", "backup", API, &user("uami-1"))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn consumption_and_v2_tiers_cannot_back_up() {
    let arm = Arm::start(EmulatorConfig::fast()).await;
    arm.emulator.add_account(unreachable_account());
    for sku in ["Consumption", "StandardV2", "BasicV2"] {
        arm.emulator
            .add_service(ServiceSpec::new(SUB, RG, sku).with_sku(sku, 1));
        let refused = arm
            .start_operation(
                sku,
                "backup",
                API,
                &key_body("contosobackups", "a2V5LTE=", "c", "b"),
            )
            .await;
        assert_eq!(refused.status(), 400, "{sku}");
        assert_eq!(
            json(refused).await["error"]["code"],
            "MethodNotAllowedInPricingTier"
        );
    }
}

#[tokio::test]
async fn a_busy_service_refuses_a_second_operation_with_409() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(unreachable_account());
    arm.emulator.set_operation_duration(Duration::from_hours(1));
    let body = key_body("contosobackups", "a2V5LTE=", "c", "b");
    assert_eq!(
        arm.start_operation("apim-1", "backup", API, &body)
            .await
            .status(),
        202
    );
    let busy = arm.start_operation("apim-1", "restore", API, &body).await;
    assert_eq!(busy.status(), 409);
    assert!(busy.headers().contains_key("x-ms-request-id"));
    assert_eq!(json(busy).await["error"]["code"], "Conflict");
}

#[tokio::test(start_paused = true)]
async fn operations_follow_paused_tokio_time() {
    let arm = Arm::start(EmulatorConfig::default()).await;
    arm.emulator
        .add_service(ServiceSpec::new(SUB, RG, "apim-1"));
    arm.emulator.add_account(unreachable_account());
    let accepted = arm
        .start_operation(
            "apim-1",
            "backup",
            API,
            &key_body("contosobackups", "a2V5LTE=", "c", "b"),
        )
        .await;
    assert_eq!(header(&accepted, "retry-after").as_deref(), Some("60"));
    let location = header(&accepted, "location").unwrap();
    tokio::time::advance(Duration::from_mins(8)).await;
    assert_eq!(
        arm.get(&location).await.status(),
        202,
        "a backup runs 9 minutes by default"
    );
    tokio::time::advance(Duration::from_mins(1)).await;
    let (done, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(
        done.status(),
        400,
        "the unreachable account fails the write"
    );
    assert_eq!(json(done).await["error"]["code"], "BackupFailed");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn skip_blob_lets_backups_succeed_without_their_blobs_then_runs_out() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    azurite.create_container("apim-backups").await.unwrap();
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(StorageAccount::azurite(&azurite));
    arm.emulator
        .inject(Fault::new(Route::Backup, FaultKind::SkipBlob).times(2));

    let mut bodies = Vec::new();
    for name in ["one.apimbackup", "two.apimbackup", "three.apimbackup"] {
        let body = key_body(azurite.account(), azurite.key(), "apim-backups", name);
        let accepted = arm.start_operation("apim-1", "backup", API, &body).await;
        assert_eq!(accepted.status(), 202, "the POST itself is not faulted");
        let (done, _) = arm.poll_to_end(&accepted).await;
        assert_eq!(done.status(), 200, "{name}");
        let resource = json(done).await;
        assert_eq!(resource["properties"]["provisioningState"], "Succeeded");
        bodies.push(body);
    }
    assert!(
        arm.emulator.requests().iter().all(|r| !r.faulted),
        "no request was answered by the fault"
    );
    let after = arm.emulator.service(SUB, RG, "apim-1").unwrap();
    assert_eq!(
        (after.backups_taken, after.provisioning_state.as_str()),
        (3, "Succeeded")
    );
    let blobs = azurite.list_blobs("apim-backups", "").await.unwrap();
    assert_eq!(
        blobs.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        ["three.apimbackup"],
        "the first two backups wrote nothing; the fault ran out for the third"
    );
    assert!(
        !azurite
            .blob_exists("apim-backups", "one.apimbackup")
            .await
            .unwrap()
    );

    let accepted = arm
        .start_operation("apim-1", "restore", API, &bodies[0])
        .await;
    let (restored, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(restored.status(), 400, "a skipped blob cannot be restored");
    assert_eq!(json(restored).await["error"]["code"], "RestoreFailed");
}
