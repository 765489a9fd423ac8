//! Duplication. Logical: each selected instance is read as a stream (checking every block) and
//! written anew in the target's geometry, contiguous (Sequential) or interleaved; the copy's
//! digest must equal the source's. Media: whole volumes copied raw, 1:1, as the baseline.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::catalog::{EntryBuilder, already_committed, commit_manifest};
use super::mux::{StreamJob, write_interleaved, write_sequential};
use super::records::extents;
use super::task::{CopyTask, MediaCopyTask, TaskOutcome};
use crate::api::{Layout, Role};
use crate::base::failure::Stopped;
use crate::engine::error::{EngineError, Result};
use crate::media::manifest::ManifestEntry;
use crate::media::trail::{Media, Payload, TrailWriter, read_instance, scan_trail};

/// Runs a logical copy task.
pub async fn run_copy(task: &CopyTask) -> Result<TaskOutcome> {
    let started = Instant::now();
    let target = task.media.open().await?;
    if let Some(done) = already_committed(target.store.as_ref(), &task.trail, &task.session).await?
    {
        return Ok(done);
    }
    let mut sources: BTreeMap<&str, Media> = BTreeMap::new();
    for spec in &task.sources {
        sources.insert(&spec.name, spec.open().await?);
    }
    let mut jobs = Vec::new();
    for item in &task.items {
        let media = sources
            .get(item.source_media.as_str())
            .ok_or_else(|| EngineError::Decode {
                what: format!("copy task of policy {}", task.policy),
                detail: format!(
                    "instance {} is to be read from media class {}, which the task does not describe",
                    item.source.instance_id, item.source_media
                ),
            })?
            .clone();
        let entry = item.source.clone();
        jobs.push(StreamJob {
            instance_id: entry.instance_id.clone(),
            work_item: entry.work_item.clone(),
            // read_instance checks the source's digest before the stream ends, and a failed
            // check fails the copy: the writer need not hash the same bytes again.
            verified_digest: Some(entry.digest.clone()),
            producer: Box::new(move |tx: mpsc::Sender<Bytes>| {
                async move {
                    let (itx, mut irx) = mpsc::channel(4);
                    tokio::spawn(read_instance(media, ManifestEntry::from(&entry), itx));
                    let mut n = 0u64;
                    let mut crc = 0u32;
                    while let Some(chunk) = irx.recv().await {
                        let Payload { bytes, crc: known } = chunk?;
                        n += bytes.len() as u64;
                        // A plain block's payload CRC comes with it, checked against the
                        // media by the reader: no second pass over the bytes.
                        let chunk_crc = known.unwrap_or_else(|| crc32c::crc32c(&bytes));
                        crc = crc32c::crc32c_combine(crc, chunk_crc, bytes.len());
                        tx.send(bytes)
                            .await
                            .map_err(|_| Stopped::new("copy writer", "it took no more data"))?;
                    }
                    Ok((n, crc))
                }
                .boxed()
            }),
        });
    }
    let mut writer = TrailWriter::open(target.clone(), &task.trail, &task.session).await?;
    let p = task.parallelism as usize;
    let result = match task.layout {
        Layout::Sequential => write_sequential(&mut writer, jobs, p).await,
        Layout::Interleaved => write_interleaved(&mut writer, jobs, p).await,
    };
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    writer.close().await?;
    let builder = EntryBuilder {
        trail: &task.trail,
        role: Role::Duplicate,
        retention_secs: task.retention_secs,
    };
    let mut outcome = TaskOutcome::default();
    for (w, (read, sent_crc)) in written {
        let src = &task
            .items
            .iter()
            .find(|i| i.source.instance_id == w.instance_id)
            .expect("written instances come from the task")
            .source;
        // The source's digest was verified by its reader; what the writer received must be
        // exactly what the reader delivered.
        if w.digest != src.digest || w.bytes != src.bytes || w.stream_crc32c != Some(sent_crc) {
            return Err(EngineError::CopyMismatch {
                what: w.instance_id.clone(),
                detail: format!(
                    "{} bytes written (CRC32C {:08x?}), source delivered {} bytes (CRC32C {:08x})",
                    w.bytes, w.stream_crc32c, src.bytes, sent_crc
                ),
            });
        }
        outcome.bytes_read += read;
        outcome.bytes_written += w.bytes;
        outcome.entries.push(builder.copy(src, extents(w.extents)));
    }
    commit_manifest(
        target.store.as_ref(),
        &task.trail,
        &task.session,
        &outcome.entries,
    )
    .await?;
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Bytes per ranged read in a raw volume copy.
const RAW_CHUNK: u64 = 2 << 20;

/// Ranged reads kept in flight ahead of the writer in a raw volume copy, so reading the next
/// chunks overlaps writing this one (16 MiB in flight).
const RAW_READ_AHEAD: usize = 8;

/// Runs a media (raw, whole-volume) copy. Objects already present with the same size are
/// skipped, so a retried copy resumes.
pub async fn run_media_copy(task: &MediaCopyTask) -> Result<TaskOutcome> {
    let started = Instant::now();
    let src = task.source_media.open().await?;
    let dst = task.media.open().await?;
    let mut outcome = TaskOutcome::default();
    for vol in scan_trail(src.store.as_ref(), &task.source_trail).await? {
        super::progress::set_item(&vol.name);
        let prefix = format!("{}/{}/", task.source_trail, vol.name);
        for obj in src.store.list(&prefix).await? {
            let key = format!("{}/{}/{}", task.trail, vol.name, &obj.key[prefix.len()..]);
            if dst.store.head(&key).await? == Some(obj.size) {
                continue;
            }
            let mut w = dst.store.create(&key).await?;
            let ranges: Vec<(u64, u64)> = (0..obj.size.div_ceil(RAW_CHUNK))
                .map(|i| (i * RAW_CHUNK, ((i + 1) * RAW_CHUNK).min(obj.size)))
                .collect();
            let mut reads = futures::stream::iter(ranges)
                .map(|(a, b)| {
                    let store = src.store.clone();
                    let key = obj.key.clone();
                    async move { (b - a, store.get_range(&key, a..b).await) }
                })
                .buffered(RAW_READ_AHEAD);
            while let Some((want, data)) = reads.next().await {
                let data = match data {
                    Ok(d) if d.len() as u64 == want => d,
                    Ok(_) => {
                        w.abort().await?;
                        return Err(EngineError::CopyMismatch {
                            what: obj.key.clone(),
                            detail: "the source shrank while it was copied".into(),
                        });
                    }
                    Err(e) => {
                        w.abort().await?;
                        return Err(e.into());
                    }
                };
                super::progress::add(data.len());
                w.write(data).await?;
            }
            w.finish().await?;
            outcome.bytes_read += obj.size;
            outcome.bytes_written += obj.size;
        }
    }
    // Volumes keep their names, so each block is where it was on the source.
    let builder = EntryBuilder {
        trail: &task.trail,
        role: Role::Duplicate,
        retention_secs: task.retention_secs,
    };
    outcome.entries = task
        .entries
        .iter()
        .map(|e| builder.copy(e, e.extents.clone()))
        .collect();
    commit_manifest(
        dst.store.as_ref(),
        &task.trail,
        &task.session,
        &outcome.entries,
    )
    .await?;
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}
