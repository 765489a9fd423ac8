//! Filesystem backend: objects are files under a root directory. A streaming write goes to a
//! hidden temporary file that is fsynced and then linked into place without replacing anything,
//! so a killed writer never leaves a partial object under its real name. Every object is reached
//! beneath the root's handle one name at a time, never through a symlink ([`crate::beneath`]):
//! a `trail/volume -> elsewhere` planted before or during a run can neither receive media nor
//! pass for it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::store::{ObjectInfo, ObjectStore, ObjectWriter};
use crate::base::failure::blocking;
use crate::beneath::{Dir, is_gone};
use crate::media::error::{MediaError, Result};

/// What a panic on the file-system thread is reported as.
const FS_THREAD: &str = "file-system thread";

/// Temporary files start with this; listings skip them.
const TEMP_PREFIX: &str = ".tmp-";

/// A streaming write asks the kernel to start writing back every this many bytes, so the disk
/// works while the rest is produced and the fsync at the end waits only for the tail (without
/// it, a segment of hundreds of MiB sits dirty in memory until its fsync, and the pipeline
/// stalls for the whole write-back).
const WRITEBACK_EVERY: u64 = 16 << 20;

/// A directory used as an object store.
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

/// Where an object is: its directory, held open, and its name there.
struct Place {
    dir: Dir,
    name: OsString,
}

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    /// The directory of `key` and its name there, reached from the root one component at a
    /// time: no empty, `.` or `..` component, and no symlink anywhere between the root and the
    /// object. With `create`, missing directories are made (owner only); without, `None` when
    /// one is missing (nothing below it exists).
    fn place(&self, key: &str, create: bool) -> Result<Option<Place>> {
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
        let mut dir = match Dir::open(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
            opened => opened.map_err(|e| self.err(key, e))?,
        };
        for (i, c) in dirs.iter().enumerate() {
            let opened = if create {
                dir.open_or_create_dir(OsStr::new(c))
            } else {
                dir.open_dir(OsStr::new(c))
            };
            dir = match opened {
                Ok(next) => next,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(None),
                Err(e) if is_gone(&e) => {
                    let path = self.root.join(dirs[..=i].join("/"));
                    let why = format!("{} is not a directory (a symlink?)", path.display());
                    return Err(self.refuse(key, &why));
                }
                Err(e) => return Err(self.err(key, e)),
            };
        }
        let name = OsString::from(name);
        if dir
            .stat_if_any(&name)
            .map_err(|e| self.err(key, e))?
            .is_some_and(|m| m.file_type().is_symlink())
        {
            let why = format!("{} is a symlink", self.root.join(key).display());
            return Err(self.refuse(key, &why));
        }
        Ok(Some(Place { dir, name }))
    }

    /// [`Self::place`] of an object that must exist.
    fn existing(&self, key: &str) -> Result<Place> {
        self.place(key, false)?.ok_or_else(|| MediaError::NotFound {
            store: self.describe(),
            key: key.into(),
        })
    }

    fn refuse(&self, key: &str, why: &str) -> MediaError {
        MediaError::Store {
            store: self.describe(),
            key: key.into(),
            message: format!("refused: {why}; media objects are never reached through symlinks"),
            transient: false,
        }
    }

    fn err(&self, key: &str, e: std::io::Error) -> MediaError {
        if e.kind() == std::io::ErrorKind::NotFound {
            return MediaError::NotFound {
                store: self.describe(),
                key: key.into(),
            };
        }
        MediaError::Store {
            store: self.describe(),
            key: key.into(),
            message: e.to_string(),
            transient: false,
        }
    }

    /// A new temporary file beside where `key` goes.
    fn temp_for(&self, key: &str) -> Result<TempFile> {
        let Place { dir, name } = self.place(key, true)?.expect("created");
        for _ in 0..16 {
            let temp = OsString::from(format!("{TEMP_PREFIX}{:016x}", fastrand::u64(..)));
            match dir.create_file(&temp, 0o600) {
                Ok(file) => {
                    return Ok(TempFile {
                        dir,
                        temp,
                        name,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.err(key, e)),
            }
        }
        Err(self.err(key, std::io::Error::other("no free temporary name")))
    }
}

/// A temporary file beside its object's name, removed when dropped unless linked into place.
struct TempFile {
    dir: Dir,
    temp: OsString,
    name: OsString,
    file: Option<File>,
}

impl TempFile {
    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Syncs the file and links it to the object's name, failing if that name exists, then
    /// syncs the directory.
    fn commit(mut self, store: &FsStore, key: &str) -> Result<()> {
        let file = self.file.take().expect("open until committed");
        file.sync_all().map_err(|e| store.err(key, e))?;
        drop(file);
        match self.dir.hard_link(&self.temp, &self.dir, &self.name) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(MediaError::AlreadyExists {
                    store: store.describe(),
                    key: key.into(),
                });
            }
            linked => linked.map_err(|e| store.err(key, e))?,
        }
        let _ = self.dir.remove_file(&self.temp);
        self.temp.clear();
        let _ = self.dir.sync();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.temp.is_empty() {
            let _ = self.dir.remove_file(&self.temp);
        }
    }
}

/// Lists the objects under `dir` (whose key is `dir_key`, empty for the root) that start with
/// `prefix`, through directory handles.
fn walk(dir: &Dir, dir_key: &str, prefix: &str, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    for name in dir.names()? {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let key = if dir_key.is_empty() {
            name.clone()
        } else {
            format!("{dir_key}/{name}")
        };
        let meta = match dir.stat(OsStr::new(&name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            found => found?,
        };
        if meta.is_dir() {
            // Only descend where the prefix can still match.
            let sub = format!("{key}/");
            if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                match dir.open_dir(OsStr::new(&name)) {
                    Ok(child) => walk(&child, &key, prefix, out)?,
                    Err(e) if is_gone(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        } else if meta.is_file() && key.starts_with(prefix) {
            out.push(ObjectInfo {
                key,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Removes temporary files older than `before` under `dir`, recursively.
fn purge_temps(dir: &Dir, before: SystemTime, removed: &mut usize) -> std::io::Result<()> {
    for name in dir.names()? {
        let meta = match dir.stat(&name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            found => found?,
        };
        if meta.is_dir() {
            match dir.open_dir(&name) {
                Ok(child) => purge_temps(&child, before, removed)?,
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        } else if name.to_string_lossy().starts_with(TEMP_PREFIX) && meta.modified()? < before {
            match dir.remove_file(&name) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => *removed += 1,
            }
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
        blocking(FS_THREAD, move || {
            let mut tmp = this.temp_for(&key)?;
            tmp.file().write_all(&data).map_err(|e| this.err(&key, e))?;
            tmp.commit(&this, &key)
        })
        .await
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        if let Some(place) = self.place(key, false)?
            && place
                .dir
                .stat_if_any(&place.name)
                .map_err(|e| self.err(key, e))?
                .is_some()
        {
            return Err(MediaError::AlreadyExists {
                store: self.describe(),
                key: key.into(),
            });
        }
        let mut tmp = self.temp_for(key)?;
        let file = std::io::BufWriter::with_capacity(1 << 20, tmp.file.take().expect("open"));
        Ok(Box::new(FsWriter {
            store: self.clone(),
            key: key.into(),
            tmp,
            file,
            size: 0,
            written_back: 0,
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let this = self.clone();
        let key = key.to_string();
        blocking(FS_THREAD, move || {
            let place = this.existing(&key)?;
            let mut f = place
                .dir
                .open_file(&place.name)
                .map_err(|e| this.err(&key, e))?;
            let size = f.metadata().map_err(|e| this.err(&key, e))?.len();
            f.seek(SeekFrom::Start(range.start))
                .map_err(|e| this.err(&key, e))?;
            let len = range.end.min(size).saturating_sub(range.start);
            let mut buf = Vec::with_capacity(len as usize);
            f.take(range.end.saturating_sub(range.start))
                .read_to_end(&mut buf)
                .map_err(|e| this.err(&key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_range(key, 0..u64::MAX).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let Some(place) = self.place(key, false)? else {
            return Ok(None);
        };
        let found = place.dir.stat_if_any(&place.name);
        Ok(found.map_err(|e| self.err(key, e))?.map(|m| m.len()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let this = self.clone();
        let prefix = prefix.to_string();
        blocking(FS_THREAD, move || {
            let mut out = Vec::new();
            let root = match Dir::open(&this.root) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                opened => opened.map_err(|e| this.err(&prefix, e))?,
            };
            walk(&root, "", &prefix, &mut out).map_err(|e| this.err(&prefix, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let Some(place) = self.place(key, false)? else {
            return Ok(());
        };
        match place.dir.remove_file(&place.name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.err(key, e)),
            _ => Ok(()),
        }
    }

    async fn purge_incomplete(&self, prefix: &str, before: DateTime<Utc>) -> Result<usize> {
        let this = self.clone();
        let prefix = prefix.to_string();
        blocking(FS_THREAD, move || {
            let dir = match prefix.trim_end_matches('/') {
                "" => Dir::open(&this.root)
                    .map(Some)
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => Ok(None),
                        _ => Err(this.err(&prefix, e)),
                    })?,
                p => match this.place(p, false)? {
                    Some(Place { dir, name }) => match dir.open_dir(&name) {
                        Ok(sub) => Some(sub),
                        Err(e) if is_gone(&e) => None,
                        Err(e) => return Err(this.err(&prefix, e)),
                    },
                    None => None,
                },
            };
            let mut removed = 0;
            if let Some(dir) = dir {
                purge_temps(&dir, before.into(), &mut removed).map_err(|e| this.err(&prefix, e))?;
            }
            Ok(removed)
        })
        .await
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
    tmp: TempFile,
    file: std::io::BufWriter<File>,
    size: u64,
    /// Bytes from the start whose write-back was started.
    written_back: u64,
}

impl FsWriter {
    /// Starts the write-back of what reached the kernel since the last call, once that is
    /// [`WRITEBACK_EVERY`] bytes: `sync_file_range(SYNC_FILE_RANGE_WRITE)` queues the pages
    /// for the disk and returns (on tmpfs it does nothing). Durability still comes from the
    /// fsync in `finish`; this only spreads its work over the write.
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let in_kernel = self.size - self.file.buffer().len() as u64;
        let len = in_kernel - self.written_back;
        if len < WRITEBACK_EVERY {
            return;
        }
        let (Ok(offset), Ok(nbytes)) = (
            libc::off64_t::try_from(self.written_back),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: the descriptor belongs to the open file `self.file` holds; the call reads no
        // memory of ours. A failure only means the fsync does all the work, as before.
        unsafe {
            libc::sync_file_range(
                self.file.get_ref().as_raw_fd(),
                offset,
                nbytes,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.written_back = in_kernel;
    }
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
        self.start_writeback();
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let FsWriter {
            store,
            key,
            mut tmp,
            file,
            size,
            ..
        } = *self;
        blocking(FS_THREAD, move || {
            let file = file
                .into_inner()
                .map_err(|e| store.err(&key, e.into_error()))?;
            tmp.file = Some(file);
            tmp.commit(&store, &key)?;
            Ok(size)
        })
        .await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Dropping the TempFile removes it.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A directory of the media tree swapped for a symlink to elsewhere, over and over while
    /// objects are written and read beneath it: nothing lands outside the root and nothing
    /// outside is read; some operations met the symlink (and were refused), so the swaps hit
    /// running operations.
    #[tokio::test]
    async fn a_directory_swapped_for_a_symlink_mid_run_never_leads_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("media"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("trail")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"not media").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("swap")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let swapper = std::thread::spawn({
            let (stop, swaps) = (stop.clone(), swaps.clone());
            let (a, b) = (root.join("trail"), root.join("swap"));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let flags = rustix::fs::RenameFlags::EXCHANGE;
                    rustix::fs::renameat_with(rustix::fs::CWD, &a, rustix::fs::CWD, &b, flags)
                        .unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let s = FsStore::new(&root);
        let (mut written, mut refused) = (0, 0);
        for i in 0..2000 {
            match s
                .put(&format!("trail/obj-{i}"), Bytes::from_static(b"media"))
                .await
            {
                Ok(()) => written += 1,
                Err(MediaError::Store { message, .. }) if message.contains("refused") => {
                    refused += 1
                }
                Err(e) => panic!("{e}"),
            }
            if let Ok(data) = s.get("trail/secret").await {
                panic!("read from outside the media root: {data:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let outside_names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside_names, ["secret"], "written outside the media root");
        let swaps = swaps.load(Ordering::Relaxed);
        assert!(
            written > 0 && refused > 0,
            "{written} written, {refused} refused, {swaps} swaps"
        );
    }

    #[tokio::test]
    async fn write_once_atomic_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path());
        s.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert!(matches!(
            s.put("a/b", Bytes::from_static(b"y")).await,
            Err(MediaError::AlreadyExists { .. })
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
