//! `GET /readyz` (docs/operations.md, "Liveness and readiness"): ready when the scheduler beats and the catalog
//! takes a write. `GET /healthz` needs no handler of its own: it answers while the process serves HTTP.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::state::ApiState;

/// How long a readiness probe waits for the catalog to take a write.
const CATALOG_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn readyz(State(state): State<ApiState>) -> Response {
    let unready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response()
    };
    if !state.ready.load(Ordering::Acquire) {
        return unready("rpod is starting or stopping".to_owned());
    }
    let now = state.clock.now();
    if let Some(reason) = state.heartbeat.stale(now) {
        return unready(reason);
    }
    if let Err(err) = state.catalog.probe_write(now, CATALOG_PROBE).await {
        return unready(format!("the catalog cannot be written: {err}"));
    }
    "ready\n".into_response()
}
