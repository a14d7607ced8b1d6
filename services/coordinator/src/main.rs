//! `smrtshare-coordinator`: parses configuration, sets up logs, opens the database, binds the
//! gRPC, intake and metrics listeners and runs until SIGTERM/SIGINT.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::config::{Config, DEFAULT_LISTEN};
use smrtshare_coordinator::metrics::Metrics;
use smrtshare_coordinator::peers::Peers;
use smrtshare_coordinator::smrtlink::SmrtLinkSource;
use smrtshare_coordinator::status::StatusListener;
use smrtshare_coordinator::store::Store;
use smrtshare_coordinator::{Deps, Listeners, run};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    smrtshare_common::telemetry::init(&config.log)?;
    if let Err(error) = serve(config).await {
        tracing::error!(
            error = format!("{error:#}"),
            "smrtshare-coordinator stopped"
        );
        return Err(error);
    }
    Ok(())
}

async fn bind(address: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {what} on {address}"))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let settings = config.settings()?;
    let options = config.server.options()?;
    let client = smrtshare_smrtlink::SmrtLinkClient::new(config.smrtlink.config()?)
        .context("configuring the SMRT Link client")?;
    let peers = Peers::connect(
        &config.staging_url,
        &config.access_url,
        &config.peers.options()?,
        options.max_message_bytes,
    )?;
    let store = Store::open(
        &config.database_url(),
        config.database.database_max_connections,
        Clock::system(),
    )
    .await
    .context("opening the coordinator's database")?;
    let listeners = Listeners {
        grpc: bind(config.server.listen_or(DEFAULT_LISTEN.parse()?), "gRPC").await?,
        intake: bind(config.intake_listen, "the intake").await?,
        metrics: match config.metrics.metrics_listen {
            Some(address) => Some(bind(address, "metrics").await?),
            None => None,
        },
        status: match config.status.status_listen {
            Some(address) => Some(StatusListener {
                listener: bind(address, "the status page").await?,
                config: config.status.config()?,
            }),
            None => None,
        },
    };
    tracing::info!(
        replica = settings.owner,
        database = ?store.backend(),
        staging = config.staging_url,
        access = config.access_url,
        "starting"
    );
    let metrics = Metrics::new();
    let source = SmrtLinkSource::new(client).with_metrics(metrics.clone());
    let deps = Deps {
        store,
        source: Arc::new(source),
        peers,
        metrics,
    };
    run(
        listeners,
        options,
        settings,
        deps,
        smrtshare_common::server::shutdown_signal(),
    )
    .await
}
