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
    smrtshare_staging::run(
        listener,
        config,
        smrtshare_common::server::shutdown_signal(),
    )
    .await
}
