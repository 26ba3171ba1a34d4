//! Several replicas on one PostgreSQL catalog (docs/high-availability.md): opening the configured catalog, and
//! the lease keeper, which renews this replica's leases three times per lease, takes its share of the targets,
//! gives back what exceeds it, and tells the scheduler which targets are this replica's to schedule.
//!
//! What does not live here: the leases themselves (`catalog::leases`), and how a target joins or leaves the
//! scheduler (`scheduler::lifecycle`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{Catalog, LeaseBook, PostgresCatalog, RecordedChange};
use crate::changes::{ChangeNotice, ChangeSink, ChangeSource};
use crate::config::{CatalogConfig, Daemon};
use crate::http::TargetsView;
use crate::metrics::Metrics;
use crate::scheduler::SchedulerHandle;

/// Opens the catalog `[catalog]` names: the `SQLite` file in the state directory, or the PostgreSQL database, for
/// the daemon (`leases`: created or migrated, with this replica's lease book) or for reading.
///
/// # Errors
/// The catalog cannot be opened; the message names the file or server and what to do.
pub async fn open_catalog(
    daemon: &Daemon,
    catalog: &CatalogConfig,
    leases: bool,
) -> anyhow::Result<Catalog> {
    let replica = daemon
        .replica_id
        .clone()
        .unwrap_or_else(crate::catalog::default_replica_id);
    match catalog {
        CatalogConfig::Sqlite => Ok(open_sqlite(&daemon.state_dir).await?.with_replica(&replica)),
        CatalogConfig::Postgres(postgres) => {
            let password = match &postgres.password {
                Some(source) => Some(
                    source
                        .load()
                        .map_err(|message| anyhow::anyhow!("catalog.password_file: {message}"))?,
                ),
                None => None,
            };
            if let Some(ca_file) = &postgres.ca_file {
                crate::azure::tls::TrustedCa::load(ca_file)
                    .map_err(|message| anyhow::anyhow!("catalog.ca_file: {message}"))?;
            }
            let settings = PostgresCatalog {
                url: postgres.url.clone(),
                password: password.map(|secret| secret.expose().to_owned()),
                ca_file: postgres.ca_file.clone(),
            };
            // The daemon creates and migrates the catalog; a reader (rpod status) leaves it as it is.
            let catalog = if leases {
                Catalog::open_postgres(&settings).await?
            } else {
                Catalog::open_postgres_read_only(&settings).await?
            }
            .with_replica(&replica);
            Ok(if leases {
                catalog.with_leases(Arc::new(LeaseBook::new(&replica, postgres.lease)))
            } else {
                catalog
            })
        }
    }
}

async fn open_sqlite(state_dir: &Path) -> anyhow::Result<Catalog> {
    use anyhow::Context as _;
    Catalog::open(state_dir)
        .await
        .with_context(|| format!("opening the catalog in {}", state_dir.display()))
}

/// Where the webhook reports changes when replicas share the catalog: to this replica's scheduler when it holds
/// the target, else into the catalog, where the target's owner takes it at its next lease round.
#[derive(Debug, Clone)]
pub struct SharedChanges {
    /// The catalog, with this replica's lease book.
    pub catalog: Catalog,
    /// This replica's scheduler.
    pub scheduler: SchedulerHandle,
}

impl ChangeSink for SharedChanges {
    fn changed(&self, notice: ChangeNotice) {
        if self.catalog.may_start(&notice.target) {
            self.scheduler.changed(notice);
            return;
        }
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            let change = RecordedChange {
                target: notice.target.clone(),
                source: notice.source.as_str().to_owned(),
                changed_at: notice.changed_at,
            };
            if let Err(err) = catalog.record_change(&change, chrono::Utc::now()).await {
                warn!(target = %notice.target, error = %err, "Could not keep a change for the target's replica; it is lost unless detected again.");
            }
        });
    }
}

/// What the lease keeper works with.
pub struct Keeper {
    /// The catalog, with this replica's lease book.
    pub catalog: Catalog,
    /// The scheduler it hands targets to.
    pub scheduler: SchedulerHandle,
    /// The configured targets (replaced on reload).
    pub view: TargetsView,
    /// Where `rpod_replica_leases` and `rpod_replica_is_leader` go.
    pub metrics: Metrics,
    /// Set when shutdown begins: from then on the keeper only renews what it holds, so the backups being drained
    /// keep their leases, and takes nothing new.
    pub draining: Arc<AtomicBool>,
}

/// Keeps this replica's leases until `stop` is cancelled (after the drain); does nothing on a single node.
pub async fn keep_leases(keeper: Keeper, stop: CancellationToken) {
    let Keeper {
        catalog,
        scheduler,
        view,
        metrics,
        draining,
    } = keeper;
    let Some(book) = catalog.leases().cloned() else {
        return;
    };
    let every = book.renew_every();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable = true;
    let mut taken_over: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let specs = view.read().map(|v| v.clone()).unwrap_or_default();
        let draining = draining.load(Ordering::Acquire);
        let names: Vec<String> = if draining {
            book.held()
        } else {
            specs.iter().map(|s| s.config.name.clone()).collect()
        };
        match tokio::time::timeout(every, catalog.lease_round(&names)).await {
            Ok(Ok(round)) => {
                if !reachable {
                    info!("The catalog answers again; leases renewed.");
                    reachable = true;
                }
                if !round.gained.is_empty() || !round.lost.is_empty() {
                    info!(
                        replica = %book.replica(), held = round.held, share = round.share,
                        gained = round.gained.len(), lost = ?round.lost, leader = round.leader,
                        "Leases changed."
                    );
                }
                if !round.gained.is_empty() && !draining {
                    taken_over = round.gained.clone();
                }
                if round.surplus > 0 && !draining {
                    let given = scheduler.give_up(round.surplus).await;
                    if !given.is_empty()
                        && let Err(err) = catalog.release_leases(&given).await
                    {
                        warn!(error = %err, "Could not give leases back; they lapse on their own.");
                    }
                }
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(err)) => err.to_string(),
                    _ => format!("no answer within {}", humantime::format_duration(every)),
                };
                if reachable {
                    warn!(error = %why, "Could not renew leases; work already started goes on, nothing new starts once they could have lapsed.");
                    reachable = false;
                }
                if book.lapsed() && !book.held().is_empty() {
                    let dropped = book.forget();
                    warn!(
                        targets = dropped.len(),
                        "Leases could not be renewed in time: this replica stops scheduling its targets until the catalog answers."
                    );
                }
            }
        }
        let held: HashSet<String> = book.held().into_iter().collect();
        if !draining {
            let owned = specs
                .iter()
                .filter(|spec| held.contains(&spec.config.name))
                .cloned()
                .collect();
            scheduler.own(owned).await;
            // Changes other replicas' webhooks recorded for the targets held here.
            match catalog.take_changes(&book.held()).await {
                Ok(changes) => {
                    for change in changes {
                        scheduler.changed(ChangeNotice {
                            target: change.target,
                            source: if change.source == ChangeSource::EventGrid.as_str() {
                                ChangeSource::EventGrid
                            } else {
                                ChangeSource::SyncState
                            },
                            changed_at: change.changed_at,
                        });
                    }
                }
                Err(err) => {
                    warn!(error = %err, "Could not read the changes recorded for this replica's targets.");
                }
            }
            // Restores of the targets just taken over are followed here now (their saved operations resumed).
            if !taken_over.is_empty() {
                let taken = std::mem::take(&mut taken_over);
                if let Err(err) = crate::scheduler::restore::resume_restores(
                    &scheduler,
                    &specs,
                    Some(&taken),
                    chrono::Utc::now(),
                )
                .await
                {
                    warn!(error = %err, "Could not resume the restores of the targets taken over.");
                }
            }
        }
        metrics.set_replica(book.replica(), held.len(), book.is_leader());
    }
}
