//! Feeds several instance streams into one [`TrailWriter`]: interleaved (blocks of concurrent
//! streams mix on the volumes, as a multiplexed backup does) or sequential (each instance
//! contiguous, the next ones prefetched). Memory is bounded by channel depth × chunk size.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::base::failure::Stopped;
use crate::engine::error::Result;
use crate::media::trail::{TrailWriter, WrittenInstance};

/// Depth of each producer's channel, in chunks.
const DEPTH: usize = 4;

/// A producer: given a sender, fills it with the instance's stream and returns its result.
pub type Producer<T> = Box<dyn FnOnce(mpsc::Sender<Bytes>) -> BoxFuture<'static, Result<T>> + Send>;

/// One instance stream to write.
pub struct StreamJob<T> {
    /// Instance id.
    pub instance_id: String,
    /// Work item.
    pub work_item: String,
    /// For a copy: the digest the producer's reader verifies, so the writer does not hash the
    /// stream again (see [`TrailWriter::begin_copy`]).
    pub verified_digest: Option<String>,
    /// Produces the bytes.
    pub producer: Producer<T>,
}

struct Running<T> {
    slot: usize,
    rx: mpsc::Receiver<Bytes>,
    handle: JoinHandle<Result<T>>,
}

fn start<T: Send + 'static>(writer: &mut TrailWriter, job: StreamJob<T>) -> Running<T> {
    let slot = match &job.verified_digest {
        Some(d) => writer.begin_copy(&job.instance_id, &job.work_item, d),
        None => writer.begin(&job.instance_id, &job.work_item),
    };
    super::progress::set_item(&job.work_item);
    let (tx, rx) = mpsc::channel(DEPTH);
    let handle = tokio::spawn((job.producer)(tx));
    Running { slot, rx, handle }
}

async fn finish<T>(writer: &mut TrailWriter, r: Running<T>) -> Result<(WrittenInstance, T)> {
    let extra = r
        .handle
        .await
        .map_err(|e| Stopped::new("stream task", e))??;
    Ok((writer.end(r.slot).await?, extra))
}

/// Writes each job contiguously, in order, keeping up to `prefetch` jobs reading ahead.
pub async fn write_sequential<T: Send + 'static>(
    writer: &mut TrailWriter,
    jobs: Vec<StreamJob<T>>,
    prefetch: usize,
) -> Result<Vec<(WrittenInstance, T)>> {
    let mut pending: VecDeque<StreamJob<T>> = jobs.into();
    let mut running: VecDeque<Running<T>> = VecDeque::new();
    let mut done = Vec::new();
    loop {
        while running.len() < prefetch.max(1) {
            let Some(job) = pending.pop_front() else {
                break;
            };
            running.push_back(start(writer, job));
        }
        let Some(mut current) = running.pop_front() else {
            return Ok(done);
        };
        while let Some(chunk) = current.rx.recv().await {
            writer.write(current.slot, &chunk).await?;
            super::progress::add(chunk.len());
        }
        done.push(finish(writer, current).await?);
    }
}

/// Writes up to `streams` jobs at once; their blocks interleave in arrival order.
pub async fn write_interleaved<T: Send + 'static>(
    writer: &mut TrailWriter,
    jobs: Vec<StreamJob<T>>,
    streams: usize,
) -> Result<Vec<(WrittenInstance, T)>> {
    let mut pending: VecDeque<StreamJob<T>> = jobs.into();
    let mut running: Vec<Running<T>> = Vec::new();
    let mut done = Vec::new();
    loop {
        while running.len() < streams.max(1) {
            let Some(job) = pending.pop_front() else {
                break;
            };
            running.push(start(writer, job));
        }
        if running.is_empty() {
            return Ok(done);
        }
        // Take one chunk from whichever stream has one.
        let (chunk, i) = {
            let futs = running.iter_mut().map(|r| Box::pin(r.rx.recv()));
            let (chunk, i, _rest) = futures::future::select_all(futs).await;
            (chunk, i)
        };
        match chunk {
            Some(data) => {
                writer.write(running[i].slot, &data).await?;
                super::progress::add(data.len());
                // Start the next poll after this stream, so every ready stream gets its turn.
                let n = running.len();
                running.rotate_left((i + 1) % n);
            }
            None => {
                let r = running.remove(i);
                done.push(finish(writer, r).await?);
            }
        }
    }
}
