//! What every controller shares: the client, reflector stores of all Mimeo kinds (so a
//! reconcile reads memory, never relists), worker settings and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use super::jobs::WorkerConfig;
use super::metrics::Metrics;
use super::snapshot::Snapshots;
use crate::api::*;
use crate::engine::catalog::Catalog;
use crate::engine::task::MediaSpec;

/// Stores kept in sync by watches.
#[derive(Clone)]
pub struct Stores {
    /// MediaClasses.
    pub media_classes: Store<MediaClass>,
    /// BackupTrails.
    pub backup_trails: Store<BackupTrail>,
    /// DuplicationTrails.
    pub duplication_trails: Store<DuplicationTrail>,
    /// DuplicationPolicies.
    pub policies: Store<DuplicationPolicy>,
    /// CatalogEntries.
    pub catalog: Store<CatalogEntry>,
    /// Worker Jobs.
    pub jobs: Store<Job>,
}

/// Shared state of the controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Watched state.
    pub stores: Stores,
    /// Worker defaults.
    pub worker: WorkerConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How long Expired catalog entries stay before they are deleted.
    pub expired_entry_retention: std::time::Duration,
    /// Set once every store has listed its objects. Until then a reconcile would decide on a
    /// partial view (a Restore finding no copy, a policy copying what is already copied), so
    /// reconciles wait for it.
    pub synced: Arc<std::sync::atomic::AtomicBool>,
    /// Failures in a row per object, which the error policy backs off by.
    pub retries: super::retries::Retries,
    /// What reconciles share of each namespace (see [`super::snapshot`]).
    pub snapshots: Views,
}

/// The shared views of each namespace.
#[derive(Default)]
pub struct Views {
    /// Resources, rebuilt after a spec of a MediaClass, trail or policy changed.
    pub sets: Snapshots<ResourceSet>,
    /// Catalogs, rebuilt after a CatalogEntry changed.
    pub catalogs: Snapshots<Catalog>,
}

fn in_ns<K>(store: &Store<K>, ns: &str) -> Vec<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace().as_deref() == Some(ns))
        .collect()
}

impl Context {
    /// The resources of one namespace, as the planner sees them: shared, and built again only
    /// after a spec of one of them changed.
    pub fn resource_set(&self, ns: &str) -> Arc<ResourceSet> {
        self.snapshots.sets.get(ns, || {
            let s = &self.stores;
            let classes = in_ns(&s.media_classes, ns).into_iter();
            let backups = in_ns(&s.backup_trails, ns).into_iter();
            let duplications = in_ns(&s.duplication_trails, ns).into_iter();
            let policies = in_ns(&s.policies, ns).into_iter();
            classes
                .map(|o| Resource::MediaClass((*o).clone()))
                .chain(backups.map(|o| Resource::BackupTrail((*o).clone())))
                .chain(duplications.map(|o| Resource::DuplicationTrail((*o).clone())))
                .chain(policies.map(|o| Resource::DuplicationPolicy((*o).clone())))
                .collect()
        })
    }

    /// The catalog of one namespace: shared (its index built once), and built again only
    /// after an entry changed.
    pub fn catalog(&self, ns: &str) -> Arc<Catalog> {
        self.snapshots.catalogs.get(ns, || {
            in_ns(&self.stores.catalog, ns)
                .into_iter()
                .map(|e| (e.name_any(), e))
                .collect()
        })
    }

    /// Media classes of a namespace, resolved for worker pods (PVC media mounted under
    /// `/mnt/media/NAME`; credentials travel by Secret reference, never in the task).
    pub fn media(&self, set: &ResourceSet) -> BTreeMap<String, MediaSpec> {
        set.media_classes
            .iter()
            .filter_map(|(name, mc)| {
                let mut m = MediaSpec::from_class(mc).ok()?;
                if mc.spec.backend.pvc.is_some() {
                    m.mount_path = Some(media_mount(name, mc));
                }
                Some((name.clone(), m))
            })
            .collect()
    }
}

/// Where a PVC-backed media class is mounted in worker pods.
pub fn media_mount(name: &str, mc: &MediaClass) -> String {
    let sub = mc
        .spec
        .backend
        .pvc
        .as_ref()
        .and_then(|p| p.sub_path.clone())
        .unwrap_or_default();
    format!("/mnt/media/{name}/{}", sub.trim_matches('/'))
        .trim_end_matches('/')
        .to_string()
}
