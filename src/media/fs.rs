//! Filesystem backend: objects are files under a root directory. A streaming write goes to a
//! hidden temporary file that is fsynced and then linked into place without replacing anything,
//! so a killed writer never leaves a partial object under its real name.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tempfile::NamedTempFile;

use super::store::{ObjectInfo, ObjectStore, ObjectWriter};
use crate::error::{Error, Result};

/// Temporary files start with this; listings skip them.
const TEMP_PREFIX: &str = ".tmp-";

/// A directory used as an object store.
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    /// The path of `key` beneath the root, checked component by component: no empty, `.` or
    /// `..` component, and no symlink anywhere between the root and the object, so a planted
    /// `trail/volume -> elsewhere` can neither receive media nor pass for it. With `create`,
    /// missing directories are made (owner only).
    fn path(&self, key: &str, create: bool) -> Result<PathBuf> {
        let parts: Vec<&str> = key.split('/').collect();
        if parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
        {
            return Err(self.refuse(key, "is not a plain relative key"));
        }
        let (name, dirs) = parts.split_last().expect("split yields one part");
        if create {
            std::fs::create_dir_all(&self.root).map_err(|e| self.err(key, e))?;
        }
        let mut path = self.root.clone();
        for (i, c) in dirs.iter().enumerate() {
            path.push(c);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                // Nothing below a missing directory can be a symlink.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                    path.extend(&dirs[i + 1..]);
                    path.push(name);
                    return Ok(path);
                }
                Ok(_) => {
                    return Err(self.refuse(
                        key,
                        &format!("{} is not a directory (a symlink?)", path.display()),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(self.err(key, e));
                        }
                        _ => {}
                    }
                    // Raced with someone who put something else there: look again.
                    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                        return Err(
                            self.refuse(key, &format!("{} is not a directory", path.display()))
                        );
                    }
                }
                Err(e) => return Err(self.err(key, e)),
            }
        }
        path.push(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(self.refuse(key, &format!("{} is a symlink", path.display())));
        }
        Ok(path)
    }

    fn refuse(&self, key: &str, why: &str) -> Error {
        Error::Store {
            store: self.describe(),
            key: key.into(),
            message: format!("refused: {why}; media objects are never reached through symlinks"),
            transient: false,
        }
    }

    fn err(&self, key: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound {
                store: self.describe(),
                key: key.into(),
            };
        }
        Error::Store {
            store: self.describe(),
            key: key.into(),
            message: e.to_string(),
            transient: false,
        }
    }

    fn temp_in(&self, key: &str) -> Result<NamedTempFile> {
        let path = self.path(key, true)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| self.err(key, e))
    }

    /// Syncs and links the temp file to `key`, failing if `key` exists.
    fn commit(&self, key: &str, tmp: NamedTempFile) -> Result<()> {
        tmp.as_file().sync_all().map_err(|e| self.err(key, e))?;
        let path = self.path(key, false)?;
        tmp.persist_noclobber(&path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    store: self.describe(),
                    key: key.into(),
                }
            } else {
                self.err(key, e.error)
            }
        })?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let key = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            // Only descend where the prefix can still match.
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, out)?;
            }
        } else if ft.is_file() && key.starts_with(prefix) {
            out.push(ObjectInfo {
                key,
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

/// Removes temporary files older than `before` under `dir`, recursively.
fn purge_temps(dir: &Path, before: SystemTime, removed: &mut usize) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            purge_temps(&entry.path(), before, removed)?;
        } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.metadata()?.modified()? < before
        {
            std::fs::remove_file(entry.path())?;
            *removed += 1;
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let mut tmp = this.temp_in(&key)?;
            tmp.write_all(&data).map_err(|e| this.err(&key, e))?;
            this.commit(&key, tmp)
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        if std::fs::symlink_metadata(self.path(key, false)?).is_ok() {
            return Err(Error::AlreadyExists {
                store: self.describe(),
                key: key.into(),
            });
        }
        let tmp = self.temp_in(key)?;
        Ok(Box::new(FsWriter {
            store: self.clone(),
            key: key.into(),
            file: std::io::BufWriter::with_capacity(1 << 20, tmp),
            size: 0,
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(this.path(&key, false)?)
                .map_err(|e| this.err(&key, e))?;
            f.seek(SeekFrom::Start(range.start))
                .map_err(|e| this.err(&key, e))?;
            let mut buf = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
            f.take(range.end.saturating_sub(range.start))
                .read_to_end(&mut buf)
                .map_err(|e| this.err(&key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key, false)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| self.err(key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        match tokio::fs::symlink_metadata(self.path(key, false)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let this = self.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&this.root, &this.root, &prefix, &mut out).map_err(|e| this.err(&prefix, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key, false)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.err(key, e)),
            _ => Ok(()),
        }
    }

    async fn purge_incomplete(&self, prefix: &str, before: DateTime<Utc>) -> Result<usize> {
        let this = self.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let dir = match prefix.trim_end_matches('/') {
                "" => this.root.clone(),
                p => this.path(p, false)?,
            };
            let mut removed = 0;
            purge_temps(&dir, before.into(), &mut removed).map_err(|e| this.err(&prefix, e))?;
            Ok(removed)
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    }

    async fn probe(&self) -> Result<()> {
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(self.err("", std::io::Error::other("not a directory"))),
            Err(e) => Err(self.err("", e)),
        }
    }
}

/// A streaming write into a temp file, linked into place by `finish`.
struct FsWriter {
    store: FsStore,
    key: String,
    file: std::io::BufWriter<NamedTempFile>,
    size: u64,
}

#[async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        // A buffered local write of one block is short; doing it inline avoids a thread hop
        // per block.
        self.file
            .write_all(&data)
            .map_err(|e| self.store.err(&self.key, e))?;
        self.size += data.len() as u64;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let FsWriter {
            store,
            key,
            file,
            size,
        } = *self;
        tokio::task::spawn_blocking(move || {
            let tmp = file
                .into_inner()
                .map_err(|e| store.err(&key, e.into_error()))?;
            store.commit(&key, tmp)?;
            Ok(size)
        })
        .await
        .map_err(|e| Error::Other(e.to_string()))?
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Dropping the NamedTempFile removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_once_atomic_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path());
        s.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(
            s.put("a/b", Bytes::from_static(b"y")).await,
            Err(Error::AlreadyExists { .. })
        ));
        // An unfinished write is invisible and a killed one leaves only a temp file.
        let mut w = s.create("a/c").await.unwrap();
        w.write(Bytes::from_static(b"partial")).await.unwrap();
        std::mem::forget(w);
        let keys: Vec<String> = s
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["a/b"]);
        let past = Utc::now() - chrono::TimeDelta::hours(1);
        assert_eq!(s.purge_incomplete("a/", past).await.unwrap(), 0);
        let future = Utc::now() + chrono::TimeDelta::minutes(1);
        assert_eq!(s.purge_incomplete("a/", future).await.unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
        assert_eq!(
            s.get_range("a/b", 0..10).await.unwrap(),
            Bytes::from_static(b"x")
        );
    }
}
