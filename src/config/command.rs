//! `kind = "command"` targets: a local program whose standard output is the backup stream, compressed and
//! optionally encrypted into a `directory` storage. The raw model, its validation and its defaults, together
//! (docs/configuration.md, "`[[targets]]` (`kind = \"command\"`)").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::Problem;
use super::kind::{KindParts, KindSpec, RawKind, StorageConfig};
use super::raw::{RawPolicy, Section};
use super::restore::{RawDrill, RestoreParts};
use super::secret::SecretSource;

/// Default overall deadline of a command backup.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_hours(1);
/// Default artifact name of `command` targets; `.age` is appended when encrypting.
pub const DEFAULT_COMMAND_ARTIFACT: &str = "{target}/{utc:%Y%m%dT%H%M%SZ}-{id}.zst";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommandTarget {
    name: String,
    storage: String,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secret_env: Vec<Section<RawSecretEnv>>,
    #[serde(default)]
    clear_env: bool,
    #[serde(default)]
    allow_empty: bool,
    working_dir: Option<PathBuf>,
    artifact_name: Option<String>,
    encrypt: Option<Section<RawEncrypt>>,
    restore_command: Option<Vec<String>>,
    verify_command: Option<Vec<String>>,
    drill: Option<Section<RawDrill>>,
    #[serde(default)]
    policy: Section<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretEnv {
    name: String,
    value_file: Option<PathBuf>,
    value_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncrypt {
    age_recipients_file: PathBuf,
    age_identity_file: Option<PathBuf>,
}

/// A `command` target.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// argv; run without a shell.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets.
    pub secret_env: Vec<(String, SecretSource)>,
    /// Start the program with an empty environment (plus `env` and `secret_env`).
    pub clear_env: bool,
    /// A program that writes nothing still makes a successful backup (otherwise it fails with `EmptyBackup`).
    pub allow_empty: bool,
    /// Working directory of the program.
    pub working_dir: Option<PathBuf>,
    /// age recipients file; when set, the compressed stream is encrypted to them.
    pub age_recipients_file: Option<PathBuf>,
    /// age identity file that decrypts the backups for a restore or a drill (docs/restore.md).
    pub age_identity_file: Option<PathBuf>,
    /// argv that receives a restored stream on its standard input (`rpod restore`).
    pub restore_command: Option<Vec<String>>,
    /// argv that receives a restored stream on its standard input in a drill; exit 0 = verified.
    pub verify_command: Option<Vec<String>>,
}

fn validate_spec(
    raw: &RawCommandTarget,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<CommandSpec> {
    let before = problems.len();
    match raw.command.first() {
        None => problems.push(Problem::at(
            format!("{path}.command"),
            "empty command: give the program and its arguments, e.g. [\"tar\", \"-cf\", \"-\", \"/etc\"]",
        )),
        Some(program) if program.trim().is_empty() => {
            problems.push(Problem::at(format!("{path}.command[0]"), "the program name is empty"));
        }
        Some(_) => {}
    }
    if raw.command.iter().any(|arg| arg.contains('\0')) {
        problems.push(Problem::at(
            format!("{path}.command"),
            "arguments must not contain NUL bytes",
        ));
    }
    for key in raw.env.keys() {
        if !valid_env_name(key) {
            problems.push(Problem::at(
                format!("{path}.env.{key}"),
                "invalid environment variable name",
            ));
        }
    }
    let mut secret_env = Vec::new();
    for (index, secret) in raw.secret_env.iter().enumerate() {
        let secret_path = format!("{path}.secret_env[{index}]");
        if !valid_env_name(&secret.name) {
            problems.push(Problem::at(
                format!("{secret_path}.name"),
                "invalid environment variable name",
            ));
        }
        match SecretSource::from_pair(
            secret.value_file.as_ref(),
            secret.value_env.as_ref(),
            "value",
        ) {
            Ok(source) => secret_env.push((secret.name.clone(), source)),
            Err(message) => problems.push(Problem::at(&secret_path, message)),
        }
    }
    if let Some(dir) = &raw.working_dir
        && dir.as_os_str().is_empty()
    {
        problems.push(Problem::at(
            format!("{path}.working_dir"),
            "must not be empty",
        ));
    }
    if let Some(encrypt) = &raw.encrypt
        && encrypt.age_recipients_file.as_os_str().is_empty()
    {
        problems.push(Problem::at(
            format!("{path}.encrypt.age_recipients_file"),
            "must not be empty",
        ));
    }
    if let Some(identity) = raw
        .encrypt
        .as_ref()
        .and_then(|e| e.age_identity_file.as_ref())
        && identity.as_os_str().is_empty()
    {
        problems.push(Problem::at(
            format!("{path}.encrypt.age_identity_file"),
            "must not be empty",
        ));
    }
    for (key, argv) in [
        ("restore_command", &raw.restore_command),
        ("verify_command", &raw.verify_command),
    ] {
        if let Some(argv) = argv
            && argv.first().is_none_or(|program| program.trim().is_empty())
        {
            problems.push(Problem::at(
                format!("{path}.{key}"),
                "give the program and its arguments, e.g. [\"tar\", \"-t\"]; it reads the restored stream \
                 on its standard input",
            ));
        }
    }
    if raw.drill.is_some() && raw.verify_command.is_none() {
        problems.push(Problem::at(
            format!("{path}.drill"),
            "a drill of a command target runs verify_command on the restored stream: set verify_command, e.g. \
             [\"tar\", \"-t\"]",
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(CommandSpec {
        argv: raw.command.clone(),
        env: raw.env.clone(),
        secret_env,
        clear_env: raw.clear_env,
        allow_empty: raw.allow_empty,
        working_dir: raw.working_dir.clone(),
        age_recipients_file: raw.encrypt.as_ref().map(|e| e.age_recipients_file.clone()),
        age_identity_file: raw
            .encrypt
            .as_ref()
            .and_then(|e| e.age_identity_file.clone()),
        restore_command: raw.restore_command.clone(),
        verify_command: raw.verify_command.clone(),
    })
}

impl KindSpec for CommandSpec {
    fn storage_kind(&self) -> &'static str {
        "directory"
    }
}

impl RawKind for RawCommandTarget {
    type Spec = CommandSpec;

    fn name(&self) -> &str {
        &self.name
    }

    fn storage(&self) -> Option<&str> {
        Some(&self.storage)
    }

    fn policy(&self) -> &RawPolicy {
        &self.policy
    }

    fn validate(
        &self,
        path: &str,
        _storage: Option<&StorageConfig>,
        problems: &mut Vec<Problem>,
    ) -> KindParts<CommandSpec> {
        let default_name = if self.encrypt.is_some() {
            format!("{DEFAULT_COMMAND_ARTIFACT}.age")
        } else {
            DEFAULT_COMMAND_ARTIFACT.to_owned()
        };
        KindParts {
            kind: validate_spec(self, path, problems),
            template: self.artifact_name.clone().unwrap_or(default_name),
            template_key: "artifact_name",
            timeout: DEFAULT_COMMAND_TIMEOUT,
            max_expiry: None,
            restore: RestoreParts {
                drill: self.drill.as_ref().map(|d| d.0.clone()),
                standby: None,
                destinations: Vec::new(),
                drill_into: false,
            },
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
