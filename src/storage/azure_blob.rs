//! `azure_blob` storages: an Azure Storage blob container, reached with `azure_storage_blob`.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;

use super::{ArtifactInfo, ArtifactWriter, Storage, StorageError};
use crate::config::AzureBlobConfig;

/// A blob container.
#[derive(Debug)]
pub struct AzureBlobStorage {
    name: String,
    config: AzureBlobConfig,
}

impl AzureBlobStorage {
    /// A storage for `config`; `credential` serves `auth = "credential"`.
    #[must_use]
    pub fn new(
        name: &str,
        config: &AzureBlobConfig,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
    ) -> Self {
        let _ = (credential, transport);
        Self {
            name: name.to_owned(),
            config: config.clone(),
        }
    }

    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &AzureBlobConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Storage for AzureBlobStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "azure_blob"
    }

    fn create(&self, _name: &str) -> Result<Box<dyn ArtifactWriter>, StorageError> {
        unimplemented!()
    }

    async fn list(&self, _prefix: &str) -> Result<Vec<ArtifactInfo>, StorageError> {
        unimplemented!()
    }

    async fn delete(&self, _name: &str) -> Result<(), StorageError> {
        unimplemented!()
    }

    async fn probe(&self) -> Result<(), StorageError> {
        unimplemented!()
    }
}
