//! The small storage traits every backend implements. Media code only ever talks to an
//! [`ObjectStore`]: a flat namespace of write-once objects under a root (a directory or an S3
//! bucket + prefix). Layers (throttling, retry) wrap a store and implement the same trait.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::media::error::Result;

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A write-once object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Human description for messages, e.g. `file:///data/media` or `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// Writes a small object in one call. Fails with `MediaError::AlreadyExists` if `key` exists.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Starts a streaming write of a possibly large object. Nothing is visible under `key`
    /// until [`ObjectWriter::finish`] returns; an aborted or dropped writer leaves no object.
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;

    /// Reads `range` of an object (a ranged GET on S3, a seek on files). A range running past
    /// the end returns the bytes that exist.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Reads a whole (small) object.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Size of an object, `None` if absent.
    async fn head(&self, key: &str) -> Result<Option<u64>>;

    /// Lists objects whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Deletes an object; deleting an absent object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Checks that the store can be reached (directory exists / bucket answers).
    async fn probe(&self) -> Result<()>;

    /// Removes what interrupted writes under `prefix` left behind (temporary files, multipart
    /// uploads) if they were started before `before` (to the second); returns how many were
    /// removed. Writes started later may still be in progress and are left alone.
    async fn purge_incomplete(&self, prefix: &str, before: DateTime<Utc>) -> Result<usize>;
}

/// A streaming write in progress.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes. Implementations buffer a few parts (S3) or one OS buffer (files).
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Sends what is still buffered, so the writer can wait for [`ObjectWriter::finish`]
    /// without holding its data in memory; the object stays invisible until then. No write may
    /// follow. The default does nothing, for writers that buffer nothing in memory.
    async fn seal(&mut self) -> Result<()> {
        Ok(())
    }

    /// Makes the object durable and visible under its key, write-once; returns its size.
    async fn finish(self: Box<Self>) -> Result<u64>;

    /// Discards everything written (aborts the multipart upload, removes the temp file).
    async fn abort(self: Box<Self>) -> Result<()>;
}
