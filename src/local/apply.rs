//! `mimeo local apply`: the same resources as in a cluster, reconciled to completion
//! in-process. The pipeline is the operator's: fetch (state dir) → validate → plan (pure) →
//! execute (the worker's executor) → commit (manifests on the media, then the catalog) → status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use kube::ResourceExt;
use tracing::{info, warn};

use super::progress::Progress;
use super::state::{StartedRun, StateDir};
use crate::api::*;
use crate::engine::catalog::{Catalog, Recorded, run_notes, run_rescan};
use crate::engine::error::EngineError;
use crate::engine::planner::{PlanContext, RestorePlan};
use crate::engine::records::volume_status;
use crate::engine::restore::unreadable_links;
use crate::engine::task::*;
use crate::error::{Error, Result};
use crate::media::error::MediaError;
use crate::media::s3::S3Credentials;
use crate::media::trail::scan_trail;
use crate::reconcile::backup::{self, BackupRun};
use crate::reconcile::policy::{self, PolicyRun, PolicyStep};
use crate::reconcile::restore::{self, LastRun, RestoreView};
use crate::reconcile::{media_class, trail};
use crate::worker;

/// A resource read from a file, kept with the file's name for error messages.
#[derive(Clone, Debug)]
pub struct Input {
    /// File it came from.
    pub source: String,
    /// The resource.
    pub resource: Resource,
}

/// Reads `-f` paths: files, directories of `*.yaml`/`*.yml` (sorted), or `-` for standard
/// input.
pub fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(p.clone());
        } else if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io(&f, e))?
        } else {
            std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?
        };
        for r in parse_documents(&text, &f.display().to_string())? {
            if r.kind() == "CatalogEntry" {
                return Err(SpecError::Invalid {
                    source_name: f.display().to_string(),
                    kind: "CatalogEntry".into(),
                    name: r.name(),
                    field: "kind".into(),
                    message: "CatalogEntries are written by Mimeo only".into(),
                }
                .into());
            }
            // Two of one kind and name in a batch: which one was meant cannot be guessed.
            if let Some(first) = out
                .iter()
                .find(|i: &&Input| i.resource.kind() == r.kind() && i.resource.name() == r.name())
            {
                return Err(SpecError::Invalid {
                    source_name: f.display().to_string(),
                    kind: r.kind().into(),
                    name: r.name(),
                    field: "metadata.name".into(),
                    message: format!(
                        "{}/{} is given twice in this batch (also in {})",
                        r.kind(),
                        r.name(),
                        first.source
                    ),
                }
                .into());
            }
            out.push(Input {
                source: f.display().to_string(),
                resource: r,
            });
        }
    }
    Ok(out)
}

/// Merges `new` into `set`: a changed spec bumps `metadata.generation` (and resets a Restore);
/// an unchanged one keeps generation and status. Returns what kubectl would say: `created`,
/// `configured` or `unchanged`.
fn merge(set: &mut ResourceSet, new: Resource) -> &'static str {
    fn bump<K: kube::Resource + Clone>(
        old: Option<&K>,
        new: &mut K,
        same: bool,
        keep_status: impl FnOnce(&K, &mut K),
    ) -> &'static str {
        let verdict = match old {
            None => "created",
            Some(o)
                if same
                    && o.meta().annotations == new.meta().annotations
                    && o.meta().labels == new.meta().labels =>
            {
                "unchanged"
            }
            Some(_) => "configured",
        };
        let gen_old = old.and_then(|o| o.meta().generation).unwrap_or(0);
        new.meta_mut().generation = Some(if same && old.is_some() {
            gen_old
        } else {
            gen_old + 1
        });
        new.meta_mut().creation_timestamp = old
            .and_then(|o| o.meta().creation_timestamp.clone())
            .or_else(|| {
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ))
            });
        if let Some(o) = old {
            keep_status(o, new);
        }
        verdict
    }
    macro_rules! merge_kind {
        ($map:expr, $kind:path, $x:expr, $keep_on_change:expr) => {{
            let mut x = $x;
            let old = $map.get(&x.name_any()).cloned();
            let same = old.as_ref().is_some_and(|o| o.spec == x.spec);
            let verdict = bump(old.as_ref(), &mut x, same, |o, n| {
                if same || $keep_on_change {
                    n.status = o.status.clone();
                }
            });
            // Through `insert`, which parses the typed values the planner takes.
            set.insert($kind(x));
            verdict
        }};
    }
    match new {
        Resource::MediaClass(x) => merge_kind!(set.media_classes, Resource::MediaClass, x, true),
        Resource::BackupTrail(x) => merge_kind!(set.backup_trails, Resource::BackupTrail, x, true),
        Resource::DuplicationTrail(x) => {
            merge_kind!(set.duplication_trails, Resource::DuplicationTrail, x, true)
        }
        Resource::DuplicationPolicy(x) => {
            merge_kind!(set.policies, Resource::DuplicationPolicy, x, true)
        }
        Resource::Restore(x) => merge_kind!(set.restores, Resource::Restore, x, false),
        Resource::Secret(x) => {
            let verdict = match set.secrets.get(&x.name_any()) {
                None => "created",
                Some(old) if *old == x => "unchanged",
                Some(_) => "configured",
            };
            set.secrets.insert(x.name_any(), x);
            verdict
        }
        other => {
            set.insert(other);
            "configured"
        }
    }
}

/// An entry of a Secret document applied in local mode.
fn secret_entry(set: &ResourceSet, secret: &str, entry: &str) -> Result<String, EngineError> {
    let s = set.secrets.get(secret).ok_or_else(|| EngineError::Secret {
        secret: secret.to_owned(),
        detail: "no Secret of this name was applied".into(),
    })?;
    secret_value(s, entry)
}

fn s3_credentials(
    set: &ResourceSet,
    secret: Option<&SecretRef>,
) -> Result<Option<S3Credentials>, EngineError> {
    secret
        .map(|r| credentials(&r.name, &|s, e| secret_entry(set, s, e)))
        .transpose()
}

/// Resolves every media class (credentials and keys included). Classes that fail are reported
/// and left out, so the planner treats them as unreachable.
fn resolve_media(set: &ResourceSet) -> (BTreeMap<String, MediaSpec>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, mc) in &set.media_classes {
        let spec = MediaSpec::from_class(mc)
            .map_err(EngineError::from)
            .and_then(|mut m| {
                m.fill_secrets(&|s, e| secret_entry(set, s, e))?;
                Ok(m)
            });
        match spec {
            Ok(m) => _ = out.insert(name.clone(), m),
            Err(e) => errors.push(format!("mediaclass/{name}: {e}")),
        }
    }
    (out, errors)
}

/// The media of a trail, unless its class says the media are away (`available: false`): such
/// media are never read, swept or verified.
fn readable_media<'a>(
    set: &ResourceSet,
    media: &'a BTreeMap<String, MediaSpec>,
    trail: &str,
) -> Option<&'a MediaSpec> {
    let class = set.trail_media_class(trail)?;
    set.media_classes
        .get(class)
        .filter(|mc| mc.spec.available)
        .and(media.get(class))
}

/// The media classes whose store answers a probe now.
async fn reachable_media(media: &BTreeMap<String, MediaSpec>) -> BTreeMap<String, MediaSpec> {
    let mut out = BTreeMap::new();
    for (name, spec) in media {
        if let Ok(m) = spec.open().await
            && m.store.probe().await.is_ok()
        {
            out.insert(name.clone(), spec.clone());
        }
    }
    out
}

/// Resolves a work item source or restore target for local execution.
fn resolve_location(set: &ResourceSet, loc: &DataLocation) -> Result<DataSpec> {
    if let Some(p) = &loc.path {
        return Ok(DataSpec::Path(p.clone()));
    }
    if let Some(p) = &loc.pvc {
        return Err(EngineError::Unsupported(format!(
            "pvc {:?} needs the operator (worker pods mount the claim); use path or s3 in local mode",
            p.claim_name
        )).into());
    }
    let s3 = loc.s3.as_ref().expect("validated: exactly one location");
    if let Some(mc) = &s3.media_class_name {
        let b = set.s3_backend(mc)?;
        let base = b.prefix.clone().unwrap_or_default();
        let prefix = [base.trim_matches('/'), s3.prefix.trim_matches('/')]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        return Ok(DataSpec::S3(S3Target {
            endpoint: b.endpoint.clone(),
            bucket: b.bucket.clone(),
            prefix,
            region: b.region.clone(),
            force_path_style: b.force_path_style.unwrap_or(false),
            secret: b.credentials_secret_ref.as_ref().map(|r| r.name.clone()),
            credentials: s3_credentials(set, b.credentials_secret_ref.as_ref())?,
        }));
    }
    Ok(DataSpec::S3(S3Target {
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone().unwrap_or_default(),
        prefix: s3.prefix.clone(),
        region: s3.region.clone(),
        force_path_style: s3.force_path_style.unwrap_or(false),
        secret: s3.credentials_secret_ref.as_ref().map(|r| r.name.clone()),
        credentials: s3_credentials(set, s3.credentials_secret_ref.as_ref())?,
    }))
}

/// `p` with the symlinks of its deepest existing ancestor resolved (the rest does not exist
/// yet, so it cannot be a link).
fn real_path(p: &Path) -> PathBuf {
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut real = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    real.extend(rest.iter().rev());
    real
}

/// The local driver: a state directory and the time.
pub struct Local {
    /// Where resources and the catalog live.
    pub state: StateDir,
    progress: Progress,
    failures: Vec<String>,
    /// Trails whose backup run ended in this reconcile: their started runs are forgotten once
    /// the trails' status is saved.
    ended_runs: Vec<String>,
}

/// Result of one `apply`.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// One line per failed resource or task.
    pub failures: Vec<String>,
}

impl Local {
    /// A driver on a state directory.
    pub fn new(state: impl Into<PathBuf>) -> Self {
        Local {
            state: StateDir::new(state.into()),
            progress: Progress::new(),
            failures: Vec::new(),
            ended_runs: Vec::new(),
        }
    }

    /// Validates `inputs` against the stored resources; on success stores them and reconciles
    /// everything. Invalid input is rejected before anything is written.
    pub async fn apply(&mut self, inputs: Vec<Input>) -> Result<ApplyReport> {
        let old = self.state.load_resources()?;
        let mut set = old.clone();
        let verdicts: Vec<&str> = inputs
            .iter()
            .map(|i| merge(&mut set, i.resource.clone()))
            .collect();
        for Input {
            source,
            resource: r,
        } in &inputs
        {
            if let Some(e) = set.check_references(r).into_iter().next() {
                return Err(SpecError::Invalid {
                    source_name: source.clone(),
                    kind: r.kind().into(),
                    name: r.name(),
                    field: e.field,
                    message: e.message,
                }
                .into());
            }
        }
        check_immutable(&old, &inputs)?;
        self.state.save_resources(&set)?;
        for (i, verdict) in inputs.iter().zip(verdicts) {
            println!(
                "{}/{} {verdict}",
                i.resource.kind().to_lowercase(),
                i.resource.name()
            );
        }
        self.reconcile(set).await
    }

    /// Reconciles the stored resources to completion.
    pub async fn reconcile(&mut self, mut set: ResourceSet) -> Result<ApplyReport> {
        self.failures.clear();
        let (media, errors) = resolve_media(&set);
        self.failures.extend(errors);
        let mut catalog = self.state.load_catalog()?;
        for line in self.import_manifests(&set, &media, &mut catalog).await? {
            warn!("{line}");
        }
        self.run_backups(&mut set, &media, &mut catalog).await?;
        self.run_policies(&mut set, &media, &mut catalog).await?;
        // A restore reads only media that answer now: offline media count as unavailable.
        let reachable = reachable_media(&media).await;
        self.run_restores(&mut set, &reachable, &mut catalog)
            .await?;
        self.run_expiry(&mut set, &media, &mut catalog).await?;
        self.update_status(&mut set, &media, &catalog).await?;
        self.state.save_resources(&set)?;
        for trail in std::mem::take(&mut self.ended_runs) {
            self.state.clear_run(&trail)?;
        }
        Ok(ApplyReport {
            failures: std::mem::take(&mut self.failures),
        })
    }

    /// Imports committed manifests from every readable trail: recovers the commits of a run
    /// that was killed after writing its manifest, and rebuilds a lost catalog. What the
    /// catalog knows keeps its state ([`Catalog::record`]). Trails whose media are away are
    /// not read; returns one line per trail whose manifests could not be read: its entries
    /// are kept as they are.
    pub async fn import_manifests(
        &mut self,
        set: &ResourceSet,
        media: &BTreeMap<String, MediaSpec>,
        catalog: &mut Catalog,
    ) -> Result<Vec<String>> {
        let mut unread = Vec::new();
        for t in &set.trail_names() {
            let kept = catalog
                .entries()
                .values()
                .filter(|e| e.spec.trail == *t)
                .count();
            let Some(spec) = readable_media(set, media, t) else {
                continue;
            };
            let task = RescanTask {
                trail: t.clone(),
                media: spec.clone(),
            };
            match run_rescan(&task).await {
                // Media that hold nothing while the catalog knows copies on them are an
                // unmounted filesystem or an emptied bucket far more often than a trail whose
                // every copy vanished: said, and nothing changed.
                Ok(outcome) if outcome.entries.is_empty() && kept > 0 => unread.push(format!(
                    "trail/{t}: its media hold no manifest at all (not mounted?); its {kept} entries are kept as they are"
                )),
                Ok(outcome) => {
                    for n in &outcome.notes {
                        info!("trail/{t}: {n}");
                    }
                    self.commit(catalog, &outcome)?
                }
                Err(e) => unread.push(format!(
                    "trail/{t}: manifests not read ({e}); its {kept} entries are kept as they are"
                )),
            }
        }
        Ok(unread)
    }

    /// Runs a task in-process, with progress shown.
    async fn execute(&self, what: &str, task: &Task) -> Result<TaskOutcome, EngineError> {
        let bar = self
            .progress
            .start(&format!("{what}: {}", worker::describe(task)));
        let r = worker::execute(task).await;
        self.progress.finish(bar);
        r
    }

    /// Runs a task; a failure is printed and counted, and `None` returned.
    async fn run_task(&mut self, what: &str, task: &Task) -> Option<TaskOutcome> {
        match self.execute(what, task).await {
            Ok(o) => {
                for n in &o.notes {
                    println!("{what}: {n}");
                }
                for f in &o.failed {
                    eprintln!("{what}: failed: {f}");
                    self.failures.push(format!("{what}: {f}"));
                }
                Some(o)
            }
            Err(e) => {
                eprintln!("{what}: failed: {e}");
                self.failures.push(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Records what a task committed ([`Catalog::record`]: the operator decides the same).
    fn commit(&self, catalog: &mut Catalog, outcome: &TaskOutcome) -> Result<()> {
        for e in &outcome.entries {
            let name = e.object_name();
            match catalog.record(e.clone()) {
                Recorded::Known => continue,
                Recorded::Repaired => println!("catalogentry/{name}: repaired by a new copy"),
                Recorded::New => {}
            }
            self.state.save_entry(&catalog.entries()[&name])?;
        }
        Ok(())
    }

    async fn run_backups(
        &mut self,
        set: &mut ResourceSet,
        media: &BTreeMap<String, MediaSpec>,
        catalog: &mut Catalog,
    ) -> Result<()> {
        let names: Vec<String> = set.backup_trails.keys().cloned().collect();
        for name in names {
            let mut trail = set.backup_trails[&name].clone();
            let what = format!("backuptrail/{name}");
            let problem = set.first_problem(&Resource::BackupTrail(trail.clone()));
            let d = backup::decide(&trail, problem, BackupRun::NotStarted, Utc::now());
            let Some(run) = d.start.clone() else {
                if let Some(at) = d.wake {
                    println!(
                        "{what}: next backup at {at} (schedule {:?})",
                        trail.spec.schedule.as_deref().unwrap_or_default()
                    );
                }
                self.report(&what, &d.events);
                set.backup_trails.get_mut(&name).unwrap().status = Some(d.status);
                continue;
            };
            // A run started before (killed, or failed) runs again as itself.
            let started = self.state.started_run(&name, &run)?;
            let ctx = PlanContext {
                set,
                media,
                catalog,
                now: started.as_ref().map_or_else(Utc::now, |s| s.backup_time),
            };
            let task = match ctx.plan_backup(&trail, &|l| resolve_location(set, l)) {
                Ok(mut t) => {
                    match started {
                        Some(s) => t.session = s.session,
                        None => self.state.save_run(
                            &name,
                            &StartedRun {
                                run,
                                session: t.session.clone(),
                                backup_time: t.backup_time,
                            },
                        )?,
                    }
                    t
                }
                Err(e) => {
                    let mut st = d.status;
                    let ev = backup::unplanned(&mut st, trail.metadata.generation, &e);
                    self.report(&what, &[ev]);
                    set.backup_trails.get_mut(&name).unwrap().status = Some(st);
                    continue;
                }
            };
            let seen = match self.run_task(&what, &Task::Backup(task)).await {
                Some(o) => {
                    self.commit(catalog, &o)?;
                    println!(
                        "{what}: backed up {} work items, {} bytes in {:.2}s",
                        o.entries.len(),
                        o.bytes_written,
                        o.seconds
                    );
                    self.ended_runs.push(name.clone());
                    BackupRun::Succeeded {
                        message: format!("{} instances written", o.entries.len()),
                        notes: run_notes(&o.entries),
                    }
                }
                None => BackupRun::Failed {
                    message: self.failures.last().cloned().unwrap_or_default(),
                    notes: Vec::new(),
                },
            };
            // Decide again on the run's outcome, as the operator does when its Job ends.
            trail.status = Some(d.status);
            let d = backup::decide(&trail, None, seen, Utc::now());
            set.backup_trails.get_mut(&name).unwrap().status = Some(d.status);
        }
        Ok(())
    }

    /// Prints a decision's warnings, and counts them as failures of this apply.
    fn report(&mut self, what: &str, events: &[crate::reconcile::Event]) {
        for e in events.iter().filter(|e| e.warning) {
            eprintln!("{what}: {}", e.note);
            self.failures.push(format!("{what}: {}", e.note));
        }
    }

    async fn run_policies(
        &mut self,
        set: &mut ResourceSet,
        media: &BTreeMap<String, MediaSpec>,
        catalog: &mut Catalog,
    ) -> Result<()> {
        // A DuplicationTrail may itself be a source: repeat until nothing new was copied.
        for _round in 0..8 {
            let mut copied = 0;
            let names: Vec<String> = set.policies.keys().cloned().collect();
            for name in names {
                let mut policy = set.policies[&name].clone();
                let what = format!("duplicationpolicy/{name}");
                let now = Utc::now();
                let problem = set.first_problem(&Resource::DuplicationPolicy(policy.clone()));
                // A run ends within the apply that starts it: one still recorded as running
                // was cut short by an apply that stopped before its end.
                let cut_short = PolicyRun::Ended {
                    failures: vec!["the apply running it stopped before it ended".into()],
                };
                let d = policy::decide(&policy, problem, cut_short, now);
                self.report(&what, &d.events);
                let PolicyStep::Plan { token } = d.step else {
                    set.policies.get_mut(&name).unwrap().status = Some(d.status);
                    continue;
                };
                let planned = PlanContext {
                    set,
                    media,
                    catalog,
                    now,
                }
                .plan_duplication(&policy);
                let tasks = match planned {
                    Ok(tasks) => tasks,
                    Err(e) => {
                        eprintln!("{what}: {e}");
                        self.failures.push(format!("{what}: {e}"));
                        continue;
                    }
                };
                let (st, _started) =
                    policy::planned(d.status, token, policy::run_size(&tasks), 0, now);
                let in_flight = policy::in_flight(&st);
                policy.status = Some(st.clone());
                set.policies.get_mut(&name).unwrap().status = Some(st);
                if !in_flight {
                    continue;
                }
                let mut failures = Vec::new();
                for task in &tasks {
                    match self.run_task(&what, task).await {
                        Some(o) => {
                            self.commit(catalog, &o)?;
                            println!(
                                "{what}: {} → {} instances, {} bytes written in {:.2}s",
                                worker::describe(task),
                                o.entries.len(),
                                o.bytes_written,
                                o.seconds
                            );
                            copied += o.entries.len();
                        }
                        None => failures.push(self.failures.last().cloned().unwrap_or_default()),
                    }
                }
                // Decide again on the run's end, as the operator does when its Jobs end.
                let d = policy::decide(&policy, None, PolicyRun::Ended { failures }, Utc::now());
                set.policies.get_mut(&name).unwrap().status = Some(d.status);
            }
            if copied == 0 {
                break;
            }
        }
        Ok(())
    }

    async fn run_restores(
        &mut self,
        set: &mut ResourceSet,
        media: &BTreeMap<String, MediaSpec>,
        catalog: &mut Catalog,
    ) -> Result<()> {
        let names: Vec<String> = set.restores.keys().cloned().collect();
        for name in names {
            let mut restore = set.restores[&name].clone();
            let what = format!("restore/{name}");
            let target = resolve_location(set, &restore.spec.target)
                .and_then(|t| self.clear_of_media_and_state(set, t));
            let target_problem = target.as_ref().err().map(|e| (e.reason(), e.to_string()));
            // The catalog as this restore sees it: without the copies it could not read here.
            let mut view = catalog.clone();
            let mut last_run = LastRun::None;
            loop {
                let decision = restore::decide(
                    &restore,
                    &RestoreView {
                        plan: PlanContext {
                            set,
                            media,
                            catalog: &view,
                            now: Utc::now(),
                        },
                        target_problem: target_problem.clone(),
                        last_run: std::mem::replace(&mut last_run, LastRun::None),
                    },
                );
                for e in &decision.events {
                    if matches!(
                        e.reason,
                        "CopyDamaged" | "CopyUnreadable" | "WaitingForBackup"
                    ) {
                        println!("{what}: {}", e.note);
                    }
                }
                restore.status = Some(decision.status);
                let (Some(plan), Ok(target)) = (decision.run, &target) else {
                    break;
                };
                last_run = self
                    .run_restore(&what, &name, plan, target.clone(), catalog, &mut view)
                    .await?;
            }
            let st = restore.status.as_ref().expect("decided");
            match st.phase {
                RestorePhase::Succeeded if restore.status != set.restores[&name].status => {
                    println!(
                        "{what}: restored {} bytes in {:.2}s from {}",
                        st.bytes,
                        st.duration_seconds.unwrap_or_default(),
                        st.reason
                    )
                }
                RestorePhase::Failed if restore.status != set.restores[&name].status => {
                    eprintln!("{what}: failed: {}", st.reason);
                    self.failures.push(format!("{what}: {}", st.reason));
                }
                _ => {}
            }
            set.restores.insert(name, restore);
        }
        Ok(())
    }

    /// Runs one restore in-process and returns how it ended. A copy found damaged is marked
    /// Missing in the catalog (the local catalog sink, as a worker pod's marks it); a copy that
    /// is not damaged but could not be read here (a key this class lacks, media away) is left
    /// out of this restore's `view` only.
    async fn run_restore(
        &mut self,
        what: &str,
        name: &str,
        plan: RestorePlan,
        target: DataSpec,
        catalog: &mut Catalog,
        view: &mut Catalog,
    ) -> Result<LastRun> {
        let links = plan.links.clone();
        let task = Task::Restore(RestoreTask {
            restore: name.to_owned(),
            links: plan.links,
            target,
        });
        let err = match self.execute(what, &task).await {
            Ok(o) => {
                return Ok(LastRun::Succeeded {
                    seconds: Some(o.seconds),
                });
            }
            Err(e) => e,
        };
        let (bad, is_damage) = unreadable_links(&links, &err);
        let (mut damaged, mut unreadable) = (Vec::new(), Vec::new());
        for l in &bad {
            let entry = l.entry.object_name();
            view.set_state(&entry, EntryState::Missing, err.to_string());
            let copy = format!("{} on {}", l.entry.role_word(), l.entry.trail);
            if is_damage {
                catalog.set_state(&entry, EntryState::Missing, err.to_string());
                self.state.save_entry(&catalog.entries()[&entry])?;
                damaged.push(format!("{copy} damaged: {err}"));
            } else {
                unreadable.push(format!("{copy} not readable: {err}"));
            }
        }
        Ok(LastRun::Failed {
            message: err.to_string(),
            damaged,
            unreadable,
        })
    }

    /// Refuses a restore target directory that is, contains or lies inside the state
    /// directory or a filesystem media class's directory once symlinks are resolved
    /// (validation compares the paths as written).
    fn clear_of_media_and_state(&self, set: &ResourceSet, target: DataSpec) -> Result<DataSpec> {
        let DataSpec::Path(t) = &target else {
            return Ok(target);
        };
        let real_target = real_path(Path::new(t));
        let media = set.media_classes.iter().filter_map(|(name, mc)| {
            let fs = mc.spec.backend.filesystem.as_ref()?;
            Some((
                format!("the media of MediaClass {name}"),
                PathBuf::from(&fs.path),
            ))
        });
        let state = (
            "the state directory".to_string(),
            self.state.root().to_path_buf(),
        );
        for (what, dir) in media.chain([state]) {
            let dir = real_path(&dir);
            if real_target.starts_with(&dir) || dir.starts_with(&real_target) {
                return Err(EngineError::Refused {
                    entry: format!("spec.target.path {t}"),
                    reason: format!(
                        "{} overlaps {what} ({}): a restore never writes into or above them",
                        real_target.display(),
                        dir.display()
                    ),
                }
                .into());
            }
        }
        Ok(target)
    }

    /// Expires what retention allows (minus what `minCopies` holds, and nothing of a trail
    /// whose sweep trips the mass-expiry breaker), then frees the volumes left unused.
    async fn run_expiry(
        &mut self,
        set: &mut ResourceSet,
        media: &BTreeMap<String, MediaSpec>,
        catalog: &mut Catalog,
    ) -> Result<()> {
        let trails = set.trail_names();
        for t in &trails {
            let Some(retention) = set.retentions.get(t) else {
                continue;
            };
            let moved =
                trail::expiry_dates(t, *retention, catalog.entries().values().map(|e| &**e));
            for (name, at) in moved {
                if catalog.set_expires_at(&name, at) {
                    self.state.save_entry(&catalog.entries()[&name])?;
                }
            }
        }
        let ctx = PlanContext {
            set,
            media,
            catalog,
            now: Utc::now(),
        };
        let plan = ctx.plan_expiry();
        let mut sweeps = Vec::new();
        for t in &trails {
            let mine = plan.of_trail(catalog, t);
            let halt = ctx.mass_expiry(t, &mine);
            sweeps.push((t.clone(), mine, halt));
        }
        for (name, why) in &plan.held {
            println!("catalogentry/{name}: {why}");
        }
        for (t, mine, halt) in sweeps {
            let (ack, st) = trail_ack_and_status(set, &t);
            let sweep = trail::sweep(st, &mine, halt, ack);
            for e in &sweep.events {
                println!("trail/{t}: {}", e.note);
            }
            let mut expired = 0;
            for (name, why) in &sweep.expire {
                if catalog.set_state(name, EntryState::Expired, why.clone()) {
                    self.state.save_entry(&catalog.entries()[name])?;
                    println!("catalogentry/{name}: Expired ({why})");
                    expired += 1;
                }
            }
            if expired > 0 {
                println!("trail/{t}: {}", trail::expired(expired).note);
            }
        }
        for t in trails {
            let Some(m) = readable_media(set, media, &t) else {
                continue;
            };
            let ctx = PlanContext {
                set,
                media,
                catalog,
                now: Utc::now(),
            };
            let task = Task::Scratch(ScratchTask {
                trail: t.clone(),
                media: m.clone(),
                keep: ctx.volumes_in_use(&t, &[]),
            });
            if let Some(o) = self.run_task(&format!("trail/{t}"), &task).await {
                for n in o.notes {
                    println!("trail/{t}: {n}");
                }
            }
        }
        Ok(())
    }

    async fn update_status(
        &mut self,
        set: &mut ResourceSet,
        media: &BTreeMap<String, MediaSpec>,
        catalog: &Catalog,
    ) -> Result<()> {
        let trails = set.trail_names();
        for t in trails {
            let Some(class) = set.trail_media_class(&t).map(String::from) else {
                continue;
            };
            let Some(spec) = media.get(&class) else {
                continue;
            };
            let volumes = match spec.open().await {
                Ok(m) => scan_trail(m.store.as_ref(), &t).await.unwrap_or_default(),
                Err(_) => continue,
            };
            let statuses: Vec<VolumeStatus> = volumes.iter().map(volume_status).collect();
            let bytes: u64 = statuses.iter().map(|v| v.bytes_used).sum();
            let instances = catalog.valid().filter(|e| e.trail == t).count() as u64;
            let st = if let Some(bt) = set.backup_trails.get_mut(&t) {
                bt.status.get_or_insert_default()
            } else {
                set.duplication_trails
                    .get_mut(&t)
                    .unwrap()
                    .status
                    .get_or_insert_default()
            };
            st.volumes = statuses;
            st.bytes = bytes;
            st.instances = instances;
        }
        let names: Vec<String> = set.media_classes.keys().cloned().collect();
        for name in names {
            let probe = match media.get(&name) {
                // Media that are away are not contacted, not even to probe them.
                _ if !set.media_classes[&name].spec.available => {
                    Err("not probed: spec.available is false".to_string())
                }
                None => Err("its Secrets are not all here".to_string()),
                Some(m) => match m.open().await {
                    // A directory not made yet answers once the first volume is written.
                    Ok(_) if m.backend.filesystem.is_some() => Ok(()),
                    Ok(opened) => opened.store.probe().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            let on_class = |e: &&CatalogEntrySpec| set.trail_media_class(&e.trail) == Some(&name);
            let valid = catalog.valid().filter(on_class);
            let (st, events) = media_class::decide(&set.media_classes[&name], probe, valid);
            for e in &events {
                println!("mediaclass/{name}: {}", e.note);
            }
            set.media_classes.get_mut(&name).unwrap().status = Some(st);
        }
        Ok(())
    }

    /// Rebuilds the catalog from the manifests on the media, then applies expiry by time. What
    /// the catalog already knows is kept: states that verify or a restore learned (Missing),
    /// expiry, and the entries of media that are away or do not answer now (flagged, and the
    /// run fails, but nothing is dropped).
    pub async fn rescan(&mut self) -> Result<ApplyReport> {
        let set = self.state.load_resources()?;
        let (media, mut failures) = resolve_media(&set);
        let mut catalog = self.state.load_catalog()?;
        let before = catalog.entries().len();
        let mut unread: Vec<String> = set
            .trail_names()
            .into_iter()
            .filter(|t| readable_media(&set, &media, t).is_none())
            .map(|t| {
                let kept = catalog.entries().values().filter(|e| e.spec.trail == t).count();
                format!("trail/{t}: media away or not resolved, not read; its {kept} entries are kept as they are")
            })
            .collect();
        unread.extend(self.import_manifests(&set, &media, &mut catalog).await?);
        for line in &unread {
            println!("{line}");
        }
        failures.extend(unread);
        let expired = PlanContext {
            set: &set,
            media: &media,
            catalog: &catalog,
            now: Utc::now(),
        }
        .plan_expiry()
        .expire;
        for (name, why) in expired {
            catalog.set_state(&name, EntryState::Expired, why);
            self.state.save_entry(&catalog.entries()[&name])?;
        }
        println!(
            "catalog rebuilt from the media: {} entries ({} new)",
            catalog.entries().len(),
            catalog.entries().len() - before
        );
        Ok(ApplyReport { failures })
    }

    /// Re-reads every Valid copy (optionally of one trail); damaged copies become Missing,
    /// copies that could not be read for another reason (a wrong key) are only reported.
    pub async fn verify(&mut self, trail: Option<&str>) -> Result<ApplyReport> {
        let set = self.state.load_resources()?;
        if let Some(t) = trail
            && set.trail(t).is_none()
        {
            return Err(Error::Usage(format!(
                "no trail {t:?} here (trails: {})",
                set.trail_names().join(", ")
            )));
        }
        let (media, _) = resolve_media(&set);
        let mut catalog = self.state.load_catalog()?;
        let mut failures = Vec::new();
        let entries: Vec<CatalogEntrySpec> = catalog
            .valid()
            .filter(|e| trail.is_none_or(|t| e.trail == t))
            .cloned()
            .collect();
        let (mut ok, mut damaged, mut unread, mut away) = (0, 0, 0, 0);
        for e in entries {
            let name = e.object_name();
            let Some(m) = readable_media(&set, &media, &e.trail) else {
                println!("catalogentry/{name}: SKIPPED: its media are away");
                away += 1;
                continue;
            };
            let task = Task::Verify(VerifyTask {
                links: vec![RestoreLink {
                    entry: e.clone(),
                    media: m.clone(),
                }],
            });
            match worker::execute(&task).await {
                Ok(_) => {
                    ok += 1;
                    println!("catalogentry/{name}: ok ({} bytes, {})", e.bytes, e.digest);
                }
                Err(err @ EngineError::Media(MediaError::Corrupt { .. })) => {
                    damaged += 1;
                    println!("catalogentry/{name}: DAMAGED: {err}");
                    catalog.set_state(&name, EntryState::Missing, err.to_string());
                    self.state.save_entry(&catalog.entries()[&name])?;
                    failures.push(format!("catalogentry/{name}: {err}"));
                }
                // Not damage (a wrong key, an unreachable store): the copy stays Valid.
                Err(err) => {
                    unread += 1;
                    println!("catalogentry/{name}: NOT READ: {err}");
                    failures.push(format!("catalogentry/{name}: {err}"));
                }
            }
        }
        println!(
            "verify: {ok} ok, {damaged} damaged, {unread} not read, {away} skipped (media away)"
        );
        Ok(ApplyReport { failures })
    }
}

/// A trail's `mimeo.dev/allow-mass-expiry` token and its status, whichever kind it is.
fn trail_ack_and_status<'a>(
    set: &'a mut ResourceSet,
    trail: &str,
) -> (Option<String>, &'a mut TrailStatus) {
    let (meta, status) = match set.backup_trails.get_mut(trail) {
        Some(t) => (&t.metadata, &mut t.status),
        None => {
            let t = set
                .duplication_trails
                .get_mut(trail)
                .expect("a trail of the set");
            (&t.metadata, &mut t.status)
        }
    };
    let ack = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOW_MASS_EXPIRY_ANNOTATION))
        .cloned();
    (ack, status.get_or_insert_default())
}

/// A trail's media class cannot change once data was written with it.
fn check_immutable(old: &ResourceSet, new: &[Input]) -> Result<()> {
    for Input {
        source,
        resource: r,
    } in new
    {
        let (old_mc, new_mc) = match r {
            Resource::BackupTrail(t) => (
                old.backup_trails
                    .get(&t.name_any())
                    .map(|o| &o.spec.media_class_name),
                &t.spec.media_class_name,
            ),
            Resource::DuplicationTrail(t) => (
                old.duplication_trails
                    .get(&t.name_any())
                    .map(|o| &o.spec.media_class_name),
                &t.spec.media_class_name,
            ),
            _ => continue,
        };
        if let Some(o) = old_mc
            && o != new_mc
        {
            return Err(SpecError::Invalid {
                source_name: source.clone(),
                kind: r.kind().into(),
                name: r.name(),
                field: "spec.mediaClassName".into(),
                message: format!("is immutable (was {o:?}): create a new trail instead"),
            }
            .into());
        }
    }
    Ok(())
}
