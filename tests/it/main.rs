//! rpod's integration tests: one binary, one module per area.

mod catalog;
mod config;
mod daemon;
mod helpers;
mod lifecycle;
mod policy;
mod prune;
mod scheduler;
mod support;
