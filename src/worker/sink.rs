//! The catalog sink of a worker pod: what a task committed, or found damaged, recorded as
//! CatalogEntry objects (local mode records the same decisions in its state directory); and
//! [`write_state`], the one writer of a CatalogEntry's state on an API server, which the
//! operator's expiry writes through too.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::api::*;
use crate::base::backoff::{Backoff, retry_while};
use crate::engine::catalog::{Catalog, Recorded, may_become};
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
            catalog.insert(name.clone(), Arc::new(e));
        }
        let recorded = catalog.record(spec.clone());
        if recorded == Recorded::Known {
            tracing::info!(entry = %name, "catalog entry already recorded: left as it is");
            return Ok(());
        }
        let decided = &catalog.entries()[&name];
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
        let status = decided.status.clone().unwrap_or_default();
        match write_state(api, &applied, &status).await {
            Ok(StateWrite::Written) => {
                tracing::info!(entry = %name, ?recorded, "catalog entry written");
                return Ok(());
            }
            Ok(StateWrite::Refused) => {
                tracing::info!(entry = %name, "catalog entry's state is final: left as it is");
                return Ok(());
            }
            Ok(StateWrite::Changed) => {} // decide again
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
            let missing = CatalogEntryStatus {
                state: EntryState::Missing,
                message: why.to_owned(),
            };
            match write_state(&api, &current, &missing).await {
                Ok(StateWrite::Written) => {
                    tracing::warn!(entry = %name, reason = why, "catalog entry marked Missing");
                    break;
                }
                Ok(StateWrite::Refused) => break,
                Ok(StateWrite::Changed) => {} // read again
                Err(e) if kube_transient(&e) => tokio::time::sleep(backoff.first).await,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// What [`write_state`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateWrite {
    /// Written.
    Written,
    /// The entry changed since it was read, or is gone: decide again on a fresh read.
    Changed,
    /// [`may_become`] does not allow the change (an Expired entry, a state written again).
    Refused,
}

/// The one writer of a CatalogEntry's `status` on an API server: a worker recording a commit
/// or a damaged copy, the operator recording expiry. It writes `status` onto the entry as it
/// was read (`seen`, whose resourceVersion the write carries), and only along the changes
/// [`may_become`] allows, so a retried worker can never set an Expired entry back and no write
/// overtakes one it did not see.
pub async fn write_state(
    api: &Api<CatalogEntry>,
    seen: &CatalogEntry,
    status: &CatalogEntryStatus,
) -> kube::Result<StateWrite> {
    if !may_become(seen.status.as_ref().map(|s| s.state), status.state) {
        return Ok(StateWrite::Refused);
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": seen.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &seen.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(StateWrite::Written),
        Err(kube::Error::Api(a)) if a.code == 409 || a.code == 404 => Ok(StateWrite::Changed),
        Err(e) => Err(e),
    }
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
