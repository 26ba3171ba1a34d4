//! Providers: how one kind of target is backed up. A small trait (`interface.rs`) plus one file per kind, and
//! [`build`], which picks the kind.
//!
//! What does not live here: when to back up, retries and deadlines (`scheduler`), or bookkeeping: a provider
//! reports through its request's [`OperationJournal`], which the attempt keeps in the catalog.

mod apim;
mod arm;
mod azure_stack_infra;
mod command;
mod interface;
mod recovery_services_vm;

use std::sync::Arc;

pub use apim::ApimProvider;
pub use azure_stack_infra::{AzureStackInfraProvider, DOCUMENTED_BACKUP_BYTES, parse_capacity};
pub use command::CommandProvider;
pub use interface::{
    BackupOutcome, BackupRequest, BuildProvider, BuildSite, CheckProblem, CheckReport, Destination,
    ExternalPoint, Health, OperationJournal, Provider, ProviderError, RestoreOutcome,
    RestoreRequest, Resume, SERVICE_BUSY, ShareReading, Stopped, Verdict,
};
pub use recovery_services_vm::RecoveryServicesVmProvider;

use crate::azure::ArmClient;
use crate::config::{Config, Problem, TargetConfig, TargetKind};

/// Builds the provider of `config.targets[index]`, the way `storage::build` builds a storage. `arm` serves the
/// kinds that reach Azure Resource Manager: `None` when no Azure client was set up (the target is then skipped:
/// its storage is missing too), or why it could not be.
///
/// # Errors
/// A file the target names could not be used (age recipients), or the ARM client could not be built: a
/// configuration problem with its key.
pub fn build(
    index: usize,
    target: &TargetConfig,
    config: &Config,
    arm: Option<&Result<ArmClient, String>>,
    profile_arm: Option<&Result<ArmClient, String>>,
) -> Result<Option<Arc<dyn Provider>>, Problem> {
    let site = BuildSite {
        index,
        target,
        config,
        arm,
        profile_arm,
    };
    build_by_kind(&target.kind, &site)
}

/// Builds, from the list of target kinds, the dispatch of [`build`] to each kind's [`BuildProvider`].
macro_rules! build_by_kind {
    ($($(#[$doc:meta])* $variant:ident = $name:literal: $raw:ty => $spec:ty,)*) => {
        fn build_by_kind(
            kind: &TargetKind,
            site: &BuildSite<'_>,
        ) -> Result<Option<Arc<dyn Provider>>, Problem> {
            match kind {
                $(TargetKind::$variant(spec) => spec.build_provider(site),)*
            }
        }
    };
}
crate::config::target_kinds!(build_by_kind);
