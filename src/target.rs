//! A target ready to run: its validated configuration with the provider and the storage built from it. Shared
//! by the scheduler, the evaluation loop, reconciliation, pruning and the HTTP API.

use std::sync::Arc;

use crate::config::TargetConfig;
use crate::providers::Provider;
use crate::storage::{MANAGED_KIND, Storage};

/// A target ready to run: its configuration with the provider and storage built from it.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The validated configuration.
    pub config: TargetConfig,
    /// Takes the backups.
    pub provider: Arc<dyn Provider>,
    /// Receives the artifacts.
    pub storage: Arc<dyn Storage>,
}

impl TargetSpec {
    /// Whether the protected system keeps the target's recovery points itself (a vault): rpod neither writes nor
    /// deletes them, and learns of them from the provider.
    #[must_use]
    pub fn kept_by_system(&self) -> bool {
        self.storage.kind() == MANAGED_KIND
    }
}
