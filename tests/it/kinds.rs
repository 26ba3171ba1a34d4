//! What the provider interface lets a target kind decide: recovery points that the protected system makes itself
//! (a vault's own policy, a platform's own scheduler), kept where rpod lists no storage, and the expiry the system
//! gives a backup.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use rpod::catalog::Catalog;
use rpod::config::Config;
use rpod::providers::{BackupOutcome, BackupRequest, ExternalPoint, Provider, ProviderError};
use rpod::reconcile::reconcile;
use rpod::record::Status;
use rpod::storage::ManagedStorage;
use rpod::target::TargetSpec;

/// A provider whose system keeps recovery points of its own.
#[derive(Debug)]
struct Vault(Mutex<Vec<ExternalPoint>>);

#[async_trait::async_trait]
impl Provider for Vault {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn recovery_points(&self) -> Option<Result<Vec<ExternalPoint>, ProviderError>> {
        Some(Ok(self.0.lock().unwrap().clone()))
    }

    /// An on-demand backup whose expiry the vault decides: a week.
    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        let at = request.clock.now();
        Ok(BackupOutcome {
            recovery_point: at,
            artifact: request.artifact,
            size_bytes: None,
            sha256: None,
            sku: None,
            etag: None,
            expires_at: Some(at + TimeDelta::days(7)),
            content: None,
        })
    }
}

#[tokio::test]
async fn recovery_points_made_outside_rpod_count_as_the_system_describes_them() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nstate_dir = \"{0}/state\"\n[storage.local]\nkind = \"directory\"\npath = \"{0}/backups\"\n\
         [[targets]]\nname = \"vm\"\nkind = \"command\"\ncommand = [\"true\"]\nstorage = \"local\"\n\
         [targets.policy]\nrpo = \"1d\"\n",
        dir.path().display()
    );
    let config = Config::parse(&toml, std::path::Path::new("rpod.toml")).unwrap();
    let mut specs = rpod::app::build_targets(&config, std::path::Path::new("rpod.toml")).unwrap();
    let now = Utc::now();
    let point = |name: &str, age_hours: i64, expires: Option<DateTime<Utc>>| ExternalPoint {
        name: name.to_owned(),
        recovery_point: now - TimeDelta::hours(age_hours),
        expires_at: expires,
        size: None,
        pending: false,
    };
    let vault_expiry = now + TimeDelta::days(3);
    let vault = Arc::new(Vault(Mutex::new(vec![
        point("rp-1", 30, Some(vault_expiry)),
        point("rp-2", 2, None),
    ])));
    let mut spec: TargetSpec = specs.remove(0);
    spec.provider = vault.clone();
    // Its recovery points live in the vault: no storage rpod could list.
    spec.storage = Arc::new(ManagedStorage::new("vault-1"));
    let targets = vec![Arc::new(spec)];
    let catalog = Catalog::open(&dir.path().join("state")).await.unwrap();

    let report = reconcile(&catalog, &targets, now).await.unwrap();
    assert_eq!(report.discovered.len(), 2, "{report:?}");
    let records = catalog.backups(Some("vm"), 10).await.unwrap();
    let find = |name: &str| {
        records
            .iter()
            .find(|r| r.artifact.as_deref() == Some(name))
            .unwrap()
            .clone()
    };
    let first = find("rp-1");
    assert_eq!(
        first.expires_at.map(|e| e.timestamp_millis()),
        Some(vault_expiry.timestamp_millis()),
        "the system's expiry, not the policy's"
    );
    assert!(first.is_restorable(now));
    let second = find("rp-2");
    assert_eq!(
        second.expires_at.map(|e| e.timestamp_millis()),
        Some((now - TimeDelta::hours(2) + TimeDelta::days(30)).timestamp_millis()),
        "without one, the recovery point plus the policy's expiry"
    );
    let summary = catalog.summary("vm", now).await.unwrap();
    assert_eq!(summary.restorable_backups, 2);
    assert_eq!(
        summary.newest_recovery_point.map(|p| p.timestamp_millis()),
        Some((now - TimeDelta::hours(2)).timestamp_millis())
    );

    // No storage lists them, and that does not make them missing; leaving the system's list does.
    let report = reconcile(&catalog, &targets, now).await.unwrap();
    assert!(
        report.missing.is_empty() && report.discovered.is_empty(),
        "{report:?}"
    );
    vault.0.lock().unwrap().retain(|p| p.name != "rp-2");
    let report = reconcile(&catalog, &targets, now).await.unwrap();
    assert_eq!(report.missing, vec![("vm".to_owned(), second.id)]);
    let gone = catalog.backup(second.id).await.unwrap().unwrap();
    assert_eq!(gone.status, Status::Missing);
    catalog.close().await;
}

#[tokio::test]
async fn a_provider_may_set_the_expiry_of_its_backups() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nstate_dir = \"{0}/state\"\n[storage.local]\nkind = \"directory\"\npath = \"{0}/backups\"\n\
         [[targets]]\nname = \"vm\"\nkind = \"command\"\ncommand = [\"true\"]\nstorage = \"local\"\n",
        dir.path().display()
    );
    let config = Config::parse(&toml, std::path::Path::new("rpod.toml")).unwrap();
    let mut spec = rpod::app::build_targets(&config, std::path::Path::new("rpod.toml"))
        .unwrap()
        .remove(0);
    spec.provider = Arc::new(Vault(Mutex::new(Vec::new())));
    let catalog = Catalog::open(&dir.path().join("state")).await.unwrap();
    let shared = rpod::scheduler::Shared::new(
        catalog.clone(),
        rpod::metrics::Metrics::new(),
        rpod::clock::Clock::system(),
        1,
    );
    let report = rpod::scheduler::run_once(&shared, spec, rpod::record::Trigger::Manual).await;
    let record = catalog
        .backup(report.backup_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, Status::Succeeded, "{record:?}");
    assert_eq!(
        record.expires_at.unwrap() - record.accepted_at.unwrap(),
        TimeDelta::days(7),
        "the vault's week, not the policy's 30 days"
    );
    catalog.close().await;
}
