//! Restores: they succeed from a backup the emulator took, and fail on the poll with `RestoreFailed` when the
//! backup is missing, expired or from another SKU.

use std::time::Duration;

use azure_emulator::{Azurite, ServiceSpec, StorageAccount};
use serde_json::Value;

use crate::support::{API, Arm, RG, SUB, json, key_body};

/// Azurite with a container, and an emulator hosting `apim-1` (Developer) that has backed up to `name`.
async fn backed_up(name: &str) -> (Azurite, Arm, Value) {
    let azurite = Azurite::start().await.expect("Azurite starts");
    azurite.create_container("apim-backups").await.unwrap();
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(StorageAccount::azurite(&azurite));
    let body = key_body(azurite.account(), azurite.key(), "apim-backups", name);
    let accepted = arm.start_operation("apim-1", "backup", API, &body).await;
    let (done, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(done.status(), 200);
    (azurite, arm, body)
}

/// Starts a restore of `body` on `service` and returns the final poll's status and JSON.
async fn restore(arm: &Arm, service: &str, body: &Value) -> (u16, Value) {
    let accepted = arm.start_operation(service, "restore", API, body).await;
    assert_eq!(accepted.status(), 202);
    let location = crate::support::header(&accepted, "location").unwrap();
    assert!(location.contains("//operationresults/"));
    let (done, _) = arm.poll_to_end(&accepted).await;
    (done.status().as_u16(), json(done).await)
}

#[tokio::test]
async fn a_restore_of_a_fresh_backup_succeeds_and_changes_the_configuration() {
    let (_azurite, arm, body) = backed_up("b1.apimbackup").await;
    let before = arm.emulator.service(SUB, RG, "apim-1").unwrap();
    let (status, resource) = restore(&arm, "apim-1", &body).await;
    assert_eq!(status, 200, "{resource}");
    let after = arm.emulator.service(SUB, RG, "apim-1").unwrap();
    assert_eq!(after.restores_completed, 1);
    assert!(after.configuration_change_date > before.configuration_change_date);
    assert_eq!(resource["etag"], after.etag.as_str());
}

#[tokio::test]
async fn restores_fail_for_missing_expired_or_other_sku_backups() {
    let (azurite, arm, body) = backed_up("b1.apimbackup").await;
    arm.emulator
        .add_service(ServiceSpec::new(SUB, RG, "apim-premium").with_sku("Premium", 1));

    let (status, error) = restore(&arm, "apim-premium", &body).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "RestoreFailed");
    assert_eq!(
        error["error"]["message"],
        "Cannot restore: current SKU is 'Premium', backup SKU is 'Developer'"
    );

    let unknown = key_body(
        azurite.account(),
        azurite.key(),
        "apim-backups",
        "never-taken.apimbackup",
    );
    let (status, error) = restore(&arm, "apim-1", &unknown).await;
    assert_eq!(
        (status, error["error"]["message"].as_str()),
        (400, Some("Cannot restore: backup not found"))
    );

    arm.emulator.advance_clock(Duration::from_hours(30 * 24));
    let (status, error) = restore(&arm, "apim-1", &body).await;
    assert_eq!(
        (status, error["error"]["message"].as_str()),
        (400, Some("Cannot restore: backup expired"))
    );

    azurite
        .delete_blob("apim-backups", "b1.apimbackup")
        .await
        .unwrap();
    let (_, error) = restore(&arm, "apim-1", &body).await;
    assert_eq!(
        error["error"]["message"], "Cannot restore: backup not found",
        "a pruned blob cannot be restored"
    );
}
