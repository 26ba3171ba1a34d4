//! rpod keeps a recovery point objective (RPO) true for every system it protects: it triggers backups on a
//! schedule and before the RPO would be breached, records each one with its expiry in a catalog (`SQLite`, or PostgreSQL shared by replicas), prunes
//! what has expired, restores behind guards (a standby kept in sync, drills that measure the recovery time), and
//! exports Prometheus metrics.
//!
//! # Layout
//! The shared vocabulary, which every layer may use and which imports nothing above it:
//! - [`clock`]: wall time, injectable so tests run on paused time.
//! - [`record`]: a backup record, its status and trigger, what a target's records add up to; a restore record.
//! - [`target`]: a configured target with its provider and storage.
//!
//! The layers:
//! - [`azure`]: credentials, the Azure Resource Manager client (retries, `Retry-After`, client-side
//!   throttling) and a loopback-only transport for tests.
//! - [`config`]: TOML model, pure validation with key paths, durations, cron schedules, secrets, name templates.
//! - [`catalog`]: the catalog (`SQLite`, or PostgreSQL for replicas): backups, restores, per-target state,
//!   operations, audit; leases and terms for replicas.
//! - [`changes`]: what change detectors report (docs/design.md, "Change-driven backups").
//! - [`policy`]: pure RPO, watchdog, backoff and pruning decisions (no I/O, `now` passed in).
//! - [`scheduler`]: timer queue for cron slots, watchdog and retries; coalescing; concurrency; deadlines;
//!   restores with their guards, the standby and drills.
//! - [`maintenance`]: the periodic evaluation pass: compliance, expiry warnings, storage probes, pruning.
//! - [`reconcile`]: storage listings against the catalog: vanished artifacts, unknown ones imported.
//! - [`providers`]: how each kind of target is backed up and restored (`command`, `apim` with long-running
//!   operations).
//! - [`storage`]: where artifacts land (`directory`, `azure_blob`).
//! - [`state_dir`]: the state directory, created when missing, and its lock (one daemon per directory).
//! - [`metrics`]: every Prometheus metric, defined once.
//! - [`notify`]: telling systemd the daemon is ready, alive (the watchdog), reloading or stopping.
//! - [`http`]: `/metrics`, health, the JSON API (restores included) and the Event Grid webhook.
//! - [`replicas`]: several replicas on one PostgreSQL catalog: opening the configured catalog, the lease keeper.
//! - [`app`]: builds everything from a configuration and runs until cancelled.
//! - [`cli`]: the command line.

pub mod app;
pub mod azure;
pub mod catalog;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod providers;
pub mod reconcile;
pub mod record;
pub mod replicas;
pub mod scheduler;
pub mod state_dir;
pub mod storage;
pub mod target;
