//! Recovery Services (Azure Backup of `IaaS` VMs) over real loopback HTTP: a client follows the headers and ids
//! the emulator hands out, as rpod does.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use azure_emulator::{
    EmulatorConfig, Fault, FaultKind, JobStatus, ProtectedVmSpec, ProtectionState, Route,
};

use crate::support::{Arm, SUB, header, json};

const API: &str = "2025-08-01";

fn spec() -> ProtectedVmSpec {
    ProtectedVmSpec::new(SUB, "rg-vault", "vault-1", "rg-vm", "vm-1")
}

/// The item's URL as the .NET client writes it: `%3B` for `;`.
fn item_url(arm: &Arm) -> String {
    format!(
        "{}{}",
        arm.emulator.base_url(),
        spec().reference().item_id().replace(';', "%3B")
    )
}

/// GETs `url` every 50 ms until `done` holds for the JSON answer (within 10 s).
async fn poll_until(arm: &Arm, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = arm.get(url).await;
        assert_eq!(response.status(), 200, "{url}");
        let body = json(response).await;
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "never done: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_on_demand_backup_runs_from_the_post_to_a_recovery_point() {
    let arm = Arm::start(EmulatorConfig::fast()).await;
    arm.emulator.add_protected_vm(spec());
    // Seven fractional digits, as .NET clients send and Azure writes back.
    let expiry = format!(
        "{}.1234567Z",
        (Utc::now() + chrono::Duration::days(7)).format("%Y-%m-%dT%H:%M:%S")
    );
    let accepted = arm
        .post(
            &format!("{}/backup?api-version={API}", item_url(&arm)),
            &json!({"properties": {"objectType": "IaasVMBackupRequest", "recoveryPointExpiryTimeInUTC": expiry}}),
        )
        .await;
    assert_eq!(accepted.status(), 202);
    assert_eq!(header(&accepted, "retry-after").as_deref(), Some("1"));
    let status_url = header(&accepted, "azure-asyncoperation").unwrap();
    assert!(status_url.contains("/Subscriptions/") && status_url.contains(";iaasvmcontainerv2;"));
    let location = header(&accepted, "location").unwrap();
    assert_eq!(accepted.text().await.unwrap(), "");

    let status = poll_until(&arm, &status_url, |s| s["status"] != "InProgress").await;
    assert_eq!(status["status"], "Succeeded");
    assert_eq!(arm.get(&location).await.status(), 204);
    let job_url = format!(
        "{}{}/backupJobs/{}?api-version={API}",
        arm.emulator.base_url(),
        spec().reference().vault_id(),
        status["properties"]["jobId"].as_str().unwrap()
    );
    let job = poll_until(&arm, &job_url, |j| {
        j["properties"]["status"] != "InProgress"
    })
    .await;
    assert_eq!(job["properties"]["status"], "Completed");

    let points = json(
        arm.get(&format!(
            "{}/recoveryPoints?api-version={API}",
            item_url(&arm)
        ))
        .await,
    )
    .await;
    let point = &points["value"][0];
    assert_eq!(
        point["properties"]["recoveryPointProperties"]["expiryTime"],
        expiry.as_str()
    );
    let state = arm.emulator.protected_vm(&spec().reference()).unwrap();
    assert_eq!(state.jobs[0].job_status, Some(JobStatus::Completed));
    assert_eq!(
        state.recovery_points[0].name,
        point["name"].as_str().unwrap()
    );
    assert_eq!(
        (state.backup_posts_today, state.accepted_backups_today),
        (1, 1)
    );
    let item = json(
        arm.get(&format!("{}?api-version={API}", item_url(&arm)))
            .await,
    )
    .await;
    assert_eq!(item["properties"]["lastBackupStatus"], "Completed");
}

#[tokio::test]
async fn policy_points_faults_and_deletes_are_seen_by_the_client_and_the_log() {
    let arm = Arm::start(EmulatorConfig::fast()).await;
    arm.emulator.add_protected_vm(spec());
    let vm = spec().reference();
    let now = arm.emulator.now();
    let name = arm.emulator.add_policy_recovery_point(
        &vm,
        now - chrono::Duration::hours(3),
        now + chrono::Duration::days(30),
    );
    arm.emulator.set_recovery_point_page_size(1);
    arm.emulator.add_policy_recovery_point(
        &vm,
        now - chrono::Duration::hours(27),
        now + chrono::Duration::days(29),
    );
    let first = json(
        arm.get(&format!(
            "{}/recoveryPoints?api-version={API}",
            item_url(&arm)
        ))
        .await,
    )
    .await;
    assert_eq!(first["value"].as_array().unwrap().len(), 1);
    let second = json(arm.get(first["nextLink"].as_str().unwrap()).await).await;
    assert_eq!(second["nextLink"], Value::Null);
    let names = [&first["value"][0]["name"], &second["value"][0]["name"]];
    assert!(names.iter().any(|n| *n == name.as_str()));

    arm.emulator.inject(Fault::new(
        Route::VmBackup,
        FaultKind::backup_authorization_failed(&vm),
    ));
    let body = json!({"properties": {"objectType": "IaasVMBackupRequest"}});
    let backup_url = format!("{}/backup?api-version={API}", item_url(&arm));
    let forbidden = arm.post(&backup_url, &body).await;
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        json(forbidden).await["error"]["code"],
        "AuthorizationFailed"
    );

    arm.emulator
        .set_protection_state(&vm, ProtectionState::ProtectionStopped);
    let refused = arm.post(&backup_url, &body).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        json(refused).await["error"]["code"],
        "BMSUserErrorProtectionStopped"
    );

    let delete = arm
        .http
        .delete(format!("{}?api-version={API}", item_url(&arm)))
        .bearer_auth(&arm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 405);
    let deletes: Vec<_> = arm
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0]
            .path()
            .contains("VM%3Biaasvmcontainerv2%3Brg-vm%3Bvm-1")
    );
    assert_eq!(deletes[0].status, Some(405));
}
