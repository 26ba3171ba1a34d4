//! Test support for rpod: a loopback emulator of the Azure endpoints rpod calls, and a harness that runs
//! Azurite (Microsoft's Azure Storage emulator) as real blob storage.
//!
//! The emulator speaks the wire contracts of the design (§8) including their quirks: Entra ID and managed
//! identity tokens; API Management get, sync state, backup and restore as Location-only long-running operations
//! (202 with `Retry-After`, a first `Location` with `//operationresults/`, a completed operation that keeps
//! answering 200); the service's APIs, products and developer portal revisions as ARM collections; ARM errors,
//! `x-ms-request-id` on every answer and token-bucket throttling. A completed backup writes a real blob into the
//! storage account (Azurite in tests). Faults can be injected per route, and every request is logged for
//! assertions.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use azure_emulator::{Azurite, Emulator, EmulatorConfig, ServiceSpec, StorageAccount};
//! let azurite = Azurite::start().await?;
//! let emulator = Emulator::start(EmulatorConfig::fast()).await?;
//! emulator.add_service(ServiceSpec::new("sub-1", "rg-1", "apim-1"));
//! emulator.add_account(StorageAccount::azurite(&azurite));
//! // point rpod's resource_manager_endpoint at emulator.base_url() ...
//! # Ok(()) }
//! ```
//!
//! # Change signals
//! A hosted service reports API Management's change signals as ARM does (design §8): the service resource's
//! `etag` (also the `ETag` header) and `systemData.lastModifiedAt`, and the sync state's
//! `configurationChangeDate`.
//! - An accepted backup or restore moves the etag and `lastModifiedAt` (the service goes to `Updating`), and they
//!   move again when it completes; the completed operation's 200 carries the resource as of completion.
//! - A backup never moves `configurationChangeDate`; a completed restore does (the configuration is replaced).
//! - [`Emulator::make_change`] simulates a configuration change: all three move.
//! - [`Emulator::set_configuration_change_date`] sets `configurationChangeDate` alone, for a change that the ARM
//!   resource does not show.
//!
//! # What a backup carries and a restore replaces
//! A service has content: a number of APIs and of products ([`ServiceSpec::apis`], [`ServiceSpec::products`];
//! a new service has 1 API, `echo-api`, and 2 products, `starter` and `unlimited`). A backup records the
//! source's SKU and content as they are when it completes; a completed restore gives the destination the
//! backup's content (and moves its `configurationChangeDate`, etag and `lastModifiedAt`). Restores fail on a
//! poll with 400 `RestoreFailed` when the backup is missing (`Cannot restore: backup not found`), 30 days old
//! (`Cannot restore: backup expired`) or from another SKU (`Cannot restore: current SKU is 'X', backup SKU is
//! 'Y'`).
//!
//! What a backup does not carry, a restore leaves as it is on the destination: custom hostnames (with their
//! certificate source), the managed identity, the virtual network type, and the developer portal's publication
//! (its revisions). The service resource shows the first three as ARM does: top-level `identity`,
//! `properties.hostnameConfigurations` (the default `{name}.azure-api.net` `Proxy` entry with certificate source
//! `BuiltIn`, then custom ones), `properties.virtualNetworkType`; and `properties.developerPortalStatus`
//! (always `Enabled`).
//!
//! Content is served as ARM collections `{"value":[{id,type,name,properties}...],"count":N,"nextLink":...}`:
//! `GET .../service/{name}/apis`, `.../products` and `.../portalRevisions` (one current `completed` revision while
//! the portal is published, none otherwise). `$top` truncates `value` while `count` stays the total, so
//! `$top=1` reads a count cheaply; `$skip` skips. Emulator choices where Azure's behaviour is UNVERIFIED: a
//! truncated page's `nextLink` is the same URL with `%24top` and `%24skip` moved past the page (null when
//! nothing follows; a spec example shows `""`); `portalRevisions` also carries `count` (the spec example shows
//! only `value`); a bad `$top` or `$skip` is answered 400 `ValidationError`.
//!
//! Test knobs: [`Emulator::set_content`] (a configuration change: `configurationChangeDate` moves, not the
//! etag), [`Emulator::set_portal_published`] (no signal moves), and, as ARM resource updates that move the etag
//! and `lastModifiedAt`, [`Emulator::set_custom_hostname`], [`Emulator::set_identity`] and
//! [`Emulator::set_virtual_network_type`]. The same can be given at creation with the `ServiceSpec::with_*`
//! methods.
//!
//! # Durations and busy services
//! A backup runs for [`EmulatorConfig::operation_duration`]; a restore for
//! [`EmulatorConfig::restore_duration`] when set (real restores take about 30 minutes against 9 for a backup;
//! [`Emulator::set_restore_duration`], `--restore-duration`), else for the same duration. While a backup or
//! restore runs, the service is `Updating` and another backup or restore on it is refused with 409 `Conflict`
//! (ARM error shape, no `Location`; an emulator choice, Azure's answer is UNVERIFIED).
//!
//! # Control endpoints
//! The same changes can be made over HTTP, which is handy against the runnable emulator. These control
//! endpoints are not ARM: they need no token, are never throttled or faulted, and are logged like every request.
//! All live under `{base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}` and answer 204:
//! - `POST .../change` (no body), as [`Emulator::make_change`].
//! - `PUT .../configurationChangeDate` with `{"configurationChangeDate":"2026-01-01T00:00:00Z"}`.
//! - `PUT .../content` with `{"apis":5,"products":3}`.
//! - `PUT .../portalPublished` with `{"published":false}`.
//! - `PUT .../customHostname` with `{"hostName":"api.contoso.example","certificateSource":"KeyVault"}`.
//! - `PUT .../identity` with `{"type":"SystemAssigned, UserAssigned","userAssignedClientIds":["<client id>"]}`.
//! - `PUT .../virtualNetworkType` with `{"virtualNetworkType":"Internal"}`.
//!
//! They answer 400 `InvalidRequestContent` for a bad body, 404 with a JSON error when no such service is hosted,
//! and 405 to other methods.
//!
//! # Layout
//! - [`emulator`]: the [`Emulator`] handle: start, configure, inject faults, read logs, shut down.
//! - [`config`]: [`EmulatorConfig`], [`ServiceSpec`], [`StorageAccount`].
//! - [`fault`]: [`Fault`], [`Route`], [`FaultKind`] and the queue they wait in.
//! - [`log`]: [`LoggedRequest`] and [`TokenRequest`].
//! - [`service`]: a hosted API Management service, its JSON, and the [`ServiceState`] snapshot.
//! - [`settings`]: what a restore leaves alone: [`CustomHostname`], [`CertificateSource`],
//!   [`VirtualNetworkType`].
//! - [`azurite`]: start Azurite as a child process on a free loopback port; stopped and cleaned up on drop.
//! - [`blob`]: a small Shared Key blob client (create container, put, list, stat, delete; Blob service CORS
//!   rules), independent of rpod.
//! - [`cli`]: the command line of the runnable emulator (`cargo run --example azure-emulator`).
//! - Internal: `server` (hyper accept loop, resets, hangs), `handler` (routing, faults, auth, throttling),
//!   `routes` (path parsing), `token`, `apim`, `operation` (backup and restore tasks), `content` (the APIs,
//!   products and portal revisions collections), `control` (the control endpoints), `setting` (a change to a
//!   service, from the handle or a control body), `state`, `reply`, `throttle`, `clock`.

pub mod azurite;
pub mod blob;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod fault;
pub mod log;
pub mod service;
pub mod settings;

mod apim;
mod clock;
mod content;
mod control;
mod handler;
mod operation;
mod reply;
mod routes;
mod server;
mod setting;
mod state;
mod throttle;
mod token;

pub use azurite::Azurite;
pub use blob::{BlobEntry, BlobError, BlobStore, CorsRule};
pub use config::{EmulatorConfig, ServiceSpec, StorageAccount};
pub use emulator::Emulator;
pub use fault::{Fault, FaultKind, Route};
pub use log::{LoggedRequest, TokenKind, TokenRequest};
pub use service::ServiceState;
pub use settings::{CertificateSource, CustomHostname, VirtualNetworkType};
