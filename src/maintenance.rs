//! The periodic evaluation pass: RPO compliance, restorability gauges, warn-before-expiry, storage probes and
//! pruning of expired backups (docs/architecture.md, "Evaluation loop"). Also serves `rpod prune`. The heartbeat
//! is the scheduler's own (`scheduler::Heartbeat`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::catalog::{Catalog, CatalogError};
use crate::metrics::Metrics;
use crate::policy::{self, PruneDecision};
use crate::record::BackupRecord;
use crate::storage::Storage;
use crate::target::TargetSpec;

/// Expired backups handled per pass; the rest wait for the next pass.
const PRUNE_BATCH: u32 = 10_000;

/// One backup that was (or, in a dry run, would be) pruned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pruned {
    /// Target name.
    pub target: String,
    /// Catalog id.
    pub backup_id: i64,
    /// Storage name.
    pub storage: String,
    /// Artifact name.
    pub artifact: Option<String>,
    /// When it expired.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why it goes.
    pub reason: String,
}

/// What a prune pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneReport {
    /// Pruned (or, in a dry run, to be pruned) backups.
    pub pruned: Vec<Pruned>,
    /// Problems: a storage that could not be listed, an artifact that could not be deleted.
    pub errors: Vec<String>,
}

/// Chooses and (unless `dry_run`) deletes what the policies say must go. A target whose storage cannot be listed
/// is skipped entirely: nothing is deleted on a failed listing.
///
/// # Errors
/// The catalog could not be read.
pub async fn prune(
    catalog: &Catalog,
    metrics: Option<&Metrics>,
    targets: &[Arc<TargetSpec>],
    now: DateTime<Utc>,
    dry_run: bool,
    actor: &str,
) -> Result<PruneReport, CatalogError> {
    let mut report = PruneReport::default();
    let mut expired: HashMap<String, Vec<BackupRecord>> = HashMap::new();
    for record in catalog.expired_unpruned(now, PRUNE_BATCH).await? {
        expired
            .entry(record.target.clone())
            .or_default()
            .push(record);
    }
    for spec in targets {
        let name = &spec.config.name;
        let policy = &spec.config.policy;
        let expired = expired.remove(name.as_str()).unwrap_or_default();
        // The system that keeps its recovery points (a vault) owns their retention: rpod never prunes them.
        let kept_by_system = spec.kept_by_system();
        if kept_by_system || !policy.prune || (expired.is_empty() && policy.keep_last.is_none()) {
            continue;
        }
        let restorable = catalog.restorable(name, now).await?;
        if expired.is_empty()
            && policy
                .keep_last
                .is_none_or(|keep| restorable.len() <= usize::try_from(keep).unwrap_or(usize::MAX))
        {
            continue;
        }
        let newest_success = catalog.newest_success_id(name).await?;
        let decisions = policy::select_prunes(policy, &restorable, &expired, newest_success);
        if decisions.is_empty() {
            continue;
        }
        if dry_run {
            report
                .pruned
                .extend(decisions.iter().map(|d| pruned(spec.storage.as_ref(), d)));
            continue;
        }
        let prefix = spec.config.artifact_name.prefix(name);
        let listing = match spec.storage.list(&prefix).await {
            Ok(listing) => listing,
            Err(err) => {
                error!(target = %name, error = %err, "Not pruning: the storage listing failed.");
                if let Some(metrics) = metrics {
                    metrics.set_storage_up(spec.storage.name(), false);
                }
                report
                    .errors
                    .push(format!("target {name}: not pruned: {err}"));
                continue;
            }
        };
        for decision in decisions {
            let record = &decision.record;
            let present = record
                .artifact
                .as_deref()
                .is_some_and(|a| listing.iter().any(|item| item.name == a));
            let mut reason = decision.reason.clone();
            if present {
                if let Some(artifact) = &record.artifact
                    && let Err(err) = spec.storage.delete(artifact).await
                {
                    error!(target = %name, backup_id = record.id, error = %err, "Could not delete an expired artifact.");
                    report
                        .errors
                        .push(format!("target {name}: backup {}: {err}", record.id));
                    continue;
                }
                if let Some(metrics) = metrics {
                    metrics.pruned(name);
                }
            } else {
                reason.push_str("; the artifact was already absent from storage");
            }
            match catalog.mark_pruned(record, now, actor, &reason).await {
                Ok(()) => {}
                // Marked missing (or pruned) since it was chosen: nothing left to record.
                Err(CatalogError::Conflict { .. }) => continue,
                Err(err) => return Err(err),
            }
            info!(
                target = %name, backup_id = record.id, artifact = record.artifact.as_deref().unwrap_or("-"),
                reason = %reason, "Backup pruned."
            );
            report.pruned.push(Pruned {
                reason,
                ..pruned(spec.storage.as_ref(), &decision)
            });
        }
    }
    Ok(report)
}

fn pruned(storage: &dyn Storage, decision: &PruneDecision) -> Pruned {
    Pruned {
        target: decision.record.target.clone(),
        backup_id: decision.record.id,
        storage: storage.name().to_owned(),
        artifact: decision.record.artifact.clone(),
        expires_at: decision.record.expires_at,
        reason: decision.reason.clone(),
    }
}

/// One evaluation pass: compliance and restorability of `targets` (the ones this process schedules), storage
/// probes, and, given `singletons` (every target, to the leader or a single node), expiry warnings and pruning.
///
/// # Errors
/// The catalog could not be read.
pub async fn evaluate(
    catalog: &Catalog,
    metrics: &Metrics,
    targets: &[Arc<TargetSpec>],
    singletons: Option<&[Arc<TargetSpec>]>,
    now: DateTime<Utc>,
) -> Result<(), CatalogError> {
    let summaries = catalog.restorability(now).await?;
    for spec in targets {
        let name = &spec.config.name;
        let policy = &spec.config.policy;
        let summary = summaries.get(name.as_str()).copied().unwrap_or_default();
        let compliant = policy::is_compliant(summary.newest_recovery_point, policy.rpo, now);
        metrics.set_restorability(name, summary.count, summary.until, compliant);
    }
    for spec in singletons.unwrap_or_default() {
        let name = &spec.config.name;
        let policy = &spec.config.policy;
        let summary = summaries.get(name.as_str()).copied().unwrap_or_default();
        if let Some(until) = summary.until
            && until - now <= policy::delta(policy.warn_before_expiry)
        {
            warn_expiry(catalog, metrics, name, until, now).await?;
        }
    }
    let mut storages: BTreeMap<&str, &Arc<dyn Storage>> = BTreeMap::new();
    for spec in targets {
        storages.insert(spec.storage.name(), &spec.storage);
    }
    for (name, storage) in storages {
        match storage.probe().await {
            Ok(()) => metrics.set_storage_up(name, true),
            Err(err) => {
                warn!(storage = name, error = %err, "Storage probe failed.");
                metrics.set_storage_up(name, false);
            }
        }
    }
    if let Some(all) = singletons {
        let report = prune(catalog, Some(metrics), all, now, false, "rpod").await?;
        if !report.pruned.is_empty() {
            info!(count = report.pruned.len(), "Pruning pass finished.");
        }
    }
    Ok(())
}

async fn warn_expiry(
    catalog: &Catalog,
    metrics: &Metrics,
    name: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), CatalogError> {
    let last = catalog
        .restorable(name, now)
        .await?
        .into_iter()
        .filter(|r| r.expires_at == Some(until))
        .min_by_key(|r| r.id);
    if let Some(record) = last
        && catalog.mark_expiry_warned(record.id, now).await?
    {
        warn!(
            target = %name, backup_id = record.id, expires_at = %until,
            "The last restorable backup expires soon and no newer backup exists: backups have stopped. \
             Check the target's recent failures (rpod backups {name})."
        );
        metrics.expiry_warned(name);
    }
    Ok(())
}
