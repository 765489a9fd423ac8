//! The catalog model and its copy on the media. A write session commits by writing one manifest
//! object (write-once) listing the entries it made; a driver imports manifests into its catalog.
//! So an entry exists exactly when its data was durable before the manifest was written, and a
//! lost catalog is rebuilt by reading the manifests back ([`read_manifests`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::api::*;
use crate::error::{Error, Result};
use crate::media::store::ObjectStore;
use crate::media::trail::{WrittenInstance, list_manifests, manifest_key};

/// One manifest: what one write session committed to one trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Session id.
    pub session: String,
    /// Entries, all Valid when written.
    pub entries: Vec<CatalogEntrySpec>,
}

/// Writes a session's manifest: the commit point of everything the session wrote.
pub async fn commit_manifest(
    store: &dyn ObjectStore,
    trail: &str,
    session: &str,
    entries: &[CatalogEntrySpec],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let m = Manifest {
        session: session.into(),
        entries: entries.to_vec(),
    };
    let body = serde_json::to_vec_pretty(&m).map_err(|e| Error::Other(e.to_string()))?;
    store
        .put(&manifest_key(trail, session), Bytes::from(body))
        .await
}

/// Reads every manifest of a trail.
pub async fn read_manifests(store: &dyn ObjectStore, trail: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for key in list_manifests(store, trail).await? {
        let body = store.get(&key).await?;
        let m: Manifest = serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
            volume: "-".into(),
            offset: 0,
            work_item: "-".into(),
            detail: format!("manifest {key} is not valid: {e}"),
        })?;
        out.push(m);
    }
    Ok(out)
}

/// Builds the catalog record of a freshly written instance.
pub struct EntryBuilder<'a> {
    /// Trail written.
    pub trail: &'a str,
    /// Original or Duplicate.
    pub role: Role,
    /// Retention of the trail, seconds.
    pub retention_secs: i64,
}

impl EntryBuilder<'_> {
    /// Record for `w`, which is a copy of `of` (or an original when `of` is the backup data).
    pub fn build(
        &self,
        w: WrittenInstance,
        backup_trail: &str,
        backup_time: DateTime<Utc>,
        parent: Option<String>,
        copy_of: Option<String>,
    ) -> CatalogEntrySpec {
        CatalogEntrySpec {
            work_item: w.work_item,
            instance_id: w.instance_id,
            backup_time,
            backup_trail: backup_trail.into(),
            trail: self.trail.into(),
            role: self.role,
            copy_of,
            parent,
            extents: w.extents,
            bytes: w.bytes,
            digest: w.digest,
            created_at: Utc::now(),
            expires_at: backup_time + TimeDelta::seconds(self.retention_secs),
        }
    }
}

/// Instance id for a backup of `work_item` at `time`: sortable and DNS-safe.
pub fn instance_id(work_item: &str, time: DateTime<Utc>) -> String {
    format!("{work_item}-{}", time.format("%Y%m%d-%H%M%S-%3f"))
}

/// A write session id.
pub fn session_id(time: DateTime<Utc>) -> String {
    format!(
        "{}-{:08x}",
        time.format("%Y%m%d-%H%M%S-%3f"),
        std::process::id()
    )
}

/// The catalog: every copy of every instance, by entry name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Entries by object name.
    pub entries: BTreeMap<String, CatalogEntry>,
}

impl Catalog {
    /// Adds an entry from a committed manifest; an entry already known is left as it is (so a
    /// re-import never resurrects an Expired or Missing entry).
    pub fn import(&mut self, spec: CatalogEntrySpec) -> bool {
        let name = spec.object_name();
        if self.entries.contains_key(&name) {
            return false;
        }
        let labels = [
            (LABEL_WORK_ITEM, spec.work_item.clone()),
            (LABEL_TRAIL, spec.trail.clone()),
            (LABEL_ROLE, format!("{:?}", spec.role)),
            (LABEL_INSTANCE, spec.instance_id.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let entry = CatalogEntry {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            spec,
            status: Some(CatalogEntryStatus::default()),
        };
        self.entries.insert(name, entry);
        true
    }

    /// State of an entry.
    pub fn state(e: &CatalogEntry) -> EntryState {
        e.status.as_ref().map(|s| s.state).unwrap_or_default()
    }

    /// Valid entries.
    pub fn valid(&self) -> impl Iterator<Item = &CatalogEntrySpec> {
        self.entries
            .values()
            .filter(|e| Self::state(e) == EntryState::Valid)
            .map(|e| &e.spec)
    }

    /// Valid copies of one instance.
    pub fn copies_of<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> impl Iterator<Item = &'a CatalogEntrySpec> {
        self.valid().filter(move |e| e.instance_id == instance_id)
    }

    /// Sets the state of an entry; returns true if it changed.
    pub fn set_state(&mut self, name: &str, state: EntryState, message: impl Into<String>) -> bool {
        let Some(e) = self.entries.get_mut(name) else {
            return false;
        };
        let status = e.status.get_or_insert_with(Default::default);
        if status.state == state {
            return false;
        }
        status.state = state;
        status.message = message.into();
        true
    }
}
