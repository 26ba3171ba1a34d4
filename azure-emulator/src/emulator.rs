//! [`Emulator`]: the handle a test holds to start the emulator, tell it what exists, inject faults, and read
//! what it saw.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{EmulatorConfig, ServiceSpec, StorageAccount};
use crate::fault::Fault;
use crate::log::{LoggedRequest, TokenRequest};
use crate::server;
use crate::service::{Service, ServiceState};
use crate::state::{Shared, State, service_key};

/// A running emulator. Clones share the same server; [`Emulator::shutdown`] stops it for all of them (so does
/// dropping the Tokio runtime it runs on).
#[derive(Debug, Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
    base_url: String,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Emulator {
    /// Binds `127.0.0.1:{config.port}` and starts serving. The listener is bound before this returns, so the
    /// emulator answers as soon as the caller has it.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: EmulatorConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared::new(State::new(config, base_url.clone())));
        let server = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(Self {
            shared,
            base_url,
            server: Arc::new(Mutex::new(Some(server))),
        })
    }

    /// `http://127.0.0.1:{port}`: the ARM endpoint (`resource_manager_endpoint`), the Entra ID authority
    /// (`{base}/{tenant}/oauth2/v2.0/token`) and the managed identity endpoints (`{base}/msi/token`,
    /// `{base}/metadata/identity/oauth2/token`). The emulator's own control endpoints live under
    /// `{base}/emulator/` (see the crate documentation).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The App Service managed identity endpoint, for `IDENTITY_ENDPOINT`.
    #[must_use]
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.base_url)
    }

    /// The `x-identity-header` value expected, for `IDENTITY_HEADER`.
    #[must_use]
    pub fn identity_header(&self) -> String {
        self.shared.lock().config.identity_header.clone()
    }

    /// Hosts a service (replacing one with the same subscription, group and name).
    pub fn add_service(&self, spec: ServiceSpec) {
        let mut state = self.shared.lock();
        let key = service_key(&spec.subscription, &spec.resource_group, &spec.name);
        let now = state.now();
        state.services.insert(key, Service::new(spec, now));
    }

    /// Registers a storage account that backups may go to (replacing one of the same name).
    pub fn add_account(&self, account: StorageAccount) {
        self.shared
            .lock()
            .accounts
            .insert(account.name.to_ascii_lowercase(), account);
    }

    /// Sets how long operations accepted from now on run.
    pub fn set_operation_duration(&self, duration: Duration) {
        self.shared.lock().set_operation_duration(duration);
    }

    /// Sets the `Retry-After` seconds of 202 answers from now on.
    pub fn set_retry_after(&self, secs: u64) {
        self.shared.lock().config.retry_after_secs = secs;
    }

    /// Moves the emulator's calendar forward (ages backups, moves the dates it reports). Running operations are
    /// not affected: they follow Tokio's clock (advance it with `tokio::time::advance` under paused time).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.lock().clock.advance(by);
    }

    /// Queues a fault behind those already injected.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Mints an access token ARM accepts, as if a token endpoint had issued it (for tests calling ARM directly).
    #[must_use]
    pub fn issue_token(&self) -> String {
        self.shared.lock().issue_token()
    }

    /// Every request received so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Every token request received so far, in order (issued or refused).
    #[must_use]
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared.lock().token_requests.clone()
    }

    /// How many access tokens were issued (by the endpoints or [`Self::issue_token`]).
    #[must_use]
    pub fn issued_tokens(&self) -> usize {
        self.shared.lock().issued_tokens()
    }

    /// How many ARM requests the throttling buckets refused.
    #[must_use]
    pub fn throttled_count(&self) -> u64 {
        self.shared.lock().throttled
    }

    /// A snapshot of a hosted service, found case-insensitively.
    #[must_use]
    pub fn service(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> Option<ServiceState> {
        let state = self.shared.lock();
        state
            .services
            .get(&service_key(subscription, resource_group, name))
            .map(Service::snapshot)
    }

    /// Simulates a configuration change on a service (say, an API edited in the portal): moves
    /// `configurationChangeDate`, the etag and `lastModifiedAt` to now. The control endpoint
    /// `POST {base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}/change` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn make_change(&self, subscription: &str, resource_group: &str, name: &str) {
        let found =
            self.shared
                .lock()
                .make_change(&service_key(subscription, resource_group, name));
        assert!(
            found,
            "make_change: no hosted service {subscription}/{resource_group}/{name}"
        );
    }

    /// Sets a service's `configurationChangeDate` (as its `tenant/configuration/syncState` reports it) to `at`,
    /// and nothing else: the etag and `systemData.lastModifiedAt` do not move. This simulates a configuration
    /// change (an API, product or policy edit) that ARM's service resource does not show, so that a test can
    /// tell the two signals apart; `at` may be in the past or the future. `isSynced` turns false when `at` is
    /// after the last sync. The control endpoint
    /// `PUT {base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}/configurationChangeDate` with
    /// `{"configurationChangeDate":"2026-01-01T00:00:00Z"}` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn set_configuration_change_date(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        at: DateTime<Utc>,
    ) {
        let found = self
            .shared
            .lock()
            .set_configuration_change_date(&service_key(subscription, resource_group, name), at);
        assert!(
            found,
            "set_configuration_change_date: no hosted service {subscription}/{resource_group}/{name}"
        );
    }

    /// Stops serving: closes every connection (hanging ones included) and stops running operations.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        let server = self.server.lock().expect("server handle lock").take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}
