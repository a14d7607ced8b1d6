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
    /// Group create.
    GroupCreate,
    /// The client's groups.
    GroupList,
    /// One group with its memberships.
    GroupGet,
    /// Group membership actions (add, remove).
    GroupMembers,
    /// Group delete.
    GroupDelete,
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

/// Which cap.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Cap {
    /// Rules per collection.
    Collection,
    /// Effective rules per identity.
    Identity,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    cap: Cap,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabels {
    /// `smrtshare` or `others`.
    owner: String,
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
    collection_rules: Family<OwnerLabels, Gauge>,
    cap_limit: Family<CapLabels, Gauge>,
    cap_usage: Family<CapLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    cap_refusals: Family<CapLabels, Counter>,
    unresolved: Gauge,
    invitations: Counter,
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
        let collection_rules = Family::<OwnerLabels, Gauge>::default();
        registry.register(
            "collection_rules",
            "Rules on the collection: smrtshare's (registry) and others' (as of the last Verify)",
            collection_rules.clone(),
        );
        let cap_limit = Family::<CapLabels, Gauge>::default();
        registry.register(
            "cap_limit",
            "The configured caps: rules per collection, effective rules per identity",
            cap_limit.clone(),
        );
        let cap_usage = Family::<CapLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "cap_usage_ratio",
            "Share of each cap in use (collection: all rules; identity: the busiest identity); \
             Verify warns at 0.9",
            cap_usage.clone(),
        );
        let cap_refusals = Family::<CapLabels, Counter>::default();
        registry.register(
            "cap_refusals",
            "Members not granted because a cap is reached (no Globus call made)",
            cap_refusals.clone(),
        );
        let unresolved = Gauge::default();
        registry.register(
            "unresolved_members",
            "Project members with no Globus identity (or a login that is not valid), all projects",
            unresolved.clone(),
        );
        let invitations = Counter::default();
        registry.register(
            "invitations_sent",
            "Rules created with notify_email (an invitation email from Globus)",
            invitations.clone(),
        );
        smrtshare_common::metrics::register_common(&mut registry);
        // Series alerts count from zero, there from the start.
        for cap in [Cap::Collection, Cap::Identity] {
            cap_refusals.get_or_create(&CapLabels { cap }).inc_by(0);
        }
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
                collection_rules,
                cap_limit,
                cap_usage,
                cap_refusals,
                unresolved,
                invitations,
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

    /// Records the rules on the collection and how full each cap is.
    pub fn caps(&self, usage: &crate::model::CapUsage) {
        let owner = |owner: &str| OwnerLabels {
            owner: owner.to_owned(),
        };
        let i = &self.inner;
        i.collection_rules
            .get_or_create(&owner("smrtshare"))
            .set(usage.smrtshare_rules);
        i.collection_rules
            .get_or_create(&owner("others"))
            .set(usage.foreign_rules);
        for (cap, limit, used) in [
            (
                Cap::Collection,
                usage.collection_cap,
                usage.collection_rules(),
            ),
            (
                Cap::Identity,
                usage.identity_cap,
                usage.busiest_identity_rules,
            ),
        ] {
            i.cap_limit.get_or_create(&CapLabels { cap }).set(limit);
            let ratio = if limit > 0 {
                used as f64 / limit as f64
            } else {
                0.0
            };
            i.cap_usage.get_or_create(&CapLabels { cap }).set(ratio);
        }
    }

    /// Counts one member refused at a cap.
    pub fn cap_refused(&self, cap: Cap) {
        self.inner
            .cap_refusals
            .get_or_create(&CapLabels { cap })
            .inc();
    }

    /// Records the unresolved members of all projects.
    pub fn unresolved(&self, count: i64) {
        self.inner.unresolved.set(count);
    }

    /// Counts one invitation sent.
    pub fn invitation_sent(&self) {
        self.inner.invitations.inc();
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
