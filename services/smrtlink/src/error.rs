//! The client's one error type. Messages name the endpoint (`GET /smrt-link/projects/2`) and
//! never contain the password, a token or a request body.

use std::time::Duration;

/// What can go wrong talking to SMRT Link.
///
/// Classify with [`Error::is_retryable`]: `Unavailable` and `Timeout` are worth trying again
/// later; the others need a person (credentials, certificates, configuration) or mean that SMRT
/// Link said no or answered something this library cannot read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connection refused or dropped, a body cut off mid-way, or 5xx answers, still failing
    /// after the retry policy was used up.
    #[error("SMRT Link unavailable: {endpoint}: {message} (after {attempts} attempts)")]
    Unavailable {
        /// The call, such as `GET /smrt-link/projects`.
        endpoint: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last failure.
        message: String,
    },

    /// No answer within the time limit, still after the retry policy was used up.
    #[error(
        "SMRT Link timed out: {endpoint}: no answer within {limit:?} (after {attempts} attempts)"
    )]
    Timeout {
        /// The call.
        endpoint: String,
        /// How many times it was tried.
        attempts: u32,
        /// The per-request limit that was hit.
        limit: Duration,
    },

    /// The credentials were refused at login, or calls stay unauthorised after a fresh login.
    #[error("SMRT Link refused the credentials of user {user:?}: {message}")]
    Auth {
        /// The configured SMRT Link user.
        user: String,
        /// SMRT Link's reason (never the password or a token).
        message: String,
    },

    /// An answer that does not have the shape SMRT Link's API promises: invalid or truncated
    /// JSON, a missing or mistyped field, a UUID that is not one, a status this call never
    /// answers.
    #[error("SMRT Link answered oddly: {endpoint}: {message}")]
    Protocol {
        /// The call.
        endpoint: String,
        /// What was wrong, naming the field (`project.datasets[0].uuid: not a UUID ("x")`).
        message: String,
    },

    /// The thing addressed does not exist (404) where that is an error (an update, a delete, a
    /// job's entry points). Look-ups that may miss return `Ok(None)` instead.
    #[error("SMRT Link has no such thing: {endpoint}")]
    NotFound {
        /// The call.
        endpoint: String,
    },

    /// SMRT Link refused the request (400, 403, 405, 409, 422, ...).
    #[error("SMRT Link rejected {endpoint} with HTTP {status}: {message}")]
    Rejected {
        /// The call.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// SMRT Link's message.
        message: String,
    },

    /// The TLS handshake failed: an untrusted or invalid server certificate (set a CA file, or
    /// the explicit insecure switch), or no common protocol.
    #[error("TLS to SMRT Link failed: {endpoint}: {message}")]
    Tls {
        /// The call.
        endpoint: String,
        /// The TLS failure.
        message: String,
    },

    /// The client cannot be built from its configuration (unreadable CA file, bad URL).
    #[error("invalid SMRT Link client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying again later may succeed (`Unavailable`, `Timeout`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } => true,
            Self::Auth { .. }
            | Self::Protocol { .. }
            | Self::NotFound { .. }
            | Self::Rejected { .. }
            | Self::Tls { .. }
            | Self::Config(_) => false,
        }
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
