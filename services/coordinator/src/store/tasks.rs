//! Tasks: claiming with leases, fencing by attempt, retries with backoff, coalescing.

use sqlx::{AnyConnection, Row as _};

use super::StoreError;
use super::changes::{
    ChangeClaim, ChangesOf, Mark, claim_read_sql, lock_changes, lock_changes_sql,
    next_change_claim, recompute_statuses, status_sql,
};
use super::projects::{desired_of, desired_parts};
use super::{Result, Store, for_update, message, parse_col, rows_of, skip_locked};
use crate::model::Desired;
use crate::model::{Operation, Target, TaskState};
use smrtshare_common::db::Backend;

/// A task claimed by a worker.
#[derive(Clone, Debug)]
pub struct TaskClaim {
    /// Task id.
    pub task_id: i64,
    /// Project.
    pub project_id: i64,
    /// Target.
    pub target: Target,
    /// Attempt number of this claim (the fencing token).
    pub attempts: i64,
    /// The newest change linked to the task (sent as the change id).
    pub change_id: i64,
    /// Consecutive failed attempts of this (project, target) before this claim: the count the
    /// backoff grows from. Only this claim's finish writes it, so it is still current then.
    pub failures: i64,
    /// The project's desired state when it was read with the claim (PostgreSQL; the inner
    /// `None`: the project was never read from SMRT Link); `None` when it was not, and is read
    /// when the task runs.
    pub desired: Option<Option<Desired>>,
}

/// How an attempt ended.
#[derive(Clone, Debug)]
pub enum TaskResult {
    /// The service did everything asked.
    Ok {
        /// What was done.
        operation: Operation,
        /// Summary.
        message: String,
        /// Encoded `TaskReport`.
        report: Option<Vec<u8>>,
    },
    /// Failed in a way a later attempt may cure; retried after the backoff.
    Retry {
        /// What was attempted.
        operation: Operation,
        /// Why.
        message: String,
        /// Encoded `TaskReport`, when the service answered.
        report: Option<Vec<u8>>,
    },
    /// Failed in a way only a new change can cure.
    Permanent {
        /// What was attempted.
        operation: Operation,
        /// Why.
        message: String,
        /// Encoded `TaskReport`, when the service answered.
        report: Option<Vec<u8>>,
    },
}

/// A task as stored.
#[derive(Clone, Debug)]
pub struct TaskRow {
    /// Task id.
    pub task_id: i64,
    /// Project.
    pub project_id: i64,
    /// Target.
    pub target: Target,
    /// Last operation attempted (None before the first attempt).
    pub operation: Option<Operation>,
    /// State.
    pub state: TaskState,
    /// Will run again.
    pub pending: bool,
    /// Attempts.
    pub attempts: i64,
    /// Next run (epoch ms).
    pub next_run_at: i64,
    /// Lease expiry (epoch ms) while WORKING.
    pub lease_expires_at: i64,
    /// Last message.
    pub last_message: String,
    /// Encoded report.
    pub report: Option<Vec<u8>>,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Last finished (epoch ms).
    pub finished_at: i64,
    /// Replacement task.
    pub superseded_by: i64,
}

const TASK_COLUMNS: &str = "t.task_id, t.project_id, t.target, t.operation, t.state, t.pending, t.attempts, t.next_run_at, \
     t.lease_expires_at, t.last_message, t.report, t.created_at, t.finished_at, t.superseded_by";

pub(super) fn task_row(row: &sqlx::any::AnyRow) -> Result<TaskRow> {
    let operation: String = row.try_get("operation")?;
    Ok(TaskRow {
        task_id: row.try_get("task_id")?,
        project_id: row.try_get("project_id")?,
        target: parse_col(row, "target", Target::parse)?,
        operation: Operation::parse(&operation),
        state: parse_col(row, "state", TaskState::parse)?,
        pending: row.try_get::<i64, _>("pending")? == 1,
        attempts: row.try_get("attempts")?,
        next_run_at: row.try_get("next_run_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        last_message: row.try_get("last_message")?,
        report: row.try_get("report")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        superseded_by: row.try_get("superseded_by")?,
    })
}

/// Capped exponential backoff with full jitter, per (project, target).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay (before jitter).
    pub base_ms: i64,
    /// Largest delay.
    pub cap_ms: i64,
}

impl Backoff {
    /// The delay after `failures` consecutive failures: uniform in [0, min(cap, base * 2^(failures-1))].
    pub fn delay(&self, failures: i64) -> i64 {
        let exp = u32::try_from((failures - 1).clamp(0, 30)).unwrap_or(30);
        let ceiling = self
            .base_ms
            .saturating_mul(1i64 << exp)
            .min(self.cap_ms)
            .max(1);
        rand::random_range(0..=ceiling)
    }
}

/// Makes sure a pending task exists for the project and each of `targets`, and links the change
/// to them: a READY task is joined (coalescing); a FAILED task waiting for its retry is superseded
/// by a new READY task that keeps its backoff; otherwise a new READY task runs now. The common
/// case, no task pending, takes one statement for all targets on PostgreSQL and two on SQLite:
/// new tasks are inserted (and linked) for every target at once, and only targets that already
/// had a pending task (the insert stood back for them) are looked at further.
pub(super) async fn ensure_tasks(
    tx: &mut AnyConnection,
    project_id: i64,
    targets: &[Target],
    change_id: i64,
    now: i64,
) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    // One row per target: ($1 project, $2 now, then each target).
    let values = (0..targets.len())
        .map(|i| format!("($1, ${}, 'READY', 1, $2, $2, 'waiting to run')", i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!(
        "INSERT INTO tasks (project_id, target, state, pending, next_run_at, created_at, last_message)
         VALUES {values} ON CONFLICT (project_id, target) WHERE pending = 1 DO NOTHING RETURNING task_id, target"
    );
    // PostgreSQL links the new tasks to the change in the same statement (SQLite has no
    // INSERT in WITH; it links them below, with any joined tasks).
    let postgres = super::is_postgres(tx);
    let sql = if postgres {
        format!(
            "WITH made AS ({insert}),
                  link AS (INSERT INTO change_tasks (change_id, task_id) SELECT ${}, task_id FROM made)
             SELECT task_id, target FROM made",
            targets.len() + 3
        )
    } else {
        insert
    };
    let mut insert = sqlx::query(&sql).bind(project_id).bind(now);
    for target in targets {
        insert = insert.bind(target.as_str());
    }
    if postgres {
        insert = insert.bind(change_id);
    }
    let mut linked = Vec::with_capacity(targets.len());
    let mut made = Vec::with_capacity(targets.len());
    for row in insert.fetch_all(&mut *tx).await? {
        if !postgres {
            linked.push(row.try_get::<i64, _>("task_id")?);
        }
        made.push(parse_col(&row, "target", Target::parse)?);
    }
    let waiting: Vec<Target> = targets
        .iter()
        .copied()
        .filter(|target| !made.contains(target))
        .collect();
    if !waiting.is_empty() {
        join_pending(tx, project_id, &waiting, now, &mut linked).await?;
    }
    link_tasks(tx, change_id, &linked).await
}

/// Links a change to tasks (those already linked stay as they are).
async fn link_tasks(tx: &mut AnyConnection, change_id: i64, task_ids: &[i64]) -> Result<()> {
    if task_ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO change_tasks (change_id, task_id) VALUES {} ON CONFLICT (change_id, task_id) DO NOTHING",
        rows_of(task_ids.len(), 1)
    );
    let mut link = sqlx::query(&sql).bind(change_id);
    for task_id in task_ids {
        link = link.bind(*task_id);
    }
    link.execute(&mut *tx).await?;
    Ok(())
}

/// PostgreSQL: what [`ensure_tasks`] does for every target, then marks the read change as
/// `mark` says and, with `next_lease_ms`, claims the next settled change, all in one statement
/// in the common case (no task pending; one that is pending is joined after it). The change is
/// the one `mark` fences on; `StoreError::Lost` when its claim was lost.
pub(super) async fn ensure_tasks_and_mark(
    tx: &mut AnyConnection,
    project_id: i64,
    mark: &Mark<'_>,
    next_lease_ms: Option<i64>,
) -> Result<Option<ChangeClaim>> {
    // $1 project, $2 now, $3.. the targets, then the change, read state, message, status,
    // owner, attempt and (when claiming) the next lease's expiry.
    let n = Target::ALL.len();
    let at = |k: usize| format!("${}", n + 3 + k);
    let values = (0..n)
        .map(|i| format!("($1, ${}, 'READY', 1, $2, $2, 'waiting to run')", i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let marked = Mark::sql([&at(1), "$2", &at(2), &at(3), &at(0), &at(4), &at(5)]);
    let (next, next_columns) = match next_lease_ms {
        Some(_) => (
            format!(
                ", next AS ({})",
                claim_read_sql(
                    skip_locked(tx),
                    "$2",
                    &at(4),
                    &at(6),
                    &format!(" AND c.change_id <> {}", at(0))
                )
            ),
            "next.change_id, next.project_id, next.kind, next.reason, next.read_attempts",
        ),
        None => (String::new(), "CAST(NULL AS BIGINT) AS change_id"),
    };
    let made_columns = Target::ALL
        .iter()
        .enumerate()
        .map(|(i, _)| {
            format!(
                "CAST((SELECT COUNT(*) FROM made WHERE target = ${}) AS BIGINT) AS made_{i}",
                i + 3
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH made AS (INSERT INTO tasks (project_id, target, state, pending, next_run_at, created_at, last_message)
                       VALUES {values} ON CONFLICT (project_id, target) WHERE pending = 1 DO NOTHING RETURNING task_id, target),
              link AS (INSERT INTO change_tasks (change_id, task_id) SELECT {change}, task_id FROM made),
              marked AS ({marked} RETURNING change_id){next}
         SELECT CAST((SELECT COUNT(*) FROM marked) AS BIGINT) AS marked, {made_columns}, {next_columns}
         FROM (SELECT 1 AS one) one{join}",
        change = at(0),
        join = if next_lease_ms.is_some() { " LEFT JOIN next ON TRUE" } else { "" },
    );
    let mut query = sqlx::query(&sql).bind(project_id).bind(mark.now);
    for target in Target::ALL {
        query = query.bind(target.as_str());
    }
    query = query
        .bind(mark.claim.change_id)
        .bind(mark.read_state.as_str())
        .bind(mark.text)
        .bind(mark.status.as_str())
        .bind(mark.owner)
        .bind(mark.claim.read_attempts);
    if let Some(lease_ms) = next_lease_ms {
        query = query.bind(mark.now + lease_ms);
    }
    let row = query.fetch_one(&mut *tx).await?;
    if row.try_get::<i64, _>("marked")? == 0 {
        return Err(StoreError::Lost);
    }
    let mut waiting = Vec::new();
    for (i, target) in Target::ALL.iter().enumerate() {
        if row.try_get::<i64, _>(format!("made_{i}").as_str())? == 0 {
            waiting.push(*target);
        }
    }
    let next = next_change_claim(&row)?;
    if !waiting.is_empty() {
        let mut linked = Vec::with_capacity(waiting.len());
        join_pending(tx, project_id, &waiting, mark.now, &mut linked).await?;
        link_tasks(tx, mark.claim.change_id, &linked).await?;
    }
    Ok(next)
}

/// For targets that have a pending task: a READY one is joined; one waiting for its retry is
/// superseded by a new READY task that keeps its backoff. Adds the tasks to link to `linked`.
async fn join_pending(
    tx: &mut AnyConnection,
    project_id: i64,
    targets: &[Target],
    now: i64,
    linked: &mut Vec<i64>,
) -> Result<()> {
    // Locked (PostgreSQL), so that a worker cannot claim a READY task this change joins before
    // the change's truth and link are committed: it would run on the state before and never
    // report to this change. A task a worker claimed meanwhile is no longer pending once the
    // lock is had, and a new one is made.
    let pending = sqlx::query(&format!(
        "SELECT task_id, target, state, next_run_at FROM tasks WHERE project_id = $1 AND pending = 1{}",
        for_update(tx)
    ))
    .bind(project_id)
    .fetch_all(&mut *tx)
    .await?;
    for &target in targets {
        let mut found = None;
        for row in &pending {
            if parse_col(row, "target", Target::parse)? == target {
                found = Some(row);
            }
        }
        match found {
            Some(row) if parse_col(row, "state", TaskState::parse)? == TaskState::Ready => {
                linked.push(row.try_get::<i64, _>("task_id")?);
            }
            Some(row) => {
                let old: i64 = row.try_get("task_id")?;
                let next: i64 = row.try_get("next_run_at")?;
                sqlx::query(
                    "UPDATE tasks SET pending = 0, state = 'SUPERSEDED' WHERE task_id = $1",
                )
                .bind(old)
                .execute(&mut *tx)
                .await?;
                let new = insert_ready(tx, project_id, target, next.max(now), now).await?;
                supersede_links(tx, old, new).await?;
                linked.push(new);
            }
            // Taken by a worker since the insert stood back for it: a new task carries the
            // change (a unique violation, should another appear meanwhile, retries the write).
            None => linked.push(insert_ready(tx, project_id, target, now, now).await?),
        }
    }
    Ok(())
}

async fn insert_ready(
    tx: &mut AnyConnection,
    project_id: i64,
    target: Target,
    next_run_at: i64,
    now: i64,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO tasks (project_id, target, state, pending, next_run_at, created_at, last_message)
         VALUES ($1, $2, 'READY', 1, $3, $4, 'waiting to run') RETURNING task_id",
    )
    .bind(project_id)
    .bind(target.as_str())
    .bind(next_run_at)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get("task_id")?)
}

/// Points `old` at `new` and links every change of `old` to `new`, so those changes follow the
/// task that carries the project's state forward.
async fn supersede_links(tx: &mut AnyConnection, old: i64, new: i64) -> Result<()> {
    sqlx::query("UPDATE tasks SET superseded_by = $1 WHERE task_id = $2")
        .bind(new)
        .bind(old)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO change_tasks (change_id, task_id) SELECT change_id, $1 FROM change_tasks WHERE task_id = $2
         ON CONFLICT (change_id, task_id) DO NOTHING",
    )
    .bind(new)
    .bind(old)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn pending_task(
    tx: &mut AnyConnection,
    project_id: i64,
    target: Target,
) -> Result<Option<i64>> {
    let row = sqlx::query(
        "SELECT task_id FROM tasks WHERE project_id = $1 AND target = $2 AND pending = 1",
    )
    .bind(project_id)
    .bind(target.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|r| r.try_get("task_id")).transpose()?)
}

/// The statement that takes the oldest due pending task of a target whose (project, target) has
/// no running task, with placeholders for the target, now, the owner and the lease's expiry;
/// with `limit` (PostgreSQL), up to that many such tasks (each of another project: a project has
/// one pending task per target). `running` narrows which WORKING tasks count as running (SQL
/// appended to their condition).
fn claim_sql(skip: &str, p: [&str; 4], limit: Option<&str>, running: &str) -> String {
    let [target, now, owner, expires] = p;
    let (pick, count, close) = match limit {
        None => ("=", "1", ""),
        Some(limit) => ("= ANY (ARRAY", limit, ")"),
    };
    format!(
        "UPDATE tasks SET state = 'WORKING', pending = 0, attempts = attempts + 1, lease_owner = {owner}, lease_expires_at = {expires}
         WHERE task_id {pick}(
             SELECT t.task_id FROM tasks t
             WHERE t.target = {target} AND t.pending = 1 AND t.next_run_at <= {now}
               AND NOT EXISTS (SELECT 1 FROM tasks w WHERE w.project_id = t.project_id AND w.target = t.target AND w.state = 'WORKING'{running})
             ORDER BY t.next_run_at, t.task_id LIMIT {count}{skip}){close}
         RETURNING task_id, project_id, target, attempts, finished_at,
                   CAST(COALESCE((SELECT MAX(ct.change_id) FROM change_tasks ct WHERE ct.task_id = tasks.task_id), 0) AS BIGINT) AS change_id,
                   CAST(COALESCE((SELECT s.failures FROM sync_state s WHERE s.project_id = tasks.project_id AND s.target = tasks.target), 0) AS BIGINT) AS failures"
    )
}

/// Takes the oldest due pending task of `target` whose (project, target) has no running task,
/// with a lease until `now + lease_ms`, after reaping expired leases when `reap` is set.
async fn claim_in(
    tx: &mut AnyConnection,
    target: Target,
    owner: &str,
    now: i64,
    lease_ms: i64,
    reap: bool,
) -> Result<Option<TaskClaim>> {
    let skip = skip_locked(tx);
    if reap {
        reap_expired(tx, target, now).await?;
    }
    // Pick and take the oldest due task in one statement.
    let claim = claim_sql(skip, ["$1", "$2", "$3", "$4"], None, "");
    // PostgreSQL: the claimed project's desired state comes along in the same statement (a
    // data-modifying CTE, then the rows `desired` reads, one per dataset and member beside
    // the claim), which saves each task a round trip. SQLite, in process, reads it apart.
    let postgres = super::is_postgres(tx);
    let sql = if postgres {
        format!(
            "WITH claimed AS ({claim})
             SELECT claimed.*, x.part, x.a, x.b, x.c, x.d, x.n
             FROM claimed LEFT JOIN LATERAL ({}) x ON TRUE ORDER BY x.part, x.a",
            desired_parts("claimed.project_id")
        )
    } else {
        claim
    };
    let rows = sqlx::query(&sql)
        .bind(target.as_str())
        .bind(now)
        .bind(owner)
        .bind(now + lease_ms)
        .fetch_all(&mut *tx)
        .await?;
    claimed_task(tx, target, postgres, &rows).await
}

/// The task a claim statement took (its first row; with `desired`, its rows carry the
/// project's desired state): `None` when the rows have no task.
async fn claimed_task(
    tx: &mut AnyConnection,
    target: Target,
    desired: bool,
    rows: &[sqlx::any::AnyRow],
) -> Result<Option<TaskClaim>> {
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let Some(task_id) = row.try_get::<Option<i64>, _>("task_id")? else {
        return Ok(None);
    };
    let project_id: i64 = row.try_get("project_id")?;
    // A task that never ran was READY, and its changes are IN_PROGRESS already (READY and
    // WORKING count alike). One that ran before failed and waits for its retry: its changes
    // said FAILED or PARTIAL and are IN_PROGRESS again now.
    if row.try_get::<i64, _>("finished_at")? > 0 {
        recompute_statuses(tx, ChangesOf::Task(task_id)).await?;
    }
    Ok(Some(TaskClaim {
        task_id,
        project_id,
        desired: if desired {
            Some(desired_of(project_id, rows)?)
        } else {
            None
        },
        target,
        attempts: row.try_get("attempts")?,
        change_id: row.try_get("change_id")?,
        failures: row.try_get("failures")?,
    }))
}

/// What a result writes to its task.
#[derive(Clone, Debug)]
struct Outcome {
    operation: Operation,
    text: String,
    report: Option<Vec<u8>>,
    state: TaskState,
    /// 1 when the task runs again (a retry).
    pending: i64,
    next_run_at: i64,
    /// The (project, target)'s consecutive failures after this attempt.
    failures: i64,
}

impl Outcome {
    fn of(claim: &TaskClaim, result: TaskResult, backoff: Backoff, now: i64) -> Self {
        let ok = matches!(result, TaskResult::Ok { .. });
        match result {
            // Final either way: OK resets the (project, target)'s failures, a permanent
            // failure counts one more.
            TaskResult::Ok {
                operation,
                message,
                report,
            }
            | TaskResult::Permanent {
                operation,
                message,
                report,
            } => Self {
                operation,
                text: message,
                report,
                state: if ok { TaskState::Ok } else { TaskState::Failed },
                pending: 0,
                next_run_at: 0,
                failures: if ok { 0 } else { claim.failures + 1 },
            },
            TaskResult::Retry {
                operation,
                message,
                report,
            } => {
                let failures = claim.failures + 1;
                let delay = backoff.delay(failures);
                Self {
                    operation,
                    text: format!(
                        "{message} (retry {failures} in {:.1}s)",
                        delay as f64 / 1000.0
                    ),
                    report,
                    state: TaskState::Failed,
                    pending: 1,
                    next_run_at: now + delay,
                    failures,
                }
            }
        }
    }
}

/// The fenced write of a result to its task, `$1` to `$9`: state, pending, next run,
/// operation, message, report, now, task id, attempt (bound by [`bind_outcome`]).
const FINISH: &str = "UPDATE tasks SET state = $1, pending = $2, next_run_at = $3, operation = $4, last_message = $5, report = $6,
            finished_at = $7, lease_owner = '', lease_expires_at = 0
     WHERE task_id = $8 AND attempts = $9 AND state = 'WORKING'";

fn bind_outcome<'q>(
    sql: &'q str,
    claim: &TaskClaim,
    outcome: &'q Outcome,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(outcome.state.as_str())
        .bind(outcome.pending)
        .bind(outcome.next_run_at)
        .bind(outcome.operation.as_str())
        .bind(message(&outcome.text))
        .bind(outcome.report.clone())
        .bind(now)
        .bind(claim.task_id)
        .bind(claim.attempts)
}

/// Records an attempt's result if the claim still holds (the task is WORKING with the same
/// attempt number); false when it was discarded and nothing was written.
async fn finish_in(
    tx: &mut AnyConnection,
    claim: &TaskClaim,
    mut outcome: Outcome,
    now: i64,
) -> Result<bool> {
    // PostgreSQL: the task's changes are locked before anything is written (see
    // `recompute_statuses`).
    let of = ChangesOf::Task(claim.task_id);
    lock_changes(tx, of).await?;
    let newer = if outcome.pending == 1 {
        pending_task(tx, claim.project_id, claim.target).await?
    } else {
        None
    };
    if newer.is_some() {
        // A newer task already waits with the latest state: it carries the retry.
        outcome.state = TaskState::Superseded;
        outcome.pending = 0;
    }
    if bind_outcome(FINISH, claim, &outcome, now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 0
    {
        // Fencing: the claim no longer holds (nothing was written).
        return Ok(false);
    }
    if let Some(newer) = newer {
        supersede_links(tx, claim.task_id, newer).await?;
    }
    // The claim read the count, and no other attempt of this (project, target) can have run
    // since (one runs at a time, and this one still held its claim above).
    if outcome.failures != claim.failures {
        sqlx::query(&format!(
            "INSERT INTO sync_state (project_id, target, failures, last_task_id) VALUES ($1, $2, $3, $4) {SYNC_CONFLICT}"
        ))
        .bind(claim.project_id)
        .bind(claim.target.as_str())
        .bind(outcome.failures)
        .bind(claim.task_id)
        .execute(&mut *tx)
        .await?;
    }
    recompute_statuses(tx, of).await?;
    Ok(true)
}

const SYNC_CONFLICT: &str = "ON CONFLICT (project_id, target) DO UPDATE SET failures = excluded.failures, last_task_id = excluded.last_task_id";

/// PostgreSQL's record of results that do not run their tasks again (OK, or failed for good),
/// any number at once, with the next claims, in one statement: the tasks are written under
/// fencing, the statuses of their changes computed from the states of their tasks and written,
/// the failure counts written, and up to `wanted[i]` tasks of `Target::ALL[i]` claimed with their
/// projects' desired states.
///
/// The tasks' changes must be locked already, before this statement's snapshot is taken (the
/// transaction's `BEGIN` does it: [`finish_begin`]), so that what a sibling task's record
/// committed is seen. Answers the claims recorded, as (task, attempt) (the others were lost),
/// and the next claims, per target.
async fn finish_batch_pg(
    tx: &mut AnyConnection,
    items: &[(&TaskClaim, &Outcome, i64)],
    now: i64,
    next: Option<&NextClaim>,
    wanted: [i64; 2],
) -> Result<(Vec<(i64, i64)>, [Vec<TaskClaim>; 2])> {
    let rows: Vec<serde_json::Value> = items
        .iter()
        .map(|(claim, outcome, finished_at)| {
            debug_assert_eq!(outcome.pending, 0, "a retry is recorded by finish_in");
            serde_json::json!({
                "task_id": claim.task_id,
                "attempts": claim.attempts,
                "state": outcome.state.as_str(),
                "operation": outcome.operation.as_str(),
                "message": message(&outcome.text),
                "report": outcome.report.as_deref().map(hex),
                "finished_at": finished_at,
                "project_id": claim.project_id,
                "target": claim.target.as_str(),
                "failures": outcome.failures,
                "prior": claim.failures,
            })
        })
        .collect();
    let (owner, expires) = match next {
        Some(next) => (next.owner.as_str(), now + next.lease_ms),
        None => ("", 0),
    };
    let claiming = (0..wanted.len())
        .filter(|i| wanted[*i] > 0)
        .fold(0, |bits, i| bits | 1 << i);
    let mut query = sqlx::query(&FINISH_BATCH[claiming])
        .bind(serde_json::Value::Array(rows).to_string())
        .bind(now)
        .bind(owner)
        .bind(expires);
    for count in wanted.into_iter().filter(|n| *n > 0) {
        query = query.bind(count);
    }
    let found = query.fetch_all(&mut *tx).await?;
    let recorded = match found.first() {
        Some(row) => row
            .try_get::<Option<String>, _>("recorded")?
            .unwrap_or_default()
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                pair.split_once(':')
                    .and_then(|(id, attempt)| Some((id.parse().ok()?, attempt.parse().ok()?)))
                    .ok_or_else(|| StoreError::Corrupt(format!("recorded task {pair:?}")))
            })
            .collect::<Result<Vec<(i64, i64)>>>()?,
        None => Vec::new(),
    };
    // The claims' rows come ordered by task, each task's rows together.
    let mut claims: [Vec<TaskClaim>; 2] = [Vec::new(), Vec::new()];
    let mut rest = &found[..];
    while let Some(first) = rest.first() {
        let task_id = first.try_get::<Option<i64>, _>("task_id")?;
        let len = rest
            .iter()
            .position(|row| row.try_get::<Option<i64>, _>("task_id").ok() != Some(task_id))
            .unwrap_or(rest.len());
        let (group, after) = rest.split_at(len);
        rest = after;
        if task_id.is_none() {
            continue;
        }
        let target = parse_col(first, "target", Target::parse)?;
        if let Some(claim) = claimed_task(tx, target, true, group).await? {
            claims[target_index(target)].push(claim);
        }
    }
    Ok((recorded, claims))
}

/// The position of `target` in [`Target::ALL`].
fn target_index(target: Target) -> usize {
    Target::ALL
        .iter()
        .position(|t| *t == target)
        .unwrap_or_default()
}

/// Lower-case hex, as PostgreSQL's `decode(text, 'hex')` reads it.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The statements of [`finish_batch_pg`], by which targets they claim for (bit `i` set: tasks of
/// `Target::ALL[i]`): `$1` the results as a JSON array, `$2` now, `$3` the claims' owner, `$4`
/// their lease's expiry, then how many tasks to claim of each target claimed for.
static FINISH_BATCH: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..1usize << Target::ALL.len())
        .map(finish_batch_sql)
        .collect()
});

fn finish_batch_sql(claiming: usize) -> String {
    // Every change of a task recorded here, by index (see `ChangesOf::ids_pg`).
    let ids = "= ANY (ARRAY(SELECT l.change_id FROM change_tasks l WHERE l.task_id = ANY (ARRAY(SELECT d.task_id FROM done d))))";
    // The tasks recorded here have their new states (the statement's snapshot still has them
    // WORKING); their siblings' are read.
    let status = status_sql("c", "SELECT change_id, state FROM states");
    let mut claims = String::new();
    let mut claimed = Vec::new();
    for (i, target) in Target::ALL.iter().enumerate() {
        if claiming & (1 << i) == 0 {
            continue;
        }
        // These tasks no longer run once the statement is done, so a task of their
        // (project, target) waiting behind one may be taken now; not if the fence failed.
        let claim = claim_sql(
            " FOR UPDATE SKIP LOCKED",
            [&format!("'{}'", target.as_str()), "$2", "$3", "$4"],
            Some(&format!("${}", claimed.len() + 5)),
            " AND w.task_id NOT IN (SELECT d.task_id FROM done d)",
        );
        claims.push_str(&format!(",\n claimed_{i} AS ({claim})"));
        claimed.push(format!(
            "SELECT task_id, project_id, target, attempts, finished_at, change_id, failures FROM claimed_{i}"
        ));
    }
    let (columns, join) = if claimed.is_empty() {
        ("CAST(NULL AS BIGINT) AS task_id".to_owned(), String::new())
    } else {
        (
            "k.task_id, k.target, k.project_id, k.attempts, k.finished_at, k.change_id, k.failures, \
             x.part, x.a, x.b, x.c, x.d, x.n"
                .to_owned(),
            format!(
                " LEFT JOIN ({}) k ON TRUE LEFT JOIN LATERAL ({}) x ON TRUE ORDER BY k.task_id, x.part, x.a",
                claimed.join(" UNION ALL "),
                desired_parts("k.project_id")
            ),
        )
    };
    format!(
        "WITH v AS (SELECT * FROM jsonb_to_recordset(CAST($1 AS JSONB))
                      AS v(task_id BIGINT, attempts BIGINT, state TEXT, operation TEXT, message TEXT, report TEXT,
                           finished_at BIGINT, project_id BIGINT, target TEXT, failures BIGINT, prior BIGINT)),
              done AS (UPDATE tasks AS t SET state = v.state, pending = 0, next_run_at = 0, operation = v.operation,
                              last_message = v.message, report = decode(v.report, 'hex'), finished_at = v.finished_at,
                              lease_owner = '', lease_expires_at = 0
                       FROM v
                       WHERE t.task_id = ANY (ARRAY(SELECT i.task_id FROM v i)) AND t.task_id = v.task_id
                         AND t.attempts = v.attempts AND t.state = 'WORKING'
                       RETURNING t.task_id, t.attempts, t.state),
              states AS (SELECT ct.change_id, COALESCE(d.state, (SELECT t.state FROM tasks t WHERE t.task_id = ct.task_id)) AS state
                         FROM change_tasks ct LEFT JOIN done d ON d.task_id = ct.task_id
                         WHERE ct.change_id {ids}),
              statuses AS (UPDATE changes AS c SET status = {status}
                           WHERE c.change_id {ids} AND c.status <> {status}),
              sync AS (INSERT INTO sync_state (project_id, target, failures, last_task_id)
                       SELECT v.project_id, v.target, v.failures, v.task_id FROM v JOIN done d ON d.task_id = v.task_id
                       WHERE v.failures <> v.prior {SYNC_CONFLICT}){claims}
         SELECT CAST((SELECT string_agg(d.task_id || ':' || d.attempts, ',') FROM done d) AS TEXT) AS recorded, {columns}
         FROM (SELECT 1 AS one) one{join}"
    )
}

/// PostgreSQL: the `BEGIN` of a transaction that records results of `task_ids`, with the lock
/// of the tasks' changes sent in the same round trip (in change order, as [`lock_changes`]).
fn finish_begin(task_ids: &[i64]) -> String {
    let ids = task_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // The lock is written for one task's changes; the id put in it is every task's.
    format!(
        "BEGIN; {}",
        lock_changes_sql(ChangesOf::Task(0), &format!("ANY (ARRAY[{ids}])"))
    )
}

/// A result waiting to be recorded with others (PostgreSQL; see [`Store::finish_and_claim`]).
pub(super) struct Waiting {
    claim: TaskClaim,
    outcome: Outcome,
    /// When the result was had (the task's `finished_at`).
    now: i64,
    next: Option<NextClaim>,
}

/// Task results waiting to be recorded together, and what each is answered: whether it was
/// recorded, and the task claimed for its worker.
pub(super) type Recorder = super::batch::Batcher<Waiting, (bool, Option<TaskClaim>)>;

/// Most results one transaction records.
pub(super) const MOST_RECORDED: usize = 16;

/// Which results may be recorded in one batch: those that claim nothing, and those that claim
/// for the owner and lease of the first that does (one statement claims for one owner).
fn same_claimer() -> impl FnMut(&Waiting) -> bool {
    let mut claimer: Option<(String, i64)> = None;
    move |waiting| match (&waiting.next, &claimer) {
        (None, _) => true,
        (Some(n), Some((owner, lease_ms))) => n.owner == *owner && n.lease_ms == *lease_ms,
        (Some(n), None) => {
            claimer = Some((n.owner.clone(), n.lease_ms));
            true
        }
    }
}

/// What a worker asks for when it records a result: the next task to run, claimed in the same
/// transaction (one write instead of two while there is work).
#[derive(Clone, Debug)]
pub struct NextClaim {
    /// The lease owner.
    pub owner: String,
    /// The lease length (ms).
    pub lease_ms: i64,
    /// Reap expired leases first (done now and then, not on every claim).
    pub reap: bool,
}

impl Store {
    /// Claims the next runnable task of `target`: first expired leases are reaped (their task
    /// is retried, or superseded when a newer task waits), then the oldest due pending task whose
    /// (project, target) has no running task is taken, with a lease until now + `lease_ms`.
    pub async fn claim_task(
        &self,
        target: Target,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<TaskClaim>> {
        let now = self.now();
        // A read outside any transaction first: when no task is due and no lease has expired
        // the transaction below would find nothing, so it is not begun (on SQLite it would take
        // the write lock only to find nothing).
        let mut conn = self.kept().await?;
        let work = sqlx::query(
            "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM tasks WHERE target = $1 AND pending = 1 AND next_run_at <= $2)
                              THEN 1 ELSE 0 END AS BIGINT) AS due,
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM tasks WHERE target = $1 AND state = 'WORKING' AND lease_expires_at <= $2)
                              THEN 1 ELSE 0 END AS BIGINT) AS expired",
        )
        .bind(target.as_str())
        .bind(now)
        .fetch_one(&mut **conn)
        .await?;
        conn.keep();
        let due = work.try_get::<i64, _>("due")? == 1;
        // Leases are only ever set to expire after the time they were taken, so none can expire
        // at `now` between this read and the transaction: when none had, there is none to reap.
        let expired = work.try_get::<i64, _>("expired")? == 1;
        if !due && !expired {
            return Ok(None);
        }
        let owner = owner.to_owned();
        self.write(|tx| {
            let owner = owner.clone();
            Box::pin(async move { claim_in(tx, target, &owner, now, lease_ms, expired).await })
        })
        .await
    }

    /// Records an attempt's result if the claim still holds (the task is WORKING with the same
    /// attempt number). Returns false when the result was discarded: another worker reclaimed the
    /// task after this worker's lease expired.
    pub async fn finish_task(
        &self,
        claim: &TaskClaim,
        result: TaskResult,
        backoff: Backoff,
    ) -> Result<bool> {
        Ok(self.finish_and_claim(claim, result, backoff, None).await?.0)
    }

    /// Records an attempt's result as [`Store::finish_task`] does and, with `next`, claims the
    /// next task of the same target in the same transaction (as [`Store::claim_task`] would).
    pub async fn finish_and_claim(
        &self,
        claim: &TaskClaim,
        result: TaskResult,
        backoff: Backoff,
        next: Option<NextClaim>,
    ) -> Result<(bool, Option<TaskClaim>)> {
        let now = self.now();
        // Computed once, so that a transaction run again keeps the same retry delay.
        let outcome = Outcome::of(claim, result, backoff, now);
        // PostgreSQL's usual case is recorded with others that wait at the same time (see
        // `batch`), in one transaction of three round trips: one lock of every change concerned,
        // one statement that records every result and claims the next tasks for every worker
        // that wants one, one commit. The statements, commit and flush of the log of a
        // transaction per result were most of the database's work per task. A retry (it may be
        // superseded) and a claim that reaps first take the long way, alone.
        if self.backend() == Backend::Postgres
            && outcome.pending == 0
            && next.as_ref().is_none_or(|n| !n.reap)
        {
            let waiting = Waiting {
                claim: claim.clone(),
                outcome,
                now,
                next,
            };
            return self
                .batched(
                    |store| &store.recorder,
                    waiting,
                    same_claimer,
                    |store, batch| Box::pin(async move { store.record_together(batch).await }),
                )
                .await;
        }
        self.write(|tx| {
            let (claim, outcome, next) = (claim.clone(), outcome.clone(), next.clone());
            Box::pin(async move {
                let recorded = finish_in(tx, &claim, outcome, now).await?;
                let claimed = match next {
                    Some(n) => {
                        claim_in(tx, claim.target, &n.owner, now, n.lease_ms, n.reap).await?
                    }
                    None => None,
                };
                Ok((recorded, claimed))
            })
        })
        .await
    }

    /// Records `batch` in one transaction: per result, whether it was recorded and the task
    /// claimed for its worker.
    async fn record_together(&self, batch: &[Waiting]) -> Result<Vec<(bool, Option<TaskClaim>)>> {
        let now = self.now();
        let next = batch.iter().find_map(|w| w.next.clone());
        let mut wanted = [0i64; 2];
        for waiting in batch.iter().filter(|w| w.next.is_some()) {
            wanted[target_index(waiting.claim.target)] += 1;
        }
        let task_ids: Vec<i64> = batch.iter().map(|w| w.claim.task_id).collect();
        let (recorded, mut claims) = self
            .write_with(Some(finish_begin(&task_ids)), |tx| {
                let items: Vec<(TaskClaim, Outcome, i64)> = batch
                    .iter()
                    .map(|w| (w.claim.clone(), w.outcome.clone(), w.now))
                    .collect();
                let next = next.clone();
                Box::pin(async move {
                    let items: Vec<(&TaskClaim, &Outcome, i64)> =
                        items.iter().map(|(c, o, n)| (c, o, *n)).collect();
                    finish_batch_pg(tx, &items, now, next.as_ref(), wanted).await
                })
            })
            .await?;
        // Claims go to the workers in the order their results came.
        for list in &mut claims {
            list.reverse();
        }
        Ok(batch
            .iter()
            .map(|w| {
                let claimed = match w.next {
                    Some(_) => claims[target_index(w.claim.target)].pop(),
                    None => None,
                };
                (
                    recorded.contains(&(w.claim.task_id, w.claim.attempts)),
                    claimed,
                )
            })
            .collect())
    }

    /// The tasks linked to each of `change_ids` (a page of a listing), oldest first, in one
    /// statement per 500 changes; a change with none is absent.
    pub async fn tasks_of_changes(
        &self,
        change_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<TaskRow>>> {
        self.grouped(
            change_ids,
            |ids| format!(
                "SELECT ct.change_id AS linked_to, {TASK_COLUMNS} FROM tasks t JOIN change_tasks ct ON ct.task_id = t.task_id
                 WHERE ct.change_id IN ({ids}) ORDER BY ct.change_id, t.task_id"
            ),
            "linked_to",
            task_row,
        )
        .await
    }

    /// The tasks linked to a change, oldest first.
    pub async fn tasks_of_change(&self, change_id: i64) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN change_tasks ct ON ct.task_id = t.task_id WHERE ct.change_id = $1 ORDER BY t.task_id"
        ))
        .bind(change_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(task_row).collect()
    }

    /// The earliest `next_run_at` of any pending task (for a worker deciding how long to sleep).
    pub async fn next_due(&self, target: Target) -> Result<Option<i64>> {
        let mut conn = self.kept().await?;
        let row = sqlx::query(
            "SELECT MIN(next_run_at) AS due FROM tasks WHERE target = $1 AND pending = 1",
        )
        .bind(target.as_str())
        .fetch_one(&mut **conn)
        .await?;
        conn.keep();
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// Number of executions (attempts) of every task of a project and target: for tests and metrics.
    pub async fn attempts_of(&self, project_id: i64, target: Target) -> Result<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS n FROM tasks WHERE project_id = $1 AND target = $2")
            .bind(project_id)
            .bind(target.as_str())
            .fetch_one(&self.db.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Tasks by target and state, for metrics.
    pub async fn task_counts(&self) -> Result<Vec<(Target, TaskState, i64)>> {
        let rows =
            sqlx::query("SELECT target, state, COUNT(*) AS n FROM tasks GROUP BY target, state")
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse_col(r, "target", Target::parse)?,
                    parse_col(r, "state", TaskState::parse)?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }
}

/// Expired leases: the worker is gone (or late). Its task is retried now, or superseded when a
/// newer task already waits. The late worker's result will be discarded by fencing.
async fn reap_expired(tx: &mut AnyConnection, target: Target, now: i64) -> Result<()> {
    // Not locked here: each task's changes are locked first, then the task is taken back only
    // if it is still WORKING with its lease expired (another replica may have reaped it, or
    // its worker finished, meanwhile). That is a finish's order too, so a late finish and this
    // reap never wait on each other crosswise.
    let expired = sqlx::query(
        "SELECT task_id, project_id, lease_owner FROM tasks WHERE target = $1 AND state = 'WORKING' AND lease_expires_at <= $2 LIMIT 20",
    )
    .bind(target.as_str())
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    for row in expired {
        let task_id: i64 = row.try_get("task_id")?;
        let project_id: i64 = row.try_get("project_id")?;
        let owner: String = row.try_get("lease_owner")?;
        lock_changes(tx, ChangesOf::Task(task_id)).await?;
        let newer = pending_task(tx, project_id, target).await?;
        let (state, pending) = if newer.is_some() {
            (TaskState::Superseded, 0)
        } else {
            (TaskState::Failed, 1)
        };
        let reaped = sqlx::query(
            "UPDATE tasks SET state = $1, pending = $2, next_run_at = $3, lease_owner = '', lease_expires_at = 0, last_message = $4
             WHERE task_id = $5 AND state = 'WORKING' AND lease_expires_at <= $3",
        )
        .bind(state.as_str())
        .bind(pending)
        .bind(now)
        .bind(message(&format!("the lease of worker {owner} expired before it reported; running the task again")))
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        if reaped.rows_affected() == 0 {
            continue;
        }
        if let Some(newer) = newer {
            supersede_links(tx, task_id, newer).await?;
        }
        tracing::warn!(task_id, project_id, %target, owner, "task lease expired; reclaimed");
        recompute_statuses(tx, ChangesOf::Task(task_id)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let b = Backoff {
            base_ms: 100,
            cap_ms: 1000,
        };
        for failures in 1..40 {
            let d = b.delay(failures);
            assert!((0..=1000).contains(&d), "{failures}: {d}");
        }
        assert!((0..=100).contains(&b.delay(1)));
        let spread: std::collections::HashSet<i64> = (0..50).map(|_| b.delay(10)).collect();
        assert!(spread.len() > 10, "full jitter spreads retries: {spread:?}");
    }
}
