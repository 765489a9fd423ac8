//! A trail's rule for the dates of its catalog: every live entry expires at its backup time
//! plus the trail's retention. The expiry sweep always used the trail's current retention, so
//! after a retention edit the entries must show the same date (they kept the old one).

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{CatalogEntry, EntryState};
use crate::engine::catalog::Catalog;

/// The live (Valid or Missing) entries of `trail` whose `expiresAt` is not backup time +
/// `retention`, each with the date it should show. An Expired entry keeps its date: a longer
/// retention does not bring back what expiry may already have freed.
pub fn expiry_dates<'a>(
    trail: &str,
    retention: TimeDelta,
    entries: impl IntoIterator<Item = &'a CatalogEntry>,
) -> Vec<(String, DateTime<Utc>)> {
    entries
        .into_iter()
        .filter(|e| e.spec.trail == trail && Catalog::state(e) != EntryState::Expired)
        .filter_map(|e| {
            let due = e.spec.backup_time + retention;
            (e.spec.expires_at != due).then(|| (e.spec.object_name(), due))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CatalogEntrySpec, CatalogEntryStatus, Role};

    fn entry(trail: &str, id: &str, state: EntryState, retention_days: i64) -> CatalogEntry {
        let backup_time: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
        let mut e = CatalogEntry::new(
            &format!("{trail}.{id}"),
            CatalogEntrySpec {
                work_item: "app".into(),
                instance_id: id.into(),
                backup_time,
                backup_trail: "nightly".into(),
                trail: trail.into(),
                role: Role::Original,
                copy_of: None,
                parent: None,
                extents: Vec::new(),
                replaces: Vec::new(),
                bytes: 1,
                file_bytes: None,
                notes: Vec::new(),
                digest: "sha256:00".into(),
                created_at: backup_time,
                expires_at: backup_time + TimeDelta::days(retention_days),
            },
        );
        e.status = Some(CatalogEntryStatus {
            state,
            message: String::new(),
        });
        e
    }

    #[test]
    fn a_retention_edit_moves_the_dates_of_live_entries_only() {
        let entries = [
            entry("nightly", "a", EntryState::Valid, 30),
            entry("nightly", "b", EntryState::Missing, 30),
            entry("nightly", "c", EntryState::Expired, 30),
            entry("nightly", "d", EntryState::Valid, 90),
            entry("weekly", "e", EntryState::Valid, 30),
        ];
        let moved = expiry_dates("nightly", TimeDelta::days(90), &entries);
        let names: Vec<&str> = moved.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["nightly.a", "nightly.b"]);
        assert_eq!(
            moved[0].1,
            "2026-11-01T02:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::days(90)
        );
        assert!(expiry_dates("nightly", TimeDelta::days(30), &entries[..3]).is_empty());
    }
}
