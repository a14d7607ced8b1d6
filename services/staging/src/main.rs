//! `smrtshare-staging`: serves `smrtshare.staging.v1.Staging`.

use clap::Parser as _;
use smrtshare_staging::{Args, Config, config::DEFAULT_LISTEN};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    smrtshare_common::telemetry::init(&args.log)?;
    let config = Config::from_args(&args)?;
    let address = args.server.listen_or(DEFAULT_LISTEN);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    let handle = smrtshare_staging::Handle::new();
    if let Some(address) = args.metrics.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {address}: {e}"))?;
        let from = handle.metrics().clone();
        let encode = std::sync::Arc::new(move || from.encode());
        // Served until the process ends (after the gRPC server's drain).
        tokio::spawn(async move {
            if let Err(error) =
                smrtshare_common::metrics::serve(metrics, encode, std::future::pending()).await
            {
                tracing::error!(error = format!("{error:#}"), "metrics endpoint failed");
            }
        });
    }
    smrtshare_staging::run_with(
        listener,
        config,
        handle,
        smrtshare_common::server::shutdown_signal(),
    )
    .await
}
