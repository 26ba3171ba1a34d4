//! Azurite, Microsoft's Azure Storage emulator, run as a child process for one test (or one run by hand).
//!
//! [`Azurite::start`] runs `node_modules/.bin/azurite-blob` (installed by `npm ci` from the repository's
//! `package.json`) on a loopback port with a fresh temporary data directory, and returns once Azurite says it is
//! listening. Dropping the handle kills that process (by its own PID, nothing else) and removes the directory.
//!
//! Azurite is asked to listen on port 0 and reports the port the system gave it, so two tests never race for a
//! port. Readiness is read from Azurite's own "successfully listens on" line; the 30 s deadline is enforced by a
//! plain thread rather than a Tokio timer so that tests running with paused Tokio time can start Azurite too.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::blob::{BlobEntry, BlobError, BlobStore, CorsRule};

/// Azurite's built-in account name.
pub const ACCOUNT: &str = "devstoreaccount1";

/// Azurite's built-in account key, copied from `azurite/dist/src/blob/utils/constants.js`
/// (`EMULATOR_ACCOUNT_KEY_STR`).
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Environment variable naming the `azurite-blob` executable, overriding the search for `node_modules`.
pub const EXECUTABLE_ENV: &str = "RPOD_AZURITE";

/// How long Azurite may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// What Azurite prints once its blob service accepts connections, followed by its URL.
const LISTENING: &str = "Azurite Blob service successfully listens on ";

/// A running Azurite blob service; killed, and its data removed, on drop.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    port: u16,
    store: BlobStore,
    // Dropped after the child is killed (fields drop after `Drop::drop` runs).
    _data: tempfile::TempDir,
}

impl Azurite {
    /// Starts Azurite's blob service on a free loopback port and waits until it listens.
    ///
    /// # Errors
    /// `NotFound` when `azurite-blob` cannot be found (run `npm ci` at the repository root, or set
    /// `RPOD_AZURITE`), `TimedOut` when it does not listen within 30 s, and any other failure to start it; the
    /// error message carries Azurite's own output.
    pub async fn start() -> io::Result<Self> {
        let executable = find_executable()?;
        let data = tempfile::Builder::new().prefix("azurite-").tempdir()?;
        let mut child = Command::new(&executable)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--location"])
            .arg(data.path())
            .args([
                "--silent",
                "--disableTelemetry",
                "--loose",
                "--skipApiVersionCheck",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", executable.display()),
                )
            })?;
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = oneshot::channel();
        let ready_tx = Arc::new(Mutex::new(Some(ready_tx)));
        let (seen_tx, seen_rx) = mpsc::channel::<()>();

        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_stdout_reader(stdout, Arc::clone(&output), Arc::clone(&ready_tx), seen_tx);
        spawn_collector(stderr, Arc::clone(&output));
        std::thread::spawn(move || {
            if seen_rx.recv_timeout(START_DEADLINE) == Err(mpsc::RecvTimeoutError::Timeout) {
                send_once(&ready_tx, Err(io::ErrorKind::TimedOut));
            }
        });

        let started = ready_rx.await.unwrap_or(Err(io::ErrorKind::Other));
        match started {
            Ok(port) => {
                let endpoint = format!("http://127.0.0.1:{port}/{ACCOUNT}");
                let store = BlobStore::new(ACCOUNT, &endpoint, KEY).map_err(io::Error::other)?;
                Ok(Self {
                    child,
                    port,
                    store,
                    _data: data,
                })
            }
            Err(kind) => {
                // Best effort: the process may already have exited.
                let _ = child.kill();
                let _ = child.wait();
                let output = output.lock().expect("output lock").clone();
                let what = if kind == io::ErrorKind::TimedOut {
                    format!("did not listen within {}s", START_DEADLINE.as_secs())
                } else {
                    "exited before listening".to_owned()
                };
                Err(io::Error::new(
                    kind,
                    format!(
                        "Azurite ({}) {what}; its output:\n{output}",
                        executable.display()
                    ),
                ))
            }
        }
    }

    /// The loopback port Azurite listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account's blob endpoint, `http://127.0.0.1:{port}/devstoreaccount1`.
    #[must_use]
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// The account name, `devstoreaccount1`.
    #[must_use]
    pub fn account(&self) -> &str {
        ACCOUNT
    }

    /// The account's well-known Shared Key.
    #[must_use]
    pub fn key(&self) -> &str {
        KEY
    }

    /// A Shared Key client for the account.
    #[must_use]
    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// Creates `container` (fine if it exists). See [`BlobStore::create_container`].
    ///
    /// # Errors
    /// As [`BlobStore::create_container`].
    pub async fn create_container(&self, container: &str) -> Result<(), BlobError> {
        self.store.create_container(container).await
    }

    /// Uploads a block blob. See [`BlobStore::put_blob`].
    ///
    /// # Errors
    /// As [`BlobStore::put_blob`].
    pub async fn put_blob(
        &self,
        container: &str,
        name: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<(), BlobError> {
        self.store.put_blob(container, name, bytes).await
    }

    /// Lists blobs under `prefix`, all pages. See [`BlobStore::list_blobs`].
    ///
    /// # Errors
    /// As [`BlobStore::list_blobs`].
    pub async fn list_blobs(
        &self,
        container: &str,
        prefix: &str,
    ) -> Result<Vec<BlobEntry>, BlobError> {
        self.store.list_blobs(container, prefix).await
    }

    /// Deletes a blob. See [`BlobStore::delete_blob`].
    ///
    /// # Errors
    /// As [`BlobStore::delete_blob`].
    pub async fn delete_blob(&self, container: &str, name: &str) -> Result<(), BlobError> {
        self.store.delete_blob(container, name).await
    }

    /// Whether a blob exists. See [`BlobStore::blob_exists`].
    ///
    /// # Errors
    /// As [`BlobStore::blob_exists`].
    pub async fn blob_exists(&self, container: &str, name: &str) -> Result<bool, BlobError> {
        self.store.blob_exists(container, name).await
    }

    /// Replaces the account's Blob service CORS rules (none: removes them). See [`BlobStore::set_cors_rules`].
    ///
    /// # Errors
    /// As [`BlobStore::set_cors_rules`].
    pub async fn set_cors_rules(&self, rules: &[CorsRule]) -> Result<(), BlobError> {
        self.store.set_cors_rules(rules).await
    }

    /// How many CORS rules the account's Blob service has. See [`BlobStore::cors_rule_count`].
    ///
    /// # Errors
    /// As [`BlobStore::cors_rule_count`].
    pub async fn cors_rule_count(&self) -> Result<usize, BlobError> {
        self.store.cors_rule_count().await
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // Our own child only; reaping it lets the temporary directory be removed cleanly afterwards.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `RPOD_AZURITE`, else `node_modules/.bin/azurite-blob` in this crate's directory, the current directory, or
/// any of their ancestors.
fn find_executable() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os(EXECUTABLE_ENV) {
        return Ok(PathBuf::from(path));
    }
    let mut starts = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    starts.extend(std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from));
    starts.extend(std::env::current_dir().ok());
    starts
        .iter()
        .flat_map(|start| start.ancestors())
        .map(|dir| dir.join("node_modules/.bin/azurite-blob"))
        .find(|candidate| is_file(candidate))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "azurite-blob not found in node_modules/.bin: run `npm ci` at the repository root \
                     (scripts/test does), or set {EXECUTABLE_ENV} to the executable"
                ),
            )
        })
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}

type ReadySender = Arc<Mutex<Option<oneshot::Sender<Result<u16, io::ErrorKind>>>>>;

/// Sends the start result unless one was already sent.
fn send_once(ready: &ReadySender, result: Result<u16, io::ErrorKind>) {
    if let Some(tx) = ready.lock().expect("ready lock").take() {
        let _ = tx.send(result);
    }
}

/// Reads Azurite's stdout to its end: reports the port from the "listening" line, keeps the text for error
/// messages, and keeps the pipe drained so Azurite never blocks on it.
fn spawn_stdout_reader(
    stdout: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    ready: ReadySender,
    seen: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            remember(&output, &line);
            if let Some(port) = listening_port(&line) {
                send_once(&ready, Ok(port));
                let _ = seen.send(());
            }
        }
        send_once(&ready, Err(io::ErrorKind::Other));
        let _ = seen.send(());
    });
}

/// Keeps a stream's text for error messages, draining the pipe.
fn spawn_collector(stream: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            remember(&output, &line);
        }
    });
}

/// Appends a line, keeping only the last few kilobytes.
fn remember(output: &Mutex<String>, line: &str) {
    const KEEP: usize = 16 * 1024;
    let mut output = output.lock().expect("output lock");
    output.push_str(line);
    output.push('\n');
    if output.len() > KEEP {
        let cut = output.len() - KEEP;
        let cut = (cut..output.len())
            .find(|&i| output.is_char_boundary(i))
            .unwrap_or(output.len());
        output.drain(..cut);
    }
}

/// The port in Azurite's "successfully listens on http://127.0.0.1:PORT" line.
fn listening_port(line: &str) -> Option<u16> {
    let url = line.split_once(LISTENING)?.1.trim();
    url.rsplit_once(':')?.1.trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_read_from_the_listening_line() {
        assert_eq!(
            listening_port("Azurite Blob service successfully listens on http://127.0.0.1:40851"),
            Some(40851)
        );
        assert_eq!(
            listening_port("Azurite Blob service is starting on 127.0.0.1:0"),
            None
        );
    }
}
