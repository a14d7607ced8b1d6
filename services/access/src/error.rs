//! The service's errors and how they reach gRPC callers.

use tonic::{Code, Status};

use crate::globus::GlobusError;

/// Why an RPC failed as a whole. Failures of single members are outcomes, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request; the message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, as in the request (`logins[3]`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Globus could not be reached or kept failing (after retries).
    #[error("globus is unavailable: {0}")]
    GlobusUnavailable(#[source] GlobusError),
    /// Globus did not answer in time (after retries).
    #[error("globus did not answer in time: {0}")]
    GlobusTimeout(#[source] GlobusError),
    /// Globus Auth refused smrtshare's client credentials: configuration must change.
    #[error("globus refused smrtshare's client credentials: {0}")]
    GlobusCredentials(#[source] GlobusError),
    /// Globus refused a request that retrying will not cure (collection unknown, permission
    /// denied, malformed answer).
    #[error("globus refused the request: {0}")]
    GlobusRefused(#[source] GlobusError),
    /// The registry database failed.
    #[error("the rule registry failed: {0}")]
    Registry(#[from] sqlx::Error),
}

impl Error {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<GlobusError> for Error {
    fn from(error: GlobusError) -> Self {
        match &error {
            GlobusError::Timeout(_) => Self::GlobusTimeout(error),
            GlobusError::Credentials(_) => Self::GlobusCredentials(error),
            GlobusError::Connection(_) => Self::GlobusUnavailable(error),
            GlobusError::Api { .. } if error.is_unavailable() => Self::GlobusUnavailable(error),
            GlobusError::Api { .. }
            | GlobusError::Protocol(_)
            | GlobusError::AfterLostAnswer { .. } => Self::GlobusRefused(error),
        }
    }
}

/// True for database failures a later attempt may not meet (pool exhausted, connection lost,
/// lock conflicts).
fn registry_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => smrtshare_common::db::is_conflict(error),
        _ => false,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::GlobusUnavailable(_) => Code::Unavailable,
            Error::GlobusTimeout(_) => Code::DeadlineExceeded,
            Error::GlobusCredentials(_) | Error::GlobusRefused(_) => Code::FailedPrecondition,
            Error::Registry(db) if registry_unavailable(db) => Code::Unavailable,
            Error::Registry(_) => Code::Internal,
        };
        match code {
            Code::InvalidArgument => {}
            _ => {
                tracing::error!(error = %error, source = ?std::error::Error::source(&error), "rpc failed")
            }
        }
        // The caller gets the error's own line; the source chain stays in the log.
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::globus::ApiCode;

    fn api(status: u16, code: ApiCode) -> GlobusError {
        GlobusError::Api {
            status,
            code,
            message: "m".into(),
            request_id: "r".into(),
            retry_after: None,
        }
    }

    #[test]
    fn upstream_failures_are_unavailable_or_deadline_not_internal() {
        let status = |e: Error| Status::from(e).code();
        assert_eq!(
            status(GlobusError::Timeout(Duration::from_secs(1)).into()),
            Code::DeadlineExceeded
        );
        assert_eq!(
            status(GlobusError::Connection("x".into()).into()),
            Code::Unavailable
        );
        assert_eq!(
            status(api(503, ApiCode::ServiceUnavailable).into()),
            Code::Unavailable
        );
        assert_eq!(
            status(api(429, ApiCode::TooManyRequests).into()),
            Code::Unavailable
        );
        assert_eq!(
            status(api(502, ApiCode::ExternalError("ExternalError.X".into())).into()),
            Code::Unavailable
        );
        assert_eq!(
            status(api(404, ApiCode::EndpointNotFound).into()),
            Code::FailedPrecondition
        );
        assert_eq!(
            status(GlobusError::Credentials("no".into()).into()),
            Code::FailedPrecondition
        );
        assert_eq!(status(Error::invalid("path", "bad")), Code::InvalidArgument);
        assert_eq!(
            status(Error::Registry(sqlx::Error::PoolTimedOut)),
            Code::Unavailable
        );
        assert_eq!(
            status(Error::Registry(sqlx::Error::RowNotFound)),
            Code::Internal
        );
        let message = Status::from(Error::invalid("logins[2]", "empty"))
            .message()
            .to_owned();
        assert_eq!(message, "logins[2]: empty");
    }
}
