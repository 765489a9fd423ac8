//! The on-media manifest: what one write session committed to one trail, written once as
//! `TRAIL/manifests/SESSION.json` after every block it names is durable. It is the media's own
//! record and outlives any catalog, so it has its own versioned type, independent of the
//! CatalogEntry resource: renaming a CRD field must not change what is on the media, and media
//! written by an older Mimeo must stay readable ([`Manifest::VERSION`]).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::ObjectStore;
use crate::media::error::{MediaError, Result};

/// Key of a write session's manifest.
pub fn manifest_key(trail: &str, session: &str) -> String {
    format!("{trail}/manifests/{session}.json")
}

/// A run of blocks of one instance on one volume segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Volume name.
    pub volume: String,
    /// Segment number within the volume.
    #[serde(default)]
    pub segment: u32,
    /// Byte offset of the first block within the segment.
    pub offset: u64,
    /// Bytes of blocks (control data included).
    pub length: u64,
}

/// Whether a copy was written by a backup or by a duplication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyRole {
    /// Written by a backup.
    Original,
    /// Written by a duplication.
    Duplicate,
}

/// A damaged copy that a repair copy replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedExtents {
    /// Where its blocks were.
    pub extents: Vec<Extent>,
    /// What was found wrong with it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub damage: String,
}

/// One instance on one trail, as a session committed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    /// Work item name.
    pub work_item: String,
    /// Instance id, the same on every trail that holds a copy.
    pub instance_id: String,
    /// When the backup was taken.
    pub backup_time: DateTime<Utc>,
    /// Trail the instance was backed up to.
    pub backup_trail: String,
    /// Trail holding this copy.
    pub trail: String,
    /// Original or Duplicate.
    pub role: CopyRole,
    /// Name of the entry this copy was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// Instance id an incremental builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Where the blocks are, in stream order.
    pub extents: Vec<Extent>,
    /// Damaged copies this repair copy replaced, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<ReplacedExtents>,
    /// Length of the logical stream.
    pub bytes: u64,
    /// Bytes of the regular files in the stream (absent in manifests written before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// What the backup skipped or saw change while reading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Digest of the logical stream, `<algorithm>:<hex>`: `blake3:` since manifest version 2,
    /// `sha256:` before.
    pub digest: String,
    /// When this copy was written.
    pub created_at: DateTime<Utc>,
    /// When this copy expires.
    pub expires_at: DateTime<Utc>,
}

/// What one write session committed to one trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; absent (0) in manifests written before it was recorded, whose layout
    /// is version 1's.
    #[serde(default)]
    pub version: u32,
    /// Session id.
    pub session: String,
    /// Entries, all Valid when written.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The version this Mimeo writes, and the newest it reads. Version 2: new streams' digests
    /// are BLAKE3 ([`crate::media::digest`]); a Mimeo that reads only version 1 refuses such a
    /// manifest as newer instead of taking every stream in it for damaged.
    pub const VERSION: u32 = 2;

    /// A manifest of the current version.
    pub fn new(session: &str, entries: Vec<ManifestEntry>) -> Manifest {
        Manifest {
            version: Manifest::VERSION,
            session: session.to_owned(),
            entries,
        }
    }

    /// Parses a manifest read from `key`. Bytes that are not a manifest are corrupt media; a
    /// manifest of a newer version is refused as such (never taken for damage).
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| MediaError::Corrupt {
            volume: "-".into(),
            offset: 0,
            work_item: "-".into(),
            detail: format!("manifest {key} is not valid: {e}"),
        })?;
        if m.version > Manifest::VERSION {
            return Err(MediaError::Unsupported(format!(
                "manifest {key} has format version {}, this Mimeo reads up to {}: upgrade Mimeo",
                m.version,
                Manifest::VERSION
            )));
        }
        Ok(m)
    }
}

/// Writes a session's manifest (write-once): the commit point of everything it names.
pub async fn write_manifest(store: &dyn ObjectStore, trail: &str, m: &Manifest) -> Result<()> {
    let body = serde_json::to_vec_pretty(m).expect("a manifest serialises");
    store
        .put(&manifest_key(trail, &m.session), Bytes::from(body))
        .await
}

/// Reads one manifest.
pub async fn read_manifest(store: &dyn ObjectStore, key: &str) -> Result<Manifest> {
    Manifest::parse(key, &store.get(key).await?)
}

/// Reads a session's manifest, if it committed.
pub async fn session_manifest(
    store: &dyn ObjectStore,
    trail: &str,
    session: &str,
) -> Result<Option<Manifest>> {
    let key = manifest_key(trail, session);
    if store.head(&key).await?.is_none() {
        return Ok(None);
    }
    read_manifest(store, &key).await.map(Some)
}

/// Reads every manifest of a trail.
pub async fn read_manifests(store: &dyn ObjectStore, trail: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for obj in store.list(&format!("{trail}/manifests/")).await? {
        out.push(read_manifest(store, &obj.key).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as Mimeo wrote it before manifests had a version (a bare CatalogEntry spec
    /// per entry).
    const UNVERSIONED: &str = r#"{
  "session": "nightly-00003",
  "entries": [
    {
      "workItem": "app-a",
      "instanceId": "0193aa",
      "backupTime": "2026-11-01T02:00:00Z",
      "backupTrail": "nightly",
      "trail": "nightly",
      "role": "Original",
      "extents": [{"volume": "nightly-00001", "segment": 2, "offset": 4096, "length": 1048576}],
      "bytes": 1000000,
      "digest": "sha256:00",
      "createdAt": "2026-11-01T02:00:05Z",
      "expiresAt": "2026-12-01T02:00:00Z"
    }
  ]
}"#;

    #[test]
    fn manifests_written_before_versions_are_read() {
        let m = Manifest::parse("k", UNVERSIONED.as_bytes()).unwrap();
        assert_eq!(m.version, 0);
        let e = &m.entries[0];
        assert_eq!(
            (e.work_item.as_str(), e.role),
            ("app-a", CopyRole::Original)
        );
        assert_eq!(
            e.extents,
            [Extent {
                volume: "nightly-00001".into(),
                segment: 2,
                offset: 4096,
                length: 1 << 20
            }]
        );
        assert_eq!((e.file_bytes, e.copy_of.as_deref()), (None, None));
    }

    #[test]
    fn the_written_layout_is_fixed() {
        let mut m = Manifest::parse("k", UNVERSIONED.as_bytes()).unwrap();
        m.version = Manifest::VERSION;
        let written: serde_json::Value = serde_json::to_value(&m).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(UNVERSIONED).unwrap();
        expected["version"] = Manifest::VERSION.into();
        assert_eq!(written, expected);
    }

    #[test]
    fn newer_versions_and_garbage_are_refused_by_name() {
        let newer = UNVERSIONED.replacen('{', "{\"version\": 3,", 1);
        let err = Manifest::parse("t/manifests/s.json", newer.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, MediaError::Unsupported(m) if m.contains("t/manifests/s.json") && m.contains("version 3")),
            "{err:?}"
        );
        let err = Manifest::parse("t/manifests/s.json", b"[1,2").unwrap_err();
        assert!(
            matches!(&err, MediaError::Corrupt { detail, .. } if detail.contains("t/manifests/s.json")),
            "{err:?}"
        );
    }
}
