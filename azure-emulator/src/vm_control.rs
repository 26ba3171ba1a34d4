//! The emulator's own control endpoints for Recovery Services, for trying rpod by hand against the runnable
//! emulator. Like the API Management ones (see `control`), they are not ARM: no token, no throttling, no
//! faults, no ARM headers; they are logged like every request.
//!
//! - `PUT /emulator/recoveryServices` with any of `{"operationDuration":"2s","jobDuration":"5m",
//!   "recoveryPointPageSize":10}` (durations in humantime form): as [`crate::Emulator::set_vm_operation_duration`],
//!   [`crate::Emulator::set_vm_job_duration`] and [`crate::Emulator::set_recovery_point_page_size`]; 204.
//! - Under `/emulator/subscriptions/{sub}/resourceGroups/{vaultRg}/vaults/{vault}/protectedVms/{vmRg}/{vm}`:
//!   - `PUT .../protectionState` with `{"protectionState":"ProtectionStopped"}`, as
//!     [`crate::Emulator::set_protection_state`]; 204.
//!   - `PUT .../healthStatus` with `{"healthStatus":"ActionRequired"}`, as
//!     [`crate::Emulator::set_health_status`]; 204.
//!   - `POST .../policyRecoveryPoints` with `{"recoveryPointTime":"<RFC 3339>","expiryTime":"<RFC 3339>"}`
//!     (`recoveryPointTime` defaults to now), as [`crate::Emulator::add_policy_recovery_point`]; 200
//!     `{"name":"<recovery point name>"}`.
//!
//! They answer 400 `InvalidRequestContent` to a body they cannot read, 404 `NotFound` when no such VM is
//! protected and 405 `MethodNotAllowed` to another method; a refused request changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::control::{check_method, object};
use crate::recovery;
use crate::reply::{Reply, arm_error};
use crate::routes::VmControl;
use crate::state::State;
use crate::vm::{HealthStatus, ProtectedVmRef, ProtectionState};

/// The path under which a protected VM's control endpoints live.
pub(crate) fn vm_path(vm: &ProtectedVmRef) -> String {
    format!(
        "/emulator/subscriptions/{}/resourceGroups/{}/vaults/{}/protectedVms/{}/{}",
        vm.subscription, vm.vault_resource_group, vm.vault, vm.vm_resource_group, vm.vm
    )
}

/// Answers a control request on a protected VM.
pub(crate) fn answer(
    state: &mut State,
    vm: &ProtectedVmRef,
    action: VmControl,
    method: &str,
    body: &[u8],
) -> Reply {
    if let Some(reply) = check_method(action.method(), method) {
        return reply;
    }
    if recovery::snapshot(state, vm).is_none() {
        return arm_error(
            404,
            "NotFound",
            &format!(
                "The emulator protects no VM {}/{} in vault {}/{}/{}.",
                vm.vm_resource_group, vm.vm, vm.subscription, vm.vault_resource_group, vm.vault
            ),
        );
    }
    let result = match action {
        VmControl::ProtectionState => object(body, &["protectionState"])
            .and_then(|f| string(&f, "protectionState")?.parse::<ProtectionState>())
            .map(|protection| {
                recovery::with_item(state, vm, |item, _| item.spec.protection_state = protection);
                Reply::empty(204)
            }),
        VmControl::HealthStatus => object(body, &["healthStatus"])
            .and_then(|f| string(&f, "healthStatus")?.parse::<HealthStatus>())
            .map(|health| {
                recovery::with_item(state, vm, |item, _| item.spec.health_status = health);
                Reply::empty(204)
            }),
        VmControl::PolicyRecoveryPoint => object(body, &["recoveryPointTime", "expiryTime"])
            .and_then(|fields| {
                let time = match fields.get("recoveryPointTime") {
                    None | Some(Value::Null) => state.now(),
                    Some(_) => date(&fields, "recoveryPointTime")?,
                };
                let expiry = date(&fields, "expiryTime")?;
                let name = recovery::add_policy_point(state, vm, time, expiry)
                    .expect("the VM was found above");
                Ok(Reply::json(200, &json!({"name": name})))
            }),
    };
    result.unwrap_or_else(|why| arm_error(400, "InvalidRequestContent", &why))
}

/// `PUT /emulator/recoveryServices`: the durations and the page size.
pub(crate) fn settings(state: &mut State, method: &str, body: &[u8]) -> Reply {
    if let Some(reply) = check_method("PUT", method) {
        return reply;
    }
    let parsed = object(
        body,
        &["operationDuration", "jobDuration", "recoveryPointPageSize"],
    )
    .and_then(|fields| {
        let duration = |name: &str| -> Result<Option<Duration>, String> {
            match fields.get(name) {
                None => Ok(None),
                Some(_) => humantime::parse_duration(string(&fields, name)?)
                    .map(Some)
                    .map_err(|e| {
                        format!("'{name}' is not a duration such as \"30s\" or \"5m\": {e}")
                    }),
            }
        };
        let page_size = match fields.get("recoveryPointPageSize") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or("'recoveryPointPageSize' must be a whole number of at least 1")?,
            ),
        };
        Ok((
            duration("operationDuration")?,
            duration("jobDuration")?,
            page_size,
        ))
    });
    match parsed {
        Ok((operation, job, page_size)) => {
            let config = &mut state.config;
            if let Some(operation) = operation {
                config.vm_operation_duration = operation;
            }
            if let Some(job) = job {
                config.vm_job_duration = job;
            }
            if let Some(page_size) = page_size {
                config.recovery_point_page_size = page_size;
            }
            Reply::empty(204)
        }
        Err(why) => arm_error(400, "InvalidRequestContent", &why),
    }
}

/// A required string field.
fn string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("'{name}' is required and must be a string."))
}

/// A required RFC 3339 date field.
fn date(fields: &Map<String, Value>, name: &str) -> Result<DateTime<Utc>, String> {
    let text = string(fields, name)?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{name}' '{text}' is not an RFC 3339 date: {e}"))
}
