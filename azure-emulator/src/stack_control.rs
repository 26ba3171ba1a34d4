//! The emulator's own control endpoints for Azure Stack Hub backup locations, for trying rpod by hand against
//! the runnable emulator. Like the others (see `control`), they are not ARM: no token, no throttling, no
//! faults, no ARM headers; they are logged like every request. All live under
//! `/emulator/subscriptions/{sub}/resourceGroups/{rg}/backupLocations/{location}`, take `PUT` and answer 204:
//!
//! - `.../scheduler` with `{"enabled":true}`, as [`crate::Emulator::set_backup_scheduler`].
//! - `.../shareCondition` with `{"condition":"OutOfCapacity"}` (or `Unreachable`, `PathNotFound`,
//!   `AuthenticationFailed`, `Fault`; `null` clears it), as [`crate::Emulator::set_share_condition`].
//! - `.../encryptionCert` with `{"thumbprint":"<40 hex>"}` (`null` removes it), as
//!   [`crate::Emulator::set_encryption_cert`].
//! - `.../availableCapacity` with `{"bytes":64424509440}`, as [`crate::Emulator::set_available_capacity`].
//! - `.../failedRoles` with `{"roles":["ACS","ECE"]}` (`[]` clears them), as [`crate::Emulator::fail_roles`].
//!
//! They answer 400 `InvalidRequestContent` to a body they cannot read, 404 `NotFound` when no such location
//! is hosted and 405 `MethodNotAllowed` to another method; a refused request changes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::backup_location::{BackupLocationRef, ShareCondition};
use crate::control::{check_method, not_hosted, object};
use crate::reply::{Reply, arm_error};
use crate::routes::StackControl;
use crate::stack::with_location;
use crate::stack_state::{Calendar, Location, location_key};
use crate::state::State;

/// The path under which a backup location's control endpoints live.
pub(crate) fn location_path(location: &BackupLocationRef) -> String {
    format!(
        "/emulator/subscriptions/{}/resourceGroups/{}/backupLocations/{}",
        location.subscription, location.resource_group, location.location
    )
}

/// A change read from a control body, applied once the location is found and settled.
type Change = Box<dyn FnOnce(&mut Location, DateTime<Utc>, Calendar) -> Result<(), String>>;

/// Answers a control request on a backup location.
pub(crate) fn answer(
    state: &mut State,
    location: &BackupLocationRef,
    action: StackControl,
    method: &str,
    body: &[u8],
) -> Reply {
    if let Some(reply) = check_method("PUT", method) {
        return reply;
    }
    let key = location_key(
        &location.subscription,
        &location.resource_group,
        &location.location,
    );
    if !state.stack_locations.contains_key(&key) {
        return not_hosted(&format!(
            "backup location {}/{}/{}",
            location.subscription, location.resource_group, location.location
        ));
    }
    let change = match parse(action, body) {
        Ok(change) => change,
        Err(why) => return arm_error(400, "InvalidRequestContent", &why),
    };
    let applied = with_location(state, location, change);
    match applied {
        Some(Ok(())) => Reply::empty(204),
        Some(Err(why)) => arm_error(400, "InvalidRequestContent", &why),
        None => arm_error(404, "NotFound", "The backup location is gone."),
    }
}

/// Reads the body of `action` into a change.
fn parse(action: StackControl, body: &[u8]) -> Result<Change, String> {
    match action {
        StackControl::Scheduler => {
            let enabled = parse_enabled(body)?;
            Ok(Box::new(move |location, now, calendar| {
                location.set_scheduler(enabled, now, calendar);
                Ok(())
            }))
        }
        StackControl::ShareCondition => {
            let fields = object(body, &["condition"])?;
            let condition = match fields.get("condition") {
                None => {
                    return Err("'condition' is required (a condition's name, or null).".to_owned());
                }
                Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name.parse::<ShareCondition>()?),
                Some(_) => return Err("'condition' must be a string or null.".to_owned()),
            };
            Ok(Box::new(move |location, _, _| {
                location.share_condition = condition;
                Ok(())
            }))
        }
        StackControl::EncryptionCert => {
            let fields = object(body, &["thumbprint"])?;
            let thumbprint = match fields.get("thumbprint") {
                None => return Err("'thumbprint' is required (a thumbprint, or null).".to_owned()),
                Some(Value::Null) => None,
                Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
                Some(_) => {
                    return Err("'thumbprint' must be a non-empty string or null.".to_owned());
                }
            };
            Ok(Box::new(move |location, _, _| {
                location.spec.encryption_cert_thumbprint = thumbprint;
                Ok(())
            }))
        }
        StackControl::AvailableCapacity => {
            let fields = object(body, &["bytes"])?;
            let bytes = fields
                .get("bytes")
                .and_then(Value::as_u64)
                .ok_or("'bytes' is required and must be a whole number of bytes.")?;
            Ok(Box::new(move |location, _, _| {
                location.spec.available_bytes = bytes;
                Ok(())
            }))
        }
        StackControl::FailedRoles => {
            let fields = object(body, &["roles"])?;
            let roles: Vec<String> = fields
                .get("roles")
                .and_then(Value::as_array)
                .and_then(|roles| {
                    roles
                        .iter()
                        .map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .ok_or("'roles' is required and must be an array of role names.")?;
            Ok(Box::new(move |location, _, _| {
                let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
                location.fail_roles(&roles)
            }))
        }
    }
}

/// `{"enabled":bool}`.
fn parse_enabled(body: &[u8]) -> Result<bool, String> {
    object(body, &["enabled"])?
        .get("enabled")
        .and_then(Value::as_bool)
        .ok_or_else(|| "'enabled' is required and must be true or false.".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_location::BackupLocationSpec;
    use crate::config::EmulatorConfig;

    fn state() -> (State, BackupLocationRef) {
        let mut state = State::new(EmulatorConfig::default(), "http://127.0.0.1:1".to_owned());
        let spec = BackupLocationSpec::new("s", "System.local", "local");
        crate::stack::host(&mut state, spec.clone());
        (state, spec.reference())
    }

    #[test]
    fn each_endpoint_changes_its_setting() {
        let (mut state, location) = state();
        let put = |state: &mut State, action, body: &str| {
            answer(state, &location, action, "PUT", body.as_bytes()).status
        };
        assert_eq!(
            put(&mut state, StackControl::Scheduler, r#"{"enabled":true}"#),
            204
        );
        assert_eq!(
            put(
                &mut state,
                StackControl::ShareCondition,
                r#"{"condition":"pathnotfound"}"#
            ),
            204
        );
        assert_eq!(
            put(
                &mut state,
                StackControl::EncryptionCert,
                r#"{"thumbprint":null}"#
            ),
            204
        );
        assert_eq!(
            put(
                &mut state,
                StackControl::AvailableCapacity,
                r#"{"bytes":1024}"#
            ),
            204
        );
        assert_eq!(
            put(
                &mut state,
                StackControl::FailedRoles,
                r#"{"roles":["ECE"]}"#
            ),
            204
        );
        let snapshot = crate::stack::snapshot(&mut state, &location).unwrap();
        assert!(snapshot.scheduler_enabled);
        assert!(snapshot.next_backup_time.is_some());
        assert_eq!(snapshot.share_condition, Some(ShareCondition::PathNotFound));
        assert_eq!(snapshot.spec.encryption_cert_thumbprint, None);
        assert_eq!(snapshot.available_bytes, 1024);

        assert_eq!(
            put(
                &mut state,
                StackControl::ShareCondition,
                r#"{"condition":null}"#
            ),
            204
        );
        assert_eq!(
            put(&mut state, StackControl::Scheduler, r#"{"enabled":false}"#),
            204
        );
        let snapshot = crate::stack::snapshot(&mut state, &location).unwrap();
        assert_eq!(snapshot.share_condition, None);
        assert_eq!(snapshot.next_backup_time, None);
    }

    #[test]
    fn bad_bodies_methods_and_locations_are_refused() {
        let (mut state, location) = state();
        for (action, body) in [
            (StackControl::Scheduler, "{}"),
            (StackControl::Scheduler, r#"{"enabled":"yes"}"#),
            (StackControl::ShareCondition, r#"{"condition":"Full"}"#),
            (StackControl::EncryptionCert, r#"{"thumbprint":""}"#),
            (StackControl::AvailableCapacity, r#"{"bytes":-1}"#),
            (StackControl::FailedRoles, r#"{"roles":["Nope"]}"#),
            (StackControl::FailedRoles, "not json"),
        ] {
            let reply = answer(&mut state, &location, action, "PUT", body.as_bytes());
            assert_eq!(reply.status, 400, "{action:?} {body}");
        }
        assert_eq!(
            answer(&mut state, &location, StackControl::Scheduler, "POST", b"").status,
            405
        );
        let other = BackupLocationRef::new("s", "System.local", "elsewhere");
        assert_eq!(
            answer(
                &mut state,
                &other,
                StackControl::Scheduler,
                "PUT",
                br#"{"enabled":true}"#
            )
            .status,
            404
        );
        let snapshot = crate::stack::snapshot(&mut state, &location).unwrap();
        assert!(!snapshot.scheduler_enabled);
        assert!(snapshot.spec.encryption_cert_thumbprint.is_some());
    }
}
