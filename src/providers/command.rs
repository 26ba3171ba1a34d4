//! `command` provider: runs argv without a shell and streams its standard output into the storage, compressed
//! with zstd and, when configured, encrypted to age recipients (compressed first, then encrypted).
//!
//! The program runs in its own process group, so a timeout or shutdown kills everything it started.

use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::io::SyncIoBridge;

use super::interface::{
    BackupOutcome, BackupRequest, BuildProvider, BuildSite, Provider, ProviderError,
};
use crate::config::{CommandSpec, Problem};
use crate::storage::{ArtifactInfo, ArtifactWriter, Storage};

/// How much of the program's standard error is kept for the record.
const STDERR_TAIL: usize = 4096;
/// How long a program gets between SIGTERM and SIGKILL when cancelled.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// zstd level: a good ratio at a cost of well under a core for typical backup streams.
const ZSTD_LEVEL: i32 = 3;

/// Backs up the standard output of a local program.
#[derive(Debug)]
pub struct CommandProvider {
    spec: CommandSpec,
    recipients: Arc<Vec<age::x25519::Recipient>>,
}

impl BuildProvider for CommandSpec {
    fn build_provider(&self, site: &BuildSite<'_>) -> Result<Option<Arc<dyn Provider>>, Problem> {
        match CommandProvider::new(self.clone()) {
            Ok(provider) => Ok(Some(Arc::new(provider))),
            Err(message) => Err(Problem::at(
                format!("targets[{}].encrypt.age_recipients_file", site.index),
                message,
            )),
        }
    }
}

impl CommandProvider {
    /// Prepares the provider, reading the age recipients file when encryption is configured.
    ///
    /// # Errors
    /// The recipients file cannot be read or holds no valid recipient.
    pub fn new(spec: CommandSpec) -> Result<Self, String> {
        let recipients = match &spec.age_recipients_file {
            Some(path) => read_recipients(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            spec,
            recipients: Arc::new(recipients),
        })
    }
}

/// Reads an age recipients file: one `age1...` recipient per line, `#` comments and blank lines ignored.
///
/// # Errors
/// A message naming the file and the offending line.
pub fn read_recipients(path: &Path) -> Result<Vec<age::x25519::Recipient>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read age recipients file {}: {err}", path.display()))?;
    let mut recipients = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let recipient = age::x25519::Recipient::from_str(line).map_err(|err| {
            format!(
                "{}:{}: not an age X25519 recipient: {err}",
                path.display(),
                number + 1
            )
        })?;
        recipients.push(recipient);
    }
    if recipients.is_empty() {
        return Err(format!(
            "age recipients file {} holds no recipient",
            path.display()
        ));
    }
    Ok(recipients)
}

/// Counts and hashes what passes through to the artifact.
struct Hashing {
    inner: Box<dyn ArtifactWriter>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies the stream through zstd (and age) into the artifact; returns it uncommitted, with how many bytes the
/// program wrote.
fn pump(
    mut input: impl Read,
    sink: Box<dyn ArtifactWriter>,
    recipients: &[age::x25519::Recipient],
) -> io::Result<(Hashing, u64)> {
    let hashing = Hashing {
        inner: sink,
        hasher: Sha256::new(),
        bytes: 0,
    };
    if recipients.is_empty() {
        let mut zstd = zstd::Encoder::new(hashing, ZSTD_LEVEL)?;
        let read = io::copy(&mut input, &mut zstd)?;
        Ok((zstd.finish()?, read))
    } else {
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        let encrypted = encryptor.wrap_output(hashing)?;
        let mut zstd = zstd::Encoder::new(encrypted, ZSTD_LEVEL)?;
        let read = io::copy(&mut input, &mut zstd)?;
        Ok((zstd.finish()?.finish()?, read))
    }
}

/// Checks that `input` holds what [`pump`] writes: one or more complete zstd frames, or (when the target
/// encrypts) an age file whose header parses. Streams through a fixed buffer: memory stays bounded by zstd's
/// window limit (128 MiB at most, the library's default), whatever the artifact's size.
fn verify_stream(input: impl Read, encrypted: bool) -> Result<(), String> {
    if encrypted {
        // Without the identity only the header can be checked; the recipients' key opens the rest.
        return age::Decryptor::new(input)
            .map(|_| ())
            .map_err(|err| format!("it is not an age-encrypted file: {err}"));
    }
    let mut decoder = zstd::stream::read::Decoder::new(input)
        .map_err(|err| format!("it cannot be read: {err}"))?;
    match io::copy(&mut decoder, &mut io::sink()) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Err("its zstd stream is truncated".to_owned())
        }
        Err(err) => Err(format!("it is not a complete zstd stream: {err}")),
    }
}

/// Kills the program's whole process group when dropped, whatever path the attempt took.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.0 {
            let _ = killpg(pid, signal);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

async fn read_tail(mut stderr: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut tail: Vec<u8> = Vec::with_capacity(STDERR_TAIL);
    let mut buf = [0u8; 8192];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).trim().to_owned()
}

#[async_trait::async_trait]
impl Provider for CommandProvider {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn verify(
        &self,
        storage: &Arc<dyn Storage>,
        artifact: &ArtifactInfo,
    ) -> Result<(), String> {
        if artifact.size == 0 {
            return Err("it is empty".to_owned());
        }
        let storage = storage.clone();
        let name = artifact.name.clone();
        let encrypted = !self.recipients.is_empty();
        tokio::task::spawn_blocking(move || {
            let input = storage.open(&name).map_err(|err| err.to_string())?;
            verify_stream(input, encrypted)
        })
        .await
        .unwrap_or_else(|join| Err(join.to_string()))
    }

    async fn backup(&self, request: BackupRequest) -> Result<BackupOutcome, ProviderError> {
        let program = &self.spec.argv[0];
        let mut command = Command::new(program);
        command
            .args(&self.spec.argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if self.spec.clear_env {
            command.env_clear();
        }
        // systemd's notification socket and watchdog are rpod's, not the program's.
        for name in crate::notify::SERVICE_MANAGER_VARIABLES {
            command.env_remove(name);
        }
        command.envs(&self.spec.env);
        for (name, source) in &self.spec.secret_env {
            let secret = source.load().map_err(|message| {
                ProviderError::permanent(
                    "SecretUnavailable",
                    format!("environment variable {name}: {message}"),
                )
            })?;
            command.env(name, secret.expose());
        }
        if let Some(dir) = &self.spec.working_dir {
            command.current_dir(dir);
        }

        let storage: Arc<dyn Storage> = request.storage.clone();
        let artifact = request.artifact.clone();
        let sink = {
            let storage = storage.clone();
            let artifact = artifact.clone();
            tokio::task::spawn_blocking(move || storage.create(&artifact))
                .await
                .map_err(|err| ProviderError::transient("StorageWriteFailed", err.to_string()))?
                .map_err(|err| ProviderError::transient("StorageWriteFailed", err.to_string()))?
        };

        let recovery_point = Utc::now();
        let mut child = command.spawn().map_err(|err| {
            ProviderError::permanent("SpawnFailed", format!("cannot start {program:?}: {err}"))
        })?;
        let group = ProcessGroup(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        let stdout = child.stdout.take().map(SyncIoBridge::new);
        let stderr = child.stderr.take();
        let stderr_tail = tokio::spawn(async move {
            match stderr {
                Some(stderr) => read_tail(stderr).await,
                None => String::new(),
            }
        });
        let recipients = self.recipients.clone();
        let pumping = tokio::task::spawn_blocking(move || match stdout {
            Some(stdout) => pump(stdout, sink, &recipients),
            None => Err(io::Error::other("no standard output")),
        });

        let status = tokio::select! {
            status = child.wait() => Some(status),
            () = request.cancel.cancelled() => None,
        };
        let Some(status) = status else {
            group.signal(Signal::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, child.wait())
                .await
                .is_err()
            {
                group.signal(Signal::SIGKILL);
                let _ = child.wait().await;
            }
            drop(group);
            let _ = pumping.await;
            return Err(ProviderError::cancelled(format!("{program:?} was stopped")));
        };
        // Whatever the program left running (holding the pipe open) goes with it.
        drop(group);
        let written = pumping
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join)));
        let tail = stderr_tail.await.unwrap_or_default();
        let status =
            status.map_err(|err| ProviderError::transient("WaitFailed", err.to_string()))?;
        if !status.success() {
            let how = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => "failed".to_owned(),
            };
            let message = if tail.is_empty() {
                format!("{program:?} {how}")
            } else {
                format!("{program:?} {how}; stderr: {tail}")
            };
            return Err(ProviderError::transient("ExitStatus", message));
        }
        let (hashing, produced) = written.map_err(|err| {
            ProviderError::transient("StorageWriteFailed", format!("writing {artifact}: {err}"))
        })?;
        if produced == 0 && !self.spec.allow_empty {
            // Dropping the uncommitted artifact discards it.
            let message = if tail.is_empty() {
                format!("{program:?} exited successfully but wrote nothing to standard output")
            } else {
                format!(
                    "{program:?} exited successfully but wrote nothing to standard output; stderr: {tail}"
                )
            };
            return Err(ProviderError::transient(
                "EmptyBackup",
                format!("{message} (set allow_empty = true if an empty backup is expected)"),
            ));
        }
        let Hashing {
            inner,
            hasher,
            bytes,
        } = hashing;
        tokio::task::spawn_blocking(move || inner.commit())
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join)))
            .map_err(|err| {
                ProviderError::transient(
                    "StorageWriteFailed",
                    format!("committing {artifact}: {err}"),
                )
            })?;
        Ok(BackupOutcome {
            recovery_point,
            artifact,
            size_bytes: Some(bytes),
            sha256: Some(format!("{:x}", hasher.finalize())),
            sku: None,
            etag: None,
            expires_at: None,
            content: None,
        })
    }
}
