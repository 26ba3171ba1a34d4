//! Wiring: build everything from a validated configuration and run until cancelled.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::azure::{ArmClient, ArmOptions, ArmTokens, AzureClients, credential};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::{AzureConfig, Config, ConfigError, Problem, StorageConfig};
use crate::http::webhook::Webhook;
use crate::http::{self, ApiState, TargetsView};
use crate::maintenance;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::providers;
use crate::reconcile;
use crate::scheduler::{self, Heartbeat, Shared};
use crate::state_dir::StateLock;
use crate::storage;
use crate::target::TargetSpec;

/// What lives as long as the process, across configuration reloads: the metrics registry and, once a
/// configuration first needs Azure, the one credential and the one ARM client (with its token buckets).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// The metrics registry.
    pub metrics: Metrics,
    /// SDK transport override for every Azure client; tests send everything to loopback with it.
    pub transport: Option<azure_core::http::Transport>,
    /// Refuse ARM URLs that are not on loopback (tests).
    pub loopback_only: bool,
    azure: Arc<OnceLock<AzureRuntime>>,
    profiles: Arc<std::sync::Mutex<std::collections::BTreeMap<String, ProfileRuntime>>>,
}

/// One `[azure.profiles.NAME]`'s ARM client (its own TLS settings and tokens), built at first use.
#[derive(Debug, Clone)]
struct ProfileRuntime {
    settings: AzureConfig,
    arm: Result<ArmClient, String>,
}

#[derive(Debug, Clone)]
struct AzureRuntime {
    settings: AzureConfig,
    clients: AzureClients,
    arm: Result<ArmClient, String>,
}

impl Environment {
    /// An environment whose Azure clients send through `transport` and refuse non-loopback ARM URLs.
    #[must_use]
    pub fn loopback(transport: azure_core::http::Transport) -> Self {
        Self {
            transport: Some(transport),
            loopback_only: true,
            ..Self::default()
        }
    }

    /// The Azure clients, built from the first configuration that asks (later `[azure]` changes need a restart).
    fn azure(&self, config: &AzureConfig) -> &AzureRuntime {
        let runtime = self.azure.get_or_init(|| {
            let credential = credential::credential(config, self.transport.clone());
            let tokens = Arc::new(ArmTokens::new(credential.clone(), config.scope()));
            let arm = ArmClient::new(
                tokens,
                self.metrics.clone(),
                ArmOptions::from_config(config, self.loopback_only),
            )
            .map_err(|err| err.to_string());
            AzureRuntime {
                settings: config.clone(),
                clients: AzureClients {
                    credential,
                    transport: self.transport.clone(),
                },
                arm,
            }
        });
        if format!("{:?}", runtime.settings) != format!("{config:?}") {
            warn!("Settings under [azure] changed; they take effect after a restart.");
        }
        runtime
    }

    /// The ARM client of `[azure.profiles.NAME]`, built from the first configuration that asks (later changes
    /// need a restart). Its `ca_file` is read here.
    ///
    /// # Errors
    /// The CA file cannot be used: a configuration problem with its key.
    fn profile(
        &self,
        name: &str,
        config: &AzureConfig,
    ) -> Result<Result<ArmClient, String>, Problem> {
        let mut profiles = self
            .profiles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runtime) = profiles.get(name) {
            if format!("{:?}", runtime.settings) != format!("{config:?}") {
                warn!(profile = %name, "Settings under [azure.profiles.{name}] changed; they take effect after a restart.");
            }
            return Ok(runtime.arm.clone());
        }
        let ca = match &config.ca_file {
            Some(path) => Some(crate::azure::tls::TrustedCa::load(path).map_err(|message| {
                Problem::at(format!("azure.profiles.{name}.ca_file"), message)
            })?),
            None => None,
        };
        let arm = crate::azure::tls::client_config(ca.as_ref(), name).and_then(|tls| {
            let mut options = ArmOptions::from_config(config, self.loopback_only);
            options.tls = Some(Arc::new(tls));
            let http = crate::azure::arm::http_client(&options).map_err(|err| err.to_string())?;
            let tokens = Arc::new(crate::azure::profile::ProfileTokens::new(
                config.clone(),
                http,
                self.loopback_only,
            ));
            ArmClient::new(tokens, self.metrics.clone(), options).map_err(|err| err.to_string())
        });
        profiles.insert(
            name.to_owned(),
            ProfileRuntime {
                settings: config.clone(),
                arm: arm.clone(),
            },
        );
        Ok(arm)
    }

    /// The process's ARM client, for `check-config --online`.
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn arm(&self, config: &AzureConfig) -> Result<ArmClient, String> {
        self.azure(config).arm.clone()
    }
}

/// Builds providers and storages for every target. Reads the files the configuration names (age recipients),
/// so problems there are configuration problems too.
///
/// # Errors
/// Every file that could not be used, as configuration problems.
pub fn build_targets(config: &Config, file: &Path) -> Result<Vec<TargetSpec>, ConfigError> {
    build_targets_in(config, file, &Environment::default())
}

/// [`build_targets`] with the process's [`Environment`].
///
/// # Errors
/// Every file that could not be used, as configuration problems.
pub fn build_targets_in(
    config: &Config,
    file: &Path,
    environment: &Environment,
) -> Result<Vec<TargetSpec>, ConfigError> {
    let needs_azure = config.targets.iter().any(|t| t.kind.spec().reaches_azure())
        || config
            .storages
            .values()
            .any(|s| matches!(s, StorageConfig::AzureBlob(_)));
    let azure = needs_azure.then(|| environment.azure(&config.azure));
    let storages: std::collections::BTreeMap<_, _> = config
        .storages
        .iter()
        .filter_map(|(name, storage)| {
            storage::build(name, storage, azure.map(|a| &a.clients)).map(|s| (name.clone(), s))
        })
        .collect();
    let mut problems = Vec::new();
    if let Some(token) = &config.daemon.api_token
        && let Err(message) = token.load()
    {
        problems.push(Problem::at(config.daemon.api_token_key(), message));
    }
    if let Some(webhook) = &config.webhook
        && let Err(message) = webhook.secret.load()
    {
        let key = match webhook.secret {
            crate::config::SecretSource::File(_) => "webhook.secret_file",
            crate::config::SecretSource::Env(_) => "webhook.secret_env",
        };
        problems.push(Problem::at(key, message));
    }
    if let crate::config::CatalogConfig::Postgres(catalog) = &config.catalog {
        if let Some(password) = &catalog.password
            && let Err(message) = password.load()
        {
            let key = match password {
                crate::config::SecretSource::File(_) => "catalog.password_file",
                crate::config::SecretSource::Env(_) => "catalog.password_env",
            };
            problems.push(Problem::at(key, message));
        }
        if let Some(ca_file) = &catalog.ca_file
            && let Err(message) = crate::azure::tls::TrustedCa::load(ca_file)
        {
            problems.push(Problem::at("catalog.ca_file", message));
        }
    }
    let mut profile_arms = std::collections::BTreeMap::new();
    for name in config
        .targets
        .iter()
        .filter_map(|t| t.kind.spec().azure_profile())
    {
        if profile_arms.contains_key(name) {
            continue;
        }
        let Some(profile) = config.azure_profiles.get(name) else {
            continue;
        };
        match environment.profile(name, profile) {
            Ok(arm) => {
                profile_arms.insert(name.to_owned(), arm);
            }
            Err(problem) => problems.push(problem),
        }
    }
    let mut specs = Vec::new();
    for (index, target) in config.targets.iter().enumerate() {
        let arm = azure.map(|azure| &azure.arm);
        let profile_arm = target
            .kind
            .spec()
            .azure_profile()
            .and_then(|name| profile_arms.get(name));
        let provider = match providers::build(index, target, config, arm, profile_arm) {
            Ok(Some(provider)) => provider,
            Ok(None) => continue,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let storage = match &target.storage {
            Some(name) => match storages.get(name) {
                Some(storage) => storage.clone(),
                None => continue,
            },
            // Recovery points that live in the protected system: nothing to list, write or delete.
            None => {
                Arc::new(storage::ManagedStorage::new(&target.name)) as Arc<dyn storage::Storage>
            }
        };
        specs.push(TargetSpec {
            config: target.clone(),
            provider,
            storage,
        });
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(Config::problems_in(file, problems))
    }
}

/// Loads, validates and builds a configuration file.
///
/// # Errors
/// Every problem found.
pub fn load(file: &Path) -> Result<(Config, Vec<TargetSpec>), ConfigError> {
    load_in(file, &Environment::default())
}

/// [`load`] with the process's [`Environment`].
///
/// # Errors
/// Every problem found.
pub fn load_in(
    file: &Path,
    environment: &Environment,
) -> Result<(Config, Vec<TargetSpec>), ConfigError> {
    let config = Config::load(file)?;
    let specs = build_targets_in(&config, file, environment)?;
    Ok((config, specs))
}

/// How the daemon is started.
#[derive(Debug)]
pub struct RunOptions {
    /// The configuration file, re-read on reload.
    pub config_path: PathBuf,
    /// The validated configuration.
    pub config: Config,
    /// Its built targets.
    pub targets: Vec<TargetSpec>,
    /// The bound main listener.
    pub listener: TcpListener,
    /// The bound webhook listener, when `[webhook] listen` is set; bound from the configuration when `None`.
    pub webhook_listener: Option<TcpListener>,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    /// Each message asks for the configuration to be re-read (SIGHUP).
    pub reloads: mpsc::UnboundedReceiver<()>,
    /// Wall time.
    pub clock: Clock,
    /// Metrics and Azure clients; the one `targets` were built in.
    pub environment: Environment,
    /// The state directory's lock, when the caller took it already (before binding its listener); taken here
    /// otherwise.
    pub lock: Option<StateLock>,
    /// Where `READY=1`, `WATCHDOG=1` and the rest go; from the environment (`NOTIFY_SOCKET`) when `None`.
    pub notifier: Option<Notifier>,
}

/// Runs the daemon until `shutdown` is cancelled, then drains running backups within the configured deadline.
///
/// # Errors
/// The catalog cannot be opened, or a task died unexpectedly.
pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let RunOptions {
        config_path,
        config,
        targets,
        listener,
        webhook_listener,
        shutdown,
        mut reloads,
        clock,
        environment,
        lock,
        notifier,
    } = options;
    // Only [daemon] and [webhook] are needed from here on (the targets live in their specs): `{ config }` moves
    // the whole configuration into a temporary, so everything else is freed now rather than kept for the
    // daemon's life.
    let (daemon, catalog_config, webhook_config) = {
        let config = { config };
        (config.daemon, config.catalog, config.webhook)
    };
    let webhook_listener = match (&webhook_config, webhook_listener) {
        (Some(webhook), None) => match webhook.listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} (webhook.listen)"))?,
            ),
            None => None,
        },
        (_, listener) => listener,
    };
    let notifier = notifier.unwrap_or_else(Notifier::from_env);
    notifier.check_heartbeat(daemon.evaluation_interval);
    // One daemon per state directory: the lock comes before the catalog, and is held until rpod exits.
    let lock = match lock {
        Some(lock) => lock,
        None => StateLock::acquire(&daemon.state_dir)?,
    };
    let api_token = match &daemon.api_token {
        Some(source) => Some(
            source
                .load()
                .map_err(|message| anyhow::anyhow!("{}: {message}", daemon.api_token_key()))?,
        ),
        None => None,
    };
    let catalog = crate::replicas::open_catalog(&daemon, &catalog_config, true).await?;
    // Replicas on a shared catalog schedule the targets they hold a lease on (docs/high-availability.md); the
    // lease keeper hands them to the scheduler.
    let replicated = catalog.leases().is_some();
    if let Some(book) = catalog.leases() {
        info!(replica = %book.replica(), lease = %humantime::format_duration(book.lease()), "Sharing a PostgreSQL catalog with other replicas.");
    }
    let metrics = environment.metrics.clone();
    let mut shared = Shared::new(
        catalog.clone(),
        metrics.clone(),
        clock.clone(),
        daemon.max_concurrent_operations,
    );
    shared.heartbeat = Heartbeat::new(daemon.evaluation_interval, notifier.clone());
    // One copy of each target, shared by the scheduler, the evaluation loop and the API.
    let targets: Vec<Arc<TargetSpec>> = targets.into_iter().map(Arc::new).collect();
    let view: TargetsView = Arc::new(RwLock::new(Arc::new(targets.clone())));
    // Recovery points a system makes itself (a vault's policy backups) count toward the RPO: they are imported
    // before the watchdog first looks, so a VM its vault keeps within the RPO costs no on-demand backup at start.
    let kept_by_system: Vec<Arc<TargetSpec>> = targets
        .iter()
        .filter(|t| t.kept_by_system())
        .cloned()
        .collect();
    if !kept_by_system.is_empty() && !replicated {
        match reconcile::reconcile(&catalog, &kept_by_system, clock.now()).await {
            Ok(report) => health_of(&metrics, &report),
            Err(err) => {
                warn!(error = %err, "Could not import the systems' own recovery points before scheduling.");
            }
        }
    }
    let stop_scheduling = shutdown.child_token();
    let at_start = if replicated {
        Vec::new()
    } else {
        targets.clone()
    };
    let (scheduler, mut scheduler_task) =
        scheduler::start(shared.clone(), at_start, stop_scheduling.clone())
            .await
            .context("starting the scheduler")?;
    let draining = Arc::new(AtomicBool::new(false));
    let stop_leases = CancellationToken::new();
    let keeper = tokio::spawn(crate::replicas::keep_leases(
        crate::replicas::Keeper {
            catalog: catalog.clone(),
            scheduler: scheduler.clone(),
            view: view.clone(),
            metrics: metrics.clone(),
            draining: draining.clone(),
        },
        stop_leases.clone(),
    ));
    let only_taken_over: Option<&[String]> = replicated.then_some(&[]);
    scheduler::restore::resume_restores(&scheduler, &targets, only_taken_over, clock.now())
        .await
        .context("resuming the restores under way")?;
    let configs = |specs: &[Arc<TargetSpec>]| -> Vec<crate::config::TargetConfig> {
        specs.iter().map(|s| s.config.clone()).collect()
    };
    let webhook = match &webhook_config {
        Some(webhook) => Some(
            Webhook::new(
                webhook,
                &configs(&view.read().map(|v| v.to_vec()).unwrap_or_default()),
                if replicated {
                    Arc::new(crate::replicas::SharedChanges {
                        catalog: catalog.clone(),
                        scheduler: scheduler.clone(),
                    })
                } else {
                    Arc::new(scheduler.clone())
                },
                metrics.clone(),
            )
            .map_err(|message| anyhow::anyhow!("webhook: {message}"))?,
        ),
        None => None,
    };
    let ready = Arc::new(AtomicBool::new(true));
    let pruning = Arc::new(tokio::sync::Mutex::new(()));
    let api = ApiState {
        catalog: catalog.clone(),
        metrics: metrics.clone(),
        scheduler: scheduler.clone(),
        targets: view.clone(),
        ready: ready.clone(),
        clock: clock.clone(),
        heartbeat: shared.heartbeat.clone(),
        api_token: api_token.map(Arc::new),
        pruning: pruning.clone(),
    };
    if !daemon.listen.ip().is_loopback() && api.api_token.is_none() {
        warn!(listen = %daemon.listen, "The API listens beyond loopback without a token (allow_unauthenticated_api): anyone who reaches it can start backups.");
    }
    let address = listener.local_addr().ok();
    let mut router = http::router(api);
    let mut hook_server = None;
    if let Some(webhook) = &webhook {
        match webhook_listener {
            Some(hook_listener) => {
                if let Ok(address) = hook_listener.local_addr() {
                    info!(%address, "The Event Grid webhook listens on its own address.");
                }
                let hook_shutdown = shutdown.clone();
                let hook_router = webhook.router();
                hook_server = Some(tokio::spawn(async move {
                    axum::serve(hook_listener, hook_router)
                        .with_graceful_shutdown(hook_shutdown.cancelled_owned())
                        .await
                }));
            }
            None => router = router.merge(webhook.router()),
        }
    }
    let server_shutdown = shutdown.clone();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(server_shutdown.cancelled_owned())
            .await
    });
    let mut hook_server = hook_server;
    let hook_stopped = async {
        match &mut hook_server {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(hook_stopped);
    let serving = address.map_or_else(String::new, |a| format!(" on {a}"));
    let count = view.read().map_or(0, |v| v.len());
    notifier.ready(&format!("Serving{serving}; targets: {count}."));
    shared.heartbeat.serving();
    let mut evaluation = tokio::spawn(evaluation_loop(
        Evaluation {
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            view: view.clone(),
            clock: clock.clone(),
            scheduler: scheduler.clone(),
            interval: daemon.evaluation_interval,
            reconcile_interval: daemon.reconcile_interval,
            pruning,
        },
        shutdown.clone(),
    ));
    tokio::spawn(preflight(
        view.read().map(|v| v.to_vec()).unwrap_or_default(),
        shutdown.clone(),
    ));
    if let Some(address) = address {
        info!(%address, targets = view.read().map_or(0, |v| v.len()), "rpod is running.");
    }

    let mut latest = daemon.clone();
    let failure = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break None,
            Some(()) = reloads.recv() => {
                notifier.reloading("Reloading the configuration.");
                match load_in(&config_path, &environment) {
                    Ok((new_config, specs)) => {
                        if format!("{:?}", new_config.daemon) != format!("{latest:?}") {
                            warn!("Settings under [daemon] changed; they take effect after a restart.");
                        }
                        latest = new_config.daemon;
                        let specs: Vec<Arc<TargetSpec>> = specs.into_iter().map(Arc::new).collect();
                        match (&webhook, &new_config.webhook) {
                            (Some(webhook), Some(settings)) => {
                                if webhook_config.as_ref().map(|w| w.listen) != Some(settings.listen) {
                                    warn!("webhook.listen changed; it takes effect after a restart.");
                                }
                                if let Err(message) = webhook.update(settings, &configs(&specs)) {
                                    error!("The webhook keeps its previous settings: {message}");
                                }
                            }
                            (None, None) => {}
                            _ => warn!("[webhook] was added or removed; that takes effect after a restart."),
                        }
                        let new_view = specs.clone();
                        if !replicated {
                            // Replicas: the lease keeper hands the targets held to the scheduler at its next
                            // round, with the new settings.
                            scheduler.reload(specs).await;
                        }
                        if let Ok(mut guard) = view.write() {
                            *guard = Arc::new(new_view);
                        }
                        info!(path = %config_path.display(), "Configuration reloaded.");
                        notifier.ready("Configuration reloaded.");
                    }
                    Err(err) => {
                        error!("Configuration reload rejected; the previous configuration keeps running. {err}");
                        notifier.ready("Configuration reload rejected; the previous configuration keeps running.");
                    }
                }
            }
            result = &mut scheduler_task => break Some(format!("the scheduler stopped unexpectedly: {result:?}")),
            result = &mut server => break Some(format!("the HTTP server stopped unexpectedly: {result:?}")),
            result = &mut hook_stopped => break Some(format!("the webhook server stopped unexpectedly: {result:?}")),
            result = &mut evaluation => break Some(format!("the evaluation loop stopped unexpectedly: {result:?}")),
        }
    };
    // A task that ends because shutdown began is not a failure.
    let failure = failure.filter(|_| !shutdown.is_cancelled());
    // `drain` waits up to shutdown_timeout, then 15 s for the stopped backups: systemd must not kill rpod before.
    notifier.stopping(
        "Stopping; waiting for running backups.",
        daemon.shutdown_timeout + Duration::from_secs(30),
    );
    ready.store(false, Ordering::Release);
    draining.store(true, Ordering::Release);
    stop_scheduling.cancel();
    drain(&shared, daemon.shutdown_timeout).await;
    stop_leases.cancel();
    let _ = keeper.await;
    if let Err(err) = catalog.resign().await {
        warn!(error = %err, "Could not give this replica's leases back; they lapse on their own.");
    }
    catalog.close().await;
    drop(lock);
    if let Some(message) = failure {
        Err(anyhow::anyhow!(message))
    } else {
        info!("rpod stopped.");
        Ok(())
    }
}

/// Waits for running backups up to `deadline`, then stops them (their records become `interrupted`).
async fn drain(shared: &Shared, deadline: Duration) {
    shared.stopping.cancel();
    shared.tracker.close();
    if shared.tracker.is_empty() {
        return;
    }
    info!(
        running = shared.tracker.len(),
        "Waiting for running backups to finish."
    );
    if tokio::time::timeout(deadline, shared.tracker.wait())
        .await
        .is_ok()
    {
        return;
    }
    warn!(
        running = shared.tracker.len(),
        "Backups still running at the shutdown deadline; stopping them."
    );
    shared.abort.cancel();
    if tokio::time::timeout(Duration::from_secs(15), shared.tracker.wait())
        .await
        .is_err()
    {
        error!(
            running = shared.tracker.len(),
            "Some backups did not stop; exiting anyway."
        );
    }
}

/// Runs every target's pre-flight checks once at start and logs what they find (`check-config --online` prints
/// the same), so a target that cannot be backed up is named before its first backup fails.
async fn preflight(targets: Vec<Arc<TargetSpec>>, shutdown: CancellationToken) {
    for spec in targets {
        let report = tokio::select! {
            () = shutdown.cancelled() => return,
            report = spec.provider.check(&spec.storage) => report,
        };
        for problem in report.problems {
            warn!(target = %spec.config.name, "Pre-flight check: {problem}");
        }
    }
}

/// What the evaluation loop works with.
struct Evaluation {
    catalog: Catalog,
    metrics: Metrics,
    view: TargetsView,
    clock: Clock,
    scheduler: scheduler::SchedulerHandle,
    interval: Duration,
    reconcile_interval: Duration,
    /// Held while pruning, which `POST /api/v1/prune` also does.
    pruning: Arc<tokio::sync::Mutex<()>>,
}

async fn evaluation_loop(evaluation: Evaluation, shutdown: CancellationToken) {
    let Evaluation {
        catalog,
        metrics,
        view,
        clock,
        scheduler,
        interval,
        reconcile_interval,
        pruning,
    } = evaluation;
    tokio::spawn(reconciliation_loop(
        catalog.clone(),
        metrics.clone(),
        view.clone(),
        clock.clone(),
        scheduler,
        reconcile_interval,
        shutdown.clone(),
    ));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let all = view.read().map(|v| v.clone()).unwrap_or_default();
        // Replicas: each one reports the targets it holds; the leader alone runs the singletons over all of them
        // (reconciliation, expiry warnings, pruning). A single node is both.
        let targets = held_here(&catalog, &all);
        let leader = catalog.is_leader();
        let now = clock.now();
        let _pruning = pruning.lock().await;
        let singletons = leader.then_some(all.as_slice());
        if let Err(err) = maintenance::evaluate(&catalog, &metrics, &targets, singletons, now).await
        {
            error!(error = %err, "Evaluation pass failed; retrying at the next interval.");
        }
    }
}

/// The targets this process schedules: all of them on a single node; with replicas, those it holds a lease on.
fn held_here(catalog: &Catalog, all: &[Arc<TargetSpec>]) -> Vec<Arc<TargetSpec>> {
    match catalog.leases() {
        None => all.to_vec(),
        Some(book) => all
            .iter()
            .filter(|spec| book.term(&spec.config.name).is_some())
            .cloned()
            .collect(),
    }
}

/// Reconciliation at its own pace, beside the evaluation passes (docs/architecture.md, "Reconciliation"): the
/// leader compares every target's storage with the catalog, and the scheduler re-reads the targets whose
/// restorability changed; on other replicas the scheduler re-reads the targets held there, which the leader's
/// reconciliation may have changed. A long pass delays neither the evaluation passes nor the scheduler.
async fn reconciliation_loop(
    catalog: Catalog,
    metrics: Metrics,
    view: TargetsView,
    clock: Clock,
    scheduler: scheduler::SchedulerHandle,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let all = view.read().map(|v| v.clone()).unwrap_or_default();
        if !catalog.is_leader() {
            let held = held_here(&catalog, &all);
            scheduler.refresh(held.iter().map(|spec| spec.config.name.clone()).collect());
            continue;
        }
        let began = tokio::time::Instant::now();
        let pass = reconcile::reconcile(&catalog, &all, clock.now());
        let report = tokio::select! {
            () = shutdown.cancelled() => return,
            report = pass => report,
        };
        match report {
            Ok(report) => {
                metrics.reconciled(clock.now(), began.elapsed().as_secs_f64());
                health_of(&metrics, &report);
                let changed = report.changed_targets();
                if !changed.is_empty() {
                    scheduler.refresh(changed);
                }
            }
            Err(err) => {
                error!(error = %err, "Reconciliation failed; retrying at the next interval.");
            }
        }
    }
}

/// The protection health a reconciliation read, into the metrics and, when unhealthy, the log.
fn health_of(metrics: &Metrics, report: &reconcile::ReconcileReport) {
    for (target, share) in &report.shares {
        metrics.set_share(
            target,
            share.available_bytes,
            share.backups_that_fit,
            share.encryption_cert_changed_at,
        );
    }
    for (target, healthy, detail) in &report.health {
        metrics.set_protection_healthy(target, *healthy);
        if !healthy {
            warn!(target = %target, detail = %detail, "The system rates this target's protection unhealthy.");
        }
    }
}
