//! DuplicationPolicy: what to copy, from which trails, to which trails, and when.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, default_one, default_true};

/// Copies selected instances from source trails onto duplication trails.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mimeo.dev",
    version = "v1alpha1",
    kind = "DuplicationPolicy",
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message("metadata.name must be a DNS label of at most 63 characters: it prefixes volume, catalog entry and Job names"),
    namespaced,
    shortname = "dp",
    status = "DuplicationPolicyStatus",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Outcome",
        type_ = "string",
        json_path = ".status.lastRun.outcome"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.lastRun.instances"
    ),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.lastRun.bytes"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun.end"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("size(self.targets) > 0").message("spec.targets must name at least one DuplicationTrail").field_path(".targets"))]
#[x_kube(validation = Rule::new("!(self.distribute && has(self.mode) && self.mode == 'Media')").message("spec.distribute cannot be used with mode Media").field_path(".distribute"))]
#[serde(rename_all = "camelCase")]
pub struct DuplicationPolicySpec {
    /// BackupTrail (or DuplicationTrail) names to copy from.
    pub source_trails: Vec<String>,
    /// Which instances to copy.
    #[serde(default)]
    pub selection: Selection,
    /// DuplicationTrail names; each selected instance is copied to every target.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Spread work items across the targets instead, one copy each.
    #[serde(default)]
    pub distribute: bool,
    /// Logical (default) or Media (whole-volume raw copy, the conventional baseline).
    #[serde(default)]
    pub mode: DuplicationMode,
    /// Parallel readers/writers.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: u32,
    /// Cron schedule; absent = run whenever new instances appear on a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Stop planning new runs.
    #[serde(default)]
    pub suspend: bool,
    /// Valid copies of each selected instance (originals and duplicates, on any trail) that
    /// expiry must leave while a target of this policy still wants the instance (its longest
    /// target retention has not passed): a source copy past its retention is kept rather than
    /// expired when its duplicates are missing or damaged.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 16))]
    pub min_copies: u32,
}

/// Selection of work item instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// Work item name globs to include (all when empty).
    #[serde(default)]
    pub work_items: Vec<String>,
    /// Work item name globs to exclude.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Only the newest instance of each work item.
    #[serde(default)]
    pub latest_only: bool,
    /// Skip instances that already have a Valid copy on the target.
    #[serde(default = "default_true")]
    pub uncopied_only: bool,
    /// Only instances backed up at least this long ago (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Only instances backed up at most this long ago (duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_than: Option<String>,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            work_items: Vec::new(),
            exclude: Vec::new(),
            latest_only: false,
            uncopied_only: true,
            older_than: None,
            newer_than: None,
        }
    }
}

/// Logical or media duplication.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DuplicationMode {
    /// Read each selected instance as a stream and write it anew.
    #[default]
    Logical,
    /// Copy whole volumes raw, 1:1 (same backend type).
    Media,
}

/// Observed state of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuplicationPolicyStatus {
    /// Runs started so far; names the next run's Jobs deterministically.
    #[serde(default)]
    pub runs: u64,
    /// The last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
    /// Next scheduled run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<DateTime<Utc>>,
    /// Value of the `mimeo.dev/run-now` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_now: Option<String>,
    /// Standard conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Figures of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Start time.
    pub start: DateTime<Utc>,
    /// End time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// Instances copied.
    pub instances: u64,
    /// Uncopied instances this run left for the next, which starts as soon as this one
    /// succeeds: a worker's task holds only so much (a ConfigMap holds 1 MiB).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left: u64,
    /// Bytes written.
    pub bytes: u64,
    /// `Succeeded`, `Failed` or `Running`.
    pub outcome: String,
    /// Error or summary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
