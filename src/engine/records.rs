//! The media's own records as the catalog's API types, and back: the manifest and the volume
//! scan have types of their own (`media::manifest`, `media::trail`), so that the on-media
//! format does not follow the CRDs; this is the one place that maps between them.

use crate::api::{CatalogEntrySpec, Extent, ReplacedCopy, Role, VolumeState, VolumeStatus};
use crate::media::manifest::{self, CopyRole, ManifestEntry, ReplacedExtents};
use crate::media::trail::{VolumeFill, VolumeInfo};

impl From<manifest::Extent> for Extent {
    fn from(x: manifest::Extent) -> Extent {
        Extent {
            volume: x.volume,
            segment: x.segment,
            offset: x.offset,
            length: x.length,
        }
    }
}

impl From<&Extent> for manifest::Extent {
    fn from(x: &Extent) -> manifest::Extent {
        manifest::Extent {
            volume: x.volume.clone(),
            segment: x.segment,
            offset: x.offset,
            length: x.length,
        }
    }
}

/// The API's extents of the media's.
pub fn extents(xs: Vec<manifest::Extent>) -> Vec<Extent> {
    xs.into_iter().map(Extent::from).collect()
}

fn media_extents(xs: &[Extent]) -> Vec<manifest::Extent> {
    xs.iter().map(manifest::Extent::from).collect()
}

impl From<ManifestEntry> for CatalogEntrySpec {
    fn from(e: ManifestEntry) -> CatalogEntrySpec {
        CatalogEntrySpec {
            work_item: e.work_item,
            instance_id: e.instance_id,
            backup_time: e.backup_time,
            backup_trail: e.backup_trail,
            trail: e.trail,
            role: match e.role {
                CopyRole::Original => Role::Original,
                CopyRole::Duplicate => Role::Duplicate,
            },
            copy_of: e.copy_of,
            parent: e.parent,
            extents: extents(e.extents),
            replaces: e
                .replaces
                .into_iter()
                .map(|r| ReplacedCopy {
                    extents: extents(r.extents),
                    damage: r.damage,
                })
                .collect(),
            bytes: e.bytes,
            file_bytes: e.file_bytes,
            notes: e.notes,
            digest: e.digest,
            created_at: e.created_at,
            expires_at: e.expires_at,
        }
    }
}

impl From<&CatalogEntrySpec> for ManifestEntry {
    fn from(e: &CatalogEntrySpec) -> ManifestEntry {
        ManifestEntry {
            work_item: e.work_item.clone(),
            instance_id: e.instance_id.clone(),
            backup_time: e.backup_time,
            backup_trail: e.backup_trail.clone(),
            trail: e.trail.clone(),
            role: match e.role {
                Role::Original => CopyRole::Original,
                Role::Duplicate => CopyRole::Duplicate,
            },
            copy_of: e.copy_of.clone(),
            parent: e.parent.clone(),
            extents: media_extents(&e.extents),
            replaces: e
                .replaces
                .iter()
                .map(|r| ReplacedExtents {
                    extents: media_extents(&r.extents),
                    damage: r.damage.clone(),
                })
                .collect(),
            bytes: e.bytes,
            file_bytes: e.file_bytes,
            notes: e.notes.clone(),
            digest: e.digest.clone(),
            created_at: e.created_at,
            expires_at: e.expires_at,
        }
    }
}

/// A volume found on the media, as a trail's status shows it.
pub fn volume_status(v: &VolumeInfo) -> VolumeStatus {
    VolumeStatus {
        name: v.name.clone(),
        bytes_used: v.bytes_used(),
        state: match v.fill() {
            VolumeFill::Filling => VolumeState::Filling,
            VolumeFill::Full => VolumeState::Full,
            VolumeFill::Scratch => VolumeState::Scratch,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// An entry with every optional field set survives the trip onto the media and back.
    #[test]
    fn an_entry_round_trips_through_the_manifest_type() {
        let x = |v: &str| Extent {
            volume: v.into(),
            segment: 3,
            offset: 512,
            length: 4096,
        };
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap();
        let spec = CatalogEntrySpec {
            work_item: "app".into(),
            instance_id: "app-1".into(),
            backup_time: at,
            backup_trail: "nightly".into(),
            trail: "vault".into(),
            role: Role::Duplicate,
            copy_of: Some("nightly.app-1".into()),
            parent: Some("app-0".into()),
            extents: vec![x("v-1"), x("v-2")],
            replaces: vec![ReplacedCopy {
                extents: vec![x("v-0")],
                damage: "crc".into(),
            }],
            bytes: 10,
            file_bytes: Some(8),
            notes: vec!["changed".into()],
            digest: "sha256:ab".into(),
            created_at: at,
            expires_at: at,
        };
        assert_eq!(CatalogEntrySpec::from(ManifestEntry::from(&spec)), spec);
    }
}
