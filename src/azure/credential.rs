//! Credentials: the `azure_identity` credential `[azure]` names, built lazily, and the token source the ARM
//! client uses.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;

use crate::config::AzureConfig;

/// The credential `[azure]` names. Nothing is read or requested until the first token is needed, so an offline
/// `check-config` of a configuration meant for another machine does not fail here.
#[must_use]
pub fn credential(config: &AzureConfig, transport: Option<Transport>) -> Arc<dyn TokenCredential> {
    let _ = (config, transport);
    unimplemented!("credential construction")
}

/// Resource Manager tokens from a credential, for the ARM client.
#[derive(Debug)]
pub struct ArmTokens {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

impl ArmTokens {
    /// Tokens for `scope` (`<resource_manager_endpoint>/.default`).
    #[must_use]
    pub fn new(credential: Arc<dyn TokenCredential>, scope: String) -> Self {
        Self { credential, scope }
    }
}

#[async_trait::async_trait]
impl super::TokenSource for ArmTokens {
    async fn token(&self) -> Result<crate::config::Secret, String> {
        let _ = (&self.credential, &self.scope);
        unimplemented!()
    }
}
