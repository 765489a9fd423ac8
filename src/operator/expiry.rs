//! The operator's writes of expiry: the one place it sets a CatalogEntry's `state` (through
//! the one writer, [`write_state`]), and the dates a trail's retention gives its entries.

use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};

use crate::api::{CatalogEntry, CatalogEntryStatus, EntryState};
use crate::engine::catalog::Catalog;
use crate::error::Result;
use crate::worker::sink::{StateWrite, write_state};

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
        let Some(seen) = catalog.entries().get(name) else {
            continue;
        };
        let expired = CatalogEntryStatus {
            state: EntryState::Expired,
            message: why.clone(),
        };
        match write_state(api, seen, &expired).await? {
            StateWrite::Written => written.push((name.clone(), why.clone())),
            StateWrite::Changed | StateWrite::Refused => {
                tracing::info!(entry = %name, "catalog entry changed since the expiry plan: decided again at the next sweep");
            }
        }
    }
    Ok(written)
}
