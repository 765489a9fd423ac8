//! What can go wrong on media: a store that fails or refuses, content that fails its checks,
//! media that cannot be reached, a key that does not fit. Each variant names the store, key,
//! volume, offset or work item, so a message is enough to act on.

use crate::base::failure::Stopped;

/// Errors of the media layer (object stores, volumes, trails, manifests).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// An object store (filesystem directory or S3 bucket) failed.
    #[error("{store}: {key}: {message}")]
    Store {
        store: String,
        key: String,
        message: String,
        /// Worth retrying (throttling, 5xx, connection reset).
        transient: bool,
    },
    /// A write-once key already exists.
    #[error("{store}: {key}: already exists (media objects are written once)")]
    AlreadyExists { store: String, key: String },
    /// An object that should exist does not.
    #[error("{store}: {key}: not found")]
    NotFound { store: String, key: String },
    /// Media content failed a check (CRC, label, truncation, missing segment).
    #[error("corrupt media: volume {volume}, offset {offset}, work item {work_item}: {detail}")]
    Corrupt {
        volume: String,
        offset: u64,
        work_item: String,
        detail: String,
    },
    /// Media that cannot be read now: a volume with no object at all where a copy's segment
    /// should be (an unmounted filesystem, a bucket emptied or replaced), a class or server
    /// that does not answer. Never evidence of damage: the copy stays Valid.
    #[error(
        "media not reachable: media class {media_class}, volume {volume}, work item {work_item}: {detail}"
    )]
    Unreachable {
        media_class: String,
        volume: String,
        work_item: String,
        detail: String,
    },
    /// Intact media that this media class's key cannot decrypt (a wrong or missing key): the
    /// copy is not damaged, so it is never marked Missing for this.
    #[error(
        "cannot decrypt: media class {media_class}, volume {volume}, offset {offset}, work item {work_item}: {detail}"
    )]
    Key {
        media_class: String,
        volume: String,
        offset: u64,
        work_item: String,
        detail: String,
    },
    /// Media written in a format this version does not read (a newer manifest version).
    #[error("{0}")]
    Unsupported(String),
    /// A store's worker thread or upload task ended without its answer.
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// Result of the media layer.
pub type Result<T, E = MediaError> = std::result::Result<T, E>;

impl MediaError {
    /// Running the same read again cannot succeed: the content is damaged, or no key here
    /// opens it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, MediaError::Corrupt { .. } | MediaError::Key { .. })
    }

    /// Retrying the same store call may succeed (throttling, 5xx, a connection reset).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MediaError::Store {
                transient: true,
                ..
            }
        )
    }

    /// A short CamelCase reason, used for Kubernetes Events and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            MediaError::Store { .. } => "StoreError",
            MediaError::AlreadyExists { .. } => "AlreadyExists",
            MediaError::NotFound { .. } => "NotFound",
            MediaError::Corrupt { .. } => "CorruptMedia",
            MediaError::Key { .. } => "EncryptionKeyMismatch",
            MediaError::Unreachable { .. } => "MediaUnreachable",
            MediaError::Unsupported(_) => "Unsupported",
            MediaError::Stopped(_) => "Stopped",
        }
    }
}
