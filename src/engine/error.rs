//! What can go wrong while the engine moves data: the media's own failures and the spec's
//! (wrapped, their messages unchanged), and the engine's: a source or target file, an archive
//! entry, an entry refused for safety, a copy that differs from its source, a key that is not
//! there.

use crate::api::SpecError;
use crate::base::failure::{IoError, Stopped};
use crate::media::error::MediaError;

/// Errors of the engine (backup, duplication, restore, expiry, planning).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A spec the planner or a task cannot use.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The media failed, refused, or hold content that fails its checks.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A source or restore-target file.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A worker thread or stream task ended without its answer.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// A restore entry was refused because it would escape the target.
    #[error("refused to restore {entry}: {reason}")]
    Refused { entry: String, reason: String },
    /// Work items of a run that failed, named with why; the others were committed.
    #[error("work items failed: {0}")]
    ItemsFailed(String),
    /// A media class's key that is not there to use. Never logged with its value.
    #[error("Secret {secret}: {detail}")]
    Secret { secret: String, detail: String },
    /// Data Mimeo wrote itself (a file index, a deletion list) that does not decode.
    #[error("{what} is not valid: {detail}")]
    Decode { what: String, detail: String },
    /// A value that does not encode (never expected: the types are Mimeo's own).
    #[error("cannot encode {what}: {detail}")]
    Encode { what: String, detail: String },
    /// A source file that changed while it was archived, or an archive stream that failed.
    #[error("{entry}: {detail}")]
    Archive { entry: String, detail: String },
    /// A copy whose bytes differ from what its source delivered: nothing is committed.
    #[error("copy of {what}: {detail}")]
    CopyMismatch { what: String, detail: String },
    /// A media backend this driver cannot reach (a PVC without the operator).
    #[error("{0}")]
    Unsupported(String),
}

/// Result of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// The failure of a file-system call on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        IoError::new(path, source).into()
    }

    /// Running the same task again cannot succeed (damaged media, a wrong key, an entry
    /// refused for safety, an invalid spec, items that failed for such reasons).
    pub fn is_permanent(&self) -> bool {
        match self {
            EngineError::Media(e) => e.is_permanent(),
            EngineError::Spec(_)
            | EngineError::Refused { .. }
            | EngineError::ItemsFailed(_)
            | EngineError::Secret { .. }
            | EngineError::Decode { .. } => true,
            _ => false,
        }
    }

    /// Retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, EngineError::Media(e) if e.is_transient())
    }

    /// A short CamelCase reason, used for Kubernetes Events and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::Spec(e) => e.reason(),
            EngineError::Media(e) => e.reason(),
            EngineError::Io(_) => "IoError",
            EngineError::Stopped(_) => "Stopped",
            EngineError::Refused { .. } => "RefusedEntry",
            EngineError::ItemsFailed(_) => "WorkItemsFailed",
            EngineError::Secret { .. } => "SecretUnusable",
            EngineError::Decode { .. } => "DecodeError",
            EngineError::Encode { .. } => "EncodeError",
            EngineError::Archive { .. } => "ArchiveError",
            EngineError::CopyMismatch { .. } => "CopyMismatch",
            EngineError::Unsupported(_) => "Unsupported",
        }
    }
}
