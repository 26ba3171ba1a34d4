//! ARM throttling: per-subscription token buckets for writes and reads answer 429 with Retry-After.

use azure_emulator::{EmulatorConfig, ServiceSpec, StorageAccount};

use crate::support::{API, Arm, RG, SUB, header, json, key_body};

#[tokio::test]
async fn an_empty_write_bucket_answers_429_with_retry_after() {
    let arm = Arm::start(EmulatorConfig {
        write_bucket: Some((2.0, 0.25)),
        ..EmulatorConfig::fast()
    })
    .await;
    arm.emulator.add_account(StorageAccount::new(
        "acct",
        "http://127.0.0.1:9/acct",
        "a2V5",
    ));
    for name in ["a", "b", "c"] {
        arm.emulator.add_service(ServiceSpec::new(SUB, RG, name));
    }
    let body = key_body("acct", "a2V5", "c", "b");
    let first = arm.start_operation("a", "backup", API, &body).await;
    assert_eq!(
        header(&first, "x-ms-ratelimit-remaining-subscription-writes").as_deref(),
        Some("1")
    );
    assert_eq!(
        arm.start_operation("b", "backup", API, &body)
            .await
            .status(),
        202
    );
    let throttled = arm.start_operation("c", "backup", API, &body).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(header(&throttled, "retry-after").as_deref(), Some("4"));
    assert!(header(&throttled, "x-ms-request-id").is_some());
    assert_eq!(
        json(throttled).await["error"]["code"],
        "SubscriptionRequestsThrottled"
    );
    assert_eq!(arm.emulator.throttled_count(), 1);
    assert_eq!(arm.emulator.service(SUB, RG, "c").unwrap().backups_taken, 0);

    let reads = arm
        .get(&format!("{}?api-version={API}", arm.service_url("a")))
        .await;
    assert_eq!(
        reads.status(),
        200,
        "reads have their own (here unlimited) bucket"
    );
}

#[tokio::test]
async fn read_buckets_are_per_subscription() {
    let arm = Arm::start(EmulatorConfig {
        read_bucket: Some((1.0, 0.1)),
        ..EmulatorConfig::fast()
    })
    .await;
    arm.emulator.add_service(ServiceSpec::new(SUB, RG, "a"));
    arm.emulator
        .add_service(ServiceSpec::new("other-sub", RG, "a"));
    let url = format!("{}?api-version={API}", arm.service_url("a"));
    assert_eq!(arm.get(&url).await.status(), 200);
    let throttled = arm.get(&url).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(header(&throttled, "retry-after").as_deref(), Some("10"));
    let other = url.replace(SUB, "other-sub");
    assert_eq!(arm.get(&other).await.status(), 200);
}
