//! Tasks: made or joined by changes, claimed with a lease that is renewed while the call runs,
//! finished under fencing, and taken back when their worker vanished.

use super::rows::{RunningTask, TaskClaim};
use super::tx::Tx;
use super::{Result, Store};
use crate::model::{Target, TaskState};
use crate::rules::{self, Meet, RetryPolicy, TaskResult};

/// Most expired tasks one reaping pass takes back.
const REAP_BATCH: i64 = 50;

impl Store {
    /// Claims the due task of `target` waiting longest whose project has no task of that target
    /// running, until now + `lease_ms` (renewed by [`Store::renew_task`] while it runs).
    pub async fn claim_task(
        &self,
        target: Target,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<TaskClaim>> {
        let now = self.now();
        self.retrying("claiming a task", || async move {
            let mut tx = self.begin().await?;
            let claim = tx.claim_task(target, owner, now, now + lease_ms).await?;
            tx.commit().await?;
            Ok(claim)
        })
        .await
    }

    /// Renews a task's lease; false when the claim no longer holds.
    pub async fn renew_task(&self, claim: &TaskClaim, owner: &str, lease_ms: i64) -> Result<bool> {
        let expires = self.now() + lease_ms;
        self.retrying("renewing a task", || async move {
            let mut tx = self.begin().await?;
            let held = tx.renew_task(claim, owner, expires).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// Hands a claimed task back at once (its lease ends now), so that any replica takes it
    /// without waiting for the lease to lapse; false when the claim no longer held.
    pub async fn release_task(&self, claim: &TaskClaim, owner: &str) -> Result<bool> {
        self.retrying("handing a task back", || async move {
            let mut tx = self.begin().await?;
            let held = tx.renew_task(claim, owner, 0).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// Records an attempt's result if the claim still holds (the task is WORKING with the same
    /// attempt number), by [`rules::outcome`], and recomputes the statuses of the task's changes.
    /// `desired_hash` fingerprints the desired state the attempt sent. Returns false when the
    /// result was discarded: the task was taken back after this worker's lease lapsed.
    pub async fn finish_task(
        &self,
        claim: &TaskClaim,
        result: &TaskResult,
        desired_hash: &str,
        policy: &RetryPolicy,
    ) -> Result<bool> {
        let now = self.now();
        self.retrying("recording a task result", || async move {
            let mut tx = self.begin().await?;
            let changes = tx.lock_changes_of_task(claim.task_id).await?;
            let newer = tx.waiting_task(claim.project_id, claim.target).await?;
            let outcome =
                rules::outcome(result.clone(), claim.attempts, policy, newer.is_some(), now);
            if !tx
                .write_outcome(
                    claim.task_id,
                    claim.attempts,
                    &outcome,
                    desired_hash,
                    now,
                    None,
                )
                .await?
            {
                return Ok(false);
            }
            if let (TaskState::Superseded, Some(newer)) = (outcome.state, newer) {
                tx.supersede(claim.task_id, newer.task_id).await?;
            }
            recompute(&mut *tx, &changes).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Takes back tasks whose worker's lease lapsed (the worker, or its replica, is gone): each
    /// runs again at once, or ends by [`rules::lapsed`]. A late result of the vanished worker is
    /// discarded by fencing. Returns the tasks taken back.
    pub async fn reap_expired(&self, policy: &RetryPolicy) -> Result<Vec<RunningTask>> {
        let now = self.now();
        self.retrying("taking back expired tasks", || async move {
            let mut tx = self.begin().await?;
            let mut reaped = Vec::new();
            for task in tx.expired_tasks(now, REAP_BATCH).await? {
                let changes = tx.lock_changes_of_task(task.task_id).await?;
                let newer = tx.waiting_task(task.project_id, task.target).await?;
                let why = if task.owner.is_empty() {
                    "the worker's lease lapsed before it reported".to_owned()
                } else {
                    format!(
                        "the lease of worker {} lapsed before it reported",
                        task.owner
                    )
                };
                let outcome = rules::lapsed(&why, task.attempts, policy, newer.is_some(), now);
                if !tx
                    .write_outcome(task.task_id, task.attempts, &outcome, "", now, Some(now))
                    .await?
                {
                    continue;
                }
                if let (TaskState::Superseded, Some(newer)) = (outcome.state, newer) {
                    tx.supersede(task.task_id, newer.task_id).await?;
                }
                recompute(&mut *tx, &changes).await?;
                tracing::warn!(
                    task_id = task.task_id,
                    project_id = task.project_id,
                    task_target = %task.target,
                    owner = task.owner,
                    state = %outcome.state,
                    "task lease lapsed; taken back"
                );
                reaped.push(task);
            }
            tx.commit().await?;
            Ok(reaped)
        })
        .await
    }
}

/// Makes sure a task waits for the project and each of `targets` and links the change to it, by
/// [`rules::meet`]: a task that never ran is joined, one waiting for a retry is superseded by a
/// new task due now, and otherwise a new task is made.
pub(super) async fn ensure_tasks(
    tx: &mut dyn Tx,
    project_id: i64,
    targets: &[Target],
    change_id: i64,
    now: i64,
) -> Result<()> {
    for &target in targets {
        let waiting = tx.waiting_task(project_id, target).await?;
        let task_id = match rules::meet(waiting) {
            Meet::New => tx.insert_task(project_id, target, now).await?,
            Meet::Join(task_id) => {
                tx.hasten(task_id, now).await?;
                task_id
            }
            Meet::Supersede(old) => {
                // The old task stops waiting first: at most one task waits per project and target.
                tx.retire(old).await?;
                let new = tx.insert_task(project_id, target, now).await?;
                tx.supersede(old, new).await?;
                new
            }
        };
        tx.link(change_id, task_id).await?;
    }
    Ok(())
}

/// Links the change to the tasks that wait for the project, if any; true when there were some.
pub(super) async fn join_waiting(tx: &mut dyn Tx, project_id: i64, change_id: i64) -> Result<bool> {
    let mut joined = false;
    for target in Target::ALL {
        if let Some(waiting) = tx.waiting_task(project_id, target).await? {
            tx.link(change_id, waiting.task_id).await?;
            joined = true;
        }
    }
    Ok(joined)
}

/// Recomputes the status of `changes` by [`rules::change_status`] and writes those that differ.
/// The caller has locked the changes that other transactions may recompute at the same time (a
/// task's changes, when its result is recorded), so the second of two workers finishing the two
/// tasks of one change computes from what the first committed.
pub(super) async fn recompute(tx: &mut dyn Tx, changes: &[i64]) -> Result<()> {
    for input in tx.status_inputs(changes).await? {
        let status = rules::change_status(input.read_state, &input.tasks);
        if status != input.status {
            tx.set_status(input.change_id, status).await?;
        }
    }
    Ok(())
}
