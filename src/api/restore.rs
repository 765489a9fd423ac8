//! Restore: bring a work item instance back, from the best available copy.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::catalog::Role;
use super::common::{Condition, DataLocation};

/// Restores one work item instance (and its incremental chain) to a target.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mimeo.dev",
    version = "v1alpha1",
    kind = "Restore",
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message("metadata.name must be a DNS label of at most 63 characters: it prefixes volume, catalog entry and Job names"),
    namespaced,
    shortname = "rst",
    status = "RestoreStatus",
    printcolumn(name = "Work Item", type_ = "string", json_path = ".spec.workItem"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "From",
        type_ = "string",
        json_path = ".status.restoredFrom.trail"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".status.restoredFrom.role"
    ),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Work item to restore.
    pub work_item: String,
    /// BackupTrail the work item belongs to (needed when several trails have that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_trail: Option<String>,
    /// `latest`, an RFC 3339 time (newest at or before it), or an instance id.
    #[serde(default = "latest")]
    pub instance: String,
    /// `Auto` (default), `Original`, `Duplicate`, or `{trail: NAME}`.
    #[serde(default)]
    pub source: SourceChoice,
    /// Where to write the restored tree.
    pub target: DataLocation,
}

/// Which copy a restore reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SourceChoice {
    /// One of the keywords.
    Keyword(SourceKeyword),
    /// A named trail.
    Trail {
        /// Trail name (BackupTrail or DuplicationTrail).
        trail: String,
    },
    /// Anything else. The schema cannot refuse it (a string or an object), and a value that
    /// failed to deserialize would break the operator's watch of every Restore: it is kept,
    /// reported by validation naming `spec.source`, and never planned.
    Invalid(serde_json::Value),
}

impl Default for SourceChoice {
    fn default() -> Self {
        SourceChoice::Keyword(SourceKeyword::Auto)
    }
}

/// Keywords accepted by `spec.source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKeyword {
    /// Prefer an available duplicate, else the original.
    Auto,
    /// The original only.
    Original,
    /// A duplicate only.
    Duplicate,
}

impl JsonSchema for SourceChoice {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SourceChoice".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A string keyword or an object: Kubernetes structural schemas cannot say "one of a
        // string or an object", so the field keeps unknown fields and Mimeo validates it.
        schemars::json_schema!({
            "description": "Auto (default), Original, Duplicate, or {trail: NAME}.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Phase of a restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestorePhase {
    /// Not started.
    #[default]
    Pending,
    /// In progress.
    Running,
    /// Done; the target holds the instance.
    Succeeded,
    /// Failed; `reason` says why.
    Failed,
}

/// The copy a restore (or one link of its chain) read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// Trail that held the copy.
    pub trail: String,
    /// Original or Duplicate.
    pub role: Role,
    /// Volumes read.
    pub volumes: Vec<String>,
    /// Instance id of this link.
    #[serde(default)]
    pub instance_id: String,
}

impl RestoredFrom {
    /// Name of the CatalogEntry of this copy (as [`super::CatalogEntrySpec::object_name`]).
    pub fn entry_name(&self) -> String {
        format!("{}.{}", self.trail, self.instance_id)
    }
}

/// Observed state of a restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default)]
    pub phase: RestorePhase,
    /// The copy of the requested instance that was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// Every link of the incremental chain, oldest first, each from its best copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<RestoredFrom>,
    /// Why that copy (or why none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Copies this restore found damaged while reading them (now Missing), with why: after
    /// each, it read the next best copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<String>,
    /// Bytes of archive read.
    #[serde(default)]
    pub bytes: u64,
    /// Wall time of the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// End time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Standard conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn latest() -> String {
    "latest".into()
}
