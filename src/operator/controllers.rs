//! The controllers. Each reconcile is one pipeline: fetch (reflector stores, no API reads) →
//! validate → plan and build (pure: planner and Job builder) → apply (create the run's
//! ConfigMap and Job, idempotent by name) → status (written only when it changed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{Context, media_mount};
use super::expiry::{write_expired, write_expiry_dates};
use super::jobs::{PvcMount, WorkerRun, build, owned_by_job, run_name};
use super::metrics::{ErrorLabels, ResourceLabels};
use crate::api::*;
use crate::engine::catalog::{Catalog, backup_done, run_notes};
use crate::engine::planner::{Breaker, PlanContext, apply_breaker};
use crate::engine::task::*;
use crate::error::{Error, Result};
use crate::reconcile::backup::{self, BackupDue};
use crate::reconcile::policy::{self, PolicyDue};
use crate::reconcile::restore::{self, LastRun, RestoreView};
use crate::reconcile::trail;

/// How a finished or running Job looks from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Still running (or retrying).
    Running,
    /// Completed.
    Succeeded,
    /// Failed for good, with the reason.
    Failed(String),
}

/// Reads a Job's outcome from its status.
pub fn job_state(job: &Job) -> JobState {
    let Some(st) = &job.status else {
        return JobState::Running;
    };
    if st.succeeded.unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    let failed = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    match failed {
        Some(c) => JobState::Failed(format!(
            "worker Job {} failed: {}",
            job.name_any(),
            c.message.clone().or(c.reason.clone()).unwrap_or_default()
        )),
        None => JobState::Running,
    }
}

/// While a worker Job retries after failed attempts, says so in the `Ready` condition and in a
/// Warning event (once per failed attempt), so an outage shows before the Job gives up.
/// Returns whether the condition changed.
async fn report_retries<K>(
    recorder: &Recorder,
    obj: &K,
    conditions: &mut Vec<Condition>,
    job: &Job,
) -> bool
where
    K: kube::Resource<DynamicType = ()>,
{
    let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
    if failed == 0 {
        return false;
    }
    let limit = job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6);
    let msg = format!(
        "worker Job {}: {failed} failed attempt(s), retrying (backoffLimit {limit}); \
         the worker's log says why",
        job.name_any()
    );
    let before = conditions.clone();
    set_condition(
        conditions,
        Condition::new("Ready", false, "WorkerRetrying", msg.clone()),
    );
    let changed = *conditions != before;
    if changed {
        event(recorder, obj, true, "WorkerRetrying", msg).await;
    }
    changed
}

fn owner_ref<K: kube::Resource<DynamicType = ()>>(obj: &K) -> OwnerReference {
    obj.controller_owner_ref(&())
        .expect("objects from the API have a uid")
}

/// Resolves a work item source or restore target for a worker pod: PVCs are mounted under
/// `/mnt/data/CLAIM`; S3 prefixes are reached with the Secret's credentials.
pub fn resolve_for_pod(
    set: &ResourceSet,
    loc: &DataLocation,
    read_only: bool,
) -> Result<(DataSpec, Option<PvcMount>)> {
    if let Some(p) = &loc.pvc {
        let root = format!("/mnt/data/{}", p.claim_name);
        let path = match &p.path {
            Some(sub) => format!("{root}/{}", sub.trim_matches('/')),
            None => root.clone(),
        };
        let mount = PvcMount {
            claim: p.claim_name.clone(),
            mount_path: root,
            read_only,
        };
        return Ok((DataSpec::Path(path), Some(mount)));
    }
    if loc.path.is_some() {
        return Err(Error::Unsupported(
            "a path source or target only exists in local mode; use pvc or s3 in a cluster".into(),
        ));
    }
    let s3 = loc.s3.as_ref().expect("validated: exactly one location");
    let (endpoint, bucket, base, region, path_style, secret) = match &s3.media_class_name {
        Some(mc) => {
            let b = set
                .media_classes
                .get(mc)
                .and_then(|c| c.spec.backend.s3.clone())
                .ok_or_else(|| Error::Other(format!("MediaClass {mc} has no s3 backend")))?;
            (
                b.endpoint,
                b.bucket,
                b.prefix.unwrap_or_default(),
                b.region,
                b.force_path_style.unwrap_or(false),
                b.credentials_secret_ref.map(|r| r.name),
            )
        }
        None => (
            s3.endpoint.clone(),
            s3.bucket.clone().unwrap_or_default(),
            String::new(),
            s3.region.clone(),
            s3.force_path_style.unwrap_or(false),
            s3.credentials_secret_ref.as_ref().map(|r| r.name.clone()),
        ),
    };
    let prefix = [base.trim_matches('/'), s3.prefix.trim_matches('/')]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    Ok((
        DataSpec::S3(S3Target {
            endpoint,
            bucket,
            prefix,
            region,
            force_path_style: path_style,
            secret,
            credentials: None,
        }),
        None,
    ))
}

/// Mounts of the PVC-backed media classes a task uses.
pub fn media_mounts(set: &ResourceSet, task: &mut Task) -> Vec<PvcMount> {
    task.media_classes()
        .into_iter()
        .filter_map(|name| {
            let mc = set.media_classes.get(&name)?;
            let pvc = mc.spec.backend.pvc.as_ref()?;
            let mount = media_mount(&name, mc);
            let root = match &pvc.sub_path {
                Some(sub) => mount
                    .strip_suffix(&format!("/{}", sub.trim_matches('/')))
                    .unwrap_or(&mount)
                    .to_string(),
                None => mount,
            };
            Some(PvcMount {
                claim: pvc.claim_name.clone(),
                mount_path: root,
                read_only: false,
            })
        })
        .collect()
}

/// Creates a run's task ConfigMap, then its Job, then hands the ConfigMap to the Job. Both
/// names are deterministic: a re-reconcile or a restarted operator finds them and creates
/// nothing new.
async fn create_run(ctx: &Context, run: &WorkerRun) -> Result<()> {
    let (cm, job) = build(run, &ctx.worker)?;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &run.namespace);
    // The task first, owned by the run's owner: a Job whose creation answer was lost is found
    // by the next reconcile, which would never create its ConfigMap, and its pod could not
    // start. (`create` answering 409 means a re-reconcile or a restarted operator.)
    match cms.create(&PostParams::default(), &cm).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let job = match jobs.create(&PostParams::default(), &job).await {
        Ok(j) => j,
        Err(kube::Error::Api(e)) if e.code == 409 => jobs.get(&run.name).await?,
        Err(e) => return Err(e.into()),
    };
    // Then the Job's, so it goes with the Job's TTL. Should this fail, the run's owner keeps
    // it (and the garbage collector removes it with the owner).
    let mut owned = cm;
    owned_by_job(&mut owned, &job)?;
    let patch =
        serde_json::json!({"metadata": {"ownerReferences": owned.metadata.owner_references}});
    if let Err(e) = cms
        .patch(&run.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(run = %run.name, "task ConfigMap not handed to its Job: {e}");
    }
    Ok(())
}

/// Status without condition timestamps, for "did anything change" comparisons.
fn comparable<S: Serialize>(status: &S) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(cs) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    v
}

/// Writes `new` to the status subresource, only if it differs from `old`.
async fn write_status<K, S>(ctx: &Context, obj: &K, old: Option<&S>, new: &S) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    if old.map(comparable) == Some(comparable(new)) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": new });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn event<K: kube::Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!("cannot publish event: {e}");
    }
}

fn jobs_of<'a>(
    ctx: &'a Context,
    ns: &'a str,
    prefix: &'a str,
) -> impl Iterator<Item = Arc<Job>> + 'a {
    ctx.stores
        .jobs
        .state()
        .into_iter()
        .filter(move |j| j.namespace().as_deref() == Some(ns) && j.name_any().starts_with(prefix))
}

/// The worker Job of a restore's generation; after damaged copies, one more per copy.
fn restore_job_name(restore: &str, generation: i64, damaged: usize) -> String {
    match damaged {
        0 => run_name("restore", restore, &generation.to_string()),
        n => run_name("restore", restore, &format!("{generation}-{n}")),
    }
}

/// The links of a restore's chain that its worker found damaged, as `ROLE on TRAIL damaged:
/// WHY` (the why names volume, offset and work item): marked Missing, or already replaced by a
/// repair copy made after `since` (the Job's start), which is how a policy answers a Missing
/// copy; the worker read the damaged one either way.
fn damaged_links(
    catalog: &Catalog,
    chain: &[RestoredFrom],
    since: Option<chrono::DateTime<Utc>>,
) -> Vec<String> {
    chain
        .iter()
        .filter_map(|l| {
            let e = catalog.entries.get(&l.entry_name())?;
            let why = match Catalog::state(e) {
                EntryState::Missing => e.status.as_ref().map_or("", |s| s.message.as_str()),
                EntryState::Valid if since.is_some_and(|t| e.spec.created_at > t) => {
                    e.spec.replaces.last()?.damage.as_str()
                }
                _ => return None,
            };
            Some(format!(
                "{} on {} damaged: {why}",
                e.spec.role_word(),
                l.trail
            ))
        })
        .collect()
}

/// The catalog entries of a restore's chain, as the API server has them now.
async fn chain_entries(ctx: &Context, ns: &str, chain: &[RestoredFrom]) -> Result<Catalog> {
    let api: Api<CatalogEntry> = Api::namespaced(ctx.client.clone(), ns);
    let mut catalog = Catalog::default();
    for l in chain {
        let name = l.entry_name();
        if let Some(e) = api.get_opt(&name).await? {
            catalog.entries.insert(name, Arc::new(e));
        }
    }
    Ok(catalog)
}

/// The catalog entries of `trails`, listed from the API server (not the watch).
async fn trail_entries(ctx: &Context, ns: &str, trails: &[String]) -> Result<Catalog> {
    let api: Api<CatalogEntry> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{LABEL_TRAIL} in ({})", trails.join(","));
    let list = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    let mut catalog = Catalog::default();
    for e in list.items {
        catalog.entries.insert(e.name_any(), Arc::new(e));
    }
    Ok(catalog)
}

/// Reconciles a Restore: gathers the view (the Job of its current run, the chain's entries as
/// the API server has them after a failure, the target), lets [`restore::decide`] choose, and
/// carries the decision out: events, a worker Job for a run, the status. A worker that finds
/// its copy damaged marks it Missing and fails; the decision then reads the next best copy.
pub async fn reconcile_restore(r: Arc<Restore>, ctx: Arc<Context>) -> Result<Action> {
    let ns = r.namespace().unwrap_or_default();
    let name = r.name_any();
    let generation = r.metadata.generation.unwrap_or(0);
    let old = r.status.clone();
    let st = old.clone().unwrap_or_default();
    let current = st.observed_generation == Some(generation);
    if matches!(st.phase, RestorePhase::Succeeded | RestorePhase::Failed) && current {
        return Ok(Action::await_change());
    }
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    let mut catalog = ctx.catalog(&ns);
    // Fetch: how the current run's Job ended.
    let job_name = restore_job_name(&name, generation, st.damaged.len());
    let job = (st.phase == RestorePhase::Running && current)
        .then(|| jobs_of(&ctx, &ns, &job_name).find(|j| j.name_any() == job_name))
        .flatten();
    let last_run = match job.as_deref().map(job_state) {
        None => LastRun::None,
        Some(JobState::Running) => LastRun::Running,
        Some(JobState::Succeeded) => LastRun::Succeeded {
            seconds: job.as_deref().and_then(job_seconds),
        },
        Some(JobState::Failed(message)) => {
            // Read from the API server, not the watch: the worker marked its damaged copy
            // before it exited, but that change may reach the watch after the Job's.
            let fresh = chain_entries(&ctx, &ns, &st.chain).await?;
            let started = job
                .as_ref()
                .and_then(|j| j.metadata.creation_timestamp.as_ref())
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0));
            let damaged = damaged_links(&fresh, &st.chain, started);
            catalog.entries.extend(fresh.entries);
            LastRun::Failed {
                message,
                damaged,
                unreadable: Vec::new(),
            }
        }
    };
    let set = ctx.resource_set(&ns);
    let media = ctx.media(&set);
    let target = resolve_for_pod(&set, &r.spec.target, false);
    let decision = restore::decide(
        &r,
        &RestoreView {
            plan: PlanContext {
                set: &set,
                media: &media,
                catalog: &catalog,
                now: Utc::now(),
            },
            target_problem: target.as_ref().err().map(|e| (e.reason(), e.to_string())),
            last_run: last_run.clone(),
        },
    );
    let mut st = decision.status;
    match &last_run {
        LastRun::Running => {
            if let Some(job) = &job {
                report_retries(&recorder, r.as_ref(), &mut st.conditions, job).await;
            }
        }
        LastRun::Succeeded { seconds } => ctx.metrics.finished("restore", "Succeeded", *seconds),
        LastRun::Failed { .. } => {
            let seconds = job.as_deref().and_then(job_seconds);
            ctx.metrics.finished("restore", "Failed", seconds);
        }
        LastRun::None => {}
    }
    // Apply: the events, then the run, then the status.
    for e in &decision.events {
        tracing::info!(restore = %name, namespace = %ns, reason = e.reason, "{}", e.note);
        event(&recorder, r.as_ref(), e.warning, e.reason, e.note.clone()).await;
    }
    if let (Some(plan), Ok((target, target_mount))) = (decision.run, target) {
        let mut task = Task::Restore(RestoreTask {
            restore: name.clone(),
            links: plan.links,
            target,
        });
        let mut mounts = media_mounts(&set, &mut task);
        mounts.extend(target_mount);
        create_run(
            &ctx,
            &WorkerRun {
                name: restore_job_name(&name, generation, st.damaged.len()),
                namespace: ns,
                owner: owner_ref(r.as_ref()),
                kind: "restore".into(),
                task,
                mounts,
            },
        )
        .await?;
    }
    write_status(&ctx, r.as_ref(), old.as_ref(), &st).await?;
    Ok(match decision.waiting {
        // New catalog entries wake it (a watch); this is the fallback.
        true => Action::requeue(Duration::from_secs(60)),
        false => Action::await_change(),
    })
}

/// Seconds from a Job's start to its completion (or failure), as the job controller saw them.
fn job_seconds(job: &Job) -> Option<f64> {
    let st = job.status.as_ref()?;
    let start = st.start_time.as_ref()?.0;
    let end = st.completion_time.as_ref().map(|t| t.0).or_else(|| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
    })?;
    Some(end.duration_since(start).as_secs_f64())
}

/// Reconciles a DuplicationPolicy: one run at a time; a run is planned from the catalog
/// (uncopied instances by default) when new instances appear or the schedule is due.
pub async fn reconcile_policy(p: Arc<DuplicationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let generation = p.metadata.generation;
    let old = p.status.clone();
    let mut st = old.clone().unwrap_or_default();
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    st.observed_generation = generation;
    let due = policy::due(&p, &st, Utc::now());
    if due == Ok(PolicyDue::Suspended) {
        set_condition(
            &mut st.conditions,
            Condition::new(
                "Ready",
                true,
                "Suspended",
                "spec.suspend is true: no new runs",
            ),
        );
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let set = ctx.resource_set(&ns);
    let problem = set.first_problem(&Resource::DuplicationPolicy((*p).clone()));
    if let Some(msg) = problem {
        set_condition(
            &mut st.conditions,
            Condition::new("Ready", false, "InvalidSpec", msg.clone()),
        );
        event(&recorder, p.as_ref(), true, "InvalidSpec", msg.clone()).await;
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let prefix = run_name("copy", &name, &format!("{}-", st.runs));
    let running = st.last_run.as_ref().is_some_and(|r| r.outcome == "Running");
    let catalog = ctx.catalog(&ns);
    let media = ctx.media(&set);
    let plan_ctx = PlanContext {
        set: &set,
        media: &media,
        catalog: &catalog,
        now: Utc::now(),
    };
    if running {
        let jobs: Vec<Arc<Job>> = jobs_of(&ctx, &ns, &prefix).collect();
        let states: Vec<JobState> = jobs.iter().map(|j| job_state(j)).collect();
        if jobs.is_empty() || states.contains(&JobState::Running) {
            // Not created yet (or still running): make sure every planned Job exists.
            start_run(&ctx, &p, &set, plan_ctx.plan_duplication(&p)?, st.runs).await?;
            let mut changed = false;
            for job in jobs.iter().filter(|j| job_state(j) == JobState::Running) {
                changed |= report_retries(&recorder, p.as_ref(), &mut st.conditions, job).await;
            }
            if changed {
                write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        let failures: Vec<String> = states
            .into_iter()
            .filter_map(|s| match s {
                JobState::Failed(m) => Some(m),
                _ => None,
            })
            .collect();
        let last = st.last_run.as_mut().expect("running");
        last.end = Some(Utc::now());
        let ok = failures.is_empty();
        last.outcome = if ok { "Succeeded" } else { "Failed" }.into();
        last.message = failures.join("; ");
        let seconds = last.end.map(|e| (e - last.start).as_seconds_f64());
        ctx.metrics.finished("copy", &last.outcome, seconds);
        if ok {
            ctx.metrics.bytes_copied.inc_by(last.bytes);
            ctx.metrics
                .last_success
                .get_or_create(&ResourceLabels {
                    namespace: ns.clone(),
                    name: name.clone(),
                })
                .set(Utc::now().timestamp());
        }
        let (reason, msg) = if ok {
            (
                "RunSucceeded",
                format!("{} instances, {} bytes", last.instances, last.bytes),
            )
        } else {
            ("RunFailed", last.message.clone())
        };
        set_condition(
            &mut st.conditions,
            Condition::new("Ready", ok, reason, msg.clone()),
        );
        event(&recorder, p.as_ref(), !ok, reason, msg).await;
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let token = match due.map_err(Error::Other)? {
        PolicyDue::At(next) => {
            st.next_run = Some(next);
            write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            return Ok(Action::requeue(until(next)));
        }
        PolicyDue::Now { token } => token,
        PolicyDue::Suspended => return Ok(Action::await_change()), // written above
    };
    let mut tasks = plan_ctx.plan_duplication(&p)?;
    if !tasks.is_empty() {
        // The watch may not show the last run's commits yet: plan again on the target trails'
        // entries as the API server has them, so no copy is ever run twice.
        let mut fresh = catalog.clone();
        fresh
            .entries
            .extend(trail_entries(&ctx, &ns, &p.spec.targets).await?.entries);
        tasks = PlanContext {
            catalog: &fresh,
            ..plan_ctx
        }
        .plan_duplication(&p)?;
    }
    if token.is_some() {
        st.last_run_now = token;
    }
    if tasks.is_empty() {
        // Up to date: say so (and which generation was seen), once.
        let last = st.last_run.as_ref().map(|r| r.outcome.as_str());
        if last != Some("Failed") {
            set_condition(
                &mut st.conditions,
                Condition::new("Ready", true, "UpToDate", "nothing to copy"),
            );
        }
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let (instances, bytes) = tasks.iter().fold((0u64, 0u64), |(n, b), t| match t {
        Task::Copy(c) => (
            n + c.items.len() as u64,
            b + c.items.iter().map(|i| i.source.bytes).sum::<u64>(),
        ),
        Task::MediaCopy(m) => (n + m.entries.len() as u64, b),
        _ => (n, b),
    });
    // Record the run first: its number names the Jobs, so a retry creates the same ones.
    st.runs += 1;
    st.last_run = Some(RunSummary {
        start: Utc::now(),
        end: None,
        instances,
        bytes,
        outcome: "Running".into(),
        message: String::new(),
    });
    set_condition(
        &mut st.conditions,
        Condition::new(
            "Ready",
            true,
            "Running",
            format!("run {} copies {instances} instances", st.runs),
        ),
    );
    write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
    start_run(&ctx, &p, &set, tasks, st.runs).await?;
    event(
        &recorder,
        p.as_ref(),
        false,
        "RunStarted",
        format!("run {}: {instances} instances", st.runs),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn start_run(
    ctx: &Context,
    p: &DuplicationPolicy,
    set: &ResourceSet,
    tasks: Vec<Task>,
    run: u64,
) -> Result<()> {
    for (i, mut task) in tasks.into_iter().enumerate() {
        let mounts = media_mounts(set, &mut task);
        create_run(
            ctx,
            &WorkerRun {
                name: run_name("copy", &p.name_any(), &format!("{run}-{i}")),
                namespace: p.namespace().unwrap_or_default(),
                owner: owner_ref(p),
                kind: "copy".into(),
                task,
                mounts,
            },
        )
        .await?;
    }
    Ok(())
}

/// Rebuilds a trail's catalog entries from its media when the `mimeo.dev/rescan` annotation
/// carries a new token: one worker Job per token, which adds the entries the cluster lacks.
async fn rescan_if_asked<K>(
    ctx: &Context,
    trail: &K,
    st: &mut TrailStatus,
    recorder: &Recorder,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>,
{
    let Some(token) = trail
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESCAN_ANNOTATION))
    else {
        return Ok(());
    };
    if st.last_rescan.as_ref() == Some(token) {
        return Ok(());
    }
    let ns = trail.meta().namespace.clone().unwrap_or_default();
    let name = trail.meta().name.clone().unwrap_or_default();
    let run = format!("{:x}", crate::base::hash::name_hash(token) as u16);
    let job_name = run_name("rescan", &name, &run);
    if let Some(job) = jobs_of(ctx, &ns, &job_name).find(|j| j.name_any() == job_name) {
        let (ok, reason, msg) = match job_state(&job) {
            JobState::Running => return Ok(()),
            JobState::Succeeded => (
                true,
                "Rescanned",
                format!("catalog rebuilt from the media of {name}"),
            ),
            JobState::Failed(m) => (false, "RescanFailed", m),
        };
        st.last_rescan = Some(token.clone());
        event(recorder, trail, !ok, reason, msg).await;
        return Ok(());
    }
    let set = ctx.resource_set(&ns);
    let media = ctx.media(&set);
    let Some(m) = set.trail_media_class(&name).and_then(|c| media.get(c)) else {
        return Err(Error::Other(format!(
            "field spec.mediaClassName: trail {name} has no usable media class to rescan"
        )));
    };
    let mut task = Task::Rescan(RescanTask {
        trail: name.clone(),
        media: m.clone(),
    });
    let mounts = media_mounts(&set, &mut task);
    create_run(
        ctx,
        &WorkerRun {
            name: job_name,
            namespace: ns,
            owner: trail.controller_owner_ref(&()).expect("uid"),
            kind: "rescan".into(),
            task,
            mounts,
        },
    )
    .await?;
    event(
        recorder,
        trail,
        false,
        "RescanStarted",
        format!("rescanning the media of {name}"),
    )
    .await;
    Ok(())
}

/// Instances, bytes and volumes of a trail, from the catalog.
fn count_trail(st: &mut TrailStatus, catalog: &Catalog, trail: &str) {
    let valid: Vec<&CatalogEntrySpec> = catalog.valid().filter(|e| e.trail == trail).collect();
    st.instances = valid.len() as u64;
    st.bytes = valid.iter().map(|e| e.bytes).sum();
    st.volumes = catalog.volumes(trail);
}

/// Reconciles a BackupTrail: one backup per spec generation or run-now token, in a worker.
pub async fn reconcile_backup(t: Arc<BackupTrail>, ctx: Arc<Context>) -> Result<Action> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let generation = t.metadata.generation;
    let old = t.status.clone();
    let mut st = old.clone().unwrap_or_default();
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    let catalog = ctx.catalog(&ns);
    count_trail(&mut st, &catalog, &name);
    st.observed_generation = generation;
    rescan_if_asked(&ctx, t.as_ref(), &mut st, &recorder).await?;
    // An invalid spec (a bad schedule too) waits for a change, reported in status.
    let set = ctx.resource_set(&ns);
    let problem = set.first_problem(&Resource::BackupTrail((*t).clone()));
    if let Some(msg) = problem {
        set_condition(
            &mut st.conditions,
            Condition::new("Ready", false, "InvalidSpec", msg.clone()),
        );
        event(&recorder, t.as_ref(), true, "InvalidSpec", msg.clone()).await;
        write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let due = backup::due(&t, &st, Utc::now()).map_err(Error::Other)?;
    let run = match due {
        BackupDue::Now(run) if !t.spec.work_items.is_empty() => run,
        BackupDue::Now(_) | BackupDue::Never | BackupDue::At(_) => {
            let expiry = sweep_expiry(&ctx, t.as_ref(), &mut st, &catalog, &recorder).await?;
            write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
            // Wake up for the next scheduled backup or the next expiry, whichever is sooner.
            let backup = match due {
                BackupDue::At(at) => Some(until(at)),
                _ => None,
            };
            return Ok(wake_after([backup, expiry]));
        }
    };
    let job_name = run_name("backup", &name, &run);
    if let Some(job) = jobs_of(&ctx, &ns, &job_name).find(|j| j.name_any() == job_name) {
        let (ok, reason, msg) = match job_state(&job) {
            JobState::Running => {
                if report_retries(&recorder, t.as_ref(), &mut st.conditions, &job).await {
                    write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
                }
                return Ok(Action::await_change());
            }
            JobState::Succeeded => (true, "BackupSucceeded", format!("backup run {run} done")),
            JobState::Failed(m) => (false, "BackupFailed", m),
        };
        // What this run's worker recorded, as the API server has it (the watch may lag).
        let started = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0));
        let recorded = trail_entries(&ctx, &ns, std::slice::from_ref(&name)).await?;
        st.last_run_notes = run_notes(
            recorded
                .entries
                .values()
                .map(|e| &e.spec)
                .filter(|e| started.is_none_or(|s| e.created_at >= s)),
        );
        let msg = backup_done(msg, &st.last_run_notes);
        backup::ran(&t, &mut st, Utc::now());
        let outcome = if ok { "Succeeded" } else { "Failed" };
        ctx.metrics.finished("backup", outcome, job_seconds(&job));
        set_condition(
            &mut st.conditions,
            Condition::new("Ready", ok, reason, msg.clone()),
        );
        let warn = !ok || !st.last_run_notes.is_empty();
        event(&recorder, t.as_ref(), warn, reason, msg).await;
        write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let media = ctx.media(&set);
    let mut mounts: BTreeMap<String, PvcMount> = BTreeMap::new();
    let resolve = |loc: &DataLocation| {
        resolve_for_pod(&set, loc, true).map(|(d, m)| {
            if let Some(m) = m {
                mounts.insert(m.claim.clone(), m);
            }
            d
        })
    };
    let resolve = std::cell::RefCell::new(resolve);
    let task = PlanContext {
        set: &set,
        media: &media,
        catalog: &catalog,
        now: Utc::now(),
    }
    .plan_backup(&t, &|loc| (resolve.borrow_mut())(loc));
    let mut task = match task {
        Ok(task) => Task::Backup(task),
        Err(e) => {
            set_condition(
                &mut st.conditions,
                Condition::new("Ready", false, e.reason(), e.to_string()),
            );
            event(&recorder, t.as_ref(), true, e.reason(), e.to_string()).await;
            write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
            return Ok(Action::await_change());
        }
    };
    let mut all_mounts: Vec<PvcMount> = mounts.into_values().collect();
    all_mounts.extend(media_mounts(&set, &mut task));
    create_run(
        &ctx,
        &WorkerRun {
            name: job_name,
            namespace: ns,
            owner: owner_ref(t.as_ref()),
            kind: "backup".into(),
            task,
            mounts: all_mounts,
        },
    )
    .await?;
    set_condition(
        &mut st.conditions,
        Condition::new(
            "Ready",
            true,
            "BackupRunning",
            format!("backup run {run} started"),
        ),
    );
    event(
        &recorder,
        t.as_ref(),
        false,
        "BackupStarted",
        format!("run {run}"),
    )
    .await;
    write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
    Ok(Action::await_change())
}

/// Marks a trail's entries Expired once their retention passed (a Valid incremental keeps its
/// parent, `minCopies` holds the last copies a policy wants), frees the trail's volumes that
/// hold no Valid entry in a worker, and requeues at the next expiry, so nothing is polled on a
/// timer. A sweep that trips the mass-expiry breaker does nothing but set `ExpiryHalted` in
/// `st` and warn, until the trail's `mimeo.dev/allow-mass-expiry` token changes.
async fn sweep_expiry<K>(
    ctx: &Context,
    trail: &K,
    st: &mut TrailStatus,
    catalog: &Catalog,
    recorder: &Recorder,
) -> Result<Option<Duration>>
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = trail.meta().namespace.clone().unwrap_or_default();
    let name = trail.meta().name.clone().unwrap_or_default();
    let set = ctx.resource_set(&ns);
    let media = ctx.media(&set);
    let now = Utc::now();
    let api: Api<CatalogEntry> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(retention) = set.retentions.get(&name) {
        let entries = catalog.entries.values().map(|e| &**e);
        write_expiry_dates(&api, &trail::expiry_dates(&name, *retention, entries)).await?;
    }
    let plan = PlanContext {
        set: &set,
        media: &media,
        catalog,
        now,
    };
    let mine = plan.plan_expiry().of_trail(catalog, &name);
    let ack = trail
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOW_MASS_EXPIRY_ANNOTATION))
        .cloned();
    if let Breaker::Halted { why, first_time } =
        apply_breaker(st, plan.mass_expiry(&name, &mine), ack)
    {
        if first_time {
            event(recorder, trail, true, "MassExpiryHalted", why).await;
        }
        return Ok(None);
    }
    if let Some((entry, why)) = mine.held.first() {
        let held = Condition::new("ExpiryHeld", true, "MinCopies", why);
        if !st.conditions.iter().any(|c| c.same_as(&held)) {
            event(
                recorder,
                trail,
                true,
                "ExpiryHeld",
                format!("{entry}: {why}"),
            )
            .await;
        }
        set_condition(&mut st.conditions, held);
    } else {
        st.conditions.retain(|c| c.type_ != "ExpiryHeld");
    }
    let expired = write_expired(&api, catalog, &mine.expire).await?;
    let changed_meanwhile = expired.len() < mine.expire.len();
    if !expired.is_empty() {
        // The store does not show the new states yet: the expired entries are named.
        let keep = plan.volumes_in_use(&name, &expired);
        if let Some(m) = set.trail_media_class(&name).and_then(|c| media.get(c)) {
            let mut task = Task::Scratch(ScratchTask {
                trail: name.clone(),
                media: m.clone(),
                keep,
            });
            let mounts = media_mounts(&set, &mut task);
            let run = format!("{}", now.timestamp());
            create_run(
                ctx,
                &WorkerRun {
                    name: run_name("expire", &name, &run),
                    namespace: ns.clone(),
                    owner: trail.controller_owner_ref(&()).expect("uid"),
                    kind: "expire".into(),
                    task,
                    mounts,
                },
            )
            .await?;
        }
        ctx.metrics.finished("expire", "Succeeded", None);
        event(
            recorder,
            trail,
            false,
            "Expired",
            format!("{} catalog entries expired", expired.len()),
        )
        .await;
    }
    // Expired entries stay visible for a while (`kubectl get` shows what expiry did), then
    // go, so the catalog does not grow without bound.
    let keep = chrono::TimeDelta::from_std(ctx.expired_entry_retention).unwrap_or_default();
    for e in catalog
        .entries
        .values()
        .filter(|e| e.spec.trail == name && Catalog::state(e) == EntryState::Expired)
        .filter(|e| e.spec.expires_at + keep <= now)
    {
        match api.delete(&e.name_any(), &Default::default()).await {
            Ok(_) => tracing::info!(entry = %e.name_any(), "expired catalog entry removed"),
            Err(kube::Error::Api(a)) if a.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    // Wake up at the next expiry or removal on this trail.
    let next = catalog
        .entries
        .values()
        .filter(|e| e.spec.trail == name && !expired.iter().any(|x| x.0 == e.name_any()))
        .filter_map(|e| match Catalog::state(e) {
            EntryState::Valid | EntryState::Missing => Some(e.spec.expires_at),
            EntryState::Expired => Some(e.spec.expires_at + keep).filter(|t| *t > now),
        })
        .min();
    Ok(match next {
        _ if changed_meanwhile => Some(Duration::from_secs(1)),
        Some(t) if t > now => Some(until(t)),
        Some(_) => Some(Duration::from_secs(60)),
        None => None,
    })
}

/// How long to wait for `at` (a second late rather than early: cron and retention are due
/// *at* that time).
fn until(at: chrono::DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1)
}

/// Requeues after the sooner of the waits, or waits for a change when there is none.
fn wake_after(waits: impl IntoIterator<Item = Option<Duration>>) -> Action {
    waits
        .into_iter()
        .flatten()
        .min()
        .map_or_else(Action::await_change, Action::requeue)
}

/// Reconciles a DuplicationTrail: status from the catalog, and expiry.
pub async fn reconcile_duplication_trail(
    t: Arc<DuplicationTrail>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let old = t.status.clone();
    let mut st = old.clone().unwrap_or_default();
    let catalog = ctx.catalog(&ns);
    count_trail(&mut st, &catalog, &name);
    st.last_run = catalog
        .valid()
        .filter(|e| e.trail == name)
        .map(|e| e.created_at)
        .max();
    st.observed_generation = t.metadata.generation;
    let ready = ctx
        .resource_set(&ns)
        .media_classes
        .contains_key(&t.spec.media_class_name);
    let (reason, msg) = if ready {
        ("Ready", format!("{} copies", st.instances))
    } else {
        (
            "MediaClassNotFound",
            format!(
                "field spec.mediaClassName: MediaClass {:?} not found",
                t.spec.media_class_name
            ),
        )
    };
    set_condition(
        &mut st.conditions,
        Condition::new("Ready", ready, reason, msg),
    );
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    rescan_if_asked(&ctx, t.as_ref(), &mut st, &recorder).await?;
    let expiry = sweep_expiry(&ctx, t.as_ref(), &mut st, &catalog, &recorder).await?;
    write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
    Ok(wake_after([expiry]))
}

/// Can a class's media be used: do its Secrets hold credentials and a valid key, does the
/// bucket answer, is the claim bound? `Err(message)` says what is wrong.
async fn probe_media_class(
    ctx: &Context,
    ns: &str,
    mc: &MediaClass,
) -> Result<std::result::Result<(), String>> {
    let mut spec = match MediaSpec::from_class(mc) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), ns);
    let names: std::collections::BTreeSet<String> =
        spec.secret_entries().into_iter().map(|(s, _)| s).collect();
    let mut secrets = BTreeMap::new();
    for name in names {
        match api.get_opt(&name).await? {
            None => return Ok(Err(format!("Secret {name:?} not found"))),
            Some(s) => _ = secrets.insert(name, s),
        }
    }
    let lookup = |secret: &str, entry: &str| {
        let s = secrets
            .get(secret)
            .ok_or_else(|| Error::Other(format!("Secret {secret:?} not found")))?;
        secret_value(s, entry)
    };
    if let Err(e) = spec.fill_secrets(&lookup) {
        return Ok(Err(e.to_string()));
    }
    let b = &mc.spec.backend;
    Ok(if b.s3.is_some() {
        match spec.open().await {
            Err(e) => Err(e.to_string()),
            Ok(m) => m.store.probe().await.map_err(|e| e.to_string()),
        }
    } else if let Some(p) = &b.pvc {
        let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), ns);
        match pvcs.get_opt(&p.claim_name).await? {
            None => Err(format!(
                "PersistentVolumeClaim {:?} not found",
                p.claim_name
            )),
            Some(c) => match c.status.and_then(|s| s.phase).as_deref() {
                Some("Bound") => Ok(()),
                phase => Err(format!(
                    "PersistentVolumeClaim {:?} is {}",
                    p.claim_name,
                    phase.unwrap_or("Pending")
                )),
            },
        }
    } else {
        Err("a filesystem backend is only reachable in local mode".into())
    })
}

/// Reconciles a MediaClass: is its backend reachable (S3 bucket answers with the referenced
/// Secret's credentials; PVC exists and is bound)? `available: false` is reported as such.
pub async fn reconcile_media_class(mc: Arc<MediaClass>, ctx: Arc<Context>) -> Result<Action> {
    let ns = mc.namespace().unwrap_or_default();
    let old = mc.status.clone();
    let mut st = old.clone().unwrap_or_default();
    st.observed_generation = mc.metadata.generation;
    let probe = probe_media_class(&ctx, &ns, &mc).await?;
    st.reachable = Some(probe.is_ok());
    let catalog = ctx.catalog(&ns);
    let set = ctx.resource_set(&ns);
    let on_class =
        |e: &&CatalogEntrySpec| set.trail_media_class(&e.trail) == Some(mc.name_any().as_str());
    let entries: Vec<&CatalogEntrySpec> = catalog.valid().filter(on_class).collect();
    st.bytes = entries.iter().map(|e| e.bytes).sum();
    st.volumes = entries
        .iter()
        .flat_map(|e| {
            e.extents
                .iter()
                .map(|x| (e.trail.clone(), x.volume.clone()))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let (ok, reason, msg) = match (&probe, mc.spec.available) {
        (_, false) => (
            false,
            "Unavailable",
            "spec.available is false: media are away and are not read".to_string(),
        ),
        (Ok(()), true) => (true, "Reachable", "backend answered".to_string()),
        (Err(e), true) => (false, "Unreachable", e.clone()),
    };
    set_condition(
        &mut st.conditions,
        Condition::new("Ready", ok, reason, msg.clone()),
    );
    if old.as_ref().and_then(|o| o.reachable) != st.reachable && !ok {
        let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
        event(&recorder, mc.as_ref(), true, reason, msg).await;
    }
    write_status(&ctx, mc.as_ref(), old.as_ref(), &st).await?;
    // Reachability changes without any object changing: probe again in a while.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Error policy: invalid specs wait for a change (they are in status already); transient
/// errors retry with backoff.
pub fn error_policy<K>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action
where
    K: kube::Resource<DynamicType = ()>,
{
    let controller = K::kind(&()).to_string();
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            controller,
            reason: err.reason().into(),
        })
        .inc();
    tracing::warn!(name = %obj.meta().name.clone().unwrap_or_default(), "reconcile failed: {err}");
    if err.is_transient() {
        Action::requeue(Duration::from_secs(15))
    } else {
        Action::requeue(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    #[test]
    fn a_damaged_link_is_named_and_the_next_copy_gets_its_own_job() {
        let spec: CatalogEntrySpec = serde_json::from_value(serde_json::json!({
            "workItem": "app-a", "instanceId": "app-a-1", "backupTime": "2026-11-01T00:00:00Z",
            "backupTrail": "nightly", "trail": "disk-1w", "role": "Duplicate",
            "extents": [{"volume": "disk-1w-00001", "segment": 0, "offset": 0, "length": 10}],
            "bytes": 10, "digest": "sha256:x", "createdAt": "2026-11-01T00:00:00Z",
            "expiresAt": "2026-11-08T00:00:00Z"
        }))
        .unwrap();
        let chain = vec![RestoredFrom {
            trail: "disk-1w".into(),
            role: Role::Duplicate,
            volumes: spec.volumes(),
            instance_id: "app-a-1".into(),
        }];
        let job_started = Some(spec.created_at + chrono::TimeDelta::hours(1));
        let mut catalog = Catalog::default();
        catalog.import(spec.clone());
        assert!(
            damaged_links(&catalog, &chain, job_started).is_empty(),
            "a Valid copy"
        );
        catalog.set_state(
            "disk-1w.app-a-1",
            EntryState::Missing,
            "corrupt media: volume disk-1w-00001, offset 70, work item app-a",
        );
        let damaged = damaged_links(&catalog, &chain, job_started);
        let want = "duplicate on disk-1w damaged: corrupt media: volume disk-1w-00001, offset 70, work item app-a";
        assert_eq!(damaged, [want]);
        // A policy repaired the copy before the Job's failure was seen: still the damage the
        // worker hit, never "no damaged copy".
        let mut repair = spec;
        repair.created_at += chrono::TimeDelta::hours(2);
        repair.extents[0].offset = 4096;
        assert_eq!(
            catalog.record(repair),
            crate::engine::catalog::Recorded::Repaired
        );
        assert_eq!(damaged_links(&catalog, &chain, job_started), [want]);
        // A repair from before the Job started is the copy the Job read.
        let later = job_started.map(|t| t + chrono::TimeDelta::hours(5));
        assert!(damaged_links(&catalog, &chain, later).is_empty());
        assert_eq!(restore_job_name("r", 2, 0), "mimeo-restore-r-2");
        assert_eq!(restore_job_name("r", 2, 1), "mimeo-restore-r-2-1");
    }

    fn set() -> ResourceSet {
        let text = r#"
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: tapes}
spec: {backend: {s3: {bucket: tapes, prefix: t, endpoint: "http://minio:9000", credentialsSecretRef: {name: creds}}}, volumeCapacity: 64Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: disk}
spec: {backend: {pvc: {claimName: media, subPath: vols}}, volumeCapacity: 64Mi}
"#;
        let mut set = ResourceSet::default();
        for r in parse_documents(text, "t.yaml").unwrap() {
            set.insert(r);
        }
        set
    }

    #[test]
    fn job_states() {
        let mut job = Job::default();
        assert_eq!(job_state(&job), JobState::Running);
        job.status = Some(JobStatus {
            succeeded: Some(1),
            ..Default::default()
        });
        assert_eq!(job_state(&job), JobState::Succeeded);
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                message: Some("BackoffLimitExceeded".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(
            matches!(job_state(&job), JobState::Failed(m) if m.contains("BackoffLimitExceeded"))
        );
    }

    #[test]
    fn locations_resolve_to_mounts_or_s3_with_secret_refs() {
        let set = set();
        let pvc = DataLocation {
            pvc: Some(PvcLocation {
                claim_name: "app-a".into(),
                path: Some("/data/".into()),
            }),
            ..Default::default()
        };
        let (spec, mount) = resolve_for_pod(&set, &pvc, true).unwrap();
        assert!(matches!(spec, DataSpec::Path(p) if p == "/mnt/data/app-a/data"));
        assert_eq!(
            mount,
            Some(PvcMount {
                claim: "app-a".into(),
                mount_path: "/mnt/data/app-a".into(),
                read_only: true
            })
        );
        let s3 = DataLocation {
            s3: Some(S3Location {
                media_class_name: Some("tapes".into()),
                prefix: "apps/b".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (spec, mount) = resolve_for_pod(&set, &s3, true).unwrap();
        let DataSpec::S3(t) = spec else {
            panic!("s3 expected")
        };
        assert_eq!(
            (t.bucket.as_str(), t.prefix.as_str()),
            ("tapes", "t/apps/b")
        );
        assert_eq!(t.secret.as_deref(), Some("creds"));
        assert!(mount.is_none());
        let path = DataLocation {
            path: Some("/x".into()),
            ..Default::default()
        };
        let err = resolve_for_pod(&set, &path, true).unwrap_err();
        assert!(err.to_string().contains("local mode"), "{err}");
    }

    #[test]
    fn pvc_media_are_mounted_at_their_claim_root() {
        let set = set();
        let media = MediaSpec::from_class(&set.media_classes["disk"]).unwrap();
        let mut task = Task::Scratch(ScratchTask {
            trail: "t".into(),
            media,
            keep: Vec::new(),
        });
        let mounts = media_mounts(&set, &mut task);
        assert_eq!(
            mounts,
            [PvcMount {
                claim: "media".into(),
                mount_path: "/mnt/media/disk".into(),
                read_only: false
            }]
        );
        assert_eq!(
            media_mount("disk", &set.media_classes["disk"]),
            "/mnt/media/disk/vols"
        );
    }

    #[test]
    fn status_comparison_ignores_condition_times() {
        let mut a = RestoreStatus::default();
        set_condition(&mut a.conditions, Condition::new("Ready", true, "R", "m"));
        let mut b = a.clone();
        b.conditions[0].last_transition_time += chrono::TimeDelta::seconds(5);
        assert_eq!(comparable(&a), comparable(&b));
        b.reason = "other".into();
        assert_ne!(comparable(&a), comparable(&b));
    }
}
