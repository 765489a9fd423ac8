//! S3 backend: an [`ObjectStore`] on a bucket and an optional key prefix, via aws-sdk-s3.
//!
//! Write-once is enforced by the server, not only by convention: every object is created with
//! `If-None-Match: *` (on PutObject, and on CompleteMultipartUpload for large objects), so an
//! existing key is never overwritten even by a concurrent writer, and buckets with object lock work.
//! Large objects are streamed as multipart uploads of [`PART_SIZE`] parts, up to
//! [`PARTS_IN_FLIGHT`] at a time, so a writer holds at most that many parts plus the one it
//! fills, whatever the object size.
//!
//! Every write carries an explicit CRC32C checksum (parts too, and the complete lists them): the
//! server rejects corrupted uploads, and S3 requires an integrity header on writes to buckets with
//! an Object Lock retention.
//!
//! Transient failures are retried at two levels: the SDK resends a failed request
//! ([`RETRY_ATTEMPTS`] attempts, exponential backoff with jitter), and a response that fails
//! after its headers (a reset or stalled body) is a `MediaError::Store { transient: true }` for
//! [`crate::media::retry::Retrying`] to retry. Requests and streams that stall longer than
//! [`io_timeout`] are cut. A conditional create that fails because a retried attempt's first
//! try already succeeded unseen is recognised as our own write (same bytes, or our multipart
//! upload gone), so it is not reported as `AlreadyExists`.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, StalledStreamProtectionConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::base::backoff::Backoff;
use crate::base::failure::Stopped;
use crate::media::error::{MediaError, Result};
use crate::media::retry::retry_transient;
use crate::media::store::{ObjectInfo, ObjectStore, ObjectWriter};

mod failure;
mod uploads;
mod writer;

use failure::*;
use uploads::*;
use writer::*;

/// Size of one multipart part, and the most a writer buffers. S3 wants parts of at least 5 MiB
/// (except the last) and at most [`MAX_PARTS`] of them, so one object holds up to ~78 GiB.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// S3's limit on the number of parts of one multipart upload.
const MAX_PARTS: usize = 10_000;

/// Part uploads one writer keeps in flight while it fills the next part: one request at a time
/// left the writer idle during every round trip. Four gained nothing over two against the
/// benchmark's loopback server (an A/B on 2 GiB: Media mode 1.04 times two's time, logical
/// copies 1.00), so a writer holds at most two parts plus the one being filled (24 MiB).
const PARTS_IN_FLIGHT: usize = 2;

/// Attempts per request by the SDK, including the first, with backoff from [`FIRST_BACKOFF`] to
/// [`MAX_BACKOFF`]. The retry layer repeats the whole call a few times more with longer
/// pauses, so a glitch costs a fraction of a second and a dead server fails a call within
/// seconds, not minutes.
const RETRY_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a request may wait for its first response byte, and a body stream may stall, before
/// the attempt is given up (and retried). `MIMEO_S3_TIMEOUT_SECONDS` overrides the default of
/// 60 s (tests use a short one to make stalls cheap).
pub fn io_timeout() -> std::time::Duration {
    let secs = std::env::var("MIMEO_S3_TIMEOUT_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// Where and how to reach a bucket.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible servers (MinIO, Ceph, ...); `None` means AWS (or
    /// `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Key prefix under which all objects live; leading and trailing `/` are ignored.
    pub prefix: String,
    /// Region; when unset here and in the AWS environment/profile, `us-east-1`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint` (MinIO and most
    /// self-hosted servers need this).
    pub force_path_style: bool,
    /// Static credentials; `None` uses the standard AWS provider chain (environment, profile,
    /// web identity / IRSA, container and instance metadata).
    pub credentials: Option<S3Credentials>,
    /// Record open multipart uploads in markers (see [`upload_marker`]), so a trail's next
    /// session aborts what a killed writer left: on for media, off for the user's buckets
    /// (sources, restore targets), where Mimeo leaves no objects of its own.
    pub track_uploads: bool,
}

/// A static access key pair. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// A write-once object store on an S3 bucket. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Normalised key prefix: empty, or ending with `/`.
    prefix: String,
    /// See [`S3Config::track_uploads`].
    track_uploads: bool,
}

impl fmt::Debug for S3Store {
    // Only the location: the client's own Debug output is large and includes its configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("S3Store").field(&self.describe()).finish()
    }
}

impl S3Store {
    /// Builds a client for `cfg`. Nothing is sent yet; call [`ObjectStore::probe`] to check that
    /// the bucket answers.
    pub async fn connect(cfg: S3Config) -> Result<S3Store> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = cfg.region {
            loader = loader.region(Region::new(region));
        }
        if let Some(c) = cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                None,
                None,
                "mimeo-static",
            ));
        }
        let shared = loader.load().await;
        let timeout = io_timeout();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(RETRY_ATTEMPTS)
                    .with_initial_backoff(FIRST_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            // The SDK's default retry quota (a client-wide token bucket that only refills
            // slowly) stops retrying after a few dozen faults: a long run on a flaky server
            // would then fail on its next glitch. Attempts and backoff above bound each call.
            .retry_partition(
                RetryPartition::custom("mimeo")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
                    .read_timeout(timeout)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(timeout)
                    .build(),
            );
        if shared.region().is_none() {
            builder = builder.region(Region::from_static("us-east-1"));
        }
        if let Some(endpoint) = cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: cfg.bucket,
            prefix: normalise_prefix(&cfg.prefix),
            track_uploads: cfg.track_uploads,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, op: &str, key: &str, failure: Failure) -> MediaError {
        MediaError::Store {
            store: self.describe(),
            key: key.to_owned(),
            message: format!("{op} failed: {}", failure.detail),
            transient: failure.transient,
        }
    }

    fn already_exists(&self, key: &str) -> MediaError {
        MediaError::AlreadyExists {
            store: self.describe(),
            key: key.to_owned(),
        }
    }

    fn not_found(&self, key: &str) -> MediaError {
        MediaError::NotFound {
            store: self.describe(),
            key: key.to_owned(),
        }
    }

    /// Reads a response body; a failure mid-body is a broken connection, hence transient.
    async fn read_body(&self, op: &str, key: &str, body: ByteStream) -> Result<Bytes> {
        match body.collect().await {
            Ok(data) => Ok(data.into_bytes()),
            Err(e) => Err(MediaError::Store {
                store: self.describe(),
                key: key.to_owned(),
                message: format!("{op} failed reading the body: {}", DisplayErrorContext(&e)),
                transient: true,
            }),
        }
    }

    async fn get_object(&self, key: &str, range: Option<String>) -> Result<Option<Bytes>> {
        let op = if range.is_some() {
            "ranged GetObject"
        } else {
            "GetObject"
        };
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_range(range)
            .send()
            .await;
        match out {
            Ok(out) => self.read_body(op, key, out.body).await.map(Some),
            Err(e) => {
                let failure = Failure::of(&e);
                if failure.is_missing_key() {
                    Err(self.not_found(key))
                } else if failure.status == Some(416) {
                    // The range starts at or past the end: nothing to return.
                    Ok(None)
                } else {
                    Err(self.error(op, key, failure))
                }
            }
        }
    }

    /// Retries a call of a multipart upload that the SDK does not resend by itself (requests
    /// that are not idempotent to it, or whose response broke after the headers).
    async fn retried<T, F, Fut>(&self, op: &str, key: &str, call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        retry_transient(&Backoff::default(), self, op, key, call).await
    }

    /// True if `key` holds exactly `data`: a conditional create that lost to itself.
    async fn holds(&self, key: &str, data: &[u8]) -> Result<bool> {
        match self.get_object(key, None).await {
            Ok(existing) => Ok(existing.as_deref().unwrap_or_default() == data),
            Err(MediaError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_owned()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(data.clone()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::of(&e);
                if !failure.is_precondition_failed() {
                    Err(self.error("PutObject", key, failure))
                } else if self.holds(key, &data).await? {
                    // A retried attempt whose first try succeeded unseen: our own object.
                    Ok(())
                } else {
                    Err(self.already_exists(key))
                }
            }
        }
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: key.to_owned(),
            buf: BytesMut::new(),
            upload_id: None,
            parts: Vec::new(),
            inflight: VecDeque::new(),
            size: 0,
            failed: false,
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        // HTTP ranges are inclusive; a server clamps `last` to the object's end.
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        Ok(self
            .get_object(key, Some(header))
            .await?
            .unwrap_or_default())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.get_object(key, None).await?.unwrap_or_default())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match out {
            Ok(out) => Ok(Some(
                out.content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            )),
            Err(e) => {
                let failure = Failure::of(&e);
                if failure.is_missing_key() {
                    Ok(None)
                } else {
                    Err(self.error("HeadObject", key, failure))
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let timed = self.list_timed(prefix).await?;
        Ok(timed.into_iter().map(|(o, _)| o).collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let out = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::of(&e);
                // S3 answers 204 for absent keys; some compatible servers answer NoSuchKey.
                if failure.is_missing_key() {
                    Ok(())
                } else {
                    Err(self.error("DeleteObject", key, failure))
                }
            }
        }
    }

    /// Aborts the multipart uploads under `prefix` started before `before`: those their
    /// markers record (on every server), then any other the server lists (a writer killed
    /// between starting an upload and writing its marker) where ListMultipartUploads exists.
    async fn purge_incomplete(&self, prefix: &str, before: DateTime<Utc>) -> Result<usize> {
        let mut removed = 0;
        for (marker, modified) in self.list_timed(&upload_marker(prefix, "")).await? {
            let Some(key) = upload_marker_key(&marker.key) else {
                continue;
            };
            if modified > before.timestamp() {
                continue;
            }
            let Some(id) = self.marker_upload_id(&marker).await? else {
                continue;
            };
            // A writer killed between completing an upload and removing its marker: the
            // object is there (keys are written once), and some servers refuse to abort a
            // completed upload (s3s-fs: AccessDenied).
            let completed = self.head(key).await?.is_some();
            if !completed && let Err(e) = self.abort_upload(key, &id).await {
                tracing::warn!(key, error = %e, "interrupted upload not aborted");
                continue;
            }
            self.delete(&marker.key).await?;
            removed += usize::from(!completed);
        }
        Ok(removed + self.purge_listed_uploads(prefix, before).await?)
    }

    async fn probe(&self) -> Result<()> {
        // A probe answers "reachable now?": a few quick attempts, not the long retry of data
        // calls (the retry layer adds a few more).
        let out = self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(2)
                        .with_initial_backoff(FIRST_BACKOFF),
                ),
            )
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::of(&e);
                let message = if failure.status == Some(404) {
                    format!("bucket {:?} does not exist", self.bucket)
                } else {
                    format!(
                        "bucket {:?} is not reachable: HeadBucket failed: {}",
                        self.bucket, failure.detail
                    )
                };
                Err(MediaError::Store {
                    store: self.describe(),
                    key: String::new(),
                    message,
                    transient: failure.transient,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_marker_fits_a_file_name_and_names_its_key() {
        // A MinIO upload id: base64 of a UUID pair and more, about 130 bytes.
        let id = "ZjQ5NjQtNDNjNi00ODFhLTgxMTgtNzBhNzg1M2YzMGE2LjcxMzBmOWFiLWI2OTUtNDEzMS1iNzc4LTRmMTNiOThkNmU4M3gxNzk2NTg3NjQ1NjU0MDg4ODQw";
        let key = "vault-7y/vault-7y-00001/00000.seg";
        let marker = upload_marker(key, id);
        let last = marker.rsplit('/').next().unwrap();
        assert!(last.len() <= 64, "{last} ({} bytes)", last.len());
        assert_eq!(upload_marker_key(&marker), Some(key));
        assert!(marker.starts_with(&upload_marker("vault-7y/", "")));
        assert_ne!(marker, upload_marker(key, "another upload"));
    }
}
