//! Tests of Recovery Services through the one request handler (routing, faults, token, throttling, logging),
//! with the emulator's clock moved by hand or by paused Tokio time.

use std::time::Duration;

use chrono::{Datelike as _, Timelike as _};
use serde_json::{Value, json};

use crate::config::EmulatorConfig;
use crate::fault::{Fault, FaultKind, Route};
use crate::reply::Reply;
use crate::state::State;
use crate::test_support::{BASE, InProcess, error_code, operation_id};
use crate::vm::{JobStatus, ProtectedVmRef, ProtectedVmSpec, ProtectionState};

const API: &str = "2025-08-01";
const VAULT: &str = "/subscriptions/sub-1/resourceGroups/rg-vault/providers/Microsoft.RecoveryServices/vaults/vault-1";
const ITEM: &str = "/subscriptions/sub-1/resourceGroups/rg-vault/providers/Microsoft.RecoveryServices/vaults/vault-1/backupFabrics/Azure/protectionContainers/IaasVMContainer%3Biaasvmcontainerv2%3Brg-vm%3Bvm-1/protectedItems/VM%3Biaasvmcontainerv2%3Brg-vm%3Bvm-1";

/// Marks the in-process client of these tests, which adds the requests and reads of a protected VM.
enum Recovery {}

type Harness = InProcess<Recovery>;

fn vm() -> ProtectedVmRef {
    ProtectedVmRef::new("sub-1", "rg-vault", "vault-1", "rg-vm", "vm-1")
}

/// Operations of 2 s and jobs of 100 s (snapshot phase 10 s), Retry-After 7, one protected VM.
fn harness() -> Harness {
    harness_with(EmulatorConfig {
        retry_after_secs: 7,
        vm_operation_duration: Duration::from_secs(2),
        vm_job_duration: Duration::from_secs(100),
        ..EmulatorConfig::default()
    })
}

fn harness_with(config: EmulatorConfig) -> Harness {
    let mut state = State::new(config, BASE.to_owned());
    crate::recovery::host(
        &mut state,
        ProtectedVmSpec::new("sub-1", "rg-vault", "vault-1", "rg-vm", "vm-1"),
    );
    InProcess::new(state)
}

impl Harness {
    /// POSTs a backup; returns the reply.
    fn backup(&self, body: &Value) -> Reply {
        self.send(
            "POST",
            &format!("{ITEM}/backup?api-version={API}"),
            &body.to_string(),
        )
    }

    /// POSTs a backup that must be accepted; returns the operation id.
    fn accepted_backup(&self, body: &Value) -> String {
        let reply = self.backup(body);
        assert_eq!(reply.status, 202, "{}", reply.body);
        let location = reply.header_value("Location").unwrap();
        operation_id(location).to_owned()
    }

    fn state(&self) -> crate::vm::ProtectedVmState {
        crate::recovery::snapshot(&mut self.shared.lock(), &vm()).unwrap()
    }
}

fn plain_request() -> Value {
    json!({"properties": {"objectType": "IaasVMBackupRequest"}})
}

fn request_expiring(expiry: &str) -> Value {
    json!({"properties": {"objectType": "IaasVMBackupRequest", "recoveryPointExpiryTimeInUTC": expiry}})
}

#[test]
fn paths_match_ignoring_case_with_encoded_or_raw_semicolons() {
    let h = harness();
    let lower = h.get_json(&format!("{ITEM}?api-version={API}"));
    let raw = ITEM
        .replace("%3B", ";")
        .replace("/subscriptions/", "/Subscriptions/");
    let upper = h.get_json(&format!(
        "{}?api-version=2016-12-01",
        raw.to_uppercase().replace("%3B", ";")
    ));
    assert_eq!(lower, upper);
    assert_eq!(lower["name"], "VM;iaasvmcontainerv2;rg-vm;vm-1");
    assert_eq!(lower["id"], vm().item_id());
    let properties = &lower["properties"];
    assert_eq!(properties["protectionState"], "Protected");
    assert_eq!(properties["healthStatus"], "Passed");
    assert_eq!(properties["protectionStatus"], "Healthy");
    assert_eq!(properties["lastBackupStatus"], "");
    assert_eq!(properties["lastBackupTime"], "2001-01-01T00:00:00Z");
    assert_eq!(properties["lastRecoveryPoint"], Value::Null);
    assert_eq!(properties["containerName"], "iaasvmcontainerv2;rg-vm;vm-1");
    assert_eq!(
        properties["policyId"],
        format!("{VAULT}/backupPolicies/DefaultPolicy")
    );

    let policy = h.get_json(&format!(
        "{VAULT}/backupPolicies/defaultpolicy?api-version={API}"
    ));
    assert_eq!(policy["properties"]["backupManagementType"], "AzureIaasVM");
    assert_eq!(
        policy["properties"]["schedulePolicy"]["scheduleRunTimes"],
        json!(["2023-01-01T22:30:00Z"])
    );
    let vault = h.get_json(&format!("{}?api-version=2026-02-01", VAULT.to_uppercase()));
    assert_eq!(vault["type"], "Microsoft.RecoveryServices/vaults");
    assert_eq!(vault["name"], "vault-1");
}

#[test]
fn api_versions_and_unknown_names_are_refused_as_arm_does() {
    let h = harness();
    let missing = h.get(ITEM);
    assert_eq!(
        (missing.status, error_code(&missing).as_str()),
        (400, "MissingApiVersionParameter")
    );
    let old = h.get(&format!("{ITEM}?api-version=2015-01-01"));
    assert_eq!(
        (old.status, error_code(&old).as_str()),
        (400, "NoRegisteredProviderFound")
    );
    let preview = h.get(&format!("{ITEM}?api-version=2026-03-31-preview"));
    assert_eq!(preview.status, 200);

    let vault = h.get(&format!(
        "{}?api-version={API}",
        ITEM.replace("vault-1", "vault-2")
    ));
    assert_eq!(
        (vault.status, error_code(&vault).as_str()),
        (404, "ResourceNotFound")
    );
    assert!(
        vault
            .body
            .contains("Microsoft.RecoveryServices/vaults/vault-2")
    );
    let item = h.get(&format!(
        "{}?api-version={API}",
        ITEM.replace("vm-1", "vm-2")
    ));
    assert_eq!(
        (item.status, error_code(&item).as_str()),
        (404, "ResourceNotFound")
    );
    let mismatched = h.get(&format!(
        "{}?api-version={API}",
        ITEM.replacen("vm-1", "vm-2", 1)
    ));
    assert_eq!(
        mismatched.status, 404,
        "container and item name different VMs"
    );
    let job = h.get(&format!("{VAULT}/backupJobs/nope?api-version={API}"));
    assert_eq!(job.status, 404);
    let policy = h.get(&format!("{VAULT}/backupPolicies/nope?api-version={API}"));
    assert_eq!(policy.status, 404);
}

#[test]
fn a_backup_is_accepted_with_202_and_exactly_the_recorded_headers() {
    let h = harness();
    let reply = h.backup(&request_expiring("2099-01-01T00:00:00Z"));
    assert_eq!(reply.status, 202);
    assert_eq!(reply.body, "");
    assert_eq!(reply.header_value("Content-Type"), None);
    let location = reply.header_value("Location").unwrap();
    let id = operation_id(location);
    assert_eq!(
        id.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    let item = format!(
        "{BASE}/Subscriptions/sub-1/resourceGroups/rg-vault/providers/Microsoft.RecoveryServices/vaults/vault-1/\
         backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg-vm;vm-1/protectedItems/\
         VM;iaasvmcontainerv2;rg-vm;vm-1"
    );
    assert_eq!(
        reply.header_value("Azure-AsyncOperation"),
        Some(format!("{item}/operationsStatus/{id}?api-version={API}").as_str())
    );
    assert_eq!(
        location,
        format!("{item}/operationResults/{id}?api-version={API}")
    );
    assert_eq!(reply.header_value("Retry-After"), Some("7"));
    assert!(reply.header_value("x-ms-request-id").is_some());
    assert_eq!(
        reply.header_value("x-ms-ratelimit-remaining-subscription-writes"),
        Some("1199")
    );
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
#[allow(clippy::too_many_lines)] // one story, from the POST to the recovery point
async fn the_operation_gives_a_job_that_progresses_with_the_recorded_quirks() {
    let h = harness();
    let t0 = h.now();
    let id = h.accepted_backup(&request_expiring("2099-01-01T00:00:00Z"));
    let status_url = format!("{ITEM}/operationsStatus/{id}?api-version={API}");
    let running = h.get_json(&status_url);
    assert_eq!(running["status"], "InProgress");
    assert_eq!(running["id"], id.as_str());
    assert_eq!(running["name"], id.as_str());
    assert_eq!(running["endTime"], "0001-01-01T00:00:00");
    assert!(running.get("properties").is_none());
    let result_url = format!("{ITEM}/operationResults/{id}?api-version={API}");
    let pending = h.get(&result_url);
    assert_eq!(pending.status, 202);
    assert!(
        pending
            .header_value("Location")
            .unwrap()
            .contains(&format!("/operationResults/{id}"))
    );
    assert!(pending.header_value("Azure-AsyncOperation").is_some());
    assert_eq!(pending.header_value("Retry-After"), Some("7"));

    h.advance(Duration::from_secs(2));
    let done = h.get_json(&status_url);
    assert_eq!(done["status"], "Succeeded");
    assert_eq!(
        done["properties"]["objectType"],
        "OperationStatusJobExtendedInfo"
    );
    let job_id = done["properties"]["jobId"].as_str().unwrap().to_owned();
    assert!(done["endTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        h.get_json(&format!("{VAULT}/backupOperations/{id}?api-version={API}")),
        done
    );
    let finished = h.get(&result_url);
    assert_eq!((finished.status, finished.body.as_str()), (204, ""));

    let job_url = format!("{VAULT}/backupJobs/{job_id}?api-version={API}");
    let job = h.get_json(&job_url);
    assert_eq!(job["name"], job_id.as_str());
    assert_eq!(job["type"], "Microsoft.RecoveryServices/vaults/backupJobs");
    let p = &job["properties"];
    assert_eq!(p["jobType"], "AzureIaaSVMJob");
    assert_eq!(p["operation"], "Backup");
    assert_eq!(p["status"], "InProgress");
    assert_eq!(p["backupManagementType"], "AzureIaasVM");
    assert_eq!(p["entityFriendlyName"], "vm-1");
    assert_eq!(p["endTime"], "0001-01-01T00:00:00");
    assert_eq!(p["startTime"], crate::timefmt::dotnet(t0));
    assert_eq!(p["duration"], "PT2S");
    assert!(p["activityId"].is_string());
    let tasks = &p["extendedInfo"]["tasksList"];
    assert_eq!(tasks[0]["taskId"], "Take Snapshot");
    assert_eq!(tasks[0]["status"], "InProgress");
    assert_eq!(tasks[0]["endTime"], "0001-01-01T00:00:00");
    assert_eq!(tasks[1]["taskId"], "Transfer data to vault");
    assert_eq!(tasks[1]["status"], "NotStarted");
    assert_eq!(tasks[1]["startTime"], "0001-01-01T00:00:00");
    assert_eq!(tasks[1]["duration"], "PT0S");
    assert!(
        h.get_json(&format!("{ITEM}/recoveryPoints?api-version={API}"))["value"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    h.advance(Duration::from_millis(10_500));
    let transferring = h.get_json(&job_url);
    let tasks = &transferring["properties"]["extendedInfo"]["tasksList"];
    assert_eq!(tasks[0]["status"], "Completed");
    assert_eq!(tasks[0]["duration"], "PT10S");
    assert_eq!(tasks[1]["status"], "InProgress");
    assert_eq!(tasks[1]["duration"], "PT2.5S");
    assert_eq!(transferring["properties"]["duration"], "PT12.5S");

    h.advance(Duration::from_secs(100));
    let completed = h.get_json(&job_url);
    let p = &completed["properties"];
    assert_eq!(p["status"], "Completed");
    assert_eq!(p["duration"], "PT1M40S");
    assert_eq!(
        p["endTime"],
        crate::timefmt::dotnet(t0 + chrono::Duration::seconds(100))
    );
    assert_eq!(p["extendedInfo"]["tasksList"][1]["status"], "Completed");
    assert_eq!(p["extendedInfo"]["tasksList"][1]["duration"], "PT1M30S");
    assert_eq!(
        h.get_json(&job_url),
        completed,
        "a finished job reads the same again"
    );

    let points = h.get_json(&format!("{ITEM}/recoveryPoints?api-version={API}"));
    assert_eq!(points["nextLink"], Value::Null);
    let point = &points["value"][0];
    let name = point["name"].as_str().unwrap();
    assert!(name.len() >= 14 && name.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        point["type"],
        "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints"
    );
    let props = &point["properties"];
    assert_eq!(props["objectType"], "IaasVMRecoveryPoint");
    assert_eq!(props["recoveryPointType"], "AppConsistent");
    assert_eq!(props["recoveryPointTime"], crate::timefmt::dotnet(t0));
    assert_eq!(
        props["recoveryPointProperties"]["expiryTime"],
        "2099-01-01T00:00:00.0000000Z"
    );
    assert_eq!(props["recoveryPointProperties"]["isSoftDeleted"], false);
    assert_eq!(
        h.get_json(&format!("{ITEM}/recoveryPoints/{name}?api-version={API}")),
        *point
    );

    let item = h.get_json(&format!("{ITEM}?api-version={API}"));
    assert_eq!(item["properties"]["lastBackupStatus"], "Completed");
    assert_eq!(
        item["properties"]["lastBackupTime"],
        crate::service::iso(t0)
    );
    assert_eq!(
        item["properties"]["lastRecoveryPoint"],
        crate::service::iso(t0)
    );
    let state = h.state();
    assert_eq!(state.jobs[0].job_status, Some(JobStatus::Completed));
    assert_eq!(state.jobs[0].job_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(state.recovery_points[0].name, name);
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn without_an_expiry_the_point_is_kept_30_days() {
    let h = harness();
    let t0 = h.now();
    h.accepted_backup(&plain_request());
    h.advance(Duration::from_secs(100));
    let state = h.state();
    assert_eq!(state.recovery_points.len(), 1);
    assert_eq!(
        state.recovery_points[0].expiry,
        t0 + chrono::Duration::days(30)
    );
    assert_eq!(
        state.jobs[0].requested_expiry,
        t0 + chrono::Duration::days(30)
    );
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn recovery_points_are_paged_through_next_link_in_no_time_order() {
    let h = harness_with(EmulatorConfig {
        recovery_point_page_size: 6,
        ..EmulatorConfig::default()
    });
    let now = h.now();
    let expiry = now + chrono::Duration::days(30);
    for day in 1..=20 {
        crate::recovery::add_policy_point(
            &mut h.shared.lock(),
            &vm(),
            now - chrono::Duration::days(day),
            expiry,
        );
    }
    let mut url = format!("{ITEM}/recoveryPoints?api-version={API}");
    let mut times = Vec::new();
    let mut pages = 0;
    loop {
        let page = h.get_json(&url);
        pages += 1;
        for point in page["value"].as_array().unwrap() {
            assert_eq!(
                point["properties"]["recoveryPointProperties"]["ruleName"],
                "Daily"
            );
            times.push(
                point["properties"]["recoveryPointTime"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        match page["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(BASE), "absolute: {next}");
                assert!(next.contains("%24skipToken="), "{next}");
                url = next.strip_prefix(BASE).unwrap().to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(times.len(), 20);
    let mut sorted = times.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "every point once");
    assert_ne!(times, sorted, "not oldest first");
    sorted.reverse();
    assert_ne!(times, sorted, "not newest first");

    let from = (now - chrono::Duration::days(5))
        .format("%Y-%m-%d %I:%M:%S %p")
        .to_string();
    let filtered = h.get_json(&format!(
        "{ITEM}/recoveryPoints?api-version={API}&$filter=startDate eq '{from}' and endDate eq '2999-01-01 00:00:00 AM'"
    ).replace(' ', "%20"));
    assert_eq!(filtered["value"].as_array().unwrap().len(), 5);
    let bad = h.get(&format!(
        "{ITEM}/recoveryPoints?api-version={API}&%24skipToken=x"
    ));
    assert_eq!(bad.status, 400);
}

#[tokio::test(start_paused = true)]
async fn nine_backups_a_utc_day_then_refused_until_midnight_on_the_paused_clock() {
    // Tokens would expire over the hour this test lets pass.
    let h = harness_with(EmulatorConfig {
        require_token: false,
        vm_job_duration: Duration::from_secs(100),
        ..EmulatorConfig::default()
    });
    // Move the calendar to 23:00 UTC today.
    let now = h.now();
    let eleven = now
        .with_hour(23)
        .unwrap()
        .with_minute(0)
        .unwrap()
        .with_second(0)
        .unwrap();
    let eleven = if eleven > now {
        eleven
    } else {
        eleven + chrono::Duration::days(1)
    };
    h.advance((eleven - now).to_std().unwrap());
    let day = h.now().day();
    for _ in 0..9 {
        h.accepted_backup(&plain_request());
    }
    let refused = h.backup(&plain_request());
    assert_eq!(refused.status, 400);
    assert_eq!(error_code(&refused), "UserErrorMaxOnDemandBackupsReached");
    assert!(
        refused
            .body
            .contains("Too many on-demand backups for this item today")
    );
    assert_eq!(refused.header_value("Location"), None);
    let state = h.state();
    assert_eq!(
        (state.backup_posts_today, state.accepted_backups_today),
        (10, 9)
    );
    assert_eq!(state.jobs.len(), 9);

    tokio::time::advance(Duration::from_secs(59 * 60 + 59)).await;
    assert_eq!(h.now().day(), day, "23:59:59");
    assert_eq!(h.backup(&plain_request()).status, 400);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_ne!(h.now().day(), day, "midnight UTC");
    assert_eq!(h.state().backup_posts_today, 0, "the count reset");
    h.accepted_backup(&plain_request());
    let state = h.state();
    assert_eq!(
        (state.backup_posts_today, state.accepted_backups_today),
        (1, 1)
    );
    // Paused Tokio time drove the jobs too: the first nine ended an hour ago.
    assert!(
        state.jobs[..9]
            .iter()
            .all(|j| j.job_status == Some(JobStatus::Completed))
    );
    assert_eq!(state.recovery_points.len(), 9);
}

#[test]
fn backups_are_refused_outside_protected_and_for_bad_bodies() {
    let h = harness();
    for protection in [
        ProtectionState::ProtectionStopped,
        ProtectionState::BackupsSuspended,
        ProtectionState::ProtectionError,
    ] {
        crate::recovery::with_item(&mut h.shared.lock(), &vm(), |item, _| {
            item.spec.protection_state = protection;
        });
        let refused = h.backup(&plain_request());
        assert_eq!(refused.status, 400);
        assert_eq!(error_code(&refused), "BMSUserErrorProtectionStopped");
        assert!(refused.body.contains(protection.as_str()));
        let item = h.get_json(&format!("{ITEM}?api-version={API}"));
        assert_eq!(item["properties"]["protectionState"], protection.as_str());
    }
    crate::recovery::with_item(&mut h.shared.lock(), &vm(), |item, _| {
        item.spec.protection_state = ProtectionState::Protected;
    });
    for (body, code) in [
        ("not json", "InvalidRequestContent"),
        ("{}", "BMSUserErrorInvalidInput"),
        (
            r#"{"properties":{"objectType":"AzureFileShareBackupRequest"}}"#,
            "BMSUserErrorInvalidInput",
        ),
        (
            r#"{"properties":{"objectType":"IaasVMBackupRequest","recoveryPointExpiryTimeInUTC":"2001-01-01T00:00:00Z"}}"#,
            "BMSUserErrorInvalidInput",
        ),
        (
            r#"{"properties":{"objectType":"IaasVMBackupRequest","recoveryPointExpiryTimeInUTC":"tomorrow"}}"#,
            "BMSUserErrorInvalidInput",
        ),
    ] {
        let reply = h.send("POST", &format!("{ITEM}/backup?api-version={API}"), body);
        assert_eq!(
            (reply.status, error_code(&reply)),
            (400, code.to_owned()),
            "{body}"
        );
    }
    let state = h.state();
    assert!(state.jobs.is_empty());
    assert_eq!(
        (state.backup_posts_today, state.accepted_backups_today),
        (8, 0)
    );
    h.accepted_backup(&request_expiring("2099-01-01T00:00:00.1234567"));
}

#[test]
fn status_throttling_and_authorization_faults_answer_the_recovery_services_routes() {
    let h = harness();
    h.inject(Fault::new(Route::VmBackup, FaultKind::throttled(4)));
    h.inject(Fault::new(
        Route::VmBackup,
        FaultKind::backup_authorization_failed(&vm()),
    ));
    h.inject(Fault::new(
        Route::VmJob,
        FaultKind::status(503, "ServiceUnavailable", "later"),
    ));
    let throttled = h.backup(&plain_request());
    assert_eq!(
        (throttled.status, throttled.header_value("Retry-After")),
        (429, Some("4"))
    );
    assert_eq!(error_code(&throttled), "SubscriptionRequestsThrottled");
    let forbidden = h.backup(&plain_request());
    assert_eq!(forbidden.status, 403);
    let error: Value = serde_json::from_str(&forbidden.body).unwrap();
    assert_eq!(error["error"]["code"], "AuthorizationFailed");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not have authorization to perform action 'Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/backup/action' over scope"));
    assert!(message.contains(&vm().item_id()));
    assert_eq!(
        h.state().backup_posts_today,
        0,
        "faulted requests never reach the item"
    );

    let id = h.accepted_backup(&plain_request());
    h.advance(Duration::from_secs(2));
    let job_id = h.get_json(&format!("{VAULT}/backupOperations/{id}?api-version={API}"))["properties"]["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let job_url = format!("{VAULT}/backupJobs/{job_id}?api-version={API}");
    assert_eq!(h.get(&job_url).status, 503);
    assert_eq!(h.get(&job_url).status, 200);
    let logged: Vec<_> = h
        .shared
        .lock()
        .requests
        .iter()
        .map(|r| (r.status, r.faulted))
        .collect();
    assert_eq!(
        logged[..3],
        [(Some(429), true), (Some(403), true), (Some(202), false)]
    );
}

#[test]
fn job_outcome_faults_fail_cancel_or_warn_the_next_backup() {
    let h = harness();
    h.inject(Fault::new(
        Route::VmBackup,
        FaultKind::fail_job("UserErrorVmNotFound", "The VM was not found."),
    ));
    h.inject(Fault::new(Route::VmJob, FaultKind::cancel_job()));
    h.inject(Fault::new(Route::VmBackup, FaultKind::job_with_warnings()));
    let ids: Vec<String> = (0..4)
        .map(|_| h.accepted_backup(&plain_request()))
        .collect();
    h.advance(Duration::from_secs(10));
    let job = |id: &str| {
        let status = h.get_json(&format!("{ITEM}/operationsStatus/{id}?api-version={API}"));
        let job_id = status["properties"]["jobId"].as_str().unwrap().to_owned();
        h.get_json(&format!("{VAULT}/backupJobs/{job_id}?api-version={API}"))["properties"].clone()
    };
    let failed = job(&ids[0]);
    assert_eq!(failed["status"], "Failed");
    assert_eq!(
        failed["errorDetails"][0]["errorCode"],
        "UserErrorVmNotFound"
    );
    assert_eq!(
        failed["errorDetails"][0]["errorString"],
        "The VM was not found."
    );
    assert!(failed["errorDetails"][0]["recommendations"].is_array());
    assert_eq!(failed["extendedInfo"]["tasksList"][0]["status"], "Failed");
    assert_eq!(job(&ids[1])["status"], "Cancelled");
    assert_eq!(
        job(&ids[2])["status"],
        "InProgress",
        "warnings come at the end"
    );
    assert_eq!(job(&ids[3])["status"], "InProgress");
    h.advance(Duration::from_secs(100));
    assert_eq!(job(&ids[2])["status"], "CompletedWithWarnings");
    assert_eq!(job(&ids[3])["status"], "Completed");
    let state = h.state();
    assert_eq!(
        state.recovery_points.len(),
        2,
        "only completed jobs make points"
    );
    let points = h.get_json(&format!("{ITEM}/recoveryPoints?api-version={API}"));
    let mut kinds: Vec<_> = points["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["properties"]["recoveryPointType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["AppConsistent", "CrashConsistent"]);
}

#[test]
fn a_failed_operation_makes_no_job() {
    let h = harness();
    h.inject(Fault::new(
        Route::VmOperationStatus,
        FaultKind::fail_operation("BMSUserErrorVmNotReachable", "unreachable"),
    ));
    let id = h.accepted_backup(&plain_request());
    h.advance(Duration::from_secs(2));
    let status = h.get_json(&format!("{ITEM}/operationsStatus/{id}?api-version={API}"));
    assert_eq!(status["status"], "Failed");
    assert_eq!(status["error"]["code"], "BMSUserErrorVmNotReachable");
    assert!(status.get("properties").is_none());
    let result = h.get(&format!("{ITEM}/operationResults/{id}?api-version={API}"));
    assert_eq!(
        (result.status, error_code(&result).as_str()),
        (400, "BMSUserErrorVmNotReachable")
    );
    let state = h.state();
    assert_eq!(
        (
            state.jobs[0].operation_status.as_str(),
            state.jobs[0].job_id.as_ref()
        ),
        ("Failed", None)
    );
}

#[test]
fn deletes_and_other_methods_are_logged_and_refused() {
    let h = harness();
    for (method, path) in [
        ("DELETE", format!("{ITEM}?api-version={API}")),
        (
            "DELETE",
            format!("{ITEM}/recoveryPoints/123?api-version={API}"),
        ),
        (
            "PUT",
            format!("{VAULT}/backupPolicies/DefaultPolicy?api-version={API}"),
        ),
        ("GET", format!("{ITEM}/backup?api-version={API}")),
    ] {
        let reply = h.send(method, &path, "");
        assert_eq!(
            (reply.status, error_code(&reply).as_str()),
            (405, "MethodNotAllowed"),
            "{method} {path}"
        );
    }
    let deletes = h
        .shared
        .lock()
        .requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert_eq!(deletes, [Some(405), Some(405)]);
}

#[test]
fn control_endpoints_set_the_knobs_and_the_item() {
    let h = harness();
    let control = "/emulator/subscriptions/SUB-1/resourceGroups/rg-vault/vaults/vault-1/protectedVms/rg-vm/VM-1";
    let reply = h.send(
        "PUT",
        "/emulator/recoveryServices",
        r#"{"operationDuration":"1s","jobDuration":"5m","recoveryPointPageSize":2}"#,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    {
        let state = h.shared.lock();
        assert_eq!(state.config.vm_job_duration, Duration::from_mins(5));
        assert_eq!(state.config.vm_operation_duration, Duration::from_secs(1));
        assert_eq!(state.config.recovery_point_page_size, 2);
    }
    assert_eq!(
        h.send(
            "PUT",
            "/emulator/recoveryServices",
            r#"{"jobDuration":"soon"}"#
        )
        .status,
        400
    );
    assert_eq!(
        h.send(
            "PUT",
            "/emulator/recoveryServices",
            r#"{"recoveryPointPageSize":0}"#
        )
        .status,
        400
    );
    assert_eq!(h.send("GET", "/emulator/recoveryServices", "").status, 405);

    let reply = h.send(
        "PUT",
        &format!("{control}/protectionState"),
        r#"{"protectionState":"BackupsSuspended"}"#,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(
        h.state().spec.protection_state,
        ProtectionState::BackupsSuspended
    );
    assert_eq!(
        h.send(
            "PUT",
            &format!("{control}/healthStatus"),
            r#"{"healthStatus":"ActionRequired"}"#
        )
        .status,
        204
    );
    let item = h.get_json(&format!("{ITEM}?api-version={API}"));
    assert_eq!(item["properties"]["protectionStatus"], "Unhealthy");
    assert_eq!(
        h.send(
            "PUT",
            &format!("{control}/protectionState"),
            r#"{"protectionState":"Off"}"#
        )
        .status,
        400
    );

    let reply = h.send(
        "POST",
        &format!("{control}/policyRecoveryPoints"),
        r#"{"recoveryPointTime":"2026-01-01T22:30:00Z","expiryTime":"2099-01-31T22:30:00Z"}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let name: Value = serde_json::from_str(&reply.body).unwrap();
    let state = h.state();
    assert_eq!(
        state.recovery_points[0].name,
        name["name"].as_str().unwrap()
    );
    assert_eq!(
        state.last_backup_time.unwrap().to_rfc3339(),
        "2026-01-01T22:30:00+00:00"
    );
    let unknown = h.send(
        "PUT",
        &format!("{}/healthStatus", control.replace("VM-1", "vm-9")),
        r#"{"healthStatus":"Passed"}"#,
    );
    assert_eq!(unknown.status, 404);
    let logged = h.shared.lock().requests.len();
    assert_eq!(logged, 10, "control requests are logged too");
}
