//! Restore: the copy of each link of an instance's chain is chosen by the planner; here the
//! links are read (every block checked, digest verified) and extracted in order into the
//! target, never outside it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::archive::{ExtractOptions, ExtractReport, extract_archive_to, extract_archive_with};
use super::pipe::{ChannelReader, blocking};
use super::task::{DataSpec, RestoreLink, RestoreTask, TaskOutcome, VerifyTask};
use crate::error::{Error, Result};
use crate::media::store::ObjectStore;
use crate::media::trail::read_instance;

/// Bytes per part when a restored file is written to an S3 target.
const PUT_CHUNK: usize = 8 << 20;

/// Runs a restore task. A directory target is built in a staging directory inside it (same
/// filesystem) and moved into place only once every link of the chain was read whole, each
/// block checked and each stream's digest matched, and nothing was refused; an S3 target's
/// objects are removed again if any check fails. So a forged or damaged copy leaves nothing in
/// the target, and the next copy starts clean. The target must be absent or empty: a restore
/// never removes what is in its way.
pub async fn run_restore(task: &RestoreTask) -> Result<TaskOutcome> {
    let (stage, s3_target): (Option<Staging>, Option<S3Out>) = match &task.target {
        DataSpec::S3(t) => (None, Some(empty_prefix(t.open().await?, &t.prefix).await?)),
        DataSpec::Path(p) => (Some(Staging::new(Path::new(p))?), None),
    };
    let result = restore_links(task, stage.as_ref(), s3_target.as_ref()).await;
    match (result, stage, s3_target) {
        (Ok(outcome), Some(stage), _) => stage.commit().map(|()| outcome),
        (Ok(outcome), None, _) => Ok(outcome),
        (Err(e), _, Some(out)) => {
            // What this restore wrote is unverified: removed (only that: others may write
            // beside it).
            let written = std::mem::take(&mut *out.written.lock().expect("not poisoned"));
            for key in written {
                let _ = out.store.delete(&key).await;
            }
            Err(e)
        }
        (Err(e), _, None) => Err(e),
    }
}

/// An S3 restore target and the keys this restore wrote there.
#[derive(Clone)]
struct S3Out {
    store: Arc<dyn ObjectStore>,
    written: Arc<std::sync::Mutex<Vec<String>>>,
}

/// An S3 restore target, if nothing is under its prefix yet: objects written there can only
/// be verified after the fact, so a failed restore removes what it wrote, and the prefix must
/// hold nothing of the user's that a restore could replace.
async fn empty_prefix<S: ObjectStore + 'static>(store: S, prefix: &str) -> Result<S3Out> {
    if let Some(o) = store.list("").await?.first() {
        return Err(Error::Refused {
            entry: format!("s3 prefix {prefix:?}"),
            reason: format!(
                "the target prefix is not empty (it holds {:?}): restore into a new or empty prefix; nothing in a target is ever removed",
                o.key
            ),
        });
    }
    Ok(S3Out {
        store: Arc::new(store),
        written: Default::default(),
    })
}

/// Reads and extracts every link of the chain, in order, into the staging directory or the
/// S3 target.
async fn restore_links(
    task: &RestoreTask,
    stage: Option<&Staging>,
    s3_target: Option<&S3Out>,
) -> Result<TaskOutcome> {
    let started = Instant::now();
    let mut outcome = TaskOutcome::default();
    let mut refused = Vec::new();
    for link in &task.links {
        let reader = open_link(link).await?;
        let staged = stage.map(|s| s.dir.clone());
        let s3 = s3_target.cloned();
        let handle = tokio::runtime::Handle::current();
        // The catalog says how much the stream's files hold: a forged stream gets no more.
        let max_bytes = link.entry.file_bytes;
        let report = blocking(move || {
            let mut reader = reader;
            let r = match (staged, s3) {
                (Some(dir), _) => extract_archive_with(
                    &mut reader,
                    &dir,
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
                (Some(e), _) => Err(e),
                (None, Ok(rep)) => reader.drain().map(|_| rep),
                (None, Err(e)) => Err(e),
            }
        })
        .await?;
        outcome.bytes_read += link.entry.bytes;
        outcome.bytes_written += report.bytes;
        refused.extend(report.refused);
        outcome.notes.extend(report.warnings);
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    if !refused.is_empty() {
        return Err(Error::Refused {
            entry: refused.join("; "),
            reason: "would write outside the target or is not a file, directory or link; nothing was restored".into(),
        });
    }
    Ok(outcome)
}

/// A restore's staging directory, `.mimeo-restore-RANDOM` inside the target (so on its
/// filesystem, and writable wherever the target is, a volume's root included): removed unless
/// committed; a killed restore's is removed by the next restore to that target.
struct Staging {
    dir: PathBuf,
    target: PathBuf,
}

const STAGING_PREFIX: &str = ".mimeo-restore-";

/// What a fresh filesystem's root holds: not user data in the way.
const IGNORED_IN_TARGET: &str = "lost+found";

impl Staging {
    fn new(target: &Path) -> Result<Staging> {
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        let meta = std::fs::symlink_metadata(target).map_err(|e| Error::io(target, e))?;
        if !meta.is_dir() {
            return Err(Error::Refused {
                entry: target.display().to_string(),
                reason: "the restore target is not a directory (a symlink or a file)".into(),
            });
        }
        for e in std::fs::read_dir(target).map_err(|e| Error::io(target, e))? {
            let e = e.map_err(|e| Error::io(target, e))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(STAGING_PREFIX) && e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path()).map_err(|err| Error::io(e.path(), err))?;
            } else if name != IGNORED_IN_TARGET {
                return Err(Error::Refused {
                    entry: target.display().to_string(),
                    reason: format!(
                        "the target directory is not empty (it holds {name:?}): restore into a new or empty directory; nothing in a target is ever removed"
                    ),
                });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(target)
            .map_err(|e| Error::io(target, e))?
            .keep();
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
        })
    }

    /// Moves the verified tree into place, entry by entry (renames on one filesystem).
    fn commit(self) -> Result<()> {
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let to = self.target.join(e.file_name());
            std::fs::rename(e.path(), &to).map_err(|err| Error::io(&to, err))?;
        }
        // The staging directory's own mode and time were the target's to have.
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The links of a restore that a read error concerns: the copies on the volume it names.
/// `true` with them for damage (those copies become Missing), `false` for a key their media
/// class cannot use or media that cannot be reached (they are only passed over). No links for any other error.
pub fn unreadable_links<'a>(links: &'a [RestoreLink], err: &Error) -> (Vec<&'a RestoreLink>, bool) {
    let (volume, class, damaged) = match err {
        Error::Corrupt { volume, .. } => (volume, None, true),
        Error::Key {
            volume,
            media_class,
            ..
        }
        | Error::Unreachable {
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
    let media = link.media.open().await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(read_instance(media, link.entry.clone(), tx));
    Ok(ChannelReader::new(rx))
}

fn extract_to_store(
    reader: &mut ChannelReader,
    out: S3Out,
    handle: tokio::runtime::Handle,
    max_bytes: Option<u64>,
) -> Result<ExtractReport> {
    let store = out.store;
    let del_store = store.clone();
    let del_handle = handle.clone();
    extract_archive_to(
        reader,
        &mut |path, _size, body: &mut dyn Read| {
            // The body is read here, outside `block_on`: it blocks on the media reader's channel.
            // The target is this restore's own prefix: a later chain link replaces.
            let mut w = handle.block_on(async {
                store.delete(path).await?;
                store.create(path).await
            })?;
            out.written
                .lock()
                .expect("not poisoned")
                .push(path.to_string());
            let mut buf = vec![0u8; PUT_CHUNK];
            loop {
                let n = read_full(body, &mut buf).map_err(|e| Error::io(path, e))?;
                if n == 0 {
                    break;
                }
                handle.block_on(w.write(bytes::Bytes::copy_from_slice(&buf[..n])))?;
            }
            handle.block_on(w.finish()).map(|_| ())
        },
        &mut |path| del_handle.block_on(del_store.delete(path)),
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
        match blocking(move || reader.drain()).await {
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
