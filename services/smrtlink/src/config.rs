//! Client configuration, and the clap group a service flattens to build it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use smrtshare_common::Secret;
use url::Url;

/// How the client retries 5xx answers, connection failures and timeouts: capped exponential
/// backoff with jitter (each wait is drawn between half and all of the current step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per call, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff step.
    pub initial_backoff: Duration,
    /// The largest backoff step.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backoff between tries (the shared policy: doubling from `initial_backoff`, capped at
    /// `max_backoff`, full jitter).
    pub fn backoff(&self) -> smrtshare_common::retry::Backoff {
        smrtshare_common::retry::Backoff::new(self.initial_backoff, self.max_backoff)
    }
}

/// Everything [`crate::SmrtLinkClient`] needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// API base: `https://HOST:8243/SMRTLink/2.0.0` (SMRT Link 12+), `.../SMRTLink/1.0.0`
    /// (SMRT Link 11), or a bare `http://HOST:PORT` serving `/smrt-link/...` directly.
    pub base_url: Url,
    /// Password-grant endpoint; `None` derives `https://HOST:8243/token` from the base URL.
    pub token_url: Option<Url>,
    /// SMRT Link login (also sent as `X-User-ID`).
    pub user: String,
    /// Its password.
    pub password: Secret,
    /// OAuth client id and secret sent as HTTP Basic to the token endpoints (the WSO2 gateway
    /// of older SMRT Link releases wants them); `None` sends none.
    pub client_credentials: Option<(String, Secret)>,
    /// `scope` sent with the password grant; `None` sends none.
    pub scope: Option<String>,
    /// PEM CA bundle that signs SMRT Link's certificate. When set, it replaces the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Explicit only; a warning is logged when the client is built.
    pub insecure: bool,
    /// Time limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Time limit on one request, reading the whole answer included.
    pub request_timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A configuration with default limits (connect 10 s, request 30 s, 4 tries).
    pub fn new(base_url: Url, user: impl Into<String>, password: Secret) -> Self {
        Self {
            base_url,
            token_url: None,
            user: user.into(),
            password,
            client_credentials: None,
            scope: None,
            ca_file: None,
            insecure: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// The password-grant URL: the configured one, else `{scheme}://{host}:{port}/token`.
    pub fn effective_token_url(&self) -> Url {
        if let Some(url) = &self.token_url {
            return url.clone();
        }
        let mut url = self.base_url.clone();
        url.set_path("/token");
        url.set_query(None);
        url.set_fragment(None);
        url
    }

    /// The refresh-grant URL: `{base}/token`.
    pub fn refresh_url(&self) -> Url {
        join(&self.base_url, "/token")
    }
}

/// `base` with `path` appended to its path (`/SMRTLink/2.0.0` + `/smrt-link/projects`).
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// SMRT Link connection flags for a service's command line; every flag has an environment
/// variable. Secrets come from a file or the environment and never print.
#[derive(Args, Clone, Debug)]
pub struct SmrtLinkArgs {
    /// SMRT Link API base URL, for example `https://smrtlink.example.edu:8243/SMRTLink/2.0.0`
    /// (`/SMRTLink/1.0.0` for SMRT Link 11).
    #[arg(long = "smrtlink-url", env = "SMRTSHARE_SMRTLINK_URL")]
    pub smrtlink_url: Url,

    /// Password-grant token URL (default: `https://HOST:PORT/token` of the API URL).
    #[arg(long = "smrtlink-token-url", env = "SMRTSHARE_SMRTLINK_TOKEN_URL")]
    pub smrtlink_token_url: Option<Url>,

    /// SMRT Link login smrtshare reads as (an admin, to see every project).
    #[arg(long = "smrtlink-user", env = "SMRTSHARE_SMRTLINK_USER")]
    pub smrtlink_user: String,

    /// File holding the SMRT Link password.
    #[arg(
        long = "smrtlink-password-file",
        env = "SMRTSHARE_SMRTLINK_PASSWORD_FILE",
        conflicts_with = "smrtlink_password"
    )]
    pub smrtlink_password_file: Option<PathBuf>,

    /// The SMRT Link password itself (prefer --smrtlink-password-file; never logged).
    #[arg(
        long = "smrtlink-password",
        env = "SMRTSHARE_SMRTLINK_PASSWORD",
        hide_env_values = true
    )]
    pub smrtlink_password: Option<String>,

    /// OAuth client id sent as HTTP Basic to the token endpoints (older, WSO2-fronted releases).
    #[arg(
        long = "smrtlink-client-id",
        env = "SMRTSHARE_SMRTLINK_CLIENT_ID",
        requires = "smrtlink_client_secret_file"
    )]
    pub smrtlink_client_id: Option<String>,

    /// File holding the OAuth client secret for --smrtlink-client-id.
    #[arg(
        long = "smrtlink-client-secret-file",
        env = "SMRTSHARE_SMRTLINK_CLIENT_SECRET_FILE",
        requires = "smrtlink_client_id"
    )]
    pub smrtlink_client_secret_file: Option<PathBuf>,

    /// `scope` sent with the password grant (space-separated), if SMRT Link wants one.
    #[arg(long = "smrtlink-scope", env = "SMRTSHARE_SMRTLINK_SCOPE")]
    pub smrtlink_scope: Option<String>,

    /// PEM CA bundle that signs SMRT Link's certificate (replaces the system roots).
    #[arg(long = "smrtlink-ca-file", env = "SMRTSHARE_SMRTLINK_CA_FILE")]
    pub smrtlink_ca_file: Option<PathBuf>,

    /// Accept any SMRT Link certificate (self-signed, wrong host). Logged as a warning.
    #[arg(
        long = "smrtlink-insecure",
        env = "SMRTSHARE_SMRTLINK_INSECURE",
        conflicts_with = "smrtlink_ca_file"
    )]
    pub smrtlink_insecure: bool,

    /// Time limit on connecting to SMRT Link.
    #[arg(long = "smrtlink-connect-timeout", env = "SMRTSHARE_SMRTLINK_CONNECT_TIMEOUT",
          value_parser = humantime::parse_duration, default_value = "10s")]
    pub smrtlink_connect_timeout: Duration,

    /// Time limit on one SMRT Link request, the whole answer included.
    #[arg(long = "smrtlink-timeout", env = "SMRTSHARE_SMRTLINK_TIMEOUT",
          value_parser = humantime::parse_duration, default_value = "30s")]
    pub smrtlink_timeout: Duration,

    /// Tries per SMRT Link call on 5xx, connection failures and timeouts (1 = no retry).
    #[arg(long = "smrtlink-attempts", env = "SMRTSHARE_SMRTLINK_ATTEMPTS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub smrtlink_attempts: u32,

    /// First retry backoff step (doubles up to --smrtlink-max-backoff, with jitter).
    #[arg(long = "smrtlink-backoff", env = "SMRTSHARE_SMRTLINK_BACKOFF",
          value_parser = humantime::parse_duration, default_value = "200ms")]
    pub smrtlink_backoff: Duration,

    /// Largest retry backoff step.
    #[arg(long = "smrtlink-max-backoff", env = "SMRTSHARE_SMRTLINK_MAX_BACKOFF",
          value_parser = humantime::parse_duration, default_value = "5s")]
    pub smrtlink_max_backoff: Duration,
}

impl SmrtLinkArgs {
    /// The client configuration these flags describe. Fails without a password.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        let password = if let Some(path) = &self.smrtlink_password_file {
            Secret::from_file(path)?
        } else {
            match self.smrtlink_password.as_deref() {
                Some(p) if !p.is_empty() => Secret::new(p),
                Some(_) => {
                    anyhow::bail!("--smrtlink-password (SMRTSHARE_SMRTLINK_PASSWORD) is empty")
                }
                None => anyhow::bail!(
                    "no SMRT Link password: set --smrtlink-password-file \
                     (SMRTSHARE_SMRTLINK_PASSWORD_FILE) or SMRTSHARE_SMRTLINK_PASSWORD"
                ),
            }
        };
        anyhow::ensure!(
            !self.smrtlink_user.trim().is_empty(),
            "--smrtlink-user (SMRTSHARE_SMRTLINK_USER) is empty"
        );
        let client_credentials = match (&self.smrtlink_client_id, &self.smrtlink_client_secret_file)
        {
            (Some(id), Some(file)) => Some((id.clone(), Secret::from_file(file)?)),
            _ => None,
        };
        Ok(ClientConfig {
            base_url: self.smrtlink_url.clone(),
            token_url: self.smrtlink_token_url.clone(),
            user: self.smrtlink_user.trim().to_owned(),
            password,
            client_credentials,
            scope: self.smrtlink_scope.clone().filter(|s| !s.trim().is_empty()),
            ca_file: self.smrtlink_ca_file.clone(),
            insecure: self.smrtlink_insecure,
            connect_timeout: self.smrtlink_connect_timeout,
            request_timeout: self.smrtlink_timeout,
            retry: RetryPolicy {
                max_attempts: self.smrtlink_attempts,
                initial_backoff: self.smrtlink_backoff,
                max_backoff: self.smrtlink_max_backoff.max(self.smrtlink_backoff),
            },
        })
    }
}
