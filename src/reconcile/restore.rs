//! A Restore's rules: what its status says when a run starts, and whether a run that found
//! damaged copies is followed by one on the next best copy.

use crate::api::{RestoreStatus, RestoredFrom};
use crate::engine::planner::RestorePlan;

/// How many damaged copies one restore passes over before it gives up. Each damaged copy is
/// marked Missing, so the next plan chooses another; media that damage every copy they hold
/// (a failing drive) fail the restore instead of sending it through every trail.
pub const MAX_DAMAGED_COPIES: usize = 4;

/// After a failed run that found `found_damaged` copies of its chain damaged (marked
/// Missing): whether the restore reads the next best copy rather than fail.
pub fn reads_next_copy(st: &RestoreStatus, found_damaged: &[String]) -> bool {
    !found_damaged.is_empty() && st.damaged.len() < MAX_DAMAGED_COPIES
}

/// `reason`, then the copies passed over (each `ROLE on TRAIL damaged: WHY`).
pub fn with_damaged(reason: &str, damaged: &[String]) -> String {
    std::iter::once(reason)
        .chain(damaged.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status of a restore whose run starts reading `plan`: the chain, the copy of the
/// requested instance, why that copy (with the damaged ones passed over) and the bytes to read.
pub fn starting(st: &mut RestoreStatus, plan: &RestorePlan) {
    st.chain = plan
        .links
        .iter()
        .map(|l| RestoredFrom {
            trail: l.entry.trail.clone(),
            role: l.entry.role,
            volumes: l.entry.volumes(),
            instance_id: l.entry.instance_id.clone(),
        })
        .collect();
    st.restored_from = st.chain.last().cloned();
    st.reason = with_damaged(plan.reasons.last().map_or("", String::as_str), &st.damaged);
    st.bytes = plan.links.iter().map(|l| l.entry.bytes).sum();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_passes_over_at_most_four_damaged_copies() {
        let mut st = RestoreStatus::default();
        let found = ["duplicate on vault damaged: corrupt media".to_owned()];
        assert!(
            !reads_next_copy(&st, &[]),
            "a failure without damage is final"
        );
        for n in 0..MAX_DAMAGED_COPIES {
            assert!(reads_next_copy(&st, &found), "after {n} damaged copies");
            st.damaged.extend(found.iter().cloned());
        }
        assert!(!reads_next_copy(&st, &found));
        assert_eq!(
            with_damaged("restored from original", &found),
            format!("restored from original; {}", found[0])
        );
        assert_eq!(with_damaged("", &[]), "");
    }
}
