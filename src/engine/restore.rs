//! Restore: the copy of each link of an instance's chain is chosen by the planner; here the
//! links are read (every block checked, digest verified) and extracted in order into the
//! target, never outside it.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::archive::{ExtractReport, extract_archive, extract_archive_to};
use super::pipe::{ChannelReader, blocking};
use super::task::{DataSpec, RestoreLink, RestoreTask, TaskOutcome, VerifyTask};
use crate::error::{Error, Result};
use crate::media::store::ObjectStore;
use crate::media::trail::read_instance;

/// Bytes per part when a restored file is written to an S3 target.
const PUT_CHUNK: usize = 8 << 20;

/// Runs a restore task. Entries refused for safety fail the restore (after the rest was
/// written), and are listed in the error.
pub async fn run_restore(task: &RestoreTask) -> Result<TaskOutcome> {
    let started = Instant::now();
    let mut outcome = TaskOutcome::default();
    let s3_target: Option<Arc<dyn ObjectStore>> = match &task.target {
        DataSpec::S3(t) => Some(Arc::new(t.open().await?)),
        DataSpec::Path(p) => {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
            None
        }
    };
    for link in &task.links {
        let reader = open_link(link).await?;
        let target = task.target.clone();
        let s3 = s3_target.clone();
        let handle = tokio::runtime::Handle::current();
        let report = blocking(move || {
            let mut reader = reader;
            let r = match (&target, s3) {
                (DataSpec::Path(p), _) => extract_archive(&mut reader, &PathBuf::from(p)),
                (_, Some(store)) => extract_to_store(&mut reader, store, handle),
                (DataSpec::S3(_), None) => unreachable!("S3 target opened above"),
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
        outcome
            .notes
            .extend(report.refused.iter().map(|r| format!("refused {r}")));
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    if !outcome.notes.is_empty() {
        return Err(Error::Refused {
            entry: outcome.notes.join("; "),
            reason: "would write outside the target or is not a file, directory or link".into(),
        });
    }
    Ok(outcome)
}

/// The links of a restore that a read error concerns: the copies on the volume it names.
/// `true` with them for damage (those copies become Missing), `false` for a key their media
/// class cannot use (they are only passed over). No links for any other error.
pub fn unreadable_links<'a>(links: &'a [RestoreLink], err: &Error) -> (Vec<&'a RestoreLink>, bool) {
    let (volume, class, damaged) = match err {
        Error::Corrupt { volume, .. } => (volume, None, true),
        Error::Key {
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
    store: Arc<dyn ObjectStore>,
    handle: tokio::runtime::Handle,
) -> Result<ExtractReport> {
    let del_store = store.clone();
    let del_handle = handle.clone();
    extract_archive_to(
        reader,
        &mut |path, _size, body: &mut dyn Read| {
            handle.block_on(async {
                // The target is the user's bucket, not media: a later chain link replaces.
                store.delete(path).await?;
                let mut w = store.create(path).await?;
                let mut buf = vec![0u8; PUT_CHUNK];
                loop {
                    let n = read_full(body, &mut buf).map_err(|e| Error::io(path, e))?;
                    if n == 0 {
                        break;
                    }
                    w.write(bytes::Bytes::copy_from_slice(&buf[..n])).await?;
                }
                w.finish().await.map(|_| ())
            })
        },
        &mut |path| del_handle.block_on(del_store.delete(path)),
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
