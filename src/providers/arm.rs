//! What the providers that reach Azure Resource Manager share: an ARM error as a provider error, how following a
//! long-running operation ended, starting to follow an accepted one, and the request's journal as the follower's
//! progress.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::interface::{BackupRequest, OperationJournal, ProviderError, RestoreRequest};
use crate::azure::lro::{FollowError, Follower, Handle, Pattern, Progress};
use crate::azure::{ArmClient, ArmError, ArmResponse};
use crate::clock::Clock;

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

/// What following an operation needs of the request it serves, a backup's or a restore's: its clock, deadline,
/// cancellation, stop signal and journal.
pub(super) trait Followed {
    fn clock(&self) -> &Clock;
    fn deadline(&self) -> DateTime<Utc>;
    fn cancel(&self) -> &CancellationToken;
    fn stopping(&self) -> &CancellationToken;
    fn journal(&self) -> &dyn OperationJournal;
}

macro_rules! followed_request {
    ($request:ty) => {
        impl Followed for $request {
            fn clock(&self) -> &Clock {
                &self.clock
            }
            fn deadline(&self) -> DateTime<Utc> {
                self.deadline_at
            }
            fn cancel(&self) -> &CancellationToken {
                &self.cancel
            }
            fn stopping(&self) -> &CancellationToken {
                &self.stopping
            }
            fn journal(&self) -> &dyn OperationJournal {
                self.journal.as_ref()
            }
        }
    };
}
followed_request!(BackupRequest);
followed_request!(RestoreRequest);

/// Follows `handle` to its end for `request`, within its deadline, saving each step through its journal.
pub(super) async fn follow_for(
    arm: &ArmClient,
    subscription: &str,
    request: &impl Followed,
    handle: Handle,
) -> Result<ArmResponse, FollowError> {
    let follower = Follower {
        arm,
        subscription,
        clock: request.clock(),
        deadline: request.deadline(),
        cancel: request.cancel(),
        stopping: request.stopping(),
    };
    follower.follow(handle, &Journaled(request.journal())).await
}

/// GETs `url` and reads its JSON answer.
pub(super) async fn get_json(
    arm: &ArmClient,
    operation: &str,
    subscription: &str,
    url: &str,
) -> Result<Value, ArmError> {
    let response = arm
        .send(operation, subscription, Method::GET, url, None)
        .await?;
    serde_json::from_slice(&response.body)
        .map_err(|err| ArmError::invalid_answer(&response, format!("unreadable answer: {err}")))
}

/// Every item of an ARM list starting at `url`, following `nextLink` (at most 1000 pages), read by `read`.
pub(super) async fn list_all<T>(
    arm: &ArmClient,
    operation: &str,
    subscription: &str,
    url: String,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, ArmError> {
    let mut url = url;
    let mut items = Vec::new();
    for _ in 0..1000 {
        let page = get_json(arm, operation, subscription, &url).await?;
        items.extend(
            page.get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(&read),
        );
        match page.get("nextLink").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => next.clone_into(&mut url),
            _ => break,
        }
    }
    Ok(items)
}
