//! The ARM client against a scripted loopback server: verbatim URLs, retries honouring Retry-After, errors with
//! Azure's code, message and request id, metrics.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri};
use rpod::azure::{ArmClient, ArmOptions, BucketLimits, Throttle, TokenSource};
use rpod::config::Secret;
use rpod::metrics::Metrics;

const TOKEN: &str = "canary-token-7d1f";

#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl TokenSource for FixedToken {
    async fn token(&self) -> Result<Secret, String> {
        Ok(Secret::new(TOKEN.to_owned()))
    }
}

type Reply = (u16, Vec<(&'static str, String)>, String);

/// One request as the server saw it: method, path and query, `Authorization`, `User-Agent`.
type Seen = (String, String, String, String);

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    log: Arc<Mutex<Vec<Seen>>>,
}

async fn serve(script: Script) -> String {
    let handler = {
        let script = script.clone();
        move |method: axum::http::Method, uri: Uri, headers: HeaderMap| {
            let script = script.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                script.log.lock().unwrap().push((
                    method.to_string(),
                    uri.to_string(),
                    header("authorization"),
                    header("user-agent"),
                ));
                let (status, headers, body) = script
                    .replies
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((500, vec![], "script exhausted".into()));
                let mut response = axum::response::Response::new(axum::body::Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(handler)).await });
    format!("http://{address}")
}

fn client(metrics: &Metrics) -> ArmClient {
    let options = ArmOptions {
        max_attempts: 4,
        min_retry_after: Duration::from_millis(20),
        max_retry_after: Duration::from_millis(300),
        default_retry_after: Duration::from_millis(20),
        ..ArmOptions::default()
    };
    ArmClient::new(Arc::new(FixedToken), metrics.clone(), options).unwrap()
}

fn script(replies: Vec<Reply>) -> Script {
    Script {
        replies: Arc::new(Mutex::new(replies.into())),
        log: Arc::default(),
    }
}

fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message, "details": null, "innerError": null}}).to_string()
}

#[tokio::test]
async fn accepted_answers_keep_location_verbatim_and_carry_auth_and_user_agent() {
    let script = script(vec![(
        202,
        vec![
            (
                "location",
                "{base}/svc//operationresults/abc?api-version=2020-12-01".into(),
            ),
            ("retry-after", "60".into()),
            ("x-ms-request-id", "req-1".into()),
        ],
        String::new(),
    )]);
    let base = serve(script.clone()).await;
    {
        let mut replies = script.replies.lock().unwrap();
        let location = replies[0].1[0].1.replace("{base}", &base);
        replies[0].1[0].1 = location;
    }
    let metrics = Metrics::new();
    let url =
        format!("{base}/subscriptions/s/providers/x/service/svc/backup?api-version=2020-12-01");
    let response = client(&metrics)
        .send(
            "backup",
            "s",
            reqwest::Method::POST,
            &url,
            Some(&serde_json::json!({"backupName": "b"})),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 202);
    assert_eq!(
        response.location.as_deref(),
        Some(format!("{base}/svc//operationresults/abc?api-version=2020-12-01").as_str()),
        "the Location is kept exactly as Azure sent it"
    );
    assert_eq!(response.retry_after, Some(Duration::from_mins(1)));
    assert_eq!(response.request_id.as_deref(), Some("req-1"));
    let log = script.log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].2, format!("Bearer {TOKEN}"));
    assert!(log[0].3.starts_with("rpod/"), "{}", log[0].3);
    assert!(
        metrics
            .render()
            .contains("rpod_arm_requests_total{operation=\"backup\",status_class=\"2xx\"} 1")
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let script = script(vec![
        (
            429,
            vec![("retry-after", "0".into())],
            error_body("SubscriptionRequestsThrottled", "slow down"),
        ),
        (503, vec![], "unavailable".into()),
        (
            409,
            vec![],
            error_body("Conflict", "another operation is in progress"),
        ),
        (200, vec![], "{}".into()),
    ]);
    let base = serve(script.clone()).await;
    let metrics = Metrics::new();
    let start = Instant::now();
    let response = client(&metrics)
        .send(
            "get_service",
            "s",
            reqwest::Method::GET,
            &format!("{base}/x"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        script.log.lock().unwrap().len(),
        4,
        "three transient answers, then success"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "each retry waited at least the clamped Retry-After"
    );
    let text = metrics.render();
    assert!(text.contains("rpod_arm_throttled_total 1"), "{text}");
    assert!(
        text.contains("rpod_arm_requests_total{operation=\"get_service\",status_class=\"4xx\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("rpod_arm_requests_total{operation=\"get_service\",status_class=\"5xx\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_rejection_fails_at_once_with_code_message_and_request_id() {
    let message = "Invalid parameter: This request is not authorized to perform this operation.";
    let script = script(vec![(
        400,
        vec![("x-ms-request-id", "req-400".into())],
        error_body("InvalidParameters", message),
    )]);
    let base = serve(script.clone()).await;
    let metrics = Metrics::new();
    let err = client(&metrics)
        .send(
            "backup",
            "s",
            reqwest::Method::POST,
            &format!("{base}/backup"),
            Some(&serde_json::json!({})),
        )
        .await
        .unwrap_err();
    assert_eq!(script.log.lock().unwrap().len(), 1, "not retried");
    assert!(!err.retryable);
    assert_eq!(
        (err.status, err.code.as_str(), err.message.as_str()),
        (Some(400), "InvalidParameters", message)
    );
    let text = err.to_string();
    assert!(
        text.contains("400 InvalidParameters")
            && text.contains(message)
            && text.contains("req-400"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn transient_failures_stop_after_max_attempts() {
    let script = script((0..10).map(|_| (500, vec![], "boom".to_owned())).collect());
    let base = serve(script.clone()).await;
    let err = client(&Metrics::new())
        .send(
            "poll",
            "s",
            reqwest::Method::GET,
            &format!("{base}/op"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(script.log.lock().unwrap().len(), 4);
    assert!(err.retryable);
    assert_eq!(
        err.code, "InternalServerError",
        "a body that is not Azure's error shape still gives a code"
    );
    assert_eq!(err.message, "boom");

    // Nobody listening: a connection failure, retried, then reported.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = client(&Metrics::new())
        .send(
            "poll",
            "s",
            reqwest::Method::GET,
            &format!("http://{closed}/op"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, "ConnectionFailed");
    assert!(err.retryable && err.status.is_none());
}

#[tokio::test]
async fn writes_wait_for_the_subscription_bucket() {
    let script = script((0..6).map(|_| (200, vec![], "{}".to_owned())).collect());
    let base = serve(script.clone()).await;
    let options = ArmOptions {
        throttle: Throttle::new(
            BucketLimits::ARM_READS,
            BucketLimits {
                burst: 2.0,
                per_second: 20.0,
            },
        ),
        ..ArmOptions::default()
    };
    let client = ArmClient::new(Arc::new(FixedToken), Metrics::new(), options).unwrap();
    let start = Instant::now();
    for _ in 0..6 {
        client
            .send(
                "backup",
                "s",
                reqwest::Method::POST,
                &format!("{base}/b"),
                None,
            )
            .await
            .unwrap();
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(195),
        "4 writes beyond the burst at 20/s: {took:?}"
    );
}
