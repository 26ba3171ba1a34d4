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
//! # Layout
//! - [`emulator`]: the [`Emulator`] handle: start, configure, inject faults, read logs, shut down.
//! - [`config`]: [`EmulatorConfig`], [`ServiceSpec`], [`StorageAccount`].
//! - [`fault`]: [`Fault`], [`Route`], [`FaultKind`] and the queue they wait in.
//! - [`log`]: [`LoggedRequest`] and [`TokenRequest`].
//! - [`service`]: a hosted API Management service, its JSON, and the [`ServiceState`] snapshot.
//! - [`azurite`]: start Azurite as a child process on a free loopback port; stopped and cleaned up on drop.
//! - [`blob`]: a small Shared Key blob client (create container, put, list, stat, delete), independent of rpod.
//! - [`cli`]: the command line of the runnable emulator (`cargo run --example azure-emulator`).
//! - Internal: `server` (hyper accept loop, resets, hangs), `handler` (routing, faults, auth, throttling),
//!   `routes` (path parsing), `token`, `apim`, `operation` (backup and restore tasks), `state`, `reply`,
//!   `throttle`, `clock`.

pub mod azurite;
pub mod blob;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod fault;
pub mod log;
pub mod service;

mod apim;
mod clock;
mod handler;
mod operation;
mod reply;
mod routes;
mod server;
mod state;
mod throttle;
mod token;

pub use azurite::Azurite;
pub use blob::{BlobEntry, BlobError, BlobStore};
pub use config::{EmulatorConfig, ServiceSpec, StorageAccount};
pub use emulator::Emulator;
pub use fault::{Fault, FaultKind, Route};
pub use log::{LoggedRequest, TokenKind, TokenRequest};
pub use service::ServiceState;
