//! Every `[azure]` credential mode obtains a token through rpod's `credential::credential` and the real
//! `azure_identity` types, from the loopback Azure emulator (Entra ID at `https://login.test` and IMDS at
//! `169.254.169.254`, both rewritten to it) or a fake `az`; tokens are cached; the transport refuses any other
//! host before a socket is opened.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use azure_core::base64;
use azure_core::credentials::TokenCredential;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport, new_http_client};
use azure_emulator::{Emulator, EmulatorConfig, Fault, FaultKind, Route, TokenKind};
use azure_identity::Executor;
use rpod::azure::TokenSource;
use rpod::azure::credential::{self, ArmTokens, CredentialOptions};
use rpod::azure::transport::LoopbackOnly;
use rpod::config::{AzureConfig, Credential, SecretSource};

const SCOPE: &str = "https://management.azure.com/.default";
const TENANT: &str = "tenant-1";
const CLIENT: &str = "00000000-0000-0000-0000-0000000000c1";

/// Records every request body and URL that passes the loopback guard, then sends it on.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<(String, String)>>,
}

impl Recorder {
    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct Recording(Arc<Recorder>, Arc<dyn HttpClient>);

#[async_trait::async_trait]
impl HttpClient for Recording {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            azure_core::http::Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            azure_core::http::Body::SeekableStream(_) => String::new(),
        };
        self.0
            .seen
            .lock()
            .unwrap()
            .push((request.url().to_string(), body));
        self.1.execute_request(request).await
    }
}

/// The guard in front of a recorder; `https://login.test/` and IMDS are rewritten to `base` when given.
fn transport(base: Option<&str>) -> (Transport, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let rewrites = base.map_or_else(Vec::new, |base| {
        vec![
            ("https://login.test/".to_owned(), format!("{base}/")),
            ("http://169.254.169.254/".to_owned(), format!("{base}/")),
        ]
    });
    let inner = Arc::new(Recording(recorder.clone(), new_http_client(None)));
    let guard = LoopbackOnly::new(inner, rewrites);
    (Transport::new(Arc::new(guard)), recorder)
}

fn config(credential: Credential) -> AzureConfig {
    AzureConfig {
        credential,
        authority_host: "https://login.test".to_owned(),
        ..AzureConfig::default()
    }
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::fast()).await.unwrap()
}

/// Two tokens from `credential`: the same one, from one request to the emulator of the expected kind.
async fn token_twice(
    emulator: &Emulator,
    credential: &dyn TokenCredential,
    kind: TokenKind,
) -> String {
    let first = credential.get_token(&[SCOPE], None).await.unwrap();
    let second = credential.get_token(&[SCOPE], None).await.unwrap();
    assert_eq!(first.token.secret(), second.token.secret());
    assert!(first.token.secret().starts_with("emulator-token-"));
    let requests = emulator.token_requests();
    assert_eq!(requests.len(), 1, "cached: {requests:?}");
    assert_eq!(requests[0].kind, Some(kind));
    assert!(requests[0].issued);
    first.token.secret().to_owned()
}

fn form_field(body: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn managed_identity_gets_its_token_from_imds() {
    let emulator = emulator().await;
    let (transport, recorder) = transport(Some(&emulator.base_url()));
    let credential = credential::credential(
        &config(Credential::ManagedIdentity {
            client_id: Some(CLIENT.to_owned()),
        }),
        Some(transport),
    );
    let token = token_twice(&emulator, credential.as_ref(), TokenKind::Imds).await;
    let request = &emulator.token_requests()[0];
    assert_eq!(
        request.client_id.as_deref(),
        Some(CLIENT),
        "the user-assigned identity"
    );
    assert_eq!(
        request.scope.as_deref(),
        Some("https://management.azure.com")
    );
    assert!(
        recorder.seen()[0]
            .0
            .contains("/metadata/identity/oauth2/token")
    );

    let tokens = ArmTokens::new(credential, SCOPE.to_owned());
    assert_eq!(tokens.token().await.unwrap().expose(), token);
    assert_eq!(emulator.token_requests().len(), 1);
}

#[tokio::test]
async fn client_secret_is_read_at_first_use_and_sent_to_entra() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    let (transport, recorder) = transport(Some(&emulator.base_url()));
    let credential = credential::credential(
        &config(Credential::ClientSecret {
            tenant_id: TENANT.to_owned(),
            client_id: CLIENT.to_owned(),
            secret: SecretSource::File(secret_file.clone()),
        }),
        Some(transport),
    );

    let error = credential.get_token(&[SCOPE], None).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("client_secret credential: cannot be set up"),
        "{text}"
    );
    assert!(text.contains(&secret_file.display().to_string()), "{text}");
    assert!(emulator.requests().is_empty());

    std::fs::write(&secret_file, "s3cret-value\n").unwrap();
    token_twice(&emulator, credential.as_ref(), TokenKind::ClientSecret).await;
    let request = &emulator.token_requests()[0];
    assert_eq!(request.tenant.as_deref(), Some(TENANT));
    assert_eq!(request.client_id.as_deref(), Some(CLIENT));
    assert_eq!(request.scope.as_deref(), Some(SCOPE));
    let (url, body) = &recorder.seen()[0];
    assert!(
        url.ends_with(&format!("/{TENANT}/oauth2/v2.0/token")),
        "{url}"
    );
    assert_eq!(
        form_field(body, "client_secret").as_deref(),
        Some("s3cret-value")
    );
}

#[tokio::test]
async fn a_refused_client_secret_is_reported_without_the_secret() {
    let emulator = emulator().await;
    emulator.inject(Fault::new(
        Route::Token,
        FaultKind::status(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        ),
    ));
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "wrong-s3cret").unwrap();
    let (transport, _) = transport(Some(&emulator.base_url()));
    let credential = credential::credential(
        &config(Credential::ClientSecret {
            tenant_id: TENANT.to_owned(),
            client_id: CLIENT.to_owned(),
            secret: SecretSource::File(secret_file),
        }),
        Some(transport),
    );
    let error = credential.get_token(&[SCOPE], None).await.unwrap_err();
    let text = format!("{error}");
    assert!(
        text.starts_with("client_secret credential: no token for"),
        "{text}"
    );
    assert!(text.contains("AADSTS7000215"), "Entra's reason: {text}");
    assert!(!text.contains("wrong-s3cret"), "{text}");
    assert_eq!(emulator.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "kubernetes-service-account-jwt").unwrap();
    let (transport, recorder) = transport(Some(&emulator.base_url()));
    let credential = credential::credential(
        &config(Credential::WorkloadIdentity {
            client_id: Some(CLIENT.to_owned()),
            tenant_id: Some(TENANT.to_owned()),
            token_file: Some(token_file),
        }),
        Some(transport),
    );
    token_twice(&emulator, credential.as_ref(), TokenKind::ClientAssertion).await;
    assert_eq!(emulator.token_requests()[0].tenant.as_deref(), Some(TENANT));
    let (_, body) = &recorder.seen()[0];
    assert_eq!(
        form_field(body, "client_assertion").as_deref(),
        Some("kubernetes-service-account-jwt")
    );
    assert_eq!(form_field(body, "client_id").as_deref(), Some(CLIENT));
}

#[tokio::test]
async fn client_certificate_signs_an_assertion_entra_can_verify() {
    let emulator = emulator().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["rpod.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_file = dir.path().join("rpod.pem");
    std::fs::write(
        &pem_file,
        format!("{}{}", certificate.pem(), key.serialize_pem()),
    )
    .unwrap();
    let (transport, recorder) = transport(Some(&emulator.base_url()));
    let credential = credential::credential(
        &config(Credential::ClientCertificate {
            tenant_id: TENANT.to_owned(),
            client_id: CLIENT.to_owned(),
            certificate_file: pem_file,
        }),
        Some(transport),
    );
    token_twice(&emulator, credential.as_ref(), TokenKind::ClientAssertion).await;

    let (_, body) = &recorder.seen()[0];
    assert_eq!(
        form_field(body, "client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = form_field(body, "client_assertion").unwrap();
    let parts: Vec<&str> = assertion.split('.').collect();
    assert_eq!(parts.len(), 3, "{assertion}");
    let json = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&base64::decode_url_safe(part).unwrap()).unwrap()
    };
    let (header, claims) = (json(parts[0]), json(parts[1]));
    let der = certificate.der();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(
        header["x5t"],
        base64::encode_url_safe(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der))
    );
    assert_eq!(
        header["x5t#S256"],
        base64::encode_url_safe(digest::digest(&digest::SHA256, der))
    );
    assert_eq!(
        claims["aud"],
        format!("https://login.test/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(claims["iss"], CLIENT);
    assert_eq!(claims["sub"], CLIENT);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    let now = chrono::Utc::now().timestamp();
    let nbf = claims["nbf"].as_i64().unwrap();
    assert!((now - nbf).abs() < 60, "nbf {nbf} is now");
    assert_eq!(claims["iat"], nbf);
    assert_eq!(claims["exp"].as_i64().unwrap() - nbf, 600);

    let signature = base64::decode_url_safe(parts[2]).unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_raw())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("signed with the certificate's key");
}

#[tokio::test]
async fn a_certificate_file_without_a_key_is_reported() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["rpod.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_file = dir.path().join("cert-only.pem");
    std::fs::write(&pem_file, certificate.pem()).unwrap();
    let (transport, recorder) = transport(None);
    let credential = credential::credential(
        &config(Credential::ClientCertificate {
            tenant_id: TENANT.to_owned(),
            client_id: CLIENT.to_owned(),
            certificate_file: pem_file.clone(),
        }),
        Some(transport),
    );
    let text = credential
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("client_certificate credential: cannot be set up"),
        "{text}"
    );
    assert!(text.contains(&pem_file.display().to_string()), "{text}");
    assert!(text.contains("private key"), "{text}");
    assert!(recorder.seen().is_empty());
}

/// Runs the command `azure_identity` asks for with `dir` first on `PATH` of that child only.
#[derive(Debug)]
struct PathExecutor {
    dir: PathBuf,
}

#[async_trait::async_trait]
impl Executor for PathExecutor {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<Output> {
        let path = std::env::var("PATH").unwrap_or_default();
        tokio::process::Command::new(program)
            .args(args)
            .env("PATH", format!("{}:{path}", self.dir.display()))
            .output()
            .await
    }
}

fn fake_az(dir: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         echo \"$*\" >> {log}\n\
         expires=$(( $(date +%s) + 3600 ))\n\
         echo \"{{\\\"accessToken\\\":\\\"fake-cli-token\\\",\\\"expires_on\\\":$expires,\\\"tokenType\\\":\\\"Bearer\\\"}}\"\n",
        log = dir.join("az.log").display()
    );
    let path = dir.join("az");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn azure_cli_runs_az_once_and_caches_the_token() {
    let dir = tempfile::tempdir().unwrap();
    fake_az(dir.path());
    let (transport, recorder) = transport(None);
    let credential = credential::credential_with(
        &config(Credential::AzureCli {
            tenant_id: Some(TENANT.to_owned()),
        }),
        CredentialOptions {
            transport: Some(transport),
            cli_executor: Some(Arc::new(PathExecutor {
                dir: dir.path().to_path_buf(),
            })),
        },
    );
    for _ in 0..3 {
        let token = credential.get_token(&[SCOPE], None).await.unwrap();
        assert_eq!(token.token.secret(), "fake-cli-token");
    }
    let log = std::fs::read_to_string(dir.path().join("az.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "az ran once: {log}");
    assert!(
        log.starts_with(&format!(
            "account get-access-token -o json --scope {SCOPE} --tenant {TENANT}"
        )),
        "{log}"
    );
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn a_failing_az_is_reported_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("az");
    std::fs::write(
        &path,
        "#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let credential = credential::credential_with(
        &config(Credential::AzureCli { tenant_id: None }),
        CredentialOptions {
            transport: None,
            cli_executor: Some(Arc::new(PathExecutor {
                dir: dir.path().to_path_buf(),
            })),
        },
    );
    let text = credential
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("azure_cli credential: no token for"),
        "{text}"
    );
    assert!(text.contains("az login"), "{text}");
}

#[tokio::test]
async fn the_transport_refuses_imds_when_not_rewritten() {
    let (transport, recorder) = transport(None);
    let credential = credential::credential(
        &config(Credential::ManagedIdentity { client_id: None }),
        Some(transport),
    );
    let started = Instant::now();
    let text = credential
        .get_token(&[SCOPE], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not retried: {:?}",
        started.elapsed()
    );
    assert!(
        text.starts_with("managed_identity credential: no token for"),
        "{text}"
    );
    assert!(
        text.contains("LoopbackOnly refused a request to http://169.254.169.254/"),
        "{text}"
    );
    assert!(
        recorder.seen().is_empty(),
        "nothing reached the HTTP client"
    );
}
