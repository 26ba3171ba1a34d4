//! What the emulator saw: every request ([`LoggedRequest`]) and every token request ([`TokenRequest`]), for tests
//! to assert exactly which calls were made. Secrets sent to the token endpoint are never kept.

use std::time::SystemTime;

use tokio::time::Instant;

/// One request as received, with how it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and query exactly as received (a double slash stays double).
    pub path_and_query: String,
    /// Request body as text; `client_secret` and `client_assertion` values are replaced by `***`.
    pub body: String,
    /// Status answered; `None` when the connection was reset or the request left hanging by a fault.
    pub status: Option<u16>,
    /// Whether an injected fault answered it. (`FailOperation` ends an operation rather than answering a request,
    /// so the poll that meets it is not marked; `SkipBlob` marks no request either.)
    pub faulted: bool,
    /// When it arrived, on Tokio's clock (paused in some tests).
    pub at: Instant,
    /// When it arrived, on the emulator's calendar (see [`crate::Emulator::advance_clock`]).
    pub system_time: SystemTime,
    /// Whether it carried an `Authorization` header.
    pub authorization: bool,
    /// Its `x-ms-client-request-id` header, if any.
    pub client_request_id: Option<String>,
}

impl LoggedRequest {
    /// The path without the query string.
    #[must_use]
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }
}

/// Which kind of token endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Entra ID, `client_credentials` with a client secret.
    ClientSecret,
    /// Entra ID, `client_credentials` with a client assertion (workload identity, certificates).
    ClientAssertion,
    /// App Service style managed identity (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
    AppServiceManagedIdentity,
    /// Instance Metadata Service managed identity.
    Imds,
    /// An Azure Stack Hub stamp's AD FS, `client_credentials` with a client secret or a client assertion
    /// (`POST /adfs/oauth2/token`; logged with tenant `adfs` and the `resource` as its scope).
    Adfs,
}

/// One call to a token endpoint. Secrets are not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Which endpoint and grant; `None` when the request was too malformed to tell.
    pub kind: Option<TokenKind>,
    /// Entra ID tenant from the path (`adfs` for AD FS).
    pub tenant: Option<String>,
    /// `client_id` (Entra ID form field, or managed identity query parameter for a user-assigned identity).
    pub client_id: Option<String>,
    /// Entra ID `scope`, or managed identity and AD FS `resource`.
    pub scope: Option<String>,
    /// Whether a token was issued.
    pub issued: bool,
    /// When it arrived, on Tokio's clock.
    pub at: Instant,
}
