//! Command-line groups every service flattens into its own clap parser. Every flag has an
//! environment variable; secrets come from files or the environment and never print.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::auth::{Secret, ServerAuth};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for deployment and log collectors).
    Json,
    /// Readable lines, coloured on a terminal.
    #[default]
    Human,
}

/// Logging flags.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "SMRTSHARE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter in tracing-subscriber's EnvFilter syntax (for example `info,smrtshare_staging=debug`).
    #[arg(long, env = "SMRTSHARE_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Flags for a gRPC server: where it listens, who may call it, TLS, and limits.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Address the gRPC server listens on (each service has its own default port).
    #[arg(long, env = "SMRTSHARE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// File holding the bearer token callers must send (`authorization: Bearer <token>`).
    #[arg(long, env = "SMRTSHARE_AUTH_TOKEN_FILE", conflicts_with = "auth_token")]
    pub auth_token_file: Option<PathBuf>,

    /// The bearer token itself (prefer --auth-token-file; the value is never logged).
    #[arg(long, env = "SMRTSHARE_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Accept RPCs without a token. Must be given explicitly; without a token and without this
    /// flag the service refuses to start.
    #[arg(long, env = "SMRTSHARE_NO_AUTH", conflicts_with_all = ["auth_token", "auth_token_file"])]
    pub no_auth: bool,

    /// PEM certificate chain for TLS. With --tls-key, the server speaks only TLS.
    #[arg(long, env = "SMRTSHARE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS.
    #[arg(long, env = "SMRTSHARE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle; when set, clients must present a certificate it signed.
    #[arg(long, env = "SMRTSHARE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "SMRTSHARE_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Time limit on one RPC (server side), for example `5m`.
    #[arg(long, env = "SMRTSHARE_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10m")]
    pub request_timeout: Duration,

    /// Concurrent RPCs per connection.
    #[arg(long, env = "SMRTSHARE_CONCURRENCY_LIMIT", default_value_t = 256)]
    pub concurrency_limit: usize,

    /// How long in-flight RPCs may run after SIGTERM/SIGINT before connections are dropped.
    #[arg(long, env = "SMRTSHARE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
}

impl ServerArgs {
    /// The listen address, or the service's default.
    pub fn listen_or(&self, default: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or(default)
    }

    /// The auth policy these flags describe. Fails when no token is given and auth was not
    /// explicitly disabled.
    pub fn auth(&self) -> anyhow::Result<ServerAuth> {
        if self.no_auth {
            return Ok(ServerAuth::Disabled);
        }
        if let Some(path) = &self.auth_token_file {
            return Ok(ServerAuth::Token(Secret::from_file(path)?));
        }
        match self.auth_token.as_deref().map(str::trim) {
            Some(token) if !token.is_empty() => Ok(ServerAuth::Token(Secret::new(token))),
            Some(_) => anyhow::bail!("--auth-token (SMRTSHARE_AUTH_TOKEN) is empty"),
            None => anyhow::bail!(
                "no bearer token: set --auth-token-file (SMRTSHARE_AUTH_TOKEN_FILE) or \
                 SMRTSHARE_AUTH_TOKEN, or pass --no-auth to accept unauthenticated RPCs"
            ),
        }
    }

    /// Server options for [`crate::server::serve`].
    pub fn options(&self) -> anyhow::Result<crate::server::ServerOptions> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::server::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        Ok(crate::server::ServerOptions {
            auth: self.auth()?,
            tls,
            max_message_bytes: self.max_message_bytes,
            request_timeout: self.request_timeout,
            concurrency_limit: self.concurrency_limit,
            drain_timeout: self.drain_timeout,
        })
    }
}

/// Where a service keeps its own database.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH` (embedded; created when missing) or
    /// `postgres://USER@HOST/DB`. Each service has its own default SQLite file.
    #[arg(long, env = "SMRTSHARE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most connections the pool opens.
    #[arg(long, env = "SMRTSHARE_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
}

/// Flags for calling a peer smrtshare service over gRPC (TLS and token). The peer's URL is a
/// service-specific flag.
#[derive(Args, Clone, Debug, Default)]
pub struct PeerArgs {
    /// File holding the bearer token sent to peer services.
    #[arg(long, env = "SMRTSHARE_PEER_TOKEN_FILE", conflicts_with = "peer_token")]
    pub peer_token_file: Option<PathBuf>,

    /// The bearer token sent to peer services (prefer --peer-token-file; never logged).
    #[arg(long, env = "SMRTSHARE_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,

    /// PEM CA bundle that signs the peers' server certificates (for `https://` peer URLs).
    #[arg(long, env = "SMRTSHARE_PEER_TLS_CA")]
    pub peer_tls_ca: Option<PathBuf>,

    /// PEM client certificate presented to peers that require one.
    #[arg(long, env = "SMRTSHARE_PEER_TLS_CERT", requires = "peer_tls_key")]
    pub peer_tls_cert: Option<PathBuf>,

    /// PEM key of the client certificate.
    #[arg(long, env = "SMRTSHARE_PEER_TLS_KEY", requires = "peer_tls_cert")]
    pub peer_tls_key: Option<PathBuf>,

    /// Time limit on one call to a peer, for example `2m`.
    #[arg(long, env = "SMRTSHARE_PEER_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    pub peer_timeout: Duration,
}

impl PeerArgs {
    /// The token to send, if any.
    pub fn token(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(path) = &self.peer_token_file {
            return Ok(Some(Secret::from_file(path)?));
        }
        Ok(self
            .peer_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Secret::new))
    }

    /// Client options for [`crate::client::PeerClient::connect_lazy`].
    pub fn options(&self) -> anyhow::Result<crate::client::PeerOptions> {
        Ok(crate::client::PeerOptions {
            token: self.token()?,
            tls_ca: self.peer_tls_ca.clone(),
            tls_identity: self.peer_tls_cert.clone().zip(self.peer_tls_key.clone()),
            timeout: self.peer_timeout,
        })
    }
}
