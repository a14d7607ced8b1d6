//! One call to SMRT Link: headers, time limits, the 401 → renew step, retries with backoff, and
//! the classification of failures into [`Error`] variants.

use std::error::Error as StdError;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tracing::{debug, warn};

use super::Inner;
use crate::config::join;
use crate::error::Error;

/// A request body. Forms may hold the password: no `Debug`, never logged.
pub(crate) enum Body {
    None,
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// What to send (no `Debug`: the body and the client credentials may be secret).
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Absolute URL.
    pub(crate) url: url::Url,
    /// For messages and logs: `GET /smrt-link/projects/2`.
    pub(crate) endpoint: String,
    pub(crate) body: Body,
    /// Safe to send twice (every GET, PUT and DELETE; token requests). A POST that creates is
    /// retried only when it never left (connection refused).
    pub(crate) idempotent: bool,
    /// HTTP Basic client credentials (token endpoints).
    pub(crate) basic: Option<(String, String)>,
}

/// A complete answer (no `Debug`: a token answer holds tokens).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The answer as JSON, or a protocol error naming the endpoint.
    pub(crate) fn json(&self, endpoint: &str) -> Result<Value, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            endpoint: endpoint.to_owned(),
            message: format!("invalid JSON ({} bytes): {e}", self.body.len()),
        })
    }

    /// SMRT Link's error message (`{"message": ...}`), else the start of the body.
    pub(crate) fn message(&self) -> String {
        if let Ok(value) = serde_json::from_slice::<Value>(&self.body) {
            for key in ["message", "error_description", "error", "description"] {
                if let Some(text) = value.get(key).and_then(Value::as_str) {
                    return shorten(text);
                }
            }
        }
        let text = String::from_utf8_lossy(&self.body);
        if text.trim().is_empty() {
            self.status.to_string()
        } else {
            shorten(text.trim())
        }
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// Why one try failed.
#[derive(Debug)]
enum Failure {
    /// No complete answer within the request time limit.
    Timeout,
    /// The connection could not be made: the request never left.
    Connect(String),
    /// The request may have arrived, but the answer did not (connection dropped, body cut off).
    Transport(String),
    /// Certificate or handshake failure: retrying will not help.
    Tls(String),
    /// A 5xx or 429 answer.
    Server(StatusCode, String),
}

/// The error and its sources, joined (`error sending request: connection refused`).
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Whether a rustls error sits anywhere in the chain (also inside `io::Error`s).
fn is_tls(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && (inner.downcast_ref::<rustls::Error>().is_some() || is_tls(inner))
        {
            return true;
        }
        current = e.source();
    }
    false
}

fn classify(error: &reqwest::Error) -> Failure {
    if is_tls(error) {
        return Failure::Tls(chain(error));
    }
    if error.is_timeout() {
        return Failure::Timeout;
    }
    if error.is_connect() {
        return Failure::Connect(chain(error));
    }
    Failure::Transport(chain(error))
}

impl Inner {
    /// The URL of an API path under the base URL.
    pub(crate) fn api_url(&self, path: &str) -> url::Url {
        join(&self.config.base_url, path)
    }

    /// One try: send, read the whole answer.
    async fn try_once(&self, call: &Call, bearer: Option<&str>) -> Result<Answer, Failure> {
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(self.config.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request
                .bearer_auth(token)
                .header("X-User-ID", &self.config.user);
        }
        if let Some((id, secret)) = &call.basic {
            request = request.basic_auth(id, Some(secret));
        }
        request = match &call.body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Form(fields) => request.form(fields),
        };
        let response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| classify(&e))?;
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let answer = Answer { status, body };
            return Err(Failure::Server(status, answer.message()));
        }
        Ok(Answer { status, body })
    }

    /// Sends an authenticated call: a token from the cache; after a 401, one renewal (refresh,
    /// else login) and one more round. Returns every answer but 5xx/429 and a cured 401.
    pub(crate) async fn execute(&self, call: Call) -> Result<Answer, Error> {
        let mut renewed = false;
        loop {
            let tokens = self.token().await?;
            let answer = self.send(&call, Some(tokens.access.expose())).await?;
            if answer.status != StatusCode::UNAUTHORIZED {
                return Ok(answer);
            }
            if renewed {
                return Err(Error::Auth {
                    user: self.config.user.clone(),
                    message: format!(
                        "{} still answers 401 with a fresh token: {}",
                        call.endpoint,
                        answer.message()
                    ),
                });
            }
            debug!(endpoint = %call.endpoint, "smrt link answered 401; renewing the token");
            renewed = true;
            self.renew(&tokens).await?;
        }
    }

    /// Sends a call with the retry policy, with the given bearer token (and `X-User-ID`) or
    /// none. Returns every answer that is not a 5xx/429; the caller reads the status.
    pub(crate) async fn send(&self, call: &Call, bearer: Option<&str>) -> Result<Answer, Error> {
        let policy = &self.config.retry;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = tokio::time::Instant::now();
            let outcome = self.try_once(call, bearer).await;
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let failure = match outcome {
                Ok(answer) => {
                    debug!(endpoint = %call.endpoint, status = answer.status.as_u16(), attempt, elapsed_ms, "smrt link call");
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            let retryable = match &failure {
                Failure::Tls(_) => false,
                Failure::Connect(_) => true,
                Failure::Timeout | Failure::Transport(_) | Failure::Server(..) => call.idempotent,
            };
            let error = self.failure_error(call, failure, attempt);
            if !retryable || attempt >= policy.max_attempts {
                warn!(endpoint = %call.endpoint, attempt, error = %error, "smrt link call failed");
                return Err(error);
            }
            let wait = policy.backoff().delay(attempt);
            warn!(endpoint = %call.endpoint, attempt, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %error, "smrt link call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn failure_error(&self, call: &Call, failure: Failure, attempts: u32) -> Error {
        let endpoint = call.endpoint.clone();
        match failure {
            Failure::Timeout => Error::Timeout {
                endpoint,
                attempts,
                limit: self.config.request_timeout,
            },
            Failure::Connect(message) | Failure::Transport(message) => Error::Unavailable {
                endpoint,
                attempts,
                message,
            },
            Failure::Server(status, message) => Error::Unavailable {
                endpoint,
                attempts,
                message: format!("HTTP {}: {message}", status.as_u16()),
            },
            Failure::Tls(message) => Error::Tls { endpoint, message },
        }
    }
}
