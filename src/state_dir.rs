//! The state directory: where the catalog lives, created when missing, and its lock, which keeps a second daemon
//! from running on the same catalog (docs/operations.md, "One daemon per state directory").
//!
//! The lock is an exclusive `flock` on `<state_dir>/rpod.lock`, taken before the catalog is opened and held for
//! the life of the process. The kernel releases it when the process ends, however it ends (`kill -9` included),
//! so there is never a stale lock to clean up. The file holds the holder's PID, for the message a second process
//! prints.
//!
//! What does not live here: the catalog itself (`catalog`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "rpod.lock";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Neither the directory nor its parent exists.
    #[error(
        "state directory {0} does not exist and neither does its parent: create it (owned by the user rpod runs \
         as) or set daemon.state_dir"
    )]
    Missing(PathBuf),
    /// The directory could not be created or written.
    #[error("state directory {path} is not writable ({detail}): rpod keeps its catalog there")]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        detail: String,
    },
    /// Another process holds the lock.
    #[error(
        "another rpod (PID {}) already runs on state directory {}: it holds {}; stop it first, or give this one \
         its own daemon.state_dir",
        holder.map_or_else(|| "unknown".to_owned(), |pid| pid.to_string()),
        path.parent().unwrap_or(path).display(),
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The PID written in it by the holder, when it could be read.
        holder: Option<u32>,
    },
}

/// Makes sure the state directory exists: a missing directory whose parent exists is created, readable by its
/// owner only (0700), since the catalog and operation handles live there.
///
/// # Errors
/// The parent is missing too, or the directory cannot be created.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(StateDirError::NotWritable {
                path: dir.into(),
                detail: "it is not a directory".to_owned(),
            });
        }
        Err(_) => {}
    }
    let parent = match dir.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => return Err(StateDirError::Missing(dir.into())),
    };
    if !parent.is_dir() {
        return Err(StateDirError::Missing(dir.into()));
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Created by someone else in between: fine.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(err) => {
            return Err(StateDirError::NotWritable {
                path: dir.into(),
                detail: err.to_string(),
            });
        }
    }
    // The mode given at creation is filtered through the umask; 0700 is meant exactly.
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    tracing::info!(path = %dir.display(), "Created the state directory.");
    Ok(())
}

/// The exclusive lock on a state directory; released when dropped or when the process ends.
#[derive(Debug)]
pub struct StateLock {
    /// Held open for the lock; closing it (on drop or at exit) releases the lock.
    _held: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock on `dir` (creating the directory as [`prepare`] does), without waiting.
    ///
    /// # Errors
    /// Another process holds it ([`StateDirError::Locked`], with its PID), or the directory cannot be used.
    pub fn acquire(dir: &Path) -> Result<Self, StateDirError> {
        prepare(dir)?;
        let path = dir.join(LOCK_FILE);
        let not_writable = |err: io::Error| StateDirError::NotWritable {
            path: dir.into(),
            detail: err.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(not_writable)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StateDirError::Locked {
                    path,
                    holder: text.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(err)) => return Err(not_writable(err)),
        }
        file.set_len(0).map_err(not_writable)?;
        file.rewind().map_err(not_writable)?;
        writeln!(file, "{}", std::process::id()).map_err(not_writable)?;
        file.sync_data().map_err(not_writable)?;
        Ok(Self { _held: file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let meta = fs::metadata(&state).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        match StateLock::acquire(&state) {
            Err(StateDirError::Locked { path, holder }) => {
                assert_eq!(path, state.join(LOCK_FILE));
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(&state).unwrap();
    }

    #[test]
    fn a_directory_without_a_parent_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("missing").join("state");
        assert!(matches!(prepare(&state), Err(StateDirError::Missing(_))));
        assert!(!state.exists());
    }
}
