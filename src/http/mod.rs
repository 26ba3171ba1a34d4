//! The HTTP surface (docs/operations.md, "HTTP endpoints"): the router and what its handlers share, the API
//! token check among it. Reading is open to scrapers; every request that changes something (a backup, a prune)
//! needs the `[daemon]` API token as `Authorization: Bearer`, when one is configured.
//!
//! - [`api`]: the JSON API under `/api/v1`.
//! - `metrics`: `/metrics`.
//! - `health`: `/healthz`, `/readyz`.
//! - [`webhook`]: `POST`/`OPTIONS /hooks/eventgrid`, on the main listener or one of its own.
//! - [`restore`]: restores under `/api/v1` (a restore needs the API token).
//! - `state`: what the handlers share, and the API token check.

pub mod api;
mod health;
mod metrics;
pub mod restore;
mod state;
pub mod webhook;

pub use api::{PruneRequest, TargetView, TriggerResponse, target_views};
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
        .route("/api/v1/replicas", get(api::replicas))
        .route("/api/v1/targets/{name}/restore", post(restore::restore_now))
        .route("/api/v1/targets/{name}/restores", get(restore::restores))
        .route("/api/v1/restores/{id}", get(restore::restore_record))
        .with_state(state)
}
