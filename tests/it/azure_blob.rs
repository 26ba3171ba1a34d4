//! `azure_blob` storage against a real Azurite: list, stat, delete and probe with SAS and Shared Key
//! authentication, and errors that say what is wrong without revealing the key or the SAS signature.

use std::io;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::hmac;
use azure_core::credentials::TokenCredential;
use azure_emulator::Azurite;
use chrono::{Duration, Utc};
use rpod::azure::credential;
use rpod::azure::transport::LoopbackOnly;
use rpod::config::{AzureBlobConfig, AzureConfig, BlobAccess, BlobAuth, SecretSource};
use rpod::storage::{AzureBlobStorage, Storage};

const CONTAINER: &str = "backups";

/// A credential that must never be asked: these storages authenticate with a SAS token or the account key.
fn unused_credential() -> Arc<dyn TokenCredential> {
    credential::credential(
        &AzureConfig::default(),
        Some(LoopbackOnly::transport(Vec::new())),
    )
}

/// An account SAS for the blob service (string-to-sign of versions 2020-12-06 and later), signed with `key`.
pub fn account_sas(account: &str, key: &str, permissions: &str) -> String {
    let version = "2025-11-05";
    let format = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let start = format(Utc::now() - Duration::minutes(5));
    let expiry = format(Utc::now() + Duration::hours(1));
    let to_sign =
        format!("{account}\n{permissions}\nb\nsco\n{start}\n{expiry}\n\nhttps,http\n{version}\n\n");
    let key = azure_core::base64::decode(key).unwrap();
    let signature = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", "b")
        .append_pair("srt", "sco")
        .append_pair("sp", permissions)
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", "https,http")
        .append_pair("sig", &azure_core::base64::encode(signature.as_ref()))
        .finish()
}

/// The `sig=` value of a SAS query, decoded.
fn signature_of(sas: &str) -> String {
    url::form_urlencoded::parse(sas.as_bytes())
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn secret_file(dir: &Path, name: &str, value: &str) -> SecretSource {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    SecretSource::File(path)
}

fn storage(azurite: &Azurite, container: &str, auth: BlobAuth) -> AzureBlobStorage {
    let config = AzureBlobConfig {
        account: azurite.account().to_owned(),
        container: container.to_owned(),
        endpoint: azurite.blob_endpoint(),
        access: BlobAccess::ManagedIdentity,
        auth,
    };
    AzureBlobStorage::new("apim", &config, unused_credential(), None)
}

async fn azurite_with_blobs() -> Azurite {
    let azurite = Azurite::start().await.expect("Azurite starts");
    azurite.create_container(CONTAINER).await.unwrap();
    for (name, size) in [
        ("apim/svc-a/2026-01-01.apimbackup", 4),
        ("apim/svc-a/2026-01-02 & more.apimbackup", 8),
        ("apim/svc-b/2026-01-01.apimbackup", 16),
        ("other/x.bin", 1),
    ] {
        azurite
            .put_blob(CONTAINER, name, vec![7; size])
            .await
            .unwrap();
    }
    azurite
}

/// Lists, stats, deletes and probes through `storage`, checking each answer against Azurite's own view.
async fn exercise(azurite: &Azurite, storage: &AzureBlobStorage) {
    let listed = storage.list("apim/").await.unwrap();
    let names: Vec<_> = listed.iter().map(|a| (a.name.as_str(), a.size)).collect();
    assert_eq!(
        names,
        [
            ("apim/svc-a/2026-01-01.apimbackup", 4),
            ("apim/svc-a/2026-01-02 & more.apimbackup", 8),
            ("apim/svc-b/2026-01-01.apimbackup", 16),
        ],
        "every blob under the prefix, over several pages, and nothing else"
    );
    let truth = azurite.list_blobs(CONTAINER, "apim/").await.unwrap();
    for (artifact, blob) in listed.iter().zip(&truth) {
        assert_eq!(artifact.name, blob.name);
        assert_eq!(
            artifact.created_at,
            Some(blob.created),
            "the blob's creation time"
        );
        assert!(artifact.modified_at.is_some(), "and its last modification");
        assert_eq!(
            artifact.stored_at(),
            artifact.created_at.min(artifact.modified_at)
        );
    }
    assert!(
        (Utc::now() - listed[0].created_at.unwrap())
            .num_seconds()
            .abs()
            < 60
    );
    assert_eq!(storage.list("").await.unwrap().len(), 4);
    assert!(storage.list("nothing/").await.unwrap().is_empty());

    let stat = storage
        .stat("apim/svc-a/2026-01-02 & more.apimbackup")
        .await
        .unwrap()
        .expect("the blob exists");
    assert_eq!(stat, listed[1]);
    assert_eq!(storage.stat("apim/svc-a/missing").await.unwrap(), None);

    storage
        .delete("apim/svc-a/2026-01-02 & more.apimbackup")
        .await
        .unwrap();
    assert!(
        !azurite
            .blob_exists(CONTAINER, "apim/svc-a/2026-01-02 & more.apimbackup")
            .await
            .unwrap()
    );
    storage
        .delete("apim/svc-a/2026-01-02 & more.apimbackup")
        .await
        .expect("deleting a blob that is already gone is fine");
    assert_eq!(storage.list("apim/svc-a/").await.unwrap().len(), 1);

    storage.probe().await.unwrap();
}

#[tokio::test]
async fn sas_auth_lists_stats_deletes_and_probes() {
    let azurite = azurite_with_blobs().await;
    let dir = tempfile::tempdir().unwrap();
    let sas = account_sas(azurite.account(), azurite.key(), "rld");
    let auth = BlobAuth::Sas(secret_file(dir.path(), "sas", &format!("?{sas}")));
    exercise(
        &azurite,
        &storage(&azurite, CONTAINER, auth).with_page_size(2),
    )
    .await;
}

#[tokio::test]
async fn access_key_auth_lists_stats_deletes_and_probes() {
    let azurite = azurite_with_blobs().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = BlobAuth::AccessKey(secret_file(dir.path(), "key", azurite.key()));
    exercise(
        &azurite,
        &storage(&azurite, CONTAINER, auth).with_page_size(2),
    )
    .await;
}

#[tokio::test]
async fn a_missing_container_is_an_error_that_says_so() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    let dir = tempfile::tempdir().unwrap();
    let auth = BlobAuth::AccessKey(secret_file(dir.path(), "key", azurite.key()));
    let storage = storage(&azurite, "nope", auth);

    let error = storage.probe().await.unwrap_err();
    assert_eq!(error.source.kind(), io::ErrorKind::NotFound);
    let text = error.to_string();
    assert!(
        text.contains("container nope does not exist in account devstoreaccount1"),
        "{text}"
    );
    assert!(text.contains("404 ContainerNotFound"), "{text}");
    assert!(
        text.starts_with("storage apim: listing container nope"),
        "{text}"
    );

    assert!(storage.list("").await.is_err(), "no empty listing");
    assert!(
        storage.stat("x").await.is_err(),
        "a missing container is not a missing blob"
    );
    assert!(storage.delete("x").await.is_err());
}

#[tokio::test]
async fn wrong_keys_are_refused_without_revealing_key_or_signature() {
    let azurite = azurite_with_blobs().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong_key = azure_core::base64::encode([42u8; 64]);

    let key_storage = storage(
        &azurite,
        CONTAINER,
        BlobAuth::AccessKey(secret_file(dir.path(), "key", &wrong_key)),
    );
    let error = key_storage.probe().await.unwrap_err();
    assert_eq!(error.source.kind(), io::ErrorKind::PermissionDenied);
    let text = format!("{error} {error:?} {key_storage:?}");
    assert!(text.contains("403"), "{text}");
    assert!(text.contains("access key"), "says what to check: {text}");
    assert!(!text.contains(&wrong_key), "{text}");
    assert!(!text.contains(azurite.key()), "{text}");

    let sas = account_sas(azurite.account(), &wrong_key, "rld");
    let signature = signature_of(&sas);
    let sas_storage = storage(
        &azurite,
        CONTAINER,
        BlobAuth::Sas(secret_file(dir.path(), "sas", &sas)),
    );
    for error in [
        sas_storage.probe().await.unwrap_err(),
        sas_storage.list("apim/").await.unwrap_err(),
        sas_storage.delete("other/x.bin").await.unwrap_err(),
    ] {
        let text = format!("{error} {error:?} {sas_storage:?}");
        assert!(text.contains("403"), "{text}");
        assert!(text.contains("SAS token"), "says what to check: {text}");
        assert!(!text.contains(&signature), "{text}");
        assert!(!text.contains(&sas), "{text}");
        assert!(
            !text.contains(&signature.replace('+', "%2B").replace('/', "%2F")),
            "{text}"
        );
    }
    assert!(
        azurite.blob_exists(CONTAINER, "other/x.bin").await.unwrap(),
        "nothing was deleted"
    );
}

#[tokio::test]
async fn secrets_are_read_at_first_use_and_errors_name_their_source() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("sas-not-yet-there");
    let storage = storage(
        &azurite,
        CONTAINER,
        BlobAuth::Sas(SecretSource::File(missing.clone())),
    );
    let error = storage.probe().await.unwrap_err().to_string();
    assert!(error.contains(&missing.display().to_string()), "{error}");

    azurite.create_container(CONTAINER).await.unwrap();
    std::fs::write(
        &missing,
        account_sas(azurite.account(), azurite.key(), "rl"),
    )
    .unwrap();
    storage
        .probe()
        .await
        .expect("a secret that appears later is used");
}

#[tokio::test]
async fn command_output_cannot_be_written_to_azure_blob() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(
        &azurite,
        CONTAINER,
        BlobAuth::AccessKey(secret_file(dir.path(), "key", azurite.key())),
    );
    let error = storage.create("etc/1.tar").err().unwrap();
    assert_eq!(error.source.kind(), io::ErrorKind::Unsupported);
    assert!(
        error.to_string().contains(
            "azure_blob storages receive backups written by Azure services (API Management), not command output"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn credential_auth_sends_a_storage_token_from_the_credential() {
    let emulator = azure_emulator::Emulator::start(azure_emulator::EmulatorConfig::fast())
        .await
        .unwrap();
    let base = emulator.base_url();
    let transport = LoopbackOnly::transport(vec![
        ("http://169.254.169.254/".to_owned(), format!("{base}/")),
        (
            "https://contosobackups.blob.core.windows.net/".to_owned(),
            format!("{base}/"),
        ),
    ]);
    let credential = credential::credential(&AzureConfig::default(), Some(transport.clone()));
    let config = AzureBlobConfig {
        account: "contosobackups".to_owned(),
        container: CONTAINER.to_owned(),
        endpoint: "https://contosobackups.blob.core.windows.net".to_owned(),
        access: BlobAccess::ManagedIdentity,
        auth: BlobAuth::Credential,
    };
    let storage = AzureBlobStorage::new("apim", &config, credential, Some(transport));

    // The emulator serves no blobs: what matters is what reached it.
    let error = storage.probe().await.unwrap_err();
    let tokens = emulator.token_requests();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(
        tokens[0].scope.as_deref(),
        Some("https://storage.azure.com")
    );
    let listing = emulator
        .requests()
        .into_iter()
        .find(|r| r.path() == format!("/{CONTAINER}"))
        .unwrap_or_else(|| panic!("the listing reached the emulator ({error})"));
    assert!(listing.path_and_query.contains("comp=list"));
    assert!(listing.authorization, "with the bearer token");
}
