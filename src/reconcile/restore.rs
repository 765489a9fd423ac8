//! A Restore's rules, as one pure decision both drivers carry out: from the Restore, what its
//! last run did and a view of the resources and the catalog, the status to write, the events
//! to send and the run to start (which copy of every link to read). The drivers loop
//! "decide → run → outcome → decide": a worker Job in a cluster, the executor in-process in
//! local mode.

use chrono::{DateTime, Utc};

use super::Event;
use crate::api::{
    Condition, Resource, Restore, RestorePhase, RestoreStatus, RestoredFrom, set_condition,
};
use crate::engine::planner::{PlanContext, RestorePlan};

/// How many damaged copies one restore passes over before it gives up. Each damaged copy is
/// marked Missing, so the next plan chooses another; media that damage every copy they hold
/// (a failing drive) fail the restore instead of sending it through every trail.
pub const MAX_DAMAGED_COPIES: usize = 4;

/// After a failed run that found `found_damaged` copies of its chain damaged (marked
/// Missing): whether the restore reads the next best copy rather than fail.
pub fn reads_next_copy(st: &RestoreStatus, found_damaged: &[String]) -> bool {
    !found_damaged.is_empty() && st.damaged.len() < MAX_DAMAGED_COPIES
}

/// `reason`, then the copies passed over (each `ROLE on TRAIL damaged: WHY`).
pub fn with_damaged(reason: &str, damaged: &[String]) -> String {
    std::iter::once(reason)
        .chain(damaged.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status of a restore whose run starts reading `plan`: the chain, the copy of the
/// requested instance, why that copy (with the damaged ones passed over) and the bytes to read.
pub fn starting(st: &mut RestoreStatus, plan: &RestorePlan) {
    st.chain = plan
        .links
        .iter()
        .map(|l| RestoredFrom {
            trail: l.entry.trail.clone(),
            role: l.entry.role,
            volumes: l.entry.volumes(),
            instance_id: l.entry.instance_id.clone(),
        })
        .collect();
    st.restored_from = st.chain.last().cloned();
    st.reason = with_damaged(plan.reasons.last().map_or("", String::as_str), &st.damaged);
    st.bytes = plan.links.iter().map(|l| l.entry.bytes).sum();
}

/// How the run of this generation the driver last started ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum LastRun {
    /// None was started for this generation, or its run is gone (started again).
    None,
    /// Still running.
    Running,
    /// It restored everything; `seconds` when the driver measured them.
    Succeeded { seconds: Option<f64> },
    /// It failed with `message`. `damaged`: copies of its chain it found damaged (marked
    /// Missing, each `ROLE on TRAIL damaged: WHY`); `unreadable`: copies it could not read
    /// here but that are not damaged (a key this class lacks, media away), which the driver
    /// has left out of its view for this restore.
    Failed {
        message: String,
        damaged: Vec<String>,
        unreadable: Vec<String>,
    },
}

/// What a driver knows when it decides about a restore.
pub struct RestoreView<'a> {
    /// The resources, the catalog (with the chain's entries as fresh as the driver has them)
    /// and now.
    pub plan: PlanContext<'a>,
    /// Why the restore's target cannot be written, as (reason, message), if so: the driver
    /// resolves it (a claim mounted in a pod, a local directory clear of the media).
    pub target_problem: Option<(&'static str, String)>,
    /// The last run of this generation.
    pub last_run: LastRun,
}

/// What to do about a restore.
#[derive(Debug)]
pub struct RestoreDecision {
    /// The status to write (the driver writes it only if it changed).
    pub status: RestoreStatus,
    /// Events to send, in order.
    pub events: Vec<Event>,
    /// A run to start: which copy of every link to read.
    pub run: Option<RestorePlan>,
    /// No copy yet, but the work item's first backup is still to come: look again when the
    /// catalog changes.
    pub waiting: bool,
}

impl RestoreDecision {
    /// Whether it fails the restore for want of a copy: a verdict on what the catalog lacks,
    /// which a driver whose catalog may lag (the operator's watch) confirms first.
    pub fn no_copy(&self) -> bool {
        self.status.phase == RestorePhase::Failed
            && self.events.iter().any(|e| e.reason == "NoCopyAvailable")
    }
}

/// Decides about restore `r` (see [`RestoreDecision`]): a finished restore of its generation
/// stays as it is; a run that ended is recorded, and one that found damaged copies (at most
/// [`MAX_DAMAGED_COPIES`] in all) or copies unreadable here is followed by a run on the next
/// best copy; otherwise an invalid spec, no available copy or a target that cannot be written
/// fails it, and a run is started.
pub fn decide(r: &Restore, view: &RestoreView) -> RestoreDecision {
    let generation = r.metadata.generation.unwrap_or(0);
    let mut st = r.status.clone().unwrap_or_default();
    let mut events = Vec::new();
    let now = view.plan.now;
    let this_generation = st.observed_generation == Some(generation);
    let finished = matches!(st.phase, RestorePhase::Succeeded | RestorePhase::Failed);
    let keep = |st, events| RestoreDecision {
        status: st,
        events,
        run: None,
        waiting: false,
    };
    if finished && this_generation {
        return keep(st, events);
    }
    if !this_generation {
        st.damaged.clear();
    }
    let mut passed_over: Vec<String> = Vec::new();
    if st.phase == RestorePhase::Running && this_generation {
        match &view.last_run {
            LastRun::None => {}
            LastRun::Running => return keep(st, events),
            LastRun::Succeeded { seconds } => {
                st.phase = RestorePhase::Succeeded;
                st.completed_at = Some(now);
                st.duration_seconds = *seconds;
                let c = Condition::new("Ready", true, "Restored", st.reason.clone());
                set_condition(&mut st.conditions, c);
                events.push(Event::normal("Restored", st.reason.clone()));
                return keep(st, events);
            }
            LastRun::Failed {
                message,
                damaged,
                unreadable,
            } => {
                if reads_next_copy(&st, damaged) || (damaged.is_empty() && !unreadable.is_empty()) {
                    let note = format!(
                        "{}; reading the next copy",
                        [damaged.as_slice(), unreadable].concat().join("; ")
                    );
                    let reason = if damaged.is_empty() {
                        "CopyUnreadable"
                    } else {
                        "CopyDamaged"
                    };
                    events.push(Event::warning(reason, note));
                    st.damaged.extend(damaged.iter().cloned());
                    passed_over = unreadable.clone();
                } else {
                    let all = [st.damaged.as_slice(), damaged, unreadable].concat();
                    fail(&mut st, now, "WorkerFailed", with_damaged(message, &all));
                    events.push(Event::warning("WorkerFailed", message.clone()));
                    return keep(st, events);
                }
            }
        }
    }
    let failed =
        |mut st: RestoreStatus, mut events: Vec<Event>, reason: &'static str, msg: String| {
            fail(&mut st, now, reason, msg.clone());
            st.observed_generation = Some(generation);
            events.push(Event::warning(reason, msg));
            keep(st, events)
        };
    if let Some(p) = view.plan.set.first_problem(&Resource::Restore(r.clone())) {
        return failed(st, events, "InvalidSpec", p);
    }
    let plan = match view.plan.plan_restore(r) {
        Ok(p) => p,
        Err(_) if let Some(trail) = first_backup_pending(r, &view.plan) => {
            let why = format!(
                "waiting for the first backup of work item {} on BackupTrail {trail}",
                r.spec.work_item
            );
            if st.reason != why {
                events.push(Event::normal("WaitingForBackup", why.clone()));
            }
            st.phase = RestorePhase::Pending;
            st.observed_generation = Some(generation);
            st.reason = why.clone();
            let c = Condition::new("Ready", false, "WaitingForBackup", why);
            set_condition(&mut st.conditions, c);
            return RestoreDecision {
                status: st,
                events,
                run: None,
                waiting: true,
            };
        }
        Err(reason) => {
            let why = with_damaged(&reason.0, &[st.damaged.clone(), passed_over].concat());
            return failed(st, events, "NoCopyAvailable", why);
        }
    };
    if let Some((reason, msg)) = &view.target_problem {
        return failed(st, events, reason, msg.clone());
    }
    starting(&mut st, &plan);
    st.reason = with_damaged(&st.reason, &passed_over);
    st.phase = RestorePhase::Running;
    st.observed_generation = Some(generation);
    let c = Condition::new("Ready", false, "Running", st.reason.clone());
    set_condition(&mut st.conditions, c);
    events.push(Event::normal("Started", st.reason.clone()));
    RestoreDecision {
        status: st,
        events,
        run: Some(plan),
        waiting: false,
    }
}

/// For a restore of the latest instance that found no copy: the BackupTrail (the one it
/// names, if it names one) that lists its work item and holds no entry of it at all yet. Its
/// first backup is still to come (applied together, or due on a schedule), so the restore
/// waits for it rather than fail; both drivers agree whatever order they see the two in.
fn first_backup_pending(r: &Restore, plan: &PlanContext) -> Option<String> {
    let spec = &r.spec;
    if spec.instance != "latest" {
        return None;
    }
    let (trail, _) = plan.set.backup_trails.iter().find(|(name, t)| {
        spec.backup_trail.as_ref().is_none_or(|b| b == *name)
            && t.spec.work_items.iter().any(|w| w.name == spec.work_item)
    })?;
    let held = plan
        .catalog
        .entries()
        .values()
        .any(|e| e.spec.work_item == spec.work_item && e.spec.backup_trail == *trail);
    (!held).then(|| trail.clone())
}

/// Ends `st` Failed at `now` with `reason` and `msg`.
fn fail(st: &mut RestoreStatus, now: DateTime<Utc>, reason: &str, msg: String) {
    st.phase = RestorePhase::Failed;
    st.completed_at = Some(now);
    st.reason = msg.clone();
    set_condition(
        &mut st.conditions,
        Condition::new("Ready", false, reason, msg),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::api::{CatalogEntrySpec, EntryState, Extent, ResourceSet, Role, parse_documents};
    use crate::engine::catalog::Catalog;
    use crate::engine::task::MediaSpec;

    const RESOURCES: &str = r#"
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: disk}
spec: {backend: {filesystem: {path: /d}}, volumeCapacity: 64Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: nightly}
spec: {mediaClassName: disk, retention: 30d}
"#;

    /// The resources, with `copies` duplication trails (`vault-N`, each on its own class).
    fn set(copies: usize) -> ResourceSet {
        let mut text = RESOURCES.to_owned();
        for n in 1..=copies {
            text += &format!(
                "---\napiVersion: mimeo.dev/v1alpha1\nkind: MediaClass\nmetadata: {{name: v{n}}}\nspec: {{backend: {{filesystem: {{path: /v{n}}}}}, volumeCapacity: 64Mi}}\n---\napiVersion: mimeo.dev/v1alpha1\nkind: DuplicationTrail\nmetadata: {{name: vault-{n}}}\nspec: {{mediaClassName: v{n}, retention: 7y}}\n"
            );
        }
        parse_documents(&text, "t.yaml")
            .unwrap()
            .into_iter()
            .collect()
    }

    /// The original on nightly and a duplicate on every vault.
    fn catalog(copies: usize) -> Catalog {
        let at: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
        let mut c = Catalog::default();
        let trails =
            std::iter::once("nightly".to_owned()).chain((1..=copies).map(|n| format!("vault-{n}")));
        for trail in trails {
            c.import(CatalogEntrySpec {
                work_item: "app".into(),
                instance_id: "app-1".into(),
                backup_time: at,
                backup_trail: "nightly".into(),
                role: if trail == "nightly" {
                    Role::Original
                } else {
                    Role::Duplicate
                },
                extents: vec![Extent {
                    volume: format!("{trail}-00001"),
                    segment: 0,
                    offset: 0,
                    length: 10,
                }],
                trail,
                copy_of: None,
                parent: None,
                replaces: Vec::new(),
                bytes: 10,
                file_bytes: None,
                notes: Vec::new(),
                digest: "sha256:00".into(),
                created_at: at,
                expires_at: at + chrono::TimeDelta::days(30),
            });
        }
        c
    }

    fn restore(source: &str, generation: i64) -> Restore {
        let text = format!(
            "apiVersion: mimeo.dev/v1alpha1\nkind: Restore\nmetadata: {{name: r}}\nspec: {{workItem: app, source: {source}, target: {{path: /out}}}}\n"
        );
        let Resource::Restore(mut r) = parse_documents(&text, "r.yaml").unwrap().remove(0) else {
            panic!("a restore")
        };
        r.metadata.generation = Some(generation);
        r
    }

    fn decide_with(
        r: &Restore,
        set: &ResourceSet,
        catalog: &Catalog,
        last_run: LastRun,
        target_problem: Option<(&'static str, String)>,
    ) -> RestoreDecision {
        let media: BTreeMap<String, MediaSpec> = set
            .media_classes
            .iter()
            .map(|(n, mc)| (n.clone(), MediaSpec::from_class(mc).unwrap()))
            .collect();
        decide(
            r,
            &RestoreView {
                plan: PlanContext {
                    set,
                    media: &media,
                    catalog,
                    now: Utc::now(),
                },
                target_problem,
                last_run,
            },
        )
    }

    fn reasons(d: &RestoreDecision) -> Vec<&'static str> {
        d.events.iter().map(|e| e.reason).collect()
    }

    /// Start, keep running, succeed; a finished restore stays until its spec changes.
    #[test]
    fn a_restore_starts_runs_and_succeeds_once_per_generation() {
        let (set, catalog) = (set(1), catalog(1));
        let mut r = restore("Auto", 1);
        let d = decide_with(&r, &set, &catalog, LastRun::None, None);
        assert_eq!(reasons(&d), ["Started"]);
        let plan = d.run.as_ref().expect("a run");
        assert_eq!(
            plan.links[0].entry.trail, "vault-1",
            "Auto prefers the duplicate"
        );
        assert_eq!(d.status.phase, RestorePhase::Running);
        assert_eq!(d.status.observed_generation, Some(1));
        r.status = Some(d.status);
        let d = decide_with(&r, &set, &catalog, LastRun::Running, None);
        assert!(d.run.is_none() && d.events.is_empty());
        assert_eq!(Some(&d.status), r.status.as_ref());
        let d = decide_with(
            &r,
            &set,
            &catalog,
            LastRun::Succeeded { seconds: Some(2.0) },
            None,
        );
        assert_eq!(reasons(&d), ["Restored"]);
        assert_eq!(
            (d.status.phase, d.status.duration_seconds),
            (RestorePhase::Succeeded, Some(2.0))
        );
        r.status = Some(d.status);
        let d = decide_with(&r, &set, &catalog, LastRun::None, None);
        assert!(
            d.run.is_none() && d.events.is_empty(),
            "finished stays finished"
        );
        r.metadata.generation = Some(2);
        let d = decide_with(&r, &set, &catalog, LastRun::None, None);
        assert!(d.run.is_some(), "a new generation runs again");
    }

    /// Each damaged copy found is marked Missing (by the worker's sink) and the next copy is
    /// read, at most four times; the fifth damaged copy fails the restore naming them all.
    #[test]
    fn damaged_copies_are_passed_over_up_to_the_cap() {
        let set = set(5);
        let mut catalog = catalog(5);
        let mut r = restore("Duplicate", 1);
        let mut d = decide_with(&r, &set, &catalog, LastRun::None, None);
        for n in 1..=5 {
            let trail = d.run.as_ref().expect("a run").links[0].entry.trail.clone();
            catalog.set_state(&format!("{trail}.app-1"), EntryState::Missing, "crc");
            r.status = Some(d.status);
            let failed = LastRun::Failed {
                message: format!("corrupt media on {trail}"),
                damaged: vec![format!("duplicate on {trail} damaged: crc")],
                unreadable: Vec::new(),
            };
            d = decide_with(&r, &set, &catalog, failed, None);
            if n < 5 {
                assert_eq!(reasons(&d), ["CopyDamaged", "Started"], "damaged copy {n}");
                assert_eq!(d.status.damaged.len(), n);
            }
        }
        assert_eq!(reasons(&d), ["WorkerFailed"]);
        assert!(d.run.is_none());
        assert_eq!(d.status.phase, RestorePhase::Failed);
        assert_eq!(d.status.damaged.len(), MAX_DAMAGED_COPIES);
        assert_eq!(
            d.status.reason.matches("damaged: crc").count(),
            5,
            "{}",
            d.status.reason
        );
    }

    /// A copy unreadable here (not damaged) is passed over without counting as damage; when
    /// no copy is left the restore fails naming it. A failure with neither fails at once.
    #[test]
    fn unreadable_copies_are_passed_over_and_other_failures_end_the_restore() {
        let set = set(1);
        let mut view = catalog(1);
        let mut r = restore("Auto", 1);
        let d = decide_with(&r, &set, &view, LastRun::None, None);
        r.status = Some(d.status.clone());
        // The driver leaves the copy out of its view for this restore.
        view.set_state("vault-1.app-1", EntryState::Missing, "key");
        let failed = LastRun::Failed {
            message: "cannot decrypt".into(),
            damaged: Vec::new(),
            unreadable: vec!["duplicate on vault-1 not readable: cannot decrypt".into()],
        };
        let d2 = decide_with(&r, &set, &view, failed, None);
        assert_eq!(reasons(&d2), ["CopyUnreadable", "Started"]);
        assert_eq!(d2.run.as_ref().unwrap().links[0].entry.trail, "nightly");
        assert!(d2.status.damaged.is_empty());
        assert!(
            d2.status.reason.contains("not readable"),
            "{}",
            d2.status.reason
        );
        let other = LastRun::Failed {
            message: "disk full".into(),
            damaged: Vec::new(),
            unreadable: Vec::new(),
        };
        let d3 = decide_with(&r, &set, &view, other, None);
        assert_eq!(reasons(&d3), ["WorkerFailed"]);
        assert!(d3.status.reason.contains("disk full"));
    }

    /// A restore applied with the trail that backs its work item up (or before that trail's
    /// first scheduled backup) waits for it, in either driver, instead of failing; a
    /// restore of a work item no trail lists, or of a named instance, fails.
    #[test]
    fn a_restore_waits_for_the_first_backup_of_its_work_item() {
        let mut set = set(1);
        let mut trail = set.backup_trails["nightly"].clone();
        trail.spec.work_items.push(crate::api::WorkItem {
            name: "app".into(),
            source: Default::default(),
        });
        set.insert(Resource::BackupTrail(trail));
        let mut r = restore("Auto", 1);
        let d = decide_with(&r, &set, &Catalog::default(), LastRun::None, None);
        assert!(d.waiting && d.run.is_none());
        assert_eq!(reasons(&d), ["WaitingForBackup"]);
        assert_eq!(d.status.phase, RestorePhase::Pending);
        assert!(
            d.status.reason.contains("BackupTrail nightly"),
            "{}",
            d.status.reason
        );
        r.status = Some(d.status);
        let d = decide_with(&r, &set, &Catalog::default(), LastRun::None, None);
        assert!(d.waiting && d.events.is_empty(), "said once");
        r.status = Some(d.status);
        let d = decide_with(&r, &set, &catalog(1), LastRun::None, None);
        assert_eq!(reasons(&d), ["Started"]);
        let mut named = restore("Auto", 1);
        named.spec.instance = "app-0".into();
        let d = decide_with(&named, &set, &Catalog::default(), LastRun::None, None);
        assert_eq!(reasons(&d), ["NoCopyAvailable"]);
        // Held once (an entry of any state): nothing to wait for.
        let mut gone = catalog(0);
        gone.set_state("nightly.app-1", EntryState::Expired, "retention");
        let d = decide_with(&restore("Auto", 1), &set, &gone, LastRun::None, None);
        assert_eq!(reasons(&d), ["NoCopyAvailable"]);
    }

    /// An invalid spec, no available copy, and a target that cannot be written each fail the
    /// restore with their own reason, and start nothing.
    #[test]
    fn invalid_specs_missing_copies_and_bad_targets_fail_by_reason() {
        let set = set(1);
        let mut bad = restore("Auto", 1);
        bad.spec.target.path = Some("relative/out".into());
        let d = decide_with(&bad, &set, &catalog(1), LastRun::None, None);
        assert_eq!((reasons(&d), d.run.is_none()), (vec!["InvalidSpec"], true));
        assert!(
            !d.no_copy(),
            "an invalid spec is not a verdict on the catalog"
        );
        let d = decide_with(
            &restore("Auto", 1),
            &set,
            &Catalog::default(),
            LastRun::None,
            None,
        );
        assert_eq!(reasons(&d), ["NoCopyAvailable"]);
        assert_eq!(d.status.phase, RestorePhase::Failed);
        assert!(
            d.no_copy(),
            "the operator confirms this one against the API server"
        );
        let refused = Some(("RefusedEntry", "target overlaps the media".to_owned()));
        let d = decide_with(
            &restore("Auto", 1),
            &set,
            &catalog(1),
            LastRun::None,
            refused,
        );
        assert_eq!((reasons(&d), d.run.is_none()), (vec!["RefusedEntry"], true));
        assert_eq!(d.status.reason, "target overlaps the media");
    }

    #[test]
    fn a_restore_passes_over_at_most_four_damaged_copies() {
        let mut st = RestoreStatus::default();
        let found = ["duplicate on vault damaged: corrupt media".to_owned()];
        assert!(
            !reads_next_copy(&st, &[]),
            "a failure without damage is final"
        );
        for n in 0..MAX_DAMAGED_COPIES {
            assert!(reads_next_copy(&st, &found), "after {n} damaged copies");
            st.damaged.extend(found.iter().cloned());
        }
        assert!(!reads_next_copy(&st, &found));
        assert_eq!(
            with_damaged("restored from original", &found),
            format!("restored from original; {}", found[0])
        );
        assert_eq!(with_damaged("", &[]), "");
    }
}
