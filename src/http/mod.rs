//! The HTTP surface (docs/operations.md, "HTTP endpoints"): the router and what its handlers share, the API
//! token check among it. Reading is open to scrapers; every request that changes something (a backup, a prune)
//! needs the `[daemon]` API token as `Authorization: Bearer`, when one is configured.
//!
//! - [`api`]: the JSON API under `/api/v1`.
//! - `metrics`: `/metrics`.
//! - `health`: `/healthz`, `/readyz`.
//! - [`webhook`]: `POST`/`OPTIONS /hooks/eventgrid`, on the main listener or one of its own.
//! - `state`: what the handlers share, and the API token check.

pub mod api;
mod health;
mod metrics;
mod state;
pub mod webhook;

pub use api::{PruneRequest, TargetView, TriggerResponse, target_view};
pub use state::{ApiState, TargetsView};

use axum::Router;
use axum::routing::{get, post};

/// The router for the main listener.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/targets", get(api::targets))
        .route("/api/v1/targets/{name}/backups", get(api::backups))
        .route("/api/v1/targets/{name}/backup", post(api::backup_now))
        .route("/api/v1/prune", post(api::prune_now))
        .with_state(state)
}
