//! Injected faults: status answers, resets, hangs, bad JSON, chosen answers and failed operations, each used up
//! in order.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use azure_emulator::{Fault, FaultKind, Route, StorageAccount};

use crate::support::{API, Arm, RG, SUB, header, json, key_body, post_form};

#[tokio::test]
async fn status_faults_answer_in_the_arm_shape_then_run_out() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.inject(
        Fault::new(
            Route::GetService,
            FaultKind::Status {
                code: 503,
                retry_after: Some(7),
                error_code: "ServiceUnavailable".into(),
                message: "try later".into(),
            },
        )
        .times(2),
    );
    let url = format!("{}?api-version={API}", arm.service_url("apim-1"));
    for _ in 0..2 {
        let response = arm.get(&url).await;
        assert_eq!(response.status(), 503);
        assert_eq!(header(&response, "retry-after").as_deref(), Some("7"));
        assert!(header(&response, "x-ms-request-id").is_some());
        let error = json(response).await;
        assert_eq!(
            (
                error["error"]["code"].as_str(),
                error["error"]["message"].as_str()
            ),
            (Some("ServiceUnavailable"), Some("try later"))
        );
    }
    assert_eq!(arm.get(&url).await.status(), 200);
    let statuses: Vec<_> = arm
        .emulator
        .requests()
        .iter()
        .map(|r| (r.status, r.faulted))
        .collect();
    assert_eq!(
        statuses,
        [(Some(503), true), (Some(503), true), (Some(200), false)]
    );
}

#[tokio::test]
async fn throttling_faults_and_token_faults() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator
        .inject(Fault::new(Route::AnyArm, FaultKind::throttled(3)));
    arm.emulator.inject(Fault::new(
        Route::Token,
        FaultKind::status(500, "server_error", "Entra is down"),
    ));
    let throttled = arm
        .get(&format!(
            "{}/tenant/configuration/syncState?api-version={API}",
            arm.service_url("apim-1")
        ))
        .await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(header(&throttled, "retry-after").as_deref(), Some("3"));
    assert_eq!(
        json(throttled).await["error"]["code"],
        "SubscriptionRequestsThrottled"
    );

    let token_url = format!("{}/t/oauth2/v2.0/token", arm.emulator.base_url());
    let form = [
        ("client_id", "c"),
        ("client_secret", "s"),
        ("grant_type", "client_credentials"),
        ("scope", "x/.default"),
    ];
    let refused = post_form(&arm.http, &token_url, &form).await;
    assert_eq!(refused.status(), 500);
    let error = json(refused).await;
    assert_eq!(error["error"], "server_error");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("Entra is down")
    );
    assert_eq!(post_form(&arm.http, &token_url, &form).await.status(), 200);
}

#[tokio::test]
async fn a_reset_closes_the_connection_without_an_answer() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator
        .inject(Fault::new(Route::Backup, FaultKind::Reset));
    arm.emulator.add_account(StorageAccount::new(
        "acct",
        "http://127.0.0.1:9/acct",
        "a2V5",
    ));
    let url = format!("{}/backup?api-version={API}", arm.service_url("apim-1"));
    let error = arm
        .http
        .post(&url)
        .bearer_auth(&arm.token)
        .body(key_body("acct", "a2V5", "c", "b").to_string())
        .send()
        .await
        .expect_err("no answer");
    assert!(error.is_request() || error.is_connect(), "{error:?}");
    let logged = arm.emulator.requests();
    assert_eq!(
        (logged.len(), logged[0].status, logged[0].faulted),
        (1, None, true)
    );
    let retried = arm
        .start_operation("apim-1", "backup", API, &key_body("acct", "a2V5", "c", "b"))
        .await;
    assert_eq!(retried.status(), 202, "the fault was used up");
}

#[tokio::test]
async fn a_reset_is_a_tcp_reset() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator
        .inject(Fault::new(Route::GetService, FaultKind::Reset));
    let address = arm
        .emulator
        .base_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let path = arm
        .service_url("apim-1")
        .replace(&arm.emulator.base_url(), "");
    let request = format!("GET {path}?api-version={API} HTTP/1.1\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    let read = stream.read_to_end(&mut buffer).await;
    let error = read.expect_err("a reset, not an orderly close");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buffer.is_empty());
}

#[tokio::test]
async fn a_hang_never_answers_until_shutdown() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator
        .inject(Fault::new(Route::Poll, FaultKind::Hang).times(2));
    arm.emulator.set_operation_duration(Duration::from_hours(1));
    arm.emulator.add_account(StorageAccount::new(
        "acct",
        "http://127.0.0.1:9/acct",
        "a2V5",
    ));
    let accepted = arm
        .start_operation("apim-1", "backup", API, &key_body("acct", "a2V5", "c", "b"))
        .await;
    let location = header(&accepted, "location").unwrap();
    let error = arm
        .http
        .get(&location)
        .bearer_auth(&arm.token)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("no answer");
    assert!(error.is_timeout(), "{error:?}");

    let waiting = tokio::spawn(arm.http.get(&location).bearer_auth(&arm.token).send());
    // The log records the hanging request once the emulator has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while arm.emulator.requests().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second poll never arrived"
        );
        tokio::task::yield_now().await;
    }
    let Arm { emulator, http, .. } = arm;
    emulator.shutdown().await;
    let closed = waiting.await.unwrap();
    assert!(
        closed.is_err(),
        "shutdown closes hanging connections: {closed:?}"
    );
    let after = http.get(&location).send().await;
    assert!(after.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn bad_json_is_a_200_that_does_not_parse() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator
        .inject(Fault::new(Route::GetService, FaultKind::BadJson));
    let response = arm
        .get(&format!("{}?api-version={API}", arm.service_url("apim-1")))
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );
}

#[tokio::test]
async fn fail_operation_ends_the_next_polled_operation_for_good() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.set_operation_duration(Duration::from_hours(1));
    arm.emulator.add_account(StorageAccount::new(
        "acct",
        "http://127.0.0.1:9/acct",
        "a2V5",
    ));
    arm.emulator.inject(Fault::new(
        Route::Backup,
        FaultKind::fail_operation("BackupFailed", "storage unreachable"),
    ));
    let accepted = arm
        .start_operation("apim-1", "backup", API, &key_body("acct", "a2V5", "c", "b"))
        .await;
    let location = header(&accepted, "location").unwrap();
    for _ in 0..2 {
        let failed = arm.get(&location).await;
        assert_eq!(failed.status(), 400);
        let error = json(failed).await;
        assert_eq!(error["error"]["code"], "BackupFailed");
        assert_eq!(error["error"]["message"], "storage unreachable");
    }
    let next = arm
        .start_operation(
            "apim-1",
            "backup",
            API,
            &key_body("acct", "a2V5", "c", "b2"),
        )
        .await;
    assert_eq!(next.status(), 202, "the failed operation freed the service");
}

#[tokio::test]
async fn an_answer_fault_replaces_one_poll_and_the_operation_carries_on() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.set_operation_duration(Duration::from_hours(1));
    arm.emulator.add_account(StorageAccount::new(
        "acct",
        "http://127.0.0.1:9/acct",
        "a2V5",
    ));
    arm.emulator.inject(Fault::new(
        Route::Poll,
        FaultKind::answer(200, r#"{"properties":{"provisioningState":"Succeeded"}}"#),
    ));
    arm.emulator
        .inject(Fault::new(Route::Poll, FaultKind::answer(202, "")));
    let accepted = arm
        .start_operation("apim-1", "backup", API, &key_body("acct", "a2V5", "c", "b"))
        .await;
    let location = header(&accepted, "location").unwrap();

    let answered = arm.get(&location).await;
    assert_eq!(answered.status(), 200);
    assert_eq!(
        header(&answered, "content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert!(header(&answered, "x-ms-request-id").is_some());
    assert_eq!(
        answered.text().await.unwrap(),
        r#"{"properties":{"provisioningState":"Succeeded"}}"#
    );

    let accepted_again = arm.get(&location).await;
    assert_eq!(accepted_again.status(), 202);
    assert!(header(&accepted_again, "x-ms-request-id").is_some());
    assert!(
        header(&accepted_again, "location").is_none(),
        "an answered 202 carries no Location"
    );
    assert_eq!(accepted_again.text().await.unwrap(), "");

    let real = arm.get(&location).await;
    assert_eq!(real.status(), 202, "the operation is still running");
    assert!(header(&real, "location").is_some());
    assert_eq!(
        arm.emulator
            .service(SUB, RG, "apim-1")
            .unwrap()
            .provisioning_state,
        "Updating"
    );
    let faulted: Vec<_> = arm.emulator.requests().iter().map(|r| r.faulted).collect();
    assert_eq!(faulted, [false, true, true, false]);
}

#[tokio::test]
async fn an_answer_fault_can_answer_a_backup_at_once_or_a_service_get_or_with_nothing() {
    let arm = Arm::with_service("apim-1").await;
    arm.emulator.add_account(StorageAccount::new(
        "acct",
        "http://127.0.0.1:9/acct",
        "a2V5",
    ));
    let resource = r#"{"name":"apim-1","properties":{"provisioningState":"Updating"}}"#;
    arm.emulator.inject(Fault::new(
        Route::Backup,
        FaultKind::answer(200, r#"{"name":"apim-1"}"#),
    ));
    arm.emulator
        .inject(Fault::new(Route::GetService, FaultKind::answer(200, resource)).times(2));
    arm.emulator
        .inject(Fault::new(Route::SyncState, FaultKind::answer(204, "")));

    let synchronous = arm
        .start_operation("apim-1", "backup", API, &key_body("acct", "a2V5", "c", "b"))
        .await;
    assert_eq!(synchronous.status(), 200);
    assert!(header(&synchronous, "location").is_none());
    assert_eq!(
        json(synchronous).await,
        serde_json::json!({"name": "apim-1"})
    );
    assert_eq!(
        arm.emulator
            .service(SUB, RG, "apim-1")
            .unwrap()
            .backups_taken,
        0,
        "no operation started"
    );
    assert_eq!(
        arm.emulator
            .service(SUB, RG, "apim-1")
            .unwrap()
            .provisioning_state,
        "Succeeded"
    );

    let url = format!("{}?api-version={API}", arm.service_url("apim-1"));
    for _ in 0..2 {
        let updating = arm.get(&url).await;
        assert_eq!(updating.status(), 200);
        assert!(header(&updating, "x-ms-request-id").is_some());
        assert_eq!(
            json(updating).await["properties"]["provisioningState"],
            "Updating"
        );
    }
    let real = json(arm.get(&url).await).await;
    assert_eq!(real["properties"]["provisioningState"], "Succeeded");

    let empty = arm
        .get(&format!(
            "{}/tenant/configuration/syncState?api-version={API}",
            arm.service_url("apim-1")
        ))
        .await;
    assert_eq!(empty.status(), 204);
    assert!(header(&empty, "x-ms-request-id").is_some());
    assert_eq!(empty.text().await.unwrap(), "");
}
