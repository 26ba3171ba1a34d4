//! Shared helpers: an emulator with a token in hand, ARM URLs, and polling an operation to its end.

use std::time::Duration;

use azure_emulator::{Emulator, EmulatorConfig, ServiceSpec};
use reqwest::Response;
use serde_json::Value;

pub const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
pub const RG: &str = "rg-apim";
pub const API: &str = "2024-05-01";

/// An emulator, an HTTP client, and a token the emulator accepts.
pub struct Arm {
    pub emulator: Emulator,
    pub http: reqwest::Client,
    pub token: String,
}

impl Arm {
    pub async fn start(config: EmulatorConfig) -> Self {
        let emulator = Emulator::start(config).await.expect("emulator starts");
        let token = emulator.issue_token();
        Self {
            emulator,
            http: reqwest::Client::new(),
            token,
        }
    }

    /// Fast settings (200 ms operations, Retry-After 1) and one Developer service named `name`.
    pub async fn with_service(name: &str) -> Self {
        let arm = Self::start(EmulatorConfig::fast()).await;
        arm.emulator.add_service(ServiceSpec::new(SUB, RG, name));
        arm
    }

    /// `{base}/subscriptions/.../service/{name}`.
    pub fn service_url(&self, name: &str) -> String {
        format!(
            "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{name}",
            self.emulator.base_url()
        )
    }

    pub async fn get(&self, url: &str) -> Response {
        self.http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET answered")
    }

    pub async fn post(&self, url: &str, body: &Value) -> Response {
        self.http
            .post(url)
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .expect("POST answered")
    }

    /// `POST .../service/{name}/{action}?api-version={api}`.
    pub async fn start_operation(
        &self,
        name: &str,
        action: &str,
        api: &str,
        body: &Value,
    ) -> Response {
        let url = format!("{}/{action}?api-version={api}", self.service_url(name));
        self.post(&url, body).await
    }

    /// Follows the `Location` of `accepted` (the newest one each time) until the answer is not 202; returns it
    /// and the number of 202 polls.
    pub async fn poll_to_end(&self, accepted: &Response) -> (Response, u32) {
        self.poll_location(header(accepted, "location").expect("a Location to poll"))
            .await
    }

    /// Polls `location` like [`Self::poll_to_end`].
    pub async fn poll_location(&self, mut location: String) -> (Response, u32) {
        let mut polls = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let response = self.get(&location).await;
            if response.status() != 202 {
                return (response, polls);
            }
            polls += 1;
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operation did not end within 10 s"
            );
            location = header(&response, "location").expect("202 polls carry Location");
            // The protocol's wait between polls, shortened: Retry-After is whole seconds.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// POSTs `pairs` as an `application/x-www-form-urlencoded` body, without a token.
pub async fn post_form(http: &reqwest::Client, url: &str, pairs: &[(&str, &str)]) -> Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    http.post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST answered")
}

/// A header's value as text.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// The body as JSON.
pub async fn json(response: Response) -> Value {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A backup body with an access key (valid for every api-version).
pub fn key_body(account: &str, key: &str, container: &str, name: &str) -> Value {
    serde_json::json!({"storageAccount": account, "accessKey": key, "containerName": container, "backupName": name})
}
