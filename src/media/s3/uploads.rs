//! Multipart uploads a writer leaves open when it is killed: the marker each writer puts beside
//! its upload, the check that an upload completed, and the purge of those older than a run.

use super::*;

impl S3Store {
    /// True if the multipart upload `upload_id` (to which parts were uploaded) is gone: no such
    /// upload, or no parts left (servers that forget completed uploads list none). Called
    /// after its CompleteMultipartUpload failed its `If-None-Match`: upload ids are unique and
    /// only completion or our own abort end an upload, so a vanished upload was completed by a
    /// retried attempt of ours.
    pub(super) async fn upload_completed(&self, key: &str, upload_id: &str) -> Result<bool> {
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
    pub(super) async fn list_timed(&self, prefix: &str) -> Result<Vec<(ObjectInfo, i64)>> {
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
    pub(super) async fn purge_listed_uploads(
        &self,
        prefix: &str,
        before: DateTime<Utc>,
    ) -> Result<usize> {
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
    pub(super) async fn put_upload_marker(&self, key: &str, upload_id: &str) -> Result<()> {
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
    pub(super) async fn abandon_upload(&self, key: &str, upload_id: &str) {
        if let Err(e) = self.end_upload(key, upload_id).await {
            tracing::warn!(error = %e, "could not abort multipart upload");
        }
    }

    /// Aborts an upload and removes its marker.
    pub(super) async fn end_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        self.abort_upload(key, upload_id).await?;
        self.remove_upload_marker(key, upload_id).await
    }

    /// The upload id a marker records: its body, or for a marker written before ids moved
    /// into the body (empty, `KEY@HEX(ID)`) its name. `None` for a marker removed since the
    /// listing (by the writer that ended its upload), or one no Mimeo wrote: larger than any id
    /// (never read into memory), or not text.
    pub(super) async fn marker_upload_id(&self, marker: &ObjectInfo) -> Result<Option<String>> {
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

    pub(super) async fn remove_upload_marker(&self, key: &str, upload_id: &str) -> Result<()> {
        if !self.track_uploads {
            return Ok(());
        }
        self.delete(&upload_marker(key, upload_id)).await
    }

    pub(super) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
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
pub(super) fn upload_marker(key: &str, upload_id: &str) -> String {
    match upload_id {
        "" => format!("{UPLOADS}/{key}"),
        id => format!("{UPLOADS}/{key}@{}", &hex::encode(Sha256::digest(id))[..16]),
    }
}

/// Root of the upload markers under a store's prefix.
pub(super) const UPLOADS: &str = ".uploads";

/// The largest upload id a marker may hold (S3's are under 200 bytes, MinIO's about 130).
pub(super) const MAX_UPLOAD_ID: u64 = 1024;

/// The key an upload marker is for.
pub(super) fn upload_marker_key(marker: &str) -> Option<&str> {
    let rest = marker.strip_prefix(UPLOADS)?.strip_prefix('/')?;
    Some(rest.rsplit_once('@')?.0)
}

/// `"/a/b/"` → `"a/b/"`, `""` → `""`: the form that is simply prepended to keys.
pub(super) fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}
