//! The drivers' error: what the worker, the reconcilers, the local mode, the operator and the
//! command line can meet. The layers beneath have their own ([`SpecError`] in api,
//! [`MediaError`] in media, [`EngineError`] in the engine), wrapped here with their messages
//! unchanged; every variant says *where* (file, resource, field, volume, offset, work item) so
//! that a user can act on the message without reading logs.

use crate::api::SpecError;
use crate::base::failure::IoError;
use crate::engine::error::EngineError;
use crate::media::error::MediaError;

/// Errors of the drivers, and of anything beneath them that reaches one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed, or the spec or the media beneath it did.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A file of the driver's own (the local state directory, a task file, the demo's tree).
    #[error(transparent)]
    Io(#[from] IoError),
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
    /// The operator cannot start or keep running (no client configuration, a port taken,
    /// its Lease lost).
    #[error("{0}")]
    Operator(String),
    /// Checks of the demo that did not hold.
    #[error("demo failed: {}", .0.join("; "))]
    Demo(Vec<String>),
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::Engine(e.into())
    }
}

impl From<MediaError> for Error {
    fn from(e: MediaError) -> Self {
        Error::Engine(e.into())
    }
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

/// Result of the drivers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`] from a path and an I/O error.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        IoError::new(path, source).into()
    }

    /// True when running the same task again cannot succeed (damaged media, a wrong key, an
    /// entry refused for safety, invalid input, no copy left): a worker exits with
    /// [`EXIT_PERMANENT`] and its Job fails at once instead of retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Engine(e) => e.is_permanent(),
            Error::Usage(_) | Error::ResourceNotFound { .. } | Error::TooLarge { .. } => true,
            _ => false,
        }
    }

    /// True when retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Engine(e) => e.is_transient(),
            Error::Kube(e) => kube_transient(e),
            Error::Contended { .. } => true,
            _ => false,
        }
    }

    /// True for a spec that only a change can fix: the operator waits for one.
    pub fn is_invalid_spec(&self) -> bool {
        matches!(self, Error::Engine(EngineError::Spec(_)))
    }

    /// A short CamelCase reason, used for Kubernetes Events and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Engine(e) => e.reason(),
            Error::Io(_) => "IoError",
            Error::Kube(_) => "KubeError",
            Error::Usage(_) => "BadRequest",
            Error::ResourceNotFound { .. } => "NotFound",
            Error::TooLarge { .. } => "TooLarge",
            Error::MissingField { .. } => "IncompleteObject",
            Error::Contended { .. } => "Contended",
            Error::Operator(_) => "OperatorFailed",
            Error::Demo(_) => "DemoFailed",
        }
    }
}
