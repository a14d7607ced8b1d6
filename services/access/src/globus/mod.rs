//! The Globus client: Auth (client-credentials token, identity look-ups) and Transfer access
//! rules on one collection, over reqwest with rustls.
//!
//! Every HTTP exchange passes one concurrency limit and one client-side rate limiter, so Globus'
//! own limit (about 20 requests/s) is not provoked. Failed calls are retried by
//! [`pacing::RetryPolicy`]: 429 and 503 (honouring `Retry-After`), 500/502/504 unless the code is
//! `ExternalError…`/`EndpointError`, timeouts and connection failures. A 401 from Transfer fetches
//! a new token once. Base URLs are configuration, so the stand-in and Globus are used alike.

use std::time::Duration;

use anyhow::Context as _;
use smrtshare_common::Secret;
use tokio::sync::Semaphore;
use url::Url;

use crate::clock::Clock;
use crate::metrics::Metrics;

mod auth;
pub mod error;
pub mod groups;
mod http;
pub mod identities;
pub mod pacing;
pub mod transfer;

pub use auth::IdentityRecord;
pub use error::{ApiCode, GlobusError};
pub use pacing::RetryPolicy;
pub use transfer::AccessRule;

/// The Transfer scope smrtshare's token is asked for.
pub const TRANSFER_SCOPE: &str = "urn:globus:auth:scope:transfer.api.globus.org:all";
/// The Groups scope (group sharing).
pub const GROUPS_SCOPE: &str = "urn:globus:auth:scope:groups.api.globus.org:all";

/// A resource server smrtshare holds a token for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Transfer (access rules).
    Transfer,
    /// Groups (group sharing).
    Groups,
}

impl Resource {
    /// The scope its token is asked for.
    pub fn scope(self) -> &'static str {
        match self {
            Self::Transfer => TRANSFER_SCOPE,
            Self::Groups => GROUPS_SCOPE,
        }
    }
}

/// How to reach Globus.
#[derive(Clone, Debug)]
pub struct GlobusConfig {
    /// Globus Auth base, `https://auth.globus.org`.
    pub auth_url: Url,
    /// Globus Transfer base, `https://transfer.api.globus.org/v0.10`.
    pub transfer_url: Url,
    /// Globus Groups base, `https://groups.api.globus.org` (paths start with `/v2/`).
    pub groups_url: Url,
    /// The confidential client's id.
    pub client_id: String,
    /// The confidential client's secret (never logged).
    pub client_secret: Secret,
    /// The collection (endpoint) id whose rules smrtshare manages.
    pub collection_id: String,
    /// Time limit on one HTTP exchange.
    pub request_timeout: Duration,
    /// Time limit on connecting.
    pub connect_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Requests per second sent at most (0: unlimited).
    pub rate_per_second: f64,
    /// Requests allowed at once above the rate.
    pub burst: u32,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// How long before its expiry a token is replaced.
    pub token_renew_before: Duration,
}

/// Globus Auth at Globus.
pub const DEFAULT_AUTH_URL: &str = "https://auth.globus.org";
/// Globus Transfer at Globus.
pub const DEFAULT_TRANSFER_URL: &str = "https://transfer.api.globus.org/v0.10";
/// Globus Groups at Globus.
pub const DEFAULT_GROUPS_URL: &str = "https://groups.api.globus.org";

impl GlobusConfig {
    /// Production defaults (timeouts, retries, 20 requests/s, Groups at Globus) for the given
    /// bases, client and collection.
    pub fn new(
        auth_url: Url,
        transfer_url: Url,
        client_id: &str,
        client_secret: Secret,
        collection_id: &str,
    ) -> Self {
        Self {
            auth_url,
            transfer_url,
            groups_url: Url::parse(DEFAULT_GROUPS_URL).expect("the default Groups URL parses"),
            client_id: client_id.to_owned(),
            client_secret,
            collection_id: collection_id.to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_per_second: 20.0,
            burst: 5,
            concurrency: 8,
            token_renew_before: Duration::from_secs(60),
        }
    }
}

/// A Globus client for one collection. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Globus {
    http: reqwest::Client,
    config: GlobusConfig,
    limiter: pacing::RateLimiter,
    in_flight: Semaphore,
    transfer_token: auth::TokenCache,
    groups_token: auth::TokenCache,
    clock: Clock,
    metrics: Metrics,
}

impl Globus {
    /// A client; nothing is sent until the first call.
    pub fn new(config: GlobusConfig, clock: Clock, metrics: Metrics) -> anyhow::Result<Self> {
        anyhow::ensure!(
            uuid_like(&config.collection_id),
            "the collection id {:?} is not a UUID",
            config.collection_id
        );
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("smrtshare-access/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the Globus HTTP client")?;
        Ok(Self {
            http,
            limiter: pacing::RateLimiter::new(config.rate_per_second, config.burst),
            in_flight: Semaphore::new(config.concurrency.max(1)),
            transfer_token: auth::TokenCache::new(config.token_renew_before),
            groups_token: auth::TokenCache::new(config.token_renew_before),
            config,
            clock,
            metrics,
        })
    }

    /// The collection whose rules this client manages.
    pub fn collection_id(&self) -> &str {
        &self.config.collection_id
    }

    /// The configured request rate (requests per second; 0: unlimited).
    pub fn rate_limit(&self) -> f64 {
        self.limiter.per_second()
    }

    fn transfer(&self, tail: &str) -> Result<Url, GlobusError> {
        let base = self.config.transfer_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{tail}"))
            .map_err(|e| GlobusError::Protocol(format!("cannot build a Transfer URL: {e}")))
    }

    fn token_cache(&self, resource: Resource) -> &auth::TokenCache {
        match resource {
            Resource::Transfer => &self.transfer_token,
            Resource::Groups => &self.groups_token,
        }
    }

    fn groups(&self, tail: &str) -> Result<Url, GlobusError> {
        let base = self.config.groups_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/v2/{tail}"))
            .map_err(|e| GlobusError::Protocol(format!("cannot build a Groups URL: {e}")))
    }

    fn auth(&self, tail: &str) -> Result<Url, GlobusError> {
        let base = self.config.auth_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{tail}"))
            .map_err(|e| GlobusError::Protocol(format!("cannot build an Auth URL: {e}")))
    }
}

/// True for 8-4-4-4-12 hexadecimal ids.
pub(crate) fn uuid_like(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}
