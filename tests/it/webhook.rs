//! The Event Grid webhook on a real loopback listener: the validation handshakes, deliveries in both envelopes
//! reported as changes to the right targets, refusals (401, 413, 400) that report nothing, and a few thousand
//! hostile bodies that never get a 5xx nor stop the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use reqwest::StatusCode;
use rpod::changes::{ChangeNotice, ChangeSource};
use rpod::config::Config;
use rpod::http::webhook::Webhook;
use rpod::metrics::Metrics;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cloud::{RG, SUB};

/// Needs URL-encoding in `?code=`, so decoding is exercised.
const SECRET: &str = "hook secret+/=&ü";
const APIM: &str = "Microsoft.ApiManagement";

/// The ARM path of a service in `SUB`/`RG`, with its provider spelled as Azure sends it.
fn service(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/{APIM}/service/{name}")
}

/// Two targets protect `contoso-prod` (one a copy), one `contoso-staging`; `contoso-polled` is protected but
/// polled, not fed by Event Grid.
fn config(max_body_bytes: Option<usize>) -> String {
    let target = |name: &str, service: &str, detect: &str| {
        crate::cloud::target(
            name,
            service,
            &format!("rpo = \"6h\"\non_change = {{ detect = \"{detect}\" }}"),
        )
    };
    let limit =
        max_body_bytes.map_or_else(String::new, |bytes| format!("max_body_bytes = {bytes}\n"));
    format!(
        r#"
[daemon]
state_dir = "{{dir}}/state"
listen = "127.0.0.1:0"

[webhook]
secret_file = "{{dir}}/webhook-secret"
{limit}
[storage.blob]
kind = "azure_blob"
account = "contosobackups"
container = "apim-backups"
access = "managed_identity"
{}{}{}{}"#,
        target("prod", "contoso-prod", "event_grid"),
        target("prod-copy", "contoso-prod", "event_grid"),
        target("staging", "contoso-staging", "event_grid"),
        target("polled", "contoso-polled", "sync_state"),
    )
}

/// The webhook alone on a loopback port, reporting into a channel.
struct Hook {
    _dir: TempDir,
    address: SocketAddr,
    notices: mpsc::UnboundedReceiver<ChangeNotice>,
    metrics: Metrics,
    http: reqwest::Client,
}

impl Hook {
    async fn start(max_body_bytes: Option<usize>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("webhook-secret"), format!("{SECRET}\n")).unwrap();
        let text = config(max_body_bytes).replace("{dir}", dir.path().to_str().unwrap());
        let path = dir.path().join("rpod.toml");
        let config = Config::parse(&text, &path).unwrap_or_else(|err| panic!("{err}"));
        let (sender, notices) = mpsc::unbounded_channel::<ChangeNotice>();
        let metrics = Metrics::new();
        let webhook = Webhook::new(
            config.webhook.as_ref().expect("[webhook] is configured"),
            &config.targets,
            Arc::new(sender),
            metrics.clone(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, webhook.router()).await });
        Self {
            _dir: dir,
            address,
            notices,
            metrics,
            http: reqwest::Client::new(),
        }
    }

    /// The webhook URL with `code` (URL-encoded) in the query.
    fn url_with_code(&self, code: &str) -> String {
        let mut url = url::Url::parse(&format!("http://{}/hooks/eventgrid", self.address)).unwrap();
        url.query_pairs_mut().append_pair("code", code);
        url.into()
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/eventgrid", self.address)
    }

    /// POSTs `body` with the secret in the query.
    async fn post(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url_with_code(SECRET))
            .header("content-type", "application/json")
            .header("aeg-event-type", "Notification")
            .body(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    async fn post_json(&self, body: &Value) -> (StatusCode, Value) {
        self.post(body.to_string()).await
    }

    /// Every notice reported so far (the sink is called before the answer is sent).
    fn notices(&mut self) -> Vec<ChangeNotice> {
        let mut notices = Vec::new();
        while let Ok(notice) = self.notices.try_recv() {
            notices.push(notice);
        }
        notices
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        crate::support::Metrics::parse(&self.metrics.render())
            .get(name, labels)
            .unwrap_or(0.0)
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("answer {status} is not JSON ({err}): {text:?}"));
    (status, value)
}

fn notice(target: &str, changed_at: Option<&str>) -> ChangeNotice {
    ChangeNotice {
        target: target.to_owned(),
        source: ChangeSource::EventGrid,
        changed_at: changed_at.map(|at| at.parse::<DateTime<Utc>>().unwrap()),
    }
}

/// The documented `APIUpdated` example, for `service` (an ARM path).
fn api_updated(service: &str) -> Value {
    json!({
        "id": "4d6e3b5c-6a3f-4b5e-9d7a-1c2b3a4d5e6f",
        "topic": service,
        "subject": "/apis/myapi;Rev=1",
        "data": { "resourceUri": format!("{service}/apis/myapi;Rev=1") },
        "eventType": "Microsoft.ApiManagement.APIUpdated",
        "dataVersion": "1",
        "metadataVersion": "1",
        "eventTime": "2021-07-12T23:13:44.9048323Z"
    })
}

fn cloud_event(service: &str, kind: &str, time: &str) -> Value {
    json!({
        "specversion": "1.0",
        "type": format!("{APIM}.{kind}"),
        "source": service,
        "subject": "/products/starter",
        "id": "9b8c7d6e-0000-4000-8000-000000000001",
        "time": time,
        "data": { "resourceUri": format!("{service}/products/starter") }
    })
}

fn validation_event(code: &str) -> Value {
    json!([{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": format!("/subscriptions/{SUB}"),
        "subject": "",
        "data": {
            "validationCode": code,
            "validationUrl": "https://rp-westeurope.eventgrid.azure.net:553/eventsubscriptions/rpod/validate?id=1&t=2"
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2024-05-01T10:00:00.0000000Z",
        "metadataVersion": "1",
        "dataVersion": "2"
    }])
}

#[tokio::test]
async fn the_validation_handshake_answers_the_code_with_the_secret_in_the_query_or_the_header() {
    let mut hook = Hook::start(None).await;
    let code = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6";
    let response = hook
        .http
        .post(hook.url_with_code(SECRET))
        .header("aeg-event-type", "SubscriptionValidation")
        .header("content-type", "application/json")
        .body(validation_event(code).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        format!(r#"{{"validationResponse":"{code}"}}"#)
    );

    // Through the header, and without aeg-event-type: the event type alone says what it is.
    let response = hook
        .http
        .post(hook.url())
        .header("x-rpod-webhook-secret", SECRET.as_bytes())
        .body(validation_event("other-code").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"validationResponse":"other-code"}"#
    );

    // A validation request without a code is refused; without the secret it never gets that far.
    let response = hook
        .http
        .post(hook.url_with_code(SECRET))
        .header("aeg-event-type", "SubscriptionValidation")
        .body(json!([api_updated(&service("contoso-prod"))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = hook
        .http
        .post(hook.url())
        .header("aeg-event-type", "SubscriptionValidation")
        .body(validation_event(code).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!response.text().await.unwrap().contains(code));
    assert_eq!(hook.notices(), Vec::new());
    let requests = |code: &str| hook.metric("rpod_webhook_requests_total", &[("code", code)]);
    assert_eq!(
        (requests("200"), requests("400"), requests("401")),
        (2.0, 1.0, 1.0)
    );
}

#[tokio::test]
async fn the_cloudevents_handshake_echoes_the_origin() {
    let hook = Hook::start(None).await;
    let response = hook
        .http
        .request(reqwest::Method::OPTIONS, hook.url_with_code(SECRET))
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .header("WebHook-Request-Rate", "120")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("webhook-allowed-origin").as_deref(),
        Some("eventgrid.azure.net")
    );
    assert_eq!(header("webhook-allowed-rate").as_deref(), Some("*"));

    let without_origin = hook
        .http
        .request(reqwest::Method::OPTIONS, hook.url_with_code(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(without_origin.status(), StatusCode::BAD_REQUEST);
    let without_secret = hook
        .http
        .request(reqwest::Method::OPTIONS, hook.url())
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(without_secret.status(), StatusCode::UNAUTHORIZED);
    assert!(
        without_secret
            .headers()
            .get("webhook-allowed-origin")
            .is_none()
    );
}

#[tokio::test]
async fn an_api_update_is_a_change_of_every_target_that_protects_the_service() {
    let mut hook = Hook::start(None).await;
    // ARM paths are case-insensitive: Azure may spell the topic differently from the configuration.
    let topic = service("contoso-prod")
        .replace("resourceGroups", "resourcegroups")
        .replace(RG, &RG.to_uppercase())
        .replace("contoso-prod", "Contoso-Prod");
    let (status, _) = hook.post_json(&json!([api_updated(&topic)])).await;
    assert_eq!(status, StatusCode::OK);
    let at = Some("2021-07-12T23:13:44.904832300Z");
    assert_eq!(
        hook.notices(),
        vec![notice("prod", at), notice("prod-copy", at)]
    );

    // CloudEvents: one structured event, then a batch; the content type is not what tells them apart.
    let response = hook
        .http
        .post(hook.url_with_code(SECRET))
        .header(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )
        .body(
            cloud_event(
                &service("contoso-staging"),
                "ProductCreated",
                "2024-05-01T10:00:00Z",
            )
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        hook.notices(),
        vec![notice("staging", Some("2024-05-01T10:00:00Z"))]
    );
    let batch = json!([
        cloud_event(
            &service("contoso-staging"),
            "SubscriptionUpdated",
            "2024-05-01T10:01:00+02:00"
        ),
        cloud_event(
            &format!("{}/", service("contoso-staging")),
            "UserDeleted",
            "not a time"
        ),
    ]);
    let response = hook
        .http
        .post(hook.url_with_code(SECRET))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        hook.notices(),
        vec![
            notice("staging", Some("2024-05-01T08:01:00Z")),
            notice("staging", None),
        ]
    );
    assert_eq!(
        hook.metric("rpod_webhook_requests_total", &[("code", "200")]),
        3.0
    );
}

#[tokio::test]
async fn a_batch_reports_each_known_service_and_counts_what_it_ignores() {
    let mut hook = Hook::start(None).await;
    let mut without_topic = cloud_event(
        &service("contoso-staging"),
        "APIDeleted",
        "2024-05-01T10:00:00Z",
    );
    without_topic.as_object_mut().unwrap().remove("source");
    let mut event_grid_without_topic = api_updated(&service("contoso-prod"));
    event_grid_without_topic
        .as_object_mut()
        .unwrap()
        .remove("topic");
    let batch = json!([
        api_updated(&service("contoso-staging")),
        api_updated(&service("contoso-unknown")),
        api_updated(&service("contoso-polled")),
        api_updated(&format!("/subscriptions/{SUB}/resourceGroups/other-rg/providers/{APIM}/service/contoso-prod")),
        {
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "topic": service("contoso-prod"),
            "eventTime": "2024-05-01T10:00:00Z",
            "data": {}
        },
        {
            "eventType": "Microsoft.Storage.BlobCreated",
            "topic": service("contoso-prod"),
        },
        event_grid_without_topic,
    ]);
    let (status, summary) = hook.post_json(&batch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary,
        json!({ "received": 7, "changes": 3, "ignored": 5 })
    );
    let at = Some("2021-07-12T23:13:44.904832300Z");
    assert_eq!(
        hook.notices(),
        vec![
            notice("staging", at),
            notice("prod", at),
            notice("prod-copy", at)
        ]
    );
    let ignored =
        |reason: &str| hook.metric("rpod_webhook_events_ignored_total", &[("reason", reason)]);
    assert_eq!(ignored("unknown_service"), 3.0);
    assert_eq!(ignored("not_a_change"), 2.0);

    // A CloudEvent without a source falls back to data.resourceUri.
    let (status, _) = hook.post_json(&without_topic).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        hook.notices(),
        vec![notice("staging", Some("2024-05-01T10:00:00Z"))]
    );

    // An empty delivery is fine and reports nothing.
    let (status, summary) = hook.post_json(&json!([])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary,
        json!({ "received": 0, "changes": 0, "ignored": 0 })
    );
    assert_eq!(hook.notices(), Vec::new());
}

/// Sends a raw HTTP/1.1 request and returns the status code of the answer.
async fn raw_status(address: SocketAddr, head: &str, body: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

#[tokio::test]
async fn refused_requests_report_nothing() {
    let mut hook = Hook::start(Some(4096)).await;
    let delivery = json!([api_updated(&service("contoso-prod"))]).to_string();

    for url in [
        hook.url(),
        hook.url_with_code("guess-4711"),
        hook.url_with_code(""),
    ] {
        let response = hook
            .http
            .post(url)
            .body(delivery.clone())
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!body.to_string().contains("4711"), "{body}");
    }
    let response = hook
        .http
        .post(hook.url())
        .header("x-rpod-webhook-secret", "hook secret")
        .body(delivery.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = hook.post(vec![b' '; 5000]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, _) = hook.post("[{\"eventType\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = hook.post(b"\xff\xfe[]".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = hook.post_json(&json!({ "hello": "world" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string(), "{body}");
    let (status, _) = hook
        .post_json(&json!("Microsoft.ApiManagement.APIUpdated"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = hook
        .post_json(&json!([api_updated(&service("contoso-prod")), { "eventType": 1 }]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let too_many = Value::Array(vec![json!({ "eventType": "x" }); 5_001]);
    let default_limit = Hook::start(None).await;
    let (status, _) = default_limit.post_json(&too_many).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A body sent in chunks, with no Content-Length to refuse it up front, is cut off at the limit too.
    let mut chunked = Vec::new();
    for _ in 0..10 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", " ".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /hooks/eventgrid HTTP/1.1\r\nhost: {}\r\nx-rpod-webhook-secret: {}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        hook.address, SECRET
    );
    assert_eq!(raw_status(hook.address, &head, &chunked).await, 413);
    let head = format!(
        "POST /hooks/eventgrid HTTP/1.1\r\nhost: {}\r\nx-rpod-webhook-secret: {SECRET}\r\n\
         content-length: 999999999999\r\nconnection: close\r\n\r\n",
        hook.address
    );
    assert_eq!(raw_status(hook.address, &head, b"[]").await, 413);

    let response = hook
        .http
        .get(hook.url_with_code(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(hook.notices(), Vec::new());
    let requests = |code: &str| hook.metric("rpod_webhook_requests_total", &[("code", code)]);
    assert_eq!(requests("405"), 1.0);
    assert_eq!(requests("401"), 4.0);
    assert_eq!(requests("413"), 3.0);
    assert_eq!(requests("400"), 5.0);
    assert_eq!(requests("200"), 0.0);

    // The limit is max_body_bytes, not axum's default of 2 MB.
    let big = Hook::start(Some(3 * 1024 * 1024)).await;
    let mut event = api_updated(&service("contoso-prod"));
    event["subject"] = json!("x".repeat(2_500_000));
    let (status, summary) = big.post_json(&json!([event])).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["changes"], 2);
}

/// Ways to break a valid delivery.
fn hostile_bodies(rng: &mut StdRng, valid: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    // Random bytes, of any length up to a few kilobytes.
    for _ in 0..800 {
        let mut bytes = vec![0; rng.random_range(0..4000)];
        rng.fill_bytes(&mut bytes);
        bodies.push(bytes);
    }
    for _ in 0..800 {
        let base = &valid[rng.random_range(0..valid.len())];
        // Truncations.
        bodies.push(base[..rng.random_range(0..base.len())].to_vec());
        // Byte flips, a few at a time.
        let mut flipped = base.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..flipped.len());
            flipped[at] = rng.random();
        }
        bodies.push(flipped);
    }
    // Deep nesting, at and around serde_json's recursion limit and far beyond it.
    for depth in [1, 64, 126, 127, 128, 129, 1_000, 100_000] {
        bodies.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes());
        bodies.push("[".repeat(depth).into_bytes());
        bodies.push(
            format!(
                "[{{\"eventType\":\"{APIM}.APIUpdated\",\"data\":{}1{}}}]",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            )
            .into_bytes(),
        );
    }
    // Huge and odd numbers.
    for number in [
        "1e999",
        "-1e999",
        "123456789012345678901234567890123456789",
        "-0",
        "NaN",
        "Infinity",
        "0x10",
        "1.7976931348623157e308",
        "4.9e-324",
        &"9".repeat(10_000),
    ] {
        bodies.push(number.as_bytes().to_vec());
        bodies.push(format!("[{number}]").into_bytes());
        bodies.push(format!("[{{\"eventType\":{number},\"topic\":{number}}}]").into_bytes());
    }
    // Wrong types in every field of every envelope.
    let odd_values = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1.5),
        json!(u64::MAX),
        json!(""),
        json!("\u{0}\u{202e}🦀 ☃ é"),
        json!([]),
        json!({}),
        json!([[[{}]]]),
        json!({ "resourceUri": 1, "validationCode": [] }),
    ];
    let templates = [
        api_updated(&service("contoso-prod")),
        cloud_event(
            &service("contoso-prod"),
            "APICreated",
            "2024-05-01T10:00:00Z",
        ),
        validation_event("code")[0].clone(),
    ];
    for template in &templates {
        let Value::Object(fields) = template else {
            unreachable!()
        };
        let keys: Vec<String> = fields
            .keys()
            .cloned()
            .chain([
                "data.resourceUri".to_owned(),
                "data.validationCode".to_owned(),
            ])
            .collect();
        for key in keys {
            for odd in &odd_values {
                let mut event = template.clone();
                match key.split_once('.') {
                    Some((outer, inner)) => {
                        if let Some(data) = event.get_mut(outer).and_then(Value::as_object_mut) {
                            data.insert(inner.to_owned(), odd.clone());
                        }
                    }
                    None => {
                        event[key.as_str()] = odd.clone();
                    }
                }
                bodies.push(json!([event]).to_string().into_bytes());
                bodies.push(event.to_string().into_bytes());
            }
        }
    }
    // Unicode where ASCII is expected, invalid UTF-8 and lone surrogates inside strings.
    for text in [
        "/subscriptions/ü/resourceGroups/ß/providers/Microsoft.ApiManagement/service/€",
        "/SUBSCRIPTIONS/İ/RESOURCEGROUPS/ı/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/ǅ/",
        "Microsoft.ApiManagemenü.APIUpdated",
        "\u{feff}Microsoft.ApiManagement.APIUpdated",
    ] {
        bodies.push(
            json!([{ "eventType": text, "topic": text, "eventTime": text, "data": { "resourceUri": text } }])
                .to_string()
                .into_bytes(),
        );
    }
    bodies.push(br#"[{"eventType":"\ud800","topic":"\udfff"}]"#.to_vec());
    bodies.push(b"[{\"eventType\":\"\xff\xfe\",\"topic\":\"\xc0\xaf\"}]".to_vec());
    bodies.push(b"\xef\xbb\xbf[]".to_vec());
    bodies.push(Vec::new());
    bodies
}

#[tokio::test]
async fn hostile_bodies_never_get_a_server_error_and_the_webhook_keeps_working() {
    let mut hook = Hook::start(None).await;
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x5eed_4a11);
    let valid: Vec<Vec<u8>> = [
        json!([api_updated(&service("contoso-prod"))]),
        json!([
            api_updated(&service("contoso-staging")),
            api_updated(&service("nobody"))
        ]),
        cloud_event(
            &service("contoso-prod"),
            "ProductUpdated",
            "2024-05-01T10:00:00Z",
        ),
        json!([cloud_event(
            &service("contoso-staging"),
            "UserCreated",
            "2024-05-01T10:00:00Z"
        )]),
        validation_event("512d38b6-c7b8-40c8-89fe-f46f9e9622b6"),
    ]
    .iter()
    .map(|value| value.to_string().into_bytes())
    .collect();
    let bodies = hostile_bodies(&mut rng, &valid);
    assert!(bodies.len() > 3_000, "{} bodies", bodies.len());
    let mut answered = std::collections::BTreeMap::new();
    for (index, body) in bodies.into_iter().enumerate() {
        let validation = rng.random_bool(0.1);
        let response = hook
            .http
            .post(hook.url())
            .header("x-rpod-webhook-secret", SECRET.as_bytes())
            .header(
                "aeg-event-type",
                if validation {
                    "SubscriptionValidation"
                } else {
                    "Notification"
                },
            )
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|err| {
                panic!("body {index} ({:?}): {err}", String::from_utf8_lossy(&body))
            });
        let status = response.status();
        *answered.entry(status.as_u16()).or_insert(0_usize) += 1;
        assert!(
            status.as_u16() < 500,
            "body {index} got {status}: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    // The bodies reach the parser and beyond: some are refused, some still carry changes.
    assert!(
        answered.get(&200).is_some_and(|&count| count > 100)
            && answered.get(&400).is_some_and(|&count| count > 1_000)
            && !answered.contains_key(&401),
        "{answered:?}"
    );
    assert!(!hook.notices().is_empty());

    let (status, _) = hook
        .post_json(&json!([api_updated(&service("contoso-staging"))]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        hook.notices(),
        vec![notice("staging", Some("2021-07-12T23:13:44.904832300Z"))]
    );
    assert_eq!(
        hook.metric("rpod_webhook_requests_total", &[("code", "500")]),
        0.0
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
