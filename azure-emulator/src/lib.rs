//! Test support for rpod: a loopback emulator of the Azure endpoints rpod calls, and a harness that runs
//! Azurite (Microsoft's Azure Storage emulator) as real blob storage.
//!
//! The emulator speaks the wire contracts of the design (§8) including their quirks: Entra ID and managed
//! identity tokens; API Management get, sync state, backup and restore as Location-only long-running operations
//! (202 with `Retry-After`, a first `Location` with `//operationresults/`, a completed operation that keeps
//! answering 200); ARM errors, `x-ms-request-id` on every answer and token-bucket throttling. A completed backup
//! writes a real blob into the storage account (Azurite in tests). Faults can be injected per route, and every
//! request is logged for assertions.
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
//! The same two changes can be made over HTTP, which is handy against the runnable emulator. These control
//! endpoints are not ARM: they need no token, are never throttled or faulted, and are logged like every request.
//! - `POST {base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}/change` → 204.
//! - `PUT {base}/emulator/subscriptions/{sub}/resourceGroups/{rg}/services/{name}/configurationChangeDate` with
//!   `{"configurationChangeDate":"2026-01-01T00:00:00Z"}` → 204, or 400 for a bad body.
//!
//! Both answer 404 with a JSON error when no such service is hosted, and 405 to other methods.
//!
//! # Layout
//! - [`emulator`]: the [`Emulator`] handle: start, configure, inject faults, read logs, shut down.
//! - [`config`]: [`EmulatorConfig`], [`ServiceSpec`], [`StorageAccount`].
//! - [`fault`]: [`Fault`], [`Route`], [`FaultKind`] and the queue they wait in.
//! - [`log`]: [`LoggedRequest`] and [`TokenRequest`].
//! - [`service`]: a hosted API Management service, its JSON, and the [`ServiceState`] snapshot.
//! - [`azurite`]: start Azurite as a child process on a free loopback port; stopped and cleaned up on drop.
//! - [`blob`]: a small Shared Key blob client (create container, put, list, stat, delete; Blob service CORS
//!   rules), independent of rpod.
//! - [`cli`]: the command line of the runnable emulator (`cargo run --example azure-emulator`).
//! - Internal: `server` (hyper accept loop, resets, hangs), `handler` (routing, faults, auth, throttling),
//!   `routes` (path parsing), `token`, `apim`, `operation` (backup and restore tasks), `control` (the control
//!   endpoints), `state`, `reply`, `throttle`, `clock`.

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
