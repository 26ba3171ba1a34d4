//! An Azure Stack Hub stamp's endpoint discovery and its AD FS token endpoint.
//!
//! - `GET /metadata/endpoints?api-version=2015-01-01` (no token, never throttled; any api-version, but one is
//!   required: 400 `MissingApiVersionParameter` without) → 200
//!   `{"galleryEndpoint":"{base}/gallery/","graphEndpoint":"{base}/graph/","portalEndpoint":"{base}/portal/",
//!   "authentication":{"loginEndpoint":L,"audiences":[A]}}` with `L` = `{base}/adfs/` for AD FS and `{base}/` for
//!   Entra ID ([`crate::EmulatorConfig::stack_identity`]), `A` = [`crate::EmulatorConfig::stack_audience`].
//! - `POST /adfs/oauth2/token`, form `grant_type=client_credentials`, `client_id`, `resource`, and
//!   `client_secret` or `client_assertion` + `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   → 200 `{"access_token":"…","token_type":"bearer","expires_in":N}` (`N` a number: the token lifetime in
//!   seconds); the token is one ARM accepts. Refusals in AD FS's OAuth shape `{"error","error_description"}`:
//!   400 `invalid_request` for a missing `grant_type`, `client_id` or `resource` or a wrong
//!   `client_assertion_type`, 400 `unsupported_grant_type` for another grant, 401 `invalid_client` without a
//!   secret or an assertion, 405 `invalid_request` for another method. The `MSIS` texts are look-alikes
//!   (UNVERIFIED), not copies of AD FS's. Secrets are never stored.

use serde_json::json;
use tokio::time::Instant;

use crate::config::StackIdentity;
use crate::log::{TokenKind, TokenRequest};
use crate::reply::{Reply, arm_error, oauth_error};
use crate::state::State;
use crate::token::{ASSERTION_TYPE, form_fields, issue};

/// `GET /metadata/endpoints`.
pub(crate) fn metadata(state: &State, method: &str, query: &str) -> Reply {
    if method != "GET" {
        return arm_error(
            405,
            "MethodNotAllowed",
            &format!("The requested resource does not support http method '{method}'."),
        );
    }
    if !form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "api-version") {
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }
    let base = &state.base_url;
    let login = match state.config.stack_identity {
        StackIdentity::Adfs => format!("{base}/adfs/"),
        StackIdentity::EntraId => format!("{base}/"),
    };
    Reply::json(
        200,
        &json!({
            "galleryEndpoint": format!("{base}/gallery/"),
            "graphEndpoint": format!("{base}/graph/"),
            "portalEndpoint": format!("{base}/portal/"),
            "authentication": {
                "loginEndpoint": login,
                "audiences": [state.config.stack_audience],
            }
        }),
    )
}

/// `POST /adfs/oauth2/token`.
pub(crate) fn token(state: &mut State, method: &str, body: &[u8]) -> Reply {
    let field = form_fields(body);
    let mut record = TokenRequest {
        kind: Some(TokenKind::Adfs),
        tenant: Some("adfs".to_owned()),
        client_id: field("client_id"),
        scope: field("resource"),
        issued: false,
        at: Instant::now(),
    };
    let has_secret = field("client_secret").is_some();
    let has_assertion = field("client_assertion").is_some();
    let reply = if method != "POST" {
        oauth_error(
            405,
            "invalid_request",
            "MSIS9921: The token endpoint only accepts POST requests.",
        )
    } else if let Some(name) = ["grant_type", "client_id", "resource"]
        .into_iter()
        .find(|n| field(n).is_none())
    {
        oauth_error(
            400,
            "invalid_request",
            &format!("MSIS9609: The '{name}' parameter is missing from the request."),
        )
    } else if field("grant_type").as_deref() != Some("client_credentials") {
        oauth_error(
            400,
            "unsupported_grant_type",
            "MSIS9611: The authorization server does not support the requested 'grant_type'; only \
             'client_credentials' is emulated.",
        )
    } else if !has_secret && !has_assertion {
        oauth_error(
            401,
            "invalid_client",
            "MSIS9622: Client authentication failed: send 'client_secret' or 'client_assertion'.",
        )
    } else if !has_secret && field("client_assertion_type").as_deref() != Some(ASSERTION_TYPE) {
        oauth_error(
            400,
            "invalid_request",
            &format!("MSIS9623: The 'client_assertion_type' must be '{ASSERTION_TYPE}'."),
        )
    } else {
        let (token, lifetime) = issue(state, &mut record);
        Reply::json(
            200,
            &json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": lifetime,
            }),
        )
    };
    state.token_requests.push(record);
    reply.header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::config::EmulatorConfig;

    fn state(identity: StackIdentity) -> State {
        State::new(
            EmulatorConfig {
                stack_identity: identity,
                ..EmulatorConfig::default()
            },
            "https://127.0.0.1:9".to_owned(),
        )
    }

    fn body(reply: &Reply) -> Value {
        serde_json::from_str(&reply.body).unwrap()
    }

    #[test]
    fn metadata_names_the_login_endpoint_of_the_identity() {
        let adfs = metadata(&state(StackIdentity::Adfs), "GET", "api-version=2015-01-01");
        assert_eq!(adfs.status, 200);
        let adfs = body(&adfs);
        assert_eq!(
            adfs["authentication"]["loginEndpoint"],
            "https://127.0.0.1:9/adfs/"
        );
        assert_eq!(
            adfs["authentication"]["audiences"],
            json!([crate::config::DEFAULT_STACK_AUDIENCE])
        );
        assert_eq!(adfs["graphEndpoint"], "https://127.0.0.1:9/graph/");
        let entra = body(&metadata(
            &state(StackIdentity::EntraId),
            "GET",
            "api-version=2015-01-01",
        ));
        assert_eq!(
            entra["authentication"]["loginEndpoint"],
            "https://127.0.0.1:9/"
        );
        assert_eq!(metadata(&state(StackIdentity::Adfs), "GET", "").status, 400);
        assert_eq!(
            metadata(&state(StackIdentity::Adfs), "POST", "").status,
            405
        );
    }

    #[test]
    fn adfs_issues_tokens_for_secrets_and_assertions_and_refuses_the_rest() {
        let mut state = state(StackIdentity::Adfs);
        let secret = token(
            &mut state,
            "POST",
            b"grant_type=client_credentials&client_id=c&client_secret=s&resource=https%3A%2F%2Fa",
        );
        assert_eq!(secret.status, 200);
        let answer = body(&secret);
        assert_eq!(answer["token_type"], "bearer");
        assert_eq!(answer["expires_in"], 3599);
        let issued = answer["access_token"].as_str().unwrap();
        assert_eq!(state.check_token(issued), crate::state::TokenCheck::Valid);
        let assertion = format!(
            "grant_type=client_credentials&client_id=c&client_assertion=jwt&client_assertion_type={}&resource=r",
            ASSERTION_TYPE.replace(':', "%3A")
        );
        assert_eq!(token(&mut state, "POST", assertion.as_bytes()).status, 200);
        for (form, status, error) in [
            (
                "client_id=c&client_secret=s&resource=r",
                400,
                "invalid_request",
            ),
            (
                "grant_type=client_credentials&client_secret=s&resource=r",
                400,
                "invalid_request",
            ),
            (
                "grant_type=client_credentials&client_id=c&client_secret=s",
                400,
                "invalid_request",
            ),
            (
                "grant_type=password&client_id=c&client_secret=s&resource=r",
                400,
                "unsupported_grant_type",
            ),
            (
                "grant_type=client_credentials&client_id=c&resource=r",
                401,
                "invalid_client",
            ),
            (
                "grant_type=client_credentials&client_id=c&client_assertion=j&resource=r",
                400,
                "invalid_request",
            ),
        ] {
            let reply = token(&mut state, "POST", form.as_bytes());
            assert_eq!(reply.status, status, "{form}");
            assert_eq!(body(&reply)["error"], error, "{form}");
        }
        assert_eq!(token(&mut state, "GET", b"").status, 405);
        let logged = &state.token_requests[0];
        assert_eq!(logged.kind, Some(TokenKind::Adfs));
        assert_eq!(logged.tenant.as_deref(), Some("adfs"));
        assert_eq!(logged.scope.as_deref(), Some("https://a"));
        assert_eq!(logged.client_id.as_deref(), Some("c"));
        assert!(logged.issued);
        assert_eq!(state.token_requests.len(), 9);
    }
}
