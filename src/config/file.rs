//! The file as it is read: every section, and every storage and target resolved to its kind's raw model
//! ([`RawTarget`] is generated from the list of target kinds), before validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Problem;
use super::kind::{KindParts, RawKind, StorageConfig};
use super::model::{TargetKind, target_kinds};
use super::raw::{RawDaemon, RawPolicy, Section, from_table, take_kind};
use super::{azure, catalog, change};

/// The file as serde reads it. Storages and targets stay tables until their `kind` is known: serde's
/// `tag = "kind"` buffers the whole table and then loses the key paths and positions of everything inside.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    daemon: Section<RawDaemon>,
    catalog: Option<Section<catalog::RawCatalog>>,
    azure: Option<Section<azure::RawAzure>>,
    webhook: Option<Section<change::RawWebhook>>,
    #[serde(default)]
    storage: BTreeMap<String, toml::Table>,
    #[serde(default)]
    defaults: Section<RawDefaults>,
    #[serde(default)]
    targets: Vec<toml::Table>,
}

/// The file with every storage and target resolved to its kind.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) daemon: RawDaemon,
    pub(super) catalog: Option<catalog::RawCatalog>,
    pub(super) azure: Option<azure::RawAzure>,
    pub(super) webhook: Option<change::RawWebhook>,
    pub(super) storage: BTreeMap<String, RawStorage>,
    pub(super) defaults: RawDefaults,
    pub(super) targets: Vec<RawTarget>,
}

impl RawFile {
    /// Resolves every storage and target by its `kind`; reports the problems of all of them.
    pub(super) fn resolve(self) -> Result<RawConfig, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut storage = BTreeMap::new();
        for (name, mut table) in self.storage {
            let path = format!("storage.{name}");
            match take_kind(&mut table, &path, "storage", &["directory", "azure_blob"]).and_then(
                |kind| match kind {
                    "directory" => from_table(table, &path).map(RawStorage::Directory),
                    _ => from_table(table, &path).map(RawStorage::AzureBlob),
                },
            ) {
                Ok(raw) => {
                    storage.insert(name, raw);
                }
                Err(problem) => problems.push(problem),
            }
        }
        let mut targets = Vec::new();
        for (index, mut table) in self.targets.into_iter().enumerate() {
            let path = format!("targets[{index}]");
            match take_kind(&mut table, &path, "target", RawTarget::NAMES)
                .and_then(|kind| RawTarget::read(kind, table, &path))
            {
                Ok(raw) => targets.push(raw),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RawConfig {
            daemon: self.daemon.0,
            catalog: self.catalog.map(|section| section.0),
            azure: self.azure.map(|section| section.0),
            webhook: self.webhook.map(|section| section.0),
            storage,
            defaults: self.defaults.0,
            targets,
        })
    }
}

#[derive(Debug)]
pub(super) enum RawStorage {
    Directory(RawDirectoryStorage),
    AzureBlob(azure::RawAzureBlobStorage),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectoryStorage {
    pub(super) path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    #[serde(default)]
    pub(super) policy: Section<RawPolicy>,
}

/// Builds, from the list of target kinds, [`RawTarget`]: one `[[targets]]` entry read as its kind's raw model.
macro_rules! declare_raw_targets {
    ($($(#[$doc:meta])* $variant:ident = $name:literal: $raw:ty => $spec:ty,)*) => {
        /// One `[[targets]]` entry, read as its kind's raw model.
        #[derive(Debug)]
        pub(super) enum RawTarget {
            $($(#[$doc])* $variant($raw),)*
        }

        impl RawTarget {
            /// Every target `kind`, as the file writes it.
            const NAMES: &[&str] = &[$($name),*];

            /// Reads a target table whose `kind` is `kind` into its kind's raw model.
            fn read(kind: &str, table: toml::Table, path: &str) -> Result<Self, Problem> {
                match kind {
                    $($name => from_table::<$raw>(table, path).map(Self::$variant),)*
                    other => Err(Problem::at(
                        format!("{path}.kind"),
                        format!("unknown target kind {other:?}"),
                    )),
                }
            }

            /// `name`.
            pub(super) fn name(&self) -> &str {
                match self {
                    $(Self::$variant(raw) => raw.name(),)*
                }
            }

            /// The storage it names, if its kind has one.
            pub(super) fn storage(&self) -> Option<&str> {
                match self {
                    $(Self::$variant(raw) => raw.storage(),)*
                }
            }

            /// `[targets.policy]`.
            pub(super) fn policy(&self) -> &RawPolicy {
                match self {
                    $(Self::$variant(raw) => raw.policy(),)*
                }
            }

            /// Validates what only its kind has (see [`RawKind::validate`]).
            pub(super) fn validate(
                &self,
                path: &str,
                storage: Option<&StorageConfig>,
                problems: &mut Vec<Problem>,
            ) -> KindParts<TargetKind> {
                match self {
                    $(Self::$variant(raw) => {
                        raw.validate(path, storage, problems).map(TargetKind::$variant)
                    })*
                }
            }
        }
    };
}
target_kinds!(declare_raw_targets);
