//! The JSON API under `/api/v1` (docs/operations.md, "HTTP endpoints"): targets and their backups to read, and
//! the requests that change something (a backup now, a prune), which need the API token.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::{ApiState, error, refusal};
use crate::catalog::Catalog;
use crate::maintenance;
use crate::policy;
use crate::record::{BackupRecord, RestoreTrigger, TargetSummary};
use crate::scheduler::ManualOutcome;
use crate::target::TargetSpec;

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
    /// The declared recovery time objective in seconds (policy `rto`).
    #[serde(default)]
    pub rto_seconds: Option<u64>,
    /// The newest restore drill, when the target has drills and one ran.
    #[serde(default)]
    pub last_drill: Option<DrillView>,
    /// For a kind with a daily budget of backups (a vault's on-demand backups): how many it may still start this
    /// UTC day; 0 means rpod sends none until 00:00 UTC.
    #[serde(default)]
    pub on_demand_budget_remaining: Option<u32>,
}

/// The newest restore drill of a target, as `rpod status` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DrillView {
    /// Its restore id.
    pub restore_id: i64,
    /// `running`, `succeeded`, `failed`, `timed_out` or `interrupted`.
    pub status: String,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
    /// Its measured restore time, when it succeeded.
    pub duration_seconds: Option<f64>,
    /// Within the RTO, when one is declared and the drill succeeded.
    pub within_rto: Option<bool>,
    /// What verification found, or why it failed.
    pub detail: Option<String>,
}

/// Builds the views of targets, in their order; shared by the API and `rpod status`. Their restorability comes
/// from one query for all of them ([`Catalog::summaries`]).
///
/// # Errors
/// The catalog could not be read.
pub async fn target_views(
    catalog: &Catalog,
    specs: impl IntoIterator<Item = &TargetSpec>,
    now: DateTime<Utc>,
) -> Result<Vec<TargetView>, crate::catalog::CatalogError> {
    let specs: Vec<&TargetSpec> = specs.into_iter().collect();
    let names: Vec<&str> = specs.iter().map(|spec| spec.config.name.as_str()).collect();
    let mut summaries = catalog.summaries(&names, now).await?;
    let mut views = Vec::with_capacity(specs.len());
    for spec in specs {
        let summary = summaries.remove(&spec.config.name).unwrap_or_default();
        views.push(target_view(catalog, spec, summary, now).await?);
    }
    Ok(views)
}

/// The view of one target whose restorability was read already.
async fn target_view(
    catalog: &Catalog,
    spec: &TargetSpec,
    summary: TargetSummary,
    now: DateTime<Utc>,
) -> Result<TargetView, crate::catalog::CatalogError> {
    let config = &spec.config;
    let policy = &config.policy;
    let change_pending_since = match &policy.on_change {
        Some(_) => catalog
            .change_state(&config.name)
            .await?
            .and_then(|stored| crate::scheduler::pending_change_since(&stored)),
        None => None,
    };
    let last_drill = if config.drill.is_some() {
        catalog
            .restores(&config.name, Some(RestoreTrigger::Drill), 1)
            .await?
            .into_iter()
            .next()
            .map(|drill| DrillView {
                restore_id: drill.id,
                status: drill.status.as_str().to_owned(),
                completed_at: drill.completed_at,
                duration_seconds: drill.duration_seconds,
                within_rto: policy
                    .rto
                    .zip(drill.duration_seconds)
                    .map(|(rto, took)| took <= rto.as_secs_f64()),
                detail: drill.verified.clone().or_else(|| {
                    drill.error_code.as_ref().map(|code| {
                        format!("{code}: {}", drill.error_message.as_deref().unwrap_or(""))
                    })
                }),
            })
    } else {
        None
    };
    let on_demand_budget_remaining = match spec.provider.daily_budget() {
        Some(budget) => {
            let day = policy::utc_day_start(now);
            Some(budget.saturating_sub(catalog.attempts_since(&config.name, day).await?))
        }
        None => None,
    };
    Ok(TargetView {
        name: config.name.clone(),
        kind: spec.provider.kind().to_owned(),
        storage: spec.storage.name().to_owned(),
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
        rto_seconds: policy.rto.map(|rto| rto.as_secs()),
        last_drill,
        on_demand_budget_remaining,
    })
}

pub(super) async fn targets(State(state): State<ApiState>) -> Response {
    let now = state.clock.now();
    let targets = state.targets();
    match target_views(&state.catalog, targets.iter().map(|spec| &**spec), now).await {
        Ok(views) => Json(views).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct BackupsQuery {
    limit: Option<u32>,
}

pub(super) async fn backups(
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

pub(super) async fn backup_now(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    // A spent daily budget is said here: the attempt would start and send nothing.
    let budget = state
        .targets()
        .iter()
        .find(|t| t.config.name == name)
        .and_then(|t| t.provider.daily_budget());
    if let Some(budget) = budget {
        let now = state.clock.now();
        match state
            .catalog
            .attempts_since(&name, policy::utc_day_start(now))
            .await
        {
            Ok(used) => {
                if let Some((why, back)) = policy::budget_spent(used, budget, now) {
                    let mut refused = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("target {name:?}: {why}"),
                    );
                    let wait = (back - now).num_seconds().max(1).to_string();
                    if let Ok(value) = axum::http::HeaderValue::from_str(&wait) {
                        refused
                            .headers_mut()
                            .insert(axum::http::header::RETRY_AFTER, value);
                    }
                    return refused;
                }
            }
            Err(err) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the day's backups of {name:?} cannot be counted: {err}"),
                );
            }
        }
    }
    let status = match state.scheduler.backup_now(&name).await {
        ManualOutcome::Started => "started",
        ManualOutcome::Coalesced => "coalesced",
        ManualOutcome::UnknownTarget => {
            if state.targets().iter().any(|t| t.config.name == name) {
                // Replicas: configured, but another replica holds it.
                let owner = owner_of(&state, &name).await;
                return error(
                    StatusCode::CONFLICT,
                    format!(
                        "target {name:?} is scheduled by replica {}: ask that replica's API (rpod status lists \
                         which replica holds what)",
                        owner
                            .as_deref()
                            .unwrap_or("(none right now; try again in a few seconds)")
                    ),
                );
            }
            return error(StatusCode::NOT_FOUND, format!("unknown target {name:?}"));
        }
        ManualOutcome::WatchOnly => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "target {name:?} is only watched (mode = \"watch\"): its system backs itself up and rpod \
                     never starts a backup"
                ),
            );
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

/// The replica that holds `target`'s lease now, if any.
async fn owner_of(state: &ApiState, target: &str) -> Option<String> {
    let replicas = state.catalog.replicas().await.ok()?;
    replicas
        .into_iter()
        .find(|r| r.leases.iter().any(|l| l.target == target))
        .map(|r| r.replica)
}

/// `GET /api/v1/replicas`: every live replica, whether it is the leader, and the leases it holds until when. A
/// single node lists itself, the leader, with no leases.
pub(super) async fn replicas(State(state): State<ApiState>) -> Response {
    match state.catalog.replicas().await {
        Ok(replicas) => Json(replicas).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

/// Body of `POST /api/v1/prune`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PruneRequest {
    /// Only say what would be pruned.
    #[serde(default)]
    pub dry_run: bool,
}

pub(super) async fn prune_now(
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
