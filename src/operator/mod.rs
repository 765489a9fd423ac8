//! The Kubernetes operator: controllers that plan runs and start worker Jobs; the worker
//! itself is the same executor the local mode runs in-process.

pub mod api_retry;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod context;
pub mod controllers;
pub mod expiry;
pub mod jobs;
pub mod lease;
pub mod metrics;
pub mod retries;
mod server;
pub mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::error::{Error, Result};
use context::{Context, Stores};
use jobs::WorkerConfig;

/// Operator settings (command-line flags).
#[derive(Clone, Debug)]
pub struct OperatorArgs {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: SocketAddr,
    /// Watch these namespaces only (all when empty).
    pub namespaces: Vec<String>,
    /// Worker defaults.
    pub worker: WorkerConfig,
    /// The Lease that makes this the one active operator (none out of cluster).
    pub lease: Option<lease::LeaseConfig>,
    /// How long Expired catalog entries stay before they are deleted.
    pub expired_entry_retention: std::time::Duration,
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(n) => Api::namespaced(client.clone(), n),
        None => Api::all(client.clone()),
    }
}

/// Watches `K` once in a scope: a store that reconciles read, and a handle that every
/// controller using `K` subscribes to (clone it per consumer), so each kind is listed and
/// watched once however many controllers react to it. The returned future drives the watch.
/// With `tracked`, the watch counts the changes the snapshots are built from
/// ([`snapshot`]): whether an event matters is judged against the version the store held
/// before it, and it is counted twice: before the store takes it (so a snapshot built earlier
/// is not read while the event is handed to the controllers) and once the store holds it (so a
/// snapshot built in between, from the old store, is not kept).
/// `slim` drops what no reconcile reads from the stored copies.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    tracked: Option<Tracked<K>>,
    slim: fn(&mut K),
) -> (
    Store<K>,
    ReflectHandle<K>,
    impl std::future::Future<Output = ()>,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store_shared(SHARED_BUFFER);
    let handle = writer.subscribe().expect("a shared store has subscribers");
    let events = watcher(api, config.page_size(500))
        .default_backoff()
        // Nothing reads managedFields: with 50,000 CatalogEntries they were a third of the
        // operator's memory.
        .modify(move |o| {
            o.managed_fields_mut().clear();
            slim(o);
        });
    let stream =
        counted(events, store.clone(), writer, tracked).for_each(|_| futures::future::ready(()));
    (store, handle, stream)
}

/// The store's writer taking `events`, with the changes that matter to `tracked` counted twice
/// (see [`reflect`]): before `writer` takes each, judged against what `store` (its store) held,
/// and again once the event has been handed to every subscriber and passed on.
fn counted<K, S>(
    events: S,
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    tracked: Option<Tracked<K>>,
) -> impl futures::Stream<Item = S::Item>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>>,
{
    let pending = Arc::new(AtomicBool::new(false));
    let seen = pending.clone();
    let changes = tracked.as_ref().map(|t| t.0.clone());
    events
        .inspect_ok(move |event| {
            if let Some((changes, matters)) = &tracked {
                let changed = match event {
                    watcher::Event::Apply(o) => store
                        .get(&ObjectRef::from_obj(o))
                        .is_none_or(|old| matters(&old, o)),
                    watcher::Event::Delete(_) | watcher::Event::InitDone => true,
                    watcher::Event::Init | watcher::Event::InitApply(_) => false,
                };
                // Counted before the store takes it too: the shared store hands the event to
                // every controller before it passes it on, which can wait for a slow one, and
                // a snapshot read meanwhile must not be the one from before the event.
                if changed {
                    changes.bump();
                }
                seen.store(changed, Ordering::Release);
            }
        })
        .reflect_shared(writer)
        .inspect_ok(move |_| {
            if pending.swap(false, Ordering::AcqRel)
                && let Some(c) = &changes
            {
                c.bump();
            }
        })
}

/// Keeps a stored copy whole (but for its managedFields).
fn whole<K>(_: &mut K) {}

/// A stored CatalogEntry without its labels and annotations: reconciles read its spec and
/// status; labels select entries on the API server (a worker's, a fresh list), never in the
/// store, and each entry carries four of them.
fn entry_slim(e: &mut CatalogEntry) {
    e.metadata.labels = None;
    e.metadata.annotations = None;
}

/// A watch's change counter, and which changes of `K` it counts.
type Tracked<K> = (snapshot::Changes, fn(&K, &K) -> bool);

/// Counting the spec changes of `K` (a resource the planner reads) on `changes`.
fn specs_of<K: Resource>(changes: &snapshot::Changes) -> Option<Tracked<K>> {
    Some((changes.clone(), snapshot::spec_changed::<K>))
}

/// Events buffered per subscriber of a shared watch before the watch waits for it.
const SHARED_BUFFER: usize = 1024;

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Operator(format!("Kubernetes client configuration: {e}")))?;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    // Injected faults stand for the API server's: the retries sit above them.
    #[cfg(feature = "chaos")]
    let client = match chaos::ApiFaults::from_env()? {
        Some(faults) => builder
            .with_layer(&faults)
            .with_layer(&api_retry::layer())
            .build(),
        None => builder.with_layer(&api_retry::layer()).build(),
    };
    #[cfg(not(feature = "chaos"))]
    let client = {
        // A chaos run against a build without the injector must not pass for want of faults.
        if std::env::var_os("MIMEO_API_FAULTS").is_some_and(|v| !v.is_empty()) {
            return Err(Error::Operator(
                "MIMEO_API_FAULTS is set, but this build has no fault injection (cargo feature chaos)".into(),
            ));
        }
        builder.with_layer(&api_retry::layer()).build()
    };
    let metrics = Arc::new(metrics::Metrics::default());
    // One set of watches and controllers per watched namespace (or one over all namespaces):
    // a namespaced Role then suffices when the operator is limited to some namespaces.
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    // The watches start when the controllers run (after the Lease is taken); building them
    // first gives the metrics endpoint the catalog stores to count.
    let (scopes, catalogs): (Vec<_>, Vec<_>) = scopes
        .into_iter()
        .map(|ns| {
            let (synced, run, catalog) = run_scope(&client, ns, &args, &metrics);
            ((synced, run), catalog)
        })
        .unzip();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let counted = metrics.clone();
    let server = server::serve(
        args.metrics_addr,
        metrics.clone(),
        move || {
            // Catalog gauges are counted from the watched state at each scrape.
            let entries = catalogs.iter().flat_map(|c| c.state());
            counted.set_catalog(entries.map(|e| crate::engine::catalog::Catalog::state(&e)));
        },
        ready.clone(),
        async move {
            let _ = stop_rx.changed().await;
        },
    );
    // Serve /healthz while waiting for the Lease; /readyz turns ready once the watches synced.
    let active = async {
        if let Some(l) = &args.lease {
            tokio::select! {
                r = lease::acquire(&client, l) => r?,
                _ = shutdown_signal() => return Ok(()),
            }
        }
        let (synced, controllers): (Vec<_>, Vec<_>) = scopes.into_iter().unzip();
        let readiness = async {
            if futures::future::join_all(synced)
                .await
                .into_iter()
                .all(|ok| ok)
            {
                ready.store(true, Ordering::Relaxed);
                tracing::info!("watches synced: ready");
            }
        };
        let keep_lease = async {
            match &args.lease {
                Some(l) => lease::keep(&client, l).await,
                None => futures::future::pending().await,
            }
        };
        let result = tokio::select! {
            _ = futures::future::join_all(controllers) => Ok(()),
            r = keep_lease => r,
            _ = readiness_forever(readiness) => Ok(()),
        };
        if let Some(l) = &args.lease {
            lease::release(&client, l).await;
        }
        result
    };
    let result = tokio::select! {
        r = active => r,
        r = server => r,
    };
    let _ = stop_tx.send(true);
    tracing::info!("operator stopped");
    result
}

/// Resolves on SIGTERM or SIGINT (the controllers stop on those by themselves).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

type Boxed<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Maps a change of a referenced object to the objects in `store` that refer to it (same
/// namespace, `refers(referrer, name)`), so a resource applied before what it references is
/// reconciled again when that appears, instead of waiting for its own next change.
fn referrers<R, K>(
    store: Store<K>,
    refers: fn(&K, &str) -> bool,
) -> impl Fn(Arc<R>) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    R: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    move |changed: Arc<R>| {
        let ns = changed.namespace();
        let name = changed.name_any();
        store
            .state()
            .into_iter()
            .filter(|k| k.namespace() == ns && refers(k, &name))
            .map(|k| ObjectRef::from_obj(k.as_ref()))
            .collect()
    }
}

/// The trail an entry is on: its status (instances, bytes, volumes) and its next expiry
/// change with the entry.
fn trail_of_entry<K>(e: Arc<CatalogEntry>) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let ns = e.namespace()?;
    Some(ObjectRef::new(&e.spec.trail).within(&ns))
}

/// Reconciles of one kind run at most this many at a time: a start with 1,000 policies plans
/// them a few at a time instead of holding 1,000 plans in memory at once.
const RECONCILE_CONCURRENCY: u16 = 4;

fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .concurrency(RECONCILE_CONCURRENCY)
        // Bursts of events (a worker writing many entries) collapse into one reconcile.
        .debounce(std::time::Duration::from_millis(500))
}

/// The watches and controllers of one scope (a namespace, or all when `None`). Returns a
/// future that resolves to whether every store synced, the future that runs the scope until
/// shutdown, and the scope's catalog store.
fn run_scope(
    client: &Client,
    ns: Option<String>,
    args: &OperatorArgs,
    metrics: &Arc<metrics::Metrics>,
) -> (Boxed<bool>, Boxed<()>, Store<CatalogEntry>) {
    let all = watcher::Config::default;
    let views = context::Views::default();
    let specs = views.sets.changes();
    let (media_classes, mc, f1) = reflect(api(client, &ns), all(), specs_of(specs), whole);
    let (backup_trails, bt, f2) = reflect(api(client, &ns), all(), specs_of(specs), whole);
    let (duplication_trails, dt, f3) = reflect(api(client, &ns), all(), specs_of(specs), whole);
    let (policies, dp, f4) = reflect(api(client, &ns), all(), specs_of(specs), whole);
    let entries: Tracked<CatalogEntry> = (views.catalogs.changes().clone(), snapshot::any_change);
    let (catalog, ce, f5) = reflect(api(client, &ns), all(), Some(entries), entry_slim);
    let (restores, rs, f6) = reflect(api::<Restore>(client, &ns), all(), None, whole);
    // Only the Jobs Mimeo created.
    let (jobs, jb, f7) = reflect(
        api::<Job>(client, &ns),
        all().labels("app.kubernetes.io/managed-by=mimeo-operator"),
        None,
        whole,
    );
    let stores = Stores {
        media_classes,
        backup_trails,
        duplication_trails,
        policies,
        catalog,
        jobs,
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: stores.clone(),
        worker: args.worker.clone(),
        metrics: metrics.clone(),
        expired_entry_retention: args.expired_entry_retention,
        synced: Arc::new(AtomicBool::new(false)),
        retries: Default::default(),
        snapshots: views,
    });
    let restore_store = restores.clone();
    let catalog_store = stores.catalog.clone();
    let synced_flag = ctx.synced.clone();
    let synced = async move {
        let r = tokio::join!(
            stores.media_classes.wait_until_ready(),
            stores.backup_trails.wait_until_ready(),
            stores.duplication_trails.wait_until_ready(),
            stores.policies.wait_until_ready(),
            stores.catalog.wait_until_ready(),
            stores.jobs.wait_until_ready(),
            restore_store.wait_until_ready(),
        );
        let ok = r.0.is_ok()
            && r.1.is_ok()
            && r.2.is_ok()
            && r.3.is_ok()
            && r.4.is_ok()
            && r.5.is_ok()
            && r.6.is_ok();
        synced_flag.store(ok, Ordering::Release);
        ok
    };
    let waiting = restores.clone();
    let restores = Controller::for_shared_stream(rs, restores)
        .with_config(controller_config())
        .owns_shared_stream(jb.clone())
        // A new copy wakes the Pending restores of its work item (waiting for a first backup).
        .watches_shared_stream(ce.clone(), move |e: Arc<CatalogEntry>| {
            let ns = e.namespace();
            waiting
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.work_item == e.spec.work_item)
                .filter(|r| {
                    r.status
                        .as_ref()
                        .is_none_or(|s| s.phase == RestorePhase::Pending)
                })
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            after_sync(controllers::reconcile_restore),
            controllers::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let reads = |p: &DuplicationPolicy, trail: &str| {
        p.spec
            .source_trails
            .iter()
            .chain(&p.spec.targets)
            .any(|t| t == trail)
    };
    let policy_store = ctx.stores.policies.clone();
    // A little before now: an entry created while the watches start is not missed.
    let started =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let policies = Controller::for_shared_stream(dp, ctx.stores.policies.clone())
        .with_config(controller_config())
        .owns_shared_stream(jb.clone())
        .watches_shared_stream(ce.clone(), move |e: Arc<CatalogEntry>| {
            // A new copy on a trail may be work for every policy reading that trail. Entries
            // that existed before this operator started are covered by the reconcile every
            // policy gets at start: mapping each of 50,000 listed entries to every policy would
            // only produce millions of duplicate triggers.
            if e.metadata.creation_timestamp.as_ref().map(|t| t.0) < Some(started) {
                return Vec::new();
            }
            let ns = e.namespace();
            policy_store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && p.spec.source_trails.contains(&e.spec.trail))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(bt.clone(), referrers(ctx.stores.policies.clone(), reads))
        .watches_shared_stream(dt.clone(), referrers(ctx.stores.policies.clone(), reads))
        .shutdown_on_signal()
        .run(
            after_sync(controllers::reconcile_policy),
            controllers::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let backups = Controller::for_shared_stream(bt, ctx.stores.backup_trails.clone())
        .with_config(controller_config())
        .owns_shared_stream(jb.clone())
        .watches_shared_stream(
            mc.clone(),
            referrers(ctx.stores.backup_trails.clone(), |t: &BackupTrail, mc| {
                t.spec.media_class_name == mc
            }),
        )
        .watches_shared_stream(ce.clone(), trail_of_entry)
        .shutdown_on_signal()
        .run(
            after_sync(controllers::reconcile_backup),
            controllers::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let dup_trails = Controller::for_shared_stream(dt, ctx.stores.duplication_trails.clone())
        .with_config(controller_config())
        .owns_shared_stream(jb)
        .watches_shared_stream(
            mc.clone(),
            referrers(
                ctx.stores.duplication_trails.clone(),
                |t: &DuplicationTrail, mc| t.spec.media_class_name == mc,
            ),
        )
        .watches_shared_stream(ce, trail_of_entry)
        .shutdown_on_signal()
        .run(
            after_sync(controllers::reconcile_duplication_trail),
            controllers::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let media_classes = Controller::for_shared_stream(mc, ctx.stores.media_classes.clone())
        .with_config(controller_config())
        .shutdown_on_signal()
        .run(
            after_sync(controllers::reconcile_media_class),
            controllers::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    let run = async move {
        // The controllers end on shutdown; the watches never do on their own.
        tokio::select! {
            _ = async { tokio::join!(restores, policies, backups, dup_trails, media_classes) } => {}
            _ = async { tokio::join!(f1, f2, f3, f4, f5, f6, f7) } => {}
        }
    };
    (Box::pin(synced), Box::pin(run), catalog_store)
}

/// Wraps a reconciler so it waits until every store has listed its objects: before that it
/// would decide on a partial view (a Restore finding no copy, a policy copying what is
/// already copied), so it comes back in a second instead. The controllers themselves must
/// run meanwhile: they drain the shared watch streams the stores are filled from. A success
/// clears the object's failures in a row, so its next transient error backs off from the start.
fn after_sync<K, F, Fut>(
    reconcile: F,
) -> impl Fn(Arc<K>, Arc<Context>) -> Boxed<Result<kube::runtime::controller::Action>>
where
    K: kube::Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<kube::runtime::controller::Action>> + Send + 'static,
{
    move |obj, ctx| {
        Box::pin(async move {
            if !ctx.synced.load(Ordering::Acquire) {
                return Ok(kube::runtime::controller::Action::requeue(
                    Duration::from_secs(1),
                ));
            }
            let key = retries::key(obj.as_ref());
            let action = reconcile(obj, ctx.clone()).await?;
            ctx.retries.succeeded(&key);
            Ok(action)
        })
    }
}

async fn readiness_forever(f: impl std::future::Future<Output = ()>) {
    f.await;
    futures::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    fn policy(generation: i64, status: bool) -> DuplicationPolicy {
        let mut p: DuplicationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "mimeo.dev/v1alpha1", "kind": "DuplicationPolicy",
            "metadata": {"name": "p", "namespace": "ns", "generation": generation},
            "spec": {"sourceTrails": ["a"], "targets": ["b"]},
        }))
        .unwrap();
        if status {
            p.status = Some(Default::default());
        }
        p
    }

    /// A change is counted before the store's subscribers are handed it (one of them may be
    /// slow, and a reconcile it wakes must not read a view from before the change) and again
    /// after; a status change is not counted at all.
    #[tokio::test]
    async fn a_change_is_counted_before_the_hand_off_and_after() {
        use watcher::Event::*;
        let changes = snapshot::Changes::default();
        // One event's room: the subscriber below reads only when the test says so.
        let (store, writer) = reflector::store_shared(1);
        let mut subscriber = pin!(writer.subscribe().unwrap());
        let events = futures::stream::iter(
            [
                Init,
                InitApply(policy(1, false)),
                InitDone,
                Apply(policy(1, true)),
                Apply(policy(2, true)),
            ]
            .map(Ok),
        );
        let tracked = specs_of::<DuplicationPolicy>(&changes);
        let mut stream = pin!(counted(events, store.clone(), writer, tracked));
        let mut next = async || {
            tokio::time::timeout(Duration::from_millis(200), stream.next())
                .await
                .map(|e| e.map(|e| e.unwrap()))
        };
        assert!(matches!(next().await, Ok(Some(Init))));
        assert!(matches!(next().await, Ok(Some(InitApply(_)))));
        assert_eq!(
            changes.count(),
            0,
            "the list is not read until it is complete"
        );
        assert!(matches!(next().await, Ok(Some(InitDone))));
        assert_eq!(changes.count(), 2, "the listed store: before and after");
        // The status change is handed to the subscriber after the listed object, which fills
        // its room: the watch waits for it, and nothing was counted.
        assert!(next().await.is_err(), "the hand-off waits");
        assert_eq!(changes.count(), 2, "a status change is not a change");
        assert!(subscriber.next().await.is_some());
        assert!(matches!(next().await, Ok(Some(Apply(_)))));
        assert_eq!(changes.count(), 2);
        // The spec change waits behind the status change's hand-off: it is counted already.
        assert!(next().await.is_err(), "the hand-off waits");
        assert_eq!(store.state()[0].metadata.generation, Some(2));
        assert_eq!(changes.count(), 3, "counted before the hand-off");
        assert!(subscriber.next().await.is_some());
        assert!(matches!(next().await, Ok(Some(Apply(_)))));
        assert_eq!(changes.count(), 4, "and after");
    }
}
