//! Long-running Resource Manager operations (docs/design.md, "Resource Manager in general"): one follower for the
//! patterns ARM uses to report an operation that goes on after its request was answered.
//!
//! - [`Pattern::Location`]: poll `Location`; `202` while it runs (a new `Location` replaces the old), a final
//!   `2xx` that carries the result. API Management's backup and restore.
//! - [`Pattern::AsyncOperation`]: poll `Azure-AsyncOperation`; `200` with `status` `InProgress` until
//!   `Succeeded`, `Failed` or `Canceled`. Recovery Services answers this way, and its status names a job.
//! - [`Pattern::Job`]: poll a resource (a job) until `properties.status` leaves `InProgress`/`Cancelling`.
//!
//! Each poll waits for `Retry-After`, clamped to ARM's bounds, asks the token source again (a backup can outlast
//! many tokens), and is saved through [`Progress`] with the next poll's time, so a restart resumes the operation
//! instead of requesting it again. The follower stops at the deadline, returns at once when rpod stops (the
//! operation goes on in Azure and is resumed at the next start), and knows no target kind: what the final answer
//! means is the caller's to read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::arm::{ArmClient, ArmError, ArmResponse};
use crate::clock::Clock;

/// How an operation reports its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// `Location`: `202` while running, a final `2xx` with the result.
    Location,
    /// `Azure-AsyncOperation`: a status document until a terminal `status`.
    AsyncOperation,
    /// A resource whose `properties.status` says whether it still runs (a job).
    Job,
}

/// Where an operation stands: enough to poll it again after a restart. Saved before the first poll and after
/// every poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// How to read its answers.
    pub pattern: Pattern,
    /// The URL to poll, exactly as Azure gave it (a double slash included).
    pub url: String,
    /// When to poll next.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub next_poll_at: DateTime<Utc>,
    /// Polls so far.
    #[serde(default)]
    pub polls: u32,
}

impl Handle {
    /// A handle to poll `url` at `next_poll_at`.
    #[must_use]
    pub fn new(pattern: Pattern, url: impl Into<String>, next_poll_at: DateTime<Utc>) -> Self {
        Self {
            pattern,
            url: url.into(),
            next_poll_at,
            polls: 0,
        }
    }

    /// The handle as saved (JSON).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A saved handle.
    ///
    /// # Errors
    /// The text is not a saved handle.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|err| format!("unreadable saved operation: {err}"))
    }
}

/// Where the follower saves each step; the caller decides what that means (the catalog, in rpod).
#[async_trait::async_trait]
pub trait Progress: Send + Sync {
    /// The operation was polled; `handle` says where and when to poll next.
    ///
    /// # Errors
    /// The step could not be saved (the follower logs it and goes on: the previous step still resumes).
    async fn polled(&self, handle: &Handle) -> Result<(), String>;
}

/// Why following stopped without a final answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    /// The operation ended in failure; Azure's code, message and request id.
    #[error("{0}")]
    Failed(ArmError),
    /// The deadline passed first.
    #[error("the operation did not end by its deadline")]
    TimedOut,
    /// The caller cancelled (a deadline of its own).
    #[error("stopped while the operation was being polled")]
    Cancelled,
    /// rpod is stopping: the operation goes on in Azure and is resumed at the next start.
    #[error("rpod stopped while the operation was being polled")]
    Detached,
}

/// Follows operations through one ARM client.
#[derive(Debug, Clone)]
pub struct Follower<'a> {
    /// The client (its token source, retries and throttling).
    pub arm: &'a ArmClient,
    /// Selects the token bucket.
    pub subscription: &'a str,
    /// Wall time.
    pub clock: &'a Clock,
    /// Give up at this instant.
    pub deadline: DateTime<Utc>,
    /// Cancelled when the caller gives up.
    pub cancel: &'a CancellationToken,
    /// Cancelled when rpod begins to stop.
    pub stopping: &'a CancellationToken,
}

/// Job states that mean "still running" (Recovery Services).
const JOB_RUNNING: [&str; 2] = ["InProgress", "Cancelling"];

impl Follower<'_> {
    /// Polls the operation `handle` points at until it ends, saving each step through `progress`. Returns the
    /// answer that ended it: the final `2xx` of a `Location` operation, the `Succeeded` status document of an
    /// `Azure-AsyncOperation`, or the job resource in its final state (`Completed`, `Failed`, ...: the caller
    /// reads which).
    ///
    /// # Errors
    /// The operation failed (a `4xx` on a poll, an asynchronous status `Failed`/`Canceled`), the deadline passed,
    /// the caller cancelled, or rpod is stopping.
    pub async fn follow(
        &self,
        mut handle: Handle,
        progress: &dyn Progress,
    ) -> Result<ArmResponse, FollowError> {
        loop {
            self.wait_until(handle.next_poll_at).await?;
            let response = tokio::select! {
                response = self.arm.send("poll", self.subscription, Method::GET, &handle.url, None) => response,
                () = self.stopping.cancelled() => return Err(FollowError::Detached),
                () = self.cancel.cancelled() => return Err(FollowError::Cancelled),
            };
            handle.polls += 1;
            let wait = match response {
                Ok(response) => match step(&handle, &response) {
                    Step::Done => return Ok(response),
                    Step::Failed(error) => return Err(FollowError::Failed(error)),
                    Step::Running { location } => {
                        if let Some(location) = location {
                            handle.url = location;
                        }
                        debug!(url = %handle.url, polls = handle.polls, "Operation still running.");
                        self.arm.wait_for(response.retry_after)
                    }
                },
                // A status that could not be read says nothing about the operation itself: keep polling until
                // the deadline. An error answer (4xx) is the operation's own failure.
                Err(err) if err.retryable => {
                    warn!(
                        code = %err.code, request_id = err.request_id.as_deref().unwrap_or("-"),
                        "Polling the operation failed; polling again. {}", err.message
                    );
                    self.arm.wait_for(err.retry_after)
                }
                Err(err) => return Err(FollowError::Failed(err)),
            };
            handle.next_poll_at = self.clock.now() + crate::policy::delta(wait);
            if let Err(err) = progress.polled(&handle).await {
                warn!(error = %err, "Could not save the operation's progress; a restart resumes it from the step before.");
            }
        }
    }

    /// Waits until `at`, or returns why not.
    async fn wait_until(&self, at: DateTime<Utc>) -> Result<(), FollowError> {
        let now = self.clock.now();
        if now >= self.deadline {
            return Err(FollowError::TimedOut);
        }
        let until = at.min(self.deadline);
        let wait = (until - now).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.stopping.cancelled() => return Err(FollowError::Detached),
            () = self.cancel.cancelled() => return Err(FollowError::Cancelled),
        }
        if at > self.deadline {
            return Err(FollowError::TimedOut);
        }
        Ok(())
    }
}

/// What one successful answer says about the operation.
fn step(handle: &Handle, response: &ArmResponse) -> Step {
    match handle.pattern {
        Pattern::Location if response.status == 202 => Step::Running {
            location: response.location.clone(),
        },
        Pattern::Location => Step::Done,
        Pattern::AsyncOperation => {
            let status = json_text(response, "/status");
            match status.as_deref() {
                Some(s) if s.eq_ignore_ascii_case("Succeeded") => Step::Done,
                Some(s)
                    if s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Canceled") =>
                {
                    Step::Failed(failure(response, s))
                }
                // InProgress, or a status document still on its way.
                _ => Step::Running { location: None },
            }
        }
        Pattern::Job => match json_text(response, "/properties/status") {
            Some(s) if !JOB_RUNNING.iter().any(|r| r.eq_ignore_ascii_case(&s)) => Step::Done,
            _ => Step::Running { location: None },
        },
    }
}

/// An asynchronous operation's failure, with the error it carries.
fn failure(response: &ArmResponse, status: &str) -> ArmError {
    let code = json_text(response, "/error/code").unwrap_or_else(|| format!("Operation{status}"));
    let message = json_text(response, "/error/message")
        .unwrap_or_else(|| format!("the operation ended with status {status}"));
    let mut error = ArmError::invalid_answer(response, message);
    error.code = code;
    error.retryable = false;
    error
}

enum Step {
    Running { location: Option<String> },
    Done,
    Failed(ArmError),
}

fn json_text(response: &ArmResponse, pointer: &str) -> Option<String> {
    serde_json::from_slice::<Value>(&response.body)
        .ok()?
        .pointer(pointer)?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;
    use crate::azure::arm::{ArmOptions, TokenSource};
    use crate::config::Secret;
    use crate::metrics::Metrics;

    /// A token source that hands out a new token each time it is asked, as one whose tokens keep expiring does.
    #[derive(Debug, Default)]
    struct Expiring(AtomicU32);

    #[async_trait::async_trait]
    impl TokenSource for Expiring {
        async fn token(&self) -> Result<Secret, String> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Secret::new(format!("token-{n}")))
        }
    }

    /// What the fake Resource Manager saw: path and bearer token of each GET.
    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(String, String)>>);

    #[derive(Default)]
    struct Saved(Mutex<Vec<Handle>>);

    #[async_trait::async_trait]
    impl Progress for Saved {
        async fn polled(&self, handle: &Handle) -> Result<(), String> {
            self.0.lock().unwrap().push(handle.clone());
            Ok(())
        }
    }

    fn seen(state: &Seen, path: &str, headers: &HeaderMap) -> usize {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut seen = state.0.lock().unwrap();
        seen.push((path.to_owned(), token));
        seen.iter().filter(|(p, _)| p == path).count()
    }

    /// An asynchronous operation that runs for two polls and then names a job; the job runs for two polls.
    async fn fake_arm() -> (String, Arc<Seen>) {
        async fn operation(
            State(state): State<Arc<Seen>>,
            headers: HeaderMap,
        ) -> impl IntoResponse {
            let n = seen(&state, "operation", &headers);
            let body = if n < 3 {
                serde_json::json!({"status": "InProgress"})
            } else {
                serde_json::json!({"status": "Succeeded", "properties": {"jobId": "job-1"}})
            };
            (StatusCode::OK, [("retry-after", "1")], axum::Json(body))
        }
        async fn job(State(state): State<Arc<Seen>>, headers: HeaderMap) -> impl IntoResponse {
            let n = seen(&state, "job", &headers);
            let status = if n < 3 { "InProgress" } else { "Completed" };
            axum::Json(serde_json::json!({"properties": {"status": status}}))
        }
        let state = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route("/operation", get(operation))
            .route("/job", get(job))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, state)
    }

    fn client() -> ArmClient {
        let options = ArmOptions {
            min_retry_after: Duration::from_millis(10),
            max_retry_after: Duration::from_millis(50),
            default_retry_after: Duration::from_millis(20),
            loopback_only: true,
            ..ArmOptions::default()
        };
        ArmClient::new(Arc::new(Expiring::default()), Metrics::new(), options).unwrap()
    }

    #[tokio::test]
    async fn an_async_operation_then_its_job_are_followed_to_the_end_with_a_fresh_token_each_poll()
    {
        let (base, seen) = fake_arm().await;
        let arm = client();
        let clock = Clock::system();
        let (cancel, stopping) = (CancellationToken::new(), CancellationToken::new());
        let follower = Follower {
            arm: &arm,
            subscription: "sub",
            clock: &clock,
            deadline: clock.now() + chrono::TimeDelta::minutes(1),
            cancel: &cancel,
            stopping: &stopping,
        };
        let saved = Saved::default();
        let start = clock.now();
        let handle = Handle::new(Pattern::AsyncOperation, format!("{base}/operation"), start);
        let done = follower.follow(handle, &saved).await.unwrap();
        assert_eq!(
            json_text(&done, "/properties/jobId").as_deref(),
            Some("job-1")
        );
        {
            let saved = saved.0.lock().unwrap();
            assert_eq!(saved.len(), 2, "each running poll is saved: {saved:?}");
            assert_eq!(saved[1].polls, 2);
            // Retry-After 1 s, clamped to the client's bounds (at most 50 ms here).
            let gap = saved[0].next_poll_at - start;
            assert!(gap >= chrono::TimeDelta::milliseconds(50), "{gap}");
        }
        let job = Handle::new(Pattern::Job, format!("{base}/job"), clock.now());
        let done = follower.follow(job, &saved).await.unwrap();
        assert_eq!(
            json_text(&done, "/properties/status").as_deref(),
            Some("Completed")
        );
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 6, "{seen:?}");
        let tokens: std::collections::HashSet<&str> =
            seen.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(tokens.len(), 6, "a token asked for at every poll: {seen:?}");
    }

    #[tokio::test]
    async fn the_deadline_ends_the_wait_a_failure_ends_the_operation_and_stopping_detaches() {
        async fn failing() -> impl IntoResponse {
            axum::Json(serde_json::json!({
                "status": "Failed",
                "error": {"code": "UserErrorVmNotFound", "message": "The VM is gone."}
            }))
        }
        async fn endless() -> impl IntoResponse {
            (StatusCode::ACCEPTED, [("retry-after", "60")], "")
        }
        let app = axum::Router::new()
            .route("/failing", get(failing))
            .route("/endless", get(endless));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let arm = client();
        let clock = Clock::system();
        let (cancel, stopping) = (CancellationToken::new(), CancellationToken::new());
        let mut follower = Follower {
            arm: &arm,
            subscription: "sub",
            clock: &clock,
            deadline: clock.now() + chrono::TimeDelta::milliseconds(300),
            cancel: &cancel,
            stopping: &stopping,
        };
        let saved = Saved::default();
        let failed = follower
            .follow(
                Handle::new(
                    Pattern::AsyncOperation,
                    format!("{base}/failing"),
                    clock.now(),
                ),
                &saved,
            )
            .await
            .unwrap_err();
        match failed {
            FollowError::Failed(error) => {
                assert_eq!(error.code, "UserErrorVmNotFound");
                assert_eq!(error.message, "The VM is gone.");
                assert!(!error.retryable);
            }
            other => panic!("{other:?}"),
        }
        let endless = Handle::new(Pattern::Location, format!("{base}/endless"), clock.now());
        assert_eq!(
            follower.follow(endless.clone(), &saved).await.unwrap_err(),
            FollowError::TimedOut
        );
        follower.deadline = clock.now() + chrono::TimeDelta::minutes(10);
        stopping.cancel();
        assert_eq!(
            follower.follow(endless, &saved).await.unwrap_err(),
            FollowError::Detached
        );
    }
}
