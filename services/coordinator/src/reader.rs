//! Readers: once a change's settle delay has passed, read SMRT Link's truth for it and record
//! what changed (tasks for the project, effect changes for projects that lost datasets, one
//! change per newly discovered project).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::TaskWake;
use crate::model::ChangeKind;
use crate::naming::DirectoryNamer;
use crate::source::{ProjectSource, SourceError};
use crate::store::{Backoff, ChangeClaim, ReadOutcome, Store};

/// Reader settings.
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    /// Concurrent readers.
    pub readers: usize,
    /// How long a reader holds a change.
    pub lease: Duration,
    /// Backoff between failed reads of one change.
    pub backoff: Backoff,
    /// Reads of one change before it is given up as FAILED (resync repairs later).
    pub max_attempts: i64,
    /// Longest sleep between claim attempts.
    pub poll: Duration,
}

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
        }
    }

    /// Claims and reads one settled change; false when none was due.
    pub async fn read_once(&self) -> anyhow::Result<bool> {
        let lease = crate::clock::millis(self.config.lease);
        let Some(claim) = self.store.claim_settled_change(&self.owner, lease).await? else {
            return Ok(false);
        };
        let outcome = self.read(&claim).await;
        self.finish(claim, outcome, false).await?;
        Ok(true)
    }

    /// Records what a read found; with `chain`, the record also claims the next settled change,
    /// in the same transaction, and answers it.
    async fn finish(
        &self,
        claim: ChangeClaim,
        outcome: ReadOutcome,
        chain: bool,
    ) -> anyhow::Result<Option<ChangeClaim>> {
        if let ReadOutcome::Failed { message, .. } = &outcome {
            tracing::warn!(
                change_id = claim.change_id,
                project_id = claim.project_id,
                attempt = claim.read_attempts,
                message,
                "reading SMRT Link failed"
            );
        }
        let lease = chain.then(|| crate::clock::millis(self.config.lease));
        let (recorded, next) = self
            .store
            .finish_read_and_claim(&claim, &self.owner, outcome, lease)
            .await?;
        if recorded {
            // A read makes at most one task per target (a listing may make more changes, which
            // readers pick up); one more reader looks for the next settled change, and so on, so
            // readers join in as long as there is work without all rushing at each change.
            self.wake_tasks.one_each();
            self.wake_readers.notify_one();
        } else {
            tracing::warn!(
                change_id = claim.change_id,
                "read result discarded: the change was reclaimed by another reader"
            );
        }
        Ok(next)
    }

    async fn read(&self, claim: &ChangeClaim) -> ReadOutcome {
        let result = match claim.kind {
            ChangeKind::ProjectChanged | ChangeKind::ProjectDeleted => {
                if claim.project_id <= 1 {
                    return ReadOutcome::Failed {
                        message: format!("project {} is never shared", claim.project_id),
                        retry_at: None,
                    };
                }
                self.source
                    .get_project(claim.project_id)
                    .await
                    .map(|truth| {
                        let directory = truth
                            .as_ref()
                            .map(|t| self.namer.name(t.id, &t.name))
                            .unwrap_or_default();
                        ReadOutcome::Project { truth, directory }
                    })
            }
            ChangeKind::ProjectsCreated => match self.source.list_project_ids().await {
                Ok(ids) => match self.store.known_projects().await {
                    Ok(known) => {
                        let known: BTreeSet<i64> = known.into_iter().map(|(id, _)| id).collect();
                        let listed = ids.len();
                        let new_ids = ids
                            .into_iter()
                            .filter(|id| *id > 1 && !known.contains(id))
                            .collect::<BTreeSet<_>>();
                        Ok(ReadOutcome::Discovered {
                            new_ids: new_ids.into_iter().collect(),
                            listed,
                        })
                    }
                    Err(error) => Err(SourceError::Unavailable(format!(
                        "reading known projects: {error}"
                    ))),
                },
                Err(error) => Err(error),
            },
            ChangeKind::AnalysisSubmitted => self
                .source
                .list_analysis_jobs()
                .await
                .map(|jobs| ReadOutcome::Jobs { jobs }),
        };
        match result {
            Ok(outcome) => outcome,
            Err(error) => {
                let retry_at = (claim.read_attempts < self.config.max_attempts)
                    .then(|| self.store.now() + self.config.backoff.delay(claim.read_attempts));
                ReadOutcome::Failed {
                    message: error.to_string(),
                    retry_at,
                }
            }
        }
    }

    /// Starts the readers; they stop when `cancel` fires.
    pub fn spawn(&self, cancel: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.readers.max(1))
            .map(|n| {
                let reader = self.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move { reader.run(n, cancel).await })
            })
            .collect()
    }

    /// One reader. Like a task worker it keeps its database work off the reads' path: while it
    /// reads one change from SMRT Link it records the one before and claims the one after, in
    /// one transaction. When nothing is settled it records what it read and sleeps until woken,
    /// until the next settle time, or for the poll interval. Every change claimed is read and
    /// recorded, even once `cancel` has fired; no new one is claimed then.
    async fn run(&self, n: usize, cancel: CancellationToken) {
        let lease = crate::clock::millis(self.config.lease);
        let mut failures = 0u32;
        // Claimed and not read yet; read and not recorded yet.
        let mut claimed: Option<ChangeClaim> = None;
        let mut read: Option<(ChangeClaim, ReadOutcome)> = None;
        loop {
            let chain = !cancel.is_cancelled();
            let step = match (claimed.take(), read.take()) {
                (Some(claim), before) => {
                    let (outcome, next) = tokio::join!(self.read(&claim), async {
                        match before {
                            Some((before, outcome)) => self.finish(before, outcome, chain).await,
                            None if chain => {
                                Ok(self.store.claim_settled_change(&self.owner, lease).await?)
                            }
                            None => Ok(None),
                        }
                    });
                    read = Some((claim, outcome));
                    next.map(|next| claimed = next)
                }
                (None, Some((before, outcome))) => self
                    .finish(before, outcome, chain)
                    .await
                    .map(|next| claimed = next),
                (None, None) if !chain => break,
                (None, None) => match self.store.claim_settled_change(&self.owner, lease).await {
                    Ok(Some(claim)) => {
                        claimed = Some(claim);
                        Ok(())
                    }
                    Ok(None) => {
                        failures = 0;
                        let wait = match self.store.next_settle().await {
                            Ok(Some(due)) => {
                                let ms = u64::try_from((due - self.store.now()).max(1))
                                    .unwrap_or(u64::MAX);
                                self.config.poll.min(Duration::from_millis(ms))
                            }
                            _ => self.config.poll,
                        };
                        if self.pause(wait, &cancel).await {
                            break;
                        }
                        continue;
                    }
                    Err(error) => Err(error.into()),
                },
            };
            match step {
                Ok(()) => failures = 0,
                Err(error) => {
                    // A read whose record failed is lost, and so are the claims in hand when
                    // `cancel` fires now: their leases expire and the changes are read again.
                    failures += 1;
                    tracing::warn!(
                        reader = n,
                        error = format!("{error:#}"),
                        "claiming or recording a read failed"
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
