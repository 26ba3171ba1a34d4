//! What a target kind's configuration file implements, and what it is given: the raw model's side
//! ([`RawKind`], returning [`KindParts`]), the validated spec's side ([`KindSpec`]), and the storage a target
//! names ([`StorageConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use super::azure::AzureBlobConfig;
use super::error::Problem;
use super::raw::RawPolicy;
use super::restore::RestoreParts;

/// One `[[targets]]` entry, of whichever kind: what every kind has, and its own validation. Each kind's
/// configuration file implements it for its raw model.
pub(super) trait RawKind: std::fmt::Debug {
    /// The kind's validated part.
    type Spec;
    /// `name`.
    fn name(&self) -> &str;
    /// The storage it names; `None` for a kind whose recovery points live in the protected system itself.
    fn storage(&self) -> Option<&str>;
    /// `[targets.policy]`.
    fn policy(&self) -> &RawPolicy;
    /// Validates what only this kind has, with what it gives the target around it. `storage` is the storage the
    /// target names, when that is defined.
    fn validate(
        &self,
        path: &str,
        storage: Option<&StorageConfig>,
        problems: &mut Vec<Problem>,
    ) -> KindParts<Self::Spec>;
}

/// One `[storage.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local directory or mounted share.
    Directory {
        /// Root directory of the artifacts.
        path: PathBuf,
    },
    /// An Azure Storage blob container.
    AzureBlob(AzureBlobConfig),
}

impl StorageConfig {
    /// The `kind` as written in the file.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Directory { .. } => "directory",
            Self::AzureBlob(_) => "azure_blob",
        }
    }
}

/// What the rest of rpod asks of a target kind's validated part; each kind's configuration file implements it.
pub trait KindSpec: std::fmt::Debug {
    /// The kind of storage its backups go to.
    fn storage_kind(&self) -> &'static str;
    /// Whether it reaches Azure: the `[azure]` credential and the Resource Manager client are built for it.
    fn reaches_azure(&self) -> bool {
        false
    }
    /// Whether changes of the protected system can be detected (`on_change` applies).
    fn detects_changes(&self) -> bool {
        false
    }
    /// The Resource Manager resource whose Event Grid events are its changes.
    fn event_grid_resource(&self) -> Option<String> {
        None
    }
    /// The `[azure.profiles.NAME]` it reaches its cloud through, instead of `[azure]`.
    fn azure_profile(&self) -> Option<&str> {
        None
    }
}

/// What a target kind's own validation gives the target around it (each kind's configuration file has a
/// `validate` that returns it).
pub(super) struct KindParts<S> {
    /// The kind's validated part, unless it had problems.
    pub(super) kind: Option<S>,
    /// The artifact name template, as configured or the kind's default.
    pub(super) template: String,
    /// The key the template is configured under.
    pub(super) template_key: &'static str,
    /// The kind's default `operation_timeout`.
    pub(super) timeout: Duration,
    /// The longest `expiry` the kind allows, and why.
    pub(super) max_expiry: Option<(Duration, &'static str)>,
    /// Its drill and standby as written, and where its restores may go.
    pub(super) restore: RestoreParts,
}

impl<S> KindParts<S> {
    /// The same parts, with the validated part turned into `T` (the kind's variant of `TargetKind`).
    pub(super) fn map<T>(self, into: impl FnOnce(S) -> T) -> KindParts<T> {
        KindParts {
            kind: self.kind.map(into),
            template: self.template,
            template_key: self.template_key,
            timeout: self.timeout,
            max_expiry: self.max_expiry,
            restore: self.restore,
        }
    }
}
