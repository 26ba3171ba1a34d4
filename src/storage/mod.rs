//! Storages: named places where backup artifacts land. A small trait plus one file per kind.
//!
//! What does not live here: naming artifacts (`config::NameTemplate`) or deciding what to delete (`policy`).

mod azure_blob;
mod directory;
mod interface;
mod managed;

use std::sync::Arc;

pub use azure_blob::AzureBlobStorage;
pub use directory::DirectoryStorage;
pub use interface::{ArtifactInfo, ArtifactWriter, Storage, StorageError};
pub use managed::{MANAGED_KIND, ManagedStorage};

use crate::azure::AzureClients;
use crate::config::StorageConfig;

/// Builds the storage a config entry describes; `azure` serves the storages that reach Azure (`None` for them
/// without it).
#[must_use]
pub fn build(
    name: &str,
    config: &StorageConfig,
    azure: Option<&AzureClients>,
) -> Option<Arc<dyn Storage>> {
    match (config, azure) {
        (StorageConfig::AzureBlob(blob), Some(azure)) => Some(Arc::new(AzureBlobStorage::new(
            name,
            blob,
            azure.credential.clone(),
            azure.transport.clone(),
        ))),
        (StorageConfig::AzureBlob(_), None) => None,
        (StorageConfig::Directory { path }, _) => {
            Some(Arc::new(DirectoryStorage::new(name, path.clone())))
        }
    }
}
