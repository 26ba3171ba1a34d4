//! What the providers that reach Azure Resource Manager share: an ARM error as a provider error, how following a
//! long-running operation ended, and the request's journal as the follower's progress.

use chrono::{DateTime, Utc};

use super::interface::{OperationJournal, ProviderError};
use crate::azure::ArmError;
use crate::azure::lro::{FollowError, Handle, Progress};

/// An ARM error as a provider error: Azure's code, its message with the request id, retryable or not.
pub(super) fn provider_error(
    err: &ArmError,
    recovery_point: Option<DateTime<Utc>>,
) -> ProviderError {
    let message = match &err.request_id {
        Some(id) => format!("{} (request id {id})", err.message),
        None => err.message.clone(),
    };
    let mut error = if err.retryable {
        ProviderError::transient(&err.code, message)
    } else {
        ProviderError::permanent(&err.code, message)
    };
    error.recovery_point = recovery_point;
    error.retry_after = err.retry_after;
    error
}

/// How following an operation ended without its final answer, as a provider error.
pub(super) fn followed(err: FollowError, accepted_at: DateTime<Utc>) -> ProviderError {
    let mut error = match err {
        FollowError::Failed(err) => {
            let mut error = provider_error(&err, Some(accepted_at));
            error.retryable = false;
            error
        }
        FollowError::TimedOut => {
            ProviderError::timed_out("the operation did not end by its deadline")
        }
        FollowError::Cancelled => {
            ProviderError::cancelled("stopped while the operation was being polled")
        }
        FollowError::Detached => {
            return ProviderError::detached("rpod stopped while the operation was being polled");
        }
    };
    error.recovery_point = Some(accepted_at);
    error
}

/// The request's journal as the operation follower's progress.
pub(super) struct Journaled<'a>(pub(super) &'a dyn OperationJournal);

#[async_trait::async_trait]
impl Progress for Journaled<'_> {
    async fn polled(&self, handle: &Handle) -> Result<(), String> {
        self.0.polled(&handle.to_json()).await
    }
}

/// Saves an operation Azure accepted at `accepted_at`, before its first poll, with what was asked (`request`,
/// never secrets). An operation the journal could not save is not polled: a restart would lose it, so the
/// `what` (a backup, a restore) fails with `CatalogUnavailable`.
pub(super) async fn save_accepted(
    journal: &dyn OperationJournal,
    handle: &Handle,
    accepted_at: DateTime<Utc>,
    request: &str,
    what: &str,
) -> Result<(), ProviderError> {
    journal
        .accepted(accepted_at, &handle.to_json(), Some(request))
        .await
        .map_err(|err| {
            let mut error = ProviderError::transient(
                "CatalogUnavailable",
                format!("Azure accepted the {what} but rpod could not record it: {err}"),
            );
            error.recovery_point = Some(accepted_at);
            error
        })
}
