//! The token: password-grant login, refresh grant, one renewal at a time shared by every
//! concurrent call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use smrtshare_common::Secret;
use tokio::time::Instant;
use tracing::{debug, info};

use super::Inner;
use super::transport::{Answer, Body, Call};
use crate::error::Error;

/// The current access token and what renews it.
#[derive(Debug)]
pub(crate) struct Tokens {
    pub(crate) access: Secret,
    refresh: Option<Secret>,
    /// Renew before this instant (a margin before SMRT Link's expiry).
    renew_at: Option<Instant>,
    /// Which renewal produced it, so a call that saw a 401 with an old token does not renew
    /// again after another call already did.
    generation: u64,
}

/// The token cache. The mutex is held across a login or refresh, so only one runs at a time
/// and concurrent callers wait for its result.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    current: tokio::sync::Mutex<Option<Arc<Tokens>>>,
    generation: AtomicU64,
}

/// Counts of logins and refreshes this client made (for operators' metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Successful password-grant logins.
    pub logins: u64,
    /// Successful refresh grants.
    pub refreshes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AuthCounters {
    logins: AtomicU64,
    refreshes: AtomicU64,
}

impl AuthCounters {
    pub(crate) fn stats(&self) -> AuthStats {
        AuthStats {
            logins: self.logins.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
        }
    }
}

/// Outcome of a refresh grant.
enum Refreshed {
    Ok(Tokens),
    /// SMRT Link refused the refresh token (expired, revoked): log in again.
    Refused(String),
}

impl Inner {
    /// A usable token: the cached one, or a new one (refresh if possible, else login).
    pub(crate) async fn token(&self) -> Result<Arc<Tokens>, Error> {
        let mut current = self.tokens.current.lock().await;
        if let Some(tokens) = current.as_ref()
            && tokens.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(Arc::clone(tokens));
        }
        let fresh = Arc::new(self.renew_locked(current.as_deref()).await?);
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// After a 401 with `used`: refresh once, else log in again; unless another call already
    /// renewed since `used` was handed out.
    pub(crate) async fn renew(&self, used: &Tokens) -> Result<Arc<Tokens>, Error> {
        let mut current = self.tokens.current.lock().await;
        if let Some(tokens) = current.as_ref()
            && tokens.generation != used.generation
        {
            return Ok(Arc::clone(tokens));
        }
        let fresh = Arc::new(self.renew_locked(Some(used)).await?);
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn renew_locked(&self, old: Option<&Tokens>) -> Result<Tokens, Error> {
        if let Some(refresh) = old.and_then(|t| t.refresh.as_ref()) {
            match self.refresh(refresh).await? {
                Refreshed::Ok(tokens) => return Ok(tokens),
                Refreshed::Refused(why) => {
                    debug!(reason = %why, "smrt link refused the refresh token; logging in again");
                }
            }
        }
        self.login().await
    }

    fn basic(&self) -> Option<(String, String)> {
        self.config
            .client_credentials
            .as_ref()
            .map(|(id, secret)| (id.clone(), secret.expose().to_owned()))
    }

    async fn login(&self) -> Result<Tokens, Error> {
        let url = self.config.effective_token_url();
        let endpoint = format!("POST {}", url.path());
        let mut form = vec![
            ("grant_type", "password".to_owned()),
            ("username", self.config.user.clone()),
            ("password", self.config.password.expose().to_owned()),
        ];
        if let Some(scope) = &self.config.scope {
            form.push(("scope", scope.clone()));
        }
        let call = Call {
            method: Method::POST,
            url,
            endpoint: endpoint.clone(),
            body: Body::Form(form),
            idempotent: true,
            basic: self.basic(),
        };
        let answer = self.send(&call, None).await?;
        match answer.status {
            StatusCode::OK => {
                let tokens = self.read_tokens(&answer, &endpoint)?;
                self.auth_counters.logins.fetch_add(1, Ordering::Relaxed);
                info!(user = %self.config.user, "logged in to smrt link");
                Ok(tokens)
            }
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Error::Auth {
                    user: self.config.user.clone(),
                    message: format!(
                        "login refused with HTTP {}: {}",
                        answer.status.as_u16(),
                        answer.message()
                    ),
                })
            }
            other => Err(Error::Protocol {
                endpoint,
                message: format!(
                    "unexpected HTTP {} from the token endpoint: {}",
                    other.as_u16(),
                    answer.message()
                ),
            }),
        }
    }

    async fn refresh(&self, refresh: &Secret) -> Result<Refreshed, Error> {
        let url = self.config.refresh_url();
        let endpoint = format!("POST {}", url.path());
        let call = Call {
            method: Method::POST,
            url,
            endpoint: endpoint.clone(),
            body: Body::Form(vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh.expose().to_owned()),
            ]),
            idempotent: true,
            basic: self.basic(),
        };
        let answer = self.send(&call, None).await?;
        match answer.status {
            StatusCode::OK => {
                let tokens = self.read_tokens(&answer, &endpoint)?;
                self.auth_counters.refreshes.fetch_add(1, Ordering::Relaxed);
                debug!("smrt link token refreshed");
                Ok(Refreshed::Ok(tokens))
            }
            StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND => Ok(Refreshed::Refused(answer.message())),
            other => Err(Error::Protocol {
                endpoint,
                message: format!(
                    "unexpected HTTP {} from the refresh endpoint: {}",
                    other.as_u16(),
                    answer.message()
                ),
            }),
        }
    }

    /// Reads `{access_token, refresh_token?, expires_in?}`. Token values never reach a message.
    fn read_tokens(&self, answer: &Answer, endpoint: &str) -> Result<Tokens, Error> {
        let protocol = |message: &str| Error::Protocol {
            endpoint: endpoint.to_owned(),
            message: message.to_owned(),
        };
        let value = answer.json(endpoint)?;
        let access = value
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| protocol("token answer: access_token missing or not a string"))?;
        let refresh = match value.get("refresh_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if !t.is_empty() => Some(Secret::new(t.clone())),
            Some(_) => return Err(protocol("token answer: refresh_token is not a string")),
        };
        let expires_in = match value.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        protocol("token answer: expires_in is not a number of seconds")
                    })?,
            ),
        };
        // Renew a little before SMRT Link would refuse the token: a quarter of its life, at
        // most 30 s early.
        let renew_at = expires_in.map(|secs| {
            let life = Duration::from_secs_f64(secs.min(10.0 * 365.0 * 86_400.0));
            let margin = (life / 4).min(Duration::from_secs(30));
            Instant::now() + (life - margin)
        });
        Ok(Tokens {
            access: Secret::new(access),
            refresh,
            renew_at,
            generation: self.tokens.generation.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}
