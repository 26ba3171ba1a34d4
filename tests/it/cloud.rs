//! The Azure harness of the integration tests: Azurite as real blob storage, the in-repo Resource Manager
//! emulator beside it, and the configuration of `apim` targets against both.

use std::time::Duration;

use azure_emulator::{
    Azurite, Emulator, EmulatorConfig, LoggedRequest, ServiceSpec, StorageAccount,
};
use rpod::app::Environment;
use rpod::azure::transport::LoopbackOnly;
use rpod::clock::Clock;

use crate::support::{TestApp, spawn_app_in};

pub const SUB: &str = "00000000-0000-0000-0000-0000000000aa";
pub const RG: &str = "rg-apim";
pub const CONTAINER: &str = "apim-backups";
pub const THIRTY_DAYS_MS: i64 = 30 * 24 * 3600 * 1000;

/// Azurite plus the emulator, with one storage account (Azurite's) registered.
pub struct Cloud {
    pub azurite: Azurite,
    pub emulator: Emulator,
}

impl Cloud {
    pub async fn start(config: EmulatorConfig) -> Self {
        let azurite = Azurite::start().await.expect("Azurite starts");
        azurite.create_container(CONTAINER).await.unwrap();
        let emulator = Emulator::start(config).await.unwrap();
        emulator.add_account(StorageAccount::azurite(&azurite));
        Self { azurite, emulator }
    }

    /// Operations of `duration`, polled every second.
    pub async fn fast(duration: Duration) -> Self {
        let mut config = EmulatorConfig::fast();
        config.operation_duration = duration;
        Self::start(config).await
    }

    pub fn service(&self, name: &str) -> ServiceSpec {
        let spec = ServiceSpec::new(SUB, RG, name)
            .with_sku("Premium", 1)
            .with_system_identity(true)
            .with_user_identity("11111111-2222-3333-4444-555555555555");
        self.emulator.add_service(spec.clone());
        spec
    }

    /// An environment whose SDK clients reach only loopback, with the managed identity (IMDS) endpoint
    /// rewritten to the emulator.
    pub fn environment(&self) -> Environment {
        Environment::loopback(LoopbackOnly::transport(vec![(
            "http://169.254.169.254/".to_owned(),
            format!("{}/", self.emulator.base_url()),
        )]))
    }

    /// Managed identity for a child process: the App Service endpoint on the emulator.
    pub fn identity_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "IDENTITY_ENDPOINT".to_owned(),
                self.emulator.identity_endpoint(),
            ),
            (
                "IDENTITY_HEADER".to_owned(),
                self.emulator.identity_header(),
            ),
        ]
    }

    /// `[azure]` and an `azure_blob` storage `blob` with APIM access `access` (`access_key` reads `{dir}/key`).
    pub fn config(&self, access: &str, extra: &str) -> String {
        let access_lines = match access {
            "access_key" => "access = \"access_key\"".to_owned(),
            "user_managed_identity" => "access = \"user_managed_identity\"\nidentity_client_id = \
                 \"11111111-2222-3333-4444-555555555555\""
                .to_owned(),
            other => format!("access = \"{other}\""),
        };
        format!(
            r#"
[daemon]
state_dir = "{{dir}}/state"
listen = "127.0.0.1:0"
evaluation_interval = "300ms"
shutdown_timeout = "2s"
log_format = "json"

[azure]
credential = "managed_identity"
resource_manager_endpoint = "{arm}"
min_retry_after = "1s"
max_retry_after = "2s"
request_timeout = "5s"

[storage.blob]
kind = "azure_blob"
account = "{account}"
container = "{CONTAINER}"
endpoint = "{endpoint}"
{access_lines}
auth = "access_key"
access_key_file = "{{dir}}/key"
{extra}
"#,
            arm = self.emulator.base_url(),
            account = self.azurite.account(),
            endpoint = self.azurite.blob_endpoint(),
        )
    }

    pub fn key_file(&self) -> (&'static str, Vec<u8>) {
        ("key", self.azurite.key().as_bytes().to_vec())
    }

    pub async fn spawn(&self, config: &str) -> TestApp {
        let (name, key) = self.key_file();
        spawn_app_in(
            config,
            &[(name, key.as_slice())],
            self.environment(),
            Clock::system(),
        )
        .await
    }

    /// Requests to `service`'s ARM paths (backup POSTs, polls), in arrival order.
    pub fn requests_for(&self, service: &str) -> Vec<LoggedRequest> {
        let needle = format!("/service/{}/", service.to_ascii_lowercase());
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| r.path_and_query.to_ascii_lowercase().contains(&needle))
            .collect()
    }

    pub fn backup_posts(&self, service: &str) -> Vec<LoggedRequest> {
        self.requests_for(service)
            .into_iter()
            .filter(|r| r.method == "POST" && r.path().ends_with("/backup"))
            .collect()
    }

    pub async fn blobs(&self) -> Vec<String> {
        self.azurite
            .list_blobs(CONTAINER, "")
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect()
    }
}

pub fn target(name: &str, service: &str, policy: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
kind = "apim"
subscription_id = "{SUB}"
resource_group = "{RG}"
service = "{service}"
storage = "blob"
[targets.policy]
{policy}
"#
    )
}
