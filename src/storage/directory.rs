//! `directory` storage: a local directory or mounted share. Writes are atomic: a hidden temporary file in the
//! destination directory, fsync, rename, fsync of the directory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::interface::{ArtifactInfo, ArtifactWriter, Storage, StorageError};

/// Temporary files end with this; listings skip them.
const PARTIAL_SUFFIX: &str = ".rpod-partial";

/// A directory on a local or mounted file system.
#[derive(Debug, Clone)]
pub struct DirectoryStorage {
    name: String,
    root: PathBuf,
}

impl DirectoryStorage {
    /// A storage rooted at `root`.
    #[must_use]
    pub fn new(name: &str, root: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            root,
        }
    }

    /// The absolute or relative path of an artifact.
    #[must_use]
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn error(&self, action: impl Into<String>, source: io::Error) -> StorageError {
        StorageError {
            storage: self.name.clone(),
            action: action.into(),
            source,
        }
    }
}

struct DirectoryWriter {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    dest: PathBuf,
}

impl Write for DirectoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().map_or(Ok(0), |f| f.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), BufWriter::flush)
    }
}

impl ArtifactWriter for DirectoryWriter {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("artifact already committed"))?
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.dest)?;
        if let Some(parent) = self.dest.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for DirectoryWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The file's times as the file system keeps them; a file system without a birth time gives its modification
/// time only. Never the time of looking.
fn info(name: String, meta: &fs::Metadata) -> ArtifactInfo {
    ArtifactInfo {
        name,
        size: meta.len(),
        created_at: meta.created().ok().map(DateTime::<Utc>::from),
        modified_at: meta.modified().ok().map(DateTime::<Utc>::from),
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ArtifactInfo>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound && dir != root => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let Some(name) = relative
            .to_str()
            .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
        else {
            continue;
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            let as_dir = format!("{name}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && name.starts_with(prefix) && !name.ends_with(PARTIAL_SUFFIX)
        {
            let meta = entry.metadata()?;
            out.push(info(name, &meta));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Storage for DirectoryStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "directory"
    }

    fn create(&self, name: &str) -> Result<Box<dyn ArtifactWriter>, StorageError> {
        let dest = self.path_of(name);
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent)
            .map_err(|e| self.error(format!("creating {}", parent.display()), e))?;
        let file_name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact");
        let temp = parent.join(format!(
            ".{file_name}.{}{PARTIAL_SUFFIX}",
            std::process::id()
        ));
        let file = File::create(&temp)
            .map_err(|e| self.error(format!("creating {}", temp.display()), e))?;
        Ok(Box::new(DirectoryWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            dest,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactInfo>, StorageError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Only the directory the prefix names is read: a target's listing never reads the other targets'
            // directories beside its own (docs/architecture.md, "Reconciliation").
            // A missing root is an error, never an empty listing: artifacts would be taken for vanished.
            if !fs::metadata(&root)?.is_dir() {
                return Err(io::Error::other("the storage root is not a directory"));
            }
            let start = match prefix_owned.rfind('/') {
                Some(slash) => root.join(&prefix_owned[..slash]),
                None => root.clone(),
            };
            walk(&root, &start, &prefix_owned, &mut out).map(|()| out)
        })
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)));
        let mut list = result
            .map_err(|e| self.error(format!("listing {prefix:?} in {}", self.root.display()), e))?;
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    async fn stat(&self, name: &str) -> Result<Option<ArtifactInfo>, StorageError> {
        let path = self.path_of(name);
        let failed = |e| self.error(format!("reading {}", path.display()), e);
        match tokio::fs::metadata(&self.root).await {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(failed(io::Error::other(
                    "the storage root is not a directory",
                )));
            }
            Err(err) => return Err(failed(err)),
        }
        if name.ends_with(PARTIAL_SUFFIX) {
            return Ok(None);
        }
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(info(name.to_owned(), &meta))),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(failed(err)),
        }
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let path = self.path_of(name);
        let file =
            File::open(&path).map_err(|e| self.error(format!("reading {}", path.display()), e))?;
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, file)))
    }

    async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path_of(name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(self.error(format!("deleting {}", path.display()), err)),
        }
    }

    async fn probe(&self) -> Result<(), StorageError> {
        // A name of its own per probe: replicas sharing the directory (and overlapping probes of one process)
        // must not remove each other's probe file.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let root = self.root.clone();
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = tokio::task::spawn_blocking(move || {
            fs::create_dir_all(&root)?;
            let probe = root.join(format!(
                ".rpod-probe-{}-{n}{PARTIAL_SUFFIX}",
                std::process::id()
            ));
            fs::write(&probe, b"")?;
            fs::remove_file(&probe)
        })
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)));
        result.map_err(|e| self.error(format!("writing to {}", self.root.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_probing_one_directory_at_once_never_see_it_down() {
        // Several replicas (here several storages of one process) probe a shared directory at the same moments.
        let dir = tempfile::tempdir().unwrap();
        let probes: Vec<_> = (0..8)
            .map(|_| {
                let storage = DirectoryStorage::new("shared", dir.path().to_path_buf());
                tokio::spawn(async move {
                    for _ in 0..200 {
                        storage.probe().await?;
                    }
                    Ok::<(), StorageError>(())
                })
            })
            .collect();
        for probe in probes {
            probe.await.unwrap().unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no probe file is left behind"
        );
    }

    #[tokio::test]
    async fn committed_artifacts_are_listed_and_abandoned_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let storage = DirectoryStorage::new("local", dir.path().to_path_buf());
        let mut writer = storage.create("etc/1.zst").unwrap();
        writer.write_all(b"hello").unwrap();
        writer.commit().unwrap();
        let mut abandoned = storage.create("etc/2.zst").unwrap();
        abandoned.write_all(b"half").unwrap();
        assert_eq!(
            storage.list("etc/").await.unwrap().len(),
            1,
            "partial files are not artifacts"
        );
        drop(abandoned);
        let list = storage.list("etc/").await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "etc/1.zst");
        assert_eq!(list[0].size, 5);
        assert!(storage.list("other/").await.unwrap().is_empty());
        assert_eq!(storage.list("etc/1").await.unwrap().len(), 1);
        assert_eq!(storage.list("et").await.unwrap().len(), 1);
        assert_eq!(
            fs::read_dir(dir.path().join("etc")).unwrap().count(),
            1,
            "no temp file left"
        );
        let stat = storage.stat("etc/1.zst").await.unwrap().unwrap();
        assert_eq!((stat.name.as_str(), stat.size), ("etc/1.zst", 5));
        assert_eq!(stat.created_at, list[0].created_at);
        assert!(storage.stat("etc/2.zst").await.unwrap().is_none());
        assert!(
            storage.stat("etc").await.unwrap().is_none(),
            "a directory is not an artifact"
        );
        storage.delete("etc/1.zst").await.unwrap();
        storage.delete("etc/1.zst").await.unwrap();
        assert!(storage.stat("etc/1.zst").await.unwrap().is_none());
        assert!(storage.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn listing_a_missing_root_fails() {
        let dir = tempfile::tempdir().unwrap();
        let storage = DirectoryStorage::new("local", dir.path().join("nope"));
        assert!(storage.list("").await.is_err());
        assert!(
            storage.list("db/").await.is_err(),
            "a target's prefix in a missing root is not an empty listing"
        );
        assert!(
            storage.stat("x").await.is_err(),
            "a missing root is not a missing artifact"
        );
    }
}
