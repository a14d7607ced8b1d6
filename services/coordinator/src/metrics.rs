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

use crate::model::{ChangeKind, ChangeReason, Target, TaskState};

/// Task attempt outcomes (`task_finished`).
const TASK_OUTCOMES: [&str; 6] = ["ok", "retry", "failed", "discarded", "lost", "abandoned"];
/// Resync outcomes (`resync_finished`).
const RESYNC_OUTCOMES: [&str; 5] = ["complete", "incomplete", "refused", "busy", "error"];
/// The intake's answers.
const INTAKE_ANSWERS: [u16; 4] = [202, 403, 404, 405];

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
        smrtshare_common::metrics::register_common(&mut registry);
        let metrics = Self {
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
        };
        metrics.start_at_zero();
        metrics
    }

    /// Creates every labelled series an alert or a dashboard reads at zero, so it is there from
    /// the start (an `increase()` sees the first event, a panel shows 0 rather than no data).
    fn start_at_zero(&self) {
        let i = &self.inner;
        for target in Target::ALL {
            for outcome in TASK_OUTCOMES {
                let labels = TargetOutcome {
                    target: target.as_str().to_owned(),
                    outcome: outcome.to_owned(),
                };
                drop(i.executions.get_or_create(&labels));
                drop(i.durations.get_or_create(&labels));
            }
        }
        for reason in ChangeReason::VARIANTS {
            for kind in ChangeKind::VARIANTS {
                drop(i.changes.get_or_create(&ReasonKind {
                    reason: reason.as_str().to_owned(),
                    kind: kind.as_str().to_owned(),
                }));
            }
        }
        for answer in INTAKE_ANSWERS {
            drop(i.intake.get_or_create(&Answer {
                answer: answer.to_string(),
            }));
        }
        for outcome in RESYNC_OUTCOMES {
            drop(i.resyncs.get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            }));
        }
        self.set_task_counts(&[]);
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

    /// Sets the task gauges to counts read from the database: every target and state, 0 when
    /// the database holds none.
    pub fn set_task_counts(&self, counts: &[(String, String, i64)]) {
        let known = Target::ALL.iter().flat_map(|target| {
            TaskState::VARIANTS
                .iter()
                .map(move |state| (target.as_str().to_owned(), state.as_str().to_owned()))
        });
        let given = counts.iter().map(|(t, s, _)| (t.clone(), s.clone()));
        for (target, state) in known.chain(given) {
            let n = counts
                .iter()
                .find(|(t, s, _)| *t == target && *s == state)
                .map_or(0, |(_, _, n)| *n);
            self.inner
                .tasks
                .get_or_create(&TargetState { target, state })
                .set(n);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        smrtshare_common::metrics::encode_registry(&self.inner.registry)
    }
}
