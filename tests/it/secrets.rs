//! No secret reaches an output: a full APIM cycle with canary secrets (client secret, storage account key, SAS,
//! the access tokens Azure issues, the webhook secret and a wrong one sent to the webhook, the API token and a
//! wrong one sent to the API, the age identity a restore decrypts with), then every output is searched: debug logs, /metrics, the JSON API, the catalog files and the command line's JSON.
//! The password of a PostgreSQL catalog gets a test of its own, with a replica logging in with it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use azure_emulator::EmulatorConfig;
use rpod::app::Environment;
use rpod::azure::transport::LoopbackOnly;
use rpod::clock::Clock;
use rpod::record::Status;

use crate::cloud::{CONTAINER, Cloud, target};
use crate::support::{eventually, run_rpod, spawn_app_in};

const CLIENT_SECRET: &str = "canary-client-secret-9f3e2d";
const STAMP_SECRET: &str = "canary-stamp-secret-4be970";
const TOKEN_PREFIX: &str = "canary-token-51c8a0-";
const WEBHOOK_SECRET: &str = "canary-webhook-secret-0d7e41";
const WRONG_SECRET: &str = "canary-wrong-webhook-secret-b2a9f6";
const API_TOKEN: &str = "canary-api-token-7a1c33";
const WRONG_API_TOKEN: &str = "canary-wrong-api-token-e48d02";

/// Every log line any test of this binary writes at debug level, as an operator with `RPOD_LOG=debug` would
/// see them (installed once; other tests' lines land here too, which only widens the search).
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static SINK: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let writer = sink.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("debug")
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        sink
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_clean(what: &str, text: &str, canaries: &[&str]) {
    for canary in canaries {
        assert!(
            !text.contains(canary),
            "{what} contains a secret ({canary:.12}...)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_the_catalog_or_the_api() {
    let logs = captured();
    let mut emulator = EmulatorConfig::fast();
    emulator.token_prefix = TOKEN_PREFIX.to_owned();
    emulator.operation_duration = Duration::from_millis(1200);
    let cloud = Cloud::start(emulator).await;
    cloud.service("svc-canary");
    cloud.service("svc-canary-sas");
    cloud.service("svc-canary-dr");
    cloud
        .emulator
        .add_protected_vm(azure_emulator::ProtectedVmSpec::new(
            crate::cloud::SUB,
            "rg-vault",
            "vault-canary",
            "rg-vm",
            "vm-canary",
        ));
    // An Azure Stack Hub stamp over HTTPS, signed in to through its AD FS with a secret of its own.
    let mut stamp_config = EmulatorConfig::fast();
    stamp_config.tls = true;
    stamp_config.token_prefix = TOKEN_PREFIX.to_owned();
    stamp_config.stack_backup_duration = Duration::from_millis(300);
    let stamp = azure_emulator::Emulator::start(stamp_config).await.unwrap();
    stamp.add_backup_location(azure_emulator::BackupLocationSpec::new(
        crate::cloud::SUB,
        "System.local",
        "local",
    ));
    let stamp_ca = stamp.ca_pem().unwrap();
    let stamp_target = format!(
        "[azure.profiles.stamp]\nresource_manager_endpoint = \"{}\"\ncredential = \"client_secret\"\n\
         tenant_id = \"adfs\"\nclient_id = \"rpod-backup\"\nclient_secret_file = \"{{dir}}/stamp-secret\"\n\
         ca_file = \"{{dir}}/stamp-ca.pem\"\nmin_retry_after = \"1s\"\nmax_retry_after = \"1s\"\n\
         [[targets]]\nname = \"canary-stamp\"\nkind = \"azure_stack_infra\"\nazure_profile = \"stamp\"\n\
         region = \"local\"\nsubscription_id = \"{}\"\n[targets.policy]\nrpo = \"1h\"\n",
        stamp.base_url(),
        crate::cloud::SUB
    );
    let identity = age::x25519::Identity::generate();
    let age_secret = {
        use age::secrecy::ExposeSecret as _;
        identity.to_string().expose_secret().to_owned()
    };
    let recipients = format!("{}\n", identity.to_public());
    let sas = crate::azure_blob::account_sas(cloud.azurite.account(), cloud.azurite.key(), "rwdl");
    let signature = sas
        .split('&')
        .find_map(|pair| pair.strip_prefix("sig="))
        .unwrap()
        .to_owned();
    let vm_target = format!(
        "[[targets]]\nname = \"canary-vm\"\nkind = \"recovery_services_vm\"\nsubscription_id = \"{}\"\n\
         vault_resource_group = \"rg-vault\"\nvault = \"vault-canary\"\nvm_resource_group = \"rg-vm\"\n\
         vm = \"vm-canary\"\n[targets.policy]\nrpo = \"1h\"\n",
        crate::cloud::SUB
    );
    let sas_and_vm = target("canary-sas", "svc-canary-sas", "rpo = \"1h\"")
        .replace("storage = \"blob\"", "storage = \"sas\"")
        + &vm_target
        + &stamp_target;
    let config = cloud
        .config(
            "access_key",
            &format!(
                "{}{}\n[storage.sas]\nkind = \"azure_blob\"\naccount = \"{}\"\ncontainer = \"{CONTAINER}\"\n\
                 endpoint = \"{}\"\naccess = \"managed_identity\"\nauth = \"sas\"\nsas_file = \"{{dir}}/sas\"\n\
                 [webhook]\nsecret_file = \"{{dir}}/webhook-secret\"\n\
                 [storage.local]\nkind = \"directory\"\npath = \"{{dir}}/backups\"\n\
                 [[targets]]\nname = \"canary-cmd\"\nkind = \"command\"\ncommand = [\"echo\", \"data\"]\n\
                 storage = \"local\"\nrestore_command = [\"sh\", \"-c\", \"cat > /dev/null\"]\n\
                 encrypt = {{ age_recipients_file = \"{{dir}}/recipients\", age_identity_file = \"{{dir}}/identity\" }}\n\
                 [targets.policy]\nrpo = \"1h\"\n",
                target(
                    "canary",
                    "svc-canary",
                    "rpo = \"1h\"\non_change = { detect = [\"sync_state\", \"event_grid\"], poll_interval = \
                     \"200ms\", quiet_period = \"200ms\", max_delay = \"1s\", min_interval = \"0s\" }"
                )
                .replace(
                    "[targets.policy]",
                    "[[targets.restore_into]]\nname = \"dr\"\nservice = \"svc-canary-dr\"\n[targets.policy]"
                ),
                sas_and_vm,
                cloud.azurite.account(),
                cloud.azurite.blob_endpoint(),
            ),
        )
        .replace(
            "log_format = \"json\"",
            "log_format = \"json\"\napi_token_file = \"{dir}/api-token\"",
        )
        .replace(
            "credential = \"managed_identity\"",
            "credential = \"client_secret\"\ntenant_id = \"tenant-1\"\nclient_id = \"app-1\"\n\
             client_secret_file = \"{dir}/client-secret\"\nauthority_host = \"https://login.test\"",
        );
    let environment = Environment::loopback(LoopbackOnly::transport(vec![(
        "https://login.test/".to_owned(),
        format!("{}/", cloud.emulator.base_url()),
    )]));
    let key = cloud.azurite.key().to_owned();
    let app = spawn_app_in(
        &config,
        &[
            ("key", key.as_bytes()),
            ("sas", sas.as_bytes()),
            ("client-secret", CLIENT_SECRET.as_bytes()),
            ("stamp-secret", STAMP_SECRET.as_bytes()),
            ("stamp-ca.pem", stamp_ca.as_bytes()),
            ("webhook-secret", WEBHOOK_SECRET.as_bytes()),
            ("api-token", API_TOKEN.as_bytes()),
            ("recipients", recipients.as_bytes()),
            ("identity", age_secret.as_bytes()),
        ],
        environment,
        Clock::system(),
    )
    .await;
    for name in [
        "canary",
        "canary-sas",
        "canary-cmd",
        "canary-vm",
        "canary-stamp",
    ] {
        eventually(Duration::from_secs(30), "a completed backup", || async {
            app.records(name)
                .await
                .into_iter()
                // A vault reports no size for its recovery points.
                .find(|r| {
                    r.status == Status::Succeeded
                        && (r.size_bytes.is_some() || name == "canary-vm" || name == "canary-stamp")
                })
        })
        .await;
    }
    // The webhook takes a delivery with its secret, refuses one with a wrong secret, and the change is backed up.
    let event = serde_json::json!([{
        "id": "1",
        "topic": format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/svc-canary",
            crate::cloud::SUB,
            crate::cloud::RG
        ),
        "subject": "/apis/echo",
        "data": {},
        "eventType": "Microsoft.ApiManagement.APIUpdated",
        "eventTime": "2026-11-21T10:00:00Z",
        "dataVersion": "1",
        "metadataVersion": "1"
    }]);
    let wrong = app
        .http
        .post(app.url("/hooks/eventgrid"))
        .header("x-rpod-webhook-secret", WRONG_SECRET)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_clean(
        "the 401 answer",
        &wrong.text().await.unwrap(),
        &[WRONG_SECRET, WEBHOOK_SECRET],
    );
    let right = app
        .http
        .post(app.url(&format!("/hooks/eventgrid?code={WEBHOOK_SECRET}")))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    eventually(Duration::from_secs(30), "a change backup", || async {
        app.records("canary")
            .await
            .into_iter()
            .find(|r| r.trigger == "change" && r.status == Status::Succeeded)
    })
    .await;

    // The API takes a request with its token and refuses one with a wrong token.
    let wrong = app
        .http
        .post(app.url("/api/v1/targets/canary-sas/backup"))
        .bearer_auth(WRONG_API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_clean(
        "the API's 401 answer",
        &wrong.text().await.unwrap(),
        &[WRONG_API_TOKEN, API_TOKEN],
    );
    let right = app
        .http
        .post(app.url("/api/v1/targets/canary-sas/backup"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 202);

    // Restores use the storage key (API Management) and the age identity (a command target).
    for (target, body) in [
        ("canary", serde_json::json!({"into": "dr"})),
        ("canary-cmd", serde_json::json!({"yes": true})),
    ] {
        let started = app
            .http
            .post(app.url(&format!("/api/v1/targets/{target}/restore")))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        app.restore_where(target, "manual", "succeeded").await;
    }
    assert!(
        cloud
            .requests_for("svc-canary-dr")
            .iter()
            .any(|p| p.method == "POST" && p.body.contains(&key)),
        "the account key was sent with the restore, where it belongs"
    );

    // The secrets were really used: the emulator saw the client secret grant and issued canary tokens.
    assert!(cloud.emulator.issued_tokens() > 0);
    assert!(
        cloud
            .backup_posts("svc-canary")
            .iter()
            .any(|p| p.body.contains(&key)),
        "the account key was sent to API Management, where it belongs"
    );

    let token = cloud.emulator.issue_token();
    assert!(
        stamp
            .token_requests()
            .iter()
            .any(|t| t.kind == Some(azure_emulator::TokenKind::Adfs) && t.issued),
        "the stamp's secret was used with its AD FS"
    );
    let canaries = [
        CLIENT_SECRET,
        STAMP_SECRET,
        key.as_str(),
        signature.as_str(),
        TOKEN_PREFIX,
        token.as_str(),
        WEBHOOK_SECRET,
        WRONG_SECRET,
        API_TOKEN,
        WRONG_API_TOKEN,
        age_secret.as_str(),
    ];
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_clean("/metrics", &metrics, &canaries);
    for path in [
        "/api/v1/targets",
        "/api/v1/targets/canary/backups",
        "/api/v1/targets/canary-sas/backups",
        "/api/v1/targets/canary/restores",
        "/api/v1/targets/canary-cmd/restores",
        "/api/v1/targets/canary-vm/backups",
    ] {
        assert_clean(path, &app.get_json(path).await.to_string(), &canaries);
    }
    let dir = app.stop().await;
    let config_path = dir.path().join("rpod.toml");
    for args in [
        &["backups", "--json"][..],
        &["status", "--json"][..],
        &["check-config"][..],
        &["prune", "--dry-run", "--json"][..],
    ] {
        let output = run_rpod(&config_path, args);
        assert_clean(
            &format!("rpod {args:?}"),
            &format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            &canaries,
        );
    }
    for entry in std::fs::read_dir(dir.path().join("state")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_clean(
            &path.file_name().unwrap().to_string_lossy(),
            &String::from_utf8_lossy(&bytes),
            &canaries,
        );
    }
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("Azure accepted the backup"),
        "the debug log was captured"
    );
    assert_clean("the debug log", &logs, &canaries);
}

const CATALOG_PASSWORD: &str = "canary-catalog-password-3d91fa";

/// The password of a PostgreSQL catalog is used for the login and appears nowhere else: not in the replica's
/// debug log, its metrics, its API, the catalog's tables, the command line's output, nor the error of a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_password_never_appears_in_logs_metrics_the_api_the_catalog_or_errors() {
    let postgres = crate::postgres::Postgres::start();
    let url = postgres.database("secrets").await;
    // A login that must give its password (the cluster trusts its superuser only).
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE rpod_app LOGIN PASSWORD '{CATALOG_PASSWORD}'"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("GRANT ALL ON SCHEMA public TO rpod_app")
        .execute(&admin)
        .await
        .unwrap();
    let hba = postgres.dir().join("data").join("pg_hba.conf");
    let trusted = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all rpod_app 127.0.0.1/32 scram-sha-256\n{trusted}"),
    )
    .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&admin)
        .await
        .unwrap();
    let app_url = url.replacen("postgres://rpod@", "postgres://rpod_app@", 1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog-password"), CATALOG_PASSWORD).unwrap();
    std::fs::write(
        dir.path().join("wrong-password"),
        "canary-wrong-catalog-password-77e0",
    )
    .unwrap();
    let config = |password_file: &str| {
        format!(
            "[daemon]\nstate_dir = \"{d}/state\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
             evaluation_interval = \"300ms\"\nshutdown_timeout = \"2s\"\n\n\
             [catalog]\nurl = \"{app_url}\"\npassword_file = \"{d}/{password_file}\"\nlease = \"2s\"\n\n\
             [storage.local]\nkind = \"directory\"\npath = \"{d}/backups\"\n\n\
             [[targets]]\nname = \"canary-db\"\nkind = \"command\"\ncommand = [\"echo\", \"data\"]\n\
             storage = \"local\"\n[targets.policy]\nrpo = \"1h\"\n",
            d = dir.path().display()
        )
    };
    let path = dir.path().join("rpod.toml");
    std::fs::write(&path, config("catalog-password")).unwrap();
    let env = [("RUST_LOG".to_owned(), "debug".to_owned())];
    let mut replica = crate::support::DaemonProcess::start_with_env(&path, &env);
    let catalog = rpod::catalog::Catalog::open_postgres(&rpod::catalog::PostgresCatalog {
        url: url.clone(),
        password: None,
        ca_file: None,
    })
    .await
    .unwrap();
    eventually(
        Duration::from_secs(20),
        "a backup through the password login",
        || async {
            let records = catalog.backups(Some("canary-db"), 10).await.ok()?;
            records
                .iter()
                .any(|r| r.status == Status::Succeeded)
                .then_some(())
        },
    )
    .await;
    let canaries = [CATALOG_PASSWORD, "canary-wrong-catalog-password-77e0"];
    for endpoint in ["/metrics", "/api/v1/targets", "/api/v1/replicas", "/readyz"] {
        let body = reqwest::get(replica.url(endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_clean(endpoint, &body, &canaries);
    }
    replica.signal(nix::sys::signal::Signal::SIGTERM);
    replica.wait_exit(Duration::from_secs(20)).expect("stops");
    let log = replica.log.lock().unwrap().join("\n");
    assert!(log.contains("Leases changed"), "the debug log was captured");
    assert_clean("the replica's log", &log, &canaries);
    // Every text the catalog holds.
    let dump: Vec<(String,)> = sqlx::query_as(
        "SELECT string_agg(t::text, ' ') FROM (
             SELECT b::text AS t FROM backups b UNION ALL SELECT a::text FROM audit a
             UNION ALL SELECT s::text FROM target_state s UNION ALL SELECT r::text FROM replicas r
             UNION ALL SELECT l::text FROM leases l) rows",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_clean("the catalog's tables", &format!("{dump:?}"), &canaries);
    for args in [
        &["status"][..],
        &["backups", "--json"][..],
        &["check-config"][..],
    ] {
        let output = run_rpod(&path, args);
        assert!(output.status.success(), "rpod {args:?}: {output:?}");
        assert_clean(
            &format!("rpod {args:?}"),
            &format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            &canaries,
        );
    }
    // A wrong password is refused with the server's words, never the password.
    std::fs::write(&path, config("wrong-password")).unwrap();
    let output = run_rpod(&path, &["status"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert_clean("the login error", &stderr, &canaries);
}
