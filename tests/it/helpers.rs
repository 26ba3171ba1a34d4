//! Shared test support.

use std::path::PathBuf;

/// Path to the built `rpod` binary.
pub fn rpod_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rpod"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
