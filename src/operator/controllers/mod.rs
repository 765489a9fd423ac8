//! The controllers, one reconciler a file, and what they share here (Job states, status and
//! event writers, worker runs, pod mounts, the error policy). Each reconcile is one pipeline:
//! fetch (reflector stores, no API reads) → validate → decide and build (pure: the reconcile
//! core, the planner, the Job builder) → apply (create the run's ConfigMap and Job, idempotent
//! by name) → status (written only when it changed).

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
use super::jobs::{PvcMount, WorkerRun, build, fit, owned_by_job, run_name};
use super::metrics::{ErrorLabels, ResourceLabels};
use super::retries;
use crate::api::*;
use crate::engine::catalog::{Catalog, run_notes};
use crate::engine::error::EngineError;
use crate::engine::planner::PlanContext;
use crate::engine::task::*;
use crate::error::{Error, Result};
use crate::reconcile::backup::{self, BackupRun};
use crate::reconcile::policy::{self, PolicyRun, PolicyStep};
use crate::reconcile::restore::{self, LastRun, RestoreView};
use crate::reconcile::{media_class, trail};

mod media_classes;
mod policies;
mod restores;
mod trails;

pub use media_classes::reconcile_media_class;
pub use policies::reconcile_policy;
pub use restores::reconcile_restore;
pub use trails::{reconcile_backup, reconcile_duplication_trail};

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
        return Err(EngineError::Unsupported(
            "a path source or target only exists in local mode; use pvc or s3 in a cluster".into(),
        )
        .into());
    }
    let s3 = loc.s3.as_ref().expect("validated: exactly one location");
    let (endpoint, bucket, base, region, path_style, secret) = match &s3.media_class_name {
        Some(mc) => {
            let b = set.s3_backend(mc)?.clone();
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

/// The JSON merge patch that takes `old` to `new`: what `new` lacks is set to null. A merge
/// patch leaves alone what it does not name, so a field a status no longer has (a run's end
/// time or message, from the run before) would otherwise keep its old value.
fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch: serde_json::Map<String, Value> = n
                .iter()
                .map(|(k, v)| {
                    let v = o.get(k).map_or_else(|| v.clone(), |ov| merge_patch(ov, v));
                    (k.clone(), v)
                })
                .collect();
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
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
    let new = serde_json::to_value(new).unwrap_or_default();
    let status = match old.map(serde_json::to_value) {
        Some(Ok(old)) => merge_patch(&old, &new),
        _ => new,
    };
    let patch = serde_json::json!({ "status": status });
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

/// The catalog entries of `trails`, listed from the API server (not the watch).
async fn trail_entries(ctx: &Context, ns: &str, trails: &[String]) -> Result<Catalog> {
    listed_entries(ctx, ns, &format!("{LABEL_TRAIL} in ({})", trails.join(","))).await
}

/// The catalog entries that label `selector` picks, listed from the API server (not the
/// watch, which can lag behind it: after an outage each watch re-lists on its own backoff).
async fn listed_entries(ctx: &Context, ns: &str, selector: &str) -> Result<Catalog> {
    let api: Api<CatalogEntry> = Api::namespaced(ctx.client.clone(), ns);
    let list = api
        .list(&kube::api::ListParams::default().labels(selector))
        .await?;
    let mut catalog = Catalog::default();
    for e in list.items {
        catalog.insert(e.name_any(), Arc::new(e));
    }
    Ok(catalog)
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

/// Error policy: invalid specs wait for a change (they are in status already); transient
/// errors retry with backoff, doubling per failure in a row; others retry in 5 minutes.
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
    // The error's reason is the Event's reason: `kubectl describe` says why it failed.
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    let reference = obj.object_ref(&());
    let ev = Event {
        type_: EventType::Warning,
        reason: err.reason().into(),
        note: Some(err.to_string().chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::warn!("cannot publish event: {e}");
        }
    });
    match err {
        e if e.is_transient() => Action::requeue(ctx.retries.failed(&retries::key(obj.as_ref()))),
        // A spec that cannot work waits for a change to it.
        e if e.is_invalid_spec() => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(300)),
    }
}

#[cfg(test)]
mod tests {
    use super::restores::{damaged_links, restore_job_name};
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    /// A status written over an older one clears what the new one lacks, at any depth, and
    /// replaces lists whole, as a merge patch applied to the old gives the new.
    #[test]
    fn a_status_patch_clears_what_the_new_status_lacks() {
        use serde_json::json;
        let old = json!({"runs": 1, "lastRun": {"start": "a", "end": "b", "message": "disk full", "left": 3},
            "conditions": [{"type": "Ready"}, {"type": "Degraded"}]});
        let new = json!({"runs": 2, "lastRun": {"start": "c"}, "conditions": [{"type": "Ready"}]});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"runs": 2, "lastRun": {"start": "c", "end": null, "message": null, "left": null},
                "conditions": [{"type": "Ready"}]})
        );
        assert_eq!(merge_patch(&json!(null), &new), new);
    }

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
        parse_documents(text, "t.yaml")
            .unwrap()
            .into_iter()
            .collect()
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
