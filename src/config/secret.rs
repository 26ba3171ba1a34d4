//! Secrets: values that never appear in logs, metrics, the catalog, the API or error messages.

use std::fmt;
use std::path::PathBuf;

/// A secret value. `Debug` and `Display` print `***`; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must stay hidden.
    #[must_use]
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself; call only where it is handed to the system that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from: the `_file` or the `_env` form of a key. Secrets are never inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from a file; one trailing newline is removed.
    File(PathBuf),
    /// Read from an environment variable of rpod's process.
    Env(String),
}

impl SecretSource {
    /// Chooses the source from the `_file` / `_env` pair of a key.
    ///
    /// # Errors
    /// A message when both or neither are given.
    pub fn from_pair(
        file: Option<&PathBuf>,
        env: Option<&String>,
        key: &str,
    ) -> Result<Self, String> {
        match (file, env) {
            (Some(path), None) => Ok(Self::File(path.clone())),
            (None, Some(var)) => Ok(Self::Env(var.clone())),
            (Some(_), Some(_)) => Err(format!("set only one of {key}_file and {key}_env")),
            (None, None) => Err(format!("missing {key}_file or {key}_env")),
        }
    }

    /// Reads the secret. The error names the file or variable, never the value.
    ///
    /// # Errors
    /// The file cannot be read, the variable is unset, or the value is empty.
    pub fn load(&self) -> Result<Secret, String> {
        let value = match self {
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read secret file {}: {err}", path.display()))?,
            Self::Env(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set or not valid UTF-8"))?,
        };
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(match self {
                Self::File(path) => format!("secret file {} is empty", path.display()),
                Self::Env(var) => format!("environment variable {var} is empty"),
            });
        }
        Ok(Secret(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_as_stars() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_source_trims_one_newline_and_errors_never_show_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        assert_eq!(
            SecretSource::File(path.clone()).load().unwrap().expose(),
            "hunter2"
        );
        std::fs::write(&path, "\n").unwrap();
        let err = SecretSource::File(path).load().unwrap_err();
        assert!(err.contains("empty"));
    }
}
