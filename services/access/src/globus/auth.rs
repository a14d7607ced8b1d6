//! Globus Auth: the client-credentials token (cached, renewed before expiry and after a 401) and
//! identity look-ups by username.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use smrtshare_common::Secret;
use tokio::time::Instant;

use super::error::GlobusError;
use super::http::{Auth, Body};
use super::{Globus, Resource};
use crate::metrics::Call;

/// Most usernames one identities call may name.
pub const MAX_USERNAMES_PER_CALL: usize = 100;

#[derive(Debug)]
struct Cached {
    token: Secret,
    expires_at: Instant,
}

/// A cached token for one resource server. Fetches are single-flight: concurrent callers wait
/// for one fetch.
#[derive(Debug)]
pub(super) struct TokenCache {
    current: Mutex<Option<Cached>>,
    fetching: tokio::sync::Mutex<()>,
    renew_before: Duration,
}

impl TokenCache {
    pub fn new(renew_before: Duration) -> Self {
        Self {
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            renew_before,
        }
    }

    fn valid(&self) -> Option<Secret> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|c| Instant::now() + self.renew_before < c.expires_at)
            .map(|c| c.token.clone())
    }

    fn store(&self, token: Secret, expires_in: Duration) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            token,
            expires_at: Instant::now() + expires_in,
        });
    }

    /// Forgets `token` if it is still the cached one (Globus refused it).
    pub fn invalidate(&self, token: &Secret) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.token == *token) {
            *current = None;
        }
    }
}

/// The longest token lifetime believed (Globus issues 48 hours); a longer or absurd
/// `expires_in` is cut to this, so the renewal time is always representable.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: f64,
    #[serde(default)]
    scope: String,
}

/// One identity as Globus Auth returns it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IdentityRecord {
    /// Identity id (UUID): what rules name.
    pub id: String,
    /// Username (`user@idp.example`).
    pub username: String,
    /// `used`, `unused`, `private` or `closed`.
    #[serde(default)]
    pub status: String,
}

impl Globus {
    /// The token for `resource` (Transfer or Groups; each has its own), fetched when missing or
    /// within `token_renew_before` of expiry.
    pub(super) fn bearer_token(
        &self,
        resource: Resource,
    ) -> Pin<Box<dyn Future<Output = Result<Secret, GlobusError>> + Send + '_>> {
        // Boxed: fetching goes through `call`, which asks for tokens itself.
        Box::pin(async move {
            let cache = self.token_cache(resource);
            if let Some(token) = cache.valid() {
                return Ok(token);
            }
            let _single_flight = cache.fetching.lock().await;
            if let Some(token) = cache.valid() {
                return Ok(token);
            }
            let url = self.auth("v2/oauth2/token")?;
            let answer = self
                .call(
                    Call::Token,
                    Method::POST,
                    url,
                    Auth::Client,
                    Body::TokenForm(resource.scope()),
                )
                .await?;
            let answer: TokenAnswer = serde_json::from_value(answer)
                .map_err(|e| GlobusError::Protocol(format!("token answer: {e}")))?;
            if !answer
                .scope
                .split_whitespace()
                .any(|s| s == resource.scope())
            {
                return Err(GlobusError::Credentials(format!(
                    "the token was issued for scope {:?}, not {}",
                    answer.scope,
                    resource.scope()
                )));
            }
            if !answer.expires_in.is_finite() || answer.expires_in < 0.0 {
                return Err(GlobusError::Protocol(
                    "token answer: expires_in is not a number of seconds".to_owned(),
                ));
            }
            let token = Secret::new(answer.access_token);
            let lifetime =
                Duration::from_secs_f64(answer.expires_in.min(MAX_TOKEN_LIFETIME.as_secs_f64()));
            tracing::info!(?resource, expires_in = ?lifetime, "fetched a globus token");
            cache.store(token.clone(), lifetime);
            Ok(token)
        })
    }

    /// Fetches a Transfer token if none is cached: proves the client id and secret work.
    pub async fn check_credentials(&self) -> Result<(), GlobusError> {
        self.bearer_token(Resource::Transfer).await.map(|_| ())
    }

    /// Looks up at most [`MAX_USERNAMES_PER_CALL`] usernames in one call; unknown usernames are
    /// left out of the answer.
    /// With `provision`, Globus makes identities for usernames it does not know yet where it
    /// can (status `unused`), so rules and group memberships are in place before the first
    /// login.
    pub async fn lookup_usernames(
        &self,
        usernames: &[String],
        provision: bool,
    ) -> Result<Vec<IdentityRecord>, GlobusError> {
        if usernames.is_empty() {
            return Ok(Vec::new());
        }
        if usernames.len() > MAX_USERNAMES_PER_CALL {
            return Err(GlobusError::Protocol(format!(
                "{} usernames in one look-up; at most {MAX_USERNAMES_PER_CALL}",
                usernames.len()
            )));
        }
        let mut url = self.auth("v2/api/identities")?;
        url.query_pairs_mut()
            .append_pair("usernames", &usernames.join(","));
        if provision {
            url.query_pairs_mut().append_pair("provision", "true");
        }
        let answer = self
            .call(
                Call::Identities,
                Method::GET,
                url,
                Auth::Client,
                Body::Empty,
            )
            .await?;
        let identities = answer
            .get("identities")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        serde_json::from_value(identities)
            .map_err(|e| GlobusError::Protocol(format!("identities answer: {e}")))
    }
}
