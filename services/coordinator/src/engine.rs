//! The task engine: workers per target claim a due task, hold its lease while they send the
//! project's full desired state, and record the outcome under fencing. A claim is taken only for
//! work that starts now, and renewed while it runs ([`crate::lease`]), so a replica that dies
//! loses its tasks within one lease. Several engines (replicas) may share one database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lease::{LeaseTimes, Renewal};
use crate::metrics::Metrics;
use crate::model::{Operation, Target};
use crate::peers::{PeerAnswer, Peers};
use crate::rules::{RetryPolicy, TaskResult};
use crate::store::{Store, TaskClaim};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Workers per target.
    pub workers_per_target: usize,
    /// How long a claim holds, and how often it is renewed.
    pub lease: LeaseTimes,
    /// Retries of a task.
    pub retry: RetryPolicy,
    /// Longest sleep between claim attempts (other replicas' tasks are found this way).
    pub poll: Duration,
}

/// Wakes sleeping task workers, per target: one worker when one task appeared (a change makes
/// one task per target), every worker when many did.
#[derive(Clone, Debug, Default)]
pub struct TaskWake {
    staging: Arc<Notify>,
    access: Arc<Notify>,
}

impl TaskWake {
    /// A new set of wake-ups.
    pub fn new() -> Self {
        Self::default()
    }

    fn of(&self, target: Target) -> &Notify {
        match target {
            Target::Staging => &self.staging,
            Target::Access => &self.access,
        }
    }

    /// Wakes one worker of each target (or the next to wait, when none waits now).
    pub fn one_each(&self) {
        for target in Target::ALL {
            self.of(target).notify_one();
        }
    }

    /// Wakes every waiting worker of every target.
    pub fn all(&self) {
        for target in Target::ALL {
            self.of(target).notify_waiters();
        }
    }
}

/// Runs tasks.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Store,
    peers: Peers,
    config: EngineConfig,
    owner: String,
    wake: TaskWake,
    metrics: Metrics,
    /// When this engine last took back expired tasks (store clock, ms).
    last_reap: Arc<AtomicI64>,
}

/// How often an engine looks for tasks whose worker vanished (ms).
const REAP_EVERY_MS: i64 = 1000;

/// What one execution came to, for tests and logs.
#[derive(Clone, Debug)]
pub struct Execution {
    /// The claim.
    pub claim: TaskClaim,
    /// The result, when the call ended while the claim held.
    pub result: Option<TaskResult>,
    /// True when the result was recorded (false: the claim was lost, or the call abandoned).
    pub recorded: bool,
}

impl Engine {
    /// An engine; `owner` names this replica in leases.
    pub fn new(
        store: Store,
        peers: Peers,
        config: EngineConfig,
        owner: String,
        wake: TaskWake,
    ) -> Self {
        Self {
            store,
            peers,
            config,
            owner,
            wake,
            metrics: Metrics::new(),
            last_reap: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Reports task attempts to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// This engine's owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes back expired tasks (at most once a second per engine), then claims one due task of
    /// `target`, runs it and records it; `None` when nothing was due. `abort` abandons the call
    /// in flight (and hands the task back at once).
    pub async fn run_once(
        &self,
        target: Target,
        abort: &CancellationToken,
    ) -> anyhow::Result<Option<Execution>> {
        self.reap_now_and_then().await;
        let claim = self
            .store
            .claim_task(target, &self.owner, self.config.lease.lease_ms())
            .await?;
        match claim {
            Some(claim) => Ok(Some(self.run_claim(claim, abort).await)),
            None => Ok(None),
        }
    }

    /// Runs a claimed task while its lease is renewed: reads the desired state, calls the
    /// service, records the result. When the claim is lost meanwhile the call is dropped and
    /// nothing is recorded; when `abort` fires the call is dropped and the task handed back.
    pub async fn run_claim(&self, claim: TaskClaim, abort: &CancellationToken) -> Execution {
        let renewal = {
            let (store, held, owner) = (self.store.clone(), claim.clone(), self.owner.clone());
            let lease_ms = self.config.lease.lease_ms();
            Renewal::start("task", self.config.lease, move || {
                let (store, held, owner) = (store.clone(), held.clone(), owner.clone());
                Box::pin(async move { store.renew_task(&held, &owner, lease_ms).await })
            })
        };
        let started = Instant::now();
        let ran = tokio::select! {
            ran = renewal.hold(self.execute(&claim)) => ran,
            () = abort.cancelled() => None,
        };
        drop(renewal);
        let took = started.elapsed();
        let Some((PeerAnswer { result, revoked }, hash)) = ran else {
            let outcome = if abort.is_cancelled() {
                // Handed back at once, so another replica need not wait for the lease to lapse.
                if let Err(error) = self.store.release_task(&claim, &self.owner).await {
                    tracing::warn!(task_id = claim.task_id, %error, "handing a task back failed; its lease lapses");
                }
                tracing::warn!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target,
                    "shutting down: the call in flight was abandoned and the task handed back");
                "abandoned"
            } else {
                tracing::warn!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target,
                    attempt = claim.attempts, "the task's lease was lost: the call was dropped and nothing recorded");
                "lost"
            };
            self.metrics
                .task_finished(claim.target.as_str(), outcome, took);
            return Execution {
                claim,
                result: None,
                recorded: false,
            };
        };
        let recorded = match self
            .store
            .finish_task(&claim, &result, &hash, &self.config.retry)
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => {
                // The lease lapses and the task runs again.
                tracing::warn!(task_id = claim.task_id, %error, "recording a task result failed");
                false
            }
        };
        let outcome = match (&result, recorded) {
            (_, false) => "discarded",
            (TaskResult::Ok { .. }, true) => "ok",
            (TaskResult::Retry { .. }, true) => "retry",
            (TaskResult::Permanent { .. }, true) => "failed",
        };
        self.metrics
            .task_finished(claim.target.as_str(), outcome, took);
        if recorded && revoked > 0 && claim.change_at > 0 {
            let after = self.store.now().saturating_sub(claim.change_at);
            self.metrics
                .revocation(Duration::from_millis(u64::try_from(after).unwrap_or(0)));
        }
        log_execution(&claim, &result, recorded, took);
        if recorded && matches!(result, TaskResult::Retry { .. }) {
            // A retry may be due before any worker's next look.
            self.wake.of(claim.target).notify_one();
        }
        Execution {
            claim,
            result: Some(result),
            recorded,
        }
    }

    /// The desired state and what the service answered, with the state's fingerprint.
    async fn execute(&self, claim: &TaskClaim) -> (PeerAnswer, String) {
        match self.store.desired(claim.project_id).await {
            Ok(Some(desired)) => {
                let hash = desired.fingerprint(claim.target);
                (
                    self.peers
                        .run(claim.target, &desired, claim.change_id)
                        .await,
                    hash,
                )
            }
            Ok(None) => (
                PeerAnswer {
                    result: TaskResult::Permanent {
                        operation: Operation::Apply,
                        message: format!(
                            "project {} was never read from SMRT Link",
                            claim.project_id
                        ),
                        report: None,
                        residue: Vec::new(),
                    },
                    revoked: 0,
                },
                String::new(),
            ),
            Err(error) => (
                PeerAnswer {
                    result: TaskResult::Retry {
                        operation: Operation::Apply,
                        message: format!("reading the desired state failed: {error}"),
                        report: None,
                    },
                    revoked: 0,
                },
                String::new(),
            ),
        }
    }

    /// Takes back tasks whose worker vanished, at most once a second per engine.
    async fn reap_now_and_then(&self) {
        let now = self.store.now();
        let seen = self.last_reap.load(Ordering::Relaxed);
        if now - seen < REAP_EVERY_MS
            || self
                .last_reap
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.store.reap_expired(&self.config.retry).await {
            Ok(reaped) if !reaped.is_empty() => self.wake.all(),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "taking back expired tasks failed"),
        }
    }

    /// Starts the workers. They stop claiming when `cancel` fires and finish the task in hand;
    /// when `abort` fires they drop the call in flight and hand the task back.
    pub fn spawn(
        &self,
        cancel: CancellationToken,
        abort: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for target in Target::ALL {
            for worker in 0..self.config.workers_per_target.max(1) {
                let engine = self.clone();
                let (cancel, abort) = (cancel.clone(), abort.clone());
                handles.push(tokio::spawn(async move {
                    engine.worker(target, worker, cancel, abort).await
                }));
            }
        }
        handles
    }

    /// One worker: claims and runs tasks while any is due, then sleeps until woken, until the
    /// next task is due, or for the poll interval.
    async fn worker(
        &self,
        target: Target,
        worker: usize,
        cancel: CancellationToken,
        abort: CancellationToken,
    ) {
        tracing::debug!(%target, worker, "task worker started");
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            match self.run_once(target, &abort).await {
                Ok(Some(_)) => failures = 0,
                Ok(None) => {
                    failures = 0;
                    let wait = self.idle_wait(target).await;
                    if self.pause(target, wait, &cancel).await {
                        break;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%target, worker, error = format!("{error:#}"), "claiming a task failed");
                    let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                    if self.pause(target, wait, &cancel).await {
                        break;
                    }
                }
            }
        }
        tracing::debug!(%target, worker, "task worker stopped");
    }

    /// Sleeps for `wait` or until woken; true when `cancel` fired.
    async fn pause(&self, target: Target, wait: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => true,
            () = self.wake.of(target).notified() => false,
            () = tokio::time::sleep(wait) => false,
        }
    }

    /// Sleep until the next task is due, at most `poll` (and at most until the next reaping).
    async fn idle_wait(&self, target: Target) -> Duration {
        let poll = self
            .config
            .poll
            .min(Duration::from_millis(REAP_EVERY_MS as u64));
        match self.store.next_due(target).await {
            Ok(Some(due)) => {
                let ms = (due - self.store.now()).max(5);
                poll.min(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
            }
            _ => poll,
        }
    }
}

// Fields avoid the names `message` and `target`: the JSON log format uses them for the event's
// text and the module.
fn log_execution(claim: &TaskClaim, result: &TaskResult, recorded: bool, took: Duration) {
    let (outcome, detail) = match result {
        TaskResult::Ok { message, .. } => ("ok", message),
        TaskResult::Retry { message, .. } => ("retry", message),
        TaskResult::Permanent { message, .. } => ("failed", message),
    };
    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    if !recorded {
        tracing::warn!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target,
            attempt = claim.attempts, change_id = claim.change_id, "late result discarded: the task was taken back");
    } else if outcome == "ok" {
        tracing::info!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target,
            attempt = claim.attempts, change_id = claim.change_id, took_ms, detail = %detail, "task done");
    } else {
        tracing::warn!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target,
            attempt = claim.attempts, change_id = claim.change_id, took_ms, outcome, detail = %detail, "task failed");
    }
}
