//! rpod's integration tests: one binary, one module per area.

// Metric values are compared exactly: they are counts and millisecond timestamps.
#![allow(clippy::float_cmp)]

mod alerting;
mod apim;
mod apim_restore;
mod arm;
mod azure_blob;
mod catalog;
mod catalog_suite;
mod changes;
mod cloud;
mod config;
mod credentials;
mod daemon;
mod deploy;
mod helpers;
mod honest;
mod kinds;
mod leases;
mod lifecycle;
mod policy;
mod postgres;
mod prune;
mod replicas;
mod restore;
mod scheduler;
mod secrets;
mod stack;
mod support;
mod systemd;
mod vm;
mod webhook;
