//! A CatalogEntry's `state` on a real API server (`mimeo-controlplane`, no node): a worker
//! retried after its entries were planned for expiry (its Job's pod run again) races the
//! operator's expiry write, and no entry the expiry wrote ends anything but Expired. Half the
//! entries are Valid, which the retried worker finds known and leaves alone; the other half
//! are Missing, and the retried worker brings a repair copy of them, which does write: it and
//! the expiry each write only on the version they decided from, so one of them wins whole.

mod common;

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use kube::api::{Api, ListParams};

use common::controlplane::ControlPlane;
use mimeo::api::{CatalogEntry, CatalogEntrySpec, EntryState, Extent, Role};
use mimeo::engine::catalog::Catalog;
use mimeo::operator::expiry::write_expired;
use mimeo::worker::sink::{mark_missing, publish_entries};

const NS: &str = "default";
const ENTRIES: usize = 24;
const ROUNDS: usize = 4;

fn entry(round: usize, i: usize, volume: &str) -> CatalogEntrySpec {
    let backup_time = Utc::now() - TimeDelta::days(40);
    CatalogEntrySpec {
        work_item: format!("item-{i}"),
        instance_id: format!("item-{i}-r{round}"),
        backup_time,
        backup_trail: "nightly".into(),
        trail: "nightly".into(),
        role: Role::Original,
        copy_of: None,
        parent: None,
        extents: vec![Extent {
            volume: volume.into(),
            segment: 0,
            offset: 0,
            length: 4096,
        }],
        replaces: Vec::new(),
        bytes: 100,
        file_bytes: Some(100),
        notes: Vec::new(),
        digest: "sha256:00".into(),
        created_at: Utc::now(),
        // Past: every entry is due for expiry.
        expires_at: backup_time + TimeDelta::days(30),
    }
}

/// The catalog as the operator's watch store would hold it.
async fn view(api: &Api<CatalogEntry>) -> Catalog {
    let mut catalog = Catalog::default();
    for e in api.list(&ListParams::default()).await.unwrap() {
        catalog.insert(kube::ResourceExt::name_any(&e), Arc::new(e));
    }
    catalog
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_worker_never_revives_what_expiry_wrote() {
    let cp = ControlPlane::start();
    let client = cp.client().await;
    let api: Api<CatalogEntry> = Api::namespaced(client.clone(), NS);
    let (mut expired_by_the_sweep, mut repaired_first) = (0, 0);
    for round in 0..ROUNDS {
        // The first worker: every entry recorded Valid; then half found damaged.
        let first: Vec<CatalogEntrySpec> = (0..ENTRIES).map(|i| entry(round, i, "v-1")).collect();
        publish_entries(&client, NS, &first).await.unwrap();
        let damaged: Vec<String> = first
            .iter()
            .skip(1)
            .step_by(2)
            .map(CatalogEntrySpec::object_name)
            .collect();
        mark_missing(&client, NS, &damaged, "corrupt media: test")
            .await
            .unwrap();

        // The sweep plans from its view; the retried worker brings the same entries, the
        // damaged ones as repair copies on another volume. Both run at once.
        let catalog = view(&api).await;
        let planned: Vec<(String, String)> = first
            .iter()
            .map(|e| (e.object_name(), "retention passed".to_owned()))
            .collect();
        let retried: Vec<CatalogEntrySpec> = first
            .iter()
            .enumerate()
            .map(|(i, e)| match i % 2 {
                0 => e.clone(),
                _ => CatalogEntrySpec {
                    extents: entry(round, i, "v-2").extents,
                    created_at: Utc::now() + TimeDelta::seconds(1),
                    ..e.clone()
                },
            })
            .collect();
        let worker = {
            let client = client.clone();
            tokio::spawn(async move { publish_entries(&client, NS, &retried).await })
        };
        let written = write_expired(&api, &catalog, &planned).await.unwrap();
        worker.await.unwrap().unwrap();

        let after = view(&api).await;
        for (name, _) in &planned {
            let e = &after.entries()[name];
            let state = Catalog::state(e);
            let was_written = written.iter().any(|(n, _)| n == name);
            if was_written {
                // Nothing after the expiry's write set it back.
                assert_eq!(state, EntryState::Expired, "{name}: {:?}", e.status);
                expired_by_the_sweep += 1;
            } else {
                // The expiry lost to a state written since its view: a repair, whole.
                assert_eq!(state, EntryState::Valid, "{name}: {:?}", e.status);
                assert_eq!(e.spec.extents[0].volume, "v-2", "{name}");
                assert_eq!(e.spec.replaces.len(), 1, "{name}");
                repaired_first += 1;
            }
        }
        // The next sweep decides again, from the new view: everything expires now.
        let catalog = view(&api).await;
        let again: Vec<(String, String)> = planned
            .iter()
            .filter(|(n, _)| Catalog::state(&catalog.entries()[n]) != EntryState::Expired)
            .cloned()
            .collect();
        let written = write_expired(&api, &catalog, &again).await.unwrap();
        assert_eq!(written.len(), again.len());
        let after = view(&api).await;
        assert!(
            planned
                .iter()
                .all(|(n, _)| Catalog::state(&after.entries()[n]) == EntryState::Expired)
        );
        // A worker retried once more, after everything expired, changes nothing.
        publish_entries(&client, NS, &first).await.unwrap();
        let last = view(&api).await;
        for (n, _) in &planned {
            assert_eq!(
                Catalog::state(&last.entries()[n]),
                EntryState::Expired,
                "{n}"
            );
        }
    }
    println!(
        "{} entries expired by the racing sweep, {} repaired before it (then expired by the next)",
        expired_by_the_sweep, repaired_first
    );
    assert_eq!(expired_by_the_sweep + repaired_first, ROUNDS * ENTRIES);
}
