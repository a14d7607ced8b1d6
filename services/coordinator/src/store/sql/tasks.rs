//! Tasks, in SQL.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{Db, SqlTx, lock, parse_col};
use crate::model::{Operation, Target};
use crate::rules::{Outcome, Waiting};
use crate::store::Result;
use crate::store::rows::{RunningTask, TaskClaim};
use crate::store::tx::TaskTx;

#[async_trait]
impl<DB> TaskTx for SqlTx<DB>
where
    DB: Db,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<Vec<u8>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    async fn waiting_task(&mut self, project_id: i64, target: Target) -> Result<Option<Waiting>> {
        // Locked, so that a worker cannot claim the task this change joins before the change's
        // truth and link are committed (it would run on the state before).
        let row = sqlx::query(&format!(
            "SELECT task_id, attempts FROM tasks WHERE project_id = $1 AND target = $2 AND pending = 1{}",
            lock::<DB>("FOR UPDATE")
        ))
        .bind(project_id)
        .bind(target.as_str())
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            Ok(Waiting {
                task_id: r.try_get("task_id")?,
                attempts: r.try_get("attempts")?,
            })
        })
        .transpose()
    }

    async fn insert_task(&mut self, project_id: i64, target: Target, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO tasks (project_id, target, state, pending, next_run_at, created_at, last_message)
             VALUES ($1, $2, 'READY', 1, $3, $3, 'waiting to run') RETURNING task_id",
        )
        .bind(project_id)
        .bind(target.as_str())
        .bind(now)
        .fetch_one(self.conn())
        .await?;
        Ok(row.try_get("task_id")?)
    }

    async fn hasten(&mut self, task_id: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE tasks SET next_run_at = $1 WHERE task_id = $2 AND next_run_at > $1")
            .bind(now)
            .bind(task_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn link(&mut self, change_id: i64, task_id: i64) -> Result<()> {
        sqlx::query("INSERT INTO change_tasks (change_id, task_id) VALUES ($1, $2) ON CONFLICT (change_id, task_id) DO NOTHING")
            .bind(change_id)
            .bind(task_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn retire(&mut self, task_id: i64) -> Result<()> {
        sqlx::query("UPDATE tasks SET state = 'SUPERSEDED', pending = 0 WHERE task_id = $1")
            .bind(task_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn supersede(&mut self, old: i64, new: i64) -> Result<()> {
        sqlx::query("UPDATE tasks SET state = 'SUPERSEDED', pending = 0, superseded_by = $1 WHERE task_id = $2")
            .bind(new)
            .bind(old)
            .execute(self.conn())
            .await?;
        sqlx::query(
            "INSERT INTO change_tasks (change_id, task_id) SELECT change_id, $1 FROM change_tasks WHERE task_id = $2
             ON CONFLICT (change_id, task_id) DO NOTHING",
        )
        .bind(new)
        .bind(old)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn claim_task(
        &mut self,
        target: Target,
        owner: &str,
        now: i64,
        expires: i64,
    ) -> Result<Option<TaskClaim>> {
        let row = sqlx::query(&format!(
            "UPDATE tasks SET state = 'WORKING', pending = 0, attempts = attempts + 1, lease_owner = $3,
                    lease_expires_at = $4
             WHERE task_id = (
                 SELECT t.task_id FROM tasks t
                 WHERE t.target = $1 AND t.pending = 1 AND t.next_run_at <= $2
                   AND NOT EXISTS (SELECT 1 FROM tasks w WHERE w.target = t.target AND w.project_id = t.project_id
                                   AND w.state = 'WORKING')
                 ORDER BY t.next_run_at, t.task_id LIMIT 1{})
             RETURNING task_id, project_id, attempts,
                 COALESCE((SELECT MAX(ct.change_id) FROM change_tasks ct WHERE ct.task_id = tasks.task_id), 0) AS change_id,
                 COALESCE((SELECT c.created_at FROM changes c WHERE c.change_id =
                     (SELECT MAX(ct.change_id) FROM change_tasks ct WHERE ct.task_id = tasks.task_id)), 0) AS change_at",
            lock::<DB>("FOR UPDATE SKIP LOCKED")
        ))
        .bind(target.as_str())
        .bind(now)
        .bind(owner)
        .bind(expires)
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            Ok(TaskClaim {
                task_id: r.try_get("task_id")?,
                project_id: r.try_get("project_id")?,
                target,
                attempts: r.try_get("attempts")?,
                change_id: r.try_get("change_id")?,
                change_at: r.try_get("change_at")?,
            })
        })
        .transpose()
    }

    async fn renew_task(&mut self, claim: &TaskClaim, owner: &str, expires: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET lease_expires_at = $1
             WHERE task_id = $2 AND attempts = $3 AND state = 'WORKING' AND lease_owner = $4",
        )
        .bind(expires)
        .bind(claim.task_id)
        .bind(claim.attempts)
        .bind(owner)
        .execute(self.conn())
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn write_outcome(
        &mut self,
        task_id: i64,
        attempts: i64,
        outcome: &Outcome,
        desired_hash: &str,
        now: i64,
        expired_by: Option<i64>,
    ) -> Result<bool> {
        let expired = if expired_by.is_some() {
            " AND lease_expires_at <= $12"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE tasks SET state = $1, pending = $2, next_run_at = $3,
                    operation = CASE WHEN $4 = '' THEN operation ELSE $4 END, last_message = $5,
                    report = $6, residue = $7, desired_hash = $8, finished_at = $9, lease_owner = '',
                    lease_expires_at = 0
             WHERE task_id = $10 AND attempts = $11 AND state = 'WORKING'{expired}"
        );
        let mut query = sqlx::query(&sql)
            .bind(outcome.state.as_str())
            .bind(i64::from(outcome.pending()))
            .bind(outcome.next_run_at)
            .bind(outcome.operation.map(Operation::as_str).unwrap_or_default())
            .bind(crate::store::message(&outcome.text))
            .bind(outcome.report.clone())
            .bind(outcome.residue.join("\n"))
            .bind(desired_hash)
            .bind(now)
            .bind(task_id)
            .bind(attempts);
        if let Some(by) = expired_by {
            query = query.bind(by);
        }
        let done = query.execute(self.conn()).await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn expired_tasks(&mut self, now: i64, limit: i64) -> Result<Vec<RunningTask>> {
        let rows = sqlx::query(
            "SELECT task_id, project_id, target, attempts, lease_owner FROM tasks
             WHERE state = 'WORKING' AND lease_expires_at <= $1 ORDER BY task_id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.conn())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RunningTask {
                    task_id: r.try_get("task_id")?,
                    project_id: r.try_get("project_id")?,
                    target: parse_col(r, "target", Target::parse)?,
                    attempts: r.try_get("attempts")?,
                    owner: r.try_get("lease_owner")?,
                })
            })
            .collect()
    }
}
