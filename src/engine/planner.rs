//! The planner is pure: desired resources + catalog + time → tasks (and restore choices, expiry
//! decisions). No I/O, so every rule here is tested without media or an API server.

use std::collections::{BTreeMap, BTreeSet};

// A fast hash for names: SipHash of the names of a million entries was a tenth of planning.
use foldhash::{HashMap, HashSet, HashSetExt};

use chrono::{DateTime, TimeDelta, Utc};

use super::catalog::{Catalog, instance_id};
use super::task::*;
use crate::api::error::Result;
use crate::api::validate::SelectionRules;
use crate::api::*;

/// Why no copy of a restore's chain can be read now: the reasons each candidate was passed
/// over (media unavailable, no Valid copy, nothing matching `spec.source`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoCopy(pub String);

/// What the planner looks at.
pub struct PlanContext<'a> {
    /// Resources.
    pub set: &'a ResourceSet,
    /// Every media class, resolved.
    pub media: &'a BTreeMap<String, MediaSpec>,
    /// The catalog.
    pub catalog: &'a Catalog,
    /// Now.
    pub now: DateTime<Utc>,
}

/// A spec value the planner needs that did not parse: validation reported the field, and the
/// plan is refused rather than made with a stand-in (a retention of 0, a glob left out).
fn unparsed(kind: &str, name: &str, field: &str) -> SpecError {
    SpecError::Invalid {
        source_name: "planner".into(),
        kind: kind.into(),
        name: name.into(),
        field: field.into(),
        message: "does not parse; fix the spec (its InvalidSpec condition says how)".into(),
    }
}

/// The first 8 bytes of `name`, zero-padded, as a number that orders as the names do (a tie
/// says nothing: the whole names decide).
fn name_prefix(name: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = name.len().min(8);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

impl PlanContext<'_> {
    fn trail_media(&self, trail: &str) -> Option<&MediaSpec> {
        self.media.get(self.set.trail_media_class(trail)?)
    }

    /// Retention of `trail` in seconds; none for a trail that is not defined or whose
    /// retention does not parse.
    fn trail_retention(&self, trail: &str) -> Option<i64> {
        self.set.retentions.get(trail).map(TimeDelta::num_seconds)
    }

    /// Plans a backup of every work item of a trail. `resolve` turns a work item source into a
    /// [`DataSpec`] (it is the driver that knows how to reach paths, PVCs and S3).
    pub fn plan_backup<E: From<SpecError>>(
        &self,
        trail: &BackupTrail,
        resolve: &dyn Fn(&DataLocation) -> Result<DataSpec, E>,
    ) -> Result<BackupTask, E> {
        let name = kube::ResourceExt::name_any(trail);
        let media = self
            .media
            .get(&trail.spec.media_class_name)
            .cloned()
            .ok_or_else(|| SpecError::Invalid {
                source_name: "planner".into(),
                kind: "BackupTrail".into(),
                name: name.clone(),
                field: "spec.mediaClassName".into(),
                message: format!("MediaClass {} not found", trail.spec.media_class_name),
            })?;
        let retention_secs = self
            .trail_retention(&name)
            .ok_or_else(|| unparsed("BackupTrail", &name, "spec.retention"))?;
        let mut items = Vec::new();
        for w in &trail.spec.work_items {
            let parent = if trail.spec.incremental {
                self.catalog
                    .valid()
                    .filter(|e| e.trail == name && e.work_item == w.name)
                    .max_by_key(|e| e.backup_time)
                    .map(|e| e.instance_id.clone())
            } else {
                None
            };
            items.push(BackupItem {
                work_item: w.name.clone(),
                instance_id: instance_id(&w.name, self.now),
                source: resolve(&w.source)?,
                parent,
            });
        }
        Ok(BackupTask {
            trail: name,
            media,
            session: super::catalog::session_id(self.now),
            items,
            streams: trail.spec.streams,
            incremental: trail.spec.incremental,
            backup_time: self.now,
            retention_secs,
        })
    }

    /// Instances of the policy's sources that its selection picks, oldest first, one per
    /// instance id. A policy whose selection does not parse selects nothing: it is refused.
    pub fn select(&self, policy: &DuplicationPolicy) -> Result<Vec<&CatalogEntrySpec>> {
        let name = kube::ResourceExt::name_any(policy);
        let rules = self
            .set
            .selections
            .get(&name)
            .ok_or_else(|| unparsed("DuplicationPolicy", &name, "spec.selection"))?;
        Ok(self.select_by(policy, rules))
    }

    fn select_by(
        &self,
        policy: &DuplicationPolicy,
        rules: &SelectionRules,
    ) -> Vec<&CatalogEntrySpec> {
        // Through the catalog's index: the policy's source trails, then their work items, each
        // name matched once; so a plan costs what its own work items hold, and a namespace with
        // 2,000 policies is not 2,000 passes over every entry.
        let mut out: Vec<&CatalogEntry> = Vec::new();
        let trails: BTreeSet<&String> = policy.spec.source_trails.iter().collect();
        // One trail holds an instance once (its entry is named after both).
        let several = trails.len() > 1;
        for t in trails {
            for (_, entries) in self
                .catalog
                .items_on(t)
                .filter(|(w, _)| rules.picks_name(w))
            {
                out.extend(entries.iter().map(|e| &**e).filter(|e| {
                    Catalog::state(e) == EntryState::Valid
                        && rules.picks_age(e.spec.backup_time, self.now)
                }));
            }
        }
        // Of an instance on several source trails, the first in catalog (name) order stays.
        // Entry names are unique, so an unstable sort gives the same order. The instance id's
        // first bytes go into the sort key, so most ties of backup time are settled without a
        // string comparison (a run backs up its work items at one time).
        let mut keyed: Vec<_> = out
            .into_iter()
            .map(|e| (e.spec.backup_time, name_prefix(&e.spec.instance_id), e))
            .collect();
        keyed.sort_unstable_by(|(ta, pa, a), (tb, pb, b)| {
            (ta, pa).cmp(&(tb, pb)).then_with(|| {
                (&a.spec.instance_id, &a.metadata.name)
                    .cmp(&(&b.spec.instance_id, &b.metadata.name))
            })
        });
        let out = keyed.into_iter().map(|(_, _, e)| e);
        let mut seen: HashSet<&str> = HashSet::with_capacity(if several { out.len() } else { 0 });
        let mut out: Vec<&CatalogEntrySpec> = out
            .map(|e| &e.spec)
            .filter(|e| !several || seen.insert(e.instance_id.as_str()))
            .collect();
        if rules.latest_only {
            let mut newest: BTreeMap<(&str, &str), &CatalogEntrySpec> = BTreeMap::new();
            for e in out {
                let k = (e.backup_trail.as_str(), e.work_item.as_str());
                if newest.get(&k).is_none_or(|n| n.backup_time < e.backup_time) {
                    newest.insert(k, e);
                }
            }
            out = newest.into_values().collect();
            out.sort_by(|a, b| {
                (a.backup_time, &a.instance_id).cmp(&(b.backup_time, &b.instance_id))
            });
        }
        out
    }

    /// Plans one run of a policy: one task per target trail that has something to receive.
    /// An instance is skipped on a target that holds it (Valid) or held it until its retention
    /// there passed (Expired), so a retried run copies only what is missing and an expired copy
    /// is not made again; an instance whose retention on the target has already passed is not
    /// copied at all. A Missing (damaged) copy is made again.
    pub fn plan_duplication(&self, policy: &DuplicationPolicy) -> Result<Vec<Task>> {
        let name = kube::ResourceExt::name_any(policy);
        let spec = &policy.spec;
        let session = super::catalog::session_id(self.now);
        // Which instances each target holds or held, looked up through the catalog's index:
        // only the work items being copied (Sequential, Interleaved), or all of the target's
        // (Media mode copies whole trails).
        let selected = match spec.mode {
            DuplicationMode::Media => None,
            _ => Some(self.select(policy)?),
        };
        // The selected work items in name order: gathered in a hash set, then only the distinct
        // ones sorted (an ordered set of every selected instance's name was a third of the
        // planning time over a million entries).
        let work_items: Vec<&str> = {
            let distinct: HashSet<&str> = selected
                .iter()
                .flatten()
                .map(|e| e.work_item.as_str())
                .collect();
            let mut v: Vec<&str> = distinct.into_iter().collect();
            v.sort_unstable();
            v
        };
        let mut held: HashSet<(&str, &str)> = HashSet::new();
        for t in &spec.targets {
            let entries: Vec<&[std::sync::Arc<CatalogEntry>]> = match &selected {
                Some(_) => work_items
                    .iter()
                    .map(|w| self.catalog.of_item(t, w))
                    .collect(),
                None => self.catalog.items_on(t).map(|(_, es)| es).collect(),
            };
            held.extend(
                entries
                    .into_iter()
                    .flatten()
                    .filter(|e| Catalog::state(e) != EntryState::Missing)
                    .map(|e| (e.spec.trail.as_str(), e.spec.instance_id.as_str())),
            );
        }
        // Each target's retention looked up once, not per instance.
        let retention: HashMap<&str, Option<i64>> = spec
            .targets
            .iter()
            .map(|t| (t.as_str(), self.trail_retention(t)))
            .collect();
        let on_target = |trail: &str, e: &CatalogEntrySpec| {
            held.contains(&(trail, e.instance_id.as_str()))
                || retention[trail]
                    .is_some_and(|ret| e.backup_time + chrono::TimeDelta::seconds(ret) <= self.now)
        };
        // A target whose retention does not parse refuses the run: its copies would get no
        // expiry date to keep.
        for t in &spec.targets {
            if self.set.duplication_trails.contains_key(t) && self.trail_retention(t).is_none() {
                return Err(unparsed("DuplicationTrail", t, "spec.retention"));
            }
        }
        let mut tasks = Vec::new();
        if spec.mode == DuplicationMode::Media {
            for src in &spec.source_trails {
                for t in &spec.targets {
                    let entries: Vec<CatalogEntrySpec> = self
                        .catalog
                        .valid_on(src)
                        .filter(|e| !on_target(t, e))
                        .cloned()
                        .collect();
                    let (Some(sm), Some(tm), Some(ret)) = (
                        self.trail_media(src),
                        self.trail_media(t),
                        self.trail_retention(t),
                    ) else {
                        continue;
                    };
                    if !entries.is_empty() {
                        tasks.push(Task::MediaCopy(MediaCopyTask {
                            policy: name.clone(),
                            source_trail: src.clone(),
                            source_media: sm.clone(),
                            trail: t.clone(),
                            media: tm.clone(),
                            retention_secs: ret,
                            session: session.clone(),
                            entries,
                        }));
                    }
                }
            }
            return Ok(tasks);
        }
        let selected = selected.unwrap_or_default();
        let spread: HashMap<&str, usize> = work_items
            .into_iter()
            .enumerate()
            .map(|(i, w)| (w, i % spec.targets.len().max(1)))
            .collect();
        // Each source trail's media looked up once, not per instance.
        let source_media: HashMap<&str, &MediaSpec> = spec
            .source_trails
            .iter()
            .filter_map(|t| Some((t.as_str(), self.trail_media(t)?)))
            .collect();
        for (ti, t) in spec.targets.iter().enumerate() {
            let (Some(tm), Some(ret), Some(dt)) = (
                self.trail_media(t),
                self.trail_retention(t),
                self.set.duplication_trails.get(t),
            ) else {
                continue;
            };
            let items: Vec<CopyItem> = selected
                .iter()
                .filter(|e| !spec.distribute || spread[e.work_item.as_str()] == ti)
                .filter(|e| !on_target(t, e))
                .filter_map(|e| {
                    Some(CopyItem {
                        source: (*e).clone(),
                        source_media: source_media.get(e.trail.as_str())?.name.clone(),
                    })
                })
                .collect();
            let used: BTreeSet<&str> = items.iter().map(|i| i.source_media.as_str()).collect();
            let sources = used
                .into_iter()
                .filter_map(|m| source_media.values().find(|s| s.name == m))
                .map(|s| (*s).clone())
                .collect();
            if !items.is_empty() {
                tasks.push(Task::Copy(CopyTask {
                    policy: name.clone(),
                    trail: t.clone(),
                    media: tm.clone(),
                    layout: dt.spec.layout,
                    parallelism: spec.parallelism,
                    retention_secs: ret,
                    session: format!("{session}-{ti}"),
                    sources,
                    items,
                }));
            }
        }
        Ok(tasks)
    }

    /// Why the media of `trail` cannot be read, if so.
    fn unavailable(&self, trail: &str) -> Option<String> {
        let Some(mc_name) = self.set.trail_media_class(trail) else {
            return Some(format!("trail {trail} is not defined"));
        };
        match self.set.media_classes.get(mc_name) {
            None => Some(format!("media class {mc_name} not found")),
            Some(mc) if !mc.spec.available => Some(format!("media class {mc_name} unavailable")),
            Some(_) if !self.media.contains_key(mc_name) => {
                Some(format!("media class {mc_name} cannot be reached"))
            }
            Some(_) => None,
        }
    }

    /// Chooses the copy of every link of the requested instance's chain.
    pub fn plan_restore(&self, restore: &Restore) -> Result<RestorePlan, NoCopy> {
        let spec = &restore.spec;
        let copies: Vec<&CatalogEntrySpec> = self
            .catalog
            .valid()
            .filter(|e| {
                e.work_item == spec.work_item
                    && spec
                        .backup_trail
                        .as_ref()
                        .is_none_or(|b| &e.backup_trail == b)
            })
            .collect();
        if copies.is_empty() {
            return Err(NoCopy(format!(
                "no Valid copy of work item {} in the catalog",
                spec.work_item
            )));
        }
        let target = match spec.instance.as_str() {
            "latest" => copies
                .iter()
                .max_by_key(|e| (e.backup_time, &e.instance_id)),
            s => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => copies
                    .iter()
                    .filter(|e| e.backup_time <= t)
                    .max_by_key(|e| (e.backup_time, &e.instance_id)),
                Err(_) => copies.iter().find(|e| e.instance_id == s),
            },
        }
        .ok_or_else(|| {
            NoCopy(format!(
                "no instance of work item {} matches spec.instance {:?}",
                spec.work_item, spec.instance
            ))
        })?;
        // Walk the chain back to its full backup.
        let mut chain = vec![target.instance_id.clone()];
        let mut parent = target.parent.clone();
        while let Some(p) = parent {
            let link = self
                .catalog
                .entries()
                .values()
                .map(|e| &e.spec)
                .find(|e| e.instance_id == p)
                .ok_or_else(|| NoCopy(format!("chain link {p} is not in the catalog")))?;
            parent = link.parent.clone();
            chain.push(p);
        }
        chain.reverse();
        let mut plan = RestorePlan::default();
        for id in &chain {
            let (entry, reason) = self.choose_copy(id, &spec.source)?;
            plan.links.push(RestoreLink {
                media: self
                    .trail_media(&entry.trail)
                    .cloned()
                    .expect("checked available"),
                entry,
            });
            plan.reasons.push(reason);
        }
        Ok(plan)
    }

    /// Picks the copy of one instance: for `Auto`, an available duplicate (Sequential ones with
    /// the fewest extents first), else the original.
    fn choose_copy(
        &self,
        instance: &str,
        choice: &SourceChoice,
    ) -> Result<(CatalogEntrySpec, String), NoCopy> {
        let mut copies: Vec<&CatalogEntrySpec> = self
            .catalog
            .copies_of(instance)
            .filter(|e| match choice {
                SourceChoice::Keyword(SourceKeyword::Auto) => true,
                SourceChoice::Keyword(SourceKeyword::Original) => e.role == Role::Original,
                SourceChoice::Keyword(SourceKeyword::Duplicate) => e.role == Role::Duplicate,
                SourceChoice::Trail { trail } => &e.trail == trail,
                SourceChoice::Invalid(_) => false,
            })
            .collect();
        copies.sort_by_key(|e| (e.role == Role::Original, e.extents.len(), e.trail.clone()));
        let mut skipped = Vec::new();
        for c in copies {
            let what = format!("{} on {}", c.role_word(), c.trail);
            match self.unavailable(&c.trail) {
                Some(why) => skipped.push(format!("{what} skipped: {why}")),
                None => {
                    let reason = if skipped.is_empty() {
                        format!("{what} chosen (instance {instance})")
                    } else {
                        format!(
                            "{what} chosen (instance {instance}); {}",
                            skipped.join("; ")
                        )
                    };
                    return Ok((c.clone(), reason));
                }
            }
        }
        if skipped.is_empty() {
            Err(NoCopy(format!(
                "instance {instance}: no Valid copy matches spec.source"
            )))
        } else {
            Err(NoCopy(format!(
                "instance {instance}: no copy available: {}",
                skipped.join("; ")
            )))
        }
    }

    fn trail_max_expiry_percent(&self, trail: &str) -> u32 {
        self.set
            .trail(trail)
            .and_then(TrailRef::max_expiry_percent)
            .unwrap_or(DEFAULT_MAX_EXPIRY_PERCENT)
    }

    /// The `minCopies` floor of each instance: the largest `minCopies` of the policies that
    /// select it while one of their targets still wants it (the instance is younger than the
    /// longest target retention), with that policy's name.
    fn copy_floors(&self) -> BTreeMap<String, (u32, String)> {
        let mut floors: BTreeMap<String, (u32, String)> = BTreeMap::new();
        for (name, p) in &self.set.policies {
            let keep = p
                .spec
                .targets
                .iter()
                .filter_map(|t| self.trail_retention(t))
                .max()
                .unwrap_or(0);
            // A policy whose selection does not parse holds every instance of its sources:
            // what it would select is unknown, and expiry errs on the side of keeping.
            let all = SelectionRules::default();
            let rules = self.set.selections.get(name).unwrap_or(&all);
            for e in self.select_by(p, rules) {
                let wanted = self.now < e.backup_time + chrono::TimeDelta::seconds(keep);
                let floor = floors.entry(e.instance_id.clone()).or_default();
                if wanted && p.spec.min_copies > floor.0 {
                    *floor = (p.spec.min_copies, name.clone());
                }
            }
        }
        floors
    }

    /// Entries whose retention has passed, newest first; an entry that a still-Valid
    /// incremental on the same trail builds on is kept until that incremental expires, and
    /// an entry whose instance would fall below a policy's `minCopies` is held (reported).
    pub fn plan_expiry(&self) -> ExpiryPlan {
        let expires = |e: &CatalogEntrySpec| {
            self.trail_retention(&e.trail)
                .map(|ret| e.backup_time + chrono::TimeDelta::seconds(ret))
        };
        // Missing copies expire by retention too: expiry is the only thing that frees volumes.
        let mut live: Vec<(&CatalogEntrySpec, bool)> = self.catalog.live().collect();
        // Most sweeps expire nothing: they must not pay for the floors (every policy's selection).
        if !live
            .iter()
            .any(|(e, _)| expires(e).is_some_and(|t| self.now >= t))
        {
            return ExpiryPlan::default();
        }
        live.sort_by_key(|(e, _)| std::cmp::Reverse(e.backup_time));
        let mut copies: BTreeMap<&str, u32> = BTreeMap::new();
        for (e, _) in live.iter().filter(|(_, valid)| *valid) {
            *copies.entry(&e.instance_id).or_default() += 1;
        }
        let floors = self.copy_floors();
        let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut plan = ExpiryPlan::default();
        for (e, valid) in live {
            let Some(expires) = expires(e) else {
                continue;
            };
            let parent_of_valid = needed.contains(&(e.trail.clone(), e.instance_id.clone()));
            let mut keep = self.now < expires || parent_of_valid;
            if !keep {
                // A Missing copy is not one of the Valid copies a floor counts.
                let left =
                    copies.get(e.instance_id.as_str()).copied().unwrap_or(0) - u32::from(valid);
                match floors.get(&e.instance_id) {
                    Some((floor, policy)) if valid && left < *floor => {
                        plan.held.push((
                            e.object_name(),
                            format!(
                                "kept past the retention of trail {}: policy {policy} wants {floor} Valid copies of instance {} and {} would be left",
                                e.trail, e.instance_id, left
                            ),
                        ));
                        keep = true;
                    }
                    _ => {
                        if valid {
                            *copies.get_mut(e.instance_id.as_str()).expect("counted") = left;
                        }
                        plan.expire.push((
                            e.object_name(),
                            format!(
                                "retention of trail {} passed at {}",
                                e.trail,
                                expires.to_rfc3339()
                            ),
                        ));
                    }
                }
            }
            if keep && let Some(p) = &e.parent {
                needed.insert((e.trail.clone(), p.clone()));
            }
        }
        plan
    }

    /// The mass-expiry breaker: `Some(why)` when expiring `plan`'s entries of `trail` would free
    /// more than the trail's `maxExpiryPercent` of its volumes in use (and at least two).
    pub fn mass_expiry(&self, trail: &str, plan: &ExpiryPlan) -> Option<String> {
        if plan.expire.is_empty() {
            return None;
        }
        let gone: BTreeSet<&str> = plan.expire.iter().map(|(n, _)| n.as_str()).collect();
        let mut before: BTreeSet<&str> = BTreeSet::new();
        let mut after: BTreeSet<&str> = BTreeSet::new();
        for (e, _) in self.catalog.live().filter(|(e, _)| e.trail == trail) {
            let stays = !gone.contains(e.object_name().as_str());
            for v in e.held_volumes() {
                before.insert(v);
                if stays {
                    after.insert(v);
                }
            }
        }
        let freed = before.len() - after.len();
        let max = self.trail_max_expiry_percent(trail);
        (freed >= 2 && freed * 100 > before.len() * max as usize).then(|| {
            format!(
                "expiry halted: this sweep would free {freed} of the {} volumes in use on trail {trail} (more than maxExpiryPercent {max}%); check clocks and retention, then annotate the trail {ALLOW_MASS_EXPIRY_ANNOTATION}=<token> to let it proceed",
                before.len()
            )
        })
    }

    /// Volumes of `trail` that hold entries not yet Expired, Valid or Missing, once the
    /// entries in `expiring` are Expired too (a driver whose catalog does not show the new
    /// states yet names them). Expiry frees every other sealed volume: damage, or media that
    /// could not be read, never frees one.
    pub fn volumes_in_use(&self, trail: &str, expiring: &[(String, String)]) -> Vec<String> {
        let gone: BTreeSet<&str> = expiring.iter().map(|(n, _)| n.as_str()).collect();
        let set: BTreeSet<String> = self
            .catalog
            .live()
            .filter(|(e, _)| e.trail == trail && !gone.contains(e.object_name().as_str()))
            .flat_map(|(e, _)| e.held_volumes().map(String::from))
            .collect();
        set.into_iter().collect()
    }
}

/// Default of a trail's `maxExpiryPercent`.
pub const DEFAULT_MAX_EXPIRY_PERCENT: u32 = 50;

/// What the mass-expiry breaker lets a sweep of a trail do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Breaker {
    /// Within the trail's share: sweep.
    Closed,
    /// Tripped, but a new `mimeo.dev/allow-mass-expiry` token lets this sweep through.
    Acknowledged,
    /// Tripped: no sweep. `first_time` is false while the same halt is already reported.
    Halted { why: String, first_time: bool },
}

/// Decides the breaker for a sweep (`halt` from [`PlanContext::mass_expiry`], `ack` the
/// trail's annotation) and records it in the trail's status: `ExpiryHalted` set or cleared,
/// a used token remembered so that it lets only one sweep through.
pub fn apply_breaker(st: &mut TrailStatus, halt: Option<String>, ack: Option<String>) -> Breaker {
    match halt {
        Some(why) if ack.is_none() || ack == st.last_mass_expiry_ack => {
            let halted = Condition::new("ExpiryHalted", true, "MassExpiry", &why);
            let first_time = !st.conditions.iter().any(|c| c.same_as(&halted));
            set_condition(&mut st.conditions, halted);
            Breaker::Halted { why, first_time }
        }
        halt => {
            st.conditions.retain(|c| c.type_ != "ExpiryHalted");
            if halt.is_none() {
                return Breaker::Closed;
            }
            st.last_mass_expiry_ack = ack;
            Breaker::Acknowledged
        }
    }
}

/// What an expiry sweep does: entries to mark Expired and entries held by a `minCopies` floor,
/// each with the reason.
#[derive(Clone, Debug, Default)]
pub struct ExpiryPlan {
    pub expire: Vec<(String, String)>,
    pub held: Vec<(String, String)>,
}

impl ExpiryPlan {
    /// Only the decisions about entries of `trail`.
    pub fn of_trail(&self, catalog: &Catalog, trail: &str) -> ExpiryPlan {
        let mine = |v: &Vec<(String, String)>| {
            v.iter()
                .filter(|(n, _)| {
                    catalog
                        .entries()
                        .get(n)
                        .is_some_and(|e| e.spec.trail == trail)
                })
                .cloned()
                .collect()
        };
        ExpiryPlan {
            expire: mine(&self.expire),
            held: mine(&self.held),
        }
    }
}

/// The chosen copies of a restore chain and why.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Links, oldest first.
    pub links: Vec<RestoreLink>,
    /// Why each link's copy was chosen.
    pub reasons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::catalog::Catalog;
    use chrono::TimeDelta;

    /// The planner as of now.
    fn now_ctx<'a>(
        set: &'a ResourceSet,
        media: &'a BTreeMap<String, MediaSpec>,
        catalog: &'a Catalog,
    ) -> PlanContext<'a> {
        PlanContext {
            set,
            media,
            catalog,
            now: Utc::now(),
        }
    }

    fn yaml(text: &str) -> ResourceSet {
        parse_documents(text, "test.yaml")
            .unwrap()
            .into_iter()
            .collect()
    }

    /// [`RESOURCES`] and a policy `p` with this spec (YAML flow mapping).
    fn policy_p(spec: &str) -> ResourceSet {
        yaml(&format!(
            "{RESOURCES}---\napiVersion: mimeo.dev/v1alpha1\nkind: DuplicationPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"
        ))
    }

    const RESOURCES: &str = r#"
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: disk}
spec: {backend: {filesystem: {path: /d}}, volumeCapacity: 64Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: vault}
spec: {backend: {filesystem: {path: /v}}, volumeCapacity: 64Mi, available: false}
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: tape}
spec: {backend: {filesystem: {path: /t}}, volumeCapacity: 64Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: nightly}
spec: {mediaClassName: disk, retention: 30d}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: offsite}
spec: {mediaClassName: vault, retention: 7y}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: tapes}
spec: {mediaClassName: tape, retention: 1d}
"#;

    fn entry(
        trail: &str,
        role: Role,
        wi: &str,
        id: &str,
        age_days: i64,
        parent: Option<&str>,
    ) -> CatalogEntrySpec {
        let t = Utc::now() - TimeDelta::days(age_days);
        CatalogEntrySpec {
            work_item: wi.into(),
            instance_id: id.into(),
            backup_time: t,
            backup_trail: "nightly".into(),
            trail: trail.into(),
            role,
            copy_of: None,
            parent: parent.map(String::from),
            extents: vec![Extent {
                volume: format!("{trail}-00001"),
                segment: 0,
                offset: 0,
                length: 10,
            }],
            replaces: Vec::new(),
            file_bytes: None,
            notes: Vec::new(),
            bytes: 10,
            digest: "sha256:x".into(),
            created_at: t,
            expires_at: t,
        }
    }

    fn media(set: &ResourceSet) -> BTreeMap<String, MediaSpec> {
        set.media_classes
            .iter()
            .map(|(n, mc)| (n.clone(), MediaSpec::from_class(mc).unwrap()))
            .collect()
    }

    fn restore(source: &str) -> Restore {
        let text = format!(
            "apiVersion: mimeo.dev/v1alpha1\nkind: Restore\nmetadata: {{name: r}}\nspec: {{workItem: fin, source: {source}, target: {{path: /x}}}}\n"
        );
        match parse_documents(&text, "r.yaml").unwrap().remove(0) {
            Resource::Restore(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn restore_prefers_available_duplicate_then_original_then_fails() {
        let mut set = yaml(RESOURCES);
        let mut catalog = Catalog::default();
        catalog.import(entry("nightly", Role::Original, "fin", "fin-1", 1, None));
        catalog.import(entry("offsite", Role::Duplicate, "fin", "fin-1", 1, None));
        catalog.import(entry("tapes", Role::Duplicate, "fin", "fin-1", 1, None));
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let plan = ctx.plan_restore(&restore("Auto")).unwrap();
        assert_eq!(plan.links[0].entry.trail, "tapes");
        assert!(
            plan.reasons[0].contains("duplicate on offsite skipped: media class vault unavailable"),
            "{}",
            plan.reasons[0]
        );

        // Only the unavailable duplicate left → original, with the reason.
        catalog.set_state("tapes.fin-1", EntryState::Expired, "");
        let ctx = now_ctx(&set, &m, &catalog);
        let plan = ctx.plan_restore(&restore("Auto")).unwrap();
        assert_eq!(plan.links[0].entry.role, Role::Original);
        assert!(plan.reasons[0].contains("unavailable"));
        // Duplicate only → fails with the reason.
        let err = ctx.plan_restore(&restore("Duplicate")).unwrap_err();
        assert!(err.0.contains("media class vault unavailable"), "{err}");

        // Everything unavailable → fails naming both.
        set.media_classes.get_mut("disk").unwrap().spec.available = false;
        let ctx = now_ctx(&set, &m, &catalog);
        let err = ctx.plan_restore(&restore("Auto")).unwrap_err();
        assert!(
            err.0.contains("original on nightly skipped")
                && err.0.contains("duplicate on offsite skipped"),
            "{err}"
        );
    }

    #[test]
    fn chain_links_choose_their_own_copy() {
        let set = yaml(RESOURCES);
        let mut catalog = Catalog::default();
        catalog.import(entry("nightly", Role::Original, "fin", "fin-1", 2, None));
        catalog.import(entry("tapes", Role::Duplicate, "fin", "fin-1", 2, None));
        catalog.import(entry(
            "nightly",
            Role::Original,
            "fin",
            "fin-2",
            1,
            Some("fin-1"),
        ));
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let plan = ctx.plan_restore(&restore("Auto")).unwrap();
        let got: Vec<(&str, &str)> = plan
            .links
            .iter()
            .map(|l| (l.entry.instance_id.as_str(), l.entry.trail.as_str()))
            .collect();
        assert_eq!(got, [("fin-1", "tapes"), ("fin-2", "nightly")]);
        // An instance by time picks the newest at or before it.
        let at = (Utc::now() - TimeDelta::hours(36)).to_rfc3339();
        let plan = ctx
            .plan_restore(&restore(&format!("Auto, instance: '{at}'")))
            .unwrap();
        assert_eq!(plan.links.len(), 1);
    }

    #[test]
    fn expiry_keeps_parents_of_valid_incrementals() {
        let set = yaml(RESOURCES);
        let mut catalog = Catalog::default();
        // On `tapes` (1d retention): full is 3 days old, incremental 0 days: the full is held.
        catalog.import(entry("tapes", Role::Duplicate, "fin", "fin-1", 3, None));
        catalog.import(entry(
            "tapes",
            Role::Duplicate,
            "fin",
            "fin-2",
            0,
            Some("fin-1"),
        ));
        catalog.import(entry("tapes", Role::Duplicate, "hr", "hr-1", 3, None));
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let names: Vec<String> = ctx.plan_expiry().expire.into_iter().map(|x| x.0).collect();
        assert_eq!(names, ["tapes.hr-1"]);
    }

    /// `RESOURCES` plus a policy copying nightly to offsite (7y) with `min_copies`.
    fn with_policy(min_copies: u32) -> ResourceSet {
        yaml(&format!(
            "{RESOURCES}---\napiVersion: mimeo.dev/v1alpha1\nkind: DuplicationPolicy\nmetadata: {{name: keep}}\nspec: {{sourceTrails: [nightly], targets: [offsite], minCopies: {min_copies}}}\n"
        ))
    }

    #[test]
    fn min_copies_holds_the_last_copies_a_policy_wants() {
        let mut catalog = Catalog::default();
        // 40 days old: past nightly's 30d; offsite (7y) still wants it.
        catalog.import(entry("nightly", Role::Original, "fin", "fin-1", 40, None));
        catalog.import(entry("nightly", Role::Original, "hr", "hr-1", 40, None));
        catalog.import(entry("offsite", Role::Duplicate, "hr", "hr-1", 40, None));
        let set = with_policy(1);
        let m = media(&set);
        let plan = now_ctx(&set, &m, &catalog).plan_expiry();
        // fin's original is its only copy (the duplicate was never made): held. hr has its
        // duplicate: the original expires.
        let names = |v: &Vec<(String, String)>| {
            let mut n: Vec<String> = v.iter().map(|x| x.0.clone()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&plan.expire), ["nightly.hr-1"]);
        assert_eq!(names(&plan.held), ["nightly.fin-1"]);
        assert!(
            plan.held[0].1.contains("policy keep wants 1"),
            "{:?}",
            plan.held
        );
        // With minCopies 2, hr's original is held too.
        let set = with_policy(2);
        let plan = now_ctx(&set, &m, &catalog).plan_expiry();
        assert!(plan.expire.is_empty(), "{:?}", plan.expire);
        assert_eq!(names(&plan.held), ["nightly.fin-1", "nightly.hr-1"]);
        // Without a policy, retention alone decides.
        let set = yaml(RESOURCES);
        assert_eq!(now_ctx(&set, &m, &catalog).plan_expiry().expire.len(), 2);
    }

    #[test]
    fn the_breaker_halts_until_a_new_token_and_reports_once() {
        let mut st = TrailStatus::default();
        let why = || Some("too much".to_string());
        let halted = |first_time| Breaker::Halted {
            why: "too much".into(),
            first_time,
        };
        assert_eq!(apply_breaker(&mut st, why(), None), halted(true));
        assert_eq!(apply_breaker(&mut st, why(), None), halted(false));
        assert!(st.conditions.iter().any(|c| c.type_ == "ExpiryHalted"));
        let token = || Some("1".to_string());
        assert_eq!(
            apply_breaker(&mut st, why(), token()),
            Breaker::Acknowledged
        );
        assert!(st.conditions.is_empty());
        // The same token lets one sweep through, not the next.
        assert_eq!(apply_breaker(&mut st, why(), token()), halted(true));
        assert_eq!(apply_breaker(&mut st, None, token()), Breaker::Closed);
        assert!(st.conditions.is_empty());
    }

    #[test]
    fn mass_expiry_trips_above_the_trail_share() {
        let mut catalog = Catalog::default();
        // Ten instances on ten volumes of `tapes` (1d): 4 are 3 days old, 6 are new.
        for i in 0..10 {
            let mut e = entry(
                "tapes",
                Role::Duplicate,
                "w",
                &format!("w-{i}"),
                if i < 4 { 3 } else { 0 },
                None,
            );
            e.extents[0].volume = format!("tapes-{i:05}");
            catalog.import(e);
        }
        let set = yaml(RESOURCES);
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let plan = ctx.plan_expiry().of_trail(&catalog, "tapes");
        assert_eq!(plan.expire.len(), 4);
        // 4 of 10 volumes: within the default 50 %.
        assert_eq!(ctx.mass_expiry("tapes", &plan), None);
        // A limit of 30 % trips, naming the annotation.
        let strict = yaml(&RESOURCES.replace(
            "spec: {mediaClassName: tape, retention: 1d}",
            "spec: {mediaClassName: tape, retention: 1d, maxExpiryPercent: 30}",
        ));
        let ctx = now_ctx(&strict, &m, &catalog);
        let why = ctx.mass_expiry("tapes", &plan).expect("tripped");
        assert!(
            why.contains("free 4 of the 10 volumes") && why.contains(ALLOW_MASS_EXPIRY_ANNOTATION),
            "{why}"
        );
        // Freeing a single volume never trips.
        let one = ExpiryPlan {
            expire: plan.expire[..1].to_vec(),
            held: vec![],
        };
        assert_eq!(ctx.mass_expiry("tapes", &one), None);
    }

    #[test]
    fn values_that_do_not_parse_are_refused_never_replaced() {
        let doc = |kind: &str, name: &str, spec: &str| {
            format!(
                "---\napiVersion: mimeo.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n"
            )
        };
        let text = [
            RESOURCES.to_owned(),
            doc(
                "DuplicationPolicy",
                "p",
                "{sourceTrails: [nightly], targets: [tapes]}",
            ),
            doc(
                "DuplicationTrail",
                "soon",
                "{mediaClassName: tape, retention: 1d}",
            ),
            doc(
                "DuplicationPolicy",
                "q",
                "{sourceTrails: [nightly], targets: [soon]}",
            ),
            doc(
                "BackupTrail",
                "weekly",
                "{mediaClassName: disk, retention: 30d}",
            ),
        ]
        .concat();
        // What validation refuses, as a set holds it when it gets past (an object written to
        // the API server without admission): each value is parsed when the set takes it.
        let mut set = yaml(&text);
        let mut p = set.policies["p"].clone();
        // A glob that does not compile: it used to be left out, so `['[']` selected all.
        p.spec.selection.work_items = vec!["[".into()];
        set.insert(Resource::DuplicationPolicy(p));
        // A retention that does not parse: it used to be 0, expiring everything at once.
        let mut soon = set.duplication_trails["soon"].clone();
        soon.spec.retention = "soon".into();
        set.insert(Resource::DuplicationTrail(soon));
        let mut weekly = set.backup_trails["weekly"].clone();
        weekly.spec.retention = "30 days".into();
        set.insert(Resource::BackupTrail(weekly));
        let mut catalog = Catalog::default();
        catalog.import(entry("nightly", Role::Original, "fin", "fin-1", 1, None));
        catalog.import(entry("soon", Role::Duplicate, "fin", "fin-0", 40, None));
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let field = |r: Result<Vec<Task>>| match r {
            Err(SpecError::Invalid {
                kind, name, field, ..
            }) => format!("{kind}/{name} {field}"),
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(
            field(ctx.plan_duplication(&set.policies["p"])),
            "DuplicationPolicy/p spec.selection"
        );
        assert_eq!(
            field(ctx.plan_duplication(&set.policies["q"])),
            "DuplicationTrail/soon spec.retention"
        );
        let backup = ctx.plan_backup(&set.backup_trails["weekly"], &|_| {
            Ok(DataSpec::Path("/src".into()))
        });
        assert!(
            matches!(&backup, Err(SpecError::Invalid { field, .. }) if field == "spec.retention"),
            "{backup:?}"
        );
        // Nothing expires by a retention that does not parse.
        let plan = ctx.plan_expiry();
        assert!(
            plan.expire.iter().all(|(n, _)| n != "soon.fin-0"),
            "{:?}",
            plan.expire
        );
    }

    #[test]
    fn a_name_prefix_never_orders_names_against_their_order() {
        let names = [
            "",
            "a",
            "ab",
            "ab\0",
            "abcdefgh",
            "abcdefgh-1",
            "abcdefgh-2",
            "abcdefgi",
            "b",
            "big-20261207-211914-926",
            "big-20261207-211915-001",
            "é",
            "\u{ff}x",
        ];
        for a in names {
            for b in names {
                let (pa, pb) = (name_prefix(a), name_prefix(b));
                // The prefix decides only when it differs, and then as the names would.
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn an_instance_on_two_source_trails_is_selected_once_in_catalog_order() {
        let set = policy_p("{sourceTrails: [offsite, nightly, offsite], targets: [tapes]}");
        let mut catalog = Catalog::default();
        let original = entry("nightly", Role::Original, "fin", "fin-1", 1, None);
        let copy = CatalogEntrySpec {
            trail: "offsite".into(),
            role: Role::Duplicate,
            ..original.clone()
        };
        catalog.import(copy);
        catalog.import(original);
        catalog.import(entry("offsite", Role::Duplicate, "hr", "hr-1", 2, None));
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let picked: Vec<(&str, &str)> = ctx
            .select(&set.policies["p"])
            .unwrap()
            .iter()
            .map(|e| (e.instance_id.as_str(), e.trail.as_str()))
            .collect();
        // Oldest first; of fin-1, the entry first by name (nightly.fin-1), whatever the order
        // of the policy's source trails.
        assert_eq!(picked, [("hr-1", "offsite"), ("fin-1", "nightly")]);
    }

    #[test]
    fn selection_globs_latest_and_uncopied() {
        let set = policy_p(
            "{sourceTrails: [nightly], targets: [tapes], selection: {workItems: ['f*'], exclude: [fax], latestOnly: true}}",
        );
        let mut catalog = Catalog::default();
        for (wi, id, age) in [
            ("fin", "fin-1", 3),
            ("fin", "fin-2", 0),
            ("fax", "fax-1", 0),
            ("hr", "hr-1", 0),
        ] {
            catalog.import(entry("nightly", Role::Original, wi, id, age, None));
        }
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let policy = &set.policies["p"];
        let ids: Vec<&str> = ctx
            .select(policy)
            .unwrap()
            .iter()
            .map(|e| e.instance_id.as_str())
            .collect();
        assert_eq!(ids, ["fin-2"]);
        let tasks = ctx.plan_duplication(policy).unwrap();
        assert_eq!(tasks.len(), 1);
        // Once copied, nothing is planned again.
        catalog.import(entry("tapes", Role::Duplicate, "fin", "fin-2", 0, None));
        let ctx = now_ctx(&set, &m, &catalog);
        assert!(ctx.plan_duplication(policy).unwrap().is_empty());
    }

    #[test]
    fn missing_copies_hold_their_volumes_until_they_expire() {
        let set = yaml(RESOURCES);
        let m = media(&set);
        let mut catalog = Catalog::default();
        // Two copies on tapes (1d retention): one fresh and damaged, one old and damaged.
        for (id, age) in [("fresh", 0), ("old", 3)] {
            let mut e = entry("tapes", Role::Duplicate, "w", id, age, None);
            e.extents[0].volume = format!("tapes-{id}");
            catalog.import(e);
            catalog.set_state(&format!("tapes.{id}"), EntryState::Missing, "damaged");
        }
        let ctx = now_ctx(&set, &m, &catalog);
        // Damage frees nothing.
        assert_eq!(
            ctx.volumes_in_use("tapes", &[]),
            ["tapes-fresh", "tapes-old"]
        );
        // Retention expires a Missing copy like any other, and then its volume goes.
        let plan = ctx.plan_expiry().of_trail(&catalog, "tapes");
        let names: Vec<&str> = plan.expire.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["tapes.old"]);
        assert_eq!(ctx.volumes_in_use("tapes", &plan.expire), ["tapes-fresh"]);
    }

    #[test]
    fn expired_copies_are_not_made_again_missing_ones_are() {
        let set = policy_p("{sourceTrails: [nightly], targets: [tapes]}");
        let mut catalog = Catalog::default();
        for (wi, age) in [("expired", 0), ("missing", 0), ("too-old", 2), ("new", 0)] {
            catalog.import(entry("nightly", Role::Original, wi, wi, age, None));
        }
        for wi in ["expired", "missing"] {
            catalog.import(entry("tapes", Role::Duplicate, wi, wi, 0, None));
        }
        catalog.set_state("tapes.expired", EntryState::Expired, "retention");
        catalog.set_state("tapes.missing", EntryState::Missing, "damaged");
        let m = media(&set);
        let ctx = now_ctx(&set, &m, &catalog);
        let tasks = ctx.plan_duplication(&set.policies["p"]).unwrap();
        let Some(Task::Copy(t)) = tasks.first() else {
            panic!("one copy task expected: {tasks:?}");
        };
        let mut ids: Vec<&str> = t
            .items
            .iter()
            .map(|i| i.source.instance_id.as_str())
            .collect();
        ids.sort();
        // `too-old` is past the target's 1d retention: its copy would expire at once.
        assert_eq!(ids, ["missing", "new"]);
        // The source media are described once, and every item names its own.
        let names: Vec<&str> = t.sources.iter().map(|s| s.name.as_str()).collect();
        let nightly = set.trail_media_class("nightly").unwrap();
        assert_eq!(names, [nightly]);
        assert!(t.items.iter().all(|i| i.source_media == *nightly));
    }
}
