//! Staging's Prometheus metrics, served on `--metrics-listen` (`/metrics`): RPCs by method and
//! gRPC code with their durations, filesystem actions by kind and outcome, mutating system calls,
//! and the number of staged projects.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use smrtshare_api::staging::v1 as pb;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    kind: String,
    outcome: String,
}

/// The counters; cheap to clone (everything inside is shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RpcLabels, Counter>,
    durations: Family<MethodLabels, Histogram>,
    actions: Family<ActionLabels, Counter>,
    projects: Gauge,
    mutating_calls: Counter,
    source_cache: Family<CacheLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every staging metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smrtshare_staging");
        let requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "requests",
            "Staging RPCs answered, by method and gRPC code",
            requests.clone(),
        );
        let durations = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a staging RPC, by method",
            durations.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "actions",
            "Filesystem actions planned or taken, by kind and outcome",
            actions.clone(),
        );
        let projects = Gauge::default();
        registry.register("projects", "Projects staged, as recorded", projects.clone());
        let mutating_calls = Counter::default();
        registry.register(
            "mutating_calls",
            "Mutating system calls made under the staging root since start",
            mutating_calls.clone(),
        );
        let source_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "source_cache_lookups",
            "Source cache look-ups by kind (xml, listing, layout) and result (hit, miss)",
            source_cache.clone(),
        );
        smrtshare_common::metrics::register_common(&mut registry);
        Self {
            registry: Arc::new(registry),
            requests,
            durations,
            actions,
            projects,
            mutating_calls,
            source_cache,
        }
    }

    /// Records one answered RPC.
    pub fn request(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&RpcLabels {
                method,
                code: format!("{code:?}"),
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Records the actions of an apply or remove answer.
    pub fn actions(&self, actions: &[pb::Action]) {
        for action in actions {
            let kind = pb::ActionKind::try_from(action.kind)
                .map(|k| {
                    k.as_str_name()
                        .trim_start_matches("ACTION_KIND_")
                        .to_lowercase()
                })
                .unwrap_or_else(|_| "unknown".into());
            let outcome = pb::ActionOutcome::try_from(action.outcome)
                .map(|o| {
                    o.as_str_name()
                        .trim_start_matches("ACTION_OUTCOME_")
                        .to_lowercase()
                })
                .unwrap_or_else(|_| "unknown".into());
            self.actions
                .get_or_create(&ActionLabels { kind, outcome })
                .inc();
        }
    }

    /// Brings the mutating-call counter up to the tree's own count since start.
    pub fn mutating_calls(&self, since_start: u64) {
        let counted = self.mutating_calls.get();
        if since_start > counted {
            self.mutating_calls.inc_by(since_start - counted);
        }
    }

    /// Brings the source cache counters up to the cache's own counts since start: (hits, misses)
    /// of parsed XMLs, of directory listings and of resolved layouts.
    pub fn source_cache(&self, xml: (u64, u64), listing: (u64, u64), layout: (u64, u64)) {
        for (kind, (hits, misses)) in [("xml", xml), ("listing", listing), ("layout", layout)] {
            for (result, total) in [("hit", hits), ("miss", misses)] {
                let counter = self
                    .source_cache
                    .get_or_create(&CacheLabels { kind, result });
                let counted = counter.get();
                if total > counted {
                    counter.inc_by(total - counted);
                }
            }
        }
    }

    /// Sets the number of staged projects.
    pub fn projects(&self, projects: usize) {
        self.projects
            .set(i64::try_from(projects).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        smrtshare_common::metrics::encode_registry(&self.registry)
    }
}
