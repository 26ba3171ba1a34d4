//! Recovery Services (Azure Backup of `IaaS` VMs) over ARM: the handlers of the vault paths, after the token,
//! throttling and api-version checks every ARM request gets. See the crate documentation for the routes, their
//! answers and the error codes (several of which are UNVERIFIED emulator choices).

use chrono::{DateTime, Duration, NaiveDateTime, Timelike as _, Utc};
use serde_json::{Value, json};

use crate::fault::FaultKind;
use crate::reply::{Reply, arm_error};
use crate::routes::{ItemAction, ServicePath, VaultAction};
use crate::state::State;
use crate::vault::{
    Accepted, DAILY_ON_DEMAND_LIMIT, DEFAULT_ON_DEMAND_RETENTION, Item, ItemKey, OperationPhase,
    Vault, item_key, vault_key,
};
use crate::vault_json;
use crate::vm::{ProtectedVmRef, ProtectedVmSpec, ProtectedVmState, RecoveryPointSource};

/// The oldest and newest api-versions (by their date) Recovery Services answers.
const OLDEST_API_VERSION: &str = "2016-06-01";
const NEWEST_API_VERSION: &str = "2026-03-31";

/// The only backup request type a VM takes.
const VM_BACKUP_REQUEST: &str = "IaasVMBackupRequest";

/// Hosts a protected VM (creating its vault when needed).
pub(crate) fn host(state: &mut State, spec: ProtectedVmSpec) {
    let now = state.now();
    let vault = state
        .vaults
        .entry(vault_key(
            &spec.subscription,
            &spec.vault_resource_group,
            &spec.vault,
        ))
        .or_insert_with(|| Vault::new(&spec.subscription, &spec.vault_resource_group, &spec.vault));
    vault.add(spec, now);
}

/// Runs `change` on a hosted VM's item (its vault settled first); `None` when no such VM is hosted.
pub(crate) fn with_item<T>(
    state: &mut State,
    vm: &ProtectedVmRef,
    change: impl FnOnce(&mut Item, DateTime<Utc>) -> T,
) -> Option<T> {
    let now = state.now();
    let vault = state.vaults.get_mut(&vault_key(
        &vm.subscription,
        &vm.vault_resource_group,
        &vm.vault,
    ))?;
    vault.settle(now);
    let item = vault
        .items
        .get_mut(&item_key(&vm.vm_resource_group, &vm.vm))?;
    Some(change(item, now))
}

/// A snapshot of a hosted VM, its vault settled first.
pub(crate) fn snapshot(state: &mut State, vm: &ProtectedVmRef) -> Option<ProtectedVmState> {
    let now = state.now();
    let vault = state.vaults.get_mut(&vault_key(
        &vm.subscription,
        &vm.vault_resource_group,
        &vm.vault,
    ))?;
    vault.settle(now);
    vault.snapshot(&item_key(&vm.vm_resource_group, &vm.vm), now)
}

/// Adds a recovery point made by the vault's policy; returns its name.
pub(crate) fn add_policy_point(
    state: &mut State,
    vm: &ProtectedVmRef,
    time: DateTime<Utc>,
    expiry: DateTime<Utc>,
) -> Option<String> {
    with_item(state, vm, |item, _| {
        let name = item.add_point(time, expiry, RecoveryPointSource::Policy, "AppConsistent");
        item.last_backup_status = Some("Completed".to_owned());
        item.last_backup_time = Some(item.last_backup_time.map_or(time, |t| t.max(time)));
        name
    })
}

/// Answers an ARM request under a vault.
pub(crate) fn answer(
    state: &mut State,
    path: &ServicePath,
    action: &VaultAction,
    method: &str,
    api_version: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    if let Err(reply) = check_version(api_version, &state.config.region) {
        return reply;
    }
    let now = state.now();
    let key = vault_key(&path.subscription, &path.resource_group, &path.name);
    let Some(vault) = state.vaults.get_mut(&key) else {
        return vault_not_found(path);
    };
    vault.settle(now);
    let vault = &state.vaults[&key];
    match (method, action) {
        ("GET", VaultAction::Vault) => {
            Reply::json(200, &vault_json::vault(vault, &state.config.region))
        }
        ("GET", VaultAction::Policy { name }) => {
            match vault.policies.get(&name.to_ascii_lowercase()) {
                Some(policy) => Reply::json(200, &vault_json::policy(vault, policy)),
                None => not_found(&format!(
                    "The backup policy '{name}' was not found in vault '{}'.",
                    vault.name
                )),
            }
        }
        ("GET", VaultAction::Job { id }) => match vault.backup_by_job(id) {
            Some(backup) => {
                let item = &vault.items[&backup.item];
                Reply::json(200, &vault_json::job(vault, backup, item, now))
            }
            None => not_found(&format!(
                "The job '{id}' was not found in vault '{}'.",
                vault.name
            )),
        },
        ("GET", VaultAction::Operation { id }) => match vault.backup_by_operation(id) {
            Some(backup) => Reply::json(200, &vault_json::operation_status(backup)),
            None => operation_not_found(id),
        },
        (
            _,
            VaultAction::Item {
                container,
                item,
                action,
            },
        ) if !matches!(action, ItemAction::Other) => {
            let Some(item_key) =
                parse_item(container, item).filter(|k| vault.items.contains_key(k))
            else {
                return not_found(&format!(
                    "The protected item '{item}' in container '{container}' was not found in vault '{}'.",
                    vault.name
                ));
            };
            item_answer(
                state,
                &key,
                &item_key,
                method,
                action,
                api_version,
                query,
                body,
            )
        }
        (_, VaultAction::Other | VaultAction::Item { .. }) => arm_error(
            404,
            "NotFound",
            "The Azure emulator does not serve this path.",
        ),
        (method, _) => method_not_allowed(method),
    }
}

/// Answers a request on a hosted protected item.
#[allow(clippy::too_many_arguments)]
fn item_answer(
    state: &mut State,
    vault_key: &(String, String, String),
    item_key: &ItemKey,
    method: &str,
    action: &ItemAction,
    api_version: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    let now = state.now();
    if (method, action) == ("POST", &ItemAction::Backup) {
        return backup(state, vault_key, item_key, api_version, body);
    }
    let vault = &state.vaults[vault_key];
    let item = &vault.items[item_key];
    match (method, action) {
        ("GET", ItemAction::Get) => {
            let extended =
                filter(query).is_some_and(|f| f.to_ascii_lowercase().contains("extendedinfo"));
            Reply::json(200, &vault_json::protected_item(vault, item, now, extended))
        }
        ("GET", ItemAction::OperationStatus { id }) => {
            match vault
                .backup_by_operation(id)
                .filter(|b| &b.item == item_key)
            {
                Some(backup) => Reply::json(200, &vault_json::operation_status(backup)),
                None => operation_not_found(id),
            }
        }
        ("GET", ItemAction::OperationResult { id }) => {
            let Some(backup) = vault
                .backup_by_operation(id)
                .filter(|b| &b.item == item_key)
            else {
                return operation_not_found(id);
            };
            match &backup.phase {
                OperationPhase::Running => with_operation_headers(
                    Reply::empty(202),
                    &state.base_url,
                    &item.reference(),
                    &backup.operation_id,
                    &backup.api_version,
                    state.config.retry_after_secs,
                ),
                OperationPhase::Succeeded => Reply::empty(204),
                OperationPhase::Failed { code, message } => arm_error(400, code, message),
            }
        }
        ("GET", ItemAction::RecoveryPoints) => list_points(state, item, api_version, query, now),
        ("GET", ItemAction::RecoveryPoint { id }) => {
            match item.live_points(now).find(|p| p.name == *id) {
                Some(point) => Reply::json(200, &vault_json::recovery_point(item, point)),
                None => not_found(&format!(
                    "The recovery point '{id}' was not found for item '{}'.",
                    item.reference().item_name()
                )),
            }
        }
        (method, _) => method_not_allowed(method),
    }
}

/// `POST .../protectedItems/{item}/backup`: validate, apply the protection state and the daily limit, then
/// accept with 202 and the two operation headers.
fn backup(
    state: &mut State,
    vault_key: &(String, String, String),
    item_key: &ItemKey,
    api_version: &str,
    body: &[u8],
) -> Reply {
    let now = state.now();
    let State {
        vaults,
        faults,
        config,
        base_url,
        ..
    } = state;
    let vault = vaults.get_mut(vault_key).expect("checked by the caller");
    let item = vault
        .items
        .get_mut(item_key)
        .expect("checked by the caller");
    let accepted_today = item.count_post(now);
    let expiry = match parse_backup_request(body, now) {
        Ok(expiry) => expiry,
        Err(reply) => return reply,
    };
    let protection = item.spec.protection_state;
    if !protection.accepts_backups() {
        return arm_error(
            400,
            "BMSUserErrorProtectionStopped",
            &format!(
                "An on-demand backup cannot be triggered for '{}': its protection state is '{protection}'. \
                 Resume protection of the item and try again.",
                item.spec.vm
            ),
        );
    }
    if accepted_today >= DAILY_ON_DEMAND_LIMIT {
        return arm_error(
            400,
            "UserErrorMaxOnDemandBackupsReached",
            &format!(
                "Too many on-demand backups for this item today: at most {DAILY_ON_DEMAND_LIMIT} on-demand \
                 backups can be triggered per item per day (UTC). Try again after 00:00 UTC."
            ),
        );
    }
    item.count_accepted();
    let vm = item.reference();
    let (operation_failure, outcome) = match faults.take_vm_outcome() {
        Some(FaultKind::FailOperation { code, message }) => (Some((code, message)), None),
        Some(FaultKind::JobOutcome(outcome)) => (None, Some(outcome)),
        _ => (None, None),
    };
    let operation_id = vault.accept(
        item_key,
        now,
        Accepted {
            api_version: api_version.to_owned(),
            expiry,
            operation_duration: chrono_duration(config.vm_operation_duration),
            job_duration: chrono_duration(config.vm_job_duration),
            operation_failure,
            outcome,
        },
    );
    with_operation_headers(
        Reply::empty(202),
        base_url,
        &vm,
        &operation_id,
        api_version,
        config.retry_after_secs,
    )
}

/// Adds `Azure-AsyncOperation` (`.../operationsStatus/{id}`), `Location` (`.../operationResults/{id}`) and
/// `Retry-After`, with `/Subscriptions/` and raw `;` as recorded.
fn with_operation_headers(
    reply: Reply,
    base_url: &str,
    vm: &ProtectedVmRef,
    operation_id: &str,
    api_version: &str,
    retry_after: u64,
) -> Reply {
    let item = format!(
        "{base_url}{}",
        vm.item_id()
            .replacen("/subscriptions/", "/Subscriptions/", 1)
    );
    reply
        .header(
            "Azure-AsyncOperation",
            format!("{item}/operationsStatus/{operation_id}?api-version={api_version}"),
        )
        .header(
            "Location",
            format!("{item}/operationResults/{operation_id}?api-version={api_version}"),
        )
        .header("Retry-After", retry_after)
}

/// Reads a `BackupRequestResource` body; returns the recovery point's expiry (30 days from `now` when absent).
fn parse_backup_request(body: &[u8], now: DateTime<Utc>) -> Result<DateTime<Utc>, Reply> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        arm_error(
            400,
            "InvalidRequestContent",
            &format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let invalid = |what: &str| {
        arm_error(
            400,
            "BMSUserErrorInvalidInput",
            &format!("Input provided for the call is invalid: {what}"),
        )
    };
    let Some(properties) = value.get("properties").and_then(Value::as_object) else {
        return Err(invalid("'properties' is required."));
    };
    match properties.get("objectType").and_then(Value::as_str) {
        Some(VM_BACKUP_REQUEST) => {}
        Some(other) => {
            return Err(invalid(&format!(
                "objectType '{other}' is not a backup request for an Azure virtual machine; expected \
                 '{VM_BACKUP_REQUEST}'."
            )));
        }
        None => return Err(invalid("'properties.objectType' is required.")),
    }
    let expiry = match properties.get("recoveryPointExpiryTimeInUTC") {
        None | Some(Value::Null) => return Ok(now + DEFAULT_ON_DEMAND_RETENTION),
        Some(Value::String(text)) => parse_time(text).ok_or_else(|| {
            invalid(&format!(
                "recoveryPointExpiryTimeInUTC '{text}' is not a date-time such as 2026-12-01T02:16:20Z."
            ))
        })?,
        Some(_) => return Err(invalid("recoveryPointExpiryTimeInUTC must be a string.")),
    };
    if expiry <= now {
        return Err(invalid(
            "recoveryPointExpiryTimeInUTC must be in the future.",
        ));
    }
    if expiry > now + Duration::days(99 * 365 + 24) {
        return Err(invalid(
            "recoveryPointExpiryTimeInUTC must be at most 99 years away.",
        ));
    }
    Ok(expiry)
}

/// An RFC 3339 date-time, or one without a zone (taken as UTC), as .NET clients may send.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

/// `GET .../recoveryPoints`: a page of the live points in a stable but unsorted order, optionally filtered by
/// `$filter=startDate eq '...' and endDate eq '...'`; `nextLink` carries `$skipToken` (an offset) and the
/// filter.
fn list_points(
    state: &State,
    item: &Item,
    api_version: &str,
    query: &str,
    now: DateTime<Utc>,
) -> Reply {
    let filter_text = filter(query);
    let (start, end) = match filter_text.as_deref().map(parse_date_filter) {
        None => (None, None),
        Some(Ok(range)) => range,
        Some(Err(why)) => return arm_error(400, "BMSUserErrorInvalidInput", &why),
    };
    let skip = match skip_token(query, "BMSUserErrorInvalidInput") {
        Ok(skip) => skip,
        Err(refused) => return refused,
    };
    let mut points: Vec<_> = item
        .live_points(now)
        .filter(|p| start.is_none_or(|s| p.time >= s) && end.is_none_or(|e| p.time <= e))
        .collect();
    // Not by time: clients must sort.
    points.sort_by_key(|p| scramble(&p.name));
    let size = state.config.recovery_point_page_size.max(1);
    let page: Vec<Value> = points
        .iter()
        .skip(skip)
        .take(size)
        .map(|p| vault_json::recovery_point(item, p))
        .collect();
    let next = skip + size;
    let next_link = (next < points.len()).then(|| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("api-version", api_version);
        if let Some(filter) = &filter_text {
            query.append_pair("$filter", filter);
        }
        query.append_pair("$skipToken", &next.to_string());
        format!(
            "{}{}/recoveryPoints?{}",
            state.base_url,
            item.reference().item_id(),
            query.finish()
        )
    });
    Reply::json(200, &json!({"value": page, "nextLink": next_link}))
}

/// A stable order that is not the order of time: FNV-1a of the name.
pub(crate) fn scramble(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A `$filter` range: from, to (inclusive), each optional.
type DateRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `startDate eq '2017-12-01 00:00:00 AM' and endDate eq '2017-12-31 11:59:59 PM'` (either part optional;
/// RFC 3339 values are taken too).
fn parse_date_filter(filter: &str) -> Result<DateRange, String> {
    let (mut start, mut end) = (None, None);
    for clause in filter.split(" and ") {
        let mut words = clause.trim().splitn(3, ' ');
        let (field, op, value) = (words.next(), words.next(), words.next());
        let value = value
            .map(|v| v.trim().trim_matches('\''))
            .filter(|_| op.is_some_and(|op| op.eq_ignore_ascii_case("eq")));
        let parsed = value.and_then(|v| parse_time(v).or_else(|| parse_filter_time(v)));
        match (field.map(str::to_ascii_lowercase).as_deref(), parsed) {
            (Some("startdate"), Some(at)) => start = Some(at),
            (Some("enddate"), Some(at)) => end = Some(at),
            _ => {
                return Err(format!(
                    "The filter '{filter}' is invalid: expected startDate eq 'yyyy-MM-dd hh:mm:ss tt' and \
                     endDate eq 'yyyy-MM-dd hh:mm:ss tt'."
                ));
            }
        }
    }
    Ok((start, end))
}

/// `2017-12-01 00:00:00 AM`, `2017-12-31 11:59:59 PM` (the form the docs show, whose `00` hour is not a
/// 12-hour clock's) or `2017-12-01 13:00:00`, as UTC.
fn parse_filter_time(text: &str) -> Option<DateTime<Utc>> {
    let (clock, half) = match text.rsplit_once(' ') {
        Some((clock, half)) if half.eq_ignore_ascii_case("am") => (clock, Some(false)),
        Some((clock, half)) if half.eq_ignore_ascii_case("pm") => (clock, Some(true)),
        _ => (text, None),
    };
    let time = NaiveDateTime::parse_from_str(clock, "%Y-%m-%d %H:%M:%S").ok()?;
    let hour = time.hour();
    let time = match half {
        Some(true) if hour < 12 => time + Duration::hours(12),
        Some(false) if hour == 12 => time - Duration::hours(12),
        Some(_) if hour > 12 => return None,
        _ => time,
    };
    Some(time.and_utc())
}

/// The `$filter` query parameter.
fn filter(query: &str) -> Option<String> {
    query_param(query, "$filter")
}

/// A query parameter, decoded.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

/// The offset a page's `$skipToken` carries, 0 without one; a token that is not an offset is refused with 400
/// and the error `code` of the API.
pub(crate) fn skip_token(query: &str, code: &str) -> Result<usize, Reply> {
    let Some(token) = query_param(query, "$skipToken") else {
        return Ok(0);
    };
    token
        .parse()
        .map_err(|_| arm_error(400, code, &format!("The skip token '{token}' is invalid.")))
}

/// The protected VM an item path names: container `IaasVMContainer;iaasvmcontainerv2;{rg};{vm}` and item
/// `VM;iaasvmcontainerv2;{rg};{vm}` naming the same VM (ignoring case).
fn parse_item(container: &str, item: &str) -> Option<ItemKey> {
    let item: Vec<&str> = item.split(';').collect();
    let container: Vec<&str> = container.split(';').collect();
    match (item.as_slice(), container.as_slice()) {
        (
            [kind, version, rg, vm],
            [
                container_kind,
                container_version,
                container_rg,
                container_vm,
            ],
        ) if kind.eq_ignore_ascii_case("vm")
            && container_kind.eq_ignore_ascii_case("iaasvmcontainer")
            && version.eq_ignore_ascii_case("iaasvmcontainerv2")
            && container_version.eq_ignore_ascii_case("iaasvmcontainerv2")
            && rg.eq_ignore_ascii_case(container_rg)
            && vm.eq_ignore_ascii_case(container_vm) =>
        {
            Some(item_key(rg, vm))
        }
        _ => None,
    }
}

/// ARM's `NoRegisteredProviderFound` for api-versions outside those Recovery Services has.
fn check_version(version: &str, region: &str) -> Result<(), Reply> {
    let date = version.get(..10).unwrap_or(version);
    if (OLDEST_API_VERSION..=NEWEST_API_VERSION).contains(&date) {
        return Ok(());
    }
    Err(arm_error(
        400,
        "NoRegisteredProviderFound",
        &format!(
            "No registered resource provider found for location '{region}' and API version '{version}' for \
             type 'vaults'. The supported api-versions are those dated {OLDEST_API_VERSION} to \
             {NEWEST_API_VERSION}."
        ),
    ))
}

/// ARM's 404 for a vault that does not exist.
fn vault_not_found(path: &ServicePath) -> Reply {
    arm_error(
        404,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.RecoveryServices/vaults/{}' under resource group '{}' was not found. For \
             more details please go to https://aka.ms/ARMResourceNotFoundFix",
            path.name, path.resource_group
        ),
    )
    .header("x-ms-failure-cause", "gateway")
}

/// 404 for something inside a vault (code UNVERIFIED).
fn not_found(message: &str) -> Reply {
    arm_error(404, "ResourceNotFound", message)
}

fn operation_not_found(id: &str) -> Reply {
    not_found(&format!("The operation '{id}' was not found."))
}

fn method_not_allowed(method: &str) -> Reply {
    arm_error(
        405,
        "MethodNotAllowed",
        &format!("The requested resource does not support http method '{method}'."),
    )
}

/// A std duration as chrono's (saturating).
fn chrono_duration(duration: std::time::Duration) -> Duration {
    Duration::from_std(duration).unwrap_or(Duration::MAX)
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
