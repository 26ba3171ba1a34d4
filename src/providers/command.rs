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
    BackupOutcome, BackupRequest, BuildProvider, BuildSite, Destination, Provider, ProviderError,
    RestoreOutcome, RestoreRequest,
};
use crate::config::{CommandSpec, Problem};
use crate::record::RestoreTrigger;
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
    /// `argv` as a child process of this target: its environment (secrets included) and working directory,
    /// in a process group of its own, its standard error piped; standard input and output are the caller's.
    fn command(&self, argv: &[String]) -> Result<Command, ProviderError> {
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
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
        Ok(command)
    }

    /// The program a restore of `trigger` feeds: `verify_command` for a drill, `restore_command` otherwise.
    fn restore_argv(&self, trigger: RestoreTrigger) -> Result<&[String], String> {
        let (key, argv) = if trigger == RestoreTrigger::Drill {
            ("verify_command", &self.spec.verify_command)
        } else {
            ("restore_command", &self.spec.restore_command)
        };
        argv.as_deref().ok_or_else(|| {
            format!(
                "the target has no {key}: set it to the program that reads the restored stream on its standard \
                 input, e.g. [\"tar\", \"-x\", \"-C\", \"/restore\"]"
            )
        })
    }

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
    read_age_keys(path, "recipients", "recipient", |line| {
        age::x25519::Recipient::from_str(line)
            .map_err(|err| format!("not an age X25519 recipient: {err}"))
    })
}

/// Reads a file of age keys (an age `kind` file: `one` per line), `#` comments and blank lines ignored; `parse`
/// reads one line. Its messages never quote a line (an identity file holds secrets).
fn read_age_keys<T>(
    path: &Path,
    kind: &str,
    one: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read age {kind} file {}: {err}", path.display()))?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse(line)
            .map_err(|message| format!("{}:{}: {message}", path.display(), number + 1))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(format!("age {kind} file {} holds no {one}", path.display()));
    }
    Ok(keys)
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

/// Reads an age identity file: one `AGE-SECRET-KEY-1...` identity per line, `#` comments and blank lines
/// ignored. What the file holds never appears in a message.
fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, String> {
    read_age_keys(path, "identity", "identity", |line| {
        age::x25519::Identity::from_str(line)
            .map_err(|_| "not an age X25519 identity (AGE-SECRET-KEY-1...)".to_owned())
    })
}

/// The first bytes of every age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// Reads an artifact through: its size, its SHA-256 (hex) and whether it is age-encrypted.
fn fingerprint(mut input: impl Read) -> io::Result<(u64, String, bool)> {
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(AGE_MAGIC.len());
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if head.len() < AGE_MAGIC.len() {
            let take = (AGE_MAGIC.len() - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, format!("{:x}", hasher.finalize()), head == AGE_MAGIC))
}

/// Why a restored stream could not be fed to its program.
#[derive(Debug)]
enum Unpack {
    /// The age identity does not open it.
    Decrypt(String),
    /// It is not a complete zstd stream.
    Decompress(String),
    /// The program closed its standard input before the end.
    Closed(u64),
    /// Reading the artifact failed.
    Read(String),
}

/// Decrypts (with `identities`, when it is encrypted) and decompresses `input` into `output`; returns how many
/// bytes the program got.
fn unpack(
    input: impl Read,
    mut output: impl Write,
    identities: &[age::x25519::Identity],
) -> Result<u64, Unpack> {
    let input: Box<dyn Read> = if identities.is_empty() {
        Box::new(input)
    } else {
        let decryptor = age::Decryptor::new(input)
            .map_err(|err| Unpack::Decrypt(format!("it is not an age-encrypted file: {err}")))?;
        Box::new(
            decryptor
                .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
                .map_err(|err| {
                    Unpack::Decrypt(format!(
                        "the age identity file does not decrypt it ({err}): it was encrypted to other recipients"
                    ))
                })?,
        )
    };
    let mut decoder = zstd::stream::read::Decoder::new(input)
        .map_err(|err| Unpack::Read(format!("it cannot be read: {err}")))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Unpack::Decompress(
                    "its zstd stream is truncated".to_owned(),
                ));
            }
            Err(err) => {
                return Err(Unpack::Decompress(format!(
                    "it is not a complete zstd stream (or does not decrypt): {err}"
                )));
            }
        };
        match output.write_all(&buf[..n]) {
            Ok(()) => written += n as u64,
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                return Err(Unpack::Closed(written));
            }
            Err(err) => return Err(Unpack::Read(format!("writing to the program: {err}"))),
        }
    }
    Ok(written)
}

/// How a child process ended, in words.
fn ended(status: std::process::ExitStatus) -> String {
    match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "failed".to_owned(),
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

/// The process group of a child just started, and the task that keeps the tail of its standard error.
fn watch(child: &mut tokio::process::Child) -> (ProcessGroup, tokio::task::JoinHandle<String>) {
    let group = ProcessGroup(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let stderr = child.stderr.take();
    let tail = tokio::spawn(async move {
        match stderr {
            Some(stderr) => read_tail(stderr).await,
            None => String::new(),
        }
    });
    (group, tail)
}

/// Waits for `child` to exit or, when `cancel` fires first, stops its process group (SIGTERM, then SIGKILL after
/// [`TERM_GRACE`]). Either way whatever the program left running (holding a pipe open) is killed with its group,
/// then `io` (the thread feeding or draining its pipe) and its standard error's tail are awaited. The status is
/// `None` when the program was stopped.
async fn supervise<T>(
    child: &mut tokio::process::Child,
    group: ProcessGroup,
    cancel: &tokio_util::sync::CancellationToken,
    io: tokio::task::JoinHandle<T>,
    tail: tokio::task::JoinHandle<String>,
) -> (
    Option<io::Result<std::process::ExitStatus>>,
    Result<T, tokio::task::JoinError>,
    String,
) {
    let status = tokio::select! {
        status = child.wait() => Some(status),
        () = cancel.cancelled() => None,
    };
    if status.is_none() {
        group.signal(Signal::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait())
            .await
            .is_err()
        {
            group.signal(Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    drop(group);
    let io = io.await;
    let tail = tail.await.unwrap_or_default();
    (status, io, tail)
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
        let mut command = self.command(&self.spec.argv)?;
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());

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
        let (group, stderr_tail) = watch(&mut child);
        let stdout = child.stdout.take().map(SyncIoBridge::new);
        let recipients = self.recipients.clone();
        let pumping = tokio::task::spawn_blocking(move || match stdout {
            Some(stdout) => pump(stdout, sink, &recipients),
            None => Err(io::Error::other("no standard output")),
        });

        let (status, written, tail) =
            supervise(&mut child, group, &request.cancel, pumping, stderr_tail).await;
        let Some(status) = status else {
            return Err(ProviderError::cancelled(format!("{program:?} was stopped")));
        };
        let written = written.unwrap_or_else(|join| Err(io::Error::other(join)));
        let status =
            status.map_err(|err| ProviderError::transient("WaitFailed", err.to_string()))?;
        if !status.success() {
            let how = ended(status);
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

    fn destination(
        &self,
        into: Option<&str>,
        trigger: RestoreTrigger,
    ) -> Result<Destination, String> {
        if let Some(into) = into {
            return Err(format!(
                "command targets restore into their restore_command (a drill: verify_command), not into {into:?}"
            ));
        }
        let argv = self.restore_argv(trigger)?;
        Ok(Destination {
            describe: argv.join(" "),
            busy_key: None,
            // restore_command puts the data back where it belongs; a drill only reads it.
            own: trigger != RestoreTrigger::Drill,
        })
    }

    async fn restore(&self, request: RestoreRequest) -> Result<RestoreOutcome, ProviderError> {
        let argv = self
            .restore_argv(request.trigger)
            .map_err(|message| ProviderError::permanent("RestoreUnsupported", message))?
            .to_vec();
        let program = argv[0].clone();
        let backup = &request.backup;
        let Some(artifact) = backup.artifact.clone() else {
            return Err(ProviderError::permanent(
                "ArtifactMissing",
                format!("backup {} names no artifact", backup.id),
            ));
        };
        let storage = request.storage.clone();
        let (size, sha256, encrypted) = {
            let storage = storage.clone();
            let artifact = artifact.clone();
            tokio::task::spawn_blocking(move || {
                let input = storage.open(&artifact).map_err(|err| err.to_string())?;
                fingerprint(input).map_err(|err| format!("reading {artifact}: {err}"))
            })
            .await
            .unwrap_or_else(|join| Err(join.to_string()))
            .map_err(|message| ProviderError::transient("ArtifactUnreadable", message))?
        };
        let recorded_size = backup.size_bytes.and_then(|s| u64::try_from(s).ok());
        if recorded_size.is_some_and(|recorded| recorded != size)
            || backup
                .sha256
                .as_ref()
                .is_some_and(|recorded| *recorded != sha256)
        {
            return Err(ProviderError::permanent(
                "ArtifactCorrupt",
                format!(
                    "artifact {artifact} is {size} bytes with sha256 {sha256}; the record says {} bytes with \
                     sha256 {}: it changed after the backup",
                    recorded_size.map_or_else(|| "?".to_owned(), |s| s.to_string()),
                    backup.sha256.as_deref().unwrap_or("?")
                ),
            ));
        }
        let identities = if encrypted {
            let path = self.spec.age_identity_file.as_ref().ok_or_else(|| {
                ProviderError::permanent(
                    "IdentityMissing",
                    format!(
                        "artifact {artifact} is age-encrypted: set encrypt.age_identity_file to the identity \
                         that decrypts it"
                    ),
                )
            })?;
            read_identities(path)
                .map_err(|message| ProviderError::permanent("IdentityUnavailable", message))?
        } else {
            Vec::new()
        };

        let mut command = self.command(&argv)?;
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let accepted_at = request.clock.now();
        let mut child = command.spawn().map_err(|err| {
            ProviderError::permanent("SpawnFailed", format!("cannot start {program:?}: {err}"))
        })?;
        let (group, stderr_tail) = watch(&mut child);
        let stdin = child
            .stdin
            .take()
            .map(tokio::process::ChildStdin::into_owned_fd)
            .transpose()
            .map_err(|err| ProviderError::transient("SpawnFailed", err.to_string()))?
            .map(std::fs::File::from);
        let feeding = tokio::task::spawn_blocking(move || {
            let stdin = stdin.ok_or_else(|| Unpack::Read("no standard input".to_owned()))?;
            let input = storage
                .open(&artifact)
                .map_err(|err| Unpack::Read(err.to_string()))?;
            unpack(input, stdin, &identities)
        });
        let (status, fed, tail) =
            supervise(&mut child, group, &request.cancel, feeding, stderr_tail).await;
        let Some(status) = status else {
            return Err(ProviderError::cancelled(format!("{program:?} was stopped")));
        };
        let fed = fed.unwrap_or_else(|join| Err(Unpack::Read(join.to_string())));
        let status =
            status.map_err(|err| ProviderError::transient("WaitFailed", err.to_string()))?;
        let with_tail = |message: String| {
            if tail.is_empty() {
                message
            } else {
                format!("{message}; stderr: {tail}")
            }
        };
        let fed = match fed {
            Ok(bytes) => bytes,
            Err(Unpack::Decrypt(message)) => {
                return Err(ProviderError::permanent("DecryptFailed", message));
            }
            Err(Unpack::Decompress(message)) => {
                return Err(ProviderError::permanent("ArtifactCorrupt", message));
            }
            Err(Unpack::Read(message)) => {
                return Err(ProviderError::transient("ArtifactUnreadable", message));
            }
            Err(Unpack::Closed(bytes)) if !status.success() => bytes,
            Err(Unpack::Closed(bytes)) => {
                return Err(ProviderError::permanent(
                    "RestoreIncomplete",
                    with_tail(format!(
                        "{program:?} exited successfully after reading {bytes} bytes, before the end of the \
                         restored stream"
                    )),
                ));
            }
        };
        if !status.success() {
            let code = if request.trigger == RestoreTrigger::Drill {
                "VerificationFailed"
            } else {
                "RestoreCommandFailed"
            };
            return Err(ProviderError::permanent(
                code,
                with_tail(format!("{program:?} {}", ended(status))),
            ));
        }
        Ok(RestoreOutcome {
            accepted_at: Some(accepted_at),
            warnings: Vec::new(),
            verified: Some(format!(
                "size ({size} bytes) and sha256 match the record; {program:?} read the {fed} restored bytes and \
                 exited 0"
            )),
        })
    }
}
