//! Globus failures, typed: the error codes of DESIGN.md section 4, transport failures, and what
//! may be retried.

use std::time::Duration;

/// A Globus error code from an error body (`{code, message, request_id, resource}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiCode {
    /// 409: the same principal already has a rule on the path.
    Exists,
    /// 409: the collection holds its 1000 rules.
    LimitExceeded,
    /// 404: no rule with that id.
    AccessRuleNotFound,
    /// 404: no such collection.
    EndpointNotFound,
    /// 404 from the Groups API: no such group.
    NotFound,
    /// 400: the path is malformed.
    InvalidPath,
    /// 400: some other field is malformed.
    BadRequest,
    /// 401: the token was refused.
    AuthenticationFailed,
    /// 403: the client may not manage rules on the collection.
    PermissionDenied,
    /// 429.
    TooManyRequests,
    /// 503.
    ServiceUnavailable,
    /// 502/504 `ExternalError…`: the collection's side failed; not retried.
    ExternalError(String),
    /// 502 `EndpointError`: not retried.
    EndpointError,
    /// Anything else (the code as Globus wrote it, or the HTTP status when there was none).
    Other(String),
}

impl ApiCode {
    /// The code of an answer with this status and body `code`.
    pub fn parse(status: u16, code: Option<&str>) -> Self {
        match code {
            // Groups API: a missing group; the same meaning as a missing rule.
            Some("NOT_FOUND") if status == 404 => Self::NotFound,
            Some("Exists") => Self::Exists,
            Some("LimitExceeded") => Self::LimitExceeded,
            Some("AccessRuleNotFound") => Self::AccessRuleNotFound,
            Some("EndpointNotFound") => Self::EndpointNotFound,
            Some("InvalidPath") => Self::InvalidPath,
            Some("BadRequest") => Self::BadRequest,
            Some("AuthenticationFailed") => Self::AuthenticationFailed,
            Some("PermissionDenied") => Self::PermissionDenied,
            Some("ServiceUnavailable") => Self::ServiceUnavailable,
            Some("EndpointError") => Self::EndpointError,
            Some(c) if c.starts_with("ExternalError") => Self::ExternalError(c.to_owned()),
            Some(c) if !c.is_empty() && status != 429 => Self::Other(c.to_owned()),
            _ => match status {
                429 => Self::TooManyRequests,
                503 => Self::ServiceUnavailable,
                401 => Self::AuthenticationFailed,
                403 => Self::PermissionDenied,
                _ => Self::Other(format!("HTTP{status}")),
            },
        }
    }

    /// The code as Globus spells it (reported to callers in `globus_code`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exists => "Exists",
            Self::LimitExceeded => "LimitExceeded",
            Self::AccessRuleNotFound => "AccessRuleNotFound",
            Self::EndpointNotFound => "EndpointNotFound",
            Self::NotFound => "NOT_FOUND",
            Self::InvalidPath => "InvalidPath",
            Self::BadRequest => "BadRequest",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::PermissionDenied => "PermissionDenied",
            Self::TooManyRequests => "TooManyRequests",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::ExternalError(code) | Self::Other(code) => code,
            Self::EndpointError => "EndpointError",
        }
    }
}

/// A failed Globus call (after any retries).
#[derive(Clone, Debug, thiserror::Error)]
pub enum GlobusError {
    /// Globus answered with an error.
    #[error("globus answered {status} {}: {message}", code.as_str())]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: ApiCode,
        /// Globus' message.
        message: String,
        /// Globus' request id, for support tickets.
        request_id: String,
        /// The `Retry-After` the answer carried.
        retry_after: Option<Duration>,
    },
    /// No answer within the time limit.
    #[error("globus did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or closed without an answer.
    #[error("cannot reach globus: {0}")]
    Connection(String),
    /// An answer smrtshare cannot read.
    #[error("unexpected answer from globus: {0}")]
    Protocol(String),
    /// Globus Auth refused the client id and secret (or the scope).
    #[error("globus auth refused the client credentials: {0}")]
    Credentials(String),
    /// A retried call whose last attempt was refused, after an earlier attempt whose answer was
    /// lost: that attempt may have been applied (a rule made, then `LimitExceeded` on the retry),
    /// so the refusal does not prove that nothing happened.
    #[error("{last} (an earlier attempt may have been applied; its answer was lost: {earlier})")]
    AfterLostAnswer {
        /// Why the earlier answer was lost.
        earlier: String,
        /// The last attempt's error.
        last: Box<GlobusError>,
    },
}

impl GlobusError {
    /// The code reported to callers: Globus' code, or `Timeout`, `ConnectionError`,
    /// `ProtocolError`, `CredentialsRejected`.
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code.as_str(),
            Self::Timeout(_) => "Timeout",
            Self::Connection(_) => "ConnectionError",
            Self::Protocol(_) => "ProtocolError",
            Self::Credentials(_) => "CredentialsRejected",
            Self::AfterLostAnswer { last, .. } => last.code(),
        }
    }

    /// The API code, for API errors (the last attempt's, after a lost answer).
    pub fn api_code(&self) -> Option<&ApiCode> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::AfterLostAnswer { last, .. } => last.api_code(),
            _ => None,
        }
    }

    /// True when the request may have reached Globus and been applied although no answer says
    /// so: the answer was lost (timeout, connection closed) or Globus failed inside (500, 502,
    /// 504). 429 and 503 mean the request was not processed.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Connection(_) => true,
            Self::Api { status, .. } => matches!(status, 500 | 502 | 504),
            Self::AfterLostAnswer { .. } => true,
            Self::Protocol(_) | Self::Credentials(_) => false,
        }
    }

    /// True when this code was answered.
    pub fn is(&self, code: &ApiCode) -> bool {
        self.api_code() == Some(code)
    }

    /// True when trying again may succeed: 429 and 503; 500, 502 and 504 unless the code is
    /// `ExternalError…` or `EndpointError`; timeouts and connection failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => match status {
                429 | 503 => true,
                500 | 502 | 504 => {
                    !matches!(code, ApiCode::ExternalError(_) | ApiCode::EndpointError)
                }
                _ => false,
            },
            Self::Timeout(_) | Self::Connection(_) => true,
            Self::Protocol(_) | Self::Credentials(_) | Self::AfterLostAnswer { .. } => false,
        }
    }

    /// True when Globus certainly did not act on the request: every attempt was refused with a
    /// 4xx (other than a rate limit), so no rule was made or changed. Never true after a lost
    /// answer ([`Self::AfterLostAnswer`]).
    pub fn certainly_not_applied(&self) -> bool {
        matches!(self, Self::Api { status, .. } if (400..500).contains(status) && *status != 429)
    }

    /// True for failures of reaching Globus at all (as opposed to Globus refusing a request).
    pub fn is_unavailable(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                Self::Api {
                    code: ApiCode::ExternalError(_) | ApiCode::EndpointError,
                    ..
                }
            )
    }

    /// The `Retry-After` carried by the answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The final error of a call: after an attempt that may have been applied, a refusal is
    /// wrapped so it does not claim that nothing happened.
    pub fn after(self, earlier: Option<&GlobusError>) -> Self {
        match earlier {
            Some(earlier) if self.certainly_not_applied() => Self::AfterLostAnswer {
                earlier: earlier.to_string(),
                last: Box::new(self),
            },
            _ => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> GlobusError {
        GlobusError::Api {
            status,
            code: ApiCode::parse(status, Some(code)),
            message: String::new(),
            request_id: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn retries_follow_the_contract() {
        assert!(api(429, "TooManyRequests").is_retryable());
        assert!(api(503, "ServiceUnavailable").is_retryable());
        assert!(api(500, "InternalError").is_retryable());
        assert!(api(504, "GatewayTimeout").is_retryable());
        assert!(api(502, "BadGateway").is_retryable());
        assert!(!api(502, "ExternalError.DirListingFailed").is_retryable());
        assert!(!api(504, "ExternalError").is_retryable());
        assert!(!api(502, "EndpointError").is_retryable());
        assert!(!api(409, "Exists").is_retryable());
        assert!(!api(409, "LimitExceeded").is_retryable());
        assert!(GlobusError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(GlobusError::Connection("reset".into()).is_retryable());
        assert!(api(409, "LimitExceeded").certainly_not_applied());
        assert!(!api(503, "ServiceUnavailable").certainly_not_applied());
        assert_eq!(api(409, "LimitExceeded").code(), "LimitExceeded");
        assert_eq!(ApiCode::parse(429, None), ApiCode::TooManyRequests);
        let lost = GlobusError::Connection("reset".into());
        let after = api(409, "LimitExceeded").after(Some(&lost));
        assert!(!after.certainly_not_applied() && !after.is_retryable());
        assert!(after.is(&ApiCode::LimitExceeded));
        assert_eq!(after.code(), "LimitExceeded");
        let plain = api(409, "LimitExceeded").after(None);
        assert!(plain.certainly_not_applied());
        assert!(!api(503, "ServiceUnavailable").may_have_applied());
        assert!(api(504, "GatewayTimeout").may_have_applied());
        assert_eq!(ApiCode::parse(418, None).as_str(), "HTTP418");
    }
}
