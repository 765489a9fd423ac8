//! The catalog model and its copy on the media. A write session commits by writing one manifest
//! object (write-once) listing the entries it made; a driver imports manifests into its catalog.
//! So an entry exists exactly when its data was durable before the manifest was written, and a
//! lost catalog is rebuilt by reading the manifests back ([`read_manifests`]).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::validate::{check_dns_label, check_dns_subdomain};
use crate::api::*;
use crate::engine::error::Result;
use crate::engine::records::extents;
use crate::engine::task::{RescanTask, TaskOutcome};
use crate::media::manifest::{
    Manifest, ManifestEntry, read_manifests, session_manifest, write_manifest,
};
use crate::media::store::ObjectStore;
use crate::media::trail::WrittenInstance;

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
    let m = Manifest::new(session, entries.iter().map(ManifestEntry::from).collect());
    Ok(write_manifest(store, trail, &m).await?)
}

/// The outcome of a session that already committed to `trail` (its manifest exists): a worker
/// retried after its task committed (killed before it reported) returns it instead of writing
/// the same data again.
pub async fn already_committed(
    store: &dyn ObjectStore,
    trail: &str,
    session: &str,
) -> Result<Option<TaskOutcome>> {
    let Some(m) = session_manifest(store, trail, session).await? else {
        return Ok(None);
    };
    Ok(Some(TaskOutcome {
        entries: m.entries.into_iter().map(CatalogEntrySpec::from).collect(),
        notes: vec![format!(
            "session {session} was already committed: nothing written"
        )],
        ..Default::default()
    }))
}

/// Rebuilds a trail's catalog from its media: the entries of every manifest whose volumes
/// still hold data (an entry on a freed volume is not brought back).
pub async fn run_rescan(task: &RescanTask) -> Result<TaskOutcome> {
    let started = std::time::Instant::now();
    let media = task.media.open().await?;
    let live: std::collections::BTreeSet<String> =
        crate::media::trail::scan_trail(media.store.as_ref(), &task.trail)
            .await?
            .into_iter()
            .filter(|v| !v.segments.is_empty())
            .map(|v| v.name)
            .collect();
    let mut outcome = TaskOutcome::default();
    let manifests = read_manifests(media.store.as_ref(), &task.trail).await?;
    let entries = manifests.into_iter().flat_map(|m| m.entries);
    for e in newest_copies(entries.map(CatalogEntrySpec::from)) {
        // Whoever controls the media writes the manifests: an entry's names become file and
        // object names, so they are checked like a user's.
        let name = e.object_name();
        if e.trail != task.trail
            || check_dns_subdomain(&name).is_err()
            || check_dns_label(&e.work_item).is_err()
        {
            outcome.notes.push(format!(
                "refused a manifest entry named {name:?} (work item {:?}): not an entry of trail {}",
                e.work_item, task.trail
            ));
            continue;
        }
        match e.extents.iter().find(|x| !live.contains(&x.volume)) {
            Some(x) => outcome.notes.push(format!(
                "{}: volume {} holds no data any more, not restored",
                e.object_name(),
                x.volume
            )),
            None => outcome.entries.push(e),
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// One entry per name: where manifests list an entry twice (a repair copy written after the
/// first copy was found damaged), the newest copy, recording the older extents in `replaces`.
fn newest_copies(entries: impl Iterator<Item = CatalogEntrySpec>) -> Vec<CatalogEntrySpec> {
    let mut by_name: BTreeMap<String, CatalogEntrySpec> = BTreeMap::new();
    for e in entries {
        match by_name.entry(e.object_name()) {
            std::collections::btree_map::Entry::Vacant(v) => _ = v.insert(e),
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let (mut newer, older) = if e.created_at > o.get().created_at {
                    (e, o.get().clone())
                } else {
                    (o.get().clone(), e)
                };
                if newer.extents != older.extents {
                    newer.replaces.extend(older.replaces);
                    newer.replaces.push(ReplacedCopy {
                        extents: older.extents,
                        damage: String::new(),
                    });
                }
                o.insert(newer);
            }
        }
    }
    by_name.into_values().collect()
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
    /// Record of a freshly backed-up instance `w`, made at `backup_time`. `file_bytes` and
    /// `notes` describe what its stream holds ([`CatalogEntrySpec::file_bytes`],
    /// [`CatalogEntrySpec::notes`]).
    pub fn backup(
        &self,
        w: WrittenInstance,
        backup_time: DateTime<Utc>,
        parent: Option<String>,
        file_bytes: u64,
        notes: Vec<String>,
    ) -> CatalogEntrySpec {
        CatalogEntrySpec {
            work_item: w.work_item,
            instance_id: w.instance_id,
            backup_time,
            backup_trail: self.trail.into(),
            trail: self.trail.into(),
            role: self.role,
            copy_of: None,
            parent,
            extents: extents(w.extents),
            replaces: Vec::new(),
            bytes: w.bytes,
            file_bytes: Some(file_bytes),
            notes,
            digest: w.digest,
            created_at: Utc::now(),
            expires_at: backup_time + TimeDelta::seconds(self.retention_secs),
        }
    }

    /// Record of a copy of `src` whose blocks are at `extents`: the stream, and so what is
    /// known about its content, is the source's.
    pub fn copy(&self, src: &CatalogEntrySpec, extents: Vec<Extent>) -> CatalogEntrySpec {
        CatalogEntrySpec {
            trail: self.trail.into(),
            role: self.role,
            copy_of: Some(src.object_name()),
            extents,
            replaces: Vec::new(),
            created_at: Utc::now(),
            expires_at: src.backup_time + TimeDelta::seconds(self.retention_secs),
            ..src.clone()
        }
    }
}

/// The notes of a run's entries, `work item: note`, capped as one resource's notes are.
pub fn run_notes<'a>(entries: impl IntoIterator<Item = &'a CatalogEntrySpec>) -> Vec<String> {
    capped_notes(
        entries
            .into_iter()
            .flat_map(|e| e.notes.iter().map(|n| format!("{}: {n}", e.work_item))),
    )
}

/// Whether a catalog entry's `state` may go from `from` (`None`: not decided yet, a writer
/// stopped between an entry's spec and its state) to `to`: the one rule every write of a state
/// obeys, in both drivers. Expired is final: its volumes may already be freed. Valid becomes
/// Missing (found damaged) or Expired; Missing becomes Expired, or Valid again by a repair copy.
pub fn may_become(from: Option<EntryState>, to: EntryState) -> bool {
    use EntryState::*;
    matches!(
        (from, to),
        (None, _) | (Some(Valid), Missing | Expired) | (Some(Missing), Expired | Valid)
    )
}

/// A finished backup's condition message, pointing at its notes when it has some: a run that
/// did not take a clean snapshot must not read like one.
pub fn backup_done(msg: String, notes: &[String]) -> String {
    match notes.len() {
        0 => msg,
        _ => format!(
            "{msg}; some files were skipped or changed while read, see status.lastRunNotes (first: {})",
            notes[0]
        ),
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

/// The catalog: every copy of every instance, by entry name. Entries are shared (`Arc`), so the
/// operator builds a namespace's catalog from its watch cache without copying 200,000 objects,
/// and a change copies only the entry it changes.
///
/// The entries are private so that every change goes through a method that drops the index:
/// the index is built on first use and kept while the catalog does not change, so a snapshot
/// shared by many reconciles indexes its entries once.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: BTreeMap<String, Arc<CatalogEntry>>,
    index: OnceLock<ItemIndex>,
}

/// A copy of the catalog starts without an index: it is about to be changed, most often.
impl Clone for Catalog {
    fn clone(&self) -> Self {
        Catalog {
            entries: self.entries.clone(),
            index: OnceLock::new(),
        }
    }
}

/// The entries of each trail by work item, each list in entry-name order: what a policy's
/// selection (its source trails, then its work items) and a target's holdings are looked up by,
/// so a plan costs what its own trails and work items hold, not the whole catalog.
#[derive(Debug, Default)]
struct ItemIndex {
    by_trail: HashMap<String, BTreeMap<String, Vec<Arc<CatalogEntry>>>>,
}

impl ItemIndex {
    fn of(entries: &BTreeMap<String, Arc<CatalogEntry>>) -> Self {
        let mut by_trail: HashMap<String, BTreeMap<String, Vec<Arc<CatalogEntry>>>> =
            HashMap::new();
        for e in entries.values() {
            // Looked up by reference, the names copied only when new: a copy of both names
            // per entry was a third of the indexing time over a million entries.
            let (trail, item) = (&e.spec.trail, &e.spec.work_item);
            if !by_trail.contains_key(trail) {
                by_trail.insert(trail.clone(), BTreeMap::new());
            }
            let items = by_trail.get_mut(trail).expect("inserted");
            match items.get_mut(item) {
                Some(list) => list.push(e.clone()),
                None => {
                    items.insert(item.clone(), vec![e.clone()]);
                }
            }
        }
        ItemIndex { by_trail }
    }
}

impl FromIterator<(String, Arc<CatalogEntry>)> for Catalog {
    fn from_iter<I: IntoIterator<Item = (String, Arc<CatalogEntry>)>>(entries: I) -> Self {
        Catalog {
            entries: entries.into_iter().collect(),
            index: OnceLock::new(),
        }
    }
}

impl Extend<(String, Arc<CatalogEntry>)> for Catalog {
    fn extend<I: IntoIterator<Item = (String, Arc<CatalogEntry>)>>(&mut self, entries: I) {
        self.changed().extend(entries);
    }
}

impl IntoIterator for Catalog {
    type Item = (String, Arc<CatalogEntry>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Arc<CatalogEntry>>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// What recording a committed entry did to the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The entry was new.
    New,
    /// A newer copy replaced a Missing (damaged) entry: the entry is Valid again, on new data.
    Repaired,
    /// The entry was known: left as it is.
    Known,
}

impl Catalog {
    /// Entries by object name.
    pub fn entries(&self) -> &BTreeMap<String, Arc<CatalogEntry>> {
        &self.entries
    }

    /// Adds or replaces an entry as the API server (or a state file) has it.
    pub fn insert(&mut self, name: String, entry: Arc<CatalogEntry>) {
        self.changed().insert(name, entry);
    }

    /// The entries, about to change: the index no longer holds.
    fn changed(&mut self) -> &mut BTreeMap<String, Arc<CatalogEntry>> {
        self.index.take();
        &mut self.entries
    }

    fn index(&self) -> &ItemIndex {
        self.index.get_or_init(|| ItemIndex::of(&self.entries))
    }

    /// The work items that have entries on `trail`, in name order, each with its entries (of
    /// every state) in entry-name order.
    pub fn items_on<'a>(
        &'a self,
        trail: &str,
    ) -> impl Iterator<Item = (&'a str, &'a [Arc<CatalogEntry>])> + 'a {
        self.index()
            .by_trail
            .get(trail)
            .into_iter()
            .flatten()
            .map(|(w, es)| (w.as_str(), es.as_slice()))
    }

    /// Valid entries on `trail`, through the index.
    pub fn valid_on<'a>(&'a self, trail: &str) -> impl Iterator<Item = &'a CatalogEntrySpec> + 'a {
        self.items_on(trail)
            .flat_map(|(_, es)| es)
            .filter(|e| Self::state(e) == EntryState::Valid)
            .map(|e| &e.spec)
    }

    /// The entries (of every state) of `work_item` on `trail`, in entry-name order.
    pub fn of_item(&self, trail: &str, work_item: &str) -> &[Arc<CatalogEntry>] {
        self.index()
            .by_trail
            .get(trail)
            .and_then(|items| items.get(work_item))
            .map_or(&[], Vec::as_slice)
    }

    /// Adds an entry from a committed manifest; an entry already known is left as it is (so a
    /// re-import never resurrects an Expired or Missing entry).
    pub fn import(&mut self, spec: CatalogEntrySpec) -> bool {
        self.record(spec) == Recorded::New
    }

    /// Records an entry a run committed (or a manifest lists). A known entry is left as it is,
    /// so a retried worker or a re-import never turns an Expired or Missing entry back into
    /// Valid; the one exception is a newer copy on other extents of an entry that is Missing:
    /// a repair copy. It replaces the entry, Valid, and keeps the damaged copy's extents in
    /// `replaces`, so their volumes are freed only when the entry expires. Both drivers call
    /// this, so they agree on what a commit does.
    pub fn record(&mut self, mut spec: CatalogEntrySpec) -> Recorded {
        let name = spec.object_name();
        // An entry without a status was created by a writer stopped between writing its spec
        // and its state (a worker killed there): nothing decided it yet, so it is decided now.
        if let Some(old) = self.entries.get(&name).filter(|old| old.status.is_some()) {
            let repair = Self::state(old) == EntryState::Missing
                && old.spec.extents != spec.extents
                && spec.created_at > old.spec.created_at;
            if !repair {
                return Recorded::Known;
            }
            let damage = old.status.as_ref().map_or("", |s| s.message.as_str());
            let message = format!("repair copy: replaces the damaged copy ({damage})");
            spec.replaces = old.spec.replaces.clone();
            spec.replaces.push(ReplacedCopy {
                extents: old.spec.extents.clone(),
                damage: damage.to_string(),
            });
            let e = Arc::make_mut(self.changed().get_mut(&name).expect("known"));
            e.spec = spec;
            e.status = Some(CatalogEntryStatus {
                state: EntryState::Valid,
                message,
            });
            return Recorded::Repaired;
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
        self.changed().insert(name, Arc::new(entry));
        Recorded::New
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

    /// Entries not Expired, with whether each is Valid: a Missing entry still holds its
    /// volumes until it expires.
    pub fn live(&self) -> impl Iterator<Item = (&CatalogEntrySpec, bool)> {
        self.entries.values().filter_map(|e| match Self::state(e) {
            EntryState::Expired => None,
            s => Some((&e.spec, s == EntryState::Valid)),
        })
    }

    /// Valid copies of one instance.
    pub fn copies_of<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> impl Iterator<Item = &'a CatalogEntrySpec> {
        self.valid().filter(move |e| e.instance_id == instance_id)
    }

    /// A trail's volumes as the catalog knows them, for trail status where the media cannot
    /// be read (the operator): bytes are those of the entries' extents; a trail fills its
    /// volumes in order, so the last one is Filling, and an earlier one is Scratch once every
    /// entry on it expired (the expiry sweep frees it), Full before that.
    pub fn volumes(&self, trail: &str) -> Vec<VolumeStatus> {
        let mut vols: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.spec.trail == trail) {
            let live = Self::state(e) != EntryState::Expired;
            for x in &e.spec.extents {
                let v = vols.entry(x.volume.as_str()).or_default();
                v.0 += x.length;
                v.1 |= live;
            }
        }
        let last = vols.keys().next_back().copied();
        vols.into_iter()
            .map(|(name, (bytes, live))| VolumeStatus {
                name: name.to_string(),
                bytes_used: bytes,
                state: if Some(name) == last {
                    VolumeState::Filling
                } else if live {
                    VolumeState::Full
                } else {
                    VolumeState::Scratch
                },
            })
            .collect()
    }

    /// Sets when an entry expires (its trail's retention changed); true if it changed.
    pub fn set_expires_at(&mut self, name: &str, at: DateTime<Utc>) -> bool {
        match self.entries.get(name) {
            Some(e) if e.spec.expires_at != at => {
                let e = self.changed().get_mut(name).expect("known");
                Arc::make_mut(e).spec.expires_at = at;
                true
            }
            _ => false,
        }
    }

    /// Sets the state of an entry, if [`may_become`] allows it; returns true if it changed.
    pub fn set_state(&mut self, name: &str, state: EntryState, message: impl Into<String>) -> bool {
        let Some(e) = self.entries.get(name) else {
            return false;
        };
        if !may_become(e.status.as_ref().map(|s| s.state), state) {
            return false;
        }
        let e = self.changed().get_mut(name).expect("known");
        let status = Arc::make_mut(e).status.get_or_insert_with(Default::default);
        status.state = state;
        status.message = message.into();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, volumes: &[(&str, u64)]) -> CatalogEntrySpec {
        let t = Utc::now();
        CatalogEntrySpec {
            work_item: "app".into(),
            instance_id: id.into(),
            backup_time: t,
            backup_trail: "nightly".into(),
            trail: "vault".into(),
            role: Role::Duplicate,
            copy_of: None,
            parent: None,
            extents: volumes
                .iter()
                .map(|(v, len)| Extent {
                    volume: v.to_string(),
                    segment: 0,
                    offset: 0,
                    length: *len,
                })
                .collect(),
            replaces: Vec::new(),
            file_bytes: None,
            notes: Vec::new(),
            bytes: volumes.iter().map(|v| v.1).sum(),
            digest: "sha256:x".into(),
            created_at: t,
            expires_at: t,
        }
    }

    #[test]
    fn the_index_follows_every_change() {
        let names = |es: &[Arc<CatalogEntry>]| -> Vec<String> {
            es.iter().map(|e| e.spec.instance_id.clone()).collect()
        };
        let mut c = Catalog::default();
        c.record(entry("b", &[("vault-00001", 10)]));
        assert_eq!(names(c.of_item("vault", "app")), ["b"]);
        assert!(c.of_item("nightly", "app").is_empty());
        // Each way an entry comes in drops the index built before it.
        c.record(entry("a", &[("vault-00001", 10)]));
        assert_eq!(names(c.of_item("vault", "app")), ["a", "b"], "name order");
        let mut other = entry("c", &[("nightly-00001", 10)]);
        other.trail = "nightly".into();
        other.work_item = "db".into();
        let mut copy = c.clone();
        copy.insert(other.object_name(), Arc::new(CatalogEntry::new("x", other)));
        assert_eq!(names(copy.of_item("nightly", "db")), ["c"]);
        assert!(
            c.of_item("nightly", "db").is_empty(),
            "the original is unchanged"
        );
        let items: Vec<&str> = copy.items_on("vault").map(|(w, _)| w).collect();
        assert_eq!(items, ["app"]);
        // A state change is seen through the index too.
        assert!(c.set_state("vault.a", EntryState::Missing, "damaged"));
        assert_eq!(
            Catalog::state(&c.of_item("vault", "app")[0]),
            EntryState::Missing
        );
    }

    #[test]
    fn a_commit_never_revives_an_entry_but_a_newer_copy_repairs_a_missing_one() {
        let mut c = Catalog::default();
        let first = entry("a", &[("vault-00001", 60)]);
        assert_eq!(c.record(first.clone()), Recorded::New);
        // A retried worker commits the same entry again: nothing changes.
        assert_eq!(c.record(first.clone()), Recorded::Known);
        c.set_state(
            "vault.a",
            EntryState::Missing,
            "corrupt media: volume vault-00001",
        );
        assert_eq!(c.record(first.clone()), Recorded::Known);
        assert_eq!(Catalog::state(&c.entries["vault.a"]), EntryState::Missing);
        // A newer copy on other extents is a repair: Valid, and it keeps the damaged extents.
        let mut repair = entry("a", &[("vault-00002", 60)]);
        repair.created_at = first.created_at + TimeDelta::seconds(1);
        assert_eq!(c.record(repair.clone()), Recorded::Repaired);
        let e = &c.entries["vault.a"];
        assert_eq!(Catalog::state(e), EntryState::Valid);
        assert_eq!(e.spec.extents, repair.extents);
        assert_eq!(e.spec.replaces[0].extents, first.extents);
        assert!(e.spec.replaces[0].damage.contains("vault-00001"));
        let held: Vec<&str> = e.spec.held_volumes().collect();
        assert_eq!(held, ["vault-00002", "vault-00001"]);
        // An Expired entry stays Expired, whatever is committed.
        c.set_state("vault.a", EntryState::Expired, "retention");
        let mut late = entry("a", &[("vault-00003", 60)]);
        late.created_at = repair.created_at + TimeDelta::seconds(1);
        assert_eq!(c.record(late), Recorded::Known);
        assert_eq!(Catalog::state(&c.entries["vault.a"]), EntryState::Expired);
    }

    /// A worker killed between writing an entry's spec and its state leaves an entry without a
    /// status (the e2e `kill` scenario met it); the retried worker decides it, it is not Known.
    #[test]
    fn an_entry_whose_writer_stopped_before_its_state_is_decided_again() {
        let mut c = Catalog::default();
        let spec = entry("a", &[("vault-00001", 60)]);
        assert_eq!(c.record(spec.clone()), Recorded::New);
        Arc::make_mut(c.changed().get_mut("vault.a").unwrap()).status = None;
        assert_eq!(c.record(spec), Recorded::New);
        assert_eq!(Catalog::state(&c.entries["vault.a"]), EntryState::Valid);
        assert!(c.entries["vault.a"].status.is_some());
    }

    #[test]
    fn a_rescan_keeps_the_newest_copy_of_an_entry() {
        let old = entry("a", &[("vault-00001", 60)]);
        let mut new = entry("a", &[("vault-00002", 60)]);
        new.created_at = old.created_at + TimeDelta::seconds(1);
        for order in [[old.clone(), new.clone()], [new.clone(), old.clone()]] {
            let got = newest_copies(order.into_iter());
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].extents, new.extents);
            assert_eq!(got[0].replaces[0].extents, old.extents);
        }
    }

    #[test]
    fn volumes_from_the_catalog() {
        let mut c = Catalog::default();
        c.import(entry("a", &[("vault-00001", 60), ("vault-00002", 10)]));
        c.import(entry("b", &[("vault-00002", 30), ("vault-00003", 5)]));
        c.import(entry("old", &[("vault-00000", 70)]));
        let mut other = entry("x", &[("other-00001", 1)]);
        other.trail = "other".into();
        c.import(other);
        c.set_state("vault.old", EntryState::Expired, "retention");
        c.set_state("vault.b", EntryState::Expired, "retention");
        let v = c.volumes("vault");
        let got: Vec<(&str, u64, VolumeState)> = v
            .iter()
            .map(|v| (v.name.as_str(), v.bytes_used, v.state))
            .collect();
        assert_eq!(
            got,
            vec![
                ("vault-00000", 70, VolumeState::Scratch),
                ("vault-00001", 60, VolumeState::Full),
                // b expired, a still holds part of it.
                ("vault-00002", 40, VolumeState::Full),
                ("vault-00003", 5, VolumeState::Filling),
            ]
        );
    }

    #[test]
    fn expired_is_final_and_missing_returns_only_to_valid_or_expired() {
        use EntryState::*;
        for to in [Valid, Missing, Expired] {
            assert!(may_become(None, to), "an undecided entry is decided");
            assert!(!may_become(Some(Expired), to), "Expired to {to:?}");
            assert!(!may_become(Some(to), to), "{to:?} is not written again");
        }
        assert!(may_become(Some(Valid), Missing) && may_become(Some(Valid), Expired));
        assert!(may_become(Some(Missing), Valid) && may_become(Some(Missing), Expired));
        let mut c = Catalog::default();
        let e = entry("a-1", &[("v1", 10)]);
        let name = e.object_name();
        c.record(e);
        assert!(c.set_state(&name, Expired, "retention passed"));
        assert!(
            !c.set_state(&name, Missing, "damaged"),
            "an Expired entry stays Expired"
        );
        assert!(!c.set_state(&name, Valid, "retried"));
        assert_eq!(Catalog::state(&c.entries[&name]), Expired);
    }
}
