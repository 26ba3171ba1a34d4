//! The Event Grid webhook (docs/design.md, "HTTP surface"; docs/change-detection.md): `POST /hooks/eventgrid` takes deliveries of API Management events and
//! reports each configuration change to the targets that protect the service; `OPTIONS /hooks/eventgrid` answers
//! the `CloudEvents` abuse-protection handshake.
//!
//! What lives here: the shared-secret check, the body limit, telling the two envelopes apart (Event Grid schema:
//! a JSON array of events; `CloudEvents` 1.0: one object with `specversion`, or an array of them), the subscription
//! validation handshake, and mapping an event's service to targets. What does not: debouncing, follow-ups and
//! `rpod_change_events_total`, which belong to the scheduler behind the [`ChangeSink`].
//!
//! Event Grid retries every non-2xx answer, so only what a retry cannot fix is refused with a 4xx:
//!
//! | Request | Answer |
//! |---|---|
//! | no secret, or a wrong one (`?code=` or `x-rpod-webhook-secret`) | 401, before anything else is looked at |
//! | body (or its `Content-Length`) beyond `max_body_bytes` | 413 |
//! | not JSON, not an event or a list of events, more than [`MAX_EVENTS`] events | 400 |
//! | `SubscriptionValidation` without a validation code | 400 |
//! | a validation event (sent alone; nothing beside it is read) | 200 `{"validationResponse":"<code>"}` |
//! | any other delivery, an empty array included | 200 `{"received":N,"changes":N,"ignored":N}` |
//! | `OPTIONS` with `WebHook-Request-Origin` | 200 with `WebHook-Allowed-Origin` and `WebHook-Allowed-Rate: *` |
//! | `OPTIONS` without it | 400 |
//! | any other method | 405 (axum's) |
//!
//! Every answer is counted in `rpod_webhook_requests_total`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router, middleware};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::changes::{ChangeNotice, ChangeSink, ChangeSource, parse_time};
use crate::config::{Secret, TargetConfig, WebhookConfig};
use crate::metrics::Metrics;

/// Where Event Grid delivers.
pub const PATH: &str = "/hooks/eventgrid";
/// The header that may carry the shared secret instead of `?code=`.
pub const SECRET_HEADER: &str = "x-rpod-webhook-secret";
/// The most events one delivery may carry. Event Grid batches at most 5,000 events, so more does not come from
/// it; the body limit already bounds the work, this keeps one request from reporting an unbounded number of
/// notices.
pub const MAX_EVENTS: usize = 5_000;

const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
const APIM_PREFIX: &str = "Microsoft.ApiManagement.";
/// `Microsoft.ApiManagement.*` events about the running gateway, not its configuration.
const NOT_CHANGES: [&str; 4] = [
    "GatewayTokenNearExpiry",
    "GatewayTokenExpired",
    "CircuitBreaker.Opened",
    "CircuitBreaker.Closed",
];

/// The Event Grid webhook: the current secret and service map, and where changes go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhook {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced as a whole on reload, so a request sees one consistent configuration.
    routing: RwLock<Arc<Routing>>,
    sink: Arc<dyn ChangeSink>,
    metrics: Metrics,
}

/// What a reload can change.
#[derive(Debug)]
struct Routing {
    secret: Secret,
    max_body_bytes: usize,
    /// Lower-case service path (see [`service_key`]) -> the targets that take its events, in file order.
    services: HashMap<String, Vec<String>>,
}

impl Routing {
    fn load(config: &WebhookConfig, targets: &[TargetConfig]) -> Result<Self, String> {
        let secret = config.secret.load()?;
        let mut services: HashMap<String, Vec<String>> = HashMap::new();
        for target in targets {
            let Some(path) = target.kind.event_grid_resource() else {
                continue;
            };
            if !target
                .policy
                .on_change
                .as_ref()
                .is_some_and(|on_change| on_change.event_grid)
            {
                continue;
            }
            let key = service_key(&path).unwrap_or_else(|| path.to_lowercase());
            services.entry(key).or_default().push(target.name.clone());
        }
        Ok(Self {
            secret,
            max_body_bytes: config.max_body_bytes,
            services,
        })
    }
}

impl Webhook {
    /// Loads the secret and maps each service to the targets whose `on_change` takes Event Grid events.
    ///
    /// # Errors
    /// The secret cannot be read (the message names the file or variable, never the value).
    pub fn new(
        config: &WebhookConfig,
        targets: &[TargetConfig],
        sink: Arc<dyn ChangeSink>,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let routing = Routing::load(config, targets)?;
        Ok(Self {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(routing)),
                sink,
                metrics,
            }),
        })
    }

    /// Takes a reloaded configuration: re-reads the secret and rebuilds the service map. Requests already being
    /// answered finish with the previous ones. `listen` is not applied here: the listener belongs to the caller.
    ///
    /// # Errors
    /// The secret cannot be read; the previous secret and map stay in force.
    pub fn update(&self, config: &WebhookConfig, targets: &[TargetConfig]) -> Result<(), String> {
        let routing = Arc::new(Routing::load(config, targets)?);
        *self
            .inner
            .routing
            .write()
            .unwrap_or_else(PoisonError::into_inner) = routing;
        Ok(())
    }

    /// `POST` and `OPTIONS` on [`PATH`], to merge into the main router or to serve on a listener of its own.
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, post(deliver).options(handshake))
            // The handler reads the body itself with `max_body_bytes` as its limit; axum's default limit
            // (2 MB) must not answer first, with a different number.
            .layer(DefaultBodyLimit::disable())
            .layer(middleware::map_response_with_state(self.clone(), count))
            .with_state(self.clone())
    }

    fn routing(&self) -> Arc<Routing> {
        self.inner
            .routing
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reports the changes among `events`; returns the response summary.
    fn dispatch(&self, routing: &Routing, events: &[Event<'_>]) -> Value {
        let mut changes = 0_usize;
        let mut ignored = 0_usize;
        for event in events {
            if classify(event.kind) != EventClass::Change {
                debug!(event_type = ?event.kind, "Event Grid event ignored: not a configuration change.");
                self.inner.metrics.webhook_event_ignored("not_a_change");
                ignored += 1;
                continue;
            }
            let key = event
                .service
                .and_then(service_key)
                .or_else(|| event.resource_uri.and_then(service_key));
            let Some(targets) = key.as_ref().and_then(|key| routing.services.get(key)) else {
                debug!(
                    service = ?key.as_deref().unwrap_or("(none)"),
                    event_type = ?event.kind,
                    "Event Grid event ignored: no target with detect = \"event_grid\" protects its service."
                );
                self.inner.metrics.webhook_event_ignored("unknown_service");
                ignored += 1;
                continue;
            };
            let changed_at = event.time.and_then(parse_time);
            for target in targets {
                debug!(target = %target, event_type = ?event.kind, "Event Grid reported a change.");
                self.inner.sink.changed(ChangeNotice {
                    target: target.clone(),
                    source: ChangeSource::EventGrid,
                    changed_at,
                });
                changes += 1;
            }
        }
        debug!(
            received = events.len(),
            changes, ignored, "Event Grid delivery processed."
        );
        json!({ "received": events.len(), "changes": changes, "ignored": ignored })
    }
}

/// Counts every answer of the router, axum's own (405) included.
async fn count(State(hook): State<Webhook>, response: Response) -> Response {
    hook.inner
        .metrics
        .webhook_request(response.status().as_u16());
    response
}

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unauthorized() -> Response {
    debug!("Webhook request refused: missing or wrong secret.");
    reject(StatusCode::UNAUTHORIZED, "missing or wrong webhook secret")
}

/// Whether the request carries the secret, as `?code=` (URL-decoded) or in [`SECRET_HEADER`]. Compared in
/// constant time through SHA-256 digests, so neither the content nor the length of the secret leaks.
fn authorized(secret: &Secret, uri: &Uri, headers: &HeaderMap) -> bool {
    let expected = Sha256::digest(secret.expose().as_bytes());
    let matches =
        |candidate: &[u8]| verify_slices_are_equal(&Sha256::digest(candidate), &expected).is_ok();
    let mut ok = false;
    for value in headers.get_all(SECRET_HEADER) {
        ok |= matches(value.as_bytes());
    }
    if let Some(query) = uri.query() {
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name == "code" {
                ok |= matches(value.as_bytes());
            }
        }
    }
    ok
}

/// Reads the body, never holding more than `limit` bytes (plus the chunk that crosses it).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    let too_large = || {
        warn!(limit, "Event Grid delivery refused: body too large.");
        reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    };
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            debug!(error = %err, "Event Grid delivery aborted while its body was read.");
            reject(StatusCode::BAD_REQUEST, "request body could not be read")
        })?;
        if chunk.len() > limit.saturating_sub(bytes.len()) {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn bad_request(message: String) -> Response {
    warn!(error = %message, "Event Grid delivery refused.");
    reject(StatusCode::BAD_REQUEST, message)
}

async fn deliver(
    State(hook): State<Webhook>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let routing = hook.routing();
    if !authorized(&routing.secret, &uri, &headers) {
        return unauthorized();
    }
    let bytes = match read_body(&headers, body, routing.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(err) => {
            return bad_request(format!(
                "body is not valid JSON (line {}, column {})",
                err.line(),
                err.column()
            ));
        }
    };
    let events = match parse_delivery(&value) {
        Ok(events) => events,
        Err(message) => return bad_request(message),
    };
    let validation_header = headers.get("aeg-event-type").is_some_and(|value| {
        value
            .as_bytes()
            .eq_ignore_ascii_case(b"SubscriptionValidation")
    });
    let validation = events
        .iter()
        .find(|event| classify(event.kind) == EventClass::Validation);
    match validation {
        Some(event) => match event.validation_code {
            Some(code) => {
                info!(topic = ?event.service.unwrap_or(""), "Event Grid subscription validated.");
                Json(json!({ "validationResponse": code })).into_response()
            }
            None => bad_request(format!(
                "{VALIDATION_EVENT} without a string data.validationCode"
            )),
        },
        None if validation_header => bad_request(format!(
            "aeg-event-type is SubscriptionValidation but the body has no {VALIDATION_EVENT}"
        )),
        None => Json(hook.dispatch(&routing, &events)).into_response(),
    }
}

async fn handshake(State(hook): State<Webhook>, uri: Uri, headers: HeaderMap) -> Response {
    let routing = hook.routing();
    if !authorized(&routing.secret, &uri, &headers) {
        return unauthorized();
    }
    let Some(origin) = headers.get("webhook-request-origin") else {
        return reject(
            StatusCode::BAD_REQUEST,
            "OPTIONS is the CloudEvents webhook handshake: the WebHook-Request-Origin header is missing",
        );
    };
    info!(origin = ?origin, "CloudEvents webhook handshake answered.");
    (
        [
            (
                HeaderName::from_static("webhook-allowed-origin"),
                origin.clone(),
            ),
            (
                HeaderName::from_static("webhook-allowed-rate"),
                HeaderValue::from_static("*"),
            ),
        ],
        Json(json!({})),
    )
        .into_response()
}

/// One delivered event, in either envelope, as far as rpod reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event<'a> {
    /// `eventType` (Event Grid schema) or `type` (`CloudEvents`).
    kind: &'a str,
    /// `topic` or `source`: the service, for API Management events.
    service: Option<&'a str>,
    /// `data.resourceUri`: the entity under the service.
    resource_uri: Option<&'a str>,
    /// `eventTime` or `time`.
    time: Option<&'a str>,
    /// `data.validationCode` of a validation event.
    validation_code: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// Reads one event by its shape: an object with `specversion` is a `CloudEvent`, one with `eventType` an Event
    /// Grid event. Optional fields of the wrong type count as absent.
    fn parse(value: &'a Value) -> Result<Self, &'static str> {
        let Some(object) = value.as_object() else {
            return Err("is not a JSON object");
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str);
        let data = |key: &str| {
            object
                .get("data")
                .and_then(|data| data.get(key))
                .and_then(Value::as_str)
        };
        let (kind, service, time) = if object.contains_key("specversion") {
            let Some(kind) = text("type") else {
                return Err("is a CloudEvent without a string \"type\"");
            };
            (kind, text("source"), text("time"))
        } else if object.contains_key("eventType") {
            let Some(kind) = text("eventType") else {
                return Err("has an \"eventType\" that is not a string");
            };
            (kind, text("topic"), text("eventTime"))
        } else {
            return Err(
                "is neither an Event Grid event (eventType) nor a CloudEvent (specversion)",
            );
        };
        Ok(Self {
            kind,
            service,
            resource_uri: data("resourceUri"),
            time,
            validation_code: data("validationCode"),
        })
    }
}

/// The events of a delivery: an array of events (Event Grid schema, or a `CloudEvents` batch), or one event
/// object (a `CloudEvent` in structured mode; a lone Event Grid event is taken too). Any element that is not an
/// event refuses the whole delivery: Event Grid never sends one, and half-reading a batch would hide the fault.
fn parse_delivery(value: &Value) -> Result<Vec<Event<'_>>, String> {
    match value {
        Value::Array(items) => {
            if items.len() > MAX_EVENTS {
                return Err(format!(
                    "{} events in one delivery; at most {MAX_EVENTS} are taken",
                    items.len()
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    Event::parse(item).map_err(|problem| format!("element {index} {problem}"))
                })
                .collect()
        }
        Value::Object(_) => Event::parse(value)
            .map(|event| vec![event])
            .map_err(|problem| format!("the body {problem}")),
        _ => Err(
            "the body is neither an array of events nor an event object (Event Grid schema or CloudEvents 1.0)"
                .to_owned(),
        ),
    }
}

/// What an event means to rpod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventClass {
    /// Event Grid's subscription validation handshake.
    Validation,
    /// An API Management configuration change: worth a backup.
    Change,
    /// Anything else: gateway token expiry, circuit breakers, other services' events.
    NotAChange,
}

/// Classifies an event type. Every `Microsoft.ApiManagement.*` event is a change except the few about the running
/// gateway: types added to the platform later count as changes, because a backup too many costs less than a
/// change missed. Compared without regard to ASCII case.
fn classify(event_type: &str) -> EventClass {
    if event_type.eq_ignore_ascii_case(VALIDATION_EVENT) {
        return EventClass::Validation;
    }
    let name = event_type
        .get(..APIM_PREFIX.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(APIM_PREFIX))
        .and_then(|_| event_type.get(APIM_PREFIX.len()..));
    match name {
        Some(name)
            if !name.is_empty()
                && !NOT_CHANGES
                    .iter()
                    .any(|other| name.eq_ignore_ascii_case(other)) =>
        {
            EventClass::Change
        }
        _ => EventClass::NotAChange,
    }
}

/// The service an ARM path names, as a lower-case key:
/// `/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.apimanagement/service/{name}`. The path may be
/// the service itself or anything under it (`data.resourceUri`); ARM paths are case-insensitive, and empty
/// segments (a trailing or doubled slash) are skipped. `None` when the path does not start with an API
/// Management service.
fn service_key(path: &str) -> Option<String> {
    const SHAPE: [Option<&str>; 8] = [
        Some("subscriptions"),
        None,
        Some("resourcegroups"),
        None,
        Some("providers"),
        Some("microsoft.apimanagement"),
        Some("service"),
        None,
    ];
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    let mut key = String::with_capacity(path.len());
    for expected in SHAPE {
        let segment = segments.next()?;
        if expected.is_some_and(|expected| !segment.eq_ignore_ascii_case(expected)) {
            return None;
        }
        key.push('/');
        key.push_str(&segment.to_lowercase());
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "/subscriptions/sub-1/resourceGroups/RG-Apim/providers/Microsoft.ApiManagement/service/Contoso";
    const KEY: &str = "/subscriptions/sub-1/resourcegroups/rg-apim/providers/microsoft.apimanagement/service/contoso";

    #[test]
    fn service_keys_ignore_case_trailing_slashes_and_what_lies_under_the_service() {
        assert_eq!(service_key(SERVICE).as_deref(), Some(KEY));
        assert_eq!(service_key(&SERVICE.to_uppercase()).as_deref(), Some(KEY));
        assert_eq!(service_key(&format!("{SERVICE}/")).as_deref(), Some(KEY));
        assert_eq!(
            service_key(&format!("{SERVICE}/apis/myapi;Rev=1")).as_deref(),
            Some(KEY)
        );
        assert_eq!(
            service_key(&SERVICE.replace("/subscriptions", "subscriptions")).as_deref(),
            Some(KEY)
        );
    }

    #[test]
    fn paths_that_name_no_api_management_service_have_no_key() {
        for path in [
            "",
            "/",
            "/subscriptions/sub-1",
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.ApiManagement/service",
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x",
            "/subscriptions/sub-1/resourceGroups/rg/providers/Microsoft.ApiManagement/gateways/x",
            "/tenants/t/resourceGroups/rg/providers/Microsoft.ApiManagement/service/x",
            "https://example.com/",
            "ü/ß/€",
        ] {
            assert_eq!(service_key(path), None, "{path:?}");
        }
    }

    #[test]
    fn api_management_events_are_changes_except_gateway_runtime_ones() {
        for change in [
            "Microsoft.ApiManagement.APICreated",
            "Microsoft.ApiManagement.APIUpdated",
            "Microsoft.ApiManagement.APIDeleted",
            "Microsoft.ApiManagement.ProductUpdated",
            "Microsoft.ApiManagement.SubscriptionCreated",
            "Microsoft.ApiManagement.UserDeleted",
            "Microsoft.ApiManagement.GatewayAPIAdded",
            "Microsoft.ApiManagement.APIReleaseCreated",
            "Microsoft.ApiManagement.SomethingNew",
            "microsoft.apimanagement.apiupdated",
        ] {
            assert_eq!(classify(change), EventClass::Change, "{change}");
        }
        for other in [
            "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "Microsoft.ApiManagement.GatewayTokenExpired",
            "Microsoft.ApiManagement.CircuitBreaker.Opened",
            "Microsoft.ApiManagement.circuitbreaker.closed",
            "Microsoft.ApiManagement.",
            "Microsoft.ApiManagement",
            "Microsoft.Storage.BlobCreated",
            "Microsoft.EventGrid.SubscriptionDeletedEvent",
            "",
            "Microsoft.ApiManagemenü",
        ] {
            assert_eq!(classify(other), EventClass::NotAChange, "{other}");
        }
        assert_eq!(classify(VALIDATION_EVENT), EventClass::Validation);
    }

    #[test]
    fn envelopes_are_told_apart_by_shape() {
        let event_grid = json!([{
            "id": "1",
            "topic": SERVICE,
            "subject": "/apis/myapi;Rev=1",
            "data": { "resourceUri": format!("{SERVICE}/apis/myapi;Rev=1") },
            "eventType": "Microsoft.ApiManagement.APIUpdated",
            "dataVersion": "1",
            "metadataVersion": "1",
            "eventTime": "2021-07-12T23:13:44.9048323Z"
        }]);
        let events = parse_delivery(&event_grid).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "Microsoft.ApiManagement.APIUpdated");
        assert_eq!(events[0].service, Some(SERVICE));
        assert_eq!(events[0].time, Some("2021-07-12T23:13:44.9048323Z"));

        let cloud_event = json!({
            "specversion": "1.0",
            "type": "Microsoft.ApiManagement.ProductCreated",
            "source": SERVICE,
            "time": "2024-01-02T03:04:05Z",
            "id": "2",
            "data": { "resourceUri": format!("{SERVICE}/products/p") }
        });
        let events = parse_delivery(&cloud_event).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "Microsoft.ApiManagement.ProductCreated");
        assert_eq!(events[0].time, Some("2024-01-02T03:04:05Z"));
        let batch = Value::Array(vec![cloud_event.clone(), cloud_event]);
        assert_eq!(parse_delivery(&batch).unwrap().len(), 2);

        assert_eq!(parse_delivery(&json!([])).unwrap(), Vec::new());
        let validation = json!([{
            "id": "3",
            "topic": "/subscriptions/sub-1",
            "subject": "",
            "data": { "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6" },
            "eventType": VALIDATION_EVENT,
            "eventTime": "2024-01-02T03:04:05Z"
        }]);
        assert_eq!(
            parse_delivery(&validation).unwrap()[0].validation_code,
            Some("512d38b6-c7b8-40c8-89fe-f46f9e9622b6")
        );
    }

    #[test]
    fn what_is_not_an_event_is_refused_and_odd_optional_fields_count_as_absent() {
        for body in [
            json!({ "hello": "world" }),
            json!("text"),
            json!(42),
            json!(null),
            json!([1]),
            json!([{ "eventType": 7 }]),
            json!({ "specversion": "1.0", "source": SERVICE }),
            json!([{ "eventType": "Microsoft.ApiManagement.APIUpdated" }, {}]),
        ] {
            assert!(parse_delivery(&body).is_err(), "{body}");
        }
        let odd = json!([{
            "eventType": "Microsoft.ApiManagement.APIUpdated",
            "topic": 1,
            "data": "text",
            "eventTime": false
        }]);
        let events = parse_delivery(&odd).unwrap();
        assert_eq!(
            events[0],
            Event {
                kind: "Microsoft.ApiManagement.APIUpdated",
                service: None,
                resource_uri: None,
                time: None,
                validation_code: None,
            }
        );
        let too_many = Value::Array(vec![json!({ "eventType": "x" }); MAX_EVENTS + 1]);
        assert!(parse_delivery(&too_many).is_err());
        let most = Value::Array(vec![json!({ "eventType": "x" }); MAX_EVENTS]);
        assert_eq!(parse_delivery(&most).unwrap().len(), MAX_EVENTS);
    }

    #[test]
    fn the_secret_is_accepted_from_the_query_or_the_header() {
        let secret = Secret::new("s3cret +&=".to_owned());
        let uri = |text: &str| text.parse::<Uri>().unwrap();
        let none = HeaderMap::new();
        assert!(authorized(
            &secret,
            &uri("/hooks/eventgrid?code=s3cret%20%2B%26%3D"),
            &none
        ));
        assert!(authorized(
            &secret,
            &uri("/hooks/eventgrid?x=1&code=s3cret+%2B%26%3D"),
            &none
        ));
        assert!(!authorized(
            &secret,
            &uri("/hooks/eventgrid?code=s3cret"),
            &none
        ));
        assert!(!authorized(&secret, &uri("/hooks/eventgrid"), &none));
        assert!(!authorized(
            &secret,
            &uri("/hooks/eventgrid?CODE=s3cret%20%2B%26%3D"),
            &none
        ));
        let mut headers = HeaderMap::new();
        headers.insert(SECRET_HEADER, HeaderValue::from_static("s3cret +&="));
        assert!(authorized(&secret, &uri("/hooks/eventgrid"), &headers));
        headers.insert(SECRET_HEADER, HeaderValue::from_static("s3cret"));
        assert!(!authorized(&secret, &uri("/hooks/eventgrid"), &headers));
    }
}
