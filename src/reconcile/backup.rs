//! A BackupTrail's rules, as one pure decision both drivers carry out: when its next backup
//! runs, and from how the due run went, the status to write, the events to send and the run
//! to start. The drivers loop "decide → run → outcome → decide": a worker Job in a cluster,
//! the executor in-process in local mode.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::Event;
use super::schedule::{ScheduleError, next_occurrence};
use crate::api::{BackupTrail, Condition, RUN_NOW_ANNOTATION, TrailStatus, set_condition};
use crate::engine::catalog::backup_done;

/// When a BackupTrail's next backup runs, and the run's id (which names its Job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupDue {
    /// Now, as this run.
    Now(String),
    /// At this time (the next cron occurrence).
    At(DateTime<Utc>),
    /// Not until the spec or the run-now annotation changes.
    Never,
}

/// Without a schedule a trail backs up once per change of what it reads
/// ([`source_fingerprint`]); with one, at each cron occurrence after its last backup (or its
/// creation); and in both cases once per new `mimeo.dev/run-now` token.
pub fn due(
    t: &BackupTrail,
    st: &TrailStatus,
    now: DateTime<Utc>,
) -> Result<BackupDue, ScheduleError> {
    let hash = |s: &str| crate::base::hash::name_hash(s) as u16;
    let generation = t.metadata.generation.unwrap_or(0);
    if let Some(token) = t.annotations().get(RUN_NOW_ANNOTATION)
        && st.last_run_now.as_ref() != Some(token)
    {
        return Ok(BackupDue::Now(format!("{generation}-{:x}", hash(token))));
    }
    let Some(expr) = &t.spec.schedule else {
        // Status written before the fingerprint was: the generation decides, once.
        let backed_up = match &st.last_run_source {
            Some(source) => *source == source_fingerprint(t),
            None => st.last_run_generation == t.metadata.generation,
        };
        return Ok(if backed_up {
            BackupDue::Never
        } else {
            BackupDue::Now(format!("{generation}-{:x}", hash("")))
        });
    };
    let next = next_occurrence(expr, st.last_run, &t.metadata, now)?;
    Ok(if next <= now {
        BackupDue::Now(format!("at-{}", next.timestamp()))
    } else {
        BackupDue::At(next)
    })
}

/// What a backup of `t` reads and where it writes, as a short stable hash: the fields whose
/// change calls for a new backup of a trail without a schedule.
pub fn source_fingerprint(t: &BackupTrail) -> String {
    let s = &t.spec;
    let what = serde_json::json!([s.media_class_name, s.work_items, s.incremental]);
    format!("{:016x}", crate::base::hash::name_hash(&what.to_string()))
}

/// Records in `st` that the run `due` allowed has ended at `now`: the generation, the
/// run-now token and the time it answered, so that [`due`] does not run it again.
pub fn ran(t: &BackupTrail, st: &mut TrailStatus, now: DateTime<Utc>) {
    st.last_run = Some(now);
    st.last_run_generation = t.metadata.generation;
    st.last_run_source = Some(source_fingerprint(t));
    st.last_run_now = t.annotations().get(RUN_NOW_ANNOTATION).cloned();
}

/// How the run that [`due`] names went, as the driver saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum BackupRun {
    /// Not started yet (or its Job is gone): start it.
    NotStarted,
    /// Still running.
    Running,
    /// Done: `message` says what it wrote, `notes` what it skipped or saw change.
    Succeeded { message: String, notes: Vec<String> },
    /// Failed with `message` (after the driver's own retries: a Job's pods, the store's
    /// retry layer), with the notes of what it committed before.
    Failed { message: String, notes: Vec<String> },
}

/// What a BackupTrail's driver does now.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupDecision {
    /// The status to write (runs, conditions; the driver adds the catalog's counts).
    pub status: TrailStatus,
    /// The events to send.
    pub events: Vec<Event>,
    /// The run to plan and start, by id (it names the Job; a retry finds the same one).
    pub start: Option<String>,
    /// When the next scheduled backup is due, to look again then.
    pub wake: Option<DateTime<Utc>>,
}

/// The run [`decide`] is about at `now`, if one is due: what the driver looks up first.
pub fn due_run(t: &BackupTrail, now: DateTime<Utc>) -> Option<String> {
    let st = t.status.clone().unwrap_or_default();
    match due(t, &st, now) {
        Ok(BackupDue::Now(run)) if !t.spec.work_items.is_empty() => Some(run),
        _ => None,
    }
}

/// A BackupTrail's decision. `problem` is the first validation problem of the trail with
/// the resources it references (it waits for a change); `seen` is how the run of
/// [`due_run`] went. A failed run is recorded like a finished one and runs again on the next
/// generation, run-now token or scheduled occurrence, as a failed CronJob's Job does.
pub fn decide(
    t: &BackupTrail,
    problem: Option<String>,
    seen: BackupRun,
    now: DateTime<Utc>,
) -> BackupDecision {
    let name = t.name_any();
    let generation = t.metadata.generation;
    let mut d = BackupDecision {
        status: t.status.clone().unwrap_or_default(),
        events: Vec::new(),
        start: None,
        wake: None,
    };
    d.status.observed_generation = generation;
    let ready = |d: &mut BackupDecision, ok: bool, reason: &'static str, msg: String| {
        let mut c = Condition::new("Ready", ok, reason, msg.clone());
        c.observed_generation = generation;
        set_condition(&mut d.status.conditions, c);
        msg
    };
    let due = due(t, &d.status, now).map_err(|e| e.of("BackupTrail", &name).to_string());
    let run = match (problem, due) {
        (Some(msg), _) | (None, Err(msg)) => {
            let msg = ready(&mut d, false, "InvalidSpec", msg);
            d.events.push(Event::warning("InvalidSpec", msg));
            return d;
        }
        (None, Ok(BackupDue::Now(run))) if !t.spec.work_items.is_empty() => run,
        (None, Ok(BackupDue::At(at))) => {
            d.wake = Some(at);
            return d;
        }
        (None, Ok(_)) => return d,
    };
    match seen {
        BackupRun::NotStarted => {
            ready(
                &mut d,
                true,
                "BackupRunning",
                format!("backup run {run} started"),
            );
            d.events
                .push(Event::normal("BackupStarted", format!("run {run}")));
            d.start = Some(run);
        }
        BackupRun::Running => {}
        BackupRun::Succeeded { message, notes } => {
            let msg = backup_done(message, &notes);
            d.status.last_run_notes = notes;
            ran(t, &mut d.status, now);
            let warn = !d.status.last_run_notes.is_empty();
            let msg = ready(&mut d, true, "BackupSucceeded", msg);
            d.events.push(Event {
                warning: warn,
                reason: "BackupSucceeded",
                note: msg,
            });
        }
        BackupRun::Failed { message, notes } => {
            d.status.last_run_notes = notes;
            ran(t, &mut d.status, now);
            let msg = format!(
                "backup run {run} failed: {message}; it runs again on a spec change, a new \
                 {RUN_NOW_ANNOTATION} token or the next scheduled time"
            );
            let msg = ready(&mut d, false, "BackupFailed", msg);
            d.events.push(Event::warning("BackupFailed", msg));
        }
    }
    d
}

/// A due run whose task could not be planned (a source this driver cannot reach, a media
/// class not usable): it waits for a change, with the error's reason.
pub fn unplanned(st: &mut TrailStatus, generation: Option<i64>, e: &crate::Error) -> Event {
    let mut c = Condition::new("Ready", false, e.reason(), e.to_string());
    c.observed_generation = generation;
    set_condition(&mut st.conditions, c);
    Event::warning(e.reason(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupTrailSpec;

    fn trail(schedule: Option<&str>, generation: i64, run_now: Option<&str>) -> BackupTrail {
        let mut t = BackupTrail::new(
            "nightly",
            BackupTrailSpec {
                media_class_name: "tapes".into(),
                retention: "30d".into(),
                work_items: Vec::new(),
                streams: 1,
                incremental: false,
                schedule: schedule.map(String::from),
                max_expiry_percent: None,
            },
        );
        t.metadata.generation = Some(generation);
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-26T01:30:00Z".parse().unwrap(),
        ));
        if let Some(tok) = run_now {
            t.metadata.annotations =
                Some([(RUN_NOW_ANNOTATION.to_string(), tok.to_string())].into());
        }
        t
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn backups_run_per_generation_schedule_and_run_now_token() {
        let now = at("2026-11-26T01:45:00Z");
        let mut st = TrailStatus::default();
        // No schedule: once per generation.
        let due1 = due(&trail(None, 1, None), &st, now).unwrap();
        assert!(matches!(&due1, BackupDue::Now(r) if r.starts_with("1-")));
        ran(&trail(None, 1, None), &mut st, now);
        assert_eq!(due(&trail(None, 1, None), &st, now), Ok(BackupDue::Never));
        // A new run-now token runs once, with its own run id.
        let BackupDue::Now(run) = due(&trail(None, 1, Some("t1")), &st, now).unwrap() else {
            panic!("a new token is due")
        };
        assert_ne!(
            Ok(BackupDue::Now(run)),
            due(&trail(None, 1, Some("t2")), &st, now)
        );
        ran(&trail(None, 1, Some("t1")), &mut st, now);
        assert_eq!(
            due(&trail(None, 1, Some("t1")), &st, now),
            Ok(BackupDue::Never)
        );
        // A schedule: the first occurrence after creation, then after the last backup; a new
        // generation alone does not run it.
        let daily = Some("0 2 * * *");
        assert_eq!(
            due(&trail(daily, 1, None), &TrailStatus::default(), now),
            Ok(BackupDue::At(at("2026-11-26T02:00:00Z")))
        );
        let later = at("2026-11-26T02:00:30Z");
        assert_eq!(
            due(&trail(daily, 1, None), &TrailStatus::default(), later),
            Ok(BackupDue::Now(format!(
                "at-{}",
                at("2026-11-26T02:00:00Z").timestamp()
            )))
        );
        let mut done = TrailStatus::default();
        ran(
            &trail(daily, 1, None),
            &mut done,
            at("2026-11-26T02:01:00Z"),
        );
        assert_eq!(
            due(&trail(daily, 2, None), &done, later),
            Ok(BackupDue::At(at("2026-11-27T02:00:00Z")))
        );
        assert!(due(&trail(Some("daily"), 1, None), &done, later).is_err());
    }

    #[test]
    fn only_edits_to_what_is_read_start_a_backup() {
        let now = at("2026-11-26T01:45:00Z");
        let mut st = TrailStatus::default();
        ran(&trail(None, 1, None), &mut st, now);
        // Generation 2 changes the retention and the streams: nothing new to read.
        let mut edited = trail(None, 2, None);
        edited.spec.retention = "90d".into();
        edited.spec.streams = 4;
        assert_eq!(due(&edited, &st, now), Ok(BackupDue::Never));
        // Generation 3 adds a work item: backed up.
        edited.metadata.generation = Some(3);
        edited.spec.work_items.push(crate::api::WorkItem {
            name: "db".into(),
            source: Default::default(),
        });
        assert!(matches!(due(&edited, &st, now), Ok(BackupDue::Now(r)) if r.starts_with("3-")));
        // A status written before fingerprints: the generation decides.
        st.last_run_source = None;
        assert_eq!(due(&trail(None, 1, None), &st, now), Ok(BackupDue::Never));
        assert!(matches!(
            due(&trail(None, 2, None), &st, now),
            Ok(BackupDue::Now(_))
        ));
    }

    fn with_items(mut t: BackupTrail, st: Option<TrailStatus>) -> BackupTrail {
        t.spec.work_items.push(crate::api::WorkItem {
            name: "db".into(),
            source: Default::default(),
        });
        t.status = st;
        t
    }

    fn ready(d: &BackupDecision) -> (&str, &str, &str) {
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn a_backup_starts_finishes_and_fails_through_one_decision() {
        let now = at("2026-11-26T01:45:00Z");
        let t = with_items(trail(None, 1, None), None);
        let run = due_run(&t, now).expect("a new trail is due");
        let d = decide(&t, None, BackupRun::NotStarted, now);
        assert_eq!(d.start.as_deref(), Some(run.as_str()));
        assert_eq!(ready(&d).1, "BackupRunning");
        assert_eq!(d.events[0].reason, "BackupStarted");
        let t = with_items(trail(None, 1, None), Some(d.status));
        let d = decide(&t, None, BackupRun::Running, now);
        assert_eq!(
            (d.start.clone(), d.events.len()),
            (None, 0),
            "a running run waits"
        );
        let done = decide(
            &t,
            None,
            BackupRun::Succeeded {
                message: "1 instances written".into(),
                notes: vec!["db: a.txt changed while read".into()],
            },
            now,
        );
        assert_eq!(ready(&done).1, "BackupSucceeded");
        assert!(
            ready(&done).2.contains("status.lastRunNotes"),
            "{:?}",
            ready(&done)
        );
        assert!(done.events[0].warning, "a run with notes warns");
        let after = with_items(trail(None, 1, None), Some(done.status));
        assert_eq!(due_run(&after, now), None, "one backup per change");

        let failed = decide(
            &t,
            None,
            BackupRun::Failed {
                message: "source unreachable".into(),
                notes: Vec::new(),
            },
            now,
        );
        let (ok, reason, msg) = ready(&failed);
        assert_eq!((ok, reason), ("False", "BackupFailed"));
        assert!(
            msg.contains("source unreachable") && msg.contains(RUN_NOW_ANNOTATION),
            "{msg}"
        );
        assert!(failed.events[0].warning);
        let st = Some(failed.status);
        assert_eq!(
            due_run(&with_items(trail(None, 1, None), st.clone()), now),
            None
        );
        assert!(
            due_run(&with_items(trail(None, 1, Some("again")), st), now).is_some(),
            "a new run-now token runs a failed backup again"
        );
    }

    #[test]
    fn invalid_trails_and_schedules_wait_and_idle_trails_wake_on_schedule() {
        let now = at("2026-11-26T01:45:00Z");
        let t = with_items(trail(None, 1, None), None);
        let d = decide(
            &t,
            Some("field spec.x: bad".into()),
            BackupRun::NotStarted,
            now,
        );
        assert_eq!(ready(&d), ("False", "InvalidSpec", "field spec.x: bad"));
        assert_eq!(d.start, None);
        let bad = with_items(trail(Some("daily"), 1, None), None);
        let d = decide(&bad, None, BackupRun::NotStarted, now);
        assert_eq!(ready(&d).1, "InvalidSpec");
        assert!(ready(&d).2.contains("spec.schedule"), "{:?}", ready(&d));
        let daily = with_items(trail(Some("0 2 * * *"), 1, None), None);
        let d = decide(&daily, None, BackupRun::NotStarted, now);
        assert_eq!((d.start, d.wake), (None, Some(at("2026-11-26T02:00:00Z"))));
        assert!(d.events.is_empty());
        let empty = trail(None, 1, None);
        let d = decide(&empty, None, BackupRun::NotStarted, now);
        assert_eq!(
            (d.start, d.events.len()),
            (None, 0),
            "no work items, no run"
        );
    }
}
