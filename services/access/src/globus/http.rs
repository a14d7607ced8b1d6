//! One Globus call: pacing, sending, reading the answer into a typed error, and retrying.

use reqwest::Method;
use serde_json::Value;
use smrtshare_common::Secret;
use url::Url;

use super::error::{ApiCode, GlobusError};
use super::pacing::parse_retry_after;
use super::{Globus, Resource};
use crate::metrics::Call;

/// How a call authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Auth {
    /// HTTP Basic with the client id and secret (Auth calls).
    Client,
    /// The bearer token for a resource server (Transfer, Groups).
    Bearer(Resource),
}

/// A request body.
#[derive(Debug)]
pub(super) enum Body {
    Empty,
    Json(Value),
    /// The client-credentials form asking for a scope.
    TokenForm(&'static str),
}

/// Whether a failure whose answer was lost (the request may have been applied) is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lost {
    /// Retried: the request is idempotent or Globus answers a repeat with `Exists`.
    Retry,
    /// Not retried: a repeat could act twice (a group create makes a second group). The caller
    /// finds out what happened instead.
    Stop,
}

impl Globus {
    /// Sends a call, retrying by the policy; answers the JSON body of a 2xx answer (`Null` when
    /// empty). A 401 to a bearer call fetches a new token and tries once more, outside the
    /// attempt count.
    pub(super) async fn call(
        &self,
        call: Call,
        method: Method,
        url: Url,
        auth: Auth,
        body: Body,
    ) -> Result<Value, GlobusError> {
        self.call_with(call, method, url, auth, body, Lost::Retry)
            .await
    }

    /// [`Self::call`], choosing whether failures that may have been applied are retried.
    pub(super) async fn call_with(
        &self,
        call: Call,
        method: Method,
        url: Url,
        auth: Auth,
        body: Body,
        lost_answers: Lost,
    ) -> Result<Value, GlobusError> {
        let policy = &self.config.retry;
        let mut attempt = 0u32;
        let mut token_renewed = false;
        // The first failed attempt that may have been applied although its answer was lost.
        let mut lost: Option<GlobusError> = None;
        loop {
            attempt += 1;
            let bearer = match auth {
                Auth::Bearer(resource) => Some(self.bearer_token(resource).await?),
                Auth::Client => None,
            };
            let error = match self
                .send_once(call, &method, &url, bearer.as_ref(), &body)
                .await
            {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if let (Some(token), Auth::Bearer(resource)) = (&bearer, auth)
                && error.is(&ApiCode::AuthenticationFailed)
                && !token_renewed
            {
                tracing::warn!(
                    ?call,
                    ?resource,
                    "globus refused the token; fetching a new one and trying once more"
                );
                token_renewed = true;
                self.token_cache(resource).invalidate(token);
                attempt -= 1;
                continue;
            }
            if let GlobusError::Api {
                status: 429,
                retry_after,
                ..
            } = &error
            {
                // Everyone waits, not only this caller: the limit is per client.
                self.limiter.pause_for(
                    retry_after
                        .unwrap_or(policy.base)
                        .min(policy.max_retry_after),
                );
            }
            let stop = lost_answers == Lost::Stop && error.may_have_applied();
            if !error.is_retryable() || stop || attempt >= policy.max_attempts {
                if error.is_retryable() {
                    tracing::warn!(?call, attempt, code = error.code(), %error, "globus call failed; retries exhausted");
                }
                return Err(error.after(lost.as_ref()));
            }
            if lost.is_none() && error.may_have_applied() {
                lost = Some(error.clone());
            }
            let delay = policy.delay(attempt, error.retry_after());
            tracing::debug!(
                ?call,
                attempt,
                ?delay,
                code = error.code(),
                "globus call failed; retrying"
            );
            self.metrics.globus_retry(call);
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(
        &self,
        call: Call,
        method: &Method,
        url: &Url,
        bearer: Option<&Secret>,
        body: &Body,
    ) -> Result<Value, GlobusError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| GlobusError::Connection("the client is shutting down".to_owned()))?;
        self.limiter.acquire().await;

        let mut request = self.http.request(method.clone(), url.clone());
        request = match bearer {
            Some(token) => request.bearer_auth(token.expose()),
            None => request.basic_auth(
                &self.config.client_id,
                Some(self.config.client_secret.expose()),
            ),
        };
        request = match body {
            Body::Empty => request,
            Body::Json(value) => request.json(value),
            Body::TokenForm(scope) => {
                request.form(&[("grant_type", "client_credentials"), ("scope", scope)])
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(self.transport_error(call, &error)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Err(self.transport_error(call, &error)),
        };
        self.metrics.globus_request(call, &status.to_string());
        if (200..300).contains(&status) {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| GlobusError::Protocol(format!("{call:?} answer is not JSON: {e}")));
        }
        Err(answer_error(call, status, &bytes, retry_after))
    }

    fn transport_error(&self, call: Call, error: &reqwest::Error) -> GlobusError {
        if error.is_timeout() {
            self.metrics.globus_request(call, "timeout");
            return GlobusError::Timeout(self.config.request_timeout);
        }
        self.metrics.globus_request(call, "connection");
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        GlobusError::Connection(message)
    }
}

/// The typed error of a non-2xx answer.
fn answer_error(
    call: Call,
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> GlobusError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_owned);
    if call == Call::Token && matches!(status, 400 | 401 | 403) {
        // OAuth errors: {error, error_description}.
        let error = text("error").unwrap_or_else(|| format!("HTTP {status}"));
        let description = text("error_description").unwrap_or_default();
        return GlobusError::Credentials(bounded(
            &format!("{error}: {description}"),
            MAX_MESSAGE_CHARS,
        ));
    }
    // Transfer errors: {code, message, request_id, resource}; Auth API errors:
    // {errors: [{code, detail}]}.
    let auth_error = parsed
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|errors| errors.first());
    let code = text("code").or_else(|| {
        auth_error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let message = text("message")
        .or_else(|| text("detail"))
        .or_else(|| {
            auth_error
                .and_then(|e| e.get("detail"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let code = match (call, status) {
        // Auth API 401s mean the client credentials were refused.
        (Call::Identities, 401) => {
            return GlobusError::Credentials(bounded(&message, MAX_MESSAGE_CHARS));
        }
        _ => ApiCode::parse(status, code.map(|c| bounded(&c, 100)).as_deref()),
    };
    GlobusError::Api {
        status,
        code,
        message: bounded(&message, MAX_MESSAGE_CHARS),
        request_id: bounded(&text("request_id").unwrap_or_default(), 64),
        retry_after,
    }
}

/// Characters of a Globus error message kept (it reaches outcomes, logs and the registry).
const MAX_MESSAGE_CHARS: usize = 500;

/// `text` cut to `chars` characters, marked when cut.
fn bounded(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(chars).collect();
    out.push('…');
    out
}
