//! `apim` targets: API Management backups through Azure Resource Manager (DESIGN §8).

use super::{BackupOutcome, BackupRequest, Provider, ProviderError};
use crate::azure::ArmClient;
use crate::config::{ApimSpec, AzureBlobConfig};

/// Backs up one API Management service into a blob container.
#[derive(Debug)]
pub struct ApimProvider {
    spec: ApimSpec,
    storage: AzureBlobConfig,
    arm: ArmClient,
    endpoint: String,
}

impl ApimProvider {
    /// A provider for `spec`, writing into `storage`, through `arm` at `endpoint`.
    #[must_use]
    pub fn new(spec: ApimSpec, storage: AzureBlobConfig, arm: ArmClient, endpoint: String) -> Self {
        Self {
            spec,
            storage,
            arm,
            endpoint,
        }
    }
}

#[async_trait::async_trait]
impl Provider for ApimProvider {
    fn kind(&self) -> &'static str {
        "apim"
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        let _ = (
            &self.spec,
            &self.storage,
            &self.arm,
            &self.endpoint,
            request,
        );
        Err(ProviderError::permanent("NotImplemented", "apim"))
    }
}
