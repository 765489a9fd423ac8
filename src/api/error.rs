//! What is wrong with a resource: input that is not one, or a field that fails validation.

/// Errors of the API layer: a spec that a change must fix, so nothing retries on it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
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
}

/// Result of the API layer.
pub type Result<T, E = SpecError> = std::result::Result<T, E>;

impl SpecError {
    /// A short CamelCase reason, used for Kubernetes Events and status conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::Invalid { .. } => "InvalidSpec",
            SpecError::Parse { .. } => "ParseError",
        }
    }
}
