//! The catalog sink of a worker pod: what a task committed, or found damaged, recorded as
//! CatalogEntry objects. (Local mode records the same decisions in its state directory.)

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::api::*;
use crate::base::backoff::{Backoff, retry_while};
use crate::engine::catalog::{Catalog, Recorded};
use crate::error::{Error, Result, kube_transient};

/// Writes the catalog entries a worker committed as CatalogEntry objects. What a commit does
/// is [`Catalog::record`]'s decision, the same as in local mode: a new entry is created Valid,
/// a known one is left as it is (a retried worker or a rescan never writes `state` again, so a
/// Missing or Expired mark stands), and a newer repair copy of a Missing entry replaces it.
/// The status write carries the resourceVersion it was decided on, so it loses to any state
/// written since (the decision is then made again).
pub async fn publish_entries(
    client: &Client,
    namespace: &str,
    entries: &[CatalogEntrySpec],
) -> Result<()> {
    let api: Api<CatalogEntry> = Api::namespaced(client.clone(), namespace);
    for spec in entries {
        publish_entry(&api, spec).await?;
    }
    Ok(())
}

/// Records one entry (see [`publish_entries`]); a lost race is decided again, a bounded number
/// of times.
async fn publish_entry(api: &Api<CatalogEntry>, spec: &CatalogEntrySpec) -> Result<()> {
    let pp = PatchParams::apply("mimeo-worker").force();
    let backoff = api_backoff();
    let name = spec.object_name();
    let what = || format!("publish catalogentry/{name}");
    for _ in 0..backoff.attempts {
        let current = retry_while(&backoff, what, kube_transient, || api.get_opt(&name)).await?;
        let before = current.as_ref().and_then(|e| e.status.clone());
        let mut catalog = Catalog::default();
        if let Some(e) = current {
            catalog.entries.insert(name.clone(), Arc::new(e));
        }
        let recorded = catalog.record(spec.clone());
        if recorded == Recorded::Known {
            tracing::info!(entry = %name, "catalog entry already recorded: left as it is");
            return Ok(());
        }
        let decided = &catalog.entries[&name];
        let body = serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CatalogEntry",
            "metadata": {"name": name, "labels": decided.metadata.labels},
            "spec": decided.spec,
        });
        let apply = Patch::Apply(&body);
        let applied = retry_while(&backoff, what, kube_transient, || {
            api.patch(&name, &pp, &apply)
        })
        .await?;
        if applied.status != before {
            continue; // another writer changed the state meanwhile: decide again
        }
        let status = serde_json::json!({
            "metadata": {"resourceVersion": applied.resource_version()},
            "status": decided.status,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => {
                tracing::info!(entry = %name, ?recorded, "catalog entry written");
                return Ok(());
            }
            Err(e) if kube_transient(&e) => tokio::time::sleep(backoff.first).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Contended {
        object: format!("catalogentry/{name}"),
    })
}

/// Marks catalog entries Missing with `why` (a worker that found them damaged). Only a Valid
/// entry is marked, with the resourceVersion it was read at: an entry that expired meanwhile
/// stays Expired.
pub async fn mark_missing(
    client: &Client,
    namespace: &str,
    names: &[String],
    why: &str,
) -> Result<()> {
    let api: Api<CatalogEntry> = Api::namespaced(client.clone(), namespace);
    let backoff = api_backoff();
    for name in names {
        let what = || format!("mark catalogentry/{name} Missing");
        for _ in 0..backoff.attempts {
            let Some(current) =
                retry_while(&backoff, what, kube_transient, || api.get_opt(name)).await?
            else {
                break;
            };
            if Catalog::state(&current) != EntryState::Valid {
                break;
            }
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": current.resource_version()},
                "status": {"state": "Missing", "message": why},
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::warn!(entry = %name, reason = why, "catalog entry marked Missing");
                    break;
                }
                Err(e) if kube_transient(&e) => tokio::time::sleep(backoff.first).await,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Retries of a worker's API calls: the data is durable by then, so an API server that
/// restarts or sheds load must not fail the run (a minute or two).
fn api_backoff() -> Backoff {
    Backoff {
        attempts: 16,
        first: Duration::from_secs(1),
        max: Duration::from_secs(10),
    }
}
