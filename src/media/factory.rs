//! The store factory: the one place that turns where a media class's objects live into an
//! [`ObjectStore`], with the layers every store of that kind gets (S3 behind the retry layer).

use std::path::PathBuf;
use std::sync::Arc;

use super::fs::FsStore;
use super::retry::Retrying;
use super::s3::{S3Config, S3Store};
use super::store::ObjectStore;
use crate::media::error::Result;

/// Where a store's objects live.
pub enum Location {
    /// A directory: a local path, or a claim mounted in a worker pod.
    Directory(PathBuf),
    /// An S3 bucket and prefix.
    S3(S3Config),
}

/// Opens the store at `location`. Nothing is sent to an S3 server yet; its `probe` checks
/// that the bucket answers.
pub async fn open_store(location: Location) -> Result<Arc<dyn ObjectStore>> {
    Ok(match location {
        Location::Directory(path) => Arc::new(FsStore::new(path)),
        Location::S3(config) => Arc::new(connect_s3(config).await?),
    })
}

/// An S3 store behind the retry layer.
pub async fn connect_s3(config: S3Config) -> Result<Retrying<S3Store>> {
    S3Store::connect(config).await.map(Retrying::new)
}
