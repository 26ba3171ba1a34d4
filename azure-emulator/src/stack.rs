//! Azure Stack Hub infrastructure backup (`Microsoft.Backup.Admin`) over ARM: the handlers of the backup
//! location paths, after the token, throttling and api-version checks every ARM request gets, and the
//! functions behind the [`crate::Emulator`] knobs. See the crate documentation for the routes, their answers
//! and the error codes (several of which are UNVERIFIED emulator choices).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::backup_location::{BackupLocationRef, BackupLocationSpec, BackupLocationState};
use crate::recovery::{scramble, skip_token};
use crate::reply::{Reply, arm_error};
use crate::routes::{ServicePath, StackAction};
use crate::stack_json;
use crate::stack_state::{Calendar, Location, StackOperation, Status, location_key};
use crate::state::State;

/// The api-versions of `Microsoft.Backup.Admin` (2021-09-01 is a preview; 2018-09-01 the supported one).
pub(crate) const API_VERSIONS: [&str; 3] = ["2016-05-01", "2018-09-01", "2021-09-01"];

/// Hosts a backup location (replacing one of the same name, with its backups).
pub(crate) fn host(state: &mut State, spec: BackupLocationSpec) {
    let now = state.now();
    let calendar = Calendar::of(&state.config);
    let key = location_key(&spec.subscription, &spec.resource_group, &spec.location);
    state
        .stack_locations
        .insert(key, Location::new(spec, now, calendar));
}

/// Runs `change` on a hosted location, settled first; `None` when no such location is hosted.
pub(crate) fn with_location<T>(
    state: &mut State,
    location: &BackupLocationRef,
    change: impl FnOnce(&mut Location, DateTime<Utc>, Calendar) -> T,
) -> Option<T> {
    let now = state.now();
    let calendar = Calendar::of(&state.config);
    let hosted = state.stack_locations.get_mut(&location_key(
        &location.subscription,
        &location.resource_group,
        &location.location,
    ))?;
    hosted.settle(now, calendar);
    Some(change(hosted, now, calendar))
}

/// A snapshot of a hosted location, settled first.
pub(crate) fn snapshot(
    state: &mut State,
    location: &BackupLocationRef,
) -> Option<BackupLocationState> {
    with_location(state, location, |hosted, _, _| hosted.snapshot())
}

/// Parses a backup status a test gives for a finished backup.
pub(crate) fn finished_status(text: &str) -> Option<Status> {
    [Status::Succeeded, Status::PartialSucceeded, Status::Failed]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
}

/// Answers an ARM request under `Microsoft.Backup.Admin/backupLocations`.
pub(crate) fn answer(
    state: &mut State,
    path: &ServicePath,
    action: &StackAction,
    method: &str,
    api_version: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    if !API_VERSIONS.contains(&api_version) {
        return arm_error(
            400,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location '{}' and API version '{api_version}' for \
                 type 'backupLocations'. The supported api-versions are '{}'.",
                path.name,
                API_VERSIONS.join(", ")
            ),
        );
    }
    let now = state.now();
    let calendar = Calendar::of(&state.config);
    match action {
        StackAction::Locations if method == "GET" => return list_locations(state, path),
        StackAction::Locations => return method_not_allowed(method),
        StackAction::Other => {
            return arm_error(
                404,
                "NotFound",
                "The Azure emulator does not serve this path.",
            );
        }
        _ => {}
    }
    let key = location_key(&path.subscription, &path.resource_group, &path.name);
    let State {
        stack_locations,
        base_url,
        config,
        ..
    } = state;
    let Some(location) = stack_locations.get_mut(&key) else {
        return location_not_found(path);
    };
    location.settle(now, calendar);
    match (method, action) {
        ("GET", StackAction::Location) => Reply::json(200, &stack_json::location(location)),
        ("POST", StackAction::CreateBackup) => {
            let retry_after = config.retry_after_secs;
            create_backup(location, now, calendar, api_version, body).map_or_else(
                |refusal| refusal,
                |operation| {
                    with_operation_headers(
                        Reply::empty(202),
                        base_url,
                        &location.spec.reference(),
                        &operation,
                        retry_after,
                    )
                },
            )
        }
        ("GET", StackAction::Operation { id }) => {
            let Some(backup) = location.by_operation(id) else {
                return not_found(&format!("The operation '{id}' was not found."));
            };
            if !backup.has_ended() {
                let operation = backup.operation.clone().unwrap_or(StackOperation {
                    id: id.clone(),
                    api_version: api_version.to_owned(),
                });
                return with_operation_headers(
                    Reply::empty(202),
                    base_url,
                    &location.spec.reference(),
                    &operation,
                    config.retry_after_secs,
                );
            }
            match backup.condition {
                Some(condition) => arm_error(400, condition.code(), condition.message()),
                None => Reply::json(200, &stack_json::backup(location, backup, now)),
            }
        }
        ("GET", StackAction::Backups) => {
            let page_size = config.stack_backup_page_size.max(1);
            list_backups(location, base_url, api_version, query, page_size, now)
        }
        ("GET", StackAction::Backup { name }) => match location.backup(name) {
            Some(backup) => Reply::json(200, &stack_json::backup(location, backup, now)),
            None => not_found(&format!(
                "The backup '{name}' was not found at backup location '{}'.",
                location.spec.location
            )),
        },
        (method, _) => method_not_allowed(method),
    }
}

/// `POST .../createBackup`: count it, read the (empty or `{}`) body, check the certificate and that no backup
/// runs, then start one; returns its operation or the refusal.
fn create_backup(
    location: &mut Location,
    now: DateTime<Utc>,
    calendar: Calendar,
    api_version: &str,
    body: &[u8],
) -> Result<StackOperation, Reply> {
    location.create_backup_posts += 1;
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(_) | Value::Null) => {}
            Ok(_) => {
                return Err(arm_error(
                    400,
                    "InvalidRequestContent",
                    "The request content must be empty or a JSON object.",
                ));
            }
            Err(e) => {
                return Err(arm_error(
                    400,
                    "InvalidRequestContent",
                    &format!(
                        "The request content was invalid and could not be deserialized: '{e}'."
                    ),
                ));
            }
        }
    }
    if location.spec.encryption_cert_thumbprint.is_none() {
        return Err(arm_error(
            400,
            "EncryptionCertificateNotFound",
            "An encryption certificate must be set on the backup location before a backup can be taken.",
        ));
    }
    if location.running().is_some() {
        return Err(arm_error(
            409,
            "BackupOperationInProgress",
            &format!(
                "A backup is already in progress at backup location '{}'; only one backup can run at a time. \
                 Try again when it has finished.",
                location.spec.location
            ),
        ));
    }
    let operation = StackOperation {
        id: crate::reply::uuid_like(),
        api_version: api_version.to_owned(),
    };
    location.start(now, calendar, Some(operation.clone()), false);
    Ok(operation)
}

/// Adds `Location: {base}{location id}/operationResults/{id}?api-version={v}` and `Retry-After`.
fn with_operation_headers(
    reply: Reply,
    base_url: &str,
    location: &BackupLocationRef,
    operation: &StackOperation,
    retry_after: u64,
) -> Reply {
    reply
        .header(
            "Location",
            format!(
                "{base_url}{}/operationResults/{}?api-version={}",
                location.location_id(),
                operation.id,
                operation.api_version
            ),
        )
        .header("Retry-After", retry_after)
}

/// `GET .../backupLocations`: the hosted locations of the group, by name.
fn list_locations(state: &mut State, path: &ServicePath) -> Reply {
    let now = state.now();
    let calendar = Calendar::of(&state.config);
    let group = (
        path.subscription.to_ascii_lowercase(),
        path.resource_group.to_ascii_lowercase(),
    );
    let value: Vec<Value> = state
        .stack_locations
        .iter_mut()
        .filter(|(key, _)| (&key.0, &key.1) == (&group.0, &group.1))
        .map(|(_, location)| {
            location.settle(now, calendar);
            stack_json::location(location)
        })
        .collect();
    Reply::json(200, &json!({ "value": value }))
}

/// `GET .../backups`: a page of the backups on the share in a stable order that is not by time; `nextLink`
/// carries `$skipToken` (an offset), null on the last page.
fn list_backups(
    location: &Location,
    base_url: &str,
    api_version: &str,
    query: &str,
    page_size: usize,
    now: DateTime<Utc>,
) -> Reply {
    let skip = match skip_token(query, "InvalidSkipToken") {
        Ok(skip) => skip,
        Err(refused) => return refused,
    };
    let mut backups: Vec<_> = location.backups.iter().collect();
    // Not by time: clients must sort.
    backups.sort_by_key(|b| scramble(&b.name));
    let page: Vec<Value> = backups
        .iter()
        .skip(skip)
        .take(page_size)
        .map(|b| stack_json::backup(location, b, now))
        .collect();
    let next = skip.saturating_add(page_size);
    let next_link = (next < backups.len()).then(|| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("api-version", api_version);
        query.append_pair("$skipToken", &next.to_string());
        format!(
            "{base_url}{}/backups?{}",
            location.spec.reference().location_id(),
            query.finish()
        )
    });
    Reply::json(200, &json!({"value": page, "nextLink": next_link}))
}

/// ARM's 404 for a backup location that does not exist.
fn location_not_found(path: &ServicePath) -> Reply {
    arm_error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.Backup.Admin/backupLocations/{}' under resource group '{}' was not found. \
             For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            path.name, path.resource_group
        ),
    )
    .header("x-ms-failure-cause", "gateway")
}

/// 404 for something at a location.
fn not_found(message: &str) -> Reply {
    arm_error(404, "ResourceNotFound", message)
}

fn method_not_allowed(method: &str) -> Reply {
    arm_error(
        405,
        "MethodNotAllowed",
        &format!("The requested resource does not support http method '{method}'."),
    )
}

#[cfg(test)]
#[path = "stack_tests.rs"]
mod tests;
