//! The one error type of Mimeo. Every variant says *where* (file, resource, field, volume, offset,
//! work item) so that a user can act on the message without reading logs.

use std::path::PathBuf;

/// Errors raised anywhere in Mimeo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A resource failed validation; `field` is the JSON path of the offending field.
    #[error("{source_name}: {kind}/{name}: field {field}: {message}")]
    Invalid {
        source_name: String,
        kind: String,
        name: String,
        field: String,
        message: String,
    },
    /// Input that is not a resource at all (bad YAML, unknown kind).
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    /// Local file-system failure, with the path involved.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// No copy of an instance can be read; `reason` lists why each candidate was skipped.
    #[error("no copy available: {reason}")]
    Unavailable { reason: String },
    /// A restore entry was refused because it would escape the target.
    #[error("refused to restore {entry}: {reason}")]
    Refused { entry: String, reason: String },
    /// Work items of a run that failed, named with why; the others were committed.
    #[error("work items failed: {0}")]
    ItemsFailed(String),
    /// A feature that this driver cannot provide (e.g. PVCs in local mode).
    #[error("{0}")]
    Unsupported(String),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A command line that cannot be carried out (an unknown kind, a bad selector, a name that
    /// is not one): exits with [`EXIT_USAGE`], like a wrong flag.
    #[error("{0}")]
    Usage(String),
    /// A resource that was named but does not exist.
    #[error("{kind} {name:?} not found")]
    ResourceNotFound { kind: String, name: String },
    /// A Secret that cannot give what a media class needs (missing, no such entry, a key
    /// that is not one). Never logged with its value.
    #[error("Secret {secret}: {detail}")]
    Secret { secret: String, detail: String },
    /// Data Mimeo wrote itself (a task, a file index, a deletion list) that does not decode.
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
    /// A task that cannot be handed to a worker as it is.
    #[error("{what} is {size} bytes, over the limit of {limit}: {hint}")]
    TooLarge {
        what: String,
        size: usize,
        limit: usize,
        hint: &'static str,
    },
    /// An object the API server returned without a field it always sets.
    #[error("{object} has no {field}")]
    MissingField { object: String, field: &'static str },
    /// An object that other writers kept changing while this one tried to update it.
    #[error("{object}: it kept changing while it was updated")]
    Contended { object: String },
    /// A thread or task that ended without an answer (it panicked or was cancelled).
    #[error("{what} stopped: {detail}")]
    Stopped { what: String, detail: String },
    /// The operator cannot start or keep running (no client configuration, a port taken,
    /// its Lease lost).
    #[error("{0}")]
    Operator(String),
    /// Checks of the demo that did not hold.
    #[error("demo failed: {}", .0.join("; "))]
    Demo(Vec<String>),
}

/// Exit code of a command line that cannot be carried out ([`Error::Usage`]), as clap uses.
pub const EXIT_USAGE: u8 = 2;

/// Exit code of a run that failed for a reason a retry cannot fix ([`Error::is_permanent`]).
pub const EXIT_PERMANENT: u8 = 3;

/// Worth another attempt: no answer at all, the server's own trouble (5xx, 429), or a
/// conflict (the object changed since it was read: read it again).
pub fn kube_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 409,
        _ => true,
    }
}

/// Result alias used throughout Mimeo.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] from a path and an I/O error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A thread or task that ended without its answer.
    pub fn stopped(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Stopped {
            what: what.to_owned(),
            detail: e.to_string(),
        }
    }

    /// True when running the same task again cannot succeed (damaged media, a wrong key, an
    /// entry refused for safety, invalid input, no copy left): a worker exits with
    /// [`EXIT_PERMANENT`] and its Job fails at once instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::Key { .. }
                | Error::Refused { .. }
                | Error::Invalid { .. }
                | Error::Parse { .. }
                | Error::Unavailable { .. }
                | Error::ItemsFailed(_)
                | Error::Usage(_)
                | Error::ResourceNotFound { .. }
                | Error::Secret { .. }
                | Error::Decode { .. }
                | Error::TooLarge { .. }
        )
    }

    /// True when retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store { transient, .. } => *transient,
            Error::Kube(e) => kube_transient(e),
            Error::Contended { .. } => true,
            _ => false,
        }
    }

    /// A short CamelCase reason, used for Kubernetes Events and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "InvalidSpec",
            Error::Parse { .. } => "ParseError",
            Error::Io { .. } => "IoError",
            Error::Store { .. } => "StoreError",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::NotFound { .. } => "NotFound",
            Error::Corrupt { .. } => "CorruptMedia",
            Error::Key { .. } => "EncryptionKeyMismatch",
            Error::Unreachable { .. } => "MediaUnreachable",
            Error::Unavailable { .. } => "NoCopyAvailable",
            Error::Refused { .. } => "RefusedEntry",
            Error::ItemsFailed(_) => "WorkItemsFailed",
            Error::Unsupported(_) => "Unsupported",
            Error::Kube(_) => "KubeError",
            Error::Usage(_) => "BadRequest",
            Error::ResourceNotFound { .. } => "NotFound",
            Error::Secret { .. } => "SecretUnusable",
            Error::Decode { .. } => "DecodeError",
            Error::Encode { .. } => "EncodeError",
            Error::Archive { .. } => "ArchiveError",
            Error::CopyMismatch { .. } => "CopyMismatch",
            Error::TooLarge { .. } => "TooLarge",
            Error::MissingField { .. } => "IncompleteObject",
            Error::Contended { .. } => "Contended",
            Error::Stopped { .. } => "Stopped",
            Error::Operator(_) => "OperatorFailed",
            Error::Demo(_) => "DemoFailed",
        }
    }
}
