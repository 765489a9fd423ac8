//! A BackupTrail's rule: when its next backup runs.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::schedule::{ScheduleError, next_occurrence};
use crate::api::{BackupTrail, RUN_NOW_ANNOTATION, TrailStatus};

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
}
