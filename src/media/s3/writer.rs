//! The streaming writer: one conditional PutObject for a small object, a multipart upload with
//! a few parts in flight for a large one.

use super::*;

/// A streaming write: one conditional PutObject if the object fits in one part, else a
/// multipart upload started when the first part is full.
pub(super) struct S3Writer {
    pub(super) store: S3Store,
    pub(super) key: String,
    /// The part being filled; never longer than [`PART_SIZE`].
    pub(super) buf: BytesMut,
    /// The multipart upload in progress, once the first part was full.
    pub(super) upload_id: Option<String>,
    /// Parts uploaded, in order.
    pub(super) parts: Vec<CompletedPart>,
    /// Part uploads still running, oldest first.
    pub(super) inflight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    pub(super) size: u64,
    /// Set after an error: the upload was aborted, so further writes would make a hole.
    pub(super) failed: bool,
}

impl S3Writer {
    pub(super) fn refuse_if_failed(&self) -> Result<()> {
        if self.failed {
            return Err(MediaError::Store {
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
    pub(super) async fn start_upload(&self) -> Result<String> {
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
            .ok_or_else(|| MediaError::Store {
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
    pub(super) async fn upload_part(&mut self) -> Result<()> {
        if self.parts.len() + self.inflight.len() == MAX_PARTS {
            return Err(MediaError::Store {
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
    pub(super) async fn reap_part(&mut self) -> Result<()> {
        if let Some(handle) = self.inflight.pop_front() {
            let part = handle
                .await
                .map_err(|e| Stopped::new(&format!("part upload of {}", self.key), e))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Uploads the last part and completes the upload, write-once.
    pub(super) async fn complete(&mut self, upload_id: String) -> Result<()> {
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
    pub(super) async fn complete_once(
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
    pub(super) async fn fail(&mut self) {
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
