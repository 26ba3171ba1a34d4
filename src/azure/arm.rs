//! The Azure Resource Manager client: one reqwest client for the process (rustls), bearer auth,
//! `User-Agent: rpod/<version>`, timeouts, client-side throttling per subscription, and retries as docs/design.md, "Retries" says
//! honouring `Retry-After`. Error answers become [`ArmError`]s carrying Azure's code, message and request id.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use tracing::{debug, warn};

use super::throttle::{Access, Throttle};
use super::transport::{describe_error, is_loopback};
use crate::config::Secret;
use crate::metrics::Metrics;

/// Supplies bearer tokens for the ARM audience; implementations cache them until near expiry.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A current access token.
    ///
    /// # Errors
    /// An operator-readable reason the token could not be obtained (never the secret itself).
    async fn token(&self) -> Result<Secret, String>;
}

/// How the client behaves; the defaults follow ARM's documented behaviour.
#[derive(Debug, Clone)]
pub struct ArmOptions {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Attempts per request, the first included, for transient answers.
    pub max_attempts: u32,
    /// `Retry-After` is clamped to at least this (ARM sends 10..600 s).
    pub min_retry_after: Duration,
    /// ... and at most this.
    pub max_retry_after: Duration,
    /// Wait when a transient answer carries no `Retry-After`.
    pub default_retry_after: Duration,
    /// Client-side token buckets.
    pub throttle: Throttle,
    /// Refuse every URL whose host is not a loopback address (tests: nothing may leave the machine).
    pub loopback_only: bool,
    /// TLS settings of a cloud of its own (an `[azure.profiles.NAME]` with its CA); `None`: the system's roots.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ArmOptions {
    /// The options `[azure]` asks for.
    #[must_use]
    pub fn from_config(config: &crate::config::AzureConfig, loopback_only: bool) -> Self {
        let limits = |(burst, per_second)| super::throttle::BucketLimits { burst, per_second };
        Self {
            request_timeout: config.request_timeout,
            min_retry_after: config.min_retry_after,
            max_retry_after: config.max_retry_after,
            throttle: Throttle::new(limits(config.read_limits), limits(config.write_limits)),
            loopback_only,
            ..Self::default()
        }
    }
}

impl Default for ArmOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_mins(1),
            max_attempts: 5,
            min_retry_after: Duration::from_secs(10),
            max_retry_after: Duration::from_mins(10),
            default_retry_after: Duration::from_mins(1),
            throttle: Throttle::default(),
            loopback_only: false,
            tls: None,
        }
    }
}

/// An answer from ARM that is not a success, or no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ArmError {
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Azure's error code (`InvalidParameters`, `SubscriptionRequestsThrottled`, ...) or a local one
    /// (`ConnectionFailed`, `Timeout`, `TokenUnavailable`, `InvalidResponse`).
    pub code: String,
    /// Azure's message.
    pub message: String,
    /// `x-ms-request-id` of the answer, for Azure support.
    pub request_id: Option<String>,
    /// Worth another attempt (429, 5xx, 409 conflict while busy, connection failures and timeouts).
    pub retryable: bool,
    /// How long ARM asked to wait, when it said.
    pub retry_after: Option<Duration>,
}

impl ArmError {
    fn local(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            status: None,
            code: code.to_owned(),
            message: message.into(),
            request_id: None,
            retryable,
            retry_after: None,
        }
    }

    /// A 2xx answer whose body rpod cannot read.
    #[must_use]
    pub fn invalid_answer(response: &ArmResponse, message: impl Into<String>) -> Self {
        Self {
            status: Some(response.status),
            request_id: response.request_id.clone(),
            ..Self::local("InvalidResponse", message, true)
        }
    }

    fn describe(&self) -> String {
        let text = match self.status {
            Some(status) => format!("Azure answered {status} {}: {}", self.code, self.message),
            None => format!("{}: {}", self.code, self.message),
        };
        match &self.request_id {
            Some(id) => format!("{text} (request id {id})"),
            None => text,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    /// 2xx status.
    pub status: u16,
    /// `Location` header, verbatim.
    pub location: Option<String>,
    /// `Azure-AsyncOperation` header, verbatim.
    pub async_operation: Option<String>,
    /// `Retry-After` header in seconds, unclamped.
    pub retry_after: Option<Duration>,
    /// `x-ms-request-id`.
    pub request_id: Option<String>,
    /// The body (possibly empty).
    pub body: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// The ARM client; cheap to clone.
#[derive(Debug, Clone)]
pub struct ArmClient {
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    metrics: Metrics,
    options: ArmOptions,
}

fn header_text(headers: &header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    header_text(headers, header::RETRY_AFTER.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The reqwest client of `options`: rpod's user agent, its timeouts and, for a profile, its TLS settings.
///
/// # Errors
/// The client could not be built (TLS set-up).
pub fn http_client(options: &ArmOptions) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("rpod/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout);
    if let Some(tls) = &options.tls {
        builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
    }
    builder.build()
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "error",
    }
}

impl ArmClient {
    /// A client sending requests with tokens from `tokens`.
    ///
    /// # Errors
    /// The HTTP client could not be built (TLS set-up).
    pub fn new(
        tokens: Arc<dyn TokenSource>,
        metrics: Metrics,
        options: ArmOptions,
    ) -> Result<Self, ArmError> {
        let http = http_client(&options)
            .map_err(|err| ArmError::local("ClientSetup", err.to_string(), false))?;
        Ok(Self {
            http,
            tokens,
            metrics,
            options,
        })
    }

    /// How long to wait before the next poll (or retry) when ARM said `retry_after`: its value clamped to sane
    /// bounds, or ARM's documented default of 60 s when it said nothing.
    #[must_use]
    pub fn wait_for(&self, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or(self.options.default_retry_after)
            .clamp(self.options.min_retry_after, self.options.max_retry_after)
    }

    /// Sends one logical request, retrying transient failures. `operation` is the metric label (`backup`,
    /// `poll`, `get_service`, ...), `subscription` selects the token bucket; the URL is used verbatim.
    ///
    /// # Errors
    /// The last [`ArmError`] once the answer is permanent or the attempts are used up.
    pub async fn send(
        &self,
        operation: &str,
        subscription: &str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ArmResponse, ArmError> {
        let access = if method == Method::GET {
            Access::Read
        } else {
            Access::Write
        };
        let mut attempt = 1;
        loop {
            self.options.throttle.acquire(subscription, access).await;
            let result = self.send_once(operation, method.clone(), url, body).await;
            match result {
                Ok(response) => return Ok(response),
                Err(err) if err.retryable && attempt < self.options.max_attempts => {
                    let wait = self.wait_for(err.retry_after);
                    warn!(
                        operation, attempt, code = %err.code,
                        request_id = err.request_id.as_deref().unwrap_or("-"),
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "Azure Resource Manager request failed; retrying."
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn send_once(
        &self,
        operation: &str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ArmResponse, ArmError> {
        if self.options.loopback_only && !is_loopback(url) {
            return Err(ArmError::local(
                "NotLoopback",
                format!("refusing a request to {url}: only loopback addresses are allowed"),
                false,
            ));
        }
        let token = self
            .tokens
            .token()
            .await
            .map_err(|message| ArmError::local("TokenUnavailable", message, true))?;
        let mut request = self.http.request(method, url).bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                self.metrics.arm_request(operation, "error");
                let code = if err.is_timeout() {
                    "Timeout"
                } else {
                    "ConnectionFailed"
                };
                // The whole chain: reqwest's own message names only the URL, the reason (an untrusted
                // certificate, a refused connection) is further down. ARM URLs carry no secrets.
                return Err(ArmError::local(code, describe_error(&err), true));
            }
        };
        let status = response.status();
        self.metrics.arm_request(operation, status_class(status));
        let headers = response.headers().clone();
        let request_id = header_text(&headers, "x-ms-request-id");
        let retry_after = retry_after(&headers);
        let bytes = response.bytes().await.map_err(|err| {
            ArmError::local(
                "ConnectionFailed",
                format!("reading the answer: {err}"),
                true,
            )
        })?;
        if status.is_success() {
            debug!(
                operation,
                status = status.as_u16(),
                request_id = request_id.as_deref().unwrap_or("-"),
                "ARM answered."
            );
            return Ok(ArmResponse {
                status: status.as_u16(),
                location: header_text(&headers, header::LOCATION.as_str()),
                async_operation: header_text(&headers, "azure-asyncoperation"),
                retry_after,
                request_id,
                body: bytes.to_vec(),
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.metrics.arm_throttled();
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(parsed) => (
                parsed
                    .error
                    .code
                    .unwrap_or_else(|| status.as_u16().to_string()),
                parsed.error.message.unwrap_or_default(),
            ),
            Err(_) => (
                status
                    .canonical_reason()
                    .unwrap_or("Error")
                    .replace(' ', ""),
                String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            ),
        };
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::CONFLICT
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        Err(ArmError {
            status: Some(status.as_u16()),
            code,
            message,
            request_id,
            retryable,
            retry_after,
        })
    }
}
