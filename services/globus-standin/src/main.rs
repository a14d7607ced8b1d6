//! `smrtshare-globus-standin`: a local Globus for the local stack and for tests of the real
//! binaries. Every flag has an environment variable; the admin API (`/admin/...`) changes faults,
//! identities and rules while it runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use smrtshare_common::Secret;
use smrtshare_common::config::LogArgs;
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Fault, FaultPlan, Identity,
    RateLimit, StandInConfig,
};

/// A local stand-in for Globus Auth and Transfer access rules.
#[derive(Debug, Parser)]
#[command(name = "smrtshare-globus-standin", version)]
struct Args {
    /// Address to listen on (HTTP). Auth is at `/v2/...`, Transfer at `/v0.10/...`.
    #[arg(
        long,
        env = "SMRTSHARE_STANDIN_LISTEN",
        default_value = "127.0.0.1:8089"
    )]
    listen: SocketAddr,

    /// The confidential client id accepted.
    #[arg(long, env = "SMRTSHARE_STANDIN_CLIENT_ID", default_value = DEFAULT_CLIENT_ID)]
    client_id: String,

    /// File holding the client secret accepted.
    #[arg(
        long,
        env = "SMRTSHARE_STANDIN_CLIENT_SECRET_FILE",
        conflicts_with = "client_secret"
    )]
    client_secret_file: Option<PathBuf>,

    /// The client secret accepted (prefer --client-secret-file; never logged).
    #[arg(long, env = "SMRTSHARE_STANDIN_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,

    /// Collection ids that exist (comma-separated in the environment).
    #[arg(long = "endpoint", env = "SMRTSHARE_STANDIN_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINT)]
    endpoints: Vec<String>,

    /// Identities that exist, as `username` or `username=identity-uuid` (comma-separated in the
    /// environment). Ids not given are derived from the username, the same on every start.
    #[arg(
        long = "identity",
        env = "SMRTSHARE_STANDIN_IDENTITIES",
        value_delimiter = ','
    )]
    identities: Vec<String>,

    /// Domains whose usernames may be provisioned by look-ups with `provision=true`
    /// (comma-separated in the environment); none given: every domain.
    #[arg(
        long = "provision-domain",
        env = "SMRTSHARE_STANDIN_PROVISION_DOMAINS",
        value_delimiter = ','
    )]
    provision_domains: Vec<String>,

    /// Lifetime of issued tokens.
    #[arg(long, env = "SMRTSHARE_STANDIN_TOKEN_LIFETIME", value_parser = humantime::parse_duration, default_value = "48h")]
    token_lifetime: Duration,

    /// Access rules per collection.
    #[arg(long, env = "SMRTSHARE_STANDIN_RULE_LIMIT", default_value_t = 1000)]
    rule_limit: usize,

    /// Requests per second answered before 429 (0: no limit).
    #[arg(long, env = "SMRTSHARE_STANDIN_RATE_LIMIT", default_value_t = 20.0)]
    rate_limit: f64,

    /// Requests allowed at once above the rate.
    #[arg(long, env = "SMRTSHARE_STANDIN_RATE_BURST", default_value_t = 20)]
    rate_burst: u32,

    /// Seed of the fault draws, tokens and request ids (rule ids are random UUIDs, never
    /// repeated, also across restarts).
    #[arg(long, env = "SMRTSHARE_STANDIN_SEED", default_value_t = 1)]
    seed: u64,

    /// Share of requests answered with a fault (0 to 1).
    #[arg(long, env = "SMRTSHARE_STANDIN_FAULT_SHARE", default_value_t = 0.0)]
    fault_share: f64,

    /// The faults drawn from, with equal weight (comma-separated in the environment).
    #[arg(long, env = "SMRTSHARE_STANDIN_FAULTS", value_delimiter = ',', value_enum, default_values_t = [FaultKind::TooManyRequests, FaultKind::Unavailable, FaultKind::ExternalError, FaultKind::DropRequest])]
    faults: Vec<FaultKind>,

    /// `Retry-After` seconds of injected 429 answers.
    #[arg(long, env = "SMRTSHARE_STANDIN_RETRY_AFTER", default_value_t = 1)]
    retry_after: u64,

    /// Delay of injected slow answers.
    #[arg(long, env = "SMRTSHARE_STANDIN_SLOW", value_parser = humantime::parse_duration, default_value = "2s")]
    slow: Duration,

    #[command(flatten)]
    log: LogArgs,
}

/// Faults the flags can inject.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum FaultKind {
    /// 429 with Retry-After.
    TooManyRequests,
    /// 503 ServiceUnavailable.
    Unavailable,
    /// 502 ExternalError (not retryable).
    ExternalError,
    /// 500 InternalError.
    InternalError,
    /// 504 GatewayTimeout.
    GatewayTimeout,
    /// A slow answer (--slow).
    Slow,
    /// Connection closed before the request is processed.
    DropRequest,
    /// Connection closed after the request is processed.
    DropAnswer,
}

impl Args {
    fn config(&self) -> anyhow::Result<StandInConfig> {
        let secret = match (&self.client_secret_file, &self.client_secret) {
            (Some(path), _) => Secret::from_file(path)?,
            (None, Some(secret)) if !secret.trim().is_empty() => Secret::new(secret.trim()),
            _ => Secret::new(DEFAULT_CLIENT_SECRET),
        };
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.fault_share),
            "--fault-share must lie between 0 and 1"
        );
        let mut identities = Vec::new();
        for spec in &self.identities {
            let (username, id) = match spec.split_once('=') {
                Some((u, id)) => (u.trim(), Some(id.trim())),
                None => (spec.trim(), None),
            };
            anyhow::ensure!(!username.is_empty(), "--identity {spec:?}: empty username");
            let mut identity = Identity::for_username(username);
            if let Some(id) = id {
                uuid::Uuid::parse_str(id)
                    .with_context(|| format!("--identity {spec:?}: id is not a UUID"))?;
                identity.id = id.to_owned();
            }
            identities.push(identity);
        }
        let slow = u64::try_from(self.slow.as_millis()).unwrap_or(u64::MAX);
        let mix: Vec<(Fault, u32)> = self
            .faults
            .iter()
            .map(|kind| {
                let fault = match kind {
                    FaultKind::TooManyRequests => Fault::TooManyRequests {
                        retry_after_secs: self.retry_after,
                    },
                    FaultKind::Unavailable => Fault::ServiceUnavailable,
                    FaultKind::ExternalError => Fault::ExternalError,
                    FaultKind::InternalError => Fault::InternalError,
                    FaultKind::GatewayTimeout => Fault::GatewayTimeout,
                    FaultKind::Slow => Fault::Slow { millis: slow },
                    FaultKind::DropRequest => Fault::DropRequest,
                    FaultKind::DropAnswer => Fault::DropAnswer,
                };
                (fault, 1)
            })
            .collect();
        Ok(StandInConfig {
            clients: vec![(self.client_id.clone(), secret.expose().to_owned())],
            endpoints: self.endpoints.clone(),
            identities,
            token_lifetime: self.token_lifetime,
            rule_limit: self.rule_limit,
            rate_limit: (self.rate_limit > 0.0).then_some(RateLimit {
                per_second: self.rate_limit,
                burst: self.rate_burst.max(1),
            }),
            seed: self.seed,
            faults: FaultPlan::mixed(self.fault_share, &mix),
            provision_domains: self.provision_domains.clone(),
            ..StandInConfig::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    smrtshare_common::telemetry::init(&args.log)?;
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        client_id = %args.client_id,
        endpoints = ?config.endpoints,
        identities = config.identities.len(),
        rate_limit = ?config.rate_limit,
        fault_share = args.fault_share,
        "globus stand-in listening (auth: /v2, transfer: /v0.10, admin: /admin)"
    );
    smrtshare_globus_standin::serve(
        listener,
        config,
        smrtshare_common::server::shutdown_signal(),
    )
    .await
}
