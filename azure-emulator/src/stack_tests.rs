//! Tests of Azure Stack Hub infrastructure backup through the one request handler (routing, faults, token,
//! throttling, logging), with the emulator's calendar moved by hand under paused Tokio time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::backup_location::{
    BackupLocationRef, BackupLocationSpec, BackupLocationState, DEFAULT_ENCRYPTION_CERT_THUMBPRINT,
    STACK_ROLES, ShareCondition,
};
use crate::config::{EmulatorConfig, GIB};
use crate::fault::{Fault, FaultKind, Route};
use crate::reply::{Outcome, Reply};
use crate::stack_state::{Calendar, Location};
use crate::state::State;
use crate::test_support::{BASE, InProcess, error_code, operation_id};
use crate::timefmt::dotnet;

const API: &str = "2018-09-01";
const LOC: &str = "/subscriptions/sub-1/resourceGroups/System.local/providers/Microsoft.Backup.Admin/backupLocations/local";

/// Marks the in-process client of these tests, which adds the requests and reads of a backup location.
enum Stack {}

type Harness = InProcess<Stack>;

fn location() -> BackupLocationRef {
    BackupLocationRef::new("sub-1", "System.local", "local")
}

fn spec() -> BackupLocationSpec {
    BackupLocationSpec::new("sub-1", "System.local", "local")
}

/// Backups of 30 minutes (listed done after 18), Retry-After 7.
fn config() -> EmulatorConfig {
    EmulatorConfig {
        retry_after_secs: 7,
        stack_backup_duration: Duration::from_mins(30),
        // Tokens would expire over the days some tests let pass.
        require_token: false,
        ..EmulatorConfig::default()
    }
}

fn harness() -> Harness {
    harness_with(config(), spec())
}

fn harness_with(config: EmulatorConfig, spec: BackupLocationSpec) -> Harness {
    let mut state = State::new(config, BASE.to_owned());
    crate::stack::host(&mut state, spec);
    InProcess::new(state)
}

impl Harness {
    fn create_backup(&self) -> Reply {
        self.send("POST", &format!("{LOC}/createBackup?api-version={API}"), "")
    }

    /// POSTs a backup that must be accepted; returns its operation URL without the base.
    fn accepted(&self) -> String {
        let reply = self.create_backup();
        assert_eq!(reply.status, 202, "{}", reply.body);
        let location = reply.header_value("Location").unwrap();
        location.strip_prefix(BASE).unwrap().to_owned()
    }

    fn location_json(&self) -> Value {
        self.get_json(&format!("{LOC}?api-version={API}"))
    }

    fn store(&self) -> Value {
        self.location_json()["properties"]["externalStoreDefault"].clone()
    }

    /// Every backup listed, following `nextLink`.
    fn listed(&self) -> Vec<Value> {
        let mut url = format!("{LOC}/backups?api-version={API}");
        let mut all = Vec::new();
        loop {
            let page = self.get_json(&url);
            all.extend(page["value"].as_array().unwrap().iter().cloned());
            match page["nextLink"].as_str() {
                Some(next) => url = next.strip_prefix(BASE).unwrap().to_owned(),
                None => return all,
            }
        }
    }

    fn state(&self) -> BackupLocationState {
        crate::stack::snapshot(&mut self.shared.lock(), &location()).unwrap()
    }

    /// Runs `change` on the location, settled, with the time and the calendar.
    fn change(&self, change: impl FnOnce(&mut Location, DateTime<Utc>, Calendar)) {
        crate::stack::with_location(&mut self.shared.lock(), &location(), change).unwrap();
    }
}

fn info(backup: &Value) -> &Value {
    &backup["properties"]["backupInfo"]
}

/// The roles shown `Failed`.
fn failed_roles(backup: &Value) -> Vec<String> {
    info(backup)["roleStatus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "Failed")
        .map(|r| r["roleName"].as_str().unwrap().to_owned())
        .collect()
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
#[allow(clippy::too_many_lines)] // one story, from the POST to the repeatable 200
async fn a_backup_is_accepted_then_polled_to_the_backup_resource() {
    let h = harness();
    let t0 = h.now();
    let reply = h.create_backup();
    assert_eq!(reply.status, 202);
    assert_eq!(reply.body, "");
    assert_eq!(reply.header_value("Content-Type"), None);
    let location = reply.header_value("Location").unwrap();
    let id = operation_id(location);
    assert_eq!(
        location,
        format!("{BASE}{LOC}/operationResults/{id}?api-version={API}")
    );
    assert_eq!(reply.header_value("Retry-After"), Some("7"));
    assert!(reply.header_value("x-ms-request-id").is_some());
    assert_eq!(reply.header_value("Azure-AsyncOperation"), None);
    let operation = location.strip_prefix(BASE).unwrap().to_owned();

    let pending = h.get(&operation);
    assert_eq!((pending.status, pending.body.as_str()), (202, ""));
    assert_eq!(pending.header_value("Location"), Some(location));
    assert_eq!(pending.header_value("Retry-After"), Some("7"));

    let listed = h.listed();
    assert_eq!(listed.len(), 1);
    let name = listed[0]["name"]
        .as_str()
        .unwrap()
        .strip_prefix("local/")
        .unwrap()
        .to_owned();
    assert_eq!(info(&listed[0])["status"], "Running");
    assert_eq!(info(&listed[0])["timeTakenToCreate"], Value::Null);
    assert_eq!(info(&listed[0])["roleStatus"][0]["status"], "Running");
    assert_eq!(info(&listed[0])["createdDateTime"], dotnet(t0));

    h.advance(Duration::from_mins(30));
    let done = h.get(&operation);
    assert_eq!(done.status, 200, "{}", done.body);
    let backup: Value = serde_json::from_str(&done.body).unwrap();
    assert_eq!(backup["id"], format!("{LOC}/backups/{name}"));
    assert_eq!(backup["name"], format!("local/{name}"));
    assert_eq!(
        backup["type"],
        "Microsoft.Backup.Admin/backupLocations/backups"
    );
    assert_eq!(backup["location"], "local");
    assert_eq!(backup["tags"], json!({}));
    let backup_info = info(&backup);
    assert_eq!(backup_info["status"], "Succeeded");
    assert_eq!(backup_info["createdDateTime"], dotnet(t0));
    assert!(
        backup_info["createdDateTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(backup_info["timeTakenToCreate"], "PT30M");
    assert_eq!(
        backup_info["encryptionCertThumbprint"],
        DEFAULT_ENCRYPTION_CERT_THUMBPRINT
    );
    assert_eq!(backup_info["isCloudRecoveryReady"], true);
    for field in [
        "backupDataVersion",
        "deploymentID",
        "stampVersion",
        "oemVersion",
    ] {
        assert!(backup_info[field].is_string(), "{field}");
    }
    let roles = backup_info["roleStatus"].as_array().unwrap();
    assert_eq!(roles.len(), STACK_ROLES.len());
    assert!(roles.iter().all(|r| r["status"] == "Succeeded"));
    assert_eq!(roles[0]["roleName"], "ACS");

    let again = h.get(&operation);
    assert_eq!((again.status, &again.body), (200, &done.body), "repeatable");
    assert_eq!(
        h.get_json(&format!("{LOC}/backups/{name}?api-version={API}")),
        backup
    );

    let store = h.store();
    assert_eq!(store["lastBackupTime"], dotnet(t0));
    assert_eq!(store["availableCapacity"], "50 GB");
    let state = h.state();
    assert_eq!(state.create_backup_posts, 1);
    assert_eq!(state.backups[0].status, "Succeeded");
    assert_eq!(
        state.backups[0].ended,
        Some(t0 + chrono::Duration::minutes(30))
    );
    assert!(!state.backups[0].by_scheduler);
    assert_eq!(state.available_bytes, 50 * GIB);

    // `{}` is a body too; anything else is refused.
    let with_body = h.send(
        "POST",
        &format!("{LOC}/createBackup?api-version={API}"),
        "{}",
    );
    assert_eq!(with_body.status, 202);
    for body in ["[1]", "not json"] {
        let refused = h.send(
            "POST",
            &format!("{LOC}/createBackup?api-version={API}"),
            body,
        );
        assert_eq!(
            (refused.status, error_code(&refused).as_str()),
            (400, "InvalidRequestContent")
        );
    }
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn the_list_says_succeeded_while_the_operation_still_runs() {
    let h = harness();
    let operation = h.accepted();
    h.advance(Duration::from_mins(17));
    assert_eq!(info(&h.listed()[0])["status"], "Running");
    h.advance(Duration::from_mins(1));
    let early = h.listed();
    assert_eq!(info(&early[0])["status"], "Succeeded", "60% of 30 minutes");
    assert_eq!(info(&early[0])["timeTakenToCreate"], "PT18M");
    assert!(failed_roles(&early[0]).is_empty());
    assert_eq!(h.get(&operation).status, 202, "the operation is not done");
    assert_eq!(h.state().backups[0].status, "Running");
    assert_eq!(
        h.store()["lastBackupTime"],
        Value::Null,
        "nor is the location"
    );
    assert_eq!(h.store()["availableCapacity"], "60 GB");
    h.advance(Duration::from_secs(11 * 60 + 59));
    assert_eq!(h.get(&operation).status, 202);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.get(&operation).status, 200);
    assert_eq!(info(&h.listed()[0])["timeTakenToCreate"], "PT30M");
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn one_backup_at_a_time_whoever_started_it() {
    let h = harness();
    h.accepted();
    let refused = h.create_backup();
    assert_eq!(
        (refused.status, error_code(&refused).as_str()),
        (409, "BackupOperationInProgress")
    );
    assert_eq!(refused.header_value("Location"), None);
    h.advance(Duration::from_mins(20));
    assert_eq!(h.create_backup().status, 409, "listed done, still running");
    h.advance(Duration::from_mins(10));
    h.accepted();
    let state = h.state();
    assert_eq!(state.create_backup_posts, 4);
    assert_eq!(state.backups.len(), 2);

    let scheduled = harness_with(
        EmulatorConfig {
            stack_scheduler_hour: Duration::from_mins(1),
            ..config()
        },
        spec().with_scheduler(true).with_frequency_hours(4),
    );
    scheduled.advance(Duration::from_mins(4));
    assert_eq!(scheduled.create_backup().status, 409);
    let state = scheduled.state();
    assert_eq!(state.backups.len(), 1);
    assert!(state.backups[0].by_scheduler);
    assert_eq!(state.create_backup_posts, 1);
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn failed_roles_make_a_backup_partial_or_failed() {
    let h = harness();
    let t0 = h.now();
    h.change(|l, _, _| l.fail_roles(&["ECE", "srp"]).unwrap());
    let partial = h.accepted();
    h.advance(Duration::from_mins(30));
    let reply = h.get(&partial);
    assert_eq!(reply.status, 200);
    let backup: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(info(&backup)["status"], "PartialSucceeded");
    assert_eq!(failed_roles(&backup), ["ECE", "SRP"]);
    assert_eq!(info(&backup)["isCloudRecoveryReady"], false);
    assert_eq!(
        h.store()["availableCapacity"],
        "50 GB",
        "a partial backup wrote data"
    );
    assert_eq!(h.store()["lastBackupTime"], dotnet(t0));

    let next = h.accepted();
    h.advance(Duration::from_mins(30));
    assert_eq!(
        info(&h.get_json(&next))["status"],
        "Succeeded",
        "the failures were for one backup"
    );

    h.change(|l, _, _| l.fail_roles(&STACK_ROLES).unwrap());
    let failed = h.accepted();
    h.advance(Duration::from_mins(30));
    let reply = h.get(&failed);
    assert_eq!(
        reply.status, 200,
        "the operation answers with the failed backup"
    );
    let backup: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(info(&backup)["status"], "Failed");
    assert_eq!(failed_roles(&backup).len(), STACK_ROLES.len());
    assert_eq!(
        h.store()["availableCapacity"],
        "40 GB",
        "a failed backup wrote nothing"
    );
    assert_eq!(
        h.store()["lastBackupTime"],
        dotnet(t0 + chrono::Duration::minutes(30)),
        "a failed backup does not move lastBackupTime"
    );
    let statuses: Vec<String> = h.state().backups.iter().map(|b| b.status.clone()).collect();
    assert_eq!(statuses, ["PartialSucceeded", "Succeeded", "Failed"]);
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn each_share_condition_fails_its_backup_on_the_operation() {
    let h = harness();
    for (condition, code, message) in [
        (
            ShareCondition::OutOfCapacity,
            "ExternalStoreOutOfCapacity",
            "The external storage location has exceeded its capacity.",
        ),
        (
            ShareCondition::Unreachable,
            "ExternalStoreUnreachable",
            "The external storage location could not be reached.",
        ),
        (
            ShareCondition::PathNotFound,
            "ExternalStorePathNotFound",
            "The external storage location path could not be found.",
        ),
        (
            ShareCondition::AuthenticationFailed,
            "ExternalStoreAuthenticationFailed",
            "The credentials for the external storage location are not valid.",
        ),
        (
            ShareCondition::Fault,
            "BackupFault",
            "Backup failed due to an internal error.",
        ),
    ] {
        h.change(|l, _, _| l.share_condition = Some(condition));
        let operation = h.accepted();
        h.advance(Duration::from_mins(20));
        assert_eq!(h.get(&operation).status, 202, "{condition}");
        h.advance(Duration::from_mins(10));
        for _ in 0..2 {
            let failed = h.get(&operation);
            assert_eq!(failed.status, 400, "{condition}");
            let body: Value = serde_json::from_str(&failed.body).unwrap();
            assert_eq!(body, json!({"error": {"code": code, "message": message}}));
        }
        let state = h.state();
        let last = state.backups.last().unwrap();
        assert_eq!(
            (last.status.as_str(), last.share_condition),
            ("Failed", Some(condition))
        );
        assert_eq!(last.failed_roles.len(), STACK_ROLES.len());
    }
    assert_eq!(h.store()["availableCapacity"], "60 GB");
    assert_eq!(h.store()["lastBackupTime"], Value::Null);
    h.change(|l, _, _| l.share_condition = None);
    let operation = h.accepted();
    h.advance(Duration::from_mins(30));
    assert_eq!(h.get(&operation).status, 200);
}

#[test]
fn without_an_encryption_certificate_no_backup_starts() {
    let h = harness_with(config(), spec().with_encryption_cert(None));
    assert_eq!(h.store()["encryptionCertThumbprint"], Value::Null);
    let refused = h.create_backup();
    assert_eq!(refused.status, 400);
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "EncryptionCertificateNotFound", "message": "An encryption certificate must be set on the backup location before a backup can be taken."}})
    );
    let store = h.store();
    assert!(store.get("password").is_none() && store.get("encryptionCertBase64").is_none());
    h.change(|l, _, _| l.spec.encryption_cert_thumbprint = Some("AB".repeat(20)));
    h.accepted();
    h.change(|l, _, _| l.spec.encryption_cert_thumbprint = Some("CD".repeat(20)));
    let listed = h.listed();
    assert_eq!(
        info(&listed[0])["encryptionCertThumbprint"],
        "AB".repeat(20),
        "as when it started"
    );
    assert_eq!(h.store()["encryptionCertThumbprint"], "CD".repeat(20));
    assert_eq!(h.state().create_backup_posts, 2);
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn capacity_shrinks_with_each_backup_then_runs_out() {
    let h = harness_with(config(), spec().with_available_capacity(25 * GIB));
    assert_eq!(h.store()["availableCapacity"], "25 GB");
    for left in ["15 GB", "5 GB"] {
        let operation = h.accepted();
        h.advance(Duration::from_mins(30));
        assert_eq!(h.get(&operation).status, 200);
        assert_eq!(h.store()["availableCapacity"], left);
    }
    let operation = h.accepted();
    h.advance(Duration::from_mins(30));
    let full = h.get(&operation);
    assert_eq!(
        (full.status, error_code(&full).as_str()),
        (400, "ExternalStoreOutOfCapacity")
    );
    assert_eq!(h.store()["availableCapacity"], "5 GB");
    h.change(|l, _, _| l.spec.available_bytes = 29 * 1024 * GIB + 614 * GIB);
    assert_eq!(h.store()["availableCapacity"], "29.6 TB");
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn retention_prunes_backups_and_gives_their_space_back() {
    let h = harness_with(config(), spec().with_retention_days(2));
    let now = h.now();
    let add = |created, status| {
        crate::stack::with_location(&mut h.shared.lock(), &location(), |l, _, calendar| {
            l.add_finished(
                created,
                crate::stack::finished_status(status).unwrap(),
                calendar,
            )
        })
        .unwrap()
    };
    add(now - chrono::Duration::days(3), "Succeeded");
    let kept = add(now - chrono::Duration::days(1), "PartialSucceeded");
    add(now - chrono::Duration::hours(1), "Failed");
    let operation = h.accepted();
    h.advance(Duration::from_mins(30));
    let listed = h.listed();
    assert_eq!(listed.len(), 3, "the 3-day-old one is gone at once");
    assert_eq!(
        h.store()["availableCapacity"],
        "60 GB",
        "10 GiB back, 10 GiB taken"
    );
    let kept_url = format!("{LOC}/backups/{kept}?api-version={API}");
    assert_eq!(info(&h.get_json(&kept_url))["status"], "PartialSucceeded");

    h.advance(Duration::from_hours(24));
    assert_eq!(h.get(&kept_url).status, 404, "two days old");
    assert_eq!(h.listed().len(), 2);
    assert_eq!(
        h.store()["availableCapacity"],
        "70 GB",
        "the partial one's data is gone"
    );
    h.advance(Duration::from_hours(24));
    assert!(h.listed().is_empty());
    assert_eq!(
        h.store()["availableCapacity"],
        "80 GB",
        "a failed one gives nothing back"
    );
    assert_eq!(
        h.get(&operation).status,
        200,
        "a pruned backup's operation still answers"
    );
    assert!(h.state().backups.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_scheduler_starts_backups_only_while_enabled() {
    let h = harness_with(
        EmulatorConfig {
            stack_scheduler_hour: Duration::from_secs(1),
            stack_backup_duration: Duration::from_secs(2),
            ..config()
        },
        spec().with_frequency_hours(4),
    );
    // Tokio's paused clock drives the calendar too.
    tokio::time::advance(Duration::from_mins(1)).await;
    assert!(h.listed().is_empty(), "off: no backup");
    let store = h.store();
    assert_eq!(
        (
            store["isBackupSchedulerEnabled"].clone(),
            store["nextBackupTime"].clone()
        ),
        (json!(false), Value::Null)
    );

    let t1 = h.now();
    h.change(|l, now, calendar| l.set_scheduler(true, now, calendar));
    let store = h.store();
    assert_eq!(store["isBackupSchedulerEnabled"], true);
    assert_eq!(store["backupFrequencyInHours"], 4);
    assert_eq!(
        store["nextBackupTime"],
        dotnet(t1 + chrono::Duration::seconds(4))
    );
    tokio::time::advance(Duration::from_secs(13)).await;
    let state = h.state();
    let created: Vec<_> = state.backups.iter().map(|b| b.created).collect();
    assert_eq!(
        created,
        [4, 8, 12].map(|s| t1 + chrono::Duration::seconds(s))
    );
    assert!(state.backups.iter().all(|b| b.by_scheduler));
    let statuses: Vec<&str> = state.backups.iter().map(|b| b.status.as_str()).collect();
    assert_eq!(statuses, ["Succeeded", "Succeeded", "Running"]);
    assert_eq!(
        state.last_backup_time,
        Some(t1 + chrono::Duration::seconds(8))
    );
    assert_eq!(
        h.store()["lastBackupTime"],
        dotnet(t1 + chrono::Duration::seconds(8))
    );
    assert_eq!(
        h.store()["nextBackupTime"],
        dotnet(t1 + chrono::Duration::seconds(16))
    );
    assert_eq!(state.create_backup_posts, 0);

    h.change(|l, now, calendar| l.set_scheduler(false, now, calendar));
    h.advance(Duration::from_mins(5));
    let state = h.state();
    assert_eq!(state.backups.len(), 3, "off again");
    assert_eq!(
        state.last_backup_time,
        Some(t1 + chrono::Duration::seconds(12))
    );
    assert_eq!(h.store()["nextBackupTime"], Value::Null);
}

// Paused: the calendar stands still between reads.
#[tokio::test(start_paused = true)]
async fn backups_are_paged_through_next_link_in_no_time_order() {
    let h = harness_with(
        EmulatorConfig {
            stack_backup_page_size: 4,
            ..config()
        },
        spec().with_retention_days(14),
    );
    let now = h.now();
    for hour in 1..=10 {
        crate::stack::with_location(&mut h.shared.lock(), &location(), |l, _, calendar| {
            l.add_finished(
                now - chrono::Duration::hours(hour * 12),
                crate::stack_state::Status::Succeeded,
                calendar,
            )
        });
    }
    let mut url = format!("{LOC}/backups?api-version={API}");
    let mut times = Vec::new();
    let mut pages = 0;
    loop {
        let page = h.get_json(&url);
        pages += 1;
        for backup in page["value"].as_array().unwrap() {
            times.push(info(backup)["createdDateTime"].as_str().unwrap().to_owned());
        }
        match page["nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&format!("{BASE}{LOC}/backups?")),
                    "absolute: {next}"
                );
                assert!(next.contains("%24skipToken="), "{next}");
                url = next.strip_prefix(BASE).unwrap().to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = times.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10, "every backup once");
    assert_ne!(times, sorted, "not oldest first");
    sorted.reverse();
    assert_ne!(times, sorted, "not newest first");
    let bad = h.get(&format!("{LOC}/backups?api-version={API}&%24skipToken=x"));
    assert_eq!(bad.status, 400);
}

#[test]
fn api_versions_methods_and_unknown_names_are_answered_as_arm_does() {
    let h = harness();
    let missing = h.get(LOC);
    assert_eq!(
        (missing.status, error_code(&missing).as_str()),
        (400, "MissingApiVersionParameter")
    );
    let unknown = h.get(&format!("{LOC}?api-version=2020-01-01"));
    assert_eq!(
        (unknown.status, error_code(&unknown).as_str()),
        (400, "NoRegisteredProviderFound")
    );
    for version in ["2016-05-01", "2018-09-01", "2021-09-01"] {
        assert_eq!(
            h.get(&format!("{LOC}?api-version={version}")).status,
            200,
            "{version}"
        );
    }
    let upper = h.get_json(&format!("{}?api-version={API}", LOC.to_uppercase()));
    assert_eq!(upper["name"], "local");
    assert_eq!(upper["type"], "Microsoft.Backup.Admin/backupLocations");
    let store = &upper["properties"]["externalStoreDefault"];
    assert_eq!(store["path"], r"\\fileserver\share\stamp");
    assert_eq!(store["userName"], r"DOMAIN\backupadmin");
    assert_eq!(store["backupRetentionPeriodInDays"], 7);
    assert_eq!(store["backupFrequencyInHours"], 12);
    assert_eq!(store["availableCapacity"], "60 GB");

    let collection = LOC.strip_suffix("/local").unwrap();
    let list = h.get_json(&format!("{collection}?api-version={API}"));
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    assert_eq!(list["value"][0]["id"], LOC);
    let other_group = h.get_json(&format!(
        "{}?api-version={API}",
        collection.replace("System.local", "System.other")
    ));
    assert_eq!(other_group["value"], json!([]));

    let gone = h.get(&format!(
        "{}?api-version={API}",
        LOC.replace("/local", "/remote")
    ));
    assert_eq!(
        (gone.status, error_code(&gone).as_str()),
        (404, "ResourceNotFound")
    );
    assert_eq!(gone.header_value("x-ms-failure-cause"), Some("gateway"));
    for path in ["backups/nope", "operationResults/nope"] {
        let reply = h.get(&format!("{LOC}/{path}?api-version={API}"));
        assert_eq!(
            (reply.status, error_code(&reply).as_str()),
            (404, "ResourceNotFound"),
            "{path}"
        );
    }
    let restore = h.send(
        "POST",
        &format!("{LOC}/backups/b/restore?api-version={API}"),
        "{}",
    );
    assert_eq!(restore.status, 404);
    for (method, path) in [
        ("DELETE", LOC.to_owned()),
        ("PUT", LOC.to_owned()),
        ("PATCH", LOC.to_owned()),
        ("GET", format!("{LOC}/createBackup")),
        ("POST", format!("{LOC}/backups")),
        ("DELETE", format!("{LOC}/backups/b")),
        ("POST", collection.to_owned()),
    ] {
        let reply = h.send(method, &format!("{path}?api-version={API}"), "");
        assert_eq!(
            (reply.status, error_code(&reply).as_str()),
            (405, "MethodNotAllowed"),
            "{method} {path}"
        );
    }
    assert_eq!(h.state().create_backup_posts, 0);
}

#[test]
fn tokens_throttling_and_faults_apply_as_on_every_arm_path() {
    let h = harness_with(
        EmulatorConfig {
            require_token: true,
            ..config()
        },
        spec(),
    );
    let url = format!("{LOC}/createBackup?api-version={API}");
    let Outcome::Reply(anonymous) = h.outcome("POST", &url, "", None) else {
        panic!("no reply");
    };
    assert_eq!(
        (anonymous.status, error_code(&anonymous).as_str()),
        (401, "InvalidAuthenticationToken")
    );

    h.inject(Fault::new(
        Route::StackCreateBackup,
        FaultKind::create_backup_authorization_failed(&location()),
    ));
    let forbidden = h.create_backup();
    assert_eq!(
        (forbidden.status, error_code(&forbidden).as_str()),
        (403, "AuthorizationFailed")
    );
    assert!(
        forbidden
            .body
            .contains("Microsoft.Backup.Admin/backupLocations/createBackup/action")
    );
    assert!(forbidden.body.contains(LOC));
    assert_eq!(h.state().create_backup_posts, 0, "the fault answered first");

    h.inject(Fault::new(Route::AnyArm, FaultKind::throttled(3)));
    let throttled = h.get(&format!("{LOC}/backups?api-version={API}"));
    assert_eq!(
        (throttled.status, throttled.header_value("Retry-After")),
        (429, Some("3"))
    );
    h.inject(Fault::new(Route::StackLocation, FaultKind::BadJson));
    assert!(
        serde_json::from_str::<Value>(&h.get(&format!("{LOC}?api-version={API}")).body).is_err()
    );
    let operation = h.accepted();
    h.inject(Fault::new(
        Route::StackOperation,
        FaultKind::status(500, "InternalServerError", "boom"),
    ));
    assert_eq!(h.get(&operation).status, 500);
    assert_eq!(h.get(&operation).status, 202, "one use");
    h.inject(Fault::new(
        Route::StackBackups,
        FaultKind::answer(200, r#"{"value":[]}"#),
    ));
    assert_eq!(
        h.get(&format!("{LOC}/backups?api-version={API}")).body,
        r#"{"value":[]}"#
    );
    h.inject(Fault::new(Route::StackBackups, FaultKind::Reset));
    assert!(matches!(
        h.outcome(
            "GET",
            &format!("{LOC}/backups?api-version={API}"),
            "",
            Some(&h.token)
        ),
        Outcome::Reset
    ));

    let logged = h.shared.lock().requests.clone();
    assert!(
        logged
            .iter()
            .any(|r| r.faulted && r.path().ends_with("/createBackup"))
    );
}

/// The stamp's metadata is outside `AnyArm`: only its own route faults it.
#[test]
fn only_its_own_route_faults_the_metadata() {
    let h = harness();
    h.inject(Fault::new(Route::AnyArm, FaultKind::Hang));
    let Outcome::Reply(metadata) = h.outcome(
        "GET",
        "/metadata/endpoints?api-version=2015-01-01",
        "",
        None,
    ) else {
        panic!("AnyArm does not cover the metadata");
    };
    assert_eq!(metadata.status, 200);
    assert!(matches!(
        h.outcome(
            "GET",
            &format!("{LOC}?api-version={API}"),
            "",
            Some(&h.token)
        ),
        Outcome::Hang
    ));
    h.inject(Fault::new(Route::StackMetadata, FaultKind::Hang));
    assert!(matches!(
        h.outcome(
            "GET",
            "/metadata/endpoints?api-version=2015-01-01",
            "",
            None
        ),
        Outcome::Hang
    ));
}

#[test]
fn an_adfs_token_opens_the_admin_arm() {
    let h = harness_with(
        EmulatorConfig {
            require_token: true,
            ..config()
        },
        spec(),
    );
    let form = "grant_type=client_credentials&client_id=app&client_secret=s3cr3t&resource=https%3A%2F%2Fadminmanagement.adfs.azurestack.local%2F4de154de-f8a8-4017-af41-df619da68155";
    let Outcome::Reply(issued) = h.outcome("POST", "/adfs/oauth2/token", form, None) else {
        panic!("no reply");
    };
    assert_eq!(issued.status, 200, "{}", issued.body);
    let body: Value = serde_json::from_str(&issued.body).unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"].is_u64());
    let token = body["access_token"].as_str().unwrap();
    let Outcome::Reply(reply) =
        h.outcome("GET", &format!("{LOC}?api-version={API}"), "", Some(token))
    else {
        panic!("no reply");
    };
    assert_eq!(reply.status, 200);
    let requests = h.shared.lock().token_requests.clone();
    assert_eq!(requests[0].kind, Some(crate::log::TokenKind::Adfs));
    assert_eq!(
        requests[0].scope.as_deref(),
        Some("https://adminmanagement.adfs.azurestack.local/4de154de-f8a8-4017-af41-df619da68155")
    );
    let logged = h.shared.lock().requests.clone();
    assert!(
        logged[0].body.contains("client_secret=***"),
        "{}",
        logged[0].body
    );

    h.inject(Fault::new(
        Route::Token,
        FaultKind::status(400, "invalid_client", "MSIS9622: no"),
    ));
    let Outcome::Reply(refused) = h.outcome("POST", "/adfs/oauth2/token", form, None) else {
        panic!("no reply");
    };
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "MSIS9622: no"})
    );
}
