//! The operator's writes of expiry: the one place it sets a CatalogEntry's `state`, and the
//! dates a trail's retention gives its entries.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::api::CatalogEntry;
use crate::engine::catalog::Catalog;
use crate::error::Result;

/// Moves the `expiresAt` of entries to the dates their trail's retention gives now
/// ([`crate::reconcile::trail::expiry_dates`]).
pub async fn write_expiry_dates(
    api: &Api<CatalogEntry>,
    dates: &[(String, DateTime<Utc>)],
) -> Result<()> {
    for (name, at) in dates {
        let patch = serde_json::json!({"spec": {"expiresAt": at}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(entry = %name, expires_at = %at, "expiry date follows the trail's retention")
            }
            Err(kube::Error::Api(a)) if a.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Marks the `planned` entries (name, why) Expired, each on the condition that it is still
/// the version the plan was made from (`catalog`): a state written since, by a worker that
/// repaired the entry or found it damaged, is never overwritten; the entry is left for the
/// next sweep to decide again. Returns the entries written, which alone may have their
/// volumes freed.
pub async fn write_expired(
    api: &Api<CatalogEntry>,
    catalog: &Catalog,
    planned: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let mut written = Vec::new();
    for (name, why) in planned {
        let Some(seen) = catalog.entries.get(name) else {
            continue;
        };
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": seen.resource_version()},
            "status": {"state": "Expired", "message": why},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => written.push((name.clone(), why.clone())),
            Err(kube::Error::Api(a)) if a.code == 409 || a.code == 404 => {
                tracing::info!(entry = %name, "catalog entry changed since the expiry plan: decided again at the next sweep");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}
