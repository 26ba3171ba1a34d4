//! The Azure emulator, runnable by hand next to rpod:
//! `cargo run --example azure-emulator -- --service SUB/RG/NAME --duration 30s --azurite`.
//! Everything lives in the `azure-emulator` crate; see `azure_emulator::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    azure_emulator::cli::main()
}
