//! A MediaClass's rule, as one pure decision both drivers carry out: from whether its media
//! answered the driver's probe and what the catalog holds on it, the status and the events.
//! The counts come from the catalog in both drivers (Valid entries, distinct volumes), so a
//! class reports the same numbers with and without a cluster.

use std::collections::BTreeSet;

use super::Event;
use crate::api::{CatalogEntrySpec, Condition, MediaClass, MediaClassStatus, set_condition};

/// A MediaClass's status and events. `probe` is what the driver's probe found (an S3 bucket
/// answering with the class's credentials, a claim bound, a directory there), with why not;
/// `valid` the Valid catalog entries on the class's trails.
pub fn decide<'a>(
    mc: &MediaClass,
    probe: Result<(), String>,
    valid: impl IntoIterator<Item = &'a CatalogEntrySpec>,
) -> (MediaClassStatus, Vec<Event>) {
    let old = mc.status.clone().unwrap_or_default();
    let mut st = old.clone();
    st.observed_generation = mc.metadata.generation;
    st.reachable = Some(probe.is_ok());
    let mut volumes = BTreeSet::new();
    st.bytes = 0;
    for e in valid {
        st.bytes += e.bytes;
        volumes.extend(
            e.extents
                .iter()
                .map(|x| (e.trail.as_str(), x.volume.as_str())),
        );
    }
    st.volumes = volumes.len() as u64;
    let (ok, reason, msg) = match (probe, mc.spec.available) {
        (_, false) => (
            false,
            "Unavailable",
            "spec.available is false: media are away and are not read".to_string(),
        ),
        (Ok(()), true) => (true, "Reachable", "backend answered".to_string()),
        (Err(e), true) => (false, "Unreachable", e),
    };
    set_condition(
        &mut st.conditions,
        Condition::new("Ready", ok, reason, msg.clone()),
    );
    // Warn when the class stops being usable, once, not at every probe.
    let events = match old.reachable != st.reachable && !ok {
        true => vec![Event::warning(reason, msg)],
        false => Vec::new(),
    };
    (st, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Extent, MediaClassSpec, Role};

    fn class(available: bool) -> MediaClass {
        let spec: MediaClassSpec = serde_json::from_value(serde_json::json!({
            "backend": {"pvc": {"claimName": "tapes"}}, "volumeCapacity": "64Mi",
            "available": available,
        }))
        .unwrap();
        MediaClass::new("tapes", spec)
    }

    fn entry(trail: &str, volume: &str, bytes: u64) -> CatalogEntrySpec {
        serde_json::from_value(serde_json::json!({
            "workItem": "db", "instanceId": format!("db-{volume}"), "backupTime": "2026-11-01T00:00:00Z",
            "backupTrail": "nightly", "trail": trail, "role": Role::Original,
            "extents": [Extent { volume: volume.into(), segment: 0, offset: 0, length: 1 }],
            "bytes": bytes, "digest": "", "createdAt": "2026-11-01T00:00:00Z",
            "expiresAt": "2026-12-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn counts_come_from_the_catalog_and_a_class_that_stops_answering_warns_once() {
        let entries = [
            entry("a", "v1", 10),
            entry("a", "v1", 5),
            entry("b", "v1", 1),
        ];
        let (st, events) = decide(&class(true), Ok(()), &entries);
        assert_eq!((st.bytes, st.volumes, st.reachable), (16, 2, Some(true)));
        assert!(events.is_empty());
        let mut mc = class(true);
        mc.status = Some(st);
        let (st, events) = decide(&mc, Err("bucket gone".into()), &[]);
        let ready = &st.conditions[0];
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("Unreachable", "bucket gone")
        );
        assert_eq!(events.len(), 1);
        mc.status = Some(st);
        let (_, events) = decide(&mc, Err("bucket gone".into()), &[]);
        assert!(events.is_empty(), "warned once");
        let (st, _) = decide(&class(false), Ok(()), &[]);
        assert_eq!(st.conditions[0].reason, "Unavailable");
    }
}
