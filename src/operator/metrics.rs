//! Prometheus metrics of the operator.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
            bytes_copied: Counter::default(),
            catalog_entries: Family::default(),
            last_success: Family::default(),
            errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Finished worker runs", m.runs.clone());
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

impl Metrics {
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
        m.runs
            .get_or_create(&RunLabels {
                kind: "copy".into(),
                outcome: "Succeeded".into(),
            })
            .inc();
        m.catalog_entries
            .get_or_create(&StateLabels {
                state: "Valid".into(),
            })
            .set(3);
        let text = m.encode();
        assert!(
            text.contains(r#"mimeo_runs_total{kind="copy",outcome="Succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mimeo_catalog_entries{state="Valid"} 3"#),
            "{text}"
        );
    }
}
