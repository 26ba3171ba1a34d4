//! Everything the emulator knows, behind one lock: settings, services, accounts, operations, remembered backups,
//! Recovery Services vaults, Azure Stack Hub backup locations, issued tokens, faults, throttling buckets and the request logs.
//!
//! A `std::sync::Mutex` is enough (and simpler than an async one): every handler does its bookkeeping without
//! awaiting while it holds the lock; storage I/O for operations happens in tasks that take the lock only around
//! their reads and writes of the state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{EmulatorConfig, StorageAccount};
use crate::fault::FaultQueue;
use crate::log::{LoggedRequest, TokenRequest};
use crate::service::{Content, Service};
use crate::setting::Setting;
use crate::stack_state::{Location, LocationKey};
use crate::throttle::Buckets;
use crate::vault::{Vault, VaultKey};

/// What the server tasks and the [`crate::Emulator`] handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Stops the accept loop, the connections and the operation tasks.
    pub(crate) cancel: CancellationToken,
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Self {
            state: Mutex::new(state),
            cancel: CancellationToken::new(),
        }
    }

    /// Locks the state. A poisoned lock means a handler panicked, which is a bug in the emulator.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("emulator state lock poisoned by a panic")
    }
}

/// Services are found case-insensitively, as ARM does: by lower-cased subscription, group and name.
pub(crate) type ServiceKey = (String, String, String);

/// The key of a service.
pub(crate) fn service_key(subscription: &str, resource_group: &str, name: &str) -> ServiceKey {
    (
        subscription.to_ascii_lowercase(),
        resource_group.to_ascii_lowercase(),
        name.to_ascii_lowercase(),
    )
}

/// A backup blob: lower-cased account name, container, blob name.
pub(crate) type BackupKey = (String, String, String);

/// The emulator's state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: EmulatorConfig,
    pub(crate) base_url: String,
    pub(crate) clock: Clock,
    pub(crate) services: HashMap<ServiceKey, Service>,
    /// Storage accounts by lower-cased name.
    pub(crate) accounts: HashMap<String, StorageAccount>,
    pub(crate) operations: HashMap<String, Operation>,
    pub(crate) backups: HashMap<BackupKey, BackupRecord>,
    /// Recovery Services vaults.
    pub(crate) vaults: HashMap<VaultKey, Vault>,
    /// Azure Stack Hub backup locations.
    pub(crate) stack_locations: BTreeMap<LocationKey, Location>,
    /// Issued access tokens and when each stops being accepted.
    tokens: HashMap<String, Instant>,
    pub(crate) faults: FaultQueue,
    pub(crate) requests: Vec<LoggedRequest>,
    pub(crate) token_requests: Vec<TokenRequest>,
    pub(crate) throttled: u64,
    pub(crate) reads: Option<Buckets>,
    pub(crate) writes: Option<Buckets>,
}

/// Whether an access token presented to ARM is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Unknown,
    Expired,
}

impl State {
    pub(crate) fn new(config: EmulatorConfig, base_url: String) -> Self {
        let reads = config
            .read_bucket
            .map(|(burst, rate)| Buckets::new(burst, rate));
        let writes = config
            .write_bucket
            .map(|(burst, rate)| Buckets::new(burst, rate));
        Self {
            config,
            base_url,
            clock: Clock::new(),
            services: HashMap::new(),
            accounts: HashMap::new(),
            operations: HashMap::new(),
            backups: HashMap::new(),
            vaults: HashMap::new(),
            stack_locations: BTreeMap::new(),
            tokens: HashMap::new(),
            faults: FaultQueue::default(),
            requests: Vec::new(),
            token_requests: Vec::new(),
            throttled: 0,
            reads,
            writes,
        }
    }

    /// The emulator's calendar time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Issues a new access token, valid for the configured lifetime.
    pub(crate) fn issue_token(&mut self) -> String {
        let suffix: u64 = rand::rng().random();
        let token = format!(
            "{}{}.{suffix:016x}",
            self.config.token_prefix,
            self.tokens.len() + 1
        );
        let expires = Instant::now() + self.config.token_lifetime;
        self.tokens.insert(token.clone(), expires);
        token
    }

    /// How many tokens were issued.
    pub(crate) fn issued_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Checks a bearer token.
    pub(crate) fn check_token(&self, token: &str) -> TokenCheck {
        match self.tokens.get(token) {
            None => TokenCheck::Unknown,
            Some(expires) if Instant::now() >= *expires => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
        }
    }

    /// The configured token lifetime in whole seconds.
    pub(crate) fn token_lifetime_secs(&self) -> u64 {
        self.config.token_lifetime.as_secs()
    }

    /// Applies `setting` to the service `key` now; false when no such service is hosted.
    pub(crate) fn apply(&mut self, key: &ServiceKey, setting: Setting) -> bool {
        let now = self.now();
        self.services
            .get_mut(key)
            .map(|service| setting.apply(service, now))
            .is_some()
    }

    /// Sets how long operations started from now on take (restores too, unless they have their own duration).
    pub(crate) fn set_operation_duration(&mut self, duration: Duration) {
        self.config.operation_duration = duration;
    }

    /// Sets how long restores started from now on take.
    pub(crate) fn set_restore_duration(&mut self, duration: Duration) {
        self.config.restore_duration = Some(duration);
    }

    /// How long an operation of `kind` started now runs.
    pub(crate) fn duration_of(&self, kind: OperationKind) -> Duration {
        match kind {
            OperationKind::Backup => self.config.operation_duration,
            OperationKind::Restore => self
                .config
                .restore_duration
                .unwrap_or(self.config.operation_duration),
        }
    }
}

/// Backup or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperationKind {
    Backup,
    Restore,
}

impl OperationKind {
    /// The word in operation ids and messages: `Backup` or `Restore`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Self::Backup => "Backup",
            Self::Restore => "Restore",
        }
    }
}

/// Where a backup blob lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobTarget {
    pub(crate) account: StorageAccount,
    pub(crate) container: String,
    pub(crate) blob: String,
}

impl BlobTarget {
    pub(crate) fn key(&self) -> BackupKey {
        (
            self.account.name.to_ascii_lowercase(),
            self.container.clone(),
            self.blob.clone(),
        )
    }
}

/// How far an operation got.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Progress {
    Running,
    /// Done; polls answer 200 with this service resource.
    Succeeded(Value),
    /// Failed; polls answer `status` with this error.
    Failed {
        status: u16,
        code: String,
        message: String,
    },
}

/// One accepted backup or restore.
#[derive(Debug)]
pub(crate) struct Operation {
    pub(crate) kind: OperationKind,
    pub(crate) service: ServiceKey,
    pub(crate) api_version: String,
    pub(crate) target: BlobTarget,
    pub(crate) ends_at: Instant,
    pub(crate) progress: Progress,
}

/// A backup the emulator took.
#[derive(Debug, Clone)]
pub(crate) struct BackupRecord {
    /// The SKU of the service it was taken from.
    pub(crate) sku: String,
    /// The configuration it carries: the source's API and product counts when the backup completed.
    pub(crate) content: Content,
    pub(crate) completed_at: DateTime<Utc>,
}
