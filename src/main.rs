//! The `rpod` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    rpod::cli::execute(rpod::cli::Cli::parse()).await
}
