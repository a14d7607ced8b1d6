//! The `/metrics` endpoint every service serves (Prometheus / OpenMetrics text), on its own
//! listener (`--metrics-listen`), so probes and scrapers never need the gRPC token.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use clap::Args;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Where metrics are served.
#[derive(Args, Clone, Debug, Default)]
pub struct MetricsArgs {
    /// Address of the HTTP `/metrics` endpoint (Prometheus text); not served when unset.
    #[arg(long, env = "SMRTSHARE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` with whatever `encode` returns, until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    encode: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = encode.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], encode()) }
        }),
    );
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(address, "metrics listening on /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Encodes a prometheus-client registry as text (an empty string if encoding fails, logged).
pub fn encode_registry(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(%error, "cannot encode metrics");
    }
    out
}

/// gRPC servers of this process whose health reports SERVING (the runner keeps it; a service
/// process runs one server, so 1 or 0).
static SERVING: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// The health gauge the gRPC runner keeps.
pub(crate) fn serving() -> &'static Gauge {
    &SERVING
}

/// Registers what every service exports besides its own metrics, under the service's prefix:
/// `<prefix>_grpc_serving`, 1 while the process's gRPC health reports SERVING, 0 while it starts,
/// refuses to serve, or drains.
pub fn register_common(registry: &mut Registry) {
    registry.register(
        "grpc_serving",
        "1 while gRPC health reports SERVING; 0 while starting, refusing to serve or draining",
        SERVING.clone(),
    );
}
