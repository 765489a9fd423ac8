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
//! after its headers (a reset or stalled body) is an `Error::Store { transient: true }` for
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
use crate::error::{Error, Result};
use crate::media::retry::retry_transient;
use crate::media::store::{ObjectInfo, ObjectStore, ObjectWriter};

/// Size of one multipart part, and the most a writer buffers. S3 wants parts of at least 5 MiB
/// (except the last) and at most [`MAX_PARTS`] of them, so one object holds up to ~78 GiB.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// S3's limit on the number of parts of one multipart upload.
const MAX_PARTS: usize = 10_000;

/// Part uploads one writer keeps in flight while it fills the next part: one request at a time
/// left the writer idle during every round trip. A writer holds at most this many parts plus
/// the one being filled.
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

/// What an S3 call failure means to callers that branch on it, plus text for the message.
struct Failure {
    status: Option<u16>,
    code: Option<String>,
    transient: bool,
    detail: String,
}

impl Failure {
    fn of<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let transient = match err {
            // No usable answer: the request may well succeed when sent again.
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            SdkError::DispatchFailure(failure) => !failure.is_user(),
            SdkError::ServiceError(_) => {
                status.is_some_and(|s| (s >= 500 && s != 501) || s == 429)
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown"
                                | "Throttling"
                                | "ThrottlingException"
                                | "RequestTimeout"
                                // A concurrent conditional write raced with ours; S3 asks to retry.
                                | "ConditionalRequestConflict"
                        )
                    )
            }
            _ => false,
        };
        let mut detail = match (&code, err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, _) => DisplayErrorContext(err).to_string(),
        };
        if let Some(status) = status {
            detail.push_str(&format!(" (HTTP {status})"));
        }
        Failure {
            status,
            code,
            transient,
            detail,
        }
    }

    /// The key (not the bucket) is absent. HEAD responses have no body, so a missing bucket
    /// there also looks like this.
    fn is_missing_key(&self) -> bool {
        self.status == Some(404) && self.code.as_deref() != Some("NoSuchBucket")
    }

    /// The server lacks the feature (501): retrying will not help.
    fn is_not_implemented(&self) -> bool {
        self.status == Some(501) || self.code.as_deref() == Some("NotImplemented")
    }

    /// An `If-None-Match: *` condition failed: the key exists.
    fn is_precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code.as_deref() == Some("PreconditionFailed")
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

    fn error(&self, op: &str, key: &str, failure: Failure) -> Error {
        Error::Store {
            store: self.describe(),
            key: key.to_owned(),
            message: format!("{op} failed: {}", failure.detail),
            transient: failure.transient,
        }
    }

    fn already_exists(&self, key: &str) -> Error {
        Error::AlreadyExists {
            store: self.describe(),
            key: key.to_owned(),
        }
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            store: self.describe(),
            key: key.to_owned(),
        }
    }

    /// Reads a response body; a failure mid-body is a broken connection, hence transient.
    async fn read_body(&self, op: &str, key: &str, body: ByteStream) -> Result<Bytes> {
        match body.collect().await {
            Ok(data) => Ok(data.into_bytes()),
            Err(e) => Err(Error::Store {
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
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True if the multipart upload `upload_id` (to which parts were uploaded) is gone: no such
    /// upload, or no parts left (servers that forget completed uploads list none). Called
    /// after its CompleteMultipartUpload failed its `If-None-Match`: upload ids are unique and
    /// only completion or our own abort end an upload, so a vanished upload was completed by a
    /// retried attempt of ours.
    async fn upload_completed(&self, key: &str, upload_id: &str) -> Result<bool> {
        let out = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.parts().is_empty()),
            Err(e) => {
                let failure = Failure::of(&e);
                if failure.status == Some(404) {
                    Ok(true)
                } else {
                    Err(self.error("ListParts", key, failure))
                }
            }
        }
    }

    /// Objects under `prefix`, sorted by key, with their modification times (Unix seconds).
    async fn list_timed(&self, prefix: &str) -> Result<Vec<(ObjectInfo, i64)>> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", prefix, Failure::of(&e)))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                let info = ObjectInfo {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                };
                objects.push((info, object.last_modified().map_or(0, |t| t.secs())));
            }
            match page.next_continuation_token {
                Some(next) if page.is_truncated == Some(true) => token = Some(next),
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        Ok(objects)
    }
    /// Aborts the uploads ListMultipartUploads shows under `prefix`, started before `before`.
    ///
    /// The whole bucket is listed and filtered here: MinIO takes the listing's prefix as one
    /// exact key (a trail's prefix lists nothing there), and a bucket holds few open uploads.
    async fn purge_listed_uploads(&self, prefix: &str, before: DateTime<Utc>) -> Result<usize> {
        let prefix = self.full_key(prefix);
        let mut removed = 0;
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let failure = Failure::of(&e);
                    if failure.is_not_implemented() {
                        return Ok(removed); // the markers are all there is
                    }
                    return Err(self.error("ListMultipartUploads", &prefix, failure));
                }
            };
            for u in page.uploads() {
                let started = u.initiated().map_or(i64::MIN, |t| t.secs());
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                if key.starts_with(&prefix) && started <= before.timestamp() {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| self.error("AbortMultipartUpload", key, Failure::of(&e)))?;
                    removed += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(removed);
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
        }
    }
    /// Records an open multipart upload (see [`upload_marker`]).
    async fn put_upload_marker(&self, key: &str, upload_id: &str) -> Result<()> {
        if !self.track_uploads {
            return Ok(());
        }
        let marker = upload_marker(key, upload_id);
        let marker = &marker;
        self.retried("PutObject", marker, || {
            let request = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(marker))
                .body(ByteStream::from(upload_id.as_bytes().to_vec()));
            async move {
                request
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("PutObject", marker, Failure::of(&e)))
            }
        })
        .await
    }

    /// Aborts an upload and removes its marker, best effort: the caller reports the error that
    /// made it give up, and the trail's next session purges what is left.
    async fn abandon_upload(&self, key: &str, upload_id: &str) {
        if let Err(e) = self.end_upload(key, upload_id).await {
            tracing::warn!(error = %e, "could not abort multipart upload");
        }
    }

    /// Aborts an upload and removes its marker.
    async fn end_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        self.abort_upload(key, upload_id).await?;
        self.remove_upload_marker(key, upload_id).await
    }

    /// The upload id a marker records: its body, or for a marker written before ids moved
    /// into the body (empty, `KEY@HEX(ID)`) its name. `None` for a marker removed since the
    /// listing (by the writer that ended its upload), or one no Mimeo wrote: larger than any id
    /// (never read into memory), or not text.
    async fn marker_upload_id(&self, marker: &ObjectInfo) -> Result<Option<String>> {
        if marker.size > MAX_UPLOAD_ID {
            tracing::warn!(marker = %marker.key, size = marker.size, "not an upload marker: too large");
            return Ok(None);
        }
        let body = self.get(&marker.key).await?;
        if !body.is_empty() {
            return Ok(String::from_utf8(body.to_vec()).ok());
        }
        let legacy = (marker.key.rsplit_once('@'))
            .filter(|(_, hex_id)| hex_id.len() > 16)
            .and_then(|(_, hex_id)| hex::decode(hex_id).ok());
        Ok(legacy.and_then(|id| String::from_utf8(id).ok()))
    }

    async fn remove_upload_marker(&self, key: &str, upload_id: &str) -> Result<()> {
        if !self.track_uploads {
            return Ok(());
        }
        self.delete(&upload_marker(key, upload_id)).await
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        let out = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::of(&e);
                if failure.status == Some(404) {
                    // NoSuchUpload: already aborted or completed.
                    Ok(())
                } else {
                    Err(self.error("AbortMultipartUpload", key, failure))
                }
            }
        }
    }
}

/// Where an open multipart upload of `key` is recorded: `.uploads/KEY@DIGEST`, holding the
/// upload id, written when the upload starts and removed when it ends. A writer killed in
/// between leaves it, and the trail's next session aborts the upload it names, on servers
/// without ListMultipartUploads too (s3s-fs, some S3-compatible stores). DIGEST (16 hex digits
/// of the id's SHA-256) tells uploads of one key apart; the id itself stays out of the key,
/// since servers that store keys as files refuse a name longer than 255 bytes (MinIO's ids
/// are about 130 bytes). With an empty `upload_id`: the prefix of the markers of keys under
/// `key`.
fn upload_marker(key: &str, upload_id: &str) -> String {
    match upload_id {
        "" => format!("{UPLOADS}/{key}"),
        id => format!("{UPLOADS}/{key}@{}", &hex::encode(Sha256::digest(id))[..16]),
    }
}

/// Root of the upload markers under a store's prefix.
const UPLOADS: &str = ".uploads";

/// The largest upload id a marker may hold (S3's are under 200 bytes, MinIO's about 130).
const MAX_UPLOAD_ID: u64 = 1024;

/// The key an upload marker is for.
fn upload_marker_key(marker: &str) -> Option<&str> {
    let rest = marker.strip_prefix(UPLOADS)?.strip_prefix('/')?;
    Some(rest.rsplit_once('@')?.0)
}

/// `"/a/b/"` → `"a/b/"`, `""` → `""`: the form that is simply prepended to keys.
fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
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
                Err(Error::Store {
                    store: self.describe(),
                    key: String::new(),
                    message,
                    transient: failure.transient,
                })
            }
        }
    }
}

/// A streaming write: one conditional PutObject if the object fits in one part, else a
/// multipart upload started when the first part is full.
struct S3Writer {
    store: S3Store,
    key: String,
    /// The part being filled; never longer than [`PART_SIZE`].
    buf: BytesMut,
    /// The multipart upload in progress, once the first part was full.
    upload_id: Option<String>,
    /// Parts uploaded, in order.
    parts: Vec<CompletedPart>,
    /// Part uploads still running, oldest first.
    inflight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    size: u64,
    /// Set after an error: the upload was aborted, so further writes would make a hole.
    failed: bool,
}

impl S3Writer {
    fn refuse_if_failed(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Store {
                store: self.store.describe(),
                key: self.key.clone(),
                message: "writer used after a failed write; start a new one".into(),
                transient: false,
            });
        }
        Ok(())
    }

    /// Starts the multipart upload. The HeadObject check fails fast, before gigabytes are sent
    /// for a key that exists; the conditional complete remains what enforces write-once.
    async fn start_upload(&self) -> Result<String> {
        let store = &self.store;
        if store.head(&self.key).await?.is_some() {
            return Err(store.already_exists(&self.key));
        }
        // A retry after an unseen success leaves an unused upload behind, which
        // `purge_incomplete` (or a bucket lifecycle rule) removes.
        let key = &self.key;
        let out = store
            .retried("CreateMultipartUpload", key, || {
                let request = store
                    .client
                    .create_multipart_upload()
                    .bucket(&store.bucket)
                    .key(store.full_key(key))
                    .checksum_algorithm(ChecksumAlgorithm::Crc32C);
                async move {
                    request
                        .send()
                        .await
                        .map_err(|e| store.error("CreateMultipartUpload", key, Failure::of(&e)))
                }
            })
            .await?;
        let id = out
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Store {
                store: store.describe(),
                key: self.key.clone(),
                message: "CreateMultipartUpload returned no upload id".into(),
                transient: false,
            })?;
        if let Err(e) = store.put_upload_marker(key, &id).await {
            store.abandon_upload(key, &id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Starts uploading the buffer as the next part (starting the upload if needed), then waits
    /// only while [`PARTS_IN_FLIGHT`] parts are still running.
    async fn upload_part(&mut self) -> Result<()> {
        if self.parts.len() + self.inflight.len() == MAX_PARTS {
            return Err(Error::Store {
                store: self.store.describe(),
                key: self.key.clone(),
                message: format!(
                    "object larger than {MAX_PARTS} parts of {PART_SIZE} bytes; use smaller volumes"
                ),
                transient: false,
            });
        }
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.start_upload().await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        // At most MAX_PARTS, checked above.
        let number = (self.parts.len() + self.inflight.len()) as i32 + 1;
        let store = self.store.clone();
        let key = self.key.clone();
        let body = self.buf.split().freeze();
        self.inflight.push_back(tokio::spawn(async move {
            let (store, key) = (&store, &key);
            let out = store
                .retried("UploadPart", key, || {
                    let request = store
                        .client
                        .upload_part()
                        .bucket(&store.bucket)
                        .key(store.full_key(key))
                        .upload_id(&upload_id)
                        .part_number(number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                        .body(ByteStream::from(body.clone()));
                    async move {
                        request
                            .send()
                            .await
                            .map_err(|e| store.error("UploadPart", key, Failure::of(&e)))
                    }
                })
                .await?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .set_checksum_crc32_c(out.checksum_crc32_c)
                .build())
        }));
        while self.inflight.len() >= PARTS_IN_FLIGHT {
            self.reap_part().await?;
        }
        Ok(())
    }

    /// Waits for the oldest part upload in flight and records it.
    async fn reap_part(&mut self) -> Result<()> {
        if let Some(handle) = self.inflight.pop_front() {
            let part = handle
                .await
                .map_err(|e| Error::Other(format!("part upload of {} failed: {e}", self.key)))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Uploads the last part and completes the upload, write-once.
    async fn complete(&mut self, upload_id: String) -> Result<()> {
        if !self.buf.is_empty() {
            self.upload_part().await?;
        }
        while !self.inflight.is_empty() {
            self.reap_part().await?;
        }
        let store = &self.store;
        let request = store
            .client
            .complete_multipart_upload()
            .bucket(&store.bucket)
            .key(store.full_key(&self.key))
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            );
        let conditional = store
            .retried("CompleteMultipartUpload", &self.key, || {
                self.complete_once(request.clone().if_none_match("*"), &upload_id)
            })
            .await?;
        if conditional {
            return Ok(());
        }
        // The server does not support conditional completes: rely on the HeadObject check made
        // when the upload started, repeated here to narrow the window.
        if store.head(&self.key).await?.is_some() {
            return Err(store.already_exists(&self.key));
        }
        let key = &self.key;
        store
            .retried("CompleteMultipartUpload", key, || {
                let request = request.clone();
                async move {
                    request
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| store.error("CompleteMultipartUpload", key, Failure::of(&e)))
                }
            })
            .await
    }

    /// One conditional complete: `Ok(true)` when the object is in place, `Ok(false)` when the
    /// server does not support conditional completes.
    async fn complete_once(
        &self,
        request: aws_sdk_s3::operation::complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder,
        upload_id: &str,
    ) -> Result<bool> {
        let store = &self.store;
        let failure = match request.send().await {
            Ok(_) => return Ok(true),
            Err(e) => Failure::of(&e),
        };
        if failure.is_not_implemented() {
            return Ok(false);
        }
        // Perhaps a failure in appearance only: a retry after an unseen success meets the
        // completed upload (412 from the condition; NoSuchUpload, or AccessDenied from servers
        // that check the upload id first).
        let completed = matches!(store.upload_completed(&self.key, upload_id).await, Ok(true))
            && matches!(store.head(&self.key).await, Ok(Some(n)) if n == self.size);
        if completed {
            Ok(true)
        } else if failure.is_precondition_failed() {
            Err(store.already_exists(&self.key))
        } else {
            Err(store.error("CompleteMultipartUpload", &self.key, failure))
        }
    }

    /// Marks the writer failed and aborts its upload, best effort: the caller gets the original
    /// error, and a bucket lifecycle rule should clean up uploads that could not be aborted.
    async fn fail(&mut self) {
        self.failed = true;
        self.buf = BytesMut::new();
        for handle in self.inflight.drain(..) {
            handle.abort();
        }
        if let Some(id) = self.upload_id.take() {
            self.store.abandon_upload(&self.key, &id).await;
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, mut data: Bytes) -> Result<()> {
        self.refuse_if_failed()?;
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve(PART_SIZE);
            }
            let take = (PART_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            self.size += take as u64;
            if self.buf.len() == PART_SIZE
                && let Err(e) = self.upload_part().await
            {
                self.fail().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Uploads the buffer as the last part, however short (a multipart upload stays invisible
    /// until completed), and frees it.
    async fn seal(&mut self) -> Result<()> {
        self.refuse_if_failed()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let sent = async {
            self.upload_part().await?;
            while !self.inflight.is_empty() {
                self.reap_part().await?;
            }
            Ok(())
        }
        .await;
        // The part was split off the buffer's allocation: drop the rest of it too.
        self.buf = BytesMut::new();
        if sent.is_err() {
            self.fail().await;
        }
        sent
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.refuse_if_failed()?;
        let result = match self.upload_id.clone() {
            None => {
                let data = self.buf.split().freeze();
                self.store
                    .retried("PutObject", &self.key, || {
                        self.store.put(&self.key, data.clone())
                    })
                    .await
            }
            Some(id) => self.complete(id).await,
        };
        match result {
            Ok(()) => {
                if let Some(id) = self.upload_id.take()
                    && let Err(e) = self.store.remove_upload_marker(&self.key, &id).await
                {
                    // The object is in place; the next session's purge removes the marker.
                    tracing::warn!(error = %e, "could not remove an upload marker");
                }
                Ok(self.size)
            }
            Err(e) => {
                self.fail().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        for handle in self.inflight.drain(..) {
            handle.abort();
        }
        match self.upload_id.take() {
            Some(id) => self.store.end_upload(&self.key, &id).await,
            None => Ok(()),
        }
    }
}

impl Drop for S3Writer {
    /// A writer dropped mid-upload leaves no object, but its parts would be billed until a
    /// lifecycle rule removes them: abort the upload in the background when a runtime exists.
    fn drop(&mut self) {
        for handle in self.inflight.drain(..) {
            handle.abort();
        }
        if let Some(id) = self.upload_id.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            let key = std::mem::take(&mut self.key);
            runtime.spawn(async move { store.abandon_upload(&key, &id).await });
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
