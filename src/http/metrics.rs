//! `GET /metrics`: every metric in Prometheus' text format (docs/metrics.md).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::state::ApiState;

pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
