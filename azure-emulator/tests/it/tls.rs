//! HTTPS with a test CA: a client trusting that CA alone is answered, one with the usual roots (or trusting
//! the leaf certificate as if it were a CA) refuses the server; faults behave as over plain HTTP.

use azure_emulator::{Emulator, EmulatorConfig, Fault, FaultKind, Route};

use crate::support::json;

async fn https() -> Emulator {
    Emulator::start(EmulatorConfig {
        tls: true,
        ..EmulatorConfig::fast()
    })
    .await
    .expect("emulator starts")
}

/// A client whose only root is `pem`.
fn trusting(pem: &str) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .expect("a client")
}

fn metadata_url(emulator: &Emulator) -> String {
    format!(
        "{}/metadata/endpoints?api-version=2015-01-01",
        emulator.base_url()
    )
}

#[tokio::test]
async fn a_client_trusting_only_the_test_ca_is_answered() {
    let emulator = https().await;
    let base = emulator.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let client = trusting(&emulator.ca_pem().expect("a CA"));
    let response = client
        .get(metadata_url(&emulator))
        .send()
        .await
        .expect("answered over TLS");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let body = json(response).await;
    assert_eq!(
        body["authentication"]["loginEndpoint"],
        format!("{base}/adfs/")
    );
    // The certificate names localhost too.
    let by_name = client
        .get(metadata_url(&emulator).replace("127.0.0.1", "localhost"))
        .send()
        .await
        .expect("answered for localhost");
    assert_eq!(by_name.status(), 200);
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_usual_roots_or_the_leaf_as_a_root_do_not_verify_the_server() {
    let emulator = https().await;
    let error = reqwest::Client::new()
        .get(metadata_url(&emulator))
        .send()
        .await
        .expect_err("the test CA is not a public root");
    let text = format!("{error:?}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    let leaf = emulator.leaf_pem().expect("a leaf");
    assert_ne!(Some(leaf.clone()), emulator.ca_pem());
    let error = trusting(&leaf)
        .get(metadata_url(&emulator))
        .send()
        .await
        .expect_err("the leaf is no CA");
    assert!(
        format!("{error:?}").contains("InvalidCertificate"),
        "{error:?}"
    );
    assert!(emulator.requests().is_empty(), "no request got through");
    emulator.shutdown().await;
}

#[tokio::test]
async fn plain_http_has_no_certificates() {
    let emulator = Emulator::start(EmulatorConfig::fast()).await.unwrap();
    assert!(emulator.base_url().starts_with("http://"));
    assert_eq!((emulator.ca_pem(), emulator.leaf_pem()), (None, None));
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_reset_and_answer_over_tls() {
    let emulator = https().await;
    let client = trusting(&emulator.ca_pem().unwrap());
    emulator.inject(Fault::new(Route::StackMetadata, FaultKind::Reset));
    emulator.inject(Fault::new(
        Route::StackMetadata,
        FaultKind::status(503, "ServiceUnavailable", "later"),
    ));
    let reset = client.get(metadata_url(&emulator)).send().await;
    assert!(reset.is_err(), "{reset:?}");
    let unavailable = client.get(metadata_url(&emulator)).send().await.unwrap();
    assert_eq!(unavailable.status(), 503);
    let fine = client.get(metadata_url(&emulator)).send().await.unwrap();
    assert_eq!(fine.status(), 200);
    let statuses: Vec<_> = emulator.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [None, Some(503), Some(200)]);
    emulator.shutdown().await;
}
