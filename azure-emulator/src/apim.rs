//! The API Management part of ARM: get a service, its configuration sync state, start a backup or restore,
//! and poll the operation.
//!
//! Documented emulator choices where Azure's behaviour is unknown: a backup or restore asked of a service that
//! is already running one (it stays busy until that operation completes or fails) is refused with 409 and ARM's
//! error shape `{"error":{"code":"Conflict","message":"Another operation is in progress on the API Management
//! service '{name}' ({Backup|Restore} {operation id}); retry when it has finished."}}`, without a `Location`,
//! and moves nothing; Consumption and v2 tiers are refused with 400 `MethodNotAllowedInPricingTier`; bodies
//! with fields the api-version does not define are refused with 400 `InvalidParameters`. The checks run in this
//! order: unknown service (404), body (400), tier (400), busy (409), storage access (400).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng as _;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::StorageAccount;
use crate::operation;
use crate::reply::{Reply, apim_error, arm_error};
use crate::routes::ServicePath;
use crate::service::Service;
use crate::state::{BlobTarget, Operation, OperationKind, Progress};
use crate::state::{ServiceKey, Shared, State, service_key};

/// The first api-version whose backup body has `accessType` (managed identities).
const FIRST_ACCESS_TYPE_VERSION: &str = "2021-04-01";

/// `GET .../service/{name}`: the service resource, with its etag also in a quoted `ETag` header.
pub(crate) fn get_service(state: &State, path: &ServicePath) -> Reply {
    match find(state, path) {
        Ok((_, service)) => Reply::json(200, &service.resource_json(&state.config.region))
            .header("ETag", format!("\"{}\"", service.etag())),
        Err(reply) => reply,
    }
}

/// `GET .../service/{name}/tenant/configuration/syncState`.
pub(crate) fn sync_state(state: &State, path: &ServicePath) -> Reply {
    match find(state, path) {
        Ok((_, service)) => Reply::json(200, &service.sync_state_json()),
        Err(reply) => reply,
    }
}

/// `POST .../service/{name}/backup` or `/restore`: validate, then accept with 202 and start the operation. The
/// accepted service goes to `Updating`, which moves its etag and `lastModifiedAt` as any ARM action does; a
/// refused request moves nothing.
pub(crate) fn start(
    state: &mut State,
    shared: &Arc<Shared>,
    path: &ServicePath,
    kind: OperationKind,
    api_version: &str,
    body: &[u8],
) -> Reply {
    let key = match find(state, path) {
        Ok((key, _)) => key,
        Err(reply) => return reply,
    };
    let request = match BackupRequest::parse(api_version, body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let service = &state.services[&key];
    if service.tier_lacks_backup() {
        return apim_error(
            400,
            "MethodNotAllowedInPricingTier",
            &format!(
                "{} is not supported in the '{}' pricing tier.",
                kind.word(),
                service.spec.sku
            ),
        );
    }
    if let Some(running) = &service.busy_with {
        return arm_error(
            409,
            "Conflict",
            &format!(
                "Another operation is in progress on the API Management service '{}' ({running}); retry when it \
                 has finished.",
                service.spec.name
            ),
        );
    }
    let account = match authorize(state, service, &request) {
        Ok(account) => account,
        Err(reply) => return reply,
    };

    let name = service.spec.name.clone();
    let resource_id = service.spec.resource_id();
    let suffix: u32 = rand::rng().random();
    let id = BASE64.encode(format!(
        "{}:{name}_{}_{suffix:08x}",
        state.config.region,
        kind.word()
    ));
    let operation = Operation {
        kind,
        service: key.clone(),
        api_version: api_version.to_owned(),
        target: BlobTarget {
            account,
            container: request.container,
            blob: request.backup_name,
        },
        ends_at: Instant::now() + state.duration_of(kind),
        progress: Progress::Running,
    };
    state.operations.insert(id.clone(), operation);
    let now = state.now();
    state
        .services
        .get_mut(&key)
        .expect("found above")
        .accept_operation(format!("{} {id}", kind.word()), now);
    tokio::spawn(operation::run(Arc::clone(shared), id.clone()));

    let slash = if state.config.double_slash_first_location {
        "//"
    } else {
        "/"
    };
    Reply::empty(202)
        .header(
            "Location",
            location(&state.base_url, &resource_id, slash, &id, api_version),
        )
        .header("Retry-After", state.config.retry_after_secs)
}

/// `GET .../operationresults/{id}`: 202 while running, then the operation's outcome, again and again.
pub(crate) fn poll(state: &mut State, path: &ServicePath, id: &str) -> Reply {
    let wanted = service_key(&path.subscription, &path.resource_group, &path.name);
    let Some(op) = state.operations.get(id).filter(|op| op.service == wanted) else {
        return arm_error(
            404,
            "NotFound",
            &format!("The operation '{id}' was not found on this service."),
        );
    };
    if op.progress == Progress::Running {
        let kind = op.kind;
        if let Some((code, message)) = state.faults.take_operation_failure(kind.into()) {
            let service = op.service.clone();
            operation::release(&mut state.services, &service);
            let op = state.operations.get_mut(id).expect("found above");
            op.progress = Progress::Failed {
                status: 400,
                code,
                message,
            };
        }
    }
    let op = &state.operations[id];
    match &op.progress {
        Progress::Running => {
            let resource_id = state.services[&op.service].spec.resource_id();
            Reply::empty(202)
                .header(
                    "Location",
                    location(&state.base_url, &resource_id, "/", id, &op.api_version),
                )
                .header("Retry-After", state.config.retry_after_secs)
        }
        Progress::Succeeded(resource) => Reply::json(200, resource),
        Progress::Failed {
            status,
            code,
            message,
        } => apim_error(*status, code, message),
    }
}

impl From<OperationKind> for crate::fault::Route {
    fn from(kind: OperationKind) -> Self {
        match kind {
            OperationKind::Backup => Self::Backup,
            OperationKind::Restore => Self::Restore,
        }
    }
}

/// The operation URL: `{base}{service id}{slash}operationresults/{id}?api-version={v}`.
fn location(base: &str, resource_id: &str, slash: &str, id: &str, api_version: &str) -> String {
    format!("{base}{resource_id}{slash}operationresults/{id}?api-version={api_version}")
}

/// The hosted service a path names, or ARM's 404.
pub(crate) fn find<'a>(
    state: &'a State,
    path: &ServicePath,
) -> Result<(ServiceKey, &'a Service), Reply> {
    let key = service_key(&path.subscription, &path.resource_group, &path.name);
    match state.services.get(&key) {
        Some(service) => Ok((key, service)),
        None => Err(arm_error(
            404,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.ApiManagement/service/{}' under resource group '{}' was not found. For \
                 more details please go to https://aka.ms/ARMResourceNotFoundFix",
                path.name, path.resource_group
            ),
        )
        .header("x-ms-failure-cause", "gateway")),
    }
}

/// How API Management is to reach the storage account.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Key(String),
    SystemIdentity,
    UserIdentity(String),
}

/// A validated backup or restore body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BackupRequest {
    storage_account: String,
    container: String,
    backup_name: String,
    access: Access,
}

impl BackupRequest {
    /// Validates a body against the api-version's `ApiManagementServiceBackupRestoreParameters`.
    fn parse(api_version: &str, body: &[u8]) -> Result<Self, Reply> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            arm_error(
                400,
                "InvalidRequestContent",
                &format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        })?;
        let Value::Object(fields) = value else {
            return Err(invalid("the request body must be a JSON object."));
        };
        let with_access_type =
            api_version.get(..10).unwrap_or(api_version) >= FIRST_ACCESS_TYPE_VERSION;
        let allowed: &[&str] = if with_access_type {
            &[
                "storageAccount",
                "containerName",
                "backupName",
                "accessType",
                "accessKey",
                "clientId",
            ]
        } else {
            &["storageAccount", "accessKey", "containerName", "backupName"]
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(&format!(
                "'{unknown}' is not a parameter of api-version {api_version}."
            )));
        }
        let storage_account = required(&fields, "storageAccount")?;
        let container = required(&fields, "containerName")?;
        let backup_name = required(&fields, "backupName")?;
        let access_type = if with_access_type {
            optional(&fields, "accessType")?.unwrap_or_else(|| "AccessKey".to_owned())
        } else {
            "AccessKey".to_owned()
        };
        let access = match access_type.as_str() {
            "AccessKey" => Access::Key(required(&fields, "accessKey")?),
            "SystemAssignedManagedIdentity" => Access::SystemIdentity,
            "UserAssignedManagedIdentity" => Access::UserIdentity(required(&fields, "clientId")?),
            other => {
                return Err(invalid(&format!(
                    "accessType '{other}' is not one of AccessKey, SystemAssignedManagedIdentity, \
                     UserAssignedManagedIdentity."
                )));
            }
        };
        Ok(Self {
            storage_account,
            container,
            backup_name,
            access,
        })
    }
}

/// A required, non-empty string field.
fn required(fields: &Map<String, Value>, name: &str) -> Result<String, Reply> {
    optional(fields, name)?.ok_or_else(|| invalid(&format!("'{name}' is required.")))
}

/// An optional string field; empty counts as absent.
fn optional(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Reply> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("'{name}' must be a string."))),
    }
}

/// API Management's 400 `InvalidParameters`.
fn invalid(what: &str) -> Reply {
    apim_error(
        400,
        "InvalidParameters",
        &format!("Invalid parameter: {what}"),
    )
}

/// Checks that the service may write to the account as asked, returning the account.
fn authorize(
    state: &State,
    service: &Service,
    request: &BackupRequest,
) -> Result<StorageAccount, Reply> {
    let not_authorized = || {
        invalid(&format!(
            "This request is not authorized to perform this operation.\r\nParameter name: backupContainerName \
             (value: [{}])",
            request.container
        ))
    };
    let account = state
        .accounts
        .get(&request.storage_account.to_ascii_lowercase())
        .ok_or_else(not_authorized)?;
    match &request.access {
        Access::Key(key) if *key == account.key => {}
        Access::Key(_) => return Err(not_authorized()),
        Access::SystemIdentity if !service.spec.system_identity => {
            return Err(invalid(&format!(
                "The API Management service '{}' has no system-assigned managed identity.",
                service.spec.name
            )));
        }
        Access::UserIdentity(client_id)
            if !service
                .spec
                .user_identity_client_ids
                .iter()
                .any(|id| id.eq_ignore_ascii_case(client_id)) =>
        {
            return Err(invalid(&format!(
                "No user-assigned managed identity with client id '{client_id}' is assigned to the API \
                 Management service '{}'.",
                service.spec.name
            )));
        }
        Access::SystemIdentity | Access::UserIdentity(_)
            if !account.managed_identities_authorized =>
        {
            return Err(not_authorized());
        }
        Access::SystemIdentity | Access::UserIdentity(_) => {}
    }
    Ok(account.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(api_version: &str, body: &str) -> Result<BackupRequest, String> {
        BackupRequest::parse(api_version, body.as_bytes()).map_err(|reply| reply.body)
    }

    const FOUR: &str =
        r#"{"storageAccount":"acct","accessKey":"k","containerName":"c","backupName":"b"}"#;

    #[test]
    fn legacy_versions_take_exactly_four_fields() {
        for version in ["2019-12-01", "2020-12-01", "2021-01-01-preview"] {
            let request = parse(version, FOUR).unwrap();
            assert_eq!(request.access, Access::Key("k".into()));
            let error = parse(
                version,
                r#"{"storageAccount":"acct","containerName":"c","backupName":"b","accessType":"SystemAssignedManagedIdentity"}"#,
            )
            .unwrap_err();
            assert!(
                error.contains("InvalidParameters") && error.contains("accessType"),
                "{error}"
            );
            let error = parse(
                version,
                r#"{"storageAccount":"acct","containerName":"c","backupName":"b"}"#,
            )
            .unwrap_err();
            assert!(error.contains("'accessKey' is required"), "{error}");
        }
    }

    #[test]
    fn newer_versions_take_an_access_type() {
        for version in ["2021-04-01-preview", "2021-08-01", "2024-05-01"] {
            assert_eq!(
                parse(version, FOUR).unwrap().access,
                Access::Key("k".into())
            );
            let system = r#"{"storageAccount":"a","containerName":"c","backupName":"b","accessType":"SystemAssignedManagedIdentity"}"#;
            assert_eq!(
                parse(version, system).unwrap().access,
                Access::SystemIdentity
            );
            let user = r#"{"storageAccount":"a","containerName":"c","backupName":"b","accessType":"UserAssignedManagedIdentity","clientId":"id1"}"#;
            assert_eq!(
                parse(version, user).unwrap().access,
                Access::UserIdentity("id1".into())
            );
            let no_client = r#"{"storageAccount":"a","containerName":"c","backupName":"b","accessType":"UserAssignedManagedIdentity"}"#;
            assert!(
                parse(version, no_client)
                    .unwrap_err()
                    .contains("'clientId' is required")
            );
            let no_key = r#"{"storageAccount":"a","containerName":"c","backupName":"b"}"#;
            assert!(
                parse(version, no_key)
                    .unwrap_err()
                    .contains("'accessKey' is required")
            );
        }
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        assert!(
            parse("2024-05-01", "not json")
                .unwrap_err()
                .contains("InvalidRequestContent")
        );
        assert!(
            parse("2024-05-01", "[]")
                .unwrap_err()
                .contains("InvalidParameters")
        );
        let number = r#"{"storageAccount":1,"containerName":"c","backupName":"b","accessKey":"k"}"#;
        assert!(
            parse("2024-05-01", number)
                .unwrap_err()
                .contains("must be a string")
        );
    }
}
