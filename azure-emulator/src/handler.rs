//! The one request handler: route by path, apply an injected fault if one matches, then for ARM check the token,
//! the throttling bucket and the api-version before the API Management handlers answer. The emulator's own
//! control endpoints skip all of that. Every request is logged with how it was answered.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use tokio::time::Instant;

use crate::apim;
use crate::content::{self, Collection};
use crate::fault::{FaultKind, Route};
use crate::log::{LoggedRequest, TokenKind};
use crate::reply::{Outcome, Reply, arm_error, bad_json, entra_error, oauth_error, uuid_like};
use crate::routes::{self, Action, Endpoint};
use crate::state::OperationKind;
use crate::state::{Shared, State, TokenCheck};
use crate::throttle::Take;

/// A request as the server received it.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Received {
    fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> &str {
        self.path_and_query.split_once('?').map_or("", |(_, q)| q)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Answers one request and logs it.
pub(crate) fn handle(shared: &Arc<Shared>, request: &Received) -> Outcome {
    let mut state = shared.lock();
    let endpoint = routes::parse(request.path());
    let fault = endpoint
        .route()
        .and_then(|route| state.faults.take_answer(route));
    let faulted = fault.is_some();
    let outcome = match fault {
        Some(kind) => fault_outcome(kind, &endpoint),
        None => Outcome::Reply(answer(&mut state, shared, &endpoint, request)),
    };
    let outcome = match outcome {
        Outcome::Reply(reply) if endpoint.subscription().is_some() => {
            Outcome::Reply(with_arm_headers(reply, request, &state.config.region))
        }
        other => other,
    };
    let system_time = SystemTime::from(state.now());
    state.requests.push(LoggedRequest {
        method: request.method.clone(),
        path_and_query: request.path_and_query.clone(),
        body: redact(&String::from_utf8_lossy(&request.body)),
        status: match &outcome {
            Outcome::Reply(reply) => Some(reply.status),
            Outcome::Reset | Outcome::Hang => None,
        },
        faulted,
        at: Instant::now(),
        system_time,
        authorization: request.headers.contains_key("authorization"),
        client_request_id: request.header("x-ms-client-request-id").map(str::to_owned),
    });
    outcome
}

/// What an injected fault does to a request on `endpoint`.
fn fault_outcome(kind: FaultKind, endpoint: &Endpoint) -> Outcome {
    match kind {
        FaultKind::Status {
            code,
            retry_after,
            error_code,
            message,
        } => {
            let reply = if *endpoint == Endpoint::AdfsToken {
                oauth_error(code, &error_code, &message)
            } else if endpoint.route() == Some(Route::Token) {
                entra_error(code, &error_code, 90_000, &message)
            } else {
                arm_error(code, &error_code, &message)
            };
            Outcome::Reply(match retry_after {
                Some(secs) => reply.header("Retry-After", secs),
                None => reply,
            })
        }
        FaultKind::Reset => Outcome::Reset,
        FaultKind::Hang => Outcome::Hang,
        FaultKind::BadJson => Outcome::Reply(bad_json()),
        FaultKind::Answer { status, body } => Outcome::Reply(
            Reply::empty(status)
                .header("Content-Type", "application/json; charset=utf-8")
                .with_body(body),
        ),
        FaultKind::FailOperation { .. } | FaultKind::SkipBlob | FaultKind::JobOutcome(_) => {
            unreachable!("FaultQueue::take_answer never returns an operation outcome")
        }
    }
}

/// The normal answer to a request.
fn answer(
    state: &mut State,
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    request: &Received,
) -> Reply {
    let method = request.method.as_str();
    match endpoint {
        Endpoint::EntraToken { tenant } => {
            crate::token::entra(state, tenant, method, &request.body)
        }
        Endpoint::AppServiceToken => crate::token::managed_identity(
            state,
            TokenKind::AppServiceManagedIdentity,
            method,
            request.query(),
            &request.headers,
        ),
        Endpoint::ImdsToken => crate::token::managed_identity(
            state,
            TokenKind::Imds,
            method,
            request.query(),
            &request.headers,
        ),
        Endpoint::AdfsToken => crate::stack_auth::token(state, method, &request.body),
        Endpoint::StackMetadata => crate::stack_auth::metadata(state, method, request.query()),
        Endpoint::Apim { .. }
        | Endpoint::RecoveryServices { .. }
        | Endpoint::BackupAdmin { .. }
        | Endpoint::OtherArm { .. } => arm(state, shared, endpoint, request),
        Endpoint::VmControl { vm, action } => {
            crate::vm_control::answer(state, vm, *action, method, &request.body)
        }
        Endpoint::RecoveryServicesSettings => {
            crate::vm_control::settings(state, method, &request.body)
        }
        Endpoint::StackControl { location, action } => {
            crate::stack_control::answer(state, location, *action, method, &request.body)
        }
        Endpoint::Control { service, action } => {
            crate::control::answer(state, service, *action, method, &request.body)
        }
        Endpoint::Unknown => Reply::empty(404),
    }
}

/// An ARM request: token, throttling, api-version, then the API Management, Recovery Services or Backup admin
/// handlers.
fn arm(state: &mut State, shared: &Arc<Shared>, endpoint: &Endpoint, request: &Received) -> Reply {
    if let Some(reply) = check_token(state, request) {
        return reply;
    }
    let subscription = endpoint.subscription().unwrap_or_default();
    let is_write = request.method != "GET" && request.method != "HEAD";
    let (buckets, remaining_header, unlimited) = if is_write {
        (
            &mut state.writes,
            "x-ms-ratelimit-remaining-subscription-writes",
            1199,
        )
    } else {
        (
            &mut state.reads,
            "x-ms-ratelimit-remaining-subscription-reads",
            11999,
        )
    };
    let remaining = match buckets
        .as_mut()
        .map(|b| b.take(subscription, Instant::now()))
    {
        None => unlimited,
        Some(Take::Allowed { remaining }) => remaining,
        Some(Take::Throttled { retry_after_secs }) => {
            state.throttled += 1;
            let kind = if is_write { "write" } else { "read" };
            return arm_error(
                429,
                "SubscriptionRequestsThrottled",
                &format!(
                    "Number of '{kind}' requests for subscription '{subscription}' actor 'emulator' exceeded. \
                     Please try again after '{retry_after_secs}' seconds after additional tokens are available. \
                     Refer to https://aka.ms/arm-throttling for additional information."
                ),
            )
            .header("Retry-After", retry_after_secs);
        }
    };
    let reply = match api_version(request) {
        Ok(version) => apim_action(state, shared, endpoint, request, &version),
        Err(reply) => reply,
    };
    reply.header(remaining_header, remaining)
}

/// 401 unless the request carries a token this emulator issued and that has not expired.
fn check_token(state: &State, request: &Received) -> Option<Reply> {
    if !state.config.require_token {
        return None;
    }
    let token = request.header("authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    let (code, message) = match token.map(|t| state.check_token(t.trim())) {
        Some(TokenCheck::Valid) => return None,
        None => (
            "InvalidAuthenticationToken",
            "The access token is missing: send 'Authorization: Bearer <token>'.",
        ),
        Some(TokenCheck::Unknown) => ("InvalidAuthenticationToken", "The access token is invalid."),
        Some(TokenCheck::Expired) => (
            "ExpiredAuthenticationToken",
            "The access token expiry time is earlier than the current time.",
        ),
    };
    Some(arm_error(401, code, message).header("WWW-Authenticate", "Bearer error=\"invalid_token\""))
}

/// The request's api-version, which ARM requires and expects to start with a date.
fn api_version(request: &Received) -> Result<String, Reply> {
    let version = form_urlencoded::parse(request.query().as_bytes())
        .find(|(name, _)| name == "api-version")
        .map(|(_, value)| value.into_owned());
    match version {
        None => Err(arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(version) if !looks_like_api_version(&version) => Err(arm_error(
            400,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{version}' is invalid. It must look like 'YYYY-MM-DD' or 'YYYY-MM-DD-preview'."
            ),
        )),
        Some(version) => Ok(version),
    }
}

/// `YYYY-MM-DD` optionally followed by `-something`.
fn looks_like_api_version(version: &str) -> bool {
    let bytes = version.as_bytes();
    bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
        && (bytes.len() == 10 || bytes[10] == b'-')
}

/// Dispatches an authorized ARM request to the API Management, Recovery Services or Backup admin handlers.
fn apim_action(
    state: &mut State,
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    request: &Received,
    version: &str,
) -> Reply {
    if let Endpoint::BackupAdmin { location, action } = endpoint {
        return crate::stack::answer(
            state,
            location,
            action,
            &request.method,
            version,
            request.query(),
            &request.body,
        );
    }
    if let Endpoint::RecoveryServices { vault, action } = endpoint {
        return crate::recovery::answer(
            state,
            vault,
            action,
            &request.method,
            version,
            request.query(),
            &request.body,
        );
    }
    let Endpoint::Apim { service, action } = endpoint else {
        return not_served();
    };
    match (request.method.as_str(), action) {
        ("GET", Action::Get) => apim::get_service(state, service),
        ("GET", Action::SyncState) => apim::sync_state(state, service),
        ("POST", Action::Backup) => apim::start(
            state,
            shared,
            service,
            OperationKind::Backup,
            version,
            &request.body,
        ),
        ("POST", Action::Restore) => apim::start(
            state,
            shared,
            service,
            OperationKind::Restore,
            version,
            &request.body,
        ),
        ("GET", Action::Poll { operation_id }) => apim::poll(state, service, operation_id),
        ("GET", Action::Apis) => {
            content::list(state, service, Collection::Apis, version, request.query())
        }
        ("GET", Action::Products) => content::list(
            state,
            service,
            Collection::Products,
            version,
            request.query(),
        ),
        ("GET", Action::PortalRevisions) => content::list(
            state,
            service,
            Collection::PortalRevisions,
            version,
            request.query(),
        ),
        (_, Action::Other) => not_served(),
        (method, _) => arm_error(
            405,
            "MethodNotAllowed",
            &format!("The requested resource does not support http method '{method}'."),
        ),
    }
}

/// 404 for ARM paths outside what the emulator models.
fn not_served() -> Reply {
    arm_error(
        404,
        "NotFound",
        "The Azure emulator does not serve this path.",
    )
}

/// Adds the headers every ARM answer carries.
fn with_arm_headers(reply: Reply, request: &Received, region: &str) -> Reply {
    let correlation = request
        .header("x-ms-correlation-request-id")
        .map_or_else(uuid_like, str::to_owned);
    let routing = format!(
        "{}:{}:{correlation}",
        region.to_ascii_uppercase(),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let reply = reply
        .header("x-ms-request-id", uuid_like())
        .header("x-ms-correlation-request-id", &correlation)
        .header("x-ms-routing-request-id", routing)
        .header("Cache-Control", "no-cache")
        .header("Pragma", "no-cache")
        .header("Expires", "-1")
        .header("X-Content-Type-Options", "nosniff");
    match request.header("x-ms-client-request-id") {
        Some(id) if reply.header_value("x-ms-client-request-id").is_none() => {
            reply.header("x-ms-client-request-id", id)
        }
        _ => reply,
    }
}

/// Replaces the values of secret form fields with `***`.
fn redact(body: &str) -> String {
    const SECRETS: [&str; 2] = ["client_secret=", "client_assertion="];
    body.split('&')
        .map(|pair| match SECRETS.iter().find(|s| pair.starts_with(*s)) {
            Some(name) => format!("{name}***"),
            None => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_logged_bodies() {
        let body =
            "client_id=c&client_secret=s3cr3t&client_assertion=jwt&client_assertion_type=x&scope=y";
        assert_eq!(
            redact(body),
            "client_id=c&client_secret=***&client_assertion=***&client_assertion_type=x&scope=y"
        );
    }

    #[test]
    fn api_versions_are_dates() {
        for good in ["2020-12-01", "2021-04-01-preview"] {
            assert!(looks_like_api_version(good), "{good}");
        }
        for bad in ["", "latest", "2020-1-01", "2020-12-01x"] {
            assert!(!looks_like_api_version(bad), "{bad}");
        }
    }
}
