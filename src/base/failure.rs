//! Failures every layer can meet, as small error types that each layer's own error enum wraps
//! with `#[from]`: an I/O error at a path, and a thread that ended without its answer. One
//! definition each, so a file-system failure reads the same whether media, the engine or a
//! driver met it.

use std::fmt::Display;
use std::path::PathBuf;

/// A file-system call that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct IoError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// The failure of a call on `path`.
    pub fn new(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError {
            path: path.into(),
            source,
        }
    }
}

/// A thread or task that ended without an answer (it panicked or was cancelled).
#[derive(Debug, thiserror::Error)]
#[error("{what} stopped: {detail}")]
pub struct Stopped {
    pub what: String,
    pub detail: String,
}

impl Stopped {
    /// `what` ended; `e` says how (a join error, a closed channel).
    pub fn new(what: &str, e: impl Display) -> Self {
        Stopped {
            what: what.to_owned(),
            detail: e.to_string(),
        }
    }
}

/// Runs blocking code on the blocking pool; a panic there becomes [`Stopped`] (naming
/// `what`) in the caller's own error type.
pub async fn blocking<T, E>(
    what: &str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Stopped> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Stopped::new(what, e))?
}
