//! CatalogEntry: one work-item instance on one trail. Written only by Mimeo.

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label carrying the work item name.
pub const LABEL_WORK_ITEM: &str = "mimeo.dev/work-item";
/// Label carrying the trail name.
pub const LABEL_TRAIL: &str = "mimeo.dev/trail";
/// Label carrying the role.
pub const LABEL_ROLE: &str = "mimeo.dev/role";
/// Label carrying the instance id.
pub const LABEL_INSTANCE: &str = "mimeo.dev/instance";

/// Notes kept on one resource, and the longest one kept whole: an object must stay far below
/// etcd's size limit however many files changed. The rest are counted; workers log them all.
pub const MAX_NOTES: usize = 20;
const MAX_NOTE_LEN: usize = 1024;

/// `notes` cut to [`MAX_NOTES`] (the last one saying how many more there were), each cut to
/// a kilobyte.
pub fn capped_notes(notes: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut kept = Vec::new();
    let mut more = 0usize;
    for mut n in notes {
        if kept.len() == MAX_NOTES {
            more += 1;
            continue;
        }
        if n.len() > MAX_NOTE_LEN {
            let mut end = MAX_NOTE_LEN;
            while !n.is_char_boundary(end) {
                end -= 1;
            }
            n.truncate(end);
            n.push('…');
        }
        kept.push(n);
    }
    if more > 0 {
        kept.push(format!("… and {more} more (in the worker's log)"));
    }
    kept
}

/// Where one instance lives on one trail.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "mimeo.dev",
    version = "v1alpha1",
    kind = "CatalogEntry",
    namespaced,
    shortname = "ce",
    status = "CatalogEntryStatus",
    printcolumn(name = "Work Item", type_ = "string", json_path = ".spec.workItem"),
    printcolumn(name = "Trail", type_ = "string", json_path = ".spec.trail"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".spec.bytes"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt")
)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntrySpec {
    /// Work item name.
    pub work_item: String,
    /// Instance id, the same on every trail that holds a copy.
    pub instance_id: String,
    /// When the backup was taken.
    pub backup_time: DateTime<Utc>,
    /// BackupTrail the instance was backed up to.
    pub backup_trail: String,
    /// Trail holding this copy.
    pub trail: String,
    /// Original (on the backup trail) or Duplicate.
    pub role: Role,
    /// Entry name this copy was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// Instance id this incremental builds on (its chain's previous link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Where the blocks are, in stream order.
    pub extents: Vec<Extent>,
    /// Damaged copies this repair copy replaced, oldest first: their volumes stay in use until
    /// this entry expires (volumes are freed only by expiry), and a restore that was reading
    /// one learns why it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<ReplacedCopy>,
    /// Length of the logical stream.
    pub bytes: u64,
    /// Bytes of the regular files in the stream, holes of sparse files included: the most a
    /// restore of this copy may write, so a forged stream cannot claim more. Absent on copies
    /// recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// What the backup skipped or saw change while reading it (as GNU tar warns "file changed
    /// as we read it"), at most [`MAX_NOTES`]: a copy that is not a clean snapshot says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Digest of the logical stream, `<algorithm>:<hex>`: `blake3:` since manifest version 2,
    /// `sha256:` before.
    pub digest: String,
    /// When this copy was written.
    pub created_at: DateTime<Utc>,
    /// When this copy expires (backup time + the trail's retention).
    pub expires_at: DateTime<Utc>,
}

/// A run of blocks of one instance on one volume segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// A damaged copy that a repair copy replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplacedCopy {
    /// Where its blocks were.
    pub extents: Vec<Extent>,
    /// What was found wrong with it (volume, offset, work item), or empty when a rescan found
    /// two copies on the media and kept the newer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub damage: String,
}

/// Role of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Role {
    /// Written by a backup.
    Original,
    /// Written by a duplication.
    Duplicate,
}

/// Validity of a copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EntryState {
    /// Data durable and unexpired.
    #[default]
    Valid,
    /// Past its expiry.
    Expired,
    /// Data found missing or damaged.
    Missing,
}

/// Observed state of an entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntryStatus {
    /// Valid, Expired or Missing.
    #[serde(default)]
    pub state: EntryState,
    /// Why the state changed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl CatalogEntrySpec {
    /// Object name of this entry: trail and instance, unique in a namespace.
    pub fn object_name(&self) -> String {
        format!("{}.{}", self.trail, self.instance_id)
    }

    /// `original` or `duplicate`, for messages.
    pub fn role_word(&self) -> &'static str {
        match self.role {
            Role::Original => "original",
            Role::Duplicate => "duplicate",
        }
    }

    /// Every volume this entry keeps in use: its own and those of the damaged copies it
    /// replaced.
    pub fn held_volumes(&self) -> impl Iterator<Item = &str> {
        self.extents
            .iter()
            .chain(self.replaces.iter().flat_map(|r| &r.extents))
            .map(|x| x.volume.as_str())
    }

    /// Names of the volumes holding this copy, in order, without repeats.
    pub fn volumes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.extents {
            if out.last() != Some(&e.volume) {
                out.push(e.volume.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_capped_in_number_and_length_and_say_how_many_more() {
        let few = capped_notes(["a".to_owned(), "b".to_owned()]);
        assert_eq!(few, ["a", "b"]);
        let many = capped_notes((0..MAX_NOTES + 5).map(|i| format!("n{i}")));
        assert_eq!(many.len(), MAX_NOTES + 1);
        assert_eq!(many[MAX_NOTES - 1], format!("n{}", MAX_NOTES - 1));
        assert_eq!(many[MAX_NOTES], "… and 5 more (in the worker's log)");
        let long = capped_notes(["é".repeat(MAX_NOTE_LEN)]);
        assert!(
            long[0].len() <= MAX_NOTE_LEN + '…'.len_utf8(),
            "{}",
            long[0].len()
        );
        assert!(long[0].ends_with('…'));
    }
}
