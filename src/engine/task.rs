//! Tasks: the serialisable unit of work the planner produces and the executor runs, in a worker
//! pod or in-process. Everything a task needs is in it, except secrets, which the driver injects
//! (from Secret objects in local mode, from the environment in a worker pod).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::api::{Backend, CatalogEntrySpec, Layout, MediaClass, SpecError};
use crate::engine::error::{EngineError, Result};
use crate::media::crypt::{BlockKey, KEY_SECRET_ENTRY};
use crate::media::factory::{Location, connect_s3, open_store};
use crate::media::retry::Retrying;
use crate::media::s3::{S3Config, S3Credentials, S3Store};
use crate::media::trail::Media;

/// A media class resolved for execution.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaSpec {
    /// MediaClass name.
    pub name: String,
    /// Its backend.
    pub backend: Backend,
    /// Block size in bytes.
    pub block_size: u64,
    /// Volume capacity in bytes.
    pub capacity: u64,
    /// Where a PVC backend is mounted in the worker pod (set by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Secret holding the class's encryption key, if the class encrypts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    /// S3 credentials; never serialised (a worker reads them from its environment).
    #[serde(skip)]
    pub credentials: Option<S3Credentials>,
    /// The encryption key; never serialised (a worker reads it from its environment).
    #[serde(skip)]
    pub key: Option<Arc<BlockKey>>,
}

impl MediaSpec {
    /// Resolves a MediaClass (already validated). Secrets are filled in by
    /// [`MediaSpec::fill_secrets`].
    pub fn from_class(mc: &MediaClass) -> Result<MediaSpec, SpecError> {
        let name = kube::ResourceExt::name_any(mc);
        let bad = |field: &str| {
            let name = name.clone();
            let field = field.to_owned();
            move |e: crate::api::validate::ValueError| SpecError::Invalid {
                source_name: "media".into(),
                kind: "MediaClass".into(),
                name,
                field,
                message: e.to_string(),
            }
        };
        Ok(MediaSpec {
            name: name.clone(),
            backend: mc.spec.backend.clone(),
            block_size: mc.spec.block_size_bytes().map_err(bad("spec.blockSize"))?,
            capacity: mc
                .spec
                .capacity_bytes()
                .map_err(bad("spec.volumeCapacity"))?,
            mount_path: None,
            key_secret: mc
                .spec
                .encryption
                .as_ref()
                .map(|e| e.key_secret_ref.name.clone()),
            credentials: None,
            key: None,
        })
    }

    /// Connects to the store.
    pub async fn open(&self) -> Result<Media> {
        let b = &self.backend;
        let location = if let Some(fs) = &b.filesystem {
            Location::Directory(fs.path.clone().into())
        } else if let Some(s3) = &b.s3 {
            Location::S3(S3Config {
                endpoint: s3.endpoint.clone(),
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone().unwrap_or_default(),
                region: s3.region.clone(),
                force_path_style: s3.force_path_style.unwrap_or(false),
                credentials: self.credentials.clone(),
                track_uploads: true,
            })
        } else {
            let path = self.mount_path.as_ref().ok_or_else(|| {
                EngineError::Unsupported(format!(
                    "MediaClass {}: a pvc backend needs the operator (worker pods mount the claim); \
                     use a filesystem or s3 backend in local mode",
                    self.name
                ))
            })?;
            Location::Directory(path.into())
        };
        let store = open_store(location).await?;
        let key = match (&self.key_secret, &self.key) {
            (Some(secret), None) => {
                return Err(EngineError::Secret {
                    secret: secret.clone(),
                    detail: format!("MediaClass {} encrypts, but no key was given", self.name),
                });
            }
            (_, key) => key.clone(),
        };
        Ok(Media {
            name: self.name.clone(),
            store,
            block_size: self.block_size,
            capacity: self.capacity,
            key,
        })
    }
}

/// Where a work item is read from or a restore writes to, resolved.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DataSpec {
    /// A local directory (or a mounted PVC in a worker pod).
    Path(String),
    /// Objects under an S3 prefix.
    S3(S3Target),
}

/// An S3 prefix, resolved.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// Endpoint URL.
    pub endpoint: Option<String>,
    /// Bucket.
    pub bucket: String,
    /// Prefix.
    pub prefix: String,
    /// Region.
    pub region: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Secret holding the credentials (a worker pod gets them as environment variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Credentials; never serialised.
    #[serde(skip)]
    pub credentials: Option<S3Credentials>,
}

impl S3Target {
    /// Connects to the bucket, rooted at the prefix.
    pub async fn open(&self) -> Result<Retrying<S3Store>> {
        Ok(connect_s3(S3Config {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            force_path_style: self.force_path_style,
            credentials: self.credentials.clone(),
            track_uploads: false,
        })
        .await?)
    }
}

/// One work item of a backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupItem {
    /// Work item name.
    pub work_item: String,
    /// Id of the instance to create.
    pub instance_id: String,
    /// Where to read it.
    pub source: DataSpec,
    /// For an incremental: the instance it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// Back up work items onto a backup trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupTask {
    /// BackupTrail name.
    pub trail: String,
    /// Its media.
    pub media: MediaSpec,
    /// Write session id (names the manifest).
    pub session: String,
    /// Items to back up.
    pub items: Vec<BackupItem>,
    /// Interleaved streams.
    pub streams: u32,
    /// Keep a file index per instance so the next backup can be incremental.
    pub incremental: bool,
    /// Time of the backup.
    pub backup_time: DateTime<Utc>,
    /// Retention of the trail, seconds.
    pub retention_secs: i64,
}

/// One instance to copy and where its source copy is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyItem {
    /// The catalog entry read.
    pub source: CatalogEntrySpec,
    /// Its media: the name of one of the task's [`CopyTask::sources`].
    pub source_media: String,
}

/// Logical copy of instances onto one duplication trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyTask {
    /// Policy that asked for the copy.
    pub policy: String,
    /// Target DuplicationTrail.
    pub trail: String,
    /// Its media.
    pub media: MediaSpec,
    /// Sequential or Interleaved.
    pub layout: Layout,
    /// Parallel readers (and writers, when Interleaved).
    pub parallelism: u32,
    /// Retention of the target trail, seconds.
    pub retention_secs: i64,
    /// Write session id.
    pub session: String,
    /// The media the items are read from, each named once: a task lists thousands of items
    /// from one or two media (a worker's task ConfigMap has 1 MiB for them).
    pub sources: Vec<MediaSpec>,
    /// What to copy.
    pub items: Vec<CopyItem>,
}

/// Whole-volume raw copy of a trail (the conventional baseline).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaCopyTask {
    /// Policy.
    pub policy: String,
    /// Source trail and media.
    pub source_trail: String,
    /// Source media.
    pub source_media: MediaSpec,
    /// Target trail.
    pub trail: String,
    /// Target media.
    pub media: MediaSpec,
    /// Retention of the target trail, seconds.
    pub retention_secs: i64,
    /// Write session id.
    pub session: String,
    /// Valid entries of the source trail; they are re-cataloged on the target.
    pub entries: Vec<CatalogEntrySpec>,
}

/// One link of a restore chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreLink {
    /// The copy to read.
    pub entry: CatalogEntrySpec,
    /// Its media.
    pub media: MediaSpec,
}

/// Restore a chain (full first, then each incremental) into a target.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTask {
    /// Restore name.
    pub restore: String,
    /// Links, oldest first.
    pub links: Vec<RestoreLink>,
    /// Where to write.
    pub target: DataSpec,
}

/// Re-read copies and check their digests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyTask {
    /// Copies to check.
    pub links: Vec<RestoreLink>,
}

/// Free volumes whose entries all expired.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScratchTask {
    /// Trail.
    pub trail: String,
    /// Its media.
    pub media: MediaSpec,
    /// Volumes that still hold Valid entries; every other sealed volume is freed.
    pub keep: Vec<String>,
}

/// Rebuild a trail's catalog entries from the manifests on its media.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RescanTask {
    /// Trail.
    pub trail: String,
    /// Its media.
    pub media: MediaSpec,
}

/// Any task. Tasks are built once per run and moved, never copied in bulk, so the size
/// difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Task {
    /// Backup.
    Backup(BackupTask),
    /// Logical copy.
    Copy(CopyTask),
    /// Media copy.
    MediaCopy(MediaCopyTask),
    /// Restore.
    Restore(RestoreTask),
    /// Verify.
    Verify(VerifyTask),
    /// Free expired volumes.
    Scratch(ScratchTask),
    /// Rebuild catalog entries from the media.
    Rescan(RescanTask),
}

/// Looks up one entry of a Secret: `lookup(secret, entry)`. The driver decides where values
/// come from (Secret objects in local mode, the environment in a worker pod).
pub type SecretLookup<'a> = &'a dyn Fn(&str, &str) -> Result<String>;

/// Entries of a credentials Secret.
const CREDENTIAL_ENTRIES: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// The `(secret, entry)` pairs of a credentials Secret, if there is one.
fn credential_entries(secret: Option<&str>) -> impl Iterator<Item = (String, &'static str)> {
    secret
        .into_iter()
        .flat_map(|s| CREDENTIAL_ENTRIES.map(|e| (s.to_owned(), e)))
}

/// One entry of a Secret object (`stringData` first, then `data`). The error names the Secret
/// and the entry, never a value.
pub fn secret_value(secret: &k8s_openapi::api::core::v1::Secret, entry: &str) -> Result<String> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(entry).cloned())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(entry))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .ok_or_else(|| EngineError::Secret {
            secret: kube::ResourceExt::name_any(secret),
            detail: format!("has no entry {entry}"),
        })
}

/// S3 credentials from Secret `secret` (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
pub fn credentials(secret: &str, lookup: SecretLookup) -> Result<S3Credentials> {
    Ok(S3Credentials {
        access_key_id: lookup(secret, CREDENTIAL_ENTRIES[0])?,
        secret_access_key: lookup(secret, CREDENTIAL_ENTRIES[1])?,
    })
}

impl MediaSpec {
    /// Secret with this media's S3 credentials, if any.
    pub fn secret(&self) -> Option<&str> {
        let s3 = self.backend.s3.as_ref()?;
        s3.credentials_secret_ref.as_ref().map(|r| r.name.as_str())
    }

    /// The Secret entries this media needs, as `(secret, entry)`.
    pub fn secret_entries(&self) -> Vec<(String, &'static str)> {
        let creds = credential_entries(self.secret());
        let key = self
            .key_secret
            .iter()
            .map(|s| (s.clone(), KEY_SECRET_ENTRY));
        creds.chain(key).collect()
    }

    /// Fills in credentials and key (never serialised). A malformed key is an error naming
    /// its Secret.
    pub fn fill_secrets(&mut self, lookup: SecretLookup) -> Result<()> {
        self.credentials = self.secret().map(|s| credentials(s, lookup)).transpose()?;
        self.key = match &self.key_secret {
            None => None,
            Some(s) => {
                let text = lookup(s, KEY_SECRET_ENTRY)?;
                let key = BlockKey::parse(&text).map_err(|e| EngineError::Secret {
                    secret: s.clone(),
                    detail: format!("entry {KEY_SECRET_ENTRY} {e}"),
                })?;
                Some(Arc::new(key))
            }
        };
        Ok(())
    }
}

impl Task {
    /// Every media spec the task touches.
    fn media_mut(&mut self) -> Vec<&mut MediaSpec> {
        match self {
            Task::Backup(t) => vec![&mut t.media],
            Task::Copy(t) => std::iter::once(&mut t.media)
                .chain(t.sources.iter_mut())
                .collect(),
            Task::MediaCopy(t) => vec![&mut t.source_media, &mut t.media],
            Task::Restore(RestoreTask { links, .. }) | Task::Verify(VerifyTask { links }) => {
                links.iter_mut().map(|l| &mut l.media).collect()
            }
            Task::Scratch(t) => vec![&mut t.media],
            Task::Rescan(t) => vec![&mut t.media],
        }
    }

    /// Every S3 source or target the task touches.
    fn s3_targets_mut(&mut self) -> Vec<&mut S3Target> {
        let specs: Vec<&mut DataSpec> = match self {
            Task::Backup(t) => t.items.iter_mut().map(|i| &mut i.source).collect(),
            Task::Restore(t) => vec![&mut t.target],
            _ => Vec::new(),
        };
        specs
            .into_iter()
            .filter_map(|d| match d {
                DataSpec::S3(t) => Some(t),
                DataSpec::Path(_) => None,
            })
            .collect()
    }

    /// Names of the media classes the task reads or writes.
    pub fn media_classes(&mut self) -> std::collections::BTreeSet<String> {
        self.media_mut()
            .into_iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// The Secret entries the task needs, as `(secret, entry)`.
    pub fn secret_entries(&mut self) -> std::collections::BTreeSet<(String, &'static str)> {
        let mut out: std::collections::BTreeSet<_> = self
            .media_mut()
            .into_iter()
            .flat_map(|m| m.secret_entries())
            .collect();
        for t in self.s3_targets_mut() {
            out.extend(credential_entries(t.secret.as_deref()));
        }
        out
    }

    /// Fills in credentials and keys (never serialised) from `lookup`.
    pub fn fill_secrets(&mut self, lookup: SecretLookup) -> Result<()> {
        for m in self.media_mut() {
            m.fill_secrets(lookup)?;
        }
        for t in self.s3_targets_mut() {
            t.credentials = t
                .secret
                .as_deref()
                .map(|s| credentials(s, lookup))
                .transpose()?;
        }
        Ok(())
    }
}

/// What a task did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutcome {
    /// Catalog entries the task committed (already in a manifest on the media).
    pub entries: Vec<CatalogEntrySpec>,
    /// Bytes read from media or sources.
    pub bytes_read: u64,
    /// Bytes written to media or targets.
    pub bytes_written: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// What the task reports beside its result: entries skipped or changed while read,
    /// set-id bits cleared, sessions already committed. Shown to the user, never only logged.
    pub notes: Vec<String>,
    /// Work items that failed while the task committed the others (`ITEM: why`): the run as
    /// a whole is reported failed.
    pub failed: Vec<String>,
}
