//! A trail's rules for its catalog, as pure decisions both drivers carry out: the dates of
//! its entries (every live entry expires at its backup time plus the trail's current
//! retention, also after a retention edit) and what an expiry sweep does (the mass-expiry
//! breaker, entries held by `minCopies`, the entries to mark Expired).

use chrono::{DateTime, TimeDelta, Utc};

use super::Event;
use crate::api::{CatalogEntry, Condition, EntryState, TrailStatus, set_condition};
use crate::engine::catalog::Catalog;
use crate::engine::planner::{Breaker, ExpiryPlan, apply_breaker};

/// The live (Valid or Missing) entries of `trail` whose `expiresAt` is not backup time +
/// `retention`, each with the date it should show. An Expired entry keeps its date: a longer
/// retention does not bring back what expiry may already have freed.
pub fn expiry_dates<'a>(
    trail: &str,
    retention: TimeDelta,
    entries: impl IntoIterator<Item = &'a CatalogEntry>,
) -> Vec<(String, DateTime<Utc>)> {
    entries
        .into_iter()
        .filter(|e| e.spec.trail == trail && Catalog::state(e) != EntryState::Expired)
        .filter_map(|e| {
            let due = e.spec.backup_time + retention;
            (e.spec.expires_at != due).then(|| (e.spec.object_name(), due))
        })
        .collect()
}

/// What a trail's expiry sweep does: the entries to mark Expired (each with why), and the
/// events. The trail's status (`ExpiryHalted`, `ExpiryHeld`, the used mass-expiry token) is
/// updated in place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sweep {
    /// The breaker stopped this sweep: nothing is expired or freed.
    pub halted: bool,
    pub expire: Vec<(String, String)>,
    pub events: Vec<Event>,
}

/// A trail's sweep from its part of the expiry plan: `halt` is why the sweep would be a mass
/// expiry ([`crate::engine::planner::PlanContext::mass_expiry`]), `ack` the trail's
/// `mimeo.dev/allow-mass-expiry` token. A halted sweep expires nothing until a new token.
pub fn sweep(
    st: &mut TrailStatus,
    mine: &ExpiryPlan,
    halt: Option<String>,
    ack: Option<String>,
) -> Sweep {
    let mut events = Vec::new();
    match apply_breaker(st, halt, ack) {
        Breaker::Halted { why, first_time } => {
            if first_time {
                events.push(Event::warning("MassExpiryHalted", why));
            }
            return Sweep {
                halted: true,
                expire: Vec::new(),
                events,
            };
        }
        Breaker::Acknowledged => events.push(Event::normal(
            "MassExpiryAllowed",
            "mass expiry allowed once by mimeo.dev/allow-mass-expiry".into(),
        )),
        Breaker::Closed => {}
    }
    match mine.held.first() {
        Some((entry, why)) => {
            let held = Condition::new("ExpiryHeld", true, "MinCopies", why);
            if !st.conditions.iter().any(|c| c.same_as(&held)) {
                events.push(Event::warning("ExpiryHeld", format!("{entry}: {why}")));
            }
            set_condition(&mut st.conditions, held);
        }
        None => st.conditions.retain(|c| c.type_ != "ExpiryHeld"),
    }
    Sweep {
        halted: false,
        expire: mine.expire.clone(),
        events,
    }
}

/// The event of a sweep that marked `count` entries Expired.
pub fn expired(count: usize) -> Event {
    Event::normal("Expired", format!("{count} catalog entries expired"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CatalogEntrySpec, CatalogEntryStatus, Role};

    fn entry(trail: &str, id: &str, state: EntryState, retention_days: i64) -> CatalogEntry {
        let backup_time: DateTime<Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
        let mut e = CatalogEntry::new(
            &format!("{trail}.{id}"),
            CatalogEntrySpec {
                work_item: "app".into(),
                instance_id: id.into(),
                backup_time,
                backup_trail: "nightly".into(),
                trail: trail.into(),
                role: Role::Original,
                copy_of: None,
                parent: None,
                extents: Vec::new(),
                replaces: Vec::new(),
                bytes: 1,
                file_bytes: None,
                notes: Vec::new(),
                digest: "sha256:00".into(),
                created_at: backup_time,
                expires_at: backup_time + TimeDelta::days(retention_days),
            },
        );
        e.status = Some(CatalogEntryStatus {
            state,
            message: String::new(),
        });
        e
    }

    #[test]
    fn a_retention_edit_moves_the_dates_of_live_entries_only() {
        let entries = [
            entry("nightly", "a", EntryState::Valid, 30),
            entry("nightly", "b", EntryState::Missing, 30),
            entry("nightly", "c", EntryState::Expired, 30),
            entry("nightly", "d", EntryState::Valid, 90),
            entry("weekly", "e", EntryState::Valid, 30),
        ];
        let moved = expiry_dates("nightly", TimeDelta::days(90), &entries);
        let names: Vec<&str> = moved.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["nightly.a", "nightly.b"]);
        assert_eq!(
            moved[0].1,
            "2026-11-01T02:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::days(90)
        );
        assert!(expiry_dates("nightly", TimeDelta::days(30), &entries[..3]).is_empty());
    }

    #[test]
    fn a_sweep_halts_on_mass_expiry_until_a_new_token_and_reports_held_entries() {
        let plan = ExpiryPlan {
            expire: vec![("t.a".into(), "retention passed".into())],
            held: vec![("t.b".into(), "minCopies 2 of policy p".into())],
        };
        let mut st = TrailStatus::default();
        let why = Some("would expire 100% of the trail".to_string());
        let halted = sweep(&mut st, &plan, why.clone(), None);
        assert!(halted.halted && halted.expire.is_empty());
        assert_eq!(halted.events[0].reason, "MassExpiryHalted");
        let again = sweep(&mut st, &plan, why.clone(), None);
        assert!(again.halted && again.events.is_empty(), "reported once");
        let allowed = sweep(&mut st, &plan, why.clone(), Some("ok-1".into()));
        assert!(!allowed.halted);
        assert_eq!(allowed.expire, plan.expire);
        assert_eq!(allowed.events[0].reason, "MassExpiryAllowed");
        assert_eq!(allowed.events[1].reason, "ExpiryHeld");
        assert!(st.conditions.iter().any(|c| c.type_ == "ExpiryHeld"));
        assert!(!st.conditions.iter().any(|c| c.type_ == "ExpiryHalted"));
        let used = sweep(&mut st, &plan, why, Some("ok-1".into()));
        assert!(used.halted, "a token lets one sweep through");
        let calm = sweep(&mut st, &ExpiryPlan::default(), None, None);
        assert!(!calm.halted && calm.events.is_empty());
        assert!(!st.conditions.iter().any(|c| c.type_.starts_with("Expiry")));
    }
}
