//! API Management's change signals over real HTTP: the service's etag and `lastModifiedAt`, the sync state's
//! `configurationChangeDate`, what moves them (backups, the control endpoints), and what does not.

use std::time::Duration;

use azure_emulator::{Azurite, Fault, FaultKind, Route, StorageAccount};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::{API, Arm, RG, SUB, header, json, key_body};

impl Arm {
    /// `{base}/emulator/subscriptions/{SUB}/resourceGroups/{RG}/services/{name}`.
    fn control_url(&self, name: &str) -> String {
        format!(
            "{}/emulator/subscriptions/{SUB}/resourceGroups/{RG}/services/{name}",
            self.emulator.base_url()
        )
    }

    /// The service resource and its `ETag` header.
    async fn service_resource(&self, name: &str) -> (Value, String) {
        let response = self
            .get(&format!("{}?api-version={API}", self.service_url(name)))
            .await;
        assert_eq!(response.status(), 200);
        let etag = header(&response, "etag").expect("an ETag header");
        (json(response).await, etag)
    }

    /// The sync state's `configurationChangeDate`.
    async fn configuration_change_date(&self, name: &str) -> DateTime<Utc> {
        let url = format!(
            "{}/tenant/configuration/syncState?api-version={API}",
            self.service_url(name)
        );
        let response = self.get(&url).await;
        assert_eq!(response.status(), 200);
        date(&json(response).await["properties"]["configurationChangeDate"])
    }
}

/// A date ARM wrote.
fn date(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().unwrap_or_else(|| panic!("a date: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn last_modified(resource: &Value) -> DateTime<Utc> {
    date(&resource["systemData"]["lastModifiedAt"])
}

#[tokio::test]
async fn a_change_over_http_moves_the_configuration_date_the_etag_and_last_modified() {
    let arm = Arm::with_service("apim-1").await;
    let (service, etag) = arm.service_resource("apim-1").await;
    let changed_before = arm.configuration_change_date("apim-1").await;
    arm.emulator.advance_clock(Duration::from_mins(1));

    let response = reqwest::Client::new()
        .post(format!("{}/change", arm.control_url("apim-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "no token needed");
    assert!(header(&response, "x-ms-request-id").is_none(), "not ARM");

    let changed_after = arm.configuration_change_date("apim-1").await;
    assert!(changed_after > changed_before);
    let (changed, changed_etag) = arm.service_resource("apim-1").await;
    assert_ne!(changed_etag, etag);
    assert_eq!(
        changed_etag,
        format!("\"{}\"", changed["etag"].as_str().unwrap())
    );
    assert_ne!(changed["etag"], service["etag"]);
    assert!(last_modified(&changed) > last_modified(&service));
    assert_eq!(last_modified(&changed), changed_after);

    let state = arm.emulator.service(SUB, RG, "apim-1").unwrap();
    assert_eq!(
        state.configuration_change_date.timestamp_micros(),
        changed_after.timestamp_micros(),
        "ARM writes microseconds"
    );
    let logged = arm
        .emulator
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the control request is logged");
    assert_eq!(logged.status, Some(204));
    assert!(logged.path().ends_with("/services/apim-1/change"));
}

#[tokio::test]
async fn setting_the_configuration_date_over_http_leaves_the_resource_alone() {
    let arm = Arm::with_service("apim-1").await;
    let (service, etag) = arm.service_resource("apim-1").await;
    let url = format!("{}/configurationChangeDate", arm.control_url("apim-1"));
    let put = |body: String| arm.http.put(&url).body(body).send();

    let response = put(json!({"configurationChangeDate": "2026-01-01T00:00:00Z"}).to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        arm.configuration_change_date("apim-1").await.to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    let (after, after_etag) = arm.service_resource("apim-1").await;
    assert_eq!(after_etag, etag, "the etag does not move");
    assert_eq!(after["systemData"], service["systemData"]);

    let bad = put(r#"{"configurationChangeDate":"last tuesday"}"#.to_owned())
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(json(bad).await["error"]["code"], "InvalidRequestContent");
    let wrong_method = arm.http.post(&url).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(header(&wrong_method, "allow").as_deref(), Some("PUT"));
    let missing = arm
        .http
        .post(format!("{}/change", arm.control_url("nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(json(missing).await["error"]["code"], "NotFound");
    assert_eq!(
        arm.configuration_change_date("apim-1").await.to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
}

#[tokio::test]
async fn faults_do_not_apply_to_the_control_endpoints() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.inject(Fault::new(
        Route::AnyArm,
        FaultKind::status(500, "InternalServerError", "boom"),
    ));
    let response = arm
        .http
        .post(format!("{}/change", arm.control_url("apim-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let url = format!("{}?api-version={API}", arm.service_url("apim-1"));
    assert_eq!(
        arm.get(&url).await.status(),
        500,
        "the fault is still queued"
    );
    let faulted: Vec<_> = arm.emulator.requests().iter().map(|r| r.faulted).collect();
    assert_eq!(faulted, [false, true]);
}

#[tokio::test]
async fn a_backup_moves_the_etag_and_last_modified_but_not_the_configuration_date() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    azurite.create_container("apim-backups").await.unwrap();
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(StorageAccount::azurite(&azurite));
    // Long enough to look at the service while the backup runs.
    arm.emulator.set_operation_duration(Duration::from_secs(1));
    let (before, before_etag) = arm.service_resource("apim-1").await;
    let changed_before = arm.configuration_change_date("apim-1").await;
    arm.emulator.advance_clock(Duration::from_mins(1));

    let body = key_body(
        azurite.account(),
        azurite.key(),
        "apim-backups",
        "b1.apimbackup",
    );
    let accepted = arm.start_operation("apim-1", "backup", API, &body).await;
    assert_eq!(accepted.status(), 202);
    let (running, running_etag) = arm.service_resource("apim-1").await;
    assert_eq!(running["properties"]["provisioningState"], "Updating");
    assert_ne!(
        running_etag, before_etag,
        "an accepted backup moves the etag"
    );
    assert!(last_modified(&running) > last_modified(&before));
    assert_eq!(
        arm.configuration_change_date("apim-1").await,
        changed_before
    );

    arm.emulator.advance_clock(Duration::from_mins(1));
    let (done, _) = arm.poll_to_end(&accepted).await;
    assert_eq!(done.status(), 200);
    let result = json(done).await;
    let (after, after_etag) = arm.service_resource("apim-1").await;
    assert_eq!(after["properties"]["provisioningState"], "Succeeded");
    assert_ne!(
        after_etag, running_etag,
        "a completed backup moves it again"
    );
    assert_eq!(
        result["etag"], after["etag"],
        "the final answer carries the etag as of completion"
    );
    assert_eq!(result["systemData"], after["systemData"]);
    assert!(last_modified(&after) > last_modified(&running));
    assert_eq!(
        arm.configuration_change_date("apim-1").await,
        changed_before,
        "a backup changes no configuration"
    );
}
