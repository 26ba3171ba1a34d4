//! How rpod's Azure SDK clients send requests: the client options every SDK client gets (retries that give up
//! within seconds instead of a minute), the [`LoopbackOnly`] transport tests hand to them, and the one place that
//! turns an SDK error into text an operator may read (URL query strings, which can carry SAS signatures, removed).
//!
//! What does not live here: the ARM client, which has its own reqwest client and retry loop (`arm.rs`).

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::error::ErrorKind;
use azure_core::http::{
    AsyncRawResponse, ClientOptions, ExponentialRetryOptions, HttpClient, HttpClientOptions,
    Request, RetryOptions, Transport, Url, new_http_client,
};
use azure_core::time::Duration;

/// The options rpod gives every SDK client and credential: `transport` when set (tests), Entra ID at
/// `authority_host`, and a short retry budget.
///
/// The SDK's default retries an unreachable host or an untrusted certificate for a minute and more; rpod's own
/// loops (the RPO watchdog, reconcile, prune) try again later anyway, so a few quick retries are enough here.
#[must_use]
pub fn client_options(transport: Option<Transport>, authority_host: Option<&str>) -> ClientOptions {
    let cloud = authority_host.map(|host| {
        let mut custom = CustomConfiguration::default();
        host.trim_end_matches('/')
            .clone_into(&mut custom.authority_host);
        Arc::new(CloudConfiguration::from(custom))
    });
    ClientOptions {
        transport,
        cloud,
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: Duration::milliseconds(500),
            max_retries: 3,
            max_total_elapsed: Duration::seconds(20),
            max_delay: Duration::seconds(5),
        }),
        ..ClientOptions::default()
    }
}

/// An SDK transport for tests: it first rewrites URLs by prefix (so that `https://login.test/...` or the
/// managed-identity endpoint `http://169.254.169.254/...` reach a fake on `http://127.0.0.1:PORT/...`), then
/// refuses every request whose host is not a loopback address (127.0.0.0/8, `::1`, `localhost`) before any
/// socket is opened. Nothing rpod's SDK clients send can leave the machine through it.
///
/// Production passes no transport at all; this type exists for tests and is public so that they can use it.
#[derive(Debug)]
pub struct LoopbackOnly {
    inner: Arc<dyn HttpClient>,
    rewrites: Vec<(String, String)>,
}

impl LoopbackOnly {
    /// A guard in front of `inner`; `rewrites` are `(from_prefix, to_prefix)` pairs, the first match wins.
    #[must_use]
    pub fn new(inner: Arc<dyn HttpClient>, rewrites: Vec<(String, String)>) -> Self {
        Self { inner, rewrites }
    }

    /// A transport that sends through the SDK's own reqwest client behind the guard.
    #[must_use]
    pub fn transport(rewrites: Vec<(String, String)>) -> Transport {
        let inner = new_http_client(Some(HttpClientOptions {
            // Blob downloads must see the bytes as stored, as the storage SDK's own default client does.
            automatic_decompression: false,
        }));
        Transport::new(Arc::new(Self::new(inner, rewrites)))
    }

    fn rewrite(&self, url: &Url) -> azure_core::Result<Option<Url>> {
        let text = url.as_str();
        for (from, to) in &self.rewrites {
            if let Some(rest) = text.strip_prefix(from.as_str()) {
                let rewritten = format!("{to}{rest}");
                return Url::parse(&rewritten).map(Some).map_err(|err| {
                    azure_core::Error::with_message(
                        ErrorKind::Other,
                        format!(
                            "LoopbackOnly: rewriting {} gave an invalid URL: {err}",
                            strip_query(text)
                        ),
                    )
                });
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl HttpClient for LoopbackOnly {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        match self.rewrite(request.url())? {
            Some(url) => {
                let mut rewritten = request.clone();
                *rewritten.url_mut() = url;
                self.send(&rewritten).await
            }
            None => self.send(request).await,
        }
    }
}

impl LoopbackOnly {
    async fn send(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        if !is_loopback(request.url().as_str()) {
            // ErrorKind::Other: the SDK's retry policy gives up at once instead of trying again.
            return Err(azure_core::Error::with_message(
                ErrorKind::Other,
                format!(
                    "LoopbackOnly refused a request to {}: only loopback addresses are allowed",
                    strip_query(request.url().as_str())
                ),
            ));
        }
        self.inner.execute_request(request).await
    }
}

/// Whether `url`'s host is 127.0.0.0/8, `::1` or `localhost`.
#[must_use]
pub fn is_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An SDK error as one line for operators: its message and the messages of its sources (the SDK often says only
/// "failed to execute request" and keeps the reason one level down), with query strings removed from any URL
/// and any `sig=` value blanked, so that SAS tokens never reach a log or an error.
#[must_use]
pub fn describe_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(error) = current {
        let text = error.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    redact(&parts.join(": "))
}

/// Removes the query string of every `http://` or `https://` URL in `text`, and blanks the value of any
/// remaining `sig=` parameter.
#[must_use]
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url.find(url_delimiter).unwrap_or(url.len());
        // Punctuation after a URL in prose belongs to the prose.
        let end = url[..end].trim_end_matches([':', ',', '.', ';']).len();
        out.push_str(&strip_query(&url[..end]));
        rest = &url[end..];
    }
    out.push_str(rest);
    blank_signatures(&out)
}

fn find_url(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn url_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | '(' | '`')
}

/// The URL without its query string; a fragment stays.
fn strip_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => match query.split_once('#') {
            Some((_, fragment)) => format!("{base}#{fragment}"),
            None => base.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn blank_signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("sig=") {
        let value_start = at + "sig=".len();
        out.push_str(&rest[..value_start]);
        out.push_str("REDACTED");
        let value = &rest[value_start..];
        let end = value
            .find(|c: char| c == '&' || url_delimiter(c))
            .unwrap_or(value.len());
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_signatures_are_removed() {
        let text = "failed GET http://127.0.0.1:1/a/b?sv=2025&sig=abc%2Bdef&sp=r (for url \
                    \"https://x.blob.core.windows.net/c?comp=list&sig=zzz\"); sv=1&sig=qqq&se=2";
        let redacted = redact(text);
        assert!(!redacted.contains("abc"), "{redacted}");
        assert!(!redacted.contains("zzz"), "{redacted}");
        assert!(!redacted.contains("qqq"), "{redacted}");
        assert!(redacted.contains("http://127.0.0.1:1/a/b "), "{redacted}");
        assert!(
            redacted.contains("\"https://x.blob.core.windows.net/c\""),
            "{redacted}"
        );
        assert!(redacted.ends_with("sig=REDACTED&se=2"), "{redacted}");
    }

    #[test]
    fn fragments_and_trailing_punctuation_are_kept() {
        assert_eq!(
            redact("see https://aka.ms/x#cli: then http://h/p?sig=s#f, and https://h/q?a=b."),
            "see https://aka.ms/x#cli: then http://h/p#f, and https://h/q."
        );
    }

    #[test]
    fn text_without_urls_is_kept() {
        assert_eq!(redact("plain text"), "plain text");
        assert_eq!(redact(""), "");
    }

    #[tokio::test]
    async fn rewrites_apply_before_the_loopback_check() {
        let guard = LoopbackOnly::new(
            new_http_client(None),
            vec![(
                "https://login.test/".to_owned(),
                "http://127.0.0.1:9/".to_owned(),
            )],
        );
        let url = Url::parse("https://login.test/t/oauth2/v2.0/token?x=1").unwrap();
        assert_eq!(
            guard.rewrite(&url).unwrap().unwrap().as_str(),
            "http://127.0.0.1:9/t/oauth2/v2.0/token?x=1"
        );
        let far = Url::parse("http://169.254.169.254/metadata?sig=secret").unwrap();
        assert!(guard.rewrite(&far).unwrap().is_none());
        let error = guard
            .execute_request(&Request::new(far, azure_core::http::Method::Get))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
