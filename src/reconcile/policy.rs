//! A DuplicationPolicy's rules, as one pure decision both drivers carry out: when it plans
//! its next run, how a run is numbered and recorded, and what its end says. The drivers loop
//! "decide → plan → [`planned`] → run → decide": worker Jobs in a cluster (one per task,
//! named by the run's number), the executor in-process in local mode.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::Event;
use super::schedule::{ScheduleError, next_occurrence};
use crate::api::{
    Condition, DuplicationPolicy, DuplicationPolicyStatus, RUN_NOW_ANNOTATION, RunSummary,
    set_condition,
};
use crate::engine::task::Task;

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
    if st
        .last_run
        .as_ref()
        .is_some_and(|r| r.outcome == "Succeeded" && r.left > 0)
    {
        // The last run copied what its tasks could hold: the next takes the rest at once.
        return Ok(PolicyDue::Now { token: None });
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

/// How the policy's run in flight (`status.lastRun` Running) is going, as the driver sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyRun {
    /// Some of its tasks are still running, or were not created yet.
    Running,
    /// Every task ended; the messages of those that failed.
    Ended { failures: Vec<String> },
}

/// What a DuplicationPolicy's driver does next.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyStep {
    /// Nothing until the policy or the catalog changes.
    Wait,
    /// Make sure every task of the run in flight runs, and look again.
    Follow,
    /// Plan a run now, then record it with [`planned`]; `token` is the run-now token the
    /// plan consumes (even one with nothing to copy).
    Plan { token: Option<String> },
    /// Look again at this time: the next scheduled occurrence.
    WakeAt(DateTime<Utc>),
}

/// A DuplicationPolicy's decision.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDecision {
    /// The status to write.
    pub status: DuplicationPolicyStatus,
    /// The events to send.
    pub events: Vec<Event>,
    /// What to do next.
    pub step: PolicyStep,
}

/// Whether the policy has a run in flight, which the driver reports on as [`PolicyRun`].
pub fn in_flight(st: &DuplicationPolicyStatus) -> bool {
    st.last_run.as_ref().is_some_and(|r| r.outcome == "Running")
}

fn ready(st: &mut DuplicationPolicyStatus, ok: bool, reason: &str, msg: &str) {
    let mut c = Condition::new("Ready", ok, reason, msg);
    c.observed_generation = st.observed_generation;
    set_condition(&mut st.conditions, c);
}

/// A DuplicationPolicy's decision: `problem` is its first validation problem with the
/// resources it references; `seen` how its run in flight goes (ignored when none is).
/// Suspending stops new runs; an invalid spec or schedule waits for a change; one run at a
/// time, and a run's end is recorded before the next is planned.
pub fn decide(
    p: &DuplicationPolicy,
    problem: Option<String>,
    seen: PolicyRun,
    now: DateTime<Utc>,
) -> PolicyDecision {
    let mut st = p.status.clone().unwrap_or_default();
    st.observed_generation = p.metadata.generation;
    let mut events = Vec::new();
    let due = due(p, &st, now).map_err(|e| e.of("DuplicationPolicy", &p.name_any()));
    let step = match (problem, due) {
        (_, Ok(PolicyDue::Suspended)) => {
            ready(
                &mut st,
                true,
                "Suspended",
                "spec.suspend is true: no new runs",
            );
            PolicyStep::Wait
        }
        (Some(msg), _) => {
            ready(&mut st, false, "InvalidSpec", &msg);
            events.push(Event::warning("InvalidSpec", msg));
            PolicyStep::Wait
        }
        _ if in_flight(&st) => match seen {
            PolicyRun::Running => PolicyStep::Follow,
            PolicyRun::Ended { failures } => {
                let last = st.last_run.as_mut().expect("in flight");
                last.end = Some(now);
                let ok = failures.is_empty();
                last.outcome = if ok { "Succeeded" } else { "Failed" }.into();
                last.message = failures.join("; ");
                let (reason, msg) = match ok {
                    true => (
                        "RunSucceeded",
                        format!("{} instances, {} bytes", last.instances, last.bytes),
                    ),
                    false => ("RunFailed", last.message.clone()),
                };
                let more = ok && last.left > 0;
                ready(&mut st, ok, reason, &msg);
                events.push(Event {
                    warning: !ok,
                    reason,
                    note: msg,
                });
                // Recorded first, then the run that takes what this one left.
                match more {
                    true => PolicyStep::WakeAt(now),
                    false => PolicyStep::Wait,
                }
            }
        },
        (None, Err(e)) => {
            ready(&mut st, false, "InvalidSpec", &e.to_string());
            events.push(Event::warning("InvalidSpec", e.to_string()));
            PolicyStep::Wait
        }
        (None, Ok(PolicyDue::At(next))) => {
            st.next_run = Some(next);
            PolicyStep::WakeAt(next)
        }
        (None, Ok(PolicyDue::Now { token })) => PolicyStep::Plan { token },
    };
    PolicyDecision {
        status: st,
        events,
        step,
    }
}

/// The instances and bytes a run's tasks copy.
pub fn run_size<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> (u64, u64) {
    tasks.into_iter().fold((0, 0), |(n, b), t| match t {
        Task::Copy(c) => (
            n + c.items.len() as u64,
            b + c.items.iter().map(|i| i.source.bytes).sum::<u64>(),
        ),
        Task::MediaCopy(m) => (
            n + m.entries.len() as u64,
            b + m.entries.iter().map(|e| e.bytes).sum::<u64>(),
        ),
        _ => (n, b),
    })
}

/// Records the run a [`PolicyStep::Plan`] planned, of `size` ([`run_size`]), which left
/// `left` uncopied instances for the next run (its tasks could hold no more): the token
/// consumed, and either "up to date" or a new numbered run in flight ([`in_flight`]: the
/// driver starts its tasks). The number names the run's Jobs, so the status is written before
/// they are created and a retry creates the same ones.
pub fn planned(
    mut st: DuplicationPolicyStatus,
    token: Option<String>,
    (instances, bytes): (u64, u64),
    left: u64,
    now: DateTime<Utc>,
) -> (DuplicationPolicyStatus, Vec<Event>) {
    if token.is_some() {
        st.last_run_now = token;
    }
    if instances == 0 {
        // A failed run stays reported until one succeeds.
        if st.last_run.as_ref().is_none_or(|r| r.outcome != "Failed") {
            ready(&mut st, true, "UpToDate", "nothing to copy");
        }
        return (st, Vec::new());
    }
    st.runs += 1;
    st.last_run = Some(RunSummary {
        start: now,
        end: None,
        instances,
        left,
        bytes,
        outcome: "Running".into(),
        message: String::new(),
    });
    let rest = match left {
        0 => String::new(),
        n => format!(" ({n} more in the next run: a run's tasks hold no more)"),
    };
    let msg = format!("run {} copies {instances} instances{rest}", st.runs);
    ready(&mut st, true, "Running", &msg);
    let note = format!("run {}: {instances} instances{rest}", st.runs);
    (st, vec![Event::normal("RunStarted", note)])
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
                left: 0,
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

    fn ready_of(st: &DuplicationPolicyStatus) -> (&str, &str) {
        let c = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_run_is_planned_numbered_followed_and_ended_through_one_decision() {
        let now = at("2026-11-26T01:45:00Z");
        let mut p = policy(None, false, Some("t1"));
        let d = decide(&p, None, PolicyRun::Running, now);
        let PolicyStep::Plan { token } = d.step else {
            panic!("a new policy plans: {:?}", d.step)
        };
        let (st, events) = planned(d.status.clone(), token.clone(), (0, 0), 0, now);
        assert_eq!(ready_of(&st), ("True", "UpToDate"));
        assert_eq!((st.runs, events.len()), (0, 0), "nothing to copy is no run");
        assert_eq!(
            st.last_run_now.as_deref(),
            Some("t1"),
            "the token is consumed"
        );
        let (st, events) = planned(d.status, token, (3, 300), 0, now);
        assert_eq!(st.runs, 1);
        let last = st.last_run.as_ref().unwrap();
        assert_eq!(
            (last.instances, last.bytes, last.outcome.as_str()),
            (3, 300, "Running")
        );
        assert_eq!(events[0].reason, "RunStarted");
        p.status = Some(st);
        assert_eq!(
            decide(&p, None, PolicyRun::Running, now).step,
            PolicyStep::Follow
        );
        let ended = PolicyRun::Ended {
            failures: vec!["copy-1-0: disk full".into()],
        };
        let d = decide(&p, None, ended, now);
        assert_eq!(d.step, PolicyStep::Wait);
        assert_eq!(ready_of(&d.status), ("False", "RunFailed"));
        assert_eq!(
            d.status.last_run.as_ref().unwrap().message,
            "copy-1-0: disk full"
        );
        assert!(d.events[0].warning);
        let (st, _) = planned(d.status, None, (0, 0), 0, now);
        assert_eq!(
            ready_of(&st),
            ("False", "RunFailed"),
            "a failure stays until a run succeeds"
        );
        p.status = Some(st);
        let (st, _) = planned(p.status.clone().unwrap(), None, (1, 100), 0, now);
        assert_eq!(st.runs, 2, "the next run has the next number");
        p.status = Some(st);
        let d = decide(&p, None, PolicyRun::Ended { failures: vec![] }, now);
        assert_eq!(ready_of(&d.status), ("True", "RunSucceeded"));
        assert!(!d.events[0].warning);
    }

    /// A run whose tasks could not hold every uncopied instance says how many it left; once
    /// it succeeds the next run is planned at once, whatever the schedule. After a failed one
    /// the schedule decides again.
    #[test]
    fn a_run_that_left_instances_is_followed_by_the_next_at_once() {
        let now = at("2026-11-26T01:45:00Z");
        let mut p = policy(Some("0 2 * * *"), false, Some("t1"));
        let d = decide(&p, None, PolicyRun::Running, now);
        let PolicyStep::Plan { token } = d.step else {
            panic!("the token plans: {:?}", d.step)
        };
        let (st, events) = planned(d.status, token, (40, 4000), 25, now);
        assert_eq!(st.last_run.as_ref().unwrap().left, 25);
        assert!(
            events[0].note.contains("25 more in the next run"),
            "{events:?}"
        );
        p.status = Some(st);
        let ended = |failures: Vec<String>| PolicyRun::Ended { failures };
        let d = decide(&p, None, ended(vec![]), now);
        assert_eq!(ready_of(&d.status), ("True", "RunSucceeded"));
        assert_eq!(
            d.step,
            PolicyStep::WakeAt(now),
            "recorded, then looked at again"
        );
        let mut done = p.clone();
        done.status = Some(d.status);
        assert_eq!(
            decide(&done, None, PolicyRun::Running, now).step,
            PolicyStep::Plan { token: None },
            "the rest is planned before 02:00"
        );
        let d = decide(&p, None, ended(vec!["copy-1-0: disk full".into()]), now);
        assert_eq!(d.step, PolicyStep::Wait);
        p.status = Some(d.status);
        assert_eq!(
            decide(&p, None, PolicyRun::Running, now).step,
            PolicyStep::WakeAt(at("2026-11-26T02:00:00Z")),
            "after a failure the schedule decides"
        );
    }

    #[test]
    fn suspended_invalid_and_scheduled_policies_wait() {
        let now = at("2026-11-26T01:45:00Z");
        let seen = |p: DuplicationPolicy, problem: Option<&str>| {
            let d = decide(&p, problem.map(String::from), PolicyRun::Running, now);
            let (ok, reason) = ready_of(&d.status);
            (d.step.clone(), format!("{ok} {reason}"))
        };
        let wait = |why: &str| (PolicyStep::Wait, why.to_string());
        assert_eq!(
            seen(policy(None, true, Some("t")), None),
            wait("True Suspended")
        );
        assert_eq!(
            seen(policy(None, false, None), Some("bad")),
            wait("False InvalidSpec")
        );
        assert_eq!(
            seen(policy(Some("often"), false, None), None),
            wait("False InvalidSpec")
        );
        let d = decide(
            &policy(Some("0 2 * * *"), false, None),
            None,
            PolicyRun::Running,
            now,
        );
        let next = at("2026-11-26T02:00:00Z");
        assert_eq!(
            (d.step, d.status.next_run),
            (PolicyStep::WakeAt(next), Some(next))
        );
    }
}
