//! Followers: analysis jobs of shared projects are looked at one by one until their state is
//! final, on a schedule that backs off (1 min, 2 min, … 30 min by default) and lives in the
//! database, so it survives restarts and replicas share it. A job that finishes has its outputs
//! read and its project's staging task made; a job that fails stages nothing and says why.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::TaskWake;
use crate::lease::{LeaseTimes, Renewal};
use crate::metrics::Metrics;
use crate::rules::{self, CheckSchedule, JobPhase};
use crate::source::ProjectSource;
use crate::store::{JobClaim, JobFound, Store};

/// Follower settings.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// Concurrent followers.
    pub followers: usize,
    /// How long a follower's claim on a job holds, and how often it is renewed.
    pub lease: LeaseTimes,
    /// When a pending job is looked at again.
    pub schedule: CheckSchedule,
    /// Longest sleep between claim attempts.
    pub poll: Duration,
}

/// Follows analysis jobs.
#[derive(Clone)]
pub struct Follower {
    store: Store,
    source: Arc<dyn ProjectSource>,
    config: FollowerConfig,
    owner: String,
    wake_tasks: TaskWake,
    metrics: Metrics,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("owner", &self.owner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower pool.
    pub fn new(
        store: Store,
        source: Arc<dyn ProjectSource>,
        config: FollowerConfig,
        owner: String,
        wake_tasks: TaskWake,
    ) -> Self {
        Self {
            store,
            source,
            config,
            owner,
            wake_tasks,
            metrics: Metrics::new(),
        }
    }

    /// Reports the changes finished jobs record to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Claims, reads and records one job due for a look; false when none was due.
    pub async fn check_once(&self, abort: &CancellationToken) -> anyhow::Result<bool> {
        let Some(claim) = self
            .store
            .claim_job(&self.owner, self.config.lease.lease_ms())
            .await?
        else {
            return Ok(false);
        };
        let renewal = {
            let (store, held, owner) = (self.store.clone(), claim.clone(), self.owner.clone());
            let lease_ms = self.config.lease.lease_ms();
            Renewal::start("job", self.config.lease, move || {
                let (store, held, owner) = (store.clone(), held.clone(), owner.clone());
                Box::pin(async move { store.renew_job(&held, &owner, lease_ms).await })
            })
        };
        let looked = tokio::select! {
            looked = renewal.hold(self.look(claim.job_id)) => looked,
            () = abort.cancelled() => None,
        };
        drop(renewal);
        match looked {
            Some((found, stamp)) => self.record(&claim, &found, stamp).await,
            None if abort.is_cancelled() => {
                if let Err(error) = self.store.renew_job(&claim, &self.owner, 0).await {
                    tracing::warn!(job_id = claim.job_id, %error, "handing a job back failed; its claim lapses");
                }
            }
            None => tracing::warn!(
                job_id = claim.job_id,
                "the job's claim was lost; nothing recorded"
            ),
        }
        Ok(true)
    }

    async fn record(&self, claim: &JobClaim, found: &JobFound, stamp: i64) {
        match self
            .store
            .finish_job(claim, &self.owner, found, stamp, &self.config.schedule)
            .await
        {
            Ok(Some(changes)) => {
                if !changes.is_empty() {
                    for _ in &changes {
                        self.metrics.change_recorded("ANALYSIS", "PROJECT_CHANGED");
                    }
                    self.wake_tasks.one_each();
                }
                tracing::info!(job_id = claim.job_id, changes = ?changes, "analysis job looked at");
            }
            Ok(None) => tracing::warn!(
                job_id = claim.job_id,
                "job result discarded: taken over by another follower"
            ),
            Err(error) => {
                tracing::warn!(job_id = claim.job_id, %error, "recording a job failed; it is looked at again")
            }
        }
    }

    /// Reads a job (and, once finished, its outputs), stamped when the read starts.
    async fn look(&self, job_id: i64) -> (JobFound, i64) {
        let stamp = match self.store.next_stamp().await {
            Ok(stamp) => stamp,
            Err(error) => {
                return (
                    JobFound::Unreadable(format!("taking a read stamp: {error}")),
                    0,
                );
            }
        };
        let found = match self.source.get_analysis_job(job_id).await {
            Ok(None) => JobFound::Gone,
            Ok(Some(job)) if rules::job_phase(&job.state) == JobPhase::Done => {
                match self.source.analysis_outputs(job_id).await {
                    Ok(outputs) => JobFound::Job { job, outputs },
                    Err(error) => JobFound::Unreadable(error.to_string()),
                }
            }
            Ok(Some(job)) => JobFound::Job {
                job,
                outputs: Vec::new(),
            },
            Err(error) => JobFound::Unreadable(error.to_string()),
        };
        (found, stamp)
    }

    /// Starts the followers. They stop claiming when `cancel` fires; when `abort` fires they
    /// drop the read in hand and hand the job back.
    pub fn spawn(
        &self,
        cancel: CancellationToken,
        abort: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.followers.max(1))
            .map(|n| {
                let follower = self.clone();
                let (cancel, abort) = (cancel.clone(), abort.clone());
                tokio::spawn(async move { follower.run(n, cancel, abort).await })
            })
            .collect()
    }

    async fn run(&self, n: usize, cancel: CancellationToken, abort: CancellationToken) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            let wait = match self.check_once(&abort).await {
                Ok(true) => {
                    failures = 0;
                    continue;
                }
                Ok(false) => {
                    failures = 0;
                    match self.store.next_job_check().await {
                        Ok(Some(due)) => {
                            let ms =
                                u64::try_from((due - self.store.now()).max(1)).unwrap_or(u64::MAX);
                            self.config.poll.min(Duration::from_millis(ms))
                        }
                        _ => self.config.poll,
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        follower = n,
                        error = format!("{error:#}"),
                        "claiming a job failed"
                    );
                    Duration::from_millis(100 * u64::from(failures.min(50)))
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
