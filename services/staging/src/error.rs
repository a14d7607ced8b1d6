//! The service's errors and how they reach the client.

use tonic::Status;

/// Everything an RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing is staged for the project.
    #[error("{0}")]
    NotFound(String),
    /// The directory name is held by another project or by something smrtshare did not create.
    #[error("{0}")]
    Conflict(String),
    /// The filesystem (or a lock held by a previous, still running operation) did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The service is still starting (sweeping the work area, checking its records).
    #[error("{0}")]
    Starting(String),
    /// Start-up refused to serve: the configured trees cannot work together (health NOT_SERVING).
    #[error("staging refuses to serve: {0}")]
    Refused(String),
    /// The staging root could not be read.
    #[error("staging root: {0}")]
    Filesystem(String),
    /// The records database failed.
    #[error("records database: {0}")]
    Records(#[from] sqlx::Error),
    /// A blocking task failed to complete.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::Conflict(m) => Status::failed_precondition(m),
            Error::Timeout(m) => Status::deadline_exceeded(m),
            Error::Starting(m) => Status::unavailable(m),
            Error::Refused(m) => Status::unavailable(format!("staging refuses to serve: {m}")),
            Error::Filesystem(m) => {
                tracing::error!(error = m, "staging root unreadable");
                Status::unavailable(format!("staging root: {m}"))
            }
            Error::Records(e) => {
                let busy = smrtshare_common::db::is_conflict(&e);
                tracing::error!(error = %e, busy, "records database error");
                if busy {
                    Status::unavailable("the records database is busy; retry")
                } else {
                    Status::internal("the records database failed; see the staging service's log")
                }
            }
            Error::Internal(m) => {
                tracing::error!(error = m, "internal error");
                Status::internal("internal error; see the staging service's log")
            }
        }
    }
}
