//! The access service (`smrtshare.access.v1.Access`): the only process that changes Globus
//! access rules (and smrtshare's Globus groups), and only the ones it created.
//!
//! - [`globus`]: the Globus client (tokens per resource server, identities with optional
//!   provisioning, access rules with optional invitations, the Groups API; pacing and retries).
//! - [`registry`]: what smrtshare holds or means to hold (rules, groups, members, invitations,
//!   unresolved members), in SQLite or PostgreSQL.
//! - [`reconcile`]: apply (rule or group sharing), revoke, verify (with the migration between
//!   the modes), the caps, and the expiry renewal task.
//! - [`service`]: the gRPC API over the core; [`model`]: its validated domain types; [`view`]:
//!   a project's records as the API shows them.
//!
//! [`run`] serves until shutdown; [`Access`] does the same in steps, for tests that need the core
//! or the renewal task's status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use smrtshare_api::access::v1::access_server::AccessServer;
use smrtshare_common::server::{GrpcServer, ServerOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod clock;
pub mod config;
pub mod error;
pub mod globus;
mod locks;
pub mod metrics;
pub mod model;
pub mod reconcile;
pub mod registry;
pub mod service;
pub mod view;

pub use clock::Clock;
pub use config::{Args, Config};
pub use error::Error;
pub use reconcile::renewal::RenewalStatus;
pub use reconcile::{Caps, Core, Invitations, RulePolicy, SharingMode};

use globus::identities::IdentityResolver;
use globus::{Globus, GlobusError};
use metrics::Metrics;
use registry::Registry;

/// A started access service: registry open, Globus client made, renewal task running.
#[derive(Debug)]
pub struct Access {
    core: Arc<Core>,
    server: ServerOptions,
    metrics_listen: Option<std::net::SocketAddr>,
    renewal: watch::Receiver<RenewalStatus>,
    stop: watch::Sender<bool>,
    renewal_task: tokio::task::JoinHandle<()>,
}

impl Access {
    /// Opens the registry (running migrations), builds the Globus client and starts the
    /// renewal task. Nothing is sent to Globus yet.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.policy.expiry.is_zero(),
            "rules must expire: the exact expiry is how smrtshare proves a rule found after a \
             crash is its own"
        );
        let metrics = Metrics::new();
        let registry = Registry::open(
            &config.database_url,
            config.database_max_connections,
            config.clock.clone(),
        )
        .await
        .context("opening the rule registry")?;
        let globus = Arc::new(Globus::new(
            config.globus.clone(),
            config.clock.clone(),
            metrics.clone(),
        )?);
        let identities = IdentityResolver::new(
            globus.clone(),
            config.mapping.clone(),
            config.provision_identities,
            config.identity_ttl,
            config.identity_miss_ttl,
        );
        let core = Arc::new(Core::new(
            registry,
            globus,
            identities,
            config.policy.clone(),
            config.clock.clone(),
            metrics,
        ));
        let (status, renewal) = watch::channel(RenewalStatus::default());
        let (stop, stopped) = watch::channel(false);
        let renewal_task = tokio::spawn(reconcile::renewal::run(core.clone(), status, stopped));
        tracing::info!(
            backend = ?core.registry().backend(),
            collection = core.globus().collection_id(),
            rate_limit = core.globus().rate_limit(),
            "access service started"
        );
        Ok(Self {
            core,
            server: config.server,
            metrics_listen: config.metrics_listen,
            renewal,
            stop,
            renewal_task,
        })
    }

    /// The core (for tests and embedding).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The renewal task's progress.
    pub fn renewal_status(&self) -> watch::Receiver<RenewalStatus> {
        self.renewal.clone()
    }

    /// Serves gRPC on `listener` until `shutdown` completes. Health reports NOT_SERVING until a
    /// Globus token was fetched (credentials refused: the server stops with the error; Globus
    /// unreachable: it keeps trying).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            core,
            server,
            metrics_listen,
            renewal: _,
            stop,
            renewal_task,
        } = self;
        if let Some(address) = metrics_listen {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("binding metrics on {address}"))?;
            let mut stopped = stop.subscribe();
            tokio::spawn(metrics::serve(listener, core.metrics.clone(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
        }
        let max = server.max_message_bytes;
        let mut grpc = GrpcServer::new(server)?;
        grpc.add_service(
            AccessServer::new(service::AccessService::new(core.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        );
        let globus = core.globus().clone();
        let result = grpc.serve(listener, ready(globus), shutdown).await;
        let _ = stop.send(true);
        let _ = renewal_task.await;
        result
    }
}

/// Ready once a Globus token is in hand.
async fn ready(globus: Arc<Globus>) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(500);
    loop {
        match globus.check_credentials().await {
            Ok(()) => return Ok(()),
            Err(error @ GlobusError::Credentials(_)) => {
                return Err(anyhow::anyhow!(error).context("globus refused the client credentials"));
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "globus not reachable yet; health stays NOT_SERVING");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Starts the service and serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    Access::start(config).await?.serve(listener, shutdown).await
}
