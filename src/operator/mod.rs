//! The Kubernetes operator: controllers that plan runs and start worker Jobs; the worker
//! itself is the same executor the local mode runs in-process.

pub mod context;
pub mod controllers;
pub mod jobs;
pub mod metrics;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
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
    /// Watch one namespace only (all when `None`).
    pub namespace: Option<String>,
    /// Worker defaults.
    pub worker: WorkerConfig,
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

/// Starts a reflector for `K`; the returned future drives it.
fn reflect<K>(api: Api<K>) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().page_size(500)),
    )
    .applied_objects()
    .for_each(|_| futures::future::ready(()));
    (store, stream)
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let ns = args.namespace.clone();
    let (media_classes, f1) = reflect(api::<MediaClass>(&client, &ns));
    let (backup_trails, f2) = reflect(api::<BackupTrail>(&client, &ns));
    let (duplication_trails, f3) = reflect(api::<DuplicationTrail>(&client, &ns));
    let (policies, f4) = reflect(api::<DuplicationPolicy>(&client, &ns));
    let (catalog, f5) = reflect(api::<CatalogEntry>(&client, &ns));
    let (jobs, f6) = reflect(api::<Job>(&client, &ns));
    let stores = Stores {
        media_classes,
        backup_trails,
        duplication_trails,
        policies,
        catalog,
        jobs,
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: stores.clone(),
        worker: args.worker.clone(),
        metrics: metrics.clone(),
    });
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_server = stop_rx.clone();
    let server = server::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
        async move {
            let _ = stop_server.changed().await;
        },
    );
    let readiness = {
        let stores = stores.clone();
        let ready = ready.clone();
        async move {
            let waits = (
                stores.media_classes.wait_until_ready(),
                stores.backup_trails.wait_until_ready(),
                stores.duplication_trails.wait_until_ready(),
                stores.policies.wait_until_ready(),
                stores.catalog.wait_until_ready(),
                stores.jobs.wait_until_ready(),
            );
            let r = tokio::join!(waits.0, waits.1, waits.2, waits.3, waits.4, waits.5);
            if r.0.is_ok()
                && r.1.is_ok()
                && r.2.is_ok()
                && r.3.is_ok()
                && r.4.is_ok()
                && r.5.is_ok()
            {
                ready.store(true, Ordering::Relaxed);
                tracing::info!("watches synced: ready");
            }
        }
    };
    let jobs_cfg =
        || watcher::Config::default().labels("app.kubernetes.io/managed-by=mimeo-operator");
    let restores = Controller::new(api::<Restore>(&client, &ns), watcher::Config::default())
        .owns(api::<Job>(&client, &ns), jobs_cfg())
        .shutdown_on_signal()
        .run(
            controllers::reconcile_restore,
            controllers::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let policy_store = stores.policies.clone();
    let policies = Controller::new(
        api::<DuplicationPolicy>(&client, &ns),
        watcher::Config::default(),
    )
    .owns(api::<Job>(&client, &ns), jobs_cfg())
    .watches(
        api::<CatalogEntry>(&client, &ns),
        watcher::Config::default(),
        move |e: CatalogEntry| {
            // A new copy on a trail may be work for every policy reading that trail.
            let ns = e.namespace();
            policy_store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && p.spec.source_trails.contains(&e.spec.trail))
                .map(|p| kube::runtime::reflector::ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        },
    )
    .shutdown_on_signal()
    .run(
        controllers::reconcile_policy,
        controllers::error_policy,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));
    let backups = Controller::new(api::<BackupTrail>(&client, &ns), watcher::Config::default())
        .owns(api::<Job>(&client, &ns), jobs_cfg())
        .shutdown_on_signal()
        .run(
            controllers::reconcile_backup,
            controllers::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let dup_trails = Controller::new(
        api::<DuplicationTrail>(&client, &ns),
        watcher::Config::default(),
    )
    .owns(api::<Job>(&client, &ns), jobs_cfg())
    .shutdown_on_signal()
    .run(
        controllers::reconcile_duplication_trail,
        controllers::error_policy,
        ctx.clone(),
    )
    .for_each(|_| futures::future::ready(()));
    let media_classes =
        Controller::new(api::<MediaClass>(&client, &ns), watcher::Config::default())
            .shutdown_on_signal()
            .run(
                controllers::reconcile_media_class,
                controllers::error_policy,
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
    let reflectors = async {
        tokio::join!(f1, f2, f3, f4, f5, f6);
    };
    tokio::select! {
        _ = async { tokio::join!(restores, policies, backups, dup_trails, media_classes) } => {}
        _ = reflectors => {}
        r = server => r?,
        _ = readiness_forever(readiness) => {}
    }
    let _ = stop_tx.send(true);
    tracing::info!("operator stopped");
    Ok(())
}

async fn readiness_forever(f: impl std::future::Future<Output = ()>) {
    f.await;
    futures::future::pending::<()>().await
}

/// Writes the catalog entries a worker committed as CatalogEntry objects (server-side apply,
/// so a retried worker converges on the same objects), each Valid.
pub async fn publish_entries(namespace: &str, entries: &[CatalogEntrySpec]) -> Result<()> {
    let client = Client::try_default().await?;
    let api: Api<CatalogEntry> = Api::namespaced(client, namespace);
    let pp = PatchParams::apply("mimeo-worker").force();
    let mut catalog = crate::engine::catalog::Catalog::default();
    for spec in entries {
        catalog.import(spec.clone());
        let name = spec.object_name();
        let mut obj = catalog.entries[&name].clone();
        obj.metadata.namespace = Some(namespace.into());
        let status = obj.status.take();
        let mut body = serde_json::to_value(&obj).map_err(|e| Error::Other(e.to_string()))?;
        body["apiVersion"] = API_VERSION.into();
        body["kind"] = "CatalogEntry".into();
        api.patch(&name, &pp, &Patch::Apply(&body)).await?;
        let status = serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CatalogEntry", "status": status,
        });
        api.patch_status(&name, &pp, &Patch::Apply(&status)).await?;
        tracing::info!(entry = %obj.name_any(), "catalog entry written");
    }
    Ok(())
}
