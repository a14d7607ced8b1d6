//! Configuration: clap flags (each with an environment variable) resolved into [`Config`].
//! Secrets come from files or the environment and never print.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smrtshare_common::Secret;
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::config::{DatabaseArgs, LogArgs, ServerArgs};
use smrtshare_common::server::ServerOptions;
use url::Url;

use crate::clock::Clock;
use crate::globus::identities::LoginMapping;
use crate::globus::{
    DEFAULT_AUTH_URL, DEFAULT_GROUPS_URL, DEFAULT_TRANSFER_URL, GlobusConfig, RetryPolicy,
};
use crate::reconcile::{
    Caps, DEFAULT_INVITATION, Invitations, MAX_INVITATION_CHARS, RulePolicy, SharingMode,
};

/// Where the service listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50052";
/// The embedded registry unless told otherwise.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://smrtshare-access.db";

/// `smrtshare-access`: the only process that changes Globus access rules.
#[derive(Debug, Parser)]
#[command(name = "smrtshare-access", version)]
pub struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    globus: GlobusArgs,
    #[command(flatten)]
    rules: RuleArgs,
    /// Address for Prometheus metrics over HTTP (`/metrics`); none when unset.
    #[arg(long, env = "SMRTSHARE_ACCESS_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// How to reach Globus and whom to be there.
#[derive(Debug, clap::Args)]
struct GlobusArgs {
    /// Globus Auth base URL.
    #[arg(long, env = "SMRTSHARE_GLOBUS_AUTH_URL", default_value = DEFAULT_AUTH_URL)]
    globus_auth_url: Url,
    /// Globus Transfer base URL (with the API version).
    #[arg(long, env = "SMRTSHARE_GLOBUS_TRANSFER_URL", default_value = DEFAULT_TRANSFER_URL)]
    globus_transfer_url: Url,
    /// Globus Groups base URL (group sharing; paths start with /v2/).
    #[arg(long, env = "SMRTSHARE_GLOBUS_GROUPS_URL", default_value = DEFAULT_GROUPS_URL)]
    globus_groups_url: Url,
    /// Look up `login@domain` usernames with `provision=true`: Globus makes identities it does
    /// not know yet (as globus-cli's --provision-identity), so access is in place the day the
    /// person first logs in.
    #[arg(long, env = "SMRTSHARE_GLOBUS_PROVISION_IDENTITIES")]
    globus_provision_identities: bool,
    /// The confidential client id (a Globus service account that manages the collection's
    /// access rules).
    #[arg(long, env = "SMRTSHARE_GLOBUS_CLIENT_ID")]
    globus_client_id: String,
    /// File holding the client secret.
    #[arg(
        long,
        env = "SMRTSHARE_GLOBUS_CLIENT_SECRET_FILE",
        conflicts_with = "globus_client_secret"
    )]
    globus_client_secret_file: Option<PathBuf>,
    /// The client secret (prefer --globus-client-secret-file; never logged).
    #[arg(long, env = "SMRTSHARE_GLOBUS_CLIENT_SECRET", hide_env_values = true)]
    globus_client_secret: Option<String>,
    /// The collection (endpoint) id whose access rules smrtshare manages.
    #[arg(long, env = "SMRTSHARE_GLOBUS_COLLECTION_ID")]
    globus_collection_id: String,
    /// Domain appended to SMRT Link logins to make Globus usernames (`alice` →
    /// `alice@example.edu`). Logins holding `@` are used as they are.
    #[arg(long, env = "SMRTSHARE_GLOBUS_USERNAME_DOMAIN")]
    globus_username_domain: Option<String>,
    /// File mapping logins to Globus usernames, one `login username` per line (`#` comments);
    /// consulted before the domain.
    #[arg(long, env = "SMRTSHARE_GLOBUS_LOGIN_TABLE")]
    globus_login_table: Option<PathBuf>,
    /// How long a found identity is cached.
    #[arg(long, env = "SMRTSHARE_GLOBUS_IDENTITY_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    globus_identity_ttl: Duration,
    /// How long "no such username" is cached.
    #[arg(long, env = "SMRTSHARE_GLOBUS_IDENTITY_MISS_TTL", value_parser = humantime::parse_duration, default_value = "5m")]
    globus_identity_miss_ttl: Duration,
    /// Requests per second sent to Globus at most (Globus allows about 20; 0: no limit).
    #[arg(long, env = "SMRTSHARE_GLOBUS_RATE_LIMIT", default_value_t = 20.0)]
    globus_rate_limit: f64,
    /// Requests allowed at once above the rate.
    #[arg(long, env = "SMRTSHARE_GLOBUS_BURST", default_value_t = 5)]
    globus_burst: u32,
    /// Requests in flight to Globus at most.
    #[arg(long, env = "SMRTSHARE_GLOBUS_CONCURRENCY", default_value_t = 8)]
    globus_concurrency: usize,
    /// Time limit on one Globus request.
    #[arg(long, env = "SMRTSHARE_GLOBUS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    globus_timeout: Duration,
    /// Time limit on connecting to Globus.
    #[arg(long, env = "SMRTSHARE_GLOBUS_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    globus_connect_timeout: Duration,
    /// Attempts per Globus call, the first included.
    #[arg(long, env = "SMRTSHARE_GLOBUS_MAX_ATTEMPTS", default_value_t = 6)]
    globus_max_attempts: u32,
    /// Backoff after the first failure (doubled after each further one, with full jitter).
    #[arg(long, env = "SMRTSHARE_GLOBUS_BACKOFF", value_parser = humantime::parse_duration, default_value = "250ms")]
    globus_backoff: Duration,
    /// Largest backoff.
    #[arg(long, env = "SMRTSHARE_GLOBUS_BACKOFF_CAP", value_parser = humantime::parse_duration, default_value = "30s")]
    globus_backoff_cap: Duration,
    /// Largest Retry-After honoured.
    #[arg(long, env = "SMRTSHARE_GLOBUS_MAX_RETRY_AFTER", value_parser = humantime::parse_duration, default_value = "2m")]
    globus_max_retry_after: Duration,
}

/// How rules are kept.
#[derive(Debug, clap::Args)]
struct RuleArgs {
    /// Days after which a rule expires at Globus (renewed while the member stays); at least 1.
    /// The exact expiry is how a rule found after a crash is proven smrtshare's, so rules
    /// always expire (3650 for "practically never").
    #[arg(long, env = "SMRTSHARE_ACCESS_RULE_EXPIRY_DAYS", default_value_t = 90)]
    rule_expiry_days: u32,
    /// Rules expiring within this are renewed.
    #[arg(long, env = "SMRTSHARE_ACCESS_RENEW_BEFORE", value_parser = humantime::parse_duration, default_value = "14days")]
    renew_before: Duration,
    /// How often the renewal task runs.
    #[arg(long, env = "SMRTSHARE_ACCESS_RENEWAL_INTERVAL", value_parser = humantime::parse_duration, default_value = "6h")]
    renewal_interval: Duration,
    /// Clock difference allowed between smrtshare and Globus when adopting rules after a crash.
    #[arg(long, env = "SMRTSHARE_ACCESS_ADOPTION_SKEW", value_parser = humantime::parse_duration, default_value = "5m")]
    adoption_skew: Duration,
    /// After LimitExceeded, creates are not attempted for this long (unless a rule is freed).
    #[arg(long, env = "SMRTSHARE_ACCESS_LIMIT_COOLOFF", value_parser = humantime::parse_duration, default_value = "5m")]
    limit_cooloff: Duration,
    /// Members of one project worked on at once.
    #[arg(long, env = "SMRTSHARE_ACCESS_MEMBER_CONCURRENCY", default_value_t = 8)]
    member_concurrency: usize,
    /// How members get access: `rules` (one rule per member and project) or `groups` (one
    /// Globus group per project, one rule per project directory). Changing it is completed by
    /// Verify (the migration grants the new form before revoking the old).
    #[arg(long, env = "SMRTSHARE_ACCESS_SHARING", value_enum, default_value_t = SharingMode::Rules)]
    sharing: SharingMode,
    /// Rules per collection counted against (Globus: 1000).
    #[arg(
        long,
        env = "SMRTSHARE_ACCESS_COLLECTION_RULE_CAP",
        default_value_t = 1000
    )]
    collection_rule_cap: u32,
    /// Rules per identity counted against (Globus counts at most 100 effective rules).
    #[arg(
        long,
        env = "SMRTSHARE_ACCESS_IDENTITY_RULE_CAP",
        default_value_t = 100
    )]
    identity_rule_cap: u32,
    /// Share of a cap at which Verify warns.
    #[arg(long, env = "SMRTSHARE_ACCESS_CAP_WARNING", default_value_t = 0.9)]
    cap_warning: f64,
    /// Invite members: a member's first rule in a project carries notify_email (rule sharing),
    /// when their email is known (the login table's third column).
    #[arg(long, env = "SMRTSHARE_ACCESS_INVITE_MEMBERS")]
    invite_members: bool,
    /// The invitation's text; {sharer}, {login}, {username}, {project_id}, {path} and
    /// {collection_id} are filled in.
    #[arg(long, env = "SMRTSHARE_ACCESS_INVITATION_MESSAGE", default_value = DEFAULT_INVITATION)]
    invitation_message: String,
    /// Who shares, for {sharer}.
    #[arg(
        long,
        env = "SMRTSHARE_ACCESS_INVITATION_SHARER",
        default_value = "Your sequencing core"
    )]
    invitation_sharer: String,
}

/// Everything the service needs, resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// gRPC server options (auth, TLS, limits).
    pub server: ServerOptions,
    /// Registry URL (`sqlite://…` or `postgres://…`).
    pub database_url: String,
    /// Registry pool size.
    pub database_max_connections: u32,
    /// Globus.
    pub globus: GlobusConfig,
    /// Logins to usernames.
    pub mapping: LoginMapping,
    /// Identity look-ups provision unknown usernames.
    pub provision_identities: bool,
    /// Cache time of found identities.
    pub identity_ttl: Duration,
    /// Cache time of unknown usernames.
    pub identity_miss_ttl: Duration,
    /// Rule keeping.
    pub policy: RulePolicy,
    /// Metrics address.
    pub metrics_listen: Option<SocketAddr>,
    /// Where "now" comes from.
    pub clock: Clock,
}

impl Config {
    /// A configuration with production defaults and no auth, for embedding and tests.
    pub fn new(globus: GlobusConfig, database_url: &str, mapping: LoginMapping) -> Self {
        Self {
            server: ServerOptions::new(ServerAuth::Disabled),
            database_url: database_url.to_owned(),
            database_max_connections: 8,
            globus,
            mapping,
            provision_identities: false,
            identity_ttl: Duration::from_secs(3600),
            identity_miss_ttl: Duration::from_secs(300),
            policy: RulePolicy::default(),
            metrics_listen: None,
            clock: Clock::System,
        }
    }
}

impl Args {
    /// The log flags.
    pub fn log(&self) -> &LogArgs {
        &self.log
    }

    /// Where to listen.
    pub fn listen(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.server.listen_or(DEFAULT_LISTEN.parse()?))
    }

    /// Resolves the flags (reads secret and table files).
    pub fn config(&self) -> anyhow::Result<Config> {
        let g = &self.globus;
        let secret = match (&g.globus_client_secret_file, &g.globus_client_secret) {
            (Some(path), _) => Secret::from_file(path)?,
            (None, Some(secret)) if !secret.trim().is_empty() => Secret::new(secret.trim()),
            _ => anyhow::bail!(
                "no Globus client secret: set --globus-client-secret-file \
                 (SMRTSHARE_GLOBUS_CLIENT_SECRET_FILE) or SMRTSHARE_GLOBUS_CLIENT_SECRET"
            ),
        };
        anyhow::ensure!(
            g.globus_max_attempts >= 1,
            "--globus-max-attempts must be at least 1"
        );
        anyhow::ensure!(
            g.globus_concurrency >= 1,
            "--globus-concurrency must be at least 1"
        );
        anyhow::ensure!(
            g.globus_rate_limit.is_finite() && g.globus_rate_limit >= 0.0,
            "--globus-rate-limit must be 0 or more"
        );
        let table = match &g.globus_login_table {
            Some(path) => LoginMapping::load_table(path)?,
            None => HashMap::new(),
        };
        let mapping = LoginMapping::new(g.globus_username_domain.as_deref(), table)?;
        let mut globus = GlobusConfig::new(
            g.globus_auth_url.clone(),
            g.globus_transfer_url.clone(),
            &g.globus_client_id,
            secret,
            &g.globus_collection_id,
        );
        globus.groups_url = g.globus_groups_url.clone();
        globus.request_timeout = g.globus_timeout;
        globus.connect_timeout = g.globus_connect_timeout;
        globus.rate_per_second = g.globus_rate_limit;
        globus.burst = g.globus_burst;
        globus.concurrency = g.globus_concurrency;
        globus.retry = RetryPolicy {
            max_attempts: g.globus_max_attempts,
            base: g.globus_backoff,
            cap: g.globus_backoff_cap,
            max_retry_after: g.globus_max_retry_after,
        };
        let r = &self.rules;
        anyhow::ensure!(
            r.rule_expiry_days >= 1,
            "--rule-expiry-days must be at least 1: the exact expiry smrtshare asks for is how a \
             rule found after a crash is proven its own (without it, a rule a person made could \
             be adopted and later deleted); use a long expiry such as 3650 days instead of 0"
        );
        let policy = RulePolicy {
            expiry: Duration::from_secs(u64::from(r.rule_expiry_days) * 86_400),
            renew_before: r.renew_before,
            renewal_interval: r.renewal_interval.max(Duration::from_secs(1)),
            renewal_first_delay: Duration::from_secs(60),
            adoption_skew: r.adoption_skew,
            limit_cooloff: r.limit_cooloff,
            member_concurrency: r.member_concurrency.max(1),
            sharing: r.sharing,
            caps: Caps {
                collection: r.collection_rule_cap,
                identity: r.identity_rule_cap,
                warn_at: r.cap_warning,
            },
            invitations: r.invite_members.then(|| Invitations {
                message: r.invitation_message.clone(),
                sharer: r.invitation_sharer.clone(),
            }),
        };
        anyhow::ensure!(
            r.collection_rule_cap >= 1 && r.identity_rule_cap >= 1,
            "the rule caps must be at least 1"
        );
        anyhow::ensure!(
            r.cap_warning > 0.0 && r.cap_warning <= 1.0,
            "--cap-warning must lie in (0, 1]"
        );
        anyhow::ensure!(
            r.invitation_message.chars().count() <= MAX_INVITATION_CHARS,
            "--invitation-message is longer than {MAX_INVITATION_CHARS} characters"
        );
        anyhow::ensure!(
            policy.renew_before < policy.expiry,
            "--renew-before ({:?}) must be shorter than the rule expiry ({} days)",
            policy.renew_before,
            r.rule_expiry_days
        );
        anyhow::ensure!(
            policy.renewal_interval < policy.renew_before,
            "--renewal-interval must be shorter than --renew-before, or rules lapse between passes"
        );
        Ok(Config {
            server: self.server.options()?,
            database_url: self
                .database
                .database_url
                .clone()
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            database_max_connections: self.database.database_max_connections,
            globus,
            mapping,
            provision_identities: g.globus_provision_identities,
            identity_ttl: g.globus_identity_ttl,
            identity_miss_ttl: g.globus_identity_miss_ttl,
            policy,
            metrics_listen: self.metrics_listen,
            clock: Clock::System,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(extra: &[&str]) -> anyhow::Result<Config> {
        let mut args = vec![
            "smrtshare-access",
            "--no-auth",
            "--globus-client-id",
            "c",
            "--globus-client-secret",
            "s",
            "--globus-collection-id",
            "5a6e1e52-0c0f-4c4b-9d57-2a3c1f0e7b11",
        ];
        args.extend_from_slice(extra);
        Args::try_parse_from(args)?.config()
    }

    #[test]
    fn rules_always_expire() {
        let error = parse(&["--rule-expiry-days", "0"]).expect_err("refused");
        assert!(error.to_string().contains("at least 1"), "{error}");
        let config = parse(&["--rule-expiry-days", "3650"]).expect("accepted");
        assert_eq!(config.policy.expiry, Duration::from_secs(3650 * 86_400));
    }
}
