//! Backup: work items read as archive streams, `streams` at a time, their blocks interleaved on
//! the backup trail's volumes; incrementals compare against the parent instance's file index.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;

use super::archive::{
    ArchiveSummary, FileIndex, StreamEntry, write_dir_archive, write_stream_archive,
};
use super::catalog::{EntryBuilder, already_committed, commit_manifest};
use super::mux::{StreamJob, write_interleaved};
use super::pipe::{ChannelWriter, WORKER_THREAD};
use super::task::{BackupTask, DataSpec, TaskOutcome};
use crate::api::{Role, capped_notes};
use crate::base::failure::blocking;
use crate::engine::error::{EngineError, Result};
use crate::media::store::ObjectStore;
use crate::media::trail::{TrailWriter, index_key};

/// Runs a backup task; returns the committed entries. A work item whose source fails (unreadable,
/// gone) is left out and named in the notes, and the other items are still committed; the task
/// fails only when no item could be backed up.
pub async fn run_backup(task: &BackupTask) -> Result<TaskOutcome> {
    let started = Instant::now();
    let media = task.media.open().await?;
    if let Some(done) = already_committed(media.store.as_ref(), &task.trail, &task.session).await? {
        return Ok(done);
    }
    let mut jobs = Vec::new();
    for item in &task.items {
        let previous = match &item.parent {
            Some(p) => {
                let body = media.store.get(&index_key(&task.trail, p)).await?;
                Some(serde_json::from_slice::<FileIndex>(&body).map_err(|e| {
                    EngineError::Decode {
                        what: format!("file index of {p}"),
                        detail: e.to_string(),
                    }
                })?)
            }
            None => None,
        };
        let source = item.source.clone();
        jobs.push(StreamJob {
            instance_id: item.instance_id.clone(),
            work_item: item.work_item.clone(),
            verified_digest: None,
            // A source that fails fails its own item only: the others are still committed.
            producer: Box::new(move |tx| {
                async move { Ok(produce(source, previous, tx).await) }.boxed()
            }),
        });
    }
    let mut writer = TrailWriter::open(media.clone(), &task.trail, &task.session).await?;
    let written = match write_interleaved(&mut writer, jobs, task.streams as usize).await {
        Ok(w) => w,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    writer.close().await?;
    let builder = EntryBuilder {
        trail: &task.trail,
        role: Role::Original,
        retention_secs: task.retention_secs,
    };
    let mut outcome = TaskOutcome::default();
    for (w, result) in written {
        let item = task
            .items
            .iter()
            .find(|i| i.instance_id == w.instance_id)
            .expect("written instances come from the task");
        let summary = match result {
            Ok(summary) => summary,
            Err(e) => {
                // Its blocks stay on the volume unreferenced: no manifest names them.
                outcome
                    .failed
                    .push(format!("{}: not backed up: {e}", item.work_item));
                continue;
            }
        };
        if task.incremental {
            save_index(media.store.as_ref(), &task.trail, &w.instance_id, &summary).await?;
        }
        outcome
            .notes
            .extend(item_notes(&summary).map(|n| format!("{}: {n}", item.work_item)));
        outcome.bytes_read += summary.file_bytes;
        outcome.bytes_written += w.bytes;
        outcome.entries.push(builder.backup(
            w,
            task.backup_time,
            item.parent.clone(),
            summary.file_bytes,
            capped_notes(item_notes(&summary)),
        ));
    }
    if !outcome.failed.is_empty() && outcome.entries.is_empty() {
        return Err(EngineError::ItemsFailed(outcome.failed.join("; ")));
    }
    commit_manifest(
        media.store.as_ref(),
        &task.trail,
        &task.session,
        &outcome.entries,
    )
    .await?;
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Writes one work item's stream into `tx`.
async fn produce(
    source: DataSpec,
    previous: Option<FileIndex>,
    tx: mpsc::Sender<Bytes>,
) -> Result<ArchiveSummary> {
    match source {
        DataSpec::Path(root) => {
            blocking(WORKER_THREAD, move || {
                write_dir_archive(
                    &PathBuf::from(root),
                    previous.as_ref(),
                    ChannelWriter::new(tx),
                )
            })
            .await
        }
        DataSpec::S3(target) => {
            let store: Arc<dyn ObjectStore> = Arc::new(target.open().await?);
            let objects = store.list("").await?;
            let handle = tokio::runtime::Handle::current();
            blocking(WORKER_THREAD, move || {
                let entries = objects.into_iter().map(move |o| {
                    let reader = ObjectReader {
                        store: store.clone(),
                        key: o.key.clone(),
                        size: o.size,
                        pos: 0,
                        buf: Bytes::new(),
                        handle: handle.clone(),
                    };
                    Ok((
                        StreamEntry {
                            path: o.key,
                            size: o.size,
                            mtime: 0,
                            mode: 0o644,
                        },
                        Box::new(reader) as Box<dyn Read + Send>,
                    ))
                });
                write_stream_archive(entries, ChannelWriter::new(tx))
            })
            .await
        }
    }
}

/// What a user must hear about one item's stream: every entry that was skipped and every file
/// that changed while it was read (as GNU tar says "file changed as we read it").
fn item_notes(summary: &ArchiveSummary) -> impl Iterator<Item = String> + '_ {
    let skipped = summary.skipped.iter().map(|s| format!("skipped {s}"));
    skipped.chain(summary.warnings.iter().cloned())
}

async fn save_index(
    store: &dyn ObjectStore,
    trail: &str,
    instance_id: &str,
    summary: &ArchiveSummary,
) -> Result<()> {
    let body = serde_json::to_vec(&summary.index).map_err(|e| EngineError::Encode {
        what: format!("file index of {instance_id}"),
        detail: e.to_string(),
    })?;
    Ok(store
        .put(&index_key(trail, instance_id), Bytes::from(body))
        .await?)
}

/// Bytes fetched per ranged GET when an S3 object is read as a work item file.
const OBJECT_CHUNK: u64 = 8 << 20;

/// A blocking `Read` over one object, fetched in ranged chunks (for tar, which is synchronous).
pub struct ObjectReader {
    /// Store.
    pub store: Arc<dyn ObjectStore>,
    /// Key.
    pub key: String,
    /// Object size.
    pub size: u64,
    /// Bytes consumed so far.
    pub pos: u64,
    /// Current chunk.
    pub buf: Bytes,
    /// Runtime to run the async reads on.
    pub handle: tokio::runtime::Handle,
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let end = (self.pos + OBJECT_CHUNK).min(self.size);
            self.buf = self
                .handle
                .block_on(self.store.get_range(&self.key, self.pos..end))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if self.buf.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{} shrank while being read",
                    self.key
                )));
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_name_every_skipped_and_changed_entry() {
        let summary = ArchiveSummary {
            skipped: vec!["sock: socket not archived".into()],
            warnings: vec![
                "db: shrank by 10 bytes while being read; restores get the 5 bytes read".into(),
                "log: grew while being read; its first 3 bytes were archived".into(),
            ],
            ..ArchiveSummary::default()
        };
        let notes: Vec<_> = item_notes(&summary).collect();
        assert_eq!(
            notes,
            [
                "skipped sock: socket not archived",
                "db: shrank by 10 bytes while being read; restores get the 5 bytes read",
                "log: grew while being read; its first 3 bytes were archived",
            ]
        );
    }
}
