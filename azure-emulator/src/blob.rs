//! A minimal Azure Blob Storage client signed with Shared Key, written independently of rpod's own storage code
//! so that tests can check storage directly, and so that the emulator can write backup blobs.
//!
//! It covers exactly what the tests need: create a container, put, list (following `NextMarker`), stat and delete
//! blobs, and set or count the account's Blob service CORS rules. It speaks plain REST over `reqwest`; the XML it
//! reads is read with a few string searches because its shape is fixed and tiny. It is not a general storage
//! client: no retries, no SAS, no tokens.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode, Url};
use sha2::Sha256;

/// The storage REST version sent as `x-ms-version`; Azurite 3.37.0 accepts it.
const STORAGE_VERSION: &str = "2025-11-05";

/// One blob as listed by [`BlobStore::list_blobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Full blob name inside its container.
    pub name: String,
    /// Size in bytes (`Content-Length`).
    pub size: u64,
    /// When the blob was created (`Creation-Time`).
    pub created: DateTime<Utc>,
    /// When the blob was last written (`Last-Modified`).
    pub last_modified: DateTime<Utc>,
}

/// One CORS rule of a storage account's Blob service, as "Set Blob Service Properties" takes it. The fields are
/// sent as written (comma-separated lists, XML-escaped on the way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsRule {
    /// Origins allowed, comma-separated, or `*`.
    pub allowed_origins: String,
    /// HTTP methods allowed, comma-separated, e.g. `GET,HEAD,POST`.
    pub allowed_methods: String,
    /// Request headers allowed, comma-separated, or `*`.
    pub allowed_headers: String,
    /// Response headers exposed, comma-separated, or `*`.
    pub exposed_headers: String,
    /// How long a browser may cache the preflight answer.
    pub max_age_in_seconds: u32,
}

impl CorsRule {
    /// A rule for `allowed_origins` with the other fields as in [`CorsRule::default`].
    #[must_use]
    pub fn new(allowed_origins: impl Into<String>) -> Self {
        Self {
            allowed_origins: allowed_origins.into(),
            ..Self::default()
        }
    }

    /// The `<CorsRule>` element of this rule.
    fn xml(&self) -> String {
        format!(
            "<CorsRule><AllowedOrigins>{}</AllowedOrigins><AllowedMethods>{}</AllowedMethods>\
             <AllowedHeaders>{}</AllowedHeaders><ExposedHeaders>{}</ExposedHeaders>\
             <MaxAgeInSeconds>{}</MaxAgeInSeconds></CorsRule>",
            escape(&self.allowed_origins),
            escape(&self.allowed_methods),
            escape(&self.allowed_headers),
            escape(&self.exposed_headers),
            self.max_age_in_seconds
        )
    }
}

impl Default for CorsRule {
    /// Any origin, `GET,HEAD,POST`, any header allowed and exposed, 200 s of preflight caching.
    fn default() -> Self {
        Self {
            allowed_origins: "*".to_owned(),
            allowed_methods: "GET,HEAD,POST".to_owned(),
            allowed_headers: "*".to_owned(),
            exposed_headers: "*".to_owned(),
            max_age_in_seconds: 200,
        }
    }
}

/// The `<StorageServiceProperties>` document that sets exactly these CORS rules (an empty `<Cors/>` for none) and
/// leaves every other property as it is.
fn cors_properties(rules: &[CorsRule]) -> String {
    let cors = if rules.is_empty() {
        "<Cors/>".to_owned()
    } else {
        let rules: String = rules.iter().map(CorsRule::xml).collect();
        format!("<Cors>{rules}</Cors>")
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties>{cors}</StorageServiceProperties>"
    )
}

/// What went wrong talking to blob storage.
#[derive(Debug)]
pub enum BlobError {
    /// The account key is not valid base64.
    BadKey,
    /// The blob endpoint is not a valid URL.
    BadEndpoint(String),
    /// The request never got an answer (connection refused, reset, ...).
    Transport(reqwest::Error),
    /// Storage answered with an unexpected status.
    Status {
        /// HTTP status.
        status: u16,
        /// The `x-ms-error-code` header, when present.
        code: Option<String>,
        /// The response body (an XML error document).
        body: String,
    },
    /// A listing could not be read.
    BadListing(String),
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadKey => write!(f, "the storage account key is not valid base64"),
            Self::BadEndpoint(endpoint) => {
                write!(f, "the blob endpoint {endpoint:?} is not a valid URL")
            }
            Self::Transport(error) => write!(f, "storage request failed: {error}"),
            Self::Status { status, code, .. } => {
                write!(f, "storage answered {status}")?;
                if let Some(code) = code {
                    write!(f, " {code}")?;
                }
                Ok(())
            }
            Self::BadListing(why) => write!(f, "could not read the blob listing: {why}"),
        }
    }
}

impl std::error::Error for BlobError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(error) => Some(error),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for BlobError {
    fn from(error: reqwest::Error) -> Self {
        Self::Transport(error)
    }
}

/// One storage account's blob endpoint, with its Shared Key.
#[derive(Clone)]
pub struct BlobStore {
    account: String,
    endpoint: Url,
    key: Vec<u8>,
    page_size: Option<u32>,
    http: reqwest::Client,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("account", &self.account)
            .field("endpoint", &self.endpoint.as_str())
            .field("key", &"***")
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    /// A client for `account` at `blob_endpoint` (e.g. `http://127.0.0.1:10000/devstoreaccount1` for Azurite, or
    /// `https://{account}.blob.core.windows.net`), signing with the base64 account `key`.
    ///
    /// # Errors
    /// [`BlobError::BadKey`] or [`BlobError::BadEndpoint`] when the inputs cannot be used.
    pub fn new(account: &str, blob_endpoint: &str, key: &str) -> Result<Self, BlobError> {
        let key = BASE64.decode(key).map_err(|_| BlobError::BadKey)?;
        let endpoint = Url::parse(blob_endpoint.trim_end_matches('/'))
            .map_err(|_| BlobError::BadEndpoint(blob_endpoint.to_owned()))?;
        if endpoint.cannot_be_a_base() {
            return Err(BlobError::BadEndpoint(blob_endpoint.to_owned()));
        }
        Ok(Self {
            account: account.to_owned(),
            endpoint,
            key,
            page_size: None,
            http: reqwest::Client::new(),
        })
    }

    /// The same client, asking for at most `page_size` blobs per listing page (to exercise `NextMarker`).
    #[must_use]
    pub fn with_list_page_size(mut self, page_size: u32) -> Self {
        self.page_size = Some(page_size);
        self
    }

    /// The account name.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Creates `container`; a container that already exists is fine.
    ///
    /// # Errors
    /// Any other answer than 201 Created or 409 `ContainerAlreadyExists`.
    pub async fn create_container(&self, container: &str) -> Result<(), BlobError> {
        let url = self.url(container, None, &[("restype", "container")]);
        let response = self.send(Method::PUT, url, Vec::new()).await?;
        match response.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::CONFLICT
                if error_code(&response).as_deref() == Some("ContainerAlreadyExists") =>
            {
                Ok(())
            }
            _ => Err(status_error(response).await),
        }
    }

    /// Uploads `bytes` as block blob `name` in `container`, replacing any blob of that name.
    ///
    /// # Errors
    /// Transport failures and any answer but 201 Created.
    pub async fn put_blob(
        &self,
        container: &str,
        name: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<(), BlobError> {
        let url = self.url(container, Some(name), &[]);
        let response = self.send(Method::PUT, url, bytes.into()).await?;
        if response.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(status_error(response).await)
        }
    }

    /// Every blob in `container` whose name starts with `prefix` (empty: all), following continuation markers.
    ///
    /// # Errors
    /// Transport failures, any answer but 200, or a listing that cannot be read.
    pub async fn list_blobs(
        &self,
        container: &str,
        prefix: &str,
    ) -> Result<Vec<BlobEntry>, BlobError> {
        let mut entries = Vec::new();
        let mut marker = String::new();
        loop {
            let page_size = self.page_size.map(|n| n.to_string());
            let mut query = vec![("restype", "container"), ("comp", "list")];
            if !prefix.is_empty() {
                query.push(("prefix", prefix));
            }
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            if let Some(page_size) = &page_size {
                query.push(("maxresults", page_size));
            }
            let url = self.url(container, None, &query);
            let response = self.send(Method::GET, url, Vec::new()).await?;
            if response.status() != StatusCode::OK {
                return Err(status_error(response).await);
            }
            let xml = response.text().await?;
            entries.extend(parse_blobs(&xml)?);
            marker = element(&xml, "NextMarker")
                .map(unescape)
                .unwrap_or_default();
            if marker.is_empty() {
                return Ok(entries);
            }
        }
    }

    /// Whether blob `name` exists in `container`.
    ///
    /// # Errors
    /// Transport failures and answers other than 200 or 404.
    pub async fn blob_exists(&self, container: &str, name: &str) -> Result<bool, BlobError> {
        let url = self.url(container, Some(name), &[]);
        let response = self.send(Method::HEAD, url, Vec::new()).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(response).await),
        }
    }

    /// Deletes blob `name` from `container`.
    ///
    /// # Errors
    /// Transport failures and any answer but 202 Accepted (a missing blob is a 404 error).
    pub async fn delete_blob(&self, container: &str, name: &str) -> Result<(), BlobError> {
        let url = self.url(container, Some(name), &[]);
        let response = self.send(Method::DELETE, url, Vec::new()).await?;
        if response.status() == StatusCode::ACCEPTED {
            Ok(())
        } else {
            Err(status_error(response).await)
        }
    }

    /// Replaces the account's Blob service CORS rules with `rules` ("Set Blob Service Properties",
    /// `PUT {endpoint}/?restype=service&comp=properties`); an empty slice removes them all. The account's other
    /// service properties are left as they are.
    ///
    /// # Errors
    /// Transport failures and any answer but 202 Accepted.
    pub async fn set_cors_rules(&self, rules: &[CorsRule]) -> Result<(), BlobError> {
        let url = self.service_properties_url();
        let body = cors_properties(rules).into_bytes();
        let response = self.send(Method::PUT, url, body).await?;
        if response.status() == StatusCode::ACCEPTED {
            Ok(())
        } else {
            Err(status_error(response).await)
        }
    }

    /// How many CORS rules the account's Blob service has ("Get Blob Service Properties",
    /// `GET {endpoint}/?restype=service&comp=properties`, counting its `<CorsRule>` elements).
    ///
    /// # Errors
    /// Transport failures, any answer but 200, or a body that is not a `<StorageServiceProperties>` document
    /// ([`BlobError::BadListing`]).
    pub async fn cors_rule_count(&self) -> Result<usize, BlobError> {
        let url = self.service_properties_url();
        let response = self.send(Method::GET, url, Vec::new()).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error(response).await);
        }
        let xml = response.text().await?;
        if !xml.contains("<StorageServiceProperties") {
            return Err(BlobError::BadListing(format!(
                "not a <StorageServiceProperties> document: {xml}"
            )));
        }
        Ok(xml.matches("<CorsRule>").count())
    }

    /// `{endpoint}/?restype=service&comp=properties`.
    fn service_properties_url(&self) -> Url {
        self.url("", None, &[("restype", "service"), ("comp", "properties")])
    }

    /// The URL of a container or of a blob in it, with `query`.
    fn url(&self, container: &str, blob: Option<&str>, query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("checked in new: the endpoint can be a base");
            segments.pop_if_empty().push(container);
            if let Some(blob) = blob {
                segments.extend(blob.split('/'));
            }
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one signed request.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, BlobError> {
        let date = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        // Container and service requests carry `restype`; a PUT without one uploads a blob.
        let restype = url
            .query_pairs()
            .find(|(name, _)| name == "restype")
            .map(|(_, value)| value.into_owned());
        let is_blob_put = method == Method::PUT && restype.is_none();
        let is_service_put = method == Method::PUT && restype.as_deref() == Some("service");
        let mut x_ms = vec![
            ("x-ms-date", date.clone()),
            ("x-ms-version", STORAGE_VERSION.to_owned()),
        ];
        if is_blob_put {
            x_ms.push(("x-ms-blob-type", "BlockBlob".to_owned()));
        }
        let content_type = if is_blob_put {
            "application/octet-stream"
        } else if is_service_put {
            "application/xml"
        } else {
            ""
        };
        let method_has_body = method == Method::PUT;
        let signature = self.sign(&method, &url, body.len(), content_type, &x_ms);
        let mut request = self.http.request(method, url).header(
            "Authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        for (name, value) in &x_ms {
            request = request.header(*name, value);
        }
        if method_has_body {
            // Storage wants a Content-Length even for an empty body, which reqwest would leave out.
            request = request.header("Content-Length", body.len());
        }
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        Ok(request.body(body).send().await?)
    }

    /// The Shared Key signature (storage REST 2009-09-19 and later) of a request.
    fn sign(
        &self,
        method: &Method,
        url: &Url,
        content_length: usize,
        content_type: &str,
        x_ms: &[(&str, String)],
    ) -> String {
        let length = if content_length == 0 {
            String::new()
        } else {
            content_length.to_string()
        };
        // Verb, Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since, If-Match,
        // If-None-Match, If-Unmodified-Since, Range; `x-ms-date` stands in for Date.
        let mut to_sign = format!("{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n");
        let mut headers: Vec<_> = x_ms
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
            .collect();
        headers.sort();
        for (name, value) in headers {
            let _ = writeln!(to_sign, "{name}:{value}");
        }
        let _ = write!(to_sign, "/{}{}", self.account, url.path());
        let mut params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        params.sort();
        for (name, value) in params {
            let _ = write!(to_sign, "\n{name}:{value}");
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }
}

/// The `x-ms-error-code` header of a response.
fn error_code(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Turns an unexpected answer into [`BlobError::Status`].
async fn status_error(response: reqwest::Response) -> BlobError {
    let status = response.status().as_u16();
    let code = error_code(&response);
    let body = response.text().await.unwrap_or_default();
    BlobError::Status { status, code, body }
}

/// The `<Blob>` entries of one listing page.
fn parse_blobs(xml: &str) -> Result<Vec<BlobEntry>, BlobError> {
    let mut entries = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Blob>") {
        let after = &rest[start + "<Blob>".len()..];
        let end = after
            .find("</Blob>")
            .ok_or_else(|| BlobError::BadListing("unterminated <Blob>".into()))?;
        let blob = &after[..end];
        rest = &after[end..];
        let field = |name: &str| {
            element(blob, name)
                .ok_or_else(|| BlobError::BadListing(format!("a blob without <{name}>")))
        };
        let date = |name: &str| {
            let text = field(name)?;
            DateTime::parse_from_rfc2822(text)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|e| BlobError::BadListing(format!("<{name}>{text}</{name}>: {e}")))
        };
        let size = field("Content-Length")?;
        entries.push(BlobEntry {
            name: unescape(field("Name")?),
            size: size.parse().map_err(|_| {
                BlobError::BadListing(format!("<Content-Length>{size}</Content-Length>"))
            })?,
            created: date("Creation-Time")?,
            last_modified: date("Last-Modified")?,
        });
    }
    Ok(entries)
}

/// The text of the first `<name>...</name>` element in `xml` (`None` when absent or empty-tagged).
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + end])
}

/// Escapes text for an XML element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Resolves the five predefined XML entities and numeric character references.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        if let Some(c) = decoded {
            out.push(c);
            rest = &tail[semi + 1..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_resolves_entities_and_keeps_stray_ampersands() {
        assert_eq!(
            unescape("a&amp;b&lt;c&gt;&quot;&apos;&#65;&#x42;"),
            "a&b<c>\"'AB"
        );
        assert_eq!(unescape("tom & jerry"), "tom & jerry");
        assert_eq!(unescape("x&unknown;y"), "x&unknown;y");
    }

    #[test]
    fn listing_page_is_parsed() {
        let xml = "<?xml version=\"1.0\"?><EnumerationResults><Blobs><Blob><Name>a&amp;b/c</Name><Properties>\
            <Creation-Time>Sat, 21 Nov 2026 10:34:10 GMT</Creation-Time>\
            <Last-Modified>Sat, 21 Nov 2026 10:34:11 GMT</Last-Modified><Content-Length>4</Content-Length>\
            </Properties></Blob></Blobs><NextMarker>m1</NextMarker></EnumerationResults>";
        let entries = parse_blobs(xml).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name, "a&b/c");
        assert_eq!(entries[0].size, 4);
        assert_eq!(entries[0].created.to_rfc3339(), "2026-11-21T10:34:10+00:00");
        assert_eq!(element(xml, "NextMarker"), Some("m1"));
    }

    #[test]
    fn cors_rules_are_written_as_storage_expects_them() {
        assert_eq!(
            cors_properties(&[CorsRule::new("https://a.example&b")]),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties><Cors><CorsRule>\
             <AllowedOrigins>https://a.example&amp;b</AllowedOrigins><AllowedMethods>GET,HEAD,POST</AllowedMethods>\
             <AllowedHeaders>*</AllowedHeaders><ExposedHeaders>*</ExposedHeaders>\
             <MaxAgeInSeconds>200</MaxAgeInSeconds></CorsRule></Cors></StorageServiceProperties>"
        );
        assert!(
            cors_properties(&[])
                .contains("<StorageServiceProperties><Cors/></StorageServiceProperties>")
        );
        assert_eq!(unescape(&escape("<a & 'b'>\"")), "<a & 'b'>\"");
    }

    #[test]
    fn debug_hides_the_key() {
        let store = BlobStore::new("acct", "http://127.0.0.1:1/acct", "a2V5").unwrap();
        assert!(!format!("{store:?}").contains("a2V5"));
    }
}
