//! Prometheus metrics of the operator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::EntryState;

/// Labels of run metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// backup, copy, restore, expire.
    pub kind: String,
    /// Succeeded or Failed.
    pub outcome: String,
}

/// Labels naming one resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Labels of catalog gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Valid, Expired or Missing.
    pub state: String,
}

/// Labels of reconcile errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Controller (kind).
    pub controller: String,
    /// Error reason.
    pub reason: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Finished runs by kind and outcome.
    pub runs: Family<RunLabels, Counter>,
    /// Duration of finished runs by kind and outcome, seconds.
    pub run_seconds: Family<RunLabels, Histogram, fn() -> Histogram>,
    /// Bytes planned for copy by finished logical duplication runs.
    pub bytes_copied: Counter,
    /// Catalog entries by state.
    pub catalog_entries: Family<StateLabels, Gauge>,
    /// Unix time of the last successful run per policy.
    pub last_success: Family<ResourceLabels, Gauge>,
    /// Reconcile errors.
    pub errors: Family<ErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mimeo");
        let m = Metrics {
            runs: Family::default(),
            run_seconds: Family::new_with_constructor(run_histogram),
            bytes_copied: Counter::default(),
            catalog_entries: Family::default(),
            last_success: Family::default(),
            errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Finished worker runs", m.runs.clone());
        registry.register(
            "run_duration_seconds",
            "Duration of finished worker runs",
            m.run_seconds.clone(),
        );
        registry.register(
            "bytes_copied",
            "Bytes copied by duplication runs",
            m.bytes_copied.clone(),
        );
        registry.register(
            "catalog_entries",
            "Catalog entries by state",
            m.catalog_entries.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Last successful run per policy",
            m.last_success.clone(),
        );
        registry.register("reconcile_errors", "Reconcile errors", m.errors.clone());
        Metrics { registry, ..m }
    }
}

fn state_index(s: EntryState) -> usize {
    match s {
        EntryState::Valid => 0,
        EntryState::Expired => 1,
        EntryState::Missing => 2,
    }
}

/// Buckets from 1 s to about 9 hours (a worker's default deadline is 6 hours).
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Metrics {
    /// Counts a finished run, and its duration when known.
    pub fn finished(&self, kind: &str, outcome: &str, seconds: Option<f64>) {
        let labels = RunLabels {
            kind: kind.into(),
            outcome: outcome.into(),
        };
        self.runs.get_or_create(&labels).inc();
        if let Some(s) = seconds {
            self.run_seconds.get_or_create(&labels).observe(s);
        }
    }

    /// Sets the catalog gauges from the entries' states (all three states are always set, so a
    /// state that emptied shows 0).
    pub fn set_catalog(&self, states: impl IntoIterator<Item = EntryState>) {
        let mut counts = [0i64; 3];
        for s in states {
            counts[state_index(s)] += 1;
        }
        for s in [EntryState::Valid, EntryState::Expired, EntryState::Missing] {
            self.catalog_entries
                .get_or_create(&StateLabels {
                    state: format!("{s:?}"),
                })
                .set(counts[state_index(s)]);
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode to String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_runs_and_catalog_states() {
        let m = Metrics::default();
        m.finished("copy", "Succeeded", Some(3.5));
        m.finished("expire", "Succeeded", None);
        m.set_catalog([
            EntryState::Valid,
            EntryState::Valid,
            EntryState::Expired,
            EntryState::Valid,
        ]);
        let text = m.encode();
        for want in [
            r#"mimeo_runs_total{kind="copy",outcome="Succeeded"} 1"#,
            r#"mimeo_runs_total{kind="expire",outcome="Succeeded"} 1"#,
            r#"mimeo_run_duration_seconds_count{kind="copy",outcome="Succeeded"} 1"#,
            r#"mimeo_catalog_entries{state="Valid"} 3"#,
            r#"mimeo_catalog_entries{state="Missing"} 0"#,
        ] {
            assert!(text.contains(want), "{want} not in {text}");
        }
    }
}
