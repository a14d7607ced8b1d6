//! `smrtshare-smrtlink-standin`: the SMRT Link stand-in for the local stack.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use smrtshare_common::Secret;
use smrtshare_common::config::LogArgs;
use smrtshare_smrtlink_standin::{PathRewrite, Seed, StandInOptions, TlsIdentity};

/// A stand-in for PacBio SMRT Link: its token flow, projects, datasets and analysis jobs, the
/// web UI's project writes, and an admin API under /admin to change projects as SMRT Link users
/// do and to inject faults.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "SMRTSHARE_SMRTLINK_STANDIN_LISTEN",
        default_value = "127.0.0.1:8243"
    )]
    listen: SocketAddr,

    /// Directory holding projects.json and datasets.json (and optionally analysis_jobs.json),
    /// such as the `smrtlink/` directory `smrtshare-demo` writes. Without it the stand-in starts
    /// with an empty General Project.
    #[arg(long, env = "SMRTSHARE_SMRTLINK_STANDIN_SEED_DIR")]
    seed_dir: Option<PathBuf>,

    /// Rewrite a path prefix of the seed's dataset paths, `FROM=TO` (repeatable; comma-separated
    /// in the environment).
    #[arg(
        long,
        env = "SMRTSHARE_SMRTLINK_STANDIN_REWRITE_PREFIX",
        value_delimiter = ','
    )]
    rewrite_prefix: Vec<PathRewrite>,

    /// A user who may log in, `login:password` (repeatable; comma-separated in the
    /// environment). Without --user or --users-file, `admin:admin`.
    #[arg(
        long = "user",
        env = "SMRTSHARE_SMRTLINK_STANDIN_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    users: Vec<UserPair>,

    /// File of users, one `login:password` per line (`#` starts a comment).
    #[arg(long, env = "SMRTSHARE_SMRTLINK_STANDIN_USERS_FILE")]
    users_file: Option<PathBuf>,

    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(
        long,
        env = "SMRTSHARE_SMRTLINK_STANDIN_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "SMRTSHARE_SMRTLINK_STANDIN_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Access token lifetime.
    #[arg(long, env = "SMRTSHARE_SMRTLINK_STANDIN_TOKEN_TTL", value_parser = humantime::parse_duration, default_value = "10m")]
    token_ttl: Duration,

    /// Refresh token lifetime.
    #[arg(long, env = "SMRTSHARE_SMRTLINK_STANDIN_REFRESH_TTL", value_parser = humantime::parse_duration, default_value = "1h")]
    refresh_ttl: Duration,

    #[command(flatten)]
    log: LogArgs,
}

/// `login:password`; the password never prints.
#[derive(Clone)]
struct UserPair(String, Secret);

impl fmt::Debug for UserPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:[redacted]", self.0)
    }
}

impl FromStr for UserPair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((login, password)) if !login.trim().is_empty() && !password.is_empty() => {
                Ok(Self(login.trim().to_owned(), Secret::new(password)))
            }
            _ => Err("expected login:password".into()),
        }
    }
}

fn users(args: &Args) -> anyhow::Result<Vec<(String, Secret)>> {
    let mut users: Vec<(String, Secret)> = args
        .users
        .iter()
        .map(|u| (u.0.clone(), u.1.clone()))
        .collect();
    if let Some(path) = &args.users_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let pair: UserPair = line
                .parse()
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), n + 1))?;
            users.push((pair.0, pair.1));
        }
    }
    if users.is_empty() {
        tracing::warn!(
            "no --user or --users-file given: user admin with password admin may log in"
        );
        users.push(("admin".into(), Secret::new("admin")));
    }
    Ok(users)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    smrtshare_common::telemetry::init(&args.log)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::from_files(cert, key)?),
        _ => None,
    };
    let seed = args.seed_dir.as_ref().map(|dir| Seed {
        dir: dir.clone(),
        rewrites: args.rewrite_prefix.clone(),
    });
    let options = StandInOptions {
        seed,
        users: users(&args)?,
        token_ttl: args.token_ttl,
        refresh_ttl: args.refresh_ttl,
        tls,
        ..StandInOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let addr = listener.local_addr()?;
    tracing::info!(
        api = %format!("{scheme}://{addr}/SMRTLink/2.0.0"),
        token = %format!("{scheme}://{addr}/token"),
        admin = %format!("{scheme}://{addr}/admin/state"),
        seed = ?args.seed_dir,
        "smrt link stand-in listening"
    );
    smrtshare_smrtlink_standin::run(
        listener,
        options,
        smrtshare_common::server::shutdown_signal(),
    )
    .await?;
    tracing::info!("smrt link stand-in stopped");
    Ok(())
}
