//! BackupTrail and DuplicationTrail: ordered sets of volumes that backups and copies write to.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DataLocation, VolumeStatus, default_one};

/// A trail that backups write to, and the backups themselves.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mimeo.dev",
    version = "v1alpha1",
    kind = "BackupTrail",
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message("metadata.name must be a DNS label of at most 63 characters: it prefixes volume, catalog entry and Job names"),
    namespaced,
    shortname = "bt",
    status = "TrailStatus",
    printcolumn(name = "Media", type_ = "string", json_path = ".spec.mediaClassName"),
    printcolumn(name = "Retention", type_ = "string", json_path = ".spec.retention"),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".status.instances"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastRun"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupTrailSpec {
    /// MediaClass of the volumes.
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable: create a new trail instead"))]
    pub media_class_name: String,
    /// How long instances are kept, e.g. `30d`, `7y`, `168h`.
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhdwy])+$') && !self.matches('^(0+[smhdwy])+$')").message("must be a positive duration such as 30d, 7y, 168h or 1h30m"))]
    pub retention: String,
    /// What to back up.
    #[serde(default)]
    pub work_items: Vec<WorkItem>,
    /// Parallel backup streams; their blocks interleave on the volumes.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 64))]
    pub streams: u32,
    /// After a full backup, back up only what changed.
    #[serde(default)]
    pub incremental: bool,
    /// Cron schedule; absent = once per spec generation or on the run-now annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The mass-expiry breaker: an expiry sweep that would free more than this percentage of
    /// the trail's volumes in use (a clock or retention set wrong) stops, reports
    /// `ExpiryHalted`, and waits for the `mimeo.dev/allow-mass-expiry` annotation. Default 50;
    /// 100 turns the breaker off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_expiry_percent: Option<u32>,
}

/// A named unit of backup: a directory, a PVC or an S3 prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkItem {
    /// Name, a DNS label; instances and catalog entries are named after it.
    pub name: String,
    /// Where its data is read from.
    pub source: DataLocation,
}

/// A trail that logical copies are written to.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mimeo.dev",
    version = "v1alpha1",
    kind = "DuplicationTrail",
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message("metadata.name must be a DNS label of at most 63 characters: it prefixes volume, catalog entry and Job names"),
    namespaced,
    shortname = "dt",
    status = "TrailStatus",
    printcolumn(name = "Media", type_ = "string", json_path = ".spec.mediaClassName"),
    printcolumn(name = "Retention", type_ = "string", json_path = ".spec.retention"),
    printcolumn(name = "Layout", type_ = "string", json_path = ".spec.layout"),
    printcolumn(name = "Copies", type_ = "integer", json_path = ".status.instances"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DuplicationTrailSpec {
    /// MediaClass of the volumes.
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable: create a new trail instead"))]
    pub media_class_name: String,
    /// How long copies are kept, counted from the backup time of the instance.
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhdwy])+$') && !self.matches('^(0+[smhdwy])+$')").message("must be a positive duration such as 30d, 7y, 168h or 1h30m"))]
    pub retention: String,
    /// Sequential (each instance contiguous) or Interleaved (parallel writers share volumes).
    #[serde(default)]
    pub layout: Layout,
    /// The mass-expiry breaker: an expiry sweep that would free more than this percentage of
    /// the trail's volumes in use (a clock or retention set wrong) stops, reports
    /// `ExpiryHalted`, and waits for the `mimeo.dev/allow-mass-expiry` annotation. Default 50;
    /// 100 turns the breaker off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_expiry_percent: Option<u32>,
}

/// How copies are laid out on a duplication trail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Layout {
    /// Each work item instance is one contiguous extent per volume: fastest restore.
    #[default]
    Sequential,
    /// Parallel writers share volumes: fastest duplication.
    Interleaved,
}

/// Observed state of a trail (both kinds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrailStatus {
    /// Volumes of the trail.
    #[serde(default)]
    pub volumes: Vec<VolumeStatus>,
    /// Bytes on the trail's volumes.
    #[serde(default)]
    pub bytes: u64,
    /// Valid instances (backups or copies) on the trail.
    #[serde(default)]
    pub instances: u64,
    /// End of the last backup (BackupTrail) or copy (DuplicationTrail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DateTime<Utc>>,
    /// What the last backup skipped or saw change while reading, `work item: note` (each
    /// CatalogEntry's `spec.notes`); empty for a clean run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_run_notes: Vec<String>,
    /// Spec generation whose once-per-generation backup has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_generation: Option<i64>,
    /// Fingerprint of what that backup read (media class, work items, incremental): an edit
    /// that changes none of them (a retention, the streams) starts no backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_source: Option<String>,
    /// Value of the `mimeo.dev/run-now` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_now: Option<String>,
    /// Value of the `mimeo.dev/rescan` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rescan: Option<String>,
    /// Value of the `mimeo.dev/allow-mass-expiry` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mass_expiry_ack: Option<String>,
    /// Standard conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
