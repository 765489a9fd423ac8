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
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message("metadata.name must be a DNS label of at most 63 characters: it prefixes volume, catalog entry and Job names"),
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
#[x_kube(validation = Rule::new(
    "has(self.encryption) == has(oldSelf.encryption) && (!has(self.encryption) || self.encryption == oldSelf.encryption)"
).message("spec.encryption is immutable: volumes already written need the key they were written with; create a new MediaClass instead").field_path(".encryption"))]
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
    /// Encrypt the data blocks written to this class's volumes (duplicates sent offsite, or
    /// backups). Immutable. Labels, indexes and manifests (names, sizes, digests) stay
    /// readable, so a trail can be rescanned without the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// Encryption at rest: ChaCha20-Poly1305 per block, with a random nonce, bound to the block's
/// place on the media.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Secret whose entry `MIMEO_ENCRYPTION_KEY` holds the key: 32 random bytes as 64 hex
    /// characters (`openssl rand -hex 32`) or base64. Keep a copy outside the cluster:
    /// without it the copies cannot be read.
    pub key_secret_ref: SecretRef,
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
