//! What went wrong with one S3 call: status, code and message, and whether a retry may help.

use super::*;

/// What an S3 call failure means to callers that branch on it, plus text for the message.
pub(super) struct Failure {
    pub(super) status: Option<u16>,
    pub(super) code: Option<String>,
    pub(super) transient: bool,
    pub(super) detail: String,
}

impl Failure {
    pub(super) fn of<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let transient = match err {
            // No usable answer: the request may well succeed when sent again.
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            SdkError::DispatchFailure(failure) => !failure.is_user(),
            SdkError::ServiceError(_) => {
                status.is_some_and(|s| (s >= 500 && s != 501) || s == 429)
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown"
                                | "Throttling"
                                | "ThrottlingException"
                                | "RequestTimeout"
                                // A concurrent conditional write raced with ours; S3 asks to retry.
                                | "ConditionalRequestConflict"
                        )
                    )
            }
            _ => false,
        };
        let mut detail = match (&code, err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, _) => DisplayErrorContext(err).to_string(),
        };
        if let Some(status) = status {
            detail.push_str(&format!(" (HTTP {status})"));
        }
        Failure {
            status,
            code,
            transient,
            detail,
        }
    }

    /// The key (not the bucket) is absent. HEAD responses have no body, so a missing bucket
    /// there also looks like this.
    pub(super) fn is_missing_key(&self) -> bool {
        self.status == Some(404) && self.code.as_deref() != Some("NoSuchBucket")
    }

    /// The server lacks the feature (501): retrying will not help.
    pub(super) fn is_not_implemented(&self) -> bool {
        self.status == Some(501) || self.code.as_deref() == Some("NotImplemented")
    }

    /// An `If-None-Match: *` condition failed: the key exists.
    pub(super) fn is_precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code.as_deref() == Some("PreconditionFailed")
    }
}
