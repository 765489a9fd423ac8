//! Bridges between the synchronous archive code (tar) and the async media code: bounded
//! channels, so memory is capped by the channel depth times the chunk size.

use std::io::{Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::engine::error::{EngineError, Result};
use crate::media::{self, error::MediaError};

/// Chunk size handed from a tar writer to the block writer.
const CHUNK: usize = 256 << 10;

/// What a panic on an engine thread running blocking code (tar, file writes) is reported as.
pub const WORKER_THREAD: &str = "worker thread";

/// A `Write` that sends chunks into a channel (use from a blocking thread).
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// Wraps a sender.
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "writer stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// A `Read` over a channel of chunks (use from a blocking thread). An error received from the
/// channel is kept and returned by [`ChannelReader::take_error`], so the typed media error
/// (with its volume and offset) survives the trip through `std::io`.
pub struct ChannelReader {
    rx: mpsc::Receiver<media::error::Result<Bytes>>,
    current: Bytes,
    error: Option<MediaError>,
}

impl ChannelReader {
    /// Wraps a receiver.
    pub fn new(rx: mpsc::Receiver<media::error::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            error: None,
        }
    }

    /// The media error that ended the stream, if any.
    pub fn take_error(&mut self) -> Option<MediaError> {
        self.error.take()
    }

    /// Reads and discards the rest of the stream, so the digest check at its end runs.
    pub fn drain(&mut self) -> Result<()> {
        let copied = std::io::copy(self, &mut std::io::sink());
        match (self.take_error(), copied) {
            (Some(e), _) => Err(e.into()),
            (None, Err(e)) => Err(EngineError::Archive {
                entry: "archive stream".into(),
                detail: e.to_string(),
            }),
            (None, Ok(_)) => Ok(()),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    super::progress::add(b.len());
                    self.current = b;
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
