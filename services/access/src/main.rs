//! `smrtshare-access`: parses flags, sets up logs, binds, serves until SIGTERM/SIGINT.

use anyhow::Context as _;
use clap::Parser as _;
use smrtshare_access::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    smrtshare_common::telemetry::init(args.log())?;
    let config = args.config()?;
    let listen = args.listen()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    smrtshare_access::run(
        listener,
        config,
        smrtshare_common::server::shutdown_signal(),
    )
    .await
}
