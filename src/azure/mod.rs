//! Azure: the Resource Manager client and its client-side throttling, credentials, and the follower of
//! long-running operations ([`lro`]). It knows no target kind: the providers build on it (docs/design.md, "Azure wire contracts").

pub mod arm;
pub mod credential;
pub mod lro;
pub mod profile;
pub mod throttle;
pub mod tls;
pub mod transport;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;

pub use arm::{ArmClient, ArmError, ArmOptions, ArmResponse, TokenSource};
pub use credential::ArmTokens;
pub use throttle::{Access, BucketLimits, Throttle};
pub use transport::is_loopback;

/// What every part of rpod that talks to Azure shares: one credential (its token cache included) and, in tests,
/// the transport its SDK clients send through.
#[derive(Clone)]
pub struct AzureClients {
    /// The credential `[azure]` names.
    pub credential: Arc<dyn TokenCredential>,
    /// SDK transport override; `None` in production.
    pub transport: Option<Transport>,
}

impl std::fmt::Debug for AzureClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureClients").finish_non_exhaustive()
    }
}
