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
use crate::service::{Content, Service, ServiceState};
use crate::setting::Setting;
use crate::settings::{CertificateSource, CustomHostname, VirtualNetworkType};
use crate::state::{Shared, State, service_key};
use crate::vm::{HealthStatus, ProtectedVmRef, ProtectedVmSpec, ProtectedVmState, ProtectionState};

/// A running emulator. Clones share the same server; [`Emulator::shutdown`] stops it for all of them (so does
/// dropping the Tokio runtime it runs on).
#[derive(Debug, Clone)]
pub struct Emulator {
    pub(crate) shared: Arc<Shared>,
    base_url: String,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// The CA and leaf certificates (PEM) when serving HTTPS.
    certificates: Option<Arc<(String, String)>>,
}

impl Emulator {
    /// Binds `127.0.0.1:{config.port}` and starts serving (HTTPS with a fresh test CA when
    /// [`EmulatorConfig::tls`] is set). The listener is bound before this returns, so the emulator answers as
    /// soon as the caller has it.
    ///
    /// # Errors
    /// When the port cannot be bound (or, with TLS, the certificates cannot be made).
    pub async fn start(config: EmulatorConfig) -> io::Result<Self> {
        let tls = if config.tls {
            Some(crate::tls::generate()?)
        } else {
            None
        };
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{}", listener.local_addr()?);
        let shared = Arc::new(Shared::new(State::new(config, base_url.clone())));
        let certificates = tls
            .as_ref()
            .map(|tls| Arc::new((tls.ca_pem.clone(), tls.leaf_pem.clone())));
        let acceptor = tls.map(|tls| tls.acceptor);
        let server = tokio::spawn(server::serve(listener, Arc::clone(&shared), acceptor));
        Ok(Self {
            shared,
            base_url,
            server: Arc::new(Mutex::new(Some(server))),
            certificates,
        })
    }

    /// The test CA's certificate (PEM) when the emulator serves HTTPS, `None` otherwise. A client that trusts
    /// it alone (and not the system's roots) reaches the emulator; one with the usual roots refuses it as an
    /// unknown issuer. The CA has `basicConstraints` `CA:TRUE`, the key usage `keyCertSign` and the common name
    /// `rpod emulator test root CA`.
    #[must_use]
    pub fn ca_pem(&self) -> Option<String> {
        self.certificates.as_ref().map(|pems| pems.0.clone())
    }

    /// The server's leaf certificate (PEM) when the emulator serves HTTPS, `None` otherwise: issued by the CA
    /// of [`Self::ca_pem`] for `127.0.0.1`, `::1` and `localhost`; not a CA (handy as a wrong "CA file").
    #[must_use]
    pub fn leaf_pem(&self) -> Option<String> {
        self.certificates.as_ref().map(|pems| pems.1.clone())
    }

    /// `http://127.0.0.1:{port}` (`https://` with [`EmulatorConfig::tls`]): the ARM endpoint (`resource_manager_endpoint`), the Entra ID authority
    /// (`{base}/{tenant}/oauth2/v2.0/token`) and the managed identity endpoints (`{base}/msi/token`,
    /// `{base}/metadata/identity/oauth2/token`), an Azure Stack Hub stamp's metadata (`{base}/metadata/endpoints`)
    /// and AD FS (`{base}/adfs/oauth2/token`). The emulator's own control endpoints live under
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

    /// Sets how long operations accepted from now on run: backups, and restores unless
    /// [`Self::set_restore_duration`] (or [`EmulatorConfig::restore_duration`]) gave them their own duration.
    pub fn set_operation_duration(&self, duration: Duration) {
        self.shared.lock().set_operation_duration(duration);
    }

    /// Sets how long restores accepted from now on run, apart from backups (real restores take about 30 minutes,
    /// backups about 9).
    pub fn set_restore_duration(&self, duration: Duration) {
        self.shared.lock().set_restore_duration(duration);
    }

    /// Sets the `Retry-After` seconds of 202 answers from now on (API Management and Recovery Services).
    pub fn set_retry_after(&self, secs: u64) {
        self.shared.lock().config.retry_after_secs = secs;
    }

    /// Moves the emulator's calendar forward (ages backups, moves the dates it reports). Running API Management
    /// operations are not affected: they follow Tokio's clock (advance it with `tokio::time::advance` under
    /// paused time). Recovery Services backups follow the calendar: this moves them (and the UTC day of the
    /// on-demand limit) too, and so do Azure Stack Hub backups, their scheduler and their retention.
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
        self.apply(
            "make_change",
            (subscription, resource_group, name),
            Setting::Change,
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
        self.apply(
            "set_configuration_change_date",
            (subscription, resource_group, name),
            Setting::ConfigurationChangeDate(at),
        );
    }

    /// Sets how many APIs and products a service has: its configuration, which a backup records (as of its
    /// completion) and a completed restore sets on the destination. `GET .../apis` and `.../products` list
    /// that many. When the counts change, `configurationChangeDate` moves to now (a configuration change); the
    /// etag and `lastModifiedAt` stay. The control endpoint `PUT .../services/{name}/content` with
    /// `{"apis":5,"products":3}` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn set_content(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        apis: u32,
        products: u32,
    ) {
        self.apply(
            "set_content",
            (subscription, resource_group, name),
            Setting::Content(Content { apis, products }),
        );
    }

    /// Publishes a service's developer portal (`GET .../portalRevisions` then lists one current, completed
    /// revision; publishing an unpublished portal makes a new one) or unpublishes it (no revision is listed). A
    /// restore never changes this. No change signal moves. The control endpoint
    /// `PUT .../services/{name}/portalPublished` with `{"published":false}` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn set_portal_published(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        published: bool,
    ) {
        self.apply(
            "set_portal_published",
            (subscription, resource_group, name),
            Setting::PortalPublished(published),
        );
    }

    /// Adds a custom gateway hostname with a certificate from `source` to a service, or changes the source of
    /// the one with that name; it shows in `properties.hostnameConfigurations`. A restore never changes custom
    /// hostnames. Like any update of the ARM resource, this moves the etag and `lastModifiedAt` (not
    /// `configurationChangeDate`). The control endpoint `PUT .../services/{name}/customHostname` with
    /// `{"hostName":"api.contoso.example","certificateSource":"KeyVault"}` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn set_custom_hostname(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        host_name: &str,
        source: CertificateSource,
    ) {
        self.apply(
            "set_custom_hostname",
            (subscription, resource_group, name),
            Setting::CustomHostname(CustomHostname::new(host_name, source)),
        );
    }

    /// Sets a service's managed identities: the top-level `identity` then has type `None`, `SystemAssigned`,
    /// `UserAssigned` or `SystemAssigned, UserAssigned`, and backups by managed identity need the one they
    /// name. Identities are not in a backup: a restore never changes them. Like any update of the ARM resource,
    /// this moves the etag and `lastModifiedAt`. The control endpoint `PUT .../services/{name}/identity` with
    /// `{"type":"SystemAssigned, UserAssigned","userAssignedClientIds":["<client id>"]}` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn set_identity(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        system_assigned: bool,
        user_assigned_client_ids: &[&str],
    ) {
        let user_assigned_client_ids = user_assigned_client_ids
            .iter()
            .map(|id| (*id).to_owned())
            .collect();
        self.apply(
            "set_identity",
            (subscription, resource_group, name),
            Setting::Identity {
                system_assigned,
                user_assigned_client_ids,
            },
        );
    }

    /// Sets a service's `properties.virtualNetworkType` (with a `virtualNetworkConfiguration` and private IP
    /// addresses outside `None`). Not in a backup: a restore never changes it. Like any update of the ARM
    /// resource, this moves the etag and `lastModifiedAt`. The control endpoint
    /// `PUT .../services/{name}/virtualNetworkType` with `{"virtualNetworkType":"Internal"}` does the same.
    ///
    /// # Panics
    /// When no such service is hosted: that is a mistake in the test.
    pub fn set_virtual_network_type(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        kind: VirtualNetworkType,
    ) {
        self.apply(
            "set_virtual_network_type",
            (subscription, resource_group, name),
            Setting::VirtualNetworkType(kind),
        );
    }

    /// Applies `setting` to a hosted service; `what` names the caller in the panic for an unknown service.
    fn apply(
        &self,
        what: &str,
        (subscription, resource_group, name): (&str, &str, &str),
        setting: Setting,
    ) {
        let found = self
            .shared
            .lock()
            .apply(&service_key(subscription, resource_group, name), setting);
        assert!(
            found,
            "{what}: no hosted service {subscription}/{resource_group}/{name}"
        );
    }

    /// The emulator's calendar now: the clock Recovery Services jobs, the UTC day of the on-demand limit and
    /// Azure Stack Hub backups follow (it moves with Tokio's clock, paused or not, and with [`Self::advance_clock`]).
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.lock().now()
    }

    /// Protects a VM in a Recovery Services vault (creating the vault when needed, replacing a VM of the same
    /// name with its history, and storing its policy in the vault).
    pub fn add_protected_vm(&self, spec: ProtectedVmSpec) {
        crate::recovery::host(&mut self.shared.lock(), spec);
    }

    /// Adds a recovery point made by the vault's own policy (a scheduled backup), dated `time` and expiring at
    /// `expiry`; the item's `lastBackupTime` moves to `time` if later, `lastBackupStatus` becomes `Completed`.
    /// No job is made. Returns the point's name. The control endpoint
    /// `POST {base}/emulator/subscriptions/{sub}/resourceGroups/{vaultRg}/vaults/{vault}/protectedVms/{vmRg}/{vm}/policyRecoveryPoints`
    /// with `{"recoveryPointTime":"...","expiryTime":"..."}` does the same.
    ///
    /// # Panics
    /// When no such VM is protected: that is a mistake in the test.
    // Tests often want the point only, not its name.
    #[allow(clippy::must_use_candidate)]
    pub fn add_policy_recovery_point(
        &self,
        vm: &ProtectedVmRef,
        time: DateTime<Utc>,
        expiry: DateTime<Utc>,
    ) -> String {
        crate::recovery::add_policy_point(&mut self.shared.lock(), vm, time, expiry)
            .unwrap_or_else(|| panic!("add_policy_recovery_point: no protected VM {vm:?}"))
    }

    /// Sets a protected VM's `protectionState`; on-demand backups are refused outside `Protected` and
    /// `IRPending`. The control endpoint `PUT .../protectedVms/{vmRg}/{vm}/protectionState` with
    /// `{"protectionState":"ProtectionStopped"}` does the same.
    ///
    /// # Panics
    /// When no such VM is protected: that is a mistake in the test.
    pub fn set_protection_state(&self, vm: &ProtectedVmRef, state: ProtectionState) {
        crate::recovery::with_item(&mut self.shared.lock(), vm, |item, _| {
            item.spec.protection_state = state;
        })
        .unwrap_or_else(|| panic!("set_protection_state: no protected VM {vm:?}"));
    }

    /// Sets a protected VM's `healthStatus` (and so `protectionStatus`). The control endpoint
    /// `PUT .../protectedVms/{vmRg}/{vm}/healthStatus` with `{"healthStatus":"ActionRequired"}` does the same.
    ///
    /// # Panics
    /// When no such VM is protected: that is a mistake in the test.
    pub fn set_health_status(&self, vm: &ProtectedVmRef, status: HealthStatus) {
        crate::recovery::with_item(&mut self.shared.lock(), vm, |item, _| {
            item.spec.health_status = status;
        })
        .unwrap_or_else(|| panic!("set_health_status: no protected VM {vm:?}"));
    }

    /// A snapshot of a protected VM (found ignoring case), brought up to the emulator's clock first.
    #[must_use]
    pub fn protected_vm(&self, vm: &ProtectedVmRef) -> Option<ProtectedVmState> {
        crate::recovery::snapshot(&mut self.shared.lock(), vm)
    }

    /// Sets how long the operation phase of VM backups accepted from now on runs.
    pub fn set_vm_operation_duration(&self, duration: Duration) {
        self.shared.lock().config.vm_operation_duration = duration;
    }

    /// Sets how long the jobs of VM backups accepted from now on run.
    pub fn set_vm_job_duration(&self, duration: Duration) {
        self.shared.lock().config.vm_job_duration = duration;
    }

    /// Sets how many recovery points a page of `GET .../recoveryPoints` holds (at least 1).
    pub fn set_recovery_point_page_size(&self, size: usize) {
        self.shared.lock().config.recovery_point_page_size = size.max(1);
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
