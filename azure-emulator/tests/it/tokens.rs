//! Token endpoints answer in the shapes `azure_identity` reads, and ARM accepts only the tokens they issued.

use std::time::Duration;

use azure_emulator::{EmulatorConfig, TokenKind};
use serde_json::Value;

use crate::support::{Arm, SUB, json, post_form};

fn config() -> EmulatorConfig {
    EmulatorConfig {
        token_prefix: "canary-7f3e-".to_owned(),
        identity_header: "id-header-value".to_owned(),
        ..EmulatorConfig::fast()
    }
}

#[tokio::test]
async fn entra_client_secret_and_assertion_grants_issue_bearer_tokens() {
    let arm = Arm::start(config()).await;
    let url = format!("{}/tenant-1/oauth2/v2.0/token", arm.emulator.base_url());
    let secret = [
        ("client_id", "app-1"),
        ("client_secret", "s3cr3t-value"),
        ("grant_type", "client_credentials"),
        ("scope", "https://management.azure.com/.default"),
    ];
    let response = post_form(&arm.http, &url, &secret).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(
        body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("canary-7f3e-")
    );

    let assertion = [
        ("client_assertion", "header.payload.signature"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_id", "app-2"),
        ("grant_type", "client_credentials"),
        ("scope", "https://management.azure.com/.default"),
    ];
    let response = post_form(&arm.http, &url, &assertion).await;
    assert_eq!(response.status(), 200);

    let kinds: Vec<_> = arm
        .emulator
        .token_requests()
        .into_iter()
        .map(|r| (r.kind, r.tenant, r.client_id, r.issued))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                Some(TokenKind::ClientSecret),
                Some("tenant-1".into()),
                Some("app-1".into()),
                true
            ),
            (
                Some(TokenKind::ClientAssertion),
                Some("tenant-1".into()),
                Some("app-2".into()),
                true
            ),
        ]
    );
    let logged = format!("{:?}", arm.emulator.requests());
    assert!(
        !logged.contains("s3cr3t-value") && !logged.contains("header.payload.signature"),
        "{logged}"
    );
}

#[tokio::test]
async fn entra_refuses_incomplete_forms_like_entra() {
    let arm = Arm::start(config()).await;
    let url = format!("{}/tenant-1/oauth2/v2.0/token", arm.emulator.base_url());
    let no_client = [
        ("client_secret", "s"),
        ("grant_type", "client_credentials"),
        ("scope", "x/.default"),
    ];
    let response = post_form(&arm.http, &url, &no_client).await;
    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("'client_id'"),
        "{body}"
    );
    assert!(body["error_codes"].is_array());

    let no_secret = [
        ("client_id", "c"),
        ("grant_type", "client_credentials"),
        ("scope", "x/.default"),
    ];
    let response = post_form(&arm.http, &url, &no_secret).await;
    assert_eq!(json(response).await["error"], "invalid_client");
    assert_eq!(
        arm.emulator.issued_tokens(),
        1,
        "only the fixture's own token"
    );
}

#[tokio::test]
async fn app_service_managed_identity_needs_its_header() {
    let arm = Arm::start(config()).await;
    let url = format!(
        "{}?api-version=2019-08-01&resource=https://management.azure.com&client_id=uami-1",
        arm.emulator.identity_endpoint()
    );
    let response = arm
        .http
        .get(&url)
        .header("metadata", "true")
        .header("x-identity-header", "id-header-value")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    let fields: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        fields,
        ["access_token", "expires_on", "resource", "token_type"]
    );
    let expires_on: u64 = body["expires_on"]
        .as_str()
        .expect("a string")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3500..=now + 3600).contains(&expires_on),
        "{expires_on} vs {now}"
    );
    assert_eq!(body["resource"], "https://management.azure.com");
    assert_eq!(body["token_type"], "Bearer");

    let wrong = arm
        .http
        .get(&url)
        .header("x-identity-header", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let requests = arm.emulator.token_requests();
    assert_eq!(requests[0].kind, Some(TokenKind::AppServiceManagedIdentity));
    assert_eq!(requests[0].client_id.as_deref(), Some("uami-1"));
    assert!(requests[0].issued && !requests[1].issued);
}

#[tokio::test]
async fn imds_needs_the_metadata_header() {
    let arm = Arm::start(config()).await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2019-08-01&resource=https://management.azure.com",
        arm.emulator.base_url()
    );
    let refused = arm.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let response = arm
        .http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = json(response).await;
    assert!(body["expires_on"].is_string());
    assert_eq!(arm.emulator.token_requests()[1].kind, Some(TokenKind::Imds));
}

#[tokio::test]
async fn arm_accepts_only_issued_unexpired_tokens() {
    let arm = Arm::start(EmulatorConfig {
        token_lifetime: Duration::from_secs(1),
        ..config()
    })
    .await;
    arm.emulator
        .add_service(azure_emulator::ServiceSpec::new(SUB, "rg", "svc"));
    let url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ApiManagement/service/svc?api-version=2024-05-01",
        arm.emulator.base_url()
    );
    let anonymous = arm.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("x-ms-request-id"));
    assert_eq!(
        json(anonymous).await["error"]["code"],
        "InvalidAuthenticationToken"
    );
    let forged = arm
        .http
        .get(&url)
        .bearer_auth("canary-7f3e-1.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(arm.get(&url).await.status(), 200);

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(2)).await;
    let expired = arm.get(&url).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        json(expired).await["error"]["code"],
        "ExpiredAuthenticationToken"
    );
}
