//! Shared test support.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Path to the built `rpod` binary.
pub fn rpod_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rpod"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs an external tool (systemd-analyze, promtool, kubectl, ...) from the repository root with `input` on its
/// standard input. A tool that cannot be started fails the test, naming the script in `scripts/tools.d` that
/// installs it.
pub fn run_tool(program: &str, args: &[&str], input: &str, installer: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} ({err}): scripts/tools.d/{installer} installs it")
        });
    // A tool that fails before reading its input closes the pipe; its exit status and stderr tell why.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// What a tool printed, for assertion messages.
pub fn printed(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
