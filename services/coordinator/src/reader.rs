//! Readers: once a change's settle delay has passed, read SMRT Link's truth for it and record
//! what changed (tasks for the project, effect changes for projects datasets moved between, one
//! change per newly listed project). Every read of a project is stamped when it starts, so an
//! older read never replaces a newer truth.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::TaskWake;
use crate::lease::{LeaseTimes, Renewal};
use crate::metrics::Metrics;
use crate::model::ChangeKind;
use crate::naming::DirectoryNamer;
use crate::rules::RetryPolicy;
use crate::source::{ProjectSource, SourceError};
use crate::store::{Found, ReadClaim, Store, effect};

/// Reader settings.
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    /// Concurrent readers.
    pub readers: usize,
    /// How long a reader's claim holds, and how often it is renewed.
    pub lease: LeaseTimes,
    /// Retries of a failed read (after the last, the change is FAILED; resync repairs later).
    pub retry: RetryPolicy,
    /// Longest sleep between claim attempts.
    pub poll: Duration,
}

/// Most datasets a project lost whose new project is looked up per read (the rest: resync).
const MOST_LOOKUPS: usize = 100;

/// Reads SMRT Link for settled changes.
#[derive(Clone)]
pub struct Reader {
    store: Store,
    source: Arc<dyn ProjectSource>,
    namer: DirectoryNamer,
    config: ReaderConfig,
    owner: String,
    wake_readers: Arc<Notify>,
    wake_tasks: TaskWake,
    metrics: Metrics,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("owner", &self.owner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader pool.
    pub fn new(
        store: Store,
        source: Arc<dyn ProjectSource>,
        namer: DirectoryNamer,
        config: ReaderConfig,
        owner: String,
        wake_readers: Arc<Notify>,
        wake_tasks: TaskWake,
    ) -> Self {
        Self {
            store,
            source,
            namer,
            config,
            owner,
            wake_readers,
            wake_tasks,
            metrics: Metrics::new(),
        }
    }

    /// Reports the changes reads record to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Claims, reads and records one settled change; false when none was due.
    pub async fn read_once(&self, abort: &CancellationToken) -> anyhow::Result<bool> {
        let Some(claim) = self
            .store
            .claim_read(&self.owner, self.config.lease.lease_ms())
            .await?
        else {
            return Ok(false);
        };
        self.run_claim(claim, abort).await;
        Ok(true)
    }

    /// Reads a claimed change while its lease is renewed, and records what was found.
    async fn run_claim(&self, claim: ReadClaim, abort: &CancellationToken) {
        let renewal = {
            let (store, held, owner) = (self.store.clone(), claim.clone(), self.owner.clone());
            let lease_ms = self.config.lease.lease_ms();
            Renewal::start("read", self.config.lease, move || {
                let (store, held, owner) = (store.clone(), held.clone(), owner.clone());
                Box::pin(async move { store.renew_read(&held, &owner, lease_ms).await })
            })
        };
        let found = tokio::select! {
            found = renewal.hold(self.read(&claim)) => found,
            () = abort.cancelled() => None,
        };
        drop(renewal);
        let Some(found) = found else {
            if abort.is_cancelled() {
                if let Err(error) = self.store.release_read(&claim, &self.owner).await {
                    tracing::warn!(change_id = claim.change_id, %error, "handing a read back failed; its lease lapses");
                }
            } else {
                tracing::warn!(
                    change_id = claim.change_id,
                    "the read's lease was lost; nothing recorded"
                );
            }
            return;
        };
        if let Found::Failed { message, .. } = &found {
            tracing::warn!(
                change_id = claim.change_id,
                project_id = claim.project_id,
                attempt = claim.read_attempts,
                message,
                "reading SMRT Link failed"
            );
        }
        match self.store.finish_read(&claim, &self.owner, &found).await {
            Ok(Some(recorded)) => {
                for _ in 0..recorded.effects {
                    self.metrics.change_recorded("EFFECT", "PROJECT_CHANGED");
                }
                // A read makes at most one task per target; one more reader looks for the next
                // settled change (effects and discoveries settle at once).
                self.wake_tasks.one_each();
                self.wake_readers.notify_one();
                if !recorded.lost.is_empty() {
                    self.notify_holders(&claim, &recorded.lost).await;
                }
            }
            Ok(None) => tracing::warn!(
                change_id = claim.change_id,
                "read result discarded: the change was taken over by another reader"
            ),
            Err(error) => {
                tracing::warn!(change_id = claim.change_id, %error, "recording a read failed; it is read again")
            }
        }
    }

    /// Records an effect change for each project that now holds a dataset this project lost: SMRT
    /// Link moves a dataset between projects with one request, which the mirror may report for
    /// one of them only. Best effort: a look-up that fails is left to resync.
    async fn notify_holders(&self, claim: &ReadClaim, lost: &[String]) {
        let mut holders = BTreeSet::new();
        for uuid in lost.iter().take(MOST_LOOKUPS) {
            match self.source.dataset_project(uuid).await {
                Ok(Some(other)) if other > 1 && other != claim.project_id => {
                    holders.insert(other);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(project_id = claim.project_id, uuid, %error, "looking up where a dataset went failed; resync finds it");
                }
            }
        }
        for holder in holders {
            let change = effect(
                holder,
                ChangeKind::ProjectChanged,
                claim.change_id,
                self.store.now(),
            );
            match self.store.record_change(&change).await {
                Ok((_, merged)) => {
                    if !merged {
                        self.metrics.change_recorded("EFFECT", "PROJECT_CHANGED");
                    }
                    self.wake_readers.notify_one();
                }
                Err(error) => {
                    tracing::warn!(project_id = holder, %error, "recording an effect change failed; resync repairs it")
                }
            }
        }
    }

    /// Reads SMRT Link for a change.
    async fn read(&self, claim: &ReadClaim) -> Found {
        let result = match claim.kind {
            ChangeKind::ProjectChanged | ChangeKind::ProjectDeleted => {
                if claim.project_id <= 1 {
                    return Found::Failed {
                        message: format!("project {} is never shared", claim.project_id),
                        retry_at: None,
                    };
                }
                self.read_project(claim.project_id).await
            }
            ChangeKind::ProjectsCreated => self
                .source
                .list_project_ids()
                .await
                .map(|ids| Found::Listing { ids }),
            ChangeKind::AnalysisSubmitted => self.read_jobs().await,
        };
        result.unwrap_or_else(|error| Found::Failed {
            message: error.to_string(),
            retry_at: self
                .config
                .retry
                .next_try(claim.read_attempts, self.store.now()),
        })
    }

    /// Lists every analysis job, stamped when the listing starts (a job submitted in SMRT Link's
    /// web UI is found this way, then followed).
    async fn read_jobs(&self) -> Result<Found, SourceError> {
        let stamp =
            self.store.next_stamp().await.map_err(|error| {
                SourceError::Unavailable(format!("taking a read stamp: {error}"))
            })?;
        let jobs = self.source.list_analysis_jobs().await?;
        Ok(Found::Jobs { jobs, stamp })
    }

    /// Reads one project, stamped when the read starts.
    async fn read_project(&self, id: i64) -> Result<Found, SourceError> {
        let stamp =
            self.store.next_stamp().await.map_err(|error| {
                SourceError::Unavailable(format!("taking a read stamp: {error}"))
            })?;
        Ok(match self.source.get_project(id).await? {
            Some(truth) => Found::Project {
                directory: self.namer.name(truth.id, &truth.name),
                truth,
                stamp,
            },
            None => Found::Gone { stamp },
        })
    }

    /// Starts the readers. They stop claiming when `cancel` fires and finish the read in hand;
    /// when `abort` fires they drop it and hand the change back.
    pub fn spawn(
        &self,
        cancel: CancellationToken,
        abort: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.readers.max(1))
            .map(|n| {
                let reader = self.clone();
                let (cancel, abort) = (cancel.clone(), abort.clone());
                tokio::spawn(async move { reader.run(n, cancel, abort).await })
            })
            .collect()
    }

    /// One reader: reads settled changes while any is due, then sleeps until woken, until the
    /// next settle time, or for the poll interval.
    async fn run(&self, n: usize, cancel: CancellationToken, abort: CancellationToken) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            match self.read_once(&abort).await {
                Ok(true) => failures = 0,
                Ok(false) => {
                    failures = 0;
                    let wait = match self.store.next_settle().await {
                        Ok(Some(due)) => {
                            let ms =
                                u64::try_from((due - self.store.now()).max(1)).unwrap_or(u64::MAX);
                            self.config.poll.min(Duration::from_millis(ms))
                        }
                        _ => self.config.poll,
                    };
                    if self.pause(wait, &cancel).await {
                        break;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(
                        reader = n,
                        error = format!("{error:#}"),
                        "claiming a change failed"
                    );
                    let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                    if self.pause(wait, &cancel).await {
                        break;
                    }
                }
            }
        }
    }

    /// Sleeps for `wait` or until woken; true when `cancel` fired.
    async fn pause(&self, wait: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => true,
            () = self.wake_readers.notified() => false,
            () = tokio::time::sleep(wait) => false,
        }
    }
}
