//! Types shared by several kinds.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reference to a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// A PersistentVolumeClaim and a path inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcLocation {
    /// Name of the claim, in the resource's namespace.
    pub claim_name: String,
    /// Path inside the claim; the claim's root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// An S3 prefix, either on the bucket of an S3 MediaClass or on an explicit endpoint and bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Take endpoint, bucket, region and credentials from this S3 MediaClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_class_name: Option<String>,
    /// S3 endpoint URL; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bucket (when no media class is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix of the objects.
    #[serde(default)]
    pub prefix: String,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (MinIO and most self-hosted servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Secret with the credentials (when no media class is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// Where data is read from (a work item's source) or written to (a restore's target):
/// exactly one of `path`, `pvc`, `s3`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DataLocation {
    /// A directory on the machine (local mode) or in the worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A directory in a PersistentVolumeClaim (operator only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcLocation>,
    /// An S3 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
}

/// State of one volume of a trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeState {
    /// Open for writing.
    Filling,
    /// Sealed: reached its capacity.
    Full,
    /// Every entry on it expired; its data was removed and it can be reused.
    Scratch,
}

/// One volume as shown in a trail's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// Volume name, unique within the trail.
    pub name: String,
    /// Bytes written to the volume (all segments).
    pub bytes_used: u64,
    /// Filling, Full or Scratch.
    pub state: VolumeState,
}

/// A standard condition, as in `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: DateTime<Utc>,
    /// Generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// Same state and words, whatever the times: a condition already reported is not news.
    pub fn same_as(&self, other: &Condition) -> bool {
        (&self.type_, &self.status, &self.reason, &self.message)
            == (&other.type_, &other.status, &other.reason, &other.message)
    }

    /// Builds a condition; `ok` maps to status `True`/`False`.
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Utc::now(),
            observed_generation: None,
        }
    }
}

/// Replaces the condition of the same type, keeping its transition time when nothing but the
/// time changed (so status is only rewritten when it really changes).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time;
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn default_one() -> u32 {
    1
}
