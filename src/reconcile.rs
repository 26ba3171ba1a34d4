//! Reconciliation (DESIGN §2.10): compare each target's storage prefix with the catalog. A restorable backup
//! whose artifact vanished is marked `missing`; an artifact no record names that matches the target's naming
//! scheme is imported as `discovered`, restorable until its creation time plus the target's expiry.
//!
//! What does not live here: deleting anything (`maintenance::prune`); reconciliation only corrects the record.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError, Discovered, Status};
use crate::policy;
use crate::scheduler::TargetSpec;

/// What one pass changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    /// `(target, backup id)` of records marked missing.
    pub missing: Vec<(String, i64)>,
    /// `(target, artifact)` of artifacts imported as discovered.
    pub discovered: Vec<(String, String)>,
    /// Targets whose storage could not be listed (nothing was changed for them).
    pub unlisted: Vec<String>,
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
        let name = spec.config.name.as_str();
        // The catalog first, then the listing: a backup that completes in between is still `running` in what
        // was read, so it cannot be taken for missing.
        let known = catalog.artifacts(name).await?;
        let prefix = spec.config.artifact_name.prefix(name);
        let listed = match spec.storage.list(&prefix).await {
            Ok(listed) => listed,
            Err(err) => {
                warn!(target = %name, error = %err, "Reconciliation skipped: the storage could not be listed.");
                report.unlisted.push(name.to_owned());
                continue;
            }
        };
        let present: HashSet<&str> = listed.iter().map(|a| a.name.as_str()).collect();
        for (id, artifact, status) in &known {
            if matches!(status, Status::Succeeded | Status::Discovered)
                && !present.contains(artifact.as_str())
            {
                let detail = format!(
                    "artifact {artifact} is no longer in storage {}",
                    spec.storage.name()
                );
                if catalog.mark_missing(name, *id, now, &detail).await? {
                    warn!(target = %name, backup_id = id, %artifact, "Backup artifact vanished from storage; marked missing.");
                    report.missing.push((name.to_owned(), *id));
                }
            }
        }
        let names: HashSet<&str> = known.iter().map(|(_, a, _)| a.as_str()).collect();
        for artifact in &listed {
            if names.contains(artifact.name.as_str())
                || !spec.config.artifact_name.matches(&artifact.name, name)
            {
                continue;
            }
            let found = Discovered {
                target: name,
                kind: spec.provider.kind(),
                storage: spec.storage.name(),
                artifact: &artifact.name,
                size: artifact.size,
                created_at: artifact.created_at,
                expires_at: artifact.created_at + policy::delta(spec.config.policy.expiry),
            };
            // Imported only if no record names it by now: a backup started after the catalog was read records
            // its artifact name before the artifact exists.
            if let Some(id) = catalog.import_discovered(&found, now).await? {
                info!(target = %name, backup_id = id, artifact = %artifact.name, "Imported a backup found in storage.");
                report
                    .discovered
                    .push((name.to_owned(), artifact.name.clone()));
            }
        }
    }
    Ok(report)
}
