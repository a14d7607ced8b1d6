//! The task engine: workers per target claim due tasks, send the project's full desired state,
//! and record the outcome under fencing. Several engines (replicas) may share one database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{Operation, Target};
use crate::peers::Peers;
use crate::store::{Backoff, NextClaim, Store, TaskClaim, TaskResult};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Workers per target.
    pub workers_per_target: usize,
    /// How long a claim holds; must outlast the RPC deadline.
    pub lease: Duration,
    /// Retry backoff per (project, target).
    pub backoff: Backoff,
    /// Longest sleep between claim attempts (other replicas' tasks are found this way).
    pub poll: Duration,
}

/// Wakes sleeping task workers, per target: one worker when one task appeared (a change makes
/// one task per target), every worker when many did. Waking one rather than all keeps a burst of
/// changes from sending every idle worker to the database for each task.
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
    /// When a chained claim last reaped expired leases, per target (store clock, ms).
    last_reap: Arc<[AtomicI64; 2]>,
}

/// How often a claim made along with a record also reaps expired leases (ms).
const REAP_EVERY_MS: i64 = 1000;

/// A task that ran, with its result not yet recorded.
#[derive(Debug)]
struct Ran {
    claim: TaskClaim,
    result: TaskResult,
    started: Instant,
}

/// What one execution did, for tests and logs.
#[derive(Clone, Debug)]
pub struct Execution {
    /// The claim.
    pub claim: TaskClaim,
    /// The result sent to the store.
    pub result: TaskResult,
    /// False when the result was discarded (the lease was lost to another worker).
    pub recorded: bool,
}

impl Engine {
    /// An engine; `owner` names this replica in leases (unique per process).
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
            last_reap: Arc::new([AtomicI64::new(0), AtomicI64::new(0)]),
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

    /// Claims one due task of `target`, if any.
    pub async fn claim(&self, target: Target) -> anyhow::Result<Option<TaskClaim>> {
        Ok(self
            .store
            .claim_task(target, &self.owner, crate::clock::millis(self.config.lease))
            .await?)
    }

    /// Runs a claimed task: reads the desired state (unless it came with the claim), calls the
    /// service, returns the result (not yet recorded).
    pub async fn execute(&self, claim: &mut TaskClaim) -> TaskResult {
        let desired = match claim.desired.take() {
            Some(desired) => Ok(desired),
            None => self.store.desired(claim.project_id).await,
        };
        match desired {
            Ok(Some(desired)) => {
                self.peers
                    .run(claim.target, &desired, claim.change_id)
                    .await
            }
            Ok(None) => TaskResult::Permanent {
                operation: Operation::Apply,
                message: format!("project {} was never read from SMRT Link", claim.project_id),
                report: None,
            },
            Err(error) => TaskResult::Retry {
                operation: Operation::Apply,
                message: format!("reading the desired state failed: {error}"),
                report: None,
            },
        }
    }

    /// Records a result under fencing; false when discarded.
    pub async fn record(&self, claim: &TaskClaim, result: TaskResult) -> anyhow::Result<bool> {
        Ok(self
            .store
            .finish_task(claim, result, self.config.backoff)
            .await?)
    }

    /// Claims, runs and records one task of `target`; `None` when nothing is due.
    pub async fn run_once(&self, target: Target) -> anyhow::Result<Option<Execution>> {
        let Some(mut claim) = self.claim(target).await? else {
            return Ok(None);
        };
        let started = Instant::now();
        let result = self.execute(&mut claim).await;
        Ok(Some(
            self.finish(
                Ran {
                    claim,
                    result,
                    started,
                },
                false,
            )
            .await?
            .0,
        ))
    }

    /// Records a task that ran; with `chain`, the record also claims the next due task of the
    /// same target, in the same transaction, and answers it.
    async fn finish(
        &self,
        ran: Ran,
        chain: bool,
    ) -> anyhow::Result<(Execution, Option<TaskClaim>)> {
        let Ran {
            claim,
            result,
            started,
        } = ran;
        let next = chain.then(|| NextClaim {
            owner: self.owner.clone(),
            lease_ms: crate::clock::millis(self.config.lease),
            reap: self.reap_due(claim.target),
        });
        let (recorded, next) = self
            .store
            .finish_and_claim(&claim, result.clone(), self.config.backoff, next)
            .await?;
        let took = started.elapsed();
        let outcome = match (&result, recorded) {
            (_, false) => "discarded",
            (TaskResult::Ok { .. }, true) => "ok",
            (TaskResult::Retry { .. }, true) => "retry",
            (TaskResult::Permanent { .. }, true) => "failed",
        };
        self.metrics
            .task_finished(claim.target.as_str(), outcome, took);
        log_execution(&claim, &result, recorded, took);
        let execution = Execution {
            claim,
            result,
            recorded,
        };
        Ok((execution, next))
    }

    /// Whether a claim made along with a record should reap expired leases first: at most once
    /// a second per target and engine. (A claim on its own checks for them every time; while
    /// workers go from one task straight to the next, this keeps a dead replica's tasks from
    /// waiting until the work runs out.)
    fn reap_due(&self, target: Target) -> bool {
        let last = match target {
            Target::Staging => &self.last_reap[0],
            Target::Access => &self.last_reap[1],
        };
        let now = self.store.now();
        let seen = last.load(Ordering::Relaxed);
        now - seen >= REAP_EVERY_MS
            && last
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Starts the workers; they stop when `cancel` fires (finishing the task in hand).
    pub fn spawn(&self, cancel: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for target in Target::ALL {
            for worker in 0..self.config.workers_per_target.max(1) {
                let engine = self.clone();
                let cancel = cancel.clone();
                handles.push(tokio::spawn(async move {
                    engine.worker(target, worker, cancel).await
                }));
            }
        }
        handles
    }

    /// One worker. It keeps its database work off its tasks' path: while it runs one task it
    /// records the one before and claims the one after, in one transaction, so a task's cycle
    /// is its call to the service rather than that call plus the database's round trips. When
    /// nothing is due it records what it ran and sleeps until woken, until the next task is due,
    /// or for the poll interval. Every task claimed is run and recorded, even once `cancel` has
    /// fired (no claim is left to expire); no new one is claimed then.
    async fn worker(&self, target: Target, worker: usize, cancel: CancellationToken) {
        tracing::debug!(%target, worker, "task worker started");
        let mut failures = 0u32;
        // Claimed and not run yet; run and not recorded yet.
        let mut claimed: Option<TaskClaim> = None;
        let mut ran: Option<Ran> = None;
        // The last record claimed nothing (nothing was due then).
        let mut drained = false;
        loop {
            let chain = !cancel.is_cancelled();
            let step = match (claimed.take(), ran.take()) {
                (Some(mut claim), before) => {
                    let started = Instant::now();
                    let (result, next) = tokio::join!(self.execute(&mut claim), async {
                        match before {
                            Some(before) => self.finish(before, chain).await.map(|(_, next)| next),
                            None if chain => self.claim(target).await,
                            None => Ok(None),
                        }
                    });
                    ran = Some(Ran {
                        claim,
                        result,
                        started,
                    });
                    next.map(|next| claimed = next)
                }
                (None, Some(before)) => self.finish(before, chain).await.map(|(_, next)| {
                    // A record that claimed nothing found nothing due: straight to sleep.
                    drained = next.is_none();
                    claimed = next;
                }),
                (None, None) if !chain => break,
                (None, None) => match self
                    .claim_unless(target, std::mem::take(&mut drained))
                    .await
                {
                    Ok(Some(claim)) => {
                        claimed = Some(claim);
                        Ok(())
                    }
                    Ok(None) => {
                        failures = 0;
                        let wait = self.idle_wait(target).await;
                        if self.pause(target, wait, &cancel).await {
                            break;
                        }
                        continue;
                    }
                    Err(error) => Err(error),
                },
            };
            match step {
                Ok(()) => failures = 0,
                Err(error) => {
                    // A result whose record failed is lost, and so are the claims in hand when
                    // `cancel` fires now: their leases expire and the tasks run again.
                    failures += 1;
                    tracing::warn!(%target, worker, error = format!("{error:#}"), "claiming or recording a task failed");
                    let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                    if self.pause(target, wait, &cancel).await {
                        break;
                    }
                }
            }
        }
        tracing::debug!(%target, worker, "task worker stopped");
    }

    /// Claims one due task of `target`, unless `drained` says the last look found none.
    async fn claim_unless(
        &self,
        target: Target,
        drained: bool,
    ) -> anyhow::Result<Option<TaskClaim>> {
        if drained {
            return Ok(None);
        }
        self.claim(target).await
    }

    /// Sleeps for `wait` or until woken; true when `cancel` fired.
    async fn pause(&self, target: Target, wait: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => true,
            () = self.wake.of(target).notified() => false,
            () = tokio::time::sleep(wait) => false,
        }
    }

    /// Sleep until the next task is due, at most `poll`.
    async fn idle_wait(&self, target: Target) -> Duration {
        let poll = self.config.poll;
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
    let (outcome, message) = match result {
        TaskResult::Ok { message, .. } => ("ok", message),
        TaskResult::Retry { message, .. } => ("retry", message),
        TaskResult::Permanent { message, .. } => ("failed", message),
    };
    if !recorded {
        tracing::warn!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target, attempt = claim.attempts,
            change_id = claim.change_id, "late result discarded: the lease was lost to another worker");
    } else if outcome == "ok" {
        tracing::info!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target, attempt = claim.attempts,
            change_id = claim.change_id, took_ms = took.as_millis() as u64, detail = %message, "task done");
    } else {
        tracing::warn!(task_id = claim.task_id, project_id = claim.project_id, task_target = %claim.target, attempt = claim.attempts,
            change_id = claim.change_id, took_ms = took.as_millis() as u64, outcome, detail = %message, "task failed");
    }
}
