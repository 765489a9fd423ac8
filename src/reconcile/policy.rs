//! A DuplicationPolicy's rule: when it plans its next run.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::schedule::{ScheduleError, next_occurrence};
use crate::api::{DuplicationPolicy, DuplicationPolicyStatus, RUN_NOW_ANNOTATION};

/// When a DuplicationPolicy plans its next run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyDue {
    /// `spec.suspend`: no new runs.
    Suspended,
    /// Plan a run now. `token` is the new `mimeo.dev/run-now` token that makes it due, which
    /// the plan consumes (even one with nothing to copy).
    Now { token: Option<String> },
    /// Not before this time (the next cron occurrence).
    At(DateTime<Utc>),
}

/// A policy without a schedule plans a run whenever it is looked at (a run starts when there
/// is something to copy); with one, once an occurrence after its last run (or its creation)
/// has come; a new run-now token plans one at once, whatever the schedule.
pub fn due(
    p: &DuplicationPolicy,
    st: &DuplicationPolicyStatus,
    now: DateTime<Utc>,
) -> Result<PolicyDue, ScheduleError> {
    if p.spec.suspend {
        return Ok(PolicyDue::Suspended);
    }
    let token = p.annotations().get(RUN_NOW_ANNOTATION).cloned();
    if token.is_some() && token != st.last_run_now {
        return Ok(PolicyDue::Now { token });
    }
    let Some(expr) = &p.spec.schedule else {
        return Ok(PolicyDue::Now { token: None });
    };
    let last = st.last_run.as_ref().map(|r| r.start);
    let next = next_occurrence(expr, last, &p.metadata, now)?;
    Ok(if next > now {
        PolicyDue::At(next)
    } else {
        PolicyDue::Now { token: None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DuplicationPolicySpec, RunSummary};

    fn policy(schedule: Option<&str>, suspend: bool, run_now: Option<&str>) -> DuplicationPolicy {
        let spec: DuplicationPolicySpec = serde_json::from_value(serde_json::json!({
            "sourceTrails": ["nightly"], "targets": ["vault"],
            "schedule": schedule, "suspend": suspend,
        }))
        .unwrap();
        let mut p = DuplicationPolicy::new("to-vault", spec);
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-26T01:30:00Z".parse().unwrap(),
        ));
        if let Some(tok) = run_now {
            p.metadata.annotations =
                Some([(RUN_NOW_ANNOTATION.to_string(), tok.to_string())].into());
        }
        p
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ran_at(start: &str) -> DuplicationPolicyStatus {
        DuplicationPolicyStatus {
            last_run: Some(RunSummary {
                start: at(start),
                end: None,
                instances: 1,
                bytes: 1,
                outcome: "Succeeded".into(),
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn policies_run_when_looked_at_on_schedule_and_on_run_now() {
        let now = at("2026-11-26T01:45:00Z");
        let none = DuplicationPolicyStatus::default();
        let any = PolicyDue::Now { token: None };
        assert_eq!(due(&policy(None, false, None), &none, now), Ok(any.clone()));
        assert_eq!(
            due(&policy(None, true, Some("t")), &none, now),
            Ok(PolicyDue::Suspended),
            "suspend wins over a token"
        );
        // A schedule: the first occurrence after creation, then after the last run's start.
        let daily = Some("0 2 * * *");
        assert_eq!(
            due(&policy(daily, false, None), &none, now),
            Ok(PolicyDue::At(at("2026-11-26T02:00:00Z")))
        );
        let later = at("2026-11-26T02:00:30Z");
        assert_eq!(due(&policy(daily, false, None), &none, later), Ok(any));
        let st = ran_at("2026-11-26T02:00:10Z");
        assert_eq!(
            due(&policy(daily, false, None), &st, later),
            Ok(PolicyDue::At(at("2026-11-27T02:00:00Z")))
        );
        // A new token runs at once, once.
        assert_eq!(
            due(&policy(daily, false, Some("t1")), &st, later),
            Ok(PolicyDue::Now {
                token: Some("t1".into())
            })
        );
        let st = DuplicationPolicyStatus {
            last_run_now: Some("t1".into()),
            ..st
        };
        assert_eq!(
            due(&policy(daily, false, Some("t1")), &st, later),
            Ok(PolicyDue::At(at("2026-11-27T02:00:00Z")))
        );
        assert!(due(&policy(Some("often"), false, None), &none, later).is_err());
    }
}
