//! Token endpoints, accepting exactly what `azure_identity` 1.0 sends:
//!
//! - Entra ID: `POST /{tenant}/oauth2/v2.0/token`, form `grant_type=client_credentials`, `client_id`, `scope`, and
//!   `client_secret` or `client_assertion` + `client_assertion_type`. Answer:
//!   `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"..."}`.
//! - Managed identity, App Service style: `GET /msi/token?api-version=2019-08-01&resource=...` with header
//!   `x-identity-header`; IMDS style: `GET /metadata/identity/oauth2/token?...` with header `Metadata: true`.
//!   Optional `client_id` (or `object_id`, `msi_res_id`) for a user-assigned identity. Answer:
//!   `{"access_token","expires_on" (unix seconds as a string),"token_type":"Bearer","resource"}`.
//!
//! Error codes and texts are AADSTS-style look-alikes, not copies of Entra ID's. Secrets are never stored.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde_json::json;
use tokio::time::Instant;

use crate::log::{TokenKind, TokenRequest};
use crate::reply::{Reply, entra_error, oauth_error};
use crate::state::State;

/// The only `client_assertion_type` Entra ID and AD FS take.
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The fields of a form body (or a query string) by name; an empty field counts as missing.
pub(crate) fn form_fields(form: &[u8]) -> impl Fn(&str) -> Option<String> {
    let fields: HashMap<String, String> = form_urlencoded::parse(form).into_owned().collect();
    move |name| fields.get(name).filter(|v| !v.is_empty()).cloned()
}

/// Issues a token to the request `record` describes and marks it issued; returns the token and its lifetime
/// in seconds.
pub(crate) fn issue(state: &mut State, record: &mut TokenRequest) -> (String, u64) {
    record.issued = true;
    (state.issue_token(), state.token_lifetime_secs())
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) fn entra(state: &mut State, tenant: &str, method: &str, body: &[u8]) -> Reply {
    let field = form_fields(body);
    let kind = if field("client_secret").is_some() {
        Some(TokenKind::ClientSecret)
    } else if field("client_assertion").is_some() {
        Some(TokenKind::ClientAssertion)
    } else {
        None
    };
    let mut record = TokenRequest {
        kind,
        tenant: Some(tenant.to_owned()),
        client_id: field("client_id"),
        scope: field("scope"),
        issued: false,
        at: Instant::now(),
    };
    let missing = |name: &str| {
        entra_error(
            400,
            "invalid_request",
            900_144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    let reply = if method != "POST" {
        entra_error(
            405,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests.",
        )
    } else if let Some(name) = ["grant_type", "client_id", "scope"]
        .into_iter()
        .find(|n| field(n).is_none())
    {
        missing(name)
    } else if field("grant_type").as_deref() != Some("client_credentials") {
        entra_error(
            400,
            "unsupported_grant_type",
            70_003,
            "The app requested an unsupported grant type; only 'client_credentials' is emulated.",
        )
    } else if kind.is_none() {
        entra_error(
            401,
            "invalid_client",
            7_000_216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        )
    } else if kind == Some(TokenKind::ClientAssertion)
        && field("client_assertion_type").as_deref() != Some(ASSERTION_TYPE)
    {
        missing("client_assertion_type")
    } else {
        let (token, lifetime) = issue(state, &mut record);
        Reply::json(
            200,
            &json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }),
        )
    };
    state.token_requests.push(record);
    reply.header("Cache-Control", "no-store, no-cache")
}

/// `GET /msi/token` (App Service) or `GET /metadata/identity/oauth2/token` (IMDS).
pub(crate) fn managed_identity(
    state: &mut State,
    kind: TokenKind,
    method: &str,
    query: &str,
    headers: &HeaderMap,
) -> Reply {
    let param = form_fields(query.as_bytes());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut record = TokenRequest {
        kind: Some(kind),
        tenant: None,
        client_id: param("client_id"),
        scope: param("resource"),
        issued: false,
        at: Instant::now(),
    };
    let error =
        |status: u16, description: &str| oauth_error(status, "invalid_request", description);
    let reply = if method != "GET" {
        error(405, "Only GET is supported.")
    } else if kind == TokenKind::AppServiceManagedIdentity
        && header("x-identity-header") != Some(state.config.identity_header.as_str())
    {
        error(
            401,
            "The x-identity-header is missing or does not match IDENTITY_HEADER.",
        )
    } else if kind == TokenKind::Imds
        && !header("metadata").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        error(400, "Required metadata header not specified")
    } else if param("api-version").is_none() {
        error(400, "Required query variable 'api-version' is missing")
    } else if let Some(resource) = param("resource") {
        let (token, lifetime) = issue(state, &mut record);
        // Unix seconds on the real clock: the SDK compares them with its own wall clock.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Reply::json(
            200,
            &json!({
                "access_token": token,
                "expires_on": (now + lifetime).to_string(),
                "resource": resource,
                "token_type": "Bearer",
            }),
        )
    } else {
        error(400, "Required query variable 'resource' is missing")
    };
    state.token_requests.push(record);
    reply
}
