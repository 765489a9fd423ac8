//! Restore: the copy of each link of an instance's chain is chosen by the planner; here the
//! links are read (every block checked, digest verified) and extracted in order into the
//! target, never outside it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::archive::{
    ExtractOptions, ExtractReport, RootMeta, extract_archive_into, extract_archive_to,
};
use super::pipe::{ChannelReader, WORKER_THREAD};
use super::task::{DataSpec, RestoreLink, RestoreTask, TaskOutcome, VerifyTask};
use crate::base::failure::blocking;
use crate::beneath::{Dir, is_gone};
use crate::engine::error::{EngineError, Result};
use crate::media::error::MediaError;
use crate::media::manifest::ManifestEntry;
use crate::media::store::{ObjectStore, ObjectWriter};
use crate::media::trail::read_instance;

/// Bytes per part when a restored file is written to an S3 target.
const PUT_CHUNK: usize = 8 << 20;

/// Runs a restore task. A directory target is built in a staging directory inside it (same
/// filesystem) and moved into place only once every link of the chain was read whole, each
/// block checked and each stream's digest matched, and nothing was refused; an S3 target's
/// objects are uploaded as they are read but made visible only then (see [`S3Out`]). So a
/// forged or damaged copy leaves nothing in the target, and the next copy starts clean. The
/// target must be absent or empty: a restore never removes what is in its way.
pub async fn run_restore(task: &RestoreTask) -> Result<TaskOutcome> {
    let (stage, s3_target): (Option<Staging>, Option<S3Out>) = match &task.target {
        DataSpec::S3(t) => (None, Some(empty_prefix(t.open().await?, &t.prefix).await?)),
        DataSpec::Path(p) => (Some(Staging::new(Path::new(p))?), None),
    };
    let result = restore_links(task, stage.as_ref(), s3_target.as_ref()).await;
    match (result, stage, s3_target) {
        (Ok((mut outcome, root)), Some(stage), _) => {
            outcome.notes.extend(stage.commit(root)?);
            Ok(outcome)
        }
        (Ok((outcome, _)), None, Some(out)) => out.commit().await.map(|()| outcome),
        (Err(e), _, Some(out)) => {
            out.abort().await;
            Err(e)
        }
        (r, _, _) => r.map(|(outcome, _)| outcome),
    }
}

/// An S3 restore target. Each file is uploaded as it is read, but finished (made visible) only
/// once every link was verified: an unfinished multipart upload is invisible, so a forged or
/// damaged copy, or a killed restore, leaves nothing under the prefix. Small files wait in
/// memory, within [`PENDING_BYTES`]; larger ones, and small ones past it, are sealed (sent as
/// their last part) to wait on the server.
#[derive(Clone)]
struct S3Out {
    store: Arc<dyn ObjectStore>,
    pending: Arc<std::sync::Mutex<Pending>>,
}

/// Files written to an S3 target and not yet finished.
#[derive(Default)]
struct Pending {
    writers: BTreeMap<String, Box<dyn ObjectWriter>>,
    /// Files whose data is still in memory, and how much of it (pages, at least).
    unsealed: Vec<String>,
    buffered: u64,
}

/// A file at least this large is sealed as soon as it is written.
const SEAL_AT: u64 = 1 << 20;
/// What unsealed small files may hold in memory together.
const PENDING_BYTES: u64 = 64 << 20;
/// How many small files may wait unsealed (each holds its own buffer).
const PENDING_FILES: usize = 4096;

impl S3Out {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("not poisoned")
    }

    /// Writes one file (replacing a pending one at `path`, as a later link of a chain does).
    /// Runs on a blocking thread.
    fn write(
        &self,
        handle: &tokio::runtime::Handle,
        path: &str,
        body: &mut dyn Read,
    ) -> Result<()> {
        self.discard(handle, |key| key == path);
        let mut w = handle.block_on(self.store.create(path))?;
        let mut buf = vec![0u8; PUT_CHUNK];
        let mut size = 0u64;
        loop {
            let n = read_full(body, &mut buf).map_err(|e| EngineError::io(path, e))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            handle.block_on(w.write(bytes::Bytes::copy_from_slice(&buf[..n])))?;
        }
        if size >= SEAL_AT {
            handle.block_on(w.seal())?;
        }
        let mut p = self.pending();
        p.writers.insert(path.to_owned(), w);
        if size > 0 && size < SEAL_AT {
            p.unsealed.push(path.to_owned());
            p.buffered += size.max(4096);
        }
        if p.buffered > PENDING_BYTES || p.unsealed.len() > PENDING_FILES {
            let Pending {
                writers,
                unsealed,
                buffered,
            } = &mut *p;
            for key in unsealed.drain(..) {
                if let Some(w) = writers.get_mut(&key) {
                    handle.block_on(w.seal())?;
                }
            }
            *buffered = 0;
        }
        Ok(())
    }

    /// Drops the pending files whose key `gone` matches (a deletion recorded by an
    /// incremental, or a file written again).
    fn discard(&self, handle: &tokio::runtime::Handle, gone: impl Fn(&str) -> bool) {
        let dropped: Vec<Box<dyn ObjectWriter>> = {
            let mut p = self.pending();
            let keys: Vec<String> = p.writers.keys().filter(|k| gone(k)).cloned().collect();
            p.unsealed.retain(|k| !gone(k));
            keys.iter().filter_map(|k| p.writers.remove(k)).collect()
        };
        for w in dropped {
            let _ = handle.block_on(w.abort());
        }
    }

    /// Makes every verified file visible. If one cannot be, those already finished are removed
    /// again and the rest abandoned: the target is left as it was.
    async fn commit(self) -> Result<()> {
        let writers = std::mem::take(&mut self.pending().writers);
        let mut finished: Vec<String> = Vec::new();
        let mut rest = writers.into_iter();
        for (key, w) in rest.by_ref() {
            if let Err(e) = w.finish().await {
                for (_, w) in rest {
                    let _ = w.abort().await;
                }
                for key in finished {
                    let _ = self.store.delete(&key).await;
                }
                return Err(e.into());
            }
            finished.push(key);
        }
        Ok(())
    }

    /// Abandons every pending file: nothing of them becomes visible.
    async fn abort(self) {
        let writers = std::mem::take(&mut self.pending().writers);
        for (_, w) in writers {
            let _ = w.abort().await;
        }
    }
}

/// An S3 restore target, if nothing is under its prefix yet: the prefix must hold nothing of
/// the user's that a restore could replace.
async fn empty_prefix<S: ObjectStore + 'static>(store: S, prefix: &str) -> Result<S3Out> {
    if let Some(o) = store.list("").await?.first() {
        return Err(EngineError::Refused {
            entry: format!("s3 prefix {prefix:?}"),
            reason: format!(
                "the target prefix is not empty (it holds {:?}): restore into a new or empty prefix; nothing in a target is ever removed",
                o.key
            ),
        });
    }
    Ok(S3Out {
        store: Arc::new(store),
        pending: Default::default(),
    })
}

/// Reads and extracts every link of the chain, in order, into the staging directory or the
/// S3 target.
async fn restore_links(
    task: &RestoreTask,
    stage: Option<&Staging>,
    s3_target: Option<&S3Out>,
) -> Result<(TaskOutcome, Option<RootMeta>)> {
    let started = Instant::now();
    let mut outcome = TaskOutcome::default();
    let mut refused = Vec::new();
    // The root's mode and time as the newest link recorded them.
    let mut root = None;
    for link in &task.links {
        let reader = open_link(link).await?;
        let staged = match stage {
            Some(s) => Some((
                s.dir
                    .try_clone()
                    .map_err(|e| EngineError::io(s.path(), e))?,
                s.path(),
            )),
            None => None,
        };
        let s3 = s3_target.cloned();
        let handle = tokio::runtime::Handle::current();
        // The catalog says how much the stream's files hold: a forged stream gets no more.
        let max_bytes = link.entry.file_bytes;
        let report = blocking(WORKER_THREAD, move || {
            let mut reader = reader;
            let r = match (staged, s3) {
                (Some((dir, path)), _) => extract_archive_into(
                    &mut reader,
                    dir,
                    &path,
                    ExtractOptions {
                        keep_setid: false,
                        max_bytes,
                    },
                ),
                (None, Some(out)) => extract_to_store(&mut reader, out, handle, max_bytes),
                (None, None) => unreachable!("a path or an S3 target"),
            };
            // A media error explains a broken stream better than the archive error it caused.
            match (reader.take_error(), r) {
                (Some(e), _) => Err(e.into()),
                (None, Ok(rep)) => reader.drain().map(|_| rep),
                (None, Err(e)) => Err(e),
            }
        })
        .await?;
        outcome.bytes_read += link.entry.bytes;
        outcome.bytes_written += report.bytes;
        refused.extend(report.refused);
        outcome.notes.extend(report.warnings);
        root = report.root.or(root);
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    if !refused.is_empty() {
        return Err(EngineError::Refused {
            entry: refused.join("; "),
            reason: "would write outside the target or is not a file, directory or link; nothing was restored".into(),
        });
    }
    Ok((outcome, root))
}

/// A restore's staging directory, `.mimeo-restore-RANDOM` inside the target (so on its
/// filesystem, and writable wherever the target is, a volume's root included): removed unless
/// committed; a killed restore's is removed by the next restore to that target. The target is
/// held open from the check that it is an empty directory (not a symlink) to the last rename
/// into it, so swapping it for a symlink meanwhile sends nothing elsewhere.
struct Staging {
    target: Dir,
    target_path: PathBuf,
    dir: Dir,
    name: OsString,
}

const STAGING_PREFIX: &str = ".mimeo-restore-";

/// What a fresh filesystem's root holds: not user data in the way.
const IGNORED_IN_TARGET: &str = "lost+found";

impl Staging {
    fn new(target_path: &Path) -> Result<Staging> {
        let io_err = |e| EngineError::io(target_path, e);
        std::fs::create_dir_all(target_path).map_err(io_err)?;
        let target = match Dir::open_exact(target_path) {
            Err(e) if is_gone(&e) => {
                return Err(EngineError::Refused {
                    entry: target_path.display().to_string(),
                    reason: "the restore target is not a directory (a symlink or a file)".into(),
                });
            }
            opened => opened.map_err(io_err)?,
        };
        for name in target.names().map_err(io_err)? {
            let shown = name.to_string_lossy();
            let is_dir = target.stat(&name).is_ok_and(|m| m.is_dir());
            if shown.starts_with(STAGING_PREFIX) && is_dir {
                target.remove_all(&name).map_err(io_err)?;
            } else if shown != IGNORED_IN_TARGET {
                return Err(EngineError::Refused {
                    entry: target_path.display().to_string(),
                    reason: format!(
                        "the target directory is not empty (it holds {shown:?}): restore into a new or empty directory; nothing in a target is ever removed"
                    ),
                });
            }
        }
        let name = OsString::from(format!("{STAGING_PREFIX}{:016x}", fastrand::u64(..)));
        target.create_dir(&name, 0o700).map_err(io_err)?;
        let dir = target.open_dir(&name).map_err(io_err)?;
        Ok(Staging {
            target,
            target_path: target_path.to_path_buf(),
            dir,
            name,
        })
    }

    /// The staging directory as people read it.
    fn path(&self) -> PathBuf {
        self.target_path.join(&self.name)
    }

    /// Moves the verified tree into place, entry by entry (renames on one filesystem, never
    /// replacing anything), then gives the target the root's mode (without set-id bits) and
    /// time as the stream recorded them, as every other directory gets its own. A target this
    /// process may not change (another owner's mount point) keeps its own: that is a note,
    /// not a failure, once the tree is in. Returns the notes.
    fn commit(self, root: Option<RootMeta>) -> Result<Vec<String>> {
        let io_err = |e| EngineError::io(self.path(), e);
        for name in self.dir.names().map_err(io_err)? {
            self.dir
                .rename(&name, &self.target, &name)
                .map_err(|e| EngineError::io(self.target_path.join(&name), e))?;
        }
        // Emptied: removed now, so that its removal does not touch the target's time after
        // it is set (the drop finds nothing left).
        self.target.remove_all(&self.name).map_err(io_err)?;
        let Some(root) = root else {
            return Ok(Vec::new());
        };
        let applied = self
            .target
            .set_mode(root.mode & 0o1777)
            .and_then(|()| self.target.set_own_mtime(root.mtime, root.nsec));
        Ok(match applied {
            Ok(()) => Vec::new(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => vec![format!(
                "{}: kept its own mode and time ({e})",
                self.target_path.display()
            )],
            Err(e) => return Err(EngineError::io(&self.target_path, e)),
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.target.remove_all(&self.name);
    }
}

/// The links of a restore that a read error concerns: the copies on the volume it names.
/// `true` with them for damage (those copies become Missing), `false` for a key their media
/// class cannot use or media that cannot be reached (they are only passed over). No links for any other error.
pub fn unreadable_links<'a>(
    links: &'a [RestoreLink],
    err: &EngineError,
) -> (Vec<&'a RestoreLink>, bool) {
    let EngineError::Media(err) = err else {
        return (Vec::new(), false);
    };
    let (volume, class, damaged) = match err {
        MediaError::Corrupt { volume, .. } => (volume, None, true),
        MediaError::Key {
            volume,
            media_class,
            ..
        }
        | MediaError::Unreachable {
            volume,
            media_class,
            ..
        } => (volume, Some(media_class), false),
        _ => return (Vec::new(), false),
    };
    let hit = links
        .iter()
        .filter(|l| l.entry.volumes().contains(volume) && class.is_none_or(|m| *m == l.media.name))
        .collect();
    (hit, damaged)
}

async fn open_link(link: &RestoreLink) -> Result<ChannelReader> {
    super::progress::set_item(&link.entry.work_item);
    let media = link.media.open().await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(read_instance(media, ManifestEntry::from(&link.entry), tx));
    Ok(ChannelReader::new(rx))
}

fn extract_to_store(
    reader: &mut ChannelReader,
    out: S3Out,
    handle: tokio::runtime::Handle,
    max_bytes: Option<u64>,
) -> Result<ExtractReport> {
    // The bodies are read here, outside `block_on`: they block on the media reader's channel.
    extract_archive_to(
        reader,
        &mut |path, _size, body: &mut dyn Read| out.write(&handle, path, body),
        &mut |path| {
            let below = format!("{path}/");
            out.discard(&handle, |key| key == path || key.starts_with(&below));
            Ok(())
        },
        max_bytes,
    )
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Re-reads copies, checking every block and the digest. Returns one line per copy; fails if
/// any copy is damaged.
pub async fn run_verify(task: &VerifyTask) -> Result<TaskOutcome> {
    let started = Instant::now();
    let mut outcome = TaskOutcome::default();
    let mut failures = Vec::new();
    for link in &task.links {
        let mut reader = open_link(link).await?;
        match blocking(WORKER_THREAD, move || reader.drain()).await {
            Ok(()) => {
                outcome.bytes_read += link.entry.bytes;
                outcome.notes.push(format!(
                    "{}: ok ({} bytes)",
                    link.entry.object_name(),
                    link.entry.bytes
                ));
            }
            Err(e) => {
                outcome
                    .notes
                    .push(format!("{}: {e}", link.entry.object_name()));
                failures.push(e);
            }
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}
