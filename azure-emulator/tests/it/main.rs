//! Tests of the emulator crate against itself over real loopback HTTP, and of the Azurite harness against a real
//! Azurite. One binary, one module per area.

mod azurite;
mod backup;
mod changes;
mod content;
mod faults;
mod recovery;
mod requests;
mod restore;
mod stack;
mod support;
mod throttling;
mod tls;
mod tokens;
