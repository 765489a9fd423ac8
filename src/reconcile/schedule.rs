//! Cron schedules, one rule for every kind that has one.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::SpecError;
use crate::api::validate::parse_cron;

/// Why a schedule gives no next time: a spec problem, so the object waits for a change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `spec.schedule` is not a cron expression.
    #[error(transparent)]
    Cron(#[from] crate::api::validate::ValueError),
    /// The expression has no occurrence after the time asked (e.g. 30 February).
    #[error("{expr:?} has no occurrence after {after}: {detail}")]
    NoOccurrence {
        expr: String,
        after: DateTime<Utc>,
        detail: String,
    },
}

impl ScheduleError {
    /// As the spec error about the `spec.schedule` of `kind`/`name` (an InvalidSpec).
    pub fn of(self, kind: &str, name: &str) -> SpecError {
        SpecError::Invalid {
            source_name: "schedule".into(),
            kind: kind.into(),
            name: name.into(),
            field: "spec.schedule".into(),
            message: self.to_string(),
        }
    }
}

/// The first occurrence of the cron schedule `expr` after the last run, or after the object's
/// creation when it never ran: an occurrence that passed while nothing ran (the operator
/// down, no local apply) is due at once, and only once.
pub fn next_occurrence(
    expr: &str,
    last_run: Option<DateTime<Utc>>,
    meta: &ObjectMeta,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ScheduleError> {
    let cron = parse_cron(expr).map_err(ScheduleError::Cron)?;
    let after = last_run
        .or_else(|| {
            let created = meta.creation_timestamp.as_ref()?;
            DateTime::from_timestamp(created.0.as_second(), 0)
        })
        .unwrap_or(now);
    cron.find_next_occurrence(&after, false)
        .map_err(|e| ScheduleError::NoOccurrence {
            expr: expr.to_owned(),
            after,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_occurrence_follows_the_last_run_or_the_creation() {
        let meta = ObjectMeta {
            creation_timestamp: Some(Time("2026-11-26T01:30:00Z".parse().unwrap())),
            ..Default::default()
        };
        let now = at("2026-11-28T12:00:00Z");
        let daily = "0 2 * * *";
        // Never ran: the first occurrence after creation, long past, so due now (once).
        assert_eq!(
            next_occurrence(daily, None, &meta, now),
            Ok(at("2026-11-26T02:00:00Z"))
        );
        let last = Some(at("2026-11-28T02:00:05Z"));
        assert_eq!(
            next_occurrence(daily, last, &meta, now),
            Ok(at("2026-11-29T02:00:00Z"))
        );
        // Without a creation time (never stored): from now.
        assert_eq!(
            next_occurrence(daily, None, &ObjectMeta::default(), now),
            Ok(at("2026-11-29T02:00:00Z"))
        );
        assert!(next_occurrence("every day", None, &meta, now).is_err());
    }
}
