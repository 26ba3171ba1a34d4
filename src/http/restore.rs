//! Restores over HTTP (docs/restore.md): `POST /api/v1/targets/{name}/restore` (the API token needed), and the
//! restores to read, one or a target's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::state::{ApiState, error, refusal};
use crate::record::{RestoreRecord, RestoreTrigger};
use crate::scheduler::restore::{RestoreAsk, RestorePlan};

/// Body of `POST /api/v1/targets/{name}/restore`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RestoreRequestBody {
    /// The backup; the newest restorable one when absent.
    #[serde(default)]
    pub backup_id: Option<i64>,
    /// A `restore_into` name; the target's own service when absent.
    #[serde(default)]
    pub into: Option<String>,
    /// Check every guard and write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Confirms overwriting the target's own service (`rpod restore --yes`).
    #[serde(default)]
    pub yes: bool,
}

/// The answer of a refused restore (422): the refusal, and every guard's verdict.
#[derive(Debug, Serialize, Deserialize)]
pub struct RestoreRefusal {
    /// What refused, and what to do.
    pub error: String,
    /// The plan, with every verdict.
    pub plan: serde_json::Value,
}

pub(super) async fn restore_now(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<RestoreRequestBody>>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let Some(spec) = state
        .targets()
        .iter()
        .find(|t| t.config.name == name)
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, format!("unknown target {name:?}"));
    };
    let body = body.map(|Json(body)| body).unwrap_or_default();
    let ask = RestoreAsk {
        spec,
        backup_id: body.backup_id,
        into: body.into,
        trigger: RestoreTrigger::Manual,
        dry_run: body.dry_run,
        confirmed: body.yes,
        actor: "api".to_owned(),
    };
    match state.scheduler.restore(ask).await {
        Ok(plan) => answer(&plan),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

/// 202 with the plan for a started restore, 200 for a dry run whose guards all pass, 422 for a refusal.
fn answer(plan: &RestorePlan) -> Response {
    let json = serde_json::to_value(plan).unwrap_or_default();
    if let Some(refused) = plan.refusal() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(RestoreRefusal {
                error: format!("{}: {}", refused.guard, refused.message),
                plan: json,
            }),
        )
            .into_response();
    }
    let status = if plan.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(json)).into_response()
}

pub(super) async fn restore_record(State(state): State<ApiState>, Path(id): Path<i64>) -> Response {
    match state.catalog.restore(id).await {
        Ok(Some(record)) => Json::<RestoreRecord>(record).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("there is no restore {id}")),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RestoresQuery {
    limit: Option<u32>,
}

pub(super) async fn restores(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<RestoresQuery>,
) -> Response {
    if !state.targets().iter().any(|t| t.config.name == name) {
        return error(StatusCode::NOT_FOUND, format!("unknown target {name:?}"));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    match state.catalog.restores(&name, None, limit).await {
        Ok(records) => Json::<Vec<RestoreRecord>>(records).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}
