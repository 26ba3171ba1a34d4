//! Reconciliation (docs/architecture.md, "Reconciliation"): compare each target's storage prefix with the
//! catalog. A restorable backup whose artifact vanished is marked `missing`; an artifact no record names that
//! matches the target's naming scheme is imported as `discovered`, dated by its name (else the earlier of its
//! storage times) and restorable only once its content checked out. Kinds whose system makes recovery points of
//! its own (a vault's policy, a platform's scheduler) list them through their provider; those are imported as the
//! system describes them (once the system's listing can be trusted), and one that disappears from its list is
//! marked `missing`, or `pruned` by the platform when it had expired (the system deletes what it no longer keeps).
//!
//! What does not live here: deleting anything (`maintenance::prune`); reconciliation only corrects the record.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError, Discovered};
use crate::policy;
use crate::providers::ShareReading;
use crate::record::Status;
use crate::storage::ArtifactInfo;
use crate::target::TargetSpec;

/// What one pass changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    /// `(target, backup id)` of records marked missing.
    pub missing: Vec<(String, i64)>,
    /// `(target, artifact)` of artifacts imported as discovered.
    pub discovered: Vec<(String, String)>,
    /// Targets whose storage could not be listed (nothing was changed for them).
    pub unlisted: Vec<String>,
    /// `(target, healthy, what the system says)` for the kinds whose system reports its protection's health.
    pub health: Vec<(String, bool, String)>,
    /// `(target, reading)` for the kinds whose system keeps its backups on a share it reports on.
    pub shares: Vec<(String, ShareReading)>,
    /// `(target, backup id)` of records whose backup the platform deleted after it expired.
    pub pruned_by_platform: Vec<(String, i64)>,
}

impl ReconcileReport {
    /// Targets whose restorability may have changed.
    #[must_use]
    pub fn changed_targets(&self) -> Vec<String> {
        let mut targets: Vec<String> = self
            .missing
            .iter()
            .map(|(t, _)| t.clone())
            .chain(self.discovered.iter().map(|(t, _)| t.clone()))
            .chain(self.pruned_by_platform.iter().map(|(t, _)| t.clone()))
            .collect();
        targets.sort();
        targets.dedup();
        targets
    }
}

/// Reconciles every target with its storage.
///
/// # Errors
/// The catalog could not be read or written.
pub async fn reconcile(
    catalog: &Catalog,
    targets: &[Arc<TargetSpec>],
    now: DateTime<Utc>,
) -> Result<ReconcileReport, CatalogError> {
    let mut report = ReconcileReport::default();
    for spec in targets {
        // One target at a time, giving way between them: a pass over many targets never holds a worker thread
        // from the scheduler or from attempts that are due.
        tokio::task::yield_now().await;
        let name = spec.config.name.as_str();
        // The catalog first, then the listing: a backup that completes in between is still `running` in what
        // was read, so it cannot be taken for missing.
        let known = catalog.artifacts(name).await?;
        // While a backup of a target whose system keeps its points runs, the point it is making may already be
        // listed: importing it would record it twice (the backup records it when it ends). Such a target waits
        // for the next round.
        if spec.kept_by_system() && known.iter().any(|a| a.status == Status::Running) {
            continue;
        }
        let prefix = spec.config.artifact_name.prefix(name);
        let listed = match spec.storage.list(&prefix).await {
            Ok(listed) => listed,
            Err(err) => {
                warn!(target = %name, error = %err, "Reconciliation skipped: the storage could not be listed.");
                report.unlisted.push(name.to_owned());
                continue;
            }
        };
        match spec.provider.health().await {
            None => {}
            Some(Ok(health)) => {
                if let Some(share) = health.share {
                    report.shares.push((name.to_owned(), share));
                }
                report
                    .health
                    .push((name.to_owned(), health.healthy, health.detail));
            }
            Some(Err(err)) => {
                warn!(target = %name, code = %err.code, "The protection's health could not be read. {}", err.message);
                report
                    .health
                    .push((name.to_owned(), false, err.to_string()));
            }
        }
        // Recovery points the protected system made itself (a vault's policy, a platform's scheduler).
        let external = match spec.provider.recovery_points().await {
            None => Vec::new(),
            Some(Ok(points)) => points,
            Some(Err(err)) => {
                warn!(target = %name, code = %err.code, "Reconciliation skipped: the recovery points could not be listed. {}", err.message);
                report.unlisted.push(name.to_owned());
                continue;
            }
        };
        let present: HashMap<&str, &ArtifactInfo> =
            listed.iter().map(|a| (a.name.as_str(), a)).collect();
        let made_outside: HashSet<&str> = external.iter().map(|p| p.name.as_str()).collect();
        for artifact in &known {
            if made_outside.contains(artifact.name.as_str()) {
                continue;
            }
            let Some(info) = present.get(artifact.name.as_str()) else {
                if matches!(artifact.status, Status::Succeeded | Status::Discovered)
                    && spec.kept_by_system()
                    && let Some(record) = catalog.backup(artifact.id).await?
                    && record.expires_at.is_some_and(|at| at <= now)
                {
                    // The system deletes what it no longer keeps (a stamp prunes its share): expected, not missing.
                    catalog
                        .mark_pruned(
                            &record,
                            now,
                            "platform",
                            "deleted by its system after it expired",
                        )
                        .await?;
                    info!(target = %name, backup_id = artifact.id, artifact = %artifact.name, "The system deleted an expired backup; marked pruned.");
                    report
                        .pruned_by_platform
                        .push((name.to_owned(), artifact.id));
                    continue;
                }
                if matches!(artifact.status, Status::Succeeded | Status::Discovered) {
                    let detail = format!(
                        "artifact {} is no longer in storage {}",
                        artifact.name,
                        spec.storage.name()
                    );
                    if catalog
                        .mark_missing(name, artifact.id, now, &detail)
                        .await?
                    {
                        warn!(target = %name, backup_id = artifact.id, artifact = %artifact.name, "Backup artifact vanished from storage; marked missing.");
                        report.missing.push((name.to_owned(), artifact.id));
                    }
                }
                continue;
            };
            if artifact.imported_unchecked {
                let found = examine(spec, info, now).await;
                if catalog
                    .reverify_discovered(artifact.id, &found, now)
                    .await?
                {
                    info!(target = %name, backup_id = artifact.id, artifact = %artifact.name, restorable = found.unverified.is_none(), "Checked a backup imported by an earlier rpod.");
                    report
                        .discovered
                        .push((name.to_owned(), artifact.name.clone()));
                }
            }
        }
        let names: HashSet<&str> = known.iter().map(|a| a.name.as_str()).collect();
        for point in &external {
            if point.pending || names.contains(point.name.as_str()) {
                continue;
            }
            let expires_at = point
                .expires_at
                .unwrap_or(point.recovery_point + policy::delta(spec.config.policy.expiry));
            // A backup that ended before the system listed its point is completed with it.
            if let Some(id) = catalog
                .complete_unlisted(name, &point.name, point.recovery_point, expires_at, now)
                .await?
            {
                info!(target = %name, backup_id = id, recovery_point = %point.name, "Completed a backup with the recovery point its system lists now.");
                report
                    .discovered
                    .push((name.to_owned(), point.name.clone()));
                continue;
            }
            let found = Discovered {
                target: name,
                kind: spec.provider.kind(),
                storage: spec.storage.name(),
                artifact: &point.name,
                size: point.size.unwrap_or(0),
                recovery_point: Some(point.recovery_point),
                expires_at: Some(expires_at),
                // The system that made it vouches for it.
                unverified: None,
            };
            if let Some(id) = catalog.import_discovered(&found, now).await? {
                info!(target = %name, backup_id = id, recovery_point = %point.name, "Imported a recovery point made outside rpod.");
                report
                    .discovered
                    .push((name.to_owned(), point.name.clone()));
            }
        }
        for artifact in &listed {
            if names.contains(artifact.name.as_str())
                || !spec.config.artifact_name.matches(&artifact.name, name)
            {
                continue;
            }
            let found = examine(spec, artifact, now).await;
            // Imported only if no record names it by now: a backup started after the catalog was read records
            // its artifact name before the artifact exists.
            if let Some(id) = catalog.import_discovered(&found, now).await? {
                if let Some(why) = &found.unverified {
                    warn!(
                        target = %name, backup_id = id, artifact = %artifact.name,
                        "Recorded an artifact found in storage that does not count as restorable: {why}."
                    );
                } else {
                    info!(target = %name, backup_id = id, artifact = %artifact.name, "Imported a backup found in storage.");
                }
                report
                    .discovered
                    .push((name.to_owned(), artifact.name.clone()));
            }
        }
    }
    Ok(report)
}

/// Dates and checks an artifact found in storage (docs/operations.md, "What restorable means"): its recovery
/// point is the time its name encodes, or else the earlier of its storage times, and never later than either
/// (a name cannot make content newer than the storage saw it written); never the time of discovery. It counts
/// as restorable only if it is not expired and the provider verified its content.
async fn examine<'a>(
    spec: &'a TargetSpec,
    artifact: &'a ArtifactInfo,
    now: DateTime<Utc>,
) -> Discovered<'a> {
    let name = spec.config.name.as_str();
    let stored = artifact.stored_at();
    let recovery_point = match (
        spec.config.artifact_name.encoded_time(&artifact.name, name),
        stored,
    ) {
        (Some(named), Some(stored)) => Some(named.min(stored)),
        (named, stored) => named.or(stored),
    };
    let expires_at = recovery_point.map(|at| at + policy::delta(spec.config.policy.expiry));
    let unverified = match expires_at {
        None => Some("neither its name nor the storage says when it was made".to_owned()),
        Some(expiry) if expiry <= now => Some(format!(
            "it expired on {} (recovery point plus expiry), before rpod found it",
            expiry.format("%Y-%m-%dT%H:%M:%SZ")
        )),
        Some(_) => spec.provider.verify(&spec.storage, artifact).await.err(),
    };
    Discovered {
        target: name,
        kind: spec.provider.kind(),
        storage: spec.storage.name(),
        artifact: &artifact.name,
        size: artifact.size,
        recovery_point,
        expires_at,
        unverified,
    }
}
