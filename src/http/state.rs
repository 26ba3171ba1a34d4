//! What the HTTP handlers share: their state ([`ApiState`]), the API token check and the JSON error body.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::scheduler::{Heartbeat, SchedulerHandle};
use crate::target::TargetSpec;

/// The set of targets currently configured; replaced on reload.
pub type TargetsView = Arc<RwLock<Arc<Vec<Arc<TargetSpec>>>>>;

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The catalog.
    pub catalog: Catalog,
    /// The metrics.
    pub metrics: Metrics,
    /// Manual triggers go here.
    pub scheduler: SchedulerHandle,
    /// Current targets.
    pub targets: TargetsView,
    /// Set once the scheduler runs, cleared when shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// Wall time.
    pub clock: Clock,
    /// The scheduler's heartbeat, for readiness.
    pub heartbeat: Heartbeat,
    /// What mutating requests must carry; `None` leaves them open (loopback, or allowed on purpose).
    pub api_token: Option<Arc<Secret>>,
    /// Held while pruning: the evaluation loop prunes too.
    pub pruning: Arc<tokio::sync::Mutex<()>>,
}

impl ApiState {
    pub(crate) fn targets(&self) -> Arc<Vec<Arc<TargetSpec>>> {
        self.targets.read().map(|t| t.clone()).unwrap_or_default()
    }
}

/// The 401 for a mutating request without the API token; `None` when it carries it (or none is configured).
/// The comparison takes the same time wherever the tokens differ, and the token is never logged.
pub(crate) fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let token = state.api_token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    // Digests first, so the comparison's time does not depend on the lengths either.
    let matches = given.is_some_and(|given| {
        let given = Sha256::digest(given.as_bytes());
        let expected = Sha256::digest(token.expose().as_bytes());
        bool::from(given.as_slice().ct_eq(expected.as_slice()))
    });
    if matches {
        return None;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "this request changes something and needs the API token: send Authorization: Bearer <token> \
         (daemon.api_token_file or api_token_env)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"rpod\""),
    );
    Some(response)
}

#[derive(Debug, Serialize)]
struct ApiError {
    error: String,
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}
