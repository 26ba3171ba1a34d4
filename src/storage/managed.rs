//! Recovery points that live in the protected system itself (a Recovery Services vault, an Azure Stack Hub
//! stamp's backup location), where rpod neither writes, lists nor deletes artifacts: the provider lists them
//! ([`crate::providers::Provider::recovery_points`]) and the system expires them itself.

use std::io;

use super::interface::{ArtifactInfo, ArtifactWriter, Storage, StorageError};

/// The `kind` of [`ManagedStorage`].
pub const MANAGED_KIND: &str = "managed";

/// The "storage" of a target whose recovery points the system keeps.
#[derive(Debug, Clone)]
pub struct ManagedStorage {
    name: String,
}

impl ManagedStorage {
    /// The recovery points kept by the system `name` (the vault or stamp, as metrics and records show it).
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Storage for ManagedStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        MANAGED_KIND
    }

    fn create(&self, name: &str) -> Result<Box<dyn ArtifactWriter>, StorageError> {
        Err(StorageError {
            storage: self.name.clone(),
            action: format!("creating {name:?}"),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "the system keeps its recovery points itself; rpod writes none",
            ),
        })
    }

    /// Nothing: what the system keeps comes from the provider's recovery points.
    async fn list(&self, _prefix: &str) -> Result<Vec<ArtifactInfo>, StorageError> {
        Ok(Vec::new())
    }

    async fn stat(&self, _name: &str) -> Result<Option<ArtifactInfo>, StorageError> {
        Ok(None)
    }

    /// Nothing to delete: the system expires its recovery points itself.
    async fn delete(&self, _name: &str) -> Result<(), StorageError> {
        Ok(())
    }

    async fn probe(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
