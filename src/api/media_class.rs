//! MediaClass: where volumes live and what they are like.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, SecretRef, default_true};

/// Where and how volumes of this class are stored.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "mimeo.dev",
    version = "v1alpha1",
    kind = "MediaClass",
    namespaced,
    shortname = "mc",
    status = "MediaClassStatus",
    printcolumn(
        name = "Capacity",
        type_ = "string",
        json_path = ".spec.volumeCapacity"
    ),
    printcolumn(name = "Block", type_ = "string", json_path = ".spec.blockSize"),
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.location"),
    printcolumn(name = "Available", type_ = "boolean", json_path = ".spec.available"),
    printcolumn(name = "Reachable", type_ = "boolean", json_path = ".status.reachable"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.blockSize) || !isQuantity(self.volumeCapacity) || !isQuantity(self.blockSize) || quantity(self.volumeCapacity).compareTo(quantity(self.blockSize)) >= 0"
).message("spec.volumeCapacity must be at least spec.blockSize").field_path(".volumeCapacity"))]
#[serde(rename_all = "camelCase")]
pub struct MediaClassSpec {
    /// Exactly one backend.
    pub backend: Backend,
    /// Size at which a volume is sealed and the trail continues on a new one (e.g. `64Mi`).
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("must be a positive quantity such as 64Mi or 10Gi"))]
    pub volume_capacity: String,
    /// Block size on this media (default `1Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("must be a positive quantity such as 64Ki or 1Mi"))]
    pub block_size: Option<String>,
    /// Free text: cost or quality class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// `onsite` or `offsite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// False when the media are away (shipped offsite, offline) and must not be read.
    #[serde(default = "default_true")]
    pub available: bool,
}

/// Physical location of the media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// On site.
    Onsite,
    /// Off site (vaulted).
    Offsite,
}

/// Exactly one of `filesystem`, `pvc`, `s3`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "[has(self.filesystem), has(self.pvc), has(self.s3)].filter(x, x).size() == 1"
).message("exactly one of filesystem, pvc, s3 must be set"))]
pub struct Backend {
    /// A directory: local mode, or a hostPath/PVC mount in the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemBackend>,
    /// A PersistentVolumeClaim mounted by worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcBackend>,
    /// An S3 bucket (AWS, MinIO, any S3-compatible server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Backend>,
}

/// Volumes in a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FilesystemBackend {
    /// Directory holding the volumes.
    pub path: String,
}

/// Volumes in a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcBackend {
    /// Claim name.
    pub claim_name: String,
    /// Directory inside the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// Volumes as objects in an S3 bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Backend {
    /// Endpoint URL; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing (MinIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; the standard AWS
    /// environment when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// Observed state of a MediaClass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaClassStatus {
    /// Whether the backend answered the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// Volumes on this media class, all trails.
    #[serde(default)]
    pub volumes: u64,
    /// Bytes on this media class, all trails.
    #[serde(default)]
    pub bytes: u64,
    /// Standard conditions.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
