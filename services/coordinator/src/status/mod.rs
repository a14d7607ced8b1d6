//! The status page: a read-only web page on its own listener for staff who do not use grpcurl.
//! It shows every project with the state of its staging and access tasks and its last change,
//! failures first with the failed task's message and the service's per-dataset or per-member
//! report, and the members access could not resolve; it follows changes by itself (server-sent
//! events; a plain reload every 10 s without JavaScript). An operator may resync from it when
//! `--status-resync` is set.
//!
//! - [`auth`]: sign-in with a token, sessions, CSRF;
//! - [`snapshot`]: what the page shows, read from the store;
//! - [`render`]: the HTML, every value escaped;
//! - [`events`]: the live feed;
//! - [`routes`]: the page, the resync button and the static files.

pub mod auth;
pub mod events;
pub mod render;
pub mod routes;
pub mod snapshot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use smrtshare_common::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::resync::Resync;
use crate::store::{Store, StoreError};

/// The status page's flags.
#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    /// Address of the status page (HTTP). The page is served only when this is set. Keep it on
    /// loopback: the page speaks plain HTTP; reach it from elsewhere through an SSH tunnel or a
    /// TLS proxy (then set --status-cookie-secure).
    #[arg(long, env = "SMRTSHARE_STATUS_LISTEN")]
    pub status_listen: Option<SocketAddr>,

    /// File holding a read-only token for the status page. Viewers who sign in with it see the
    /// page but never the resync button; the coordinator's bearer token signs in too, as an
    /// operator.
    #[arg(
        long,
        env = "SMRTSHARE_STATUS_TOKEN_FILE",
        conflicts_with = "status_token"
    )]
    pub status_token_file: Option<PathBuf>,

    /// The read-only token itself (prefer --status-token-file; never logged).
    #[arg(long, env = "SMRTSHARE_STATUS_TOKEN", hide_env_values = true)]
    pub status_token: Option<String>,

    /// Show operators (signed in with the coordinator's bearer token) a button that runs a
    /// resync, as the Resync RPC does without force.
    #[arg(long, env = "SMRTSHARE_STATUS_RESYNC")]
    pub status_resync: bool,

    /// How often an open page's data is reread (only while someone has the page open).
    #[arg(long, env = "SMRTSHARE_STATUS_REFRESH", value_parser = humantime::parse_duration, default_value = "2s")]
    pub status_refresh: Duration,

    /// How long a sign-in lasts.
    #[arg(long, env = "SMRTSHARE_STATUS_SESSION_TTL", value_parser = humantime::parse_duration, default_value = "12h")]
    pub status_session_ttl: Duration,

    /// Mark the session cookie `Secure` (the page is reached through an HTTPS proxy).
    #[arg(long, env = "SMRTSHARE_STATUS_COOKIE_SECURE")]
    pub status_cookie_secure: bool,
}

impl StatusArgs {
    /// The page's settings, checked.
    pub fn config(&self) -> anyhow::Result<StatusConfig> {
        anyhow::ensure!(
            self.status_refresh >= Duration::from_millis(200),
            "--status-refresh must be at least 200ms, got {:?}",
            self.status_refresh
        );
        anyhow::ensure!(
            self.status_session_ttl >= Duration::from_secs(60),
            "--status-session-ttl must be at least 1m, got {:?}",
            self.status_session_ttl
        );
        let viewer_token = match (&self.status_token_file, self.status_token.as_deref()) {
            (Some(path), _) => Some(Secret::from_file(path)?),
            (None, Some(token)) if !token.trim().is_empty() => Some(Secret::new(token.trim())),
            (None, Some(_)) => anyhow::bail!("--status-token (SMRTSHARE_STATUS_TOKEN) is empty"),
            (None, None) => None,
        };
        Ok(StatusConfig {
            viewer_token,
            resync: self.status_resync,
            refresh: self.status_refresh,
            session_ttl: self.status_session_ttl,
            secure_cookie: self.status_cookie_secure,
        })
    }
}

/// The status page's settings.
#[derive(Clone, Debug)]
pub struct StatusConfig {
    /// The read-only token, if any.
    pub viewer_token: Option<Secret>,
    /// Offer operators the resync button.
    pub resync: bool,
    /// How often an open page's data is reread.
    pub refresh: Duration,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure`.
    pub secure_cookie: bool,
}

/// The status page's socket, bound by the caller, and its settings.
#[derive(Debug)]
pub struct StatusListener {
    /// The bound socket.
    pub listener: TcpListener,
    /// Settings.
    pub config: StatusConfig,
}

/// A resync started from the page, as the page reports it.
#[derive(Clone, Debug)]
pub enum PageResync {
    /// Running since (epoch ms).
    Running(i64),
    /// Ended at (epoch ms), with an account already rendered as HTML.
    Ended(i64, String),
}

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct Page {
    store: Store,
    gate: Arc<auth::Gate>,
    feed: events::Feed,
    /// Present when the resync button is enabled.
    resync: Option<Resync>,
    last_resync: Arc<Mutex<Option<PageResync>>>,
    cancel: CancellationToken,
}

impl Page {
    /// The changing part of the page, read from the store now.
    async fn fragment(&self) -> Result<String, StoreError> {
        let snapshot = snapshot::take(&self.store).await?;
        let notice = {
            let last = self.last_resync.lock().unwrap_or_else(|e| e.into_inner());
            routes::notice(last.as_ref())
        };
        Ok(render::fragment(&snapshot, &notice))
    }
}

/// Serves the page on `status.listener` until `cancel`: the HTTP server and the live feed's
/// producer. `operator_token` is the coordinator's bearer token (`None` with `--no-auth`).
pub fn serve(
    status: StatusListener,
    operator_token: Option<Secret>,
    store: Store,
    resync: Resync,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let StatusListener { listener, config } = status;
    let address = listener
        .local_addr()
        .context("reading the status page's address")?;
    let gate = auth::Gate::new(
        operator_token,
        config.viewer_token.clone(),
        config.session_ttl,
        config.secure_cookie,
    );
    if gate.is_open() {
        tracing::warn!(address = %address, "the status page needs no sign-in (--no-auth and no --status-token-file)");
    }
    if !address.ip().is_loopback() {
        tracing::warn!(address = %address, "the status page listens beyond loopback over plain HTTP; put a TLS proxy in front");
    }
    let page = Page {
        store,
        gate: Arc::new(gate),
        feed: events::Feed::default(),
        resync: config.resync.then_some(resync),
        last_resync: Arc::new(Mutex::new(None)),
        cancel: cancel.clone(),
    };
    let producer = events::spawn(page.clone(), config.refresh, cancel.clone());
    let app = routes::router(page);
    let server = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "the status page failed");
        }
    });
    tracing::info!(address = %address, resync = config.resync, "status page listening");
    Ok(vec![producer, server])
}
