//! Prometheus metrics of the access service, served as text on `--metrics-listen` (`/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which Globus call.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Call {
    /// Client-credentials token.
    Token,
    /// Identity look-up.
    Identities,
    /// `access_list`.
    List,
    /// Rule create.
    Create,
    /// Rule update (expiry).
    Update,
    /// Rule delete.
    Delete,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    call: Call,
    /// HTTP status, or `timeout` / `connection`.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: Call,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    retries: Family<CallLabels, Counter>,
    limit_exceeded: Counter,
    renewal_next_run: Gauge,
    renewal_last_run: Gauge,
    renewed: Counter,
    rules: Family<StateLabels, Gauge>,
}

/// The service's metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smrtshare_access");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "globus_requests",
            "HTTP requests sent to Globus, by call and answer",
            requests.clone(),
        );
        let retries = Family::<CallLabels, Counter>::default();
        registry.register(
            "globus_retries",
            "Globus calls retried after a retryable failure",
            retries.clone(),
        );
        let limit_exceeded = Counter::default();
        registry.register(
            "globus_limit_exceeded",
            "Rule creates refused with LimitExceeded (or not attempted while the collection is full)",
            limit_exceeded.clone(),
        );
        let renewal_next_run = Gauge::default();
        registry.register(
            "renewal_next_run_timestamp_seconds",
            "When the expiry renewal task runs next (Unix time)",
            renewal_next_run.clone(),
        );
        let renewal_last_run = Gauge::default();
        registry.register(
            "renewal_last_run_timestamp_seconds",
            "When the expiry renewal task last finished (Unix time)",
            renewal_last_run.clone(),
        );
        let renewed = Counter::default();
        registry.register(
            "rules_renewed",
            "Rules whose expiry was pushed back",
            renewed.clone(),
        );
        let rules = Family::<StateLabels, Gauge>::default();
        registry.register(
            "rules",
            "Rules in the registry by state (as of the last renewal pass)",
            rules.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                retries,
                limit_exceeded,
                renewal_next_run,
                renewal_last_run,
                renewed,
                rules,
            }),
        }
    }

    /// Counts one HTTP exchange with Globus.
    pub fn globus_request(&self, call: Call, status: &str) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                call,
                status: status.to_owned(),
            })
            .inc();
    }

    /// Counts one retry.
    pub fn globus_retry(&self, call: Call) {
        self.inner.retries.get_or_create(&CallLabels { call }).inc();
    }

    /// Counts one LimitExceeded.
    pub fn limit_exceeded(&self) {
        self.inner.limit_exceeded.inc();
    }

    /// Records that a renewal pass finished.
    pub fn renewal_finished(&self, finished_unix: i64) {
        self.inner.renewal_last_run.set(finished_unix);
    }

    /// Counts one renewed rule.
    pub fn rule_renewed(&self) {
        self.inner.renewed.inc();
    }

    /// Records the renewal task's next run.
    pub fn renewal_scheduled(&self, next_unix: i64) {
        self.inner.renewal_next_run.set(next_unix);
    }

    /// Records the registry's rule counts.
    pub fn rule_counts(&self, counts: &[(String, i64)]) {
        for state in ["pending", "active", "deleting", "external"] {
            let n = counts
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.inner
                .rules
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(n);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
        {
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(%address, "metrics listening on /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
