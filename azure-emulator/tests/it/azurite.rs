//! The Azurite harness against a real Azurite: start, create a container, put, list, delete, CORS rules.

use azure_emulator::{Azurite, BlobStore, CorsRule};

#[tokio::test]
async fn blobs_can_be_put_listed_and_deleted() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    assert_eq!(
        azurite.blob_endpoint(),
        format!("http://127.0.0.1:{}/devstoreaccount1", azurite.port())
    );
    azurite.create_container("backups").await.unwrap();
    azurite
        .create_container("backups")
        .await
        .expect("an existing container is fine");

    azurite
        .put_blob("backups", "apim/svc-a/one.apimbackup", b"1234".to_vec())
        .await
        .unwrap();
    azurite
        .put_blob("backups", "apim/svc-a/two & more.apimbackup", vec![7; 10])
        .await
        .unwrap();
    azurite
        .put_blob("backups", "other/x.bin", b"x".to_vec())
        .await
        .unwrap();

    let listed = azurite.list_blobs("backups", "apim/").await.unwrap();
    let names: Vec<_> = listed.iter().map(|b| (b.name.as_str(), b.size)).collect();
    assert_eq!(
        names,
        [
            ("apim/svc-a/one.apimbackup", 4),
            ("apim/svc-a/two & more.apimbackup", 10)
        ]
    );
    let age = chrono::Utc::now() - listed[0].created;
    assert!(
        age.num_seconds().abs() < 60,
        "created {} is close to now",
        listed[0].created
    );

    assert!(azurite.blob_exists("backups", "other/x.bin").await.unwrap());
    azurite.delete_blob("backups", "other/x.bin").await.unwrap();
    assert!(!azurite.blob_exists("backups", "other/x.bin").await.unwrap());
    assert_eq!(azurite.list_blobs("backups", "").await.unwrap().len(), 2);
}

#[tokio::test]
async fn listing_follows_continuation_markers_and_a_wrong_key_is_refused() {
    // One Azurite for both checks: starting one costs a second or more of CPU.
    let azurite = Azurite::start().await.expect("Azurite starts");
    let store = azurite.store().clone().with_list_page_size(2);
    store.create_container("paged").await.unwrap();
    for i in 0..5 {
        store
            .put_blob("paged", &format!("b{i}"), vec![0; i])
            .await
            .unwrap();
    }
    let names: Vec<_> = store
        .list_blobs("paged", "")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["b0", "b1", "b2", "b3", "b4"]);

    let wrong =
        BlobStore::new(azurite.account(), &azurite.blob_endpoint(), "d3Jvbmcga2V5").unwrap();
    let error = wrong.create_container("nope").await.unwrap_err();
    assert!(error.to_string().contains("403"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn starts_under_paused_tokio_time() {
    let azurite = Azurite::start()
        .await
        .expect("Azurite starts although Tokio time is paused");
    azurite.create_container("paused").await.unwrap();
}

#[tokio::test]
async fn cors_rules_can_be_set_counted_and_cleared() {
    let azurite = Azurite::start().await.expect("Azurite starts");
    assert_eq!(azurite.cors_rule_count().await.unwrap(), 0);
    let rules = [
        CorsRule::new("https://portal.example"),
        CorsRule {
            allowed_origins: "https://a.example,https://b.example".to_owned(),
            allowed_methods: "GET,PUT".to_owned(),
            allowed_headers: "x-ms-meta-*".to_owned(),
            exposed_headers: "x-ms-request-id".to_owned(),
            max_age_in_seconds: 60,
        },
    ];
    azurite.set_cors_rules(&rules).await.unwrap();
    assert_eq!(azurite.cors_rule_count().await.unwrap(), 2);
    assert_eq!(
        azurite.store().cors_rule_count().await.unwrap(),
        2,
        "the store reads the same account"
    );
    azurite.set_cors_rules(&[]).await.unwrap();
    assert_eq!(azurite.cors_rule_count().await.unwrap(), 0);
    azurite
        .store()
        .set_cors_rules(&[CorsRule::default()])
        .await
        .unwrap();
    assert_eq!(azurite.cors_rule_count().await.unwrap(), 1);
}
