//! Azure Stack Hub infrastructure backup over real loopback HTTP(S): a client discovers the stamp, takes an AD FS
//! token and follows the operation of a backup it started, as rpod does; the control endpoints change a
//! location by hand.

use std::time::Duration;

use serde_json::{Value, json};

use azure_emulator::{BackupLocationSpec, Emulator, EmulatorConfig, ShareCondition, TokenKind};

use crate::support::{Arm, header, json, post_form};

const API: &str = "2018-09-01";
const SUB: &str = "00000000-0000-0000-0000-0000000000bb";

fn spec() -> BackupLocationSpec {
    BackupLocationSpec::new(SUB, "System.local", "local")
}

fn location_url(emulator: &Emulator) -> String {
    format!(
        "{}{}",
        emulator.base_url(),
        spec().reference().location_id()
    )
}

/// GETs `location` with `token` until the answer is not 202 (within 10 s); returns it.
async fn follow(http: &reqwest::Client, token: &str, mut location: String) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = http
            .get(&location)
            .bearer_auth(token)
            .send()
            .await
            .expect("answered");
        if response.status() != 202 {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backup did not end within 10 s"
        );
        assert!(header(&response, "retry-after").is_some());
        location = header(&response, "location").expect("202 polls carry Location");
        // The protocol's wait between polls, shortened: Retry-After is whole seconds.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_adfs_client_backs_up_the_stamp_over_https() {
    let emulator = Emulator::start(EmulatorConfig {
        tls: true,
        ..EmulatorConfig::fast()
    })
    .await
    .expect("emulator starts");
    emulator.add_backup_location(spec());
    let root = reqwest::Certificate::from_pem(emulator.ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let base = emulator.base_url();

    let metadata = json(
        http.get(format!("{base}/metadata/endpoints?api-version=2015-01-01"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let login = metadata["authentication"]["loginEndpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let audience = metadata["authentication"]["audiences"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(login, format!("{base}/adfs/"));
    let issued = post_form(
        &http,
        &format!("{login}oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "rpod-app"),
            ("client_secret", "s3cr3t"),
            ("resource", &audience),
        ],
    )
    .await;
    assert_eq!(issued.status(), 200);
    let issued = json(issued).await;
    assert_eq!(issued["token_type"], "bearer");
    assert_eq!(issued["expires_in"], 3599);
    let token = issued["access_token"].as_str().unwrap().to_owned();

    let accepted = http
        .post(format!(
            "{}/createBackup?api-version={API}",
            location_url(&emulator)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    assert!(header(&accepted, "x-ms-request-id").is_some());
    let operation = header(&accepted, "location").unwrap();
    assert!(operation.starts_with(&format!("{}/operationResults/", location_url(&emulator))));
    let done = follow(&http, &token, operation.clone()).await;
    assert_eq!(done.status(), 200);
    let backup = json(done).await;
    let info = &backup["properties"]["backupInfo"];
    assert_eq!(info["status"], "Succeeded");
    assert_eq!(info["timeTakenToCreate"], "PT1S");
    assert!(info["createdDateTime"].as_str().unwrap().ends_with('Z'));
    let again = json(follow(&http, &token, operation).await).await;
    assert_eq!(again, backup, "the finished operation answers again");

    let list = json(
        http.get(format!(
            "{}/backups?api-version={API}",
            location_url(&emulator)
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(list["value"], json!([backup]));
    assert_eq!(list["nextLink"], Value::Null);

    let tokens = emulator.token_requests();
    assert_eq!(tokens[0].kind, Some(TokenKind::Adfs));
    assert_eq!(tokens[0].scope.as_deref(), Some(audience.as_str()));
    assert_eq!(tokens[0].client_id.as_deref(), Some("rpod-app"));
    let state = emulator.backup_location(&spec().reference()).unwrap();
    assert_eq!(state.create_backup_posts, 1);
    assert_eq!(state.backups[0].status, "Succeeded");
    assert_eq!(state.last_backup_time, Some(state.backups[0].created));
    emulator.shutdown().await;
}

/// PUTs `body` to the control endpoint `path` of the location; returns the status.
async fn put(arm: &Arm, path: &str, body: Value) -> u16 {
    let url = format!(
        "{}/emulator/subscriptions/{SUB}/resourceGroups/System.local/backupLocations/local/{path}",
        arm.emulator.base_url()
    );
    let response = arm
        .http
        .put(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answered");
    response.status().as_u16()
}

#[tokio::test]
async fn control_endpoints_change_a_location_by_hand() {
    let arm = Arm::start(EmulatorConfig::fast()).await;
    arm.emulator.add_backup_location(spec());
    let control = format!(
        "{}/emulator/subscriptions/{SUB}/resourceGroups/System.local/backupLocations/local",
        arm.emulator.base_url()
    );
    assert_eq!(
        put(&arm, "shareCondition", json!({"condition": "Unreachable"})).await,
        204
    );
    let create = format!(
        "{}/createBackup?api-version={API}",
        location_url(&arm.emulator)
    );
    let accepted = arm.post(&create, &json!({})).await;
    assert_eq!(accepted.status(), 202);
    let (failed, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(failed.status(), 400);
    assert_eq!(
        json(failed).await["error"]["code"],
        "ExternalStoreUnreachable"
    );

    assert_eq!(
        put(&arm, "shareCondition", json!({"condition": null})).await,
        204
    );
    assert_eq!(
        put(&arm, "encryptionCert", json!({"thumbprint": null})).await,
        204
    );
    let refused = arm.post(&create, &json!({})).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        json(refused).await["error"]["code"],
        "EncryptionCertificateNotFound"
    );

    assert_eq!(
        put(
            &arm,
            "availableCapacity",
            json!({"bytes": 1_073_741_824_u64})
        )
        .await,
        204
    );
    assert_eq!(put(&arm, "scheduler", json!({"enabled": true})).await, 204);
    let store = json(
        arm.get(&format!(
            "{}?api-version={API}",
            location_url(&arm.emulator)
        ))
        .await,
    )
    .await;
    let store = &store["properties"]["externalStoreDefault"];
    assert_eq!(store["availableCapacity"], "1 GB");
    assert_eq!(store["isBackupSchedulerEnabled"], true);
    assert_eq!(store["encryptionCertThumbprint"], Value::Null);
    assert!(store["nextBackupTime"].is_string());

    assert_eq!(
        put(&arm, "shareCondition", json!({"condition": "Full"})).await,
        400
    );
    let unknown = arm
        .http
        .put(control.replace("/local", "/remote") + "/scheduler")
        .body(r#"{"enabled":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let state = arm.emulator.backup_location(&spec().reference()).unwrap();
    assert_eq!(state.share_condition, None);
    assert!(state.scheduler_enabled);
    assert_eq!(state.create_backup_posts, 2);
    assert_eq!(
        state.backups[0].share_condition,
        Some(ShareCondition::Unreachable)
    );
    // The control endpoints need no token and carry no ARM headers.
    let logged = arm.emulator.requests();
    assert!(
        logged
            .iter()
            .filter(|r| r.path().starts_with("/emulator/"))
            .all(|r| !r.authorization)
    );
}
