//! The coordinator's metrics: tasks by target and state, task durations and outcomes (retries
//! included), changes by reason and kind (every reason: mirror, manual, resync, effect),
//! revocation latency, intake answers, SMRT Link calls, resync outcomes.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetState {
    target: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetOutcome {
    target: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonKind {
    reason: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    answer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallOutcome {
    call: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    tasks: Family<TargetState, Gauge>,
    executions: Family<TargetOutcome, Counter>,
    durations: Family<TargetOutcome, Histogram>,
    changes: Family<ReasonKind, Counter>,
    intake: Family<Answer, Counter>,
    smrtlink: Family<CallOutcome, Counter>,
    resyncs: Family<Outcome, Counter>,
    resync_differences: Gauge,
    revocations: Histogram,
}

/// Shared handle to the coordinator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smrtshare_coordinator");
        let tasks = Family::<TargetState, Gauge>::default();
        let executions = Family::<TargetOutcome, Counter>::default();
        let durations = Family::<TargetOutcome, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let changes = Family::<ReasonKind, Counter>::default();
        let intake = Family::<Answer, Counter>::default();
        let smrtlink = Family::<CallOutcome, Counter>::default();
        let resyncs = Family::<Outcome, Counter>::default();
        let revocations =
            Histogram::new([0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]);
        let resync_differences = Gauge::default();
        registry.register(
            "tasks",
            "Tasks by target and state (read from the database)",
            tasks.clone(),
        );
        registry.register(
            "task_executions",
            "Task attempts by target and outcome (ok, retry, failed, discarded)",
            executions.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Duration of task attempts by target and outcome",
            durations.clone(),
        );
        registry.register(
            "changes",
            "Changes recorded by reason and kind",
            changes.clone(),
        );
        registry.register(
            "intake_requests",
            "Mirrored requests by answer (202, 403, 404, 405)",
            intake.clone(),
        );
        registry.register(
            "smrtlink_calls",
            "SMRT Link reads by call and outcome",
            smrtlink.clone(),
        );
        registry.register(
            "resyncs",
            "Resyncs by outcome (complete, incomplete, refused, busy, error)",
            resyncs.clone(),
        );
        registry.register(
            "resync_differences",
            "Differences found by the last resync",
            resync_differences.clone(),
        );
        registry.register(
            "revocation_latency_seconds",
            "From a change being recorded to the access task that revoked members for it being recorded OK",
            revocations.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                tasks,
                executions,
                durations,
                changes,
                intake,
                smrtlink,
                resyncs,
                resync_differences,
                revocations,
            }),
        }
    }

    /// One task attempt finished.
    pub fn task_finished(&self, target: &str, outcome: &str, took: Duration) {
        let labels = TargetOutcome {
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.inner.executions.get_or_create(&labels).inc();
        self.inner
            .durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Members' access was revoked `after` the change that asked for it was recorded.
    pub fn revocation(&self, after: Duration) {
        self.inner.revocations.observe(after.as_secs_f64());
    }

    /// A change was recorded.
    pub fn change_recorded(&self, reason: &str, kind: &str) {
        self.inner
            .changes
            .get_or_create(&ReasonKind {
                reason: reason.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The intake answered a mirrored request.
    pub fn intake_answered(&self, status: u16) {
        self.inner
            .intake
            .get_or_create(&Answer {
                answer: status.to_string(),
            })
            .inc();
    }

    /// A SMRT Link read finished.
    pub fn smrtlink_call(&self, call: &str, outcome: &str) {
        self.inner
            .smrtlink
            .get_or_create(&CallOutcome {
                call: call.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A resync finished (or could not start).
    pub fn resync_finished(&self, outcome: &str, differences: usize) {
        self.inner
            .resyncs
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.inner
            .resync_differences
            .set(i64::try_from(differences).unwrap_or(i64::MAX));
    }

    /// Replaces the task gauges with counts read from the database.
    pub fn set_task_counts(&self, counts: &[(String, String, i64)]) {
        self.inner.tasks.clear();
        for (target, state, n) in counts {
            self.inner
                .tasks
                .get_or_create(&TargetState {
                    target: target.clone(),
                    state: state.clone(),
                })
                .set(*n);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        smrtshare_common::metrics::encode_registry(&self.inner.registry)
    }
}
