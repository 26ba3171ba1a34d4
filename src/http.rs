//! The HTTP surface (docs/operations.md, "HTTP API"): `/metrics`, `/healthz`, `/readyz`, and the JSON API under
//! `/api/v1`. Reading is open to scrapers; every request that changes something (a backup, a prune) needs the
//! `[daemon]` API token as `Authorization: Bearer`, when one is configured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::Secret;
use crate::maintenance;
use crate::metrics::Metrics;
use crate::policy;
use crate::record::BackupRecord;
use crate::scheduler::{Heartbeat, ManualOutcome, SchedulerHandle};
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
    fn targets(&self) -> Arc<Vec<Arc<TargetSpec>>> {
        self.targets.read().map(|t| t.clone()).unwrap_or_default()
    }
}

/// The router for the main listener.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/targets/{name}/backups", get(backups))
        .route("/api/v1/targets/{name}/backup", post(backup_now))
        .route("/api/v1/prune", post(prune_now))
        .with_state(state)
}

/// The 401 for a mutating request without the API token; `None` when it carries it (or none is configured).
/// The comparison takes the same time wherever the tokens differ, and the token is never logged.
fn refusal(state: &ApiState, headers: &HeaderMap) -> Option<Response> {
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

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// How long a readiness probe waits for the catalog to take a write.
const CATALOG_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(state): State<ApiState>) -> Response {
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

#[derive(Debug, Serialize)]
struct ApiError {
    error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// One target as `/api/v1/targets` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TargetView {
    /// Name.
    pub name: String,
    /// Provider kind.
    pub kind: String,
    /// Storage name.
    pub storage: String,
    /// Declared RPO in seconds.
    pub rpo_seconds: u64,
    /// Cron expression, if any.
    pub schedule: Option<String>,
    /// Its time zone.
    pub timezone: Option<String>,
    /// RPO compliant now.
    pub compliant: bool,
    /// Recovery point of the newest restorable backup.
    pub newest_recovery_point: Option<DateTime<Utc>>,
    /// Age of that backup in seconds.
    pub age_seconds: Option<i64>,
    /// Restorable backups.
    pub restorable_backups: u64,
    /// Latest expiry among them.
    pub restorable_until: Option<DateTime<Utc>>,
    /// Recovery point of the newest successful backup, expired or not.
    pub last_success: Option<DateTime<Utc>>,
    /// Start of the newest attempt.
    pub last_attempt: Option<DateTime<Utc>>,
    /// Next schedule slot.
    pub next_scheduled: Option<DateTime<Utc>>,
    /// When the RPO watchdog starts a backup at the latest (lead from configuration only).
    pub watchdog_due: Option<DateTime<Utc>>,
    /// The change detectors in use (`sync_state`, `event_grid`); empty without `on_change`.
    pub change_detection: Vec<String>,
    /// When rpod first saw a change no backup covers yet; a change backup follows.
    pub change_pending_since: Option<DateTime<Utc>>,
}

/// Builds the view of one target; shared by the API and `rpod status`.
///
/// # Errors
/// The catalog could not be read.
pub async fn target_view(
    catalog: &Catalog,
    spec: &TargetSpec,
    now: DateTime<Utc>,
) -> Result<TargetView, crate::catalog::CatalogError> {
    let config = &spec.config;
    let policy = &config.policy;
    let summary = catalog.summary(&config.name, now).await?;
    let change_pending_since = match &policy.on_change {
        Some(_) => catalog
            .change_state(&config.name)
            .await?
            .and_then(|stored| crate::scheduler::pending_change_since(&stored)),
        None => None,
    };
    Ok(TargetView {
        name: config.name.clone(),
        kind: spec.provider.kind().to_owned(),
        storage: config.storage.clone(),
        rpo_seconds: policy.rpo.as_secs(),
        schedule: policy.schedule.as_ref().map(|s| s.expression().to_owned()),
        timezone: policy.schedule.as_ref().map(|s| s.timezone().to_string()),
        compliant: policy::is_compliant(summary.newest_recovery_point, policy.rpo, now),
        newest_recovery_point: summary.newest_recovery_point,
        age_seconds: summary
            .newest_recovery_point
            .map(|at| (now - at).num_seconds()),
        restorable_backups: summary.restorable_backups,
        restorable_until: summary.restorable_until,
        last_success: summary.last_success,
        last_attempt: summary.last_attempt,
        next_scheduled: policy.schedule.as_ref().and_then(|s| s.next_after(now)),
        watchdog_due: Some(policy::watchdog_due(
            summary.newest_recovery_point,
            policy.rpo,
            policy.configured_lead(),
            now,
        )),
        change_detection: policy
            .on_change
            .as_ref()
            .map(|c| c.sources().into_iter().map(str::to_owned).collect())
            .unwrap_or_default(),
        change_pending_since,
    })
}

async fn targets(State(state): State<ApiState>) -> Response {
    let now = state.clock.now();
    let mut views = Vec::new();
    for spec in state.targets().iter() {
        match target_view(&state.catalog, spec, now).await {
            Ok(view) => views.push(view),
            Err(err) => return error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
        }
    }
    Json(views).into_response()
}

#[derive(Debug, Deserialize)]
struct BackupsQuery {
    limit: Option<u32>,
}

async fn backups(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<BackupsQuery>,
) -> Response {
    if !state.targets().iter().any(|t| t.config.name == name) {
        return error(StatusCode::NOT_FOUND, format!("unknown target {name:?}"));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    match state.catalog.backups(Some(&name), limit).await {
        Ok(records) => Json::<Vec<BackupRecord>>(records).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

/// Answer of `POST /api/v1/targets/{name}/backup`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// Target name.
    pub target: String,
    /// `started`, or `coalesced` when a backup of the target is already running.
    pub status: String,
}

async fn backup_now(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let status = match state.scheduler.backup_now(&name).await {
        ManualOutcome::Started => "started",
        ManualOutcome::Coalesced => "coalesced",
        ManualOutcome::UnknownTarget => {
            return error(StatusCode::NOT_FOUND, format!("unknown target {name:?}"));
        }
    };
    (
        StatusCode::ACCEPTED,
        Json(TriggerResponse {
            target: name,
            status: status.to_owned(),
        }),
    )
        .into_response()
}

/// Body of `POST /api/v1/prune`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PruneRequest {
    /// Only say what would be pruned.
    #[serde(default)]
    pub dry_run: bool,
}

async fn prune_now(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Option<Json<PruneRequest>>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let request = body.map(|Json(request)| request).unwrap_or_default();
    let targets = state.targets();
    let _pruning = state.pruning.lock().await;
    let metrics = (!request.dry_run).then_some(&state.metrics);
    match maintenance::prune(
        &state.catalog,
        metrics,
        &targets,
        state.clock.now(),
        request.dry_run,
        "rpod prune",
    )
    .await
    {
        Ok(report) => Json(report).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}
