//! Test support for rpod: a loopback emulator of the Azure endpoints rpod calls, and a harness that runs
//! Azurite (Microsoft's Azure Storage emulator) as real blob storage.
//!
//! # Layout
//! - [`azurite`]: start Azurite as a child process on a free loopback port; stopped and cleaned up on drop.
//! - [`blob`]: a small Shared Key blob client (create container, put, list, stat, delete), independent of rpod.

pub mod azurite;
pub mod blob;

pub use azurite::Azurite;
pub use blob::{BlobEntry, BlobError, BlobStore};
