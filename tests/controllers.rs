//! The operator's reconcilers carried out against a real API server (`mimeo-controlplane`: etcd,
//! kube-apiserver, kube-controller-manager, no node), without a cluster's nodes: each test
//! fills the reconciler's watch stores from the API server, plays the part of the worker pods
//! (a Job's outcome, the entries a worker records), calls the reconciler once, and reads back
//! what it wrote: Jobs and their names, status, Events, catalog entries.

mod common;

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use common::controlplane::ControlPlane;
use mimeo::api::{
    BackupTrail, CatalogEntry, CatalogEntrySpec, DuplicationPolicy, DuplicationTrail, EntryState,
    Extent, MediaClass, Restore, RestorePhase, Role,
};
use mimeo::engine::catalog::Catalog;
use mimeo::operator::context::{Context, Stores, Views};
use mimeo::operator::controllers::{
    error_policy, reconcile_backup, reconcile_duplication_trail, reconcile_media_class,
    reconcile_policy, reconcile_restore,
};
use mimeo::operator::jobs::{WorkerConfig, run_name};
use mimeo::operator::snapshot::Changes;
use mimeo::worker::sink::{mark_missing, publish_entries};

const NS: &str = "default";

/// A store and its writer, refilled from the API server before each reconcile; each refill
/// counts as a change of the context's shared views, as a watch's relist does.
struct Mirror<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: Writer<K>,
    changes: Changes,
}

impl<K> Mirror<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync,
{
    fn new(changes: &Changes) -> Self {
        let (store, writer) = reflector::store();
        Mirror {
            store,
            writer,
            changes: changes.clone(),
        }
    }

    /// The store holds `objects`, as a watch's relist would leave it.
    fn fill(&mut self, objects: Vec<K>) {
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            self.writer
                .apply_watcher_event(&watcher::Event::InitApply(o));
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
        self.changes.bump();
    }

    async fn sync(&mut self, client: &Client) {
        let api: Api<K> = Api::namespaced(client.clone(), NS);
        let objects = api.list(&ListParams::default()).await.unwrap().items;
        self.fill(objects);
    }
}

/// `kubectl apply` of `yaml` in the test namespace, through file `name` in the control
/// plane's directory.
fn apply(cp: &ControlPlane, name: &str, yaml: &str) {
    let file = cp.dir().join(name);
    std::fs::write(&file, yaml).unwrap();
    cp.kubectl(&["-n", NS, "apply", "-f", file.to_str().unwrap()]);
}

/// The control plane, a client, and the operator's context over mirrored stores.
struct Harness {
    cp: ControlPlane,
    client: Client,
    media_classes: Mirror<MediaClass>,
    backup_trails: Mirror<BackupTrail>,
    duplication_trails: Mirror<DuplicationTrail>,
    policies: Mirror<DuplicationPolicy>,
    catalog: Mirror<CatalogEntry>,
    jobs: Mirror<Job>,
    ctx: Arc<Context>,
}

impl Harness {
    async fn start(yaml: &str) -> Harness {
        let cp = ControlPlane::start();
        apply(&cp, "resources.yaml", yaml);
        let client = cp.client().await;
        let views = Views::default();
        let (specs, entries) = (views.sets.changes(), views.catalogs.changes());
        let (media_classes, backup_trails, duplication_trails, policies, catalog, jobs) = (
            Mirror::new(specs),
            Mirror::new(specs),
            Mirror::new(specs),
            Mirror::new(specs),
            Mirror::new(entries),
            Mirror::new(&Changes::default()),
        );
        let ctx = Arc::new(Context {
            client: client.clone(),
            stores: Stores {
                media_classes: media_classes.store.clone(),
                backup_trails: backup_trails.store.clone(),
                duplication_trails: duplication_trails.store.clone(),
                policies: policies.store.clone(),
                catalog: catalog.store.clone(),
                jobs: jobs.store.clone(),
            },
            worker: WorkerConfig::default(),
            metrics: Arc::default(),
            expired_entry_retention: std::time::Duration::from_secs(3600),
            synced: Arc::new(true.into()),
            retries: Default::default(),
            snapshots: views,
        });
        Harness {
            cp,
            client,
            media_classes,
            backup_trails,
            duplication_trails,
            policies,
            catalog,
            jobs,
            ctx,
        }
    }

    /// Every store as the API server has it, but Jobs: `jobs` are how the test's worker pods
    /// went (the API server's Jobs, with the given outcomes laid over them by name).
    async fn sync(&mut self, outcomes: &[(&str, JobStatus)]) {
        self.media_classes.sync(&self.client).await;
        self.backup_trails.sync(&self.client).await;
        self.duplication_trails.sync(&self.client).await;
        self.policies.sync(&self.client).await;
        self.catalog.sync(&self.client).await;
        let mut jobs = self
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        for job in &mut jobs {
            if let Some((_, st)) = outcomes.iter().find(|(n, _)| *n == job.name_any()) {
                job.status = Some(st.clone());
            }
        }
        self.jobs.fill(jobs);
    }

    fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn get<K>(&self, name: &str) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>().get(name).await.unwrap()
    }

    async fn job_names(&self) -> Vec<String> {
        let jobs = self
            .api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap();
        let mut names: Vec<String> = jobs.items.iter().map(|j| j.name_any()).collect();
        names.sort();
        names
    }

    /// (type, reason, note) of the Events about `name`, oldest first.
    async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let events = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap();
        let mut about: Vec<&Event> = events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        about.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        about
            .iter()
            .map(|e| {
                (
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

fn succeeded() -> JobStatus {
    JobStatus {
        succeeded: Some(1),
        ..Default::default()
    }
}

fn failed(message: &str) -> JobStatus {
    JobStatus {
        failed: Some(4),
        conditions: Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("BackoffLimitExceeded".into()),
            message: Some(message.into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn running() -> JobStatus {
    JobStatus {
        active: Some(1),
        ..Default::default()
    }
}

const RESOURCES: &str = r#"
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: tapes}
spec: {backend: {pvc: {claimName: tapes}}, volumeCapacity: 64Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: vault}
spec: {backend: {pvc: {claimName: vault}}, volumeCapacity: 64Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: nightly}
spec:
  mediaClassName: tapes
  retention: 30d
  workItems: [{name: db, source: {pvc: {claimName: data}}}]
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: offsite}
spec: {mediaClassName: vault, retention: 7d}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: to-vault}
spec: {sourceTrails: [nightly], targets: [offsite]}
"#;

/// An entry as a worker records it: `age` old, on `trail`.
fn entry(
    trail: &str,
    role: Role,
    instance: &str,
    age: TimeDelta,
    keep: TimeDelta,
) -> CatalogEntrySpec {
    let backup_time = Utc::now() - age;
    CatalogEntrySpec {
        work_item: "db".into(),
        instance_id: instance.into(),
        backup_time,
        backup_trail: "nightly".into(),
        trail: trail.into(),
        role,
        copy_of: None,
        parent: None,
        extents: vec![Extent {
            volume: format!("{trail}-v1"),
            segment: 0,
            offset: 0,
            length: 4096,
        }],
        replaces: Vec::new(),
        bytes: 1000,
        file_bytes: Some(1000),
        notes: Vec::new(),
        digest: "sha256:00".into(),
        created_at: Utc::now(),
        expires_at: backup_time + keep,
    }
}

fn ready(conditions: &[mimeo::api::Condition]) -> (String, String, String) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn controllers_on_a_real_api_server() {
    let mut h = Harness::start(RESOURCES).await;
    backup_job_outcomes(&mut h).await;
    media_class_counts(&mut h).await;
    rescan_tokens(&mut h).await;
    policy_run_numbering(&mut h).await;
    damaged_copy_fallback(&mut h).await;
    expiry_side_effects(&mut h).await;
    error_policy_by_layer(&h).await;
    restore_behind_a_lagging_watch(&mut h).await;
    backlog_in_runs_that_fit(&mut h).await;
}

/// The error policy, for errors of each layer: the error's reason is the Event's reason; a
/// transient error is retried after a wait that doubles per failure in a row; an invalid spec
/// waits for a change; a permanent error is retried in 5 minutes.
async fn error_policy_by_layer(h: &Harness) {
    use kube::runtime::controller::Action;
    use mimeo::api::SpecError;
    use mimeo::engine::error::EngineError;
    use mimeo::media::error::MediaError;
    use std::time::Duration;

    let trail: Arc<BackupTrail> = Arc::new(h.get("nightly").await);
    let invalid = mimeo::Error::from(SpecError::Invalid {
        source_name: "test".into(),
        kind: "BackupTrail".into(),
        name: "nightly".into(),
        field: "spec.retention".into(),
        message: "not a duration".into(),
    });
    let throttled = || {
        mimeo::Error::from(MediaError::Store {
            store: "s3://b".into(),
            key: "v/1".into(),
            message: "SlowDown".into(),
            transient: true,
        })
    };
    let corrupt = mimeo::Error::from(EngineError::Media(MediaError::Corrupt {
        volume: "v-1".into(),
        offset: 4096,
        work_item: "fin".into(),
        detail: "bad CRC".into(),
    }));
    let policy = |e: &mimeo::Error| error_policy(trail.clone(), e, h.ctx.clone());
    assert_eq!(policy(&invalid), Action::await_change());
    assert_eq!(
        policy(&throttled()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        policy(&throttled()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(policy(&corrupt), Action::requeue(Duration::from_secs(300)));
    // The Events are published in the background.
    let want = ["InvalidSpec", "StoreError", "CorruptMedia"];
    for _ in 0..100 {
        let reasons: Vec<String> = h.events("nightly").await.into_iter().map(|e| e.1).collect();
        if want.iter().all(|w| reasons.iter().any(|r| r == w)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no Events {want:?} about nightly: {:?}",
        h.events("nightly").await
    );
}

/// A BackupTrail's Job is created once, followed while it runs, and its end recorded with
/// the notes its worker committed; a failed run is not started again by itself.
async fn backup_job_outcomes(h: &mut Harness) {
    h.sync(&[]).await;
    let trail: BackupTrail = h.get("nightly").await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let jobs = h.job_names().await;
    assert_eq!(jobs.len(), 1, "one backup Job: {jobs:?}");
    let job = jobs[0].clone();
    assert!(job.starts_with("mimeo-backup-nightly-1-"), "{job}");
    let task = h.get::<k8s_openapi::api::core::v1::ConfigMap>(&job).await;
    let task: serde_json::Value = serde_json::from_str(&task.data.unwrap()["task.json"]).unwrap();
    assert_eq!(task["type"], "Backup", "its task: {task}");
    let trail: BackupTrail = h.get("nightly").await;
    let st = trail.status.clone().unwrap();
    assert_eq!(ready(&st.conditions).1, "BackupRunning");
    assert!(
        h.events("nightly")
            .await
            .iter()
            .any(|e| e.1 == "BackupStarted"),
        "{:?}",
        h.events("nightly").await
    );

    // Running: followed, not started again.
    h.sync(&[(&job, running())]).await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(h.job_names().await, vec![job.clone()]);

    // The worker recorded an entry with a note, and its Job succeeded.
    let mut recorded = entry(
        "nightly",
        Role::Original,
        "db-1",
        TimeDelta::zero(),
        TimeDelta::days(30),
    );
    recorded.notes = vec!["a.txt changed while read".into()];
    publish_entries(&h.client, NS, &[recorded]).await.unwrap();
    h.sync(&[(&job, succeeded())]).await;
    let trail: BackupTrail = h.get("nightly").await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let trail: BackupTrail = h.get("nightly").await;
    let st = trail.status.clone().unwrap();
    let (ok, reason, msg) = ready(&st.conditions);
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("True", "BackupSucceeded"),
        "{msg}"
    );
    assert_eq!(st.last_run_notes, vec!["db: a.txt changed while read"]);
    assert_eq!(st.last_run_generation, trail.metadata.generation);
    assert_eq!(st.instances, 1, "counted from the catalog");
    let events = h.events("nightly").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "BackupSucceeded"),
        "a run with notes warns: {events:?}"
    );
    // Done: nothing new to start.
    h.sync(&[(&job, succeeded())]).await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(h.job_names().await, vec![job.clone()]);

    // A run-now token starts a second run; it fails for good and is not retried by itself.
    h.cp.kubectl(&[
        "-n",
        NS,
        "annotate",
        "backuptrail",
        "nightly",
        "mimeo.dev/run-now=t1",
    ]);
    h.sync(&[(&job, succeeded())]).await;
    let trail: BackupTrail = h.get("nightly").await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let jobs = h.job_names().await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let second = jobs.iter().find(|j| **j != job).unwrap().clone();
    let outcomes = [
        (job.as_str(), succeeded()),
        (second.as_str(), failed("disk full")),
    ];
    h.sync(&outcomes).await;
    let trail: BackupTrail = h.get("nightly").await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let trail: BackupTrail = h.get("nightly").await;
    let (ok, reason, msg) = ready(&trail.status.clone().unwrap().conditions);
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("False", "BackupFailed"),
        "{msg}"
    );
    assert!(msg.contains("disk full"), "{msg}");
    h.sync(&outcomes).await;
    reconcile_backup(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        h.job_names().await.len(),
        2,
        "a failed run waits for a new token"
    );
}

/// A new rescan token starts one rescan Job; its end is recorded once, and the same token
/// never starts another.
async fn rescan_tokens(h: &mut Harness) {
    h.cp.kubectl(&[
        "-n",
        NS,
        "annotate",
        "duplicationtrail",
        "offsite",
        "mimeo.dev/rescan=r1",
    ]);
    h.sync(&[]).await;
    let trail: DuplicationTrail = h.get("offsite").await;
    reconcile_duplication_trail(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let rescans: Vec<String> = h
        .job_names()
        .await
        .into_iter()
        .filter(|j| j.starts_with("mimeo-rescan-offsite-"))
        .collect();
    assert_eq!(rescans.len(), 1, "{rescans:?}");
    let trail: DuplicationTrail = h.get("offsite").await;
    assert_eq!(
        trail.status.as_ref().unwrap().last_rescan,
        None,
        "not done yet"
    );
    h.sync(&[(&rescans[0], succeeded())]).await;
    reconcile_duplication_trail(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let trail: DuplicationTrail = h.get("offsite").await;
    assert_eq!(
        trail.status.as_ref().unwrap().last_rescan.as_deref(),
        Some("r1")
    );
    assert!(h.events("offsite").await.iter().any(|e| e.1 == "Rescanned"));
    h.sync(&[(&rescans[0], succeeded())]).await;
    reconcile_duplication_trail(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let after: Vec<String> = h
        .job_names()
        .await
        .into_iter()
        .filter(|j| j.starts_with("mimeo-rescan-"))
        .collect();
    assert_eq!(after, rescans, "the same token rescans once");
}

/// A policy's runs are numbered: run 1's Jobs are named by it, its failure is recorded, and
/// the next run is number 2 with its own Jobs.
async fn policy_run_numbering(h: &mut Harness) {
    h.sync(&[]).await;
    let p: DuplicationPolicy = h.get("to-vault").await;
    reconcile_policy(Arc::new(p), h.ctx.clone()).await.unwrap();
    let p: DuplicationPolicy = h.get("to-vault").await;
    let st = p.status.clone().unwrap();
    assert_eq!(st.runs, 1);
    let last = st.last_run.clone().unwrap();
    assert_eq!((last.outcome.as_str(), last.instances), ("Running", 1));
    let run1 = run_name("copy", "to-vault", "1-0");
    assert!(
        h.job_names().await.contains(&run1),
        "{:?}",
        h.job_names().await
    );
    assert!(
        h.events("to-vault")
            .await
            .iter()
            .any(|e| e.1 == "RunStarted")
    );

    h.sync(&[(&run1, failed("vault unreachable"))]).await;
    reconcile_policy(Arc::new(p), h.ctx.clone()).await.unwrap();
    let p: DuplicationPolicy = h.get("to-vault").await;
    let st = p.status.clone().unwrap();
    let (ok, reason, _) = ready(&st.conditions);
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "RunFailed"));
    assert!(
        st.last_run
            .as_ref()
            .unwrap()
            .message
            .contains("vault unreachable")
    );
    assert!(
        h.events("to-vault")
            .await
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "RunFailed")
    );

    // Still uncopied: the next run is number 2.
    h.sync(&[(&run1, failed("vault unreachable"))]).await;
    reconcile_policy(Arc::new(p), h.ctx.clone()).await.unwrap();
    let p: DuplicationPolicy = h.get("to-vault").await;
    assert_eq!(p.status.as_ref().unwrap().runs, 2);
    let run2 = run_name("copy", "to-vault", "2-0");
    assert!(
        h.job_names().await.contains(&run2),
        "{:?}",
        h.job_names().await
    );
}

/// An entry past its retention is written Expired on the API server, and a Job frees the
/// volumes that hold no live entry; a live entry is left alone.
async fn expiry_side_effects(h: &mut Harness) {
    let old = entry(
        "offsite",
        Role::Duplicate,
        "db-old",
        TimeDelta::days(10),
        TimeDelta::days(7),
    );
    let young = entry(
        "offsite",
        Role::Duplicate,
        "db-young",
        TimeDelta::days(1),
        TimeDelta::days(7),
    );
    let young = CatalogEntrySpec {
        extents: vec![Extent {
            volume: "offsite-v2".into(),
            ..young.extents[0].clone()
        }],
        ..young
    };
    publish_entries(&h.client, NS, &[old.clone(), young.clone()])
        .await
        .unwrap();
    let jobs_before = h.job_names().await;
    h.sync(&[]).await;
    let trail: DuplicationTrail = h.get("offsite").await;
    reconcile_duplication_trail(Arc::new(trail), h.ctx.clone())
        .await
        .unwrap();
    let state = |e: &CatalogEntry| Catalog::state(e);
    let api = h.api::<CatalogEntry>();
    assert_eq!(
        state(&api.get(&old.object_name()).await.unwrap()),
        EntryState::Expired
    );
    assert_eq!(
        state(&api.get(&young.object_name()).await.unwrap()),
        EntryState::Valid
    );
    let new_jobs: Vec<String> = h
        .job_names()
        .await
        .into_iter()
        .filter(|j| !jobs_before.contains(j))
        .collect();
    assert_eq!(new_jobs.len(), 1, "{new_jobs:?}");
    assert!(
        new_jobs[0].starts_with("mimeo-expire-offsite-"),
        "{new_jobs:?}"
    );
    let task = h
        .get::<k8s_openapi::api::core::v1::ConfigMap>(&new_jobs[0])
        .await;
    let task: serde_json::Value = serde_json::from_str(&task.data.unwrap()["task.json"]).unwrap();
    assert_eq!(task["type"], "Scratch", "{task}");
    let keep = task["keep"].as_array().unwrap();
    assert!(
        keep.contains(&json!("offsite-v2")),
        "the live entry's volume: {task}"
    );
    assert!(
        !keep.contains(&json!("offsite-v1")),
        "the expired entry's volume: {task}"
    );
    assert!(h.events("offsite").await.iter().any(|e| e.1 == "Expired"));
}

/// A restore reads the duplicate first; its worker finds it damaged (marks it Missing, fails),
/// and the next Job reads the original; the damaged copy is listed in the status.
async fn damaged_copy_fallback(h: &mut Harness) {
    let mut copy = entry(
        "offsite",
        Role::Duplicate,
        "db-1",
        TimeDelta::zero(),
        TimeDelta::days(7),
    );
    copy.extents[0].volume = "offsite-v3".into();
    copy.copy_of = Some("nightly.db-1".into());
    publish_entries(&h.client, NS, std::slice::from_ref(&copy))
        .await
        .unwrap();
    let yaml = r#"
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: back}
spec: {workItem: db, backupTrail: nightly, instance: db-1, target: {pvc: {claimName: restored, path: out}}}
"#;
    apply(&h.cp, "restore.yaml", yaml);
    h.sync(&[]).await;
    let r: Restore = h.get("back").await;
    reconcile_restore(Arc::new(r), h.ctx.clone()).await.unwrap();
    let r: Restore = h.get("back").await;
    let st = r.status.clone().unwrap();
    assert_eq!(st.phase, RestorePhase::Running);
    assert_eq!(
        st.restored_from.as_ref().unwrap().role,
        Role::Duplicate,
        "{st:?}"
    );
    let first = run_name("restore", "back", "1");
    assert!(
        h.job_names().await.contains(&first),
        "{:?}",
        h.job_names().await
    );

    // The worker: the duplicate is damaged, marked Missing; its Job fails for good.
    let why = "corrupt media: volume offsite-v3, offset 4096, work item db: CRC mismatch";
    mark_missing(&h.client, NS, &[copy.object_name()], why)
        .await
        .unwrap();
    h.sync(&[(&first, failed("exit code 3"))]).await;
    reconcile_restore(Arc::new(r), h.ctx.clone()).await.unwrap();
    let r: Restore = h.get("back").await;
    let st = r.status.clone().unwrap();
    assert_eq!(st.phase, RestorePhase::Running, "{st:?}");
    assert_eq!(st.damaged.len(), 1, "{st:?}");
    assert!(st.damaged[0].contains("offset 4096"), "{st:?}");
    assert_eq!(
        st.restored_from.as_ref().unwrap().role,
        Role::Original,
        "{st:?}"
    );
    let second = run_name("restore", "back", "1-1");
    assert!(
        h.job_names().await.contains(&second),
        "{:?}",
        h.job_names().await
    );
    assert!(
        h.events("back")
            .await
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "CopyDamaged")
    );

    let outcomes = [
        (first.as_str(), failed("exit code 3")),
        (second.as_str(), succeeded()),
    ];
    h.sync(&outcomes).await;
    reconcile_restore(Arc::new(r), h.ctx.clone()).await.unwrap();
    let r: Restore = h.get("back").await;
    let st = r.status.clone().unwrap();
    assert_eq!(st.phase, RestorePhase::Succeeded, "{st:?}");
    assert_eq!(st.damaged.len(), 1, "still listed: {st:?}");
    assert!(h.events("back").await.iter().any(|e| e.1 == "Restored"));
}

/// A restore of an instance the catalog watch has not seen yet (it lags behind the API server
/// after an outage) is not failed for want of a copy: the reconciler asks the API server and
/// starts the run. An instance the API server lacks too still fails.
async fn restore_behind_a_lagging_watch(h: &mut Harness) {
    h.sync(&[]).await;
    let late = entry(
        "nightly",
        Role::Original,
        "db-late",
        TimeDelta::zero(),
        TimeDelta::days(30),
    );
    publish_entries(&h.client, NS, std::slice::from_ref(&late))
        .await
        .unwrap();
    assert!(
        !h.ctx
            .catalog(NS)
            .entries()
            .contains_key(&late.object_name()),
        "the watch has not seen it"
    );
    let yaml = r#"
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: late}
spec: {workItem: db, backupTrail: nightly, instance: db-late, target: {pvc: {claimName: restored, path: late}}}
---
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: never}
spec: {workItem: db, backupTrail: nightly, instance: db-never, target: {pvc: {claimName: restored, path: never}}}
"#;
    apply(&h.cp, "restore-late.yaml", yaml);
    for name in ["late", "never"] {
        let r: Restore = h.get(name).await;
        reconcile_restore(Arc::new(r), h.ctx.clone()).await.unwrap();
    }
    let st = h.get::<Restore>("late").await.status.unwrap();
    assert_eq!(st.phase, RestorePhase::Running, "{st:?}");
    assert_eq!(st.restored_from.as_ref().unwrap().instance_id, "db-late");
    assert!(
        h.job_names()
            .await
            .contains(&run_name("restore", "late", "1"))
    );
    let st = h.get::<Restore>("never").await.status.unwrap();
    assert_eq!(st.phase, RestorePhase::Failed, "{st:?}");
    assert_eq!(ready(&st.conditions).1, "NoCopyAvailable");
}

/// A policy over a backlog of interleaved originals (257 extents each) copies, run after run,
/// as many as a worker's task ConfigMap holds: each run's task fits, its status says how many
/// it left, and once it succeeds the next run takes the rest at once.
async fn backlog_in_runs_that_fit(h: &mut Harness) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use mimeo::engine::task::Task;
    let yaml = r#"
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: archive}
spec: {mediaClassName: vault, retention: 7d}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: to-archive}
spec: {sourceTrails: [nightly], targets: [archive], schedule: "0 3 * * *"}
"#;
    apply(&h.cp, "backlog.yaml", yaml);
    let backlog: Vec<CatalogEntrySpec> = (0..80)
        .map(|i| {
            let mut e = entry(
                "nightly",
                Role::Original,
                &format!("db-backlog-{i:03}"),
                TimeDelta::hours(1),
                TimeDelta::days(30),
            );
            e.extents = (0..257)
                .map(|x| Extent {
                    volume: format!("nightly-v{:02}", x / 64),
                    segment: 0,
                    offset: x * 1_048_632,
                    length: 1_048_632,
                })
                .collect();
            e
        })
        .collect();
    publish_entries(&h.client, NS, &backlog).await.unwrap();
    // Run-now: the schedule's first occurrence is hours away.
    h.cp.kubectl(&[
        "-n",
        NS,
        "annotate",
        "duplicationpolicy",
        "to-archive",
        "mimeo.dev/run-now=1",
    ]);
    let mut copied = 0u64;
    for run in 1.. {
        h.sync(&[]).await;
        let p: DuplicationPolicy = h.get("to-archive").await;
        reconcile_policy(Arc::new(p), h.ctx.clone()).await.unwrap();
        let p: DuplicationPolicy = h.get("to-archive").await;
        let last = p.status.clone().unwrap().last_run.unwrap();
        assert_eq!(p.status.as_ref().unwrap().runs, run);
        assert_eq!(last.outcome, "Running", "{last:?}");
        // The worker: its task, as the ConfigMap carries it, copies the run's instances.
        let job = run_name("copy", "to-archive", &format!("{run}-0"));
        let cm: ConfigMap = h.get(&job).await;
        let body = &cm.data.unwrap()["task.json"];
        assert!(
            body.len() < 1 << 20,
            "run {run}: a {} byte task",
            body.len()
        );
        let Task::Copy(task) = serde_json::from_str(body).unwrap() else {
            panic!("a copy task")
        };
        assert_eq!(task.items.len() as u64, last.instances);
        let copies: Vec<CatalogEntrySpec> = task
            .items
            .iter()
            .map(|i| {
                let mut c = i.source.clone();
                c.trail = "archive".into();
                c.role = Role::Duplicate;
                c.copy_of = Some(i.source.object_name());
                c.extents.truncate(1);
                c
            })
            .collect();
        publish_entries(&h.client, NS, &copies).await.unwrap();
        copied += last.instances;
        h.sync(&[(&job, succeeded())]).await;
        let p: DuplicationPolicy = h.get("to-archive").await;
        reconcile_policy(Arc::new(p), h.ctx.clone()).await.unwrap();
        let p: DuplicationPolicy = h.get("to-archive").await;
        let last = p.status.clone().unwrap().last_run.unwrap();
        assert_eq!(last.outcome, "Succeeded");
        if last.left == 0 {
            assert!(run > 1, "80 interleaved instances do not fit one task");
            break;
        }
        assert!(
            h.events("to-archive")
                .await
                .iter()
                .any(|e| e.2.contains(&format!("{} more in the next run", last.left))),
            "the run says what it left"
        );
    }
    let valid_originals = h
        .ctx
        .catalog(NS)
        .entries()
        .values()
        .filter(|e| e.spec.trail == "nightly" && Catalog::state(e) == EntryState::Valid)
        .count() as u64;
    assert_eq!(copied, valid_originals, "every original copied once");
}

/// A MediaClass on a claim that does not exist is unreachable, says why and warns; its counts
/// come from the catalog (the backup's entry on it).
async fn media_class_counts(h: &mut Harness) {
    h.sync(&[]).await;
    let mc: MediaClass = h.get("tapes").await;
    reconcile_media_class(Arc::new(mc), h.ctx.clone())
        .await
        .unwrap();
    let mc: MediaClass = h.get("tapes").await;
    let st = mc.status.unwrap();
    assert_eq!(
        (st.reachable, st.bytes, st.volumes),
        (Some(false), 1000, 1),
        "{st:?}"
    );
    let (ok, reason, msg) = ready(&st.conditions);
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "Unreachable"));
    assert!(
        msg.contains("PersistentVolumeClaim \"tapes\" not found"),
        "{msg}"
    );
    assert!(
        h.events("tapes")
            .await
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "Unreachable")
    );
}
