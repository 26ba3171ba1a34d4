//! The command line (docs/design.md, "Command line"): `run`, `check-config`, `status`, `backups`, `backup`, `prune`.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::{self, RunOptions};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::{Config, DEFAULT_CONFIG_PATH, LogFormat};
use crate::http::restore::RestoreRequestBody;
use crate::http::{self, PruneRequest, TriggerResponse};
use crate::maintenance;
use crate::metrics::Metrics;
use crate::providers::CheckProblem;
use crate::record::{BackupRecord, RestoreTrigger, Status, Trigger};
use crate::scheduler::{self, AttemptOutcome, Shared};
use crate::state_dir::{StateDirError, StateLock};
use crate::target::TargetSpec;

/// rpod keeps a recovery point objective true for every system it protects.
#[derive(Debug, Parser)]
#[command(name = "rpod", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "RPOD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run,
    /// Validate the configuration (offline; --online also probes every storage).
    CheckConfig {
        /// Also reach every storage.
        #[arg(long)]
        online: bool,
    },
    /// One line per target: RPO, age of the newest restorable backup, compliance, next run, restorable until.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List backups, newest first.
    Backups {
        /// Only this target.
        target: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up a target now, through the running daemon, or by itself when no daemon answers.
    Backup {
        /// The target.
        target: String,
    },
    /// Restore a backup: the newest restorable one (or --backup ID) into the target's own system or a
    /// `restore_into` destination, through the running daemon, or by itself when no daemon answers.
    Restore {
        /// The target.
        target: String,
        /// The backup to restore (an id from `rpod backups`); the newest restorable one by default.
        #[arg(long = "backup")]
        backup_id: Option<i64>,
        /// A `[[targets.restore_into]]` name; the target's own service by default.
        #[arg(long)]
        into: Option<String>,
        /// Check every guard and print its verdict; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm overwriting the target's own (production) system.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete expired backups (and those beyond `keep_last`) now.
    Prune {
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

const EXIT_CONFIG: u8 = 2;

/// Runs a parsed command line and returns the process exit code.
pub async fn execute(cli: Cli) -> ExitCode {
    let environment = app::Environment::default();
    let (config, targets) = match app::load_in(&cli.config, &environment) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(
        config.daemon.log_format,
        if matches!(cli.command, Command::Run) {
            "info"
        } else {
            "warn"
        },
    );
    let result = match cli.command {
        Command::Run => run(cli.config, config, targets, environment).await,
        Command::CheckConfig { online } => {
            check_config(&cli.config, &config, &targets, online).await
        }
        Command::Status { json } => status(&config, &targets, json).await,
        Command::Backups {
            target,
            limit,
            json,
        } => {
            if let Some(name) = &target
                && config.target(name).is_none()
            {
                eprintln!("error: unknown target {name:?}");
                return ExitCode::from(EXIT_CONFIG);
            }
            backups(&config, target.as_deref(), limit, json).await
        }
        Command::Backup { target } => {
            let Some(spec) = targets.into_iter().find(|t| t.config.name == target) else {
                eprintln!("error: unknown target {target:?}");
                return ExitCode::from(EXIT_CONFIG);
            };
            backup(&config, spec).await
        }
        Command::Prune { dry_run, json } => prune(&config, targets, dry_run, json).await,
        Command::Restore {
            target,
            backup_id,
            into,
            dry_run,
            yes,
            json,
        } => {
            let Some(spec) = targets.into_iter().find(|t| t.config.name == target) else {
                eprintln!("error: unknown target {target:?}");
                return ExitCode::from(EXIT_CONFIG);
            };
            let body = RestoreRequestBody {
                backup_id,
                into,
                dry_run,
                yes,
            };
            restore(&config, spec, body, json).await
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RPOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // JSON lines carry the backup target in `target`; the module path would collide with it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_target(false)
            .try_init(),
    };
}

async fn run(
    config_path: PathBuf,
    config: Config,
    targets: Vec<TargetSpec>,
    environment: app::Environment,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // The lock first: a second daemon on the same state directory must say so, not that the port is taken.
    let lock = StateLock::acquire(&config.daemon.state_dir)?;
    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .with_context(|| format!("cannot listen on {} (daemon.listen)", config.daemon.listen))?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reloads) = mpsc::unbounded_channel();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let signals = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received; shutting down."); signals.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT received; shutting down."); signals.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP received; reloading the configuration."); let _ = reload_tx.send(()); }
            }
        }
    });
    app::run(RunOptions {
        config_path,
        config,
        targets,
        listener,
        webhook_listener: None,
        shutdown,
        reloads,
        clock: Clock::system(),
        environment,
        lock: Some(lock),
        notifier: None,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn check_config(
    path: &Path,
    config: &Config,
    targets: &[TargetSpec],
    online: bool,
) -> anyhow::Result<ExitCode> {
    println!(
        "{}: OK ({} target{}, {} storage{})",
        path.display(),
        targets.len(),
        if targets.len() == 1 { "" } else { "s" },
        config.storages.len(),
        if config.storages.len() == 1 { "" } else { "s" }
    );
    if !online {
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    let mut seen = std::collections::BTreeSet::new();
    for spec in targets {
        if !seen.insert(spec.storage.name().to_owned()) {
            continue;
        }
        match spec.storage.probe().await {
            Ok(()) => println!(
                "storage {} ({}): reachable",
                spec.storage.name(),
                spec.storage.kind()
            ),
            Err(err) => {
                println!(
                    "storage {} ({}): FAILED: {err}",
                    spec.storage.name(),
                    spec.storage.kind()
                );
                failed = true;
            }
        }
    }
    let mut refused = false;
    for spec in targets {
        let report = spec.provider.check(&spec.storage).await;
        let (name, kind) = (&spec.config.name, spec.provider.kind());
        if let Some(found) = &report.found {
            println!("target {name} ({kind}): {found}");
        }
        for problem in &report.problems {
            match problem {
                CheckProblem::Refused(_) => refused = true,
                CheckProblem::Unreachable(_) | CheckProblem::Busy(_) => failed = true,
                CheckProblem::Unchecked(_) => {
                    println!("target {name} ({kind}): WARNING: {problem}");
                    continue;
                }
            }
            println!("target {name} ({kind}): FAILED: {problem}");
        }
    }
    if refused {
        // A target that can never be backed up is a configuration problem, like a bad key.
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn age(seconds: Option<i64>) -> String {
    seconds.map_or_else(
        || "never".to_owned(),
        |s| {
            humantime::format_duration(Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)))
                .to_string()
        },
    )
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// The catalog for reading, as `rpod status` and `rpod backups` use it while daemons write it: nothing is created
/// or migrated.
async fn read_catalog(config: &Config) -> anyhow::Result<Catalog> {
    Ok(match &config.catalog {
        crate::config::CatalogConfig::Sqlite => {
            Catalog::open_read_only(&config.daemon.state_dir).await?
        }
        crate::config::CatalogConfig::Postgres(_) => {
            crate::replicas::open_catalog(&config.daemon, &config.catalog, false).await?
        }
    })
}

async fn status(config: &Config, targets: &[TargetSpec], json: bool) -> anyhow::Result<ExitCode> {
    let catalog = read_catalog(config).await?;
    let now = Utc::now();
    let views = http::target_views(&catalog, targets, now).await?;
    let replicas = if catalog.is_shared() {
        catalog.replicas().await?
    } else {
        Vec::new()
    };
    catalog.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:<24} {:<8} {:>8} {:>16} {:<9} {:<20} {:<20}\n",
        "TARGET", "KIND", "RPO", "NEWEST AGE", "COMPLIANT", "NEXT RUN", "RESTORABLE UNTIL"
    );
    for view in &views {
        let next = match (view.next_scheduled, view.watchdog_due) {
            (Some(a), Some(b)) => Some(a.min(b).max(now)),
            (a, b) => a.or(b).map(|t| t.max(now)),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:>8} {:>16} {:<9} {:<20} {:<20}",
            view.name,
            view.kind,
            humantime::format_duration(Duration::from_secs(view.rpo_seconds)).to_string(),
            age(view.age_seconds),
            if view.compliant { "yes" } else { "NO" },
            time(next),
            time(view.restorable_until)
        );
    }
    for view in &views {
        if let Some(drill) = &view.last_drill {
            let _ = writeln!(
                out,
                "{}: last restore drill {} {}{}{}",
                view.name,
                drill.status,
                time(drill.completed_at),
                drill.duration_seconds.map_or_else(String::new, |s| format!(
                    ", restored in {}",
                    humantime::format_duration(Duration::from_secs_f64(s.max(0.0).round()))
                )),
                match drill.within_rto {
                    Some(true) => ", within the RTO",
                    Some(false) => ", SLOWER THAN THE RTO",
                    None => "",
                }
            );
        }
    }
    for replica in &replicas {
        let until = replica.leases.iter().map(|l| l.expires_at).min();
        let _ = writeln!(
            out,
            "replica {}{}: {} target(s){}",
            replica.replica,
            if replica.leader { " (leader)" } else { "" },
            replica.leases.len(),
            until.map_or_else(String::new, |at| format!(
                ", leases until {} or later",
                time(Some(at))
            ))
        );
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn backups(
    config: &Config,
    target: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let catalog = read_catalog(config).await?;
    let records = catalog.backups(target, limit).await?;
    catalog.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:>8} {:<24} {:<9} {:<11} {:<20} {:<20} {:>12}  {}\n",
        "ID", "TARGET", "TRIGGER", "STATUS", "RECOVERY POINT", "EXPIRES", "SIZE", "ERROR"
    );
    for r in &records {
        let _ = writeln!(
            out,
            "{:>8} {:<24} {:<9} {:<11} {:<20} {:<20} {:>12}  {}",
            r.id,
            r.target,
            r.trigger,
            r.status.as_str(),
            time(r.accepted_at),
            time(r.expires_at),
            r.size_bytes
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            error_text(r)
        );
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A record's error as one line: `CODE: message` (Azure's messages carry line breaks).
fn error_text(record: &BackupRecord) -> String {
    let message = record
        .error_message
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match record.error_code.as_deref() {
        Some(code) if !message.is_empty() => format!("{code}: {message}"),
        Some(code) => code.to_owned(),
        None => message,
    }
}

/// Where the running daemon's API answers, as seen from this machine.
fn daemon_address(config: &Config) -> std::net::SocketAddr {
    let mut address = config.daemon.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    address
}

/// What the running daemon said to a request, or that none answers.
enum Daemon {
    Answered(reqwest::Response),
    Absent,
}

/// Sends a mutating request to the running daemon, with the API token of the configuration.
async fn ask_daemon(
    config: &Config,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Daemon> {
    let address = daemon_address(config);
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_mins(5))
        .build()?;
    let mut request = client.post(format!("http://{address}{path}"));
    if let Some(token) = &config.daemon.api_token {
        let token = token
            .load()
            .map_err(|message| anyhow::anyhow!("{}: {message}", config.daemon.api_token_key()))?;
        request = request.bearer_auth(token.expose());
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(response) if response.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
            Ok(Daemon::Answered(response))
        }
        Ok(response) if response.status() == reqwest::StatusCode::UNAUTHORIZED => anyhow::bail!(
            "the daemon at {address} refused the request (401): it needs its API token; give this command the \
             same daemon.api_token_file or api_token_env"
        ),
        Ok(response) if !response.status().is_success() => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("the daemon at {address} answered {status}: {}", text.trim())
        }
        Ok(response) => Ok(Daemon::Answered(response)),
        Err(err) if err.is_connect() => Ok(Daemon::Absent),
        Err(err) => Err(err).context(format!("asking the daemon at {address}")),
    }
}

/// Takes the state directory's lock for a command that writes the catalog while no daemon answers. A daemon
/// that holds the lock but does not answer is named rather than raced.
fn lock_without_daemon(config: &Config) -> anyhow::Result<StateLock> {
    if let crate::config::CatalogConfig::Postgres(postgres) = &config.catalog {
        anyhow::bail!(
            "no replica answers at {}, and the catalog at {} is shared by replicas: rpod acts on a shared catalog \
             only under a lease, so run this against a running replica (daemon.listen), or start one",
            daemon_address(config),
            crate::catalog::server_name(&postgres.url)
        );
    }
    StateLock::acquire(&config.daemon.state_dir).map_err(|err| match err {
        StateDirError::Locked { holder, .. } => anyhow::anyhow!(
            "no daemon answers at {}, but rpod (PID {}) holds state directory {}; wait for it to answer, or \
             check daemon.listen",
            daemon_address(config),
            holder.map_or_else(|| "unknown".to_owned(), |pid| pid.to_string()),
            config.daemon.state_dir.display()
        ),
        other => other.into(),
    })
}

async fn backup(config: &Config, spec: TargetSpec) -> anyhow::Result<ExitCode> {
    let name = spec.config.name.clone();
    if !spec.provider.starts_backups() {
        anyhow::bail!(
            "target {name} is only watched (mode = \"watch\"): its system backs itself up and rpod never starts \
             a backup"
        );
    }
    let path = format!("/api/v1/targets/{name}/backup");
    if let Daemon::Answered(response) = ask_daemon(config, &path, None).await? {
        let answer: TriggerResponse = response.json().await?;
        println!(
            "target {}: backup {} by the running daemon",
            answer.target, answer.status
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "no daemon answers at {}; backing up {name} here",
        daemon_address(config)
    );
    let _lock = lock_without_daemon(config)?;
    let catalog = Catalog::open(&config.daemon.state_dir).await?;
    let shared = Shared::new(catalog.clone(), Metrics::new(), Clock::system(), 1);
    let report = scheduler::run_once(&shared, spec, Trigger::Manual).await;
    catalog.close().await;
    // The report says what was recorded: a success only once its record is committed.
    if report.outcome == AttemptOutcome::Succeeded {
        println!(
            "target {name}: backup {} succeeded: {}",
            report.backup_id.unwrap_or(0),
            report.artifact.as_deref().unwrap_or("-")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "target {name}: backup failed: {}",
            report.error.as_deref().unwrap_or("unknown error")
        );
        Ok(ExitCode::FAILURE)
    }
}

async fn prune(
    config: &Config,
    targets: Vec<TargetSpec>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = serde_json::to_value(PruneRequest { dry_run })?;
    let report = if let Daemon::Answered(response) =
        ask_daemon(config, "/api/v1/prune", Some(body)).await?
    {
        response.json::<maintenance::PruneReport>().await?
    } else {
        let _lock = lock_without_daemon(config)?;
        let catalog = Catalog::open(&config.daemon.state_dir).await?;
        let targets: Vec<Arc<TargetSpec>> = targets.into_iter().map(Arc::new).collect();
        let report =
            maintenance::prune(&catalog, None, &targets, Utc::now(), dry_run, "rpod prune").await?;
        catalog.close().await;
        report
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if dry_run { "would prune" } else { "pruned" };
        for item in &report.pruned {
            println!(
                "{verb} {} backup {} ({}, expired {}): {}",
                item.target,
                item.backup_id,
                item.artifact.as_deref().unwrap_or("-"),
                time(item.expires_at),
                item.reason
            );
        }
        if report.pruned.is_empty() {
            println!("nothing to prune");
        }
        for problem in &report.errors {
            eprintln!("error: {problem}");
        }
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints a restore's plan: every guard's verdict, then what became of it.
fn print_plan(plan: &serde_json::Value) {
    let target = plan["target"].as_str().unwrap_or("-");
    let destination = plan["destination"].as_str().unwrap_or("-");
    let backup = plan["backup_id"]
        .as_i64()
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    println!("restore of target {target}, backup {backup}, into {destination}");
    for verdict in plan["verdicts"].as_array().into_iter().flatten() {
        println!(
            "  {:<4} {:<13} {}",
            if verdict["passed"].as_bool() == Some(true) {
                "ok"
            } else {
                "NO"
            },
            verdict["guard"].as_str().unwrap_or("-"),
            verdict["message"].as_str().unwrap_or("")
        );
    }
}

async fn restore(
    config: &Config,
    spec: TargetSpec,
    body: RestoreRequestBody,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let name = spec.config.name.clone();
    let dry_run = body.dry_run;
    let path = format!("/api/v1/targets/{name}/restore");
    let (plan, record) = if let Daemon::Answered(response) =
        ask_daemon(config, &path, Some(serde_json::to_value(&body)?)).await?
    {
        let refused = response.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY;
        let answer: serde_json::Value = response.json().await?;
        let plan = if refused {
            answer["plan"].clone()
        } else {
            answer
        };
        (plan, None)
    } else {
        if !dry_run {
            eprintln!(
                "no daemon answers at {}; restoring {name} here",
                daemon_address(config)
            );
        }
        let _lock = lock_without_daemon(config)?;
        let catalog = Catalog::open(&config.daemon.state_dir).await?;
        let shared = Shared::new(catalog.clone(), Metrics::new(), Clock::system(), 1);
        let ask = scheduler::restore::RestoreAsk {
            spec: Arc::new(spec),
            backup_id: body.backup_id,
            into: body.into,
            trigger: RestoreTrigger::Manual,
            dry_run,
            confirmed: body.yes,
            actor: "rpod restore".to_owned(),
        };
        let (plan, record) = scheduler::restore::restore_once(shared, ask).await?;
        catalog.close().await;
        (serde_json::to_value(&plan)?, record)
    };
    let refusal = plan["verdicts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["passed"].as_bool() != Some(true))
        .cloned();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "plan": plan, "restore": record }))?
        );
    } else {
        print_plan(&plan);
    }
    if let Some(refusal) = refusal {
        eprintln!(
            "restore refused: {}: {}",
            refusal["guard"].as_str().unwrap_or("-"),
            refusal["message"].as_str().unwrap_or("")
        );
        return Ok(ExitCode::FAILURE);
    }
    if dry_run {
        println!("dry run: every guard passes; nothing was written");
        return Ok(ExitCode::SUCCESS);
    }
    let id = plan["restore_id"].as_i64().unwrap_or(0);
    let Some(record) = record else {
        if !json {
            println!(
                "restore {id} started by the running daemon; follow it with GET /api/v1/restores/{id}"
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    if record.status == Status::Succeeded {
        if !json {
            println!(
                "restore {id} succeeded in {:.1} s",
                record.duration_seconds.unwrap_or(0.0)
            );
            for warning in &record.warnings {
                println!("  warning: {warning}");
            }
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "restore {id} {}: {}: {}",
            record.status.as_str(),
            record.error_code.as_deref().unwrap_or("-"),
            record.error_message.as_deref().unwrap_or("")
        );
        Ok(ExitCode::FAILURE)
    }
}
