//! What the providers that reach Azure Resource Manager share: an ARM error as a provider error, how following a
//! long-running operation ended, starting to follow an accepted one, and the request's journal as the follower's
//! progress.

use chrono::{DateTime, Utc};

use super::interface::{OperationJournal, ProviderError};
use crate::azure::lro::{FollowError, Handle, Pattern, Progress};
use crate::azure::{ArmClient, ArmError, ArmResponse};

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

/// Starts following the operation an accepted request (`202`) began: the first header of `patterns` the answer
/// carries (`Location`, `Azure-AsyncOperation`) is polled first at `Retry-After`, and saved through `journal`
/// before that first poll, with what was asked (`request`, never secrets). An answer without any of them, or an
/// operation the journal could not save (a restart would lose it), fails the `what` (a backup, a restore).
pub(super) async fn start_following(
    arm: &ArmClient,
    journal: &dyn OperationJournal,
    response: &ArmResponse,
    patterns: &[Pattern],
    accepted_at: DateTime<Utc>,
    request: &str,
    what: &str,
) -> Result<Handle, ProviderError> {
    let failed = |mut error: ProviderError| {
        error.recovery_point = Some(accepted_at);
        error
    };
    let found = patterns.iter().find_map(|pattern| {
        let url = match pattern {
            Pattern::Location => response.location.as_ref(),
            Pattern::AsyncOperation => response.async_operation.as_ref(),
            Pattern::Job => None,
        };
        url.map(|url| (*pattern, url.clone()))
    });
    let Some((pattern, url)) = found else {
        return Err(failed(ProviderError::permanent(
            "InvalidResponse",
            format!(
                "Azure accepted the {what} ({}) without an operation to follow (request id {})",
                response.status,
                response.request_id.as_deref().unwrap_or("-")
            ),
        )));
    };
    let next_poll = accepted_at + crate::policy::delta(arm.wait_for(response.retry_after));
    let handle = Handle::new(pattern, url, next_poll);
    journal
        .accepted(accepted_at, &handle.to_json(), Some(request))
        .await
        .map_err(|err| {
            failed(ProviderError::transient(
                "CatalogUnavailable",
                format!("Azure accepted the {what} but rpod could not record it: {err}"),
            ))
        })?;
    Ok(handle)
}
