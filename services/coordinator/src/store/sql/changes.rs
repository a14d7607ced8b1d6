//! Changes, read claims, stamps, leases and replicas, in SQL.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{Db, SqlTx, lock, parse_col, placeholders};
use crate::model::{ChangeKind, ChangeReason, ChangeStatus, ReadState, TaskState};
use crate::store::Result;
use crate::store::rows::{LeaseRow, NewChangeRow, ReadClaim, ReplicaRow, StatusInput};
use crate::store::tx::ChangeTx;

const READ_CLAIM: &str = "change_id, project_id, kind, reason, read_attempts";

#[async_trait]
impl<DB> ChangeTx for SqlTx<DB>
where
    DB: Db,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    async fn next_stamp(&mut self) -> Result<i64> {
        let row = sqlx::query(DB::NEXT_STAMP).fetch_one(self.conn()).await?;
        Ok(row.try_get("value")?)
    }

    async fn insert_change(&mut self, c: &NewChangeRow) -> Result<Option<i64>> {
        let row = sqlx::query(
            "INSERT INTO changes (project_id, reason, kind, status, message, caused_by, request, read_state,
                                  settle_until, created_at, read_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (project_id, kind) WHERE read_state = 'SETTLING' DO NOTHING
             RETURNING change_id",
        )
        .bind(c.project_id)
        .bind(c.reason.as_str())
        .bind(c.kind.as_str())
        .bind(c.status.as_str())
        .bind(c.message.as_str())
        .bind(c.caused_by)
        .bind(c.request.as_str())
        .bind(c.read_state.as_str())
        .bind(c.settle_until)
        .bind(c.created_at)
        .bind(c.read_at)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.map(|r| r.try_get("change_id")).transpose()?)
    }

    async fn settling_change(
        &mut self,
        project_id: i64,
        kind: ChangeKind,
    ) -> Result<Option<(i64, i64, i64)>> {
        let row = sqlx::query(&format!(
            "SELECT change_id, created_at, settle_until FROM changes
             WHERE project_id = $1 AND kind = $2 AND read_state = 'SETTLING'{}",
            lock::<DB>("FOR UPDATE")
        ))
        .bind(project_id)
        .bind(kind.as_str())
        .fetch_optional(self.conn())
        .await?;
        Ok(row
            .map(|r| -> Result<_> {
                Ok((
                    r.try_get("change_id")?,
                    r.try_get("created_at")?,
                    r.try_get("settle_until")?,
                ))
            })
            .transpose()?)
    }

    async fn set_settle(&mut self, change_id: i64, settle_until: i64) -> Result<()> {
        sqlx::query("UPDATE changes SET settle_until = $1 WHERE change_id = $2")
            .bind(settle_until)
            .bind(change_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn claim_read(
        &mut self,
        owner: &str,
        now: i64,
        expires: i64,
    ) -> Result<Option<ReadClaim>> {
        // Settled changes and lapsed reads are looked up apart, each the first by its own index,
        // so the lookup never reads the history of changes.
        let skip = lock::<DB>("FOR UPDATE SKIP LOCKED");
        let row = sqlx::query(&format!(
            "UPDATE changes SET read_state = 'READING', read_owner = $2, read_lease_expires_at = $3,
                    read_attempts = read_attempts + 1
             WHERE change_id = (
                 SELECT due.change_id FROM (
                     SELECT s.change_id, s.settle_until FROM (
                         SELECT change_id, settle_until FROM changes
                         WHERE read_state = 'SETTLING' AND settle_until <= $1
                         ORDER BY settle_until, change_id LIMIT 1{skip}) s
                     UNION ALL
                     SELECT r.change_id, r.settle_until FROM (
                         SELECT change_id, settle_until FROM changes
                         WHERE read_state = 'READING' AND read_lease_expires_at <= $1
                         ORDER BY read_lease_expires_at, change_id LIMIT 1{skip}) r) due
                 ORDER BY due.settle_until, due.change_id LIMIT 1)
             RETURNING {READ_CLAIM}"
        ))
        .bind(now)
        .bind(owner)
        .bind(expires)
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            Ok(ReadClaim {
                change_id: r.try_get("change_id")?,
                project_id: r.try_get("project_id")?,
                kind: parse_col(&r, "kind", ChangeKind::parse)?,
                reason: parse_col(&r, "reason", ChangeReason::parse)?,
                read_attempts: r.try_get("read_attempts")?,
            })
        })
        .transpose()
    }

    async fn renew_read(&mut self, claim: &ReadClaim, owner: &str, expires: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE changes SET read_lease_expires_at = $1
             WHERE change_id = $2 AND read_state = 'READING' AND read_owner = $3 AND read_attempts = $4",
        )
        .bind(expires)
        .bind(claim.change_id)
        .bind(owner)
        .bind(claim.read_attempts)
        .execute(self.conn())
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn mark_read(
        &mut self,
        claim: &ReadClaim,
        owner: &str,
        state: ReadState,
        message: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE changes SET read_state = $1, read_at = $2, message = $3, read_owner = '', read_lease_expires_at = 0
             WHERE change_id = $4 AND read_state = 'READING' AND read_owner = $5 AND read_attempts = $6",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(message)
        .bind(claim.change_id)
        .bind(owner)
        .bind(claim.read_attempts)
        .execute(self.conn())
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn requeue_read(
        &mut self,
        claim: &ReadClaim,
        owner: &str,
        at: i64,
        message: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE changes SET read_state = 'SETTLING', settle_until = $1, message = $2, read_owner = '',
                    read_lease_expires_at = 0
             WHERE change_id = $3 AND read_state = 'READING' AND read_owner = $4 AND read_attempts = $5
               AND NOT EXISTS (SELECT 1 FROM changes o WHERE o.project_id = $6 AND o.kind = $7 AND o.read_state = 'SETTLING')",
        )
        .bind(at)
        .bind(message)
        .bind(claim.change_id)
        .bind(owner)
        .bind(claim.read_attempts)
        .bind(claim.project_id)
        .bind(claim.kind.as_str())
        .execute(self.conn())
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn expire_claims(&mut self, owner: &str) -> Result<[u64; 3]> {
        let reads = sqlx::query("UPDATE changes SET read_lease_expires_at = 0 WHERE read_state = 'READING' AND read_owner = $1")
            .bind(owner)
            .execute(self.conn())
            .await?;
        let tasks = sqlx::query(
            "UPDATE tasks SET lease_expires_at = 0 WHERE state = 'WORKING' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(self.conn())
        .await?;
        let leases = sqlx::query("UPDATE leases SET expires_at = 0, version = version + 1 WHERE owner = $1 AND expires_at > 0")
            .bind(owner)
            .execute(self.conn())
            .await?;
        Ok([
            DB::rows_affected(&reads),
            DB::rows_affected(&tasks),
            DB::rows_affected(&leases),
        ])
    }

    async fn lock_changes_of_task(&mut self, task_id: i64) -> Result<Vec<i64>> {
        // NO KEY: the links that key-share lock a change can still be made meanwhile.
        let rows = sqlx::query(&format!(
            "SELECT c.change_id FROM changes c
             WHERE c.change_id IN (SELECT ct.change_id FROM change_tasks ct WHERE ct.task_id = $1)
             ORDER BY c.change_id{}",
            lock::<DB>("FOR NO KEY UPDATE")
        ))
        .bind(task_id)
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("change_id")?)).collect()
    }

    async fn status_inputs(&mut self, change_ids: &[i64]) -> Result<Vec<StatusInput>> {
        let mut inputs: Vec<StatusInput> = Vec::with_capacity(change_ids.len());
        for chunk in change_ids.chunks(500) {
            let sql = format!(
                "SELECT c.change_id, c.read_state, c.status, t.state AS task_state
                 FROM changes c
                 LEFT JOIN change_tasks ct ON ct.change_id = c.change_id
                 LEFT JOIN tasks t ON t.task_id = ct.task_id
                 WHERE c.change_id IN ({}) ORDER BY c.change_id",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(self.conn()).await? {
                let change_id: i64 = row.try_get("change_id")?;
                if inputs.last().is_none_or(|last| last.change_id != change_id) {
                    inputs.push(StatusInput {
                        change_id,
                        read_state: parse_col(&row, "read_state", ReadState::parse)?,
                        status: parse_col(&row, "status", ChangeStatus::parse)?,
                        tasks: Vec::new(),
                    });
                }
                if let Some(state) = row.try_get::<Option<String>, _>("task_state")? {
                    let state = TaskState::parse(&state).ok_or_else(|| {
                        crate::store::StoreError::Corrupt(format!("task state {state:?}"))
                    })?;
                    if let Some(input) = inputs.last_mut() {
                        input.tasks.push(state);
                    }
                }
            }
        }
        Ok(inputs)
    }

    async fn set_status(&mut self, change_id: i64, status: ChangeStatus) -> Result<()> {
        sqlx::query("UPDATE changes SET status = $1 WHERE change_id = $2")
            .bind(status.as_str())
            .bind(change_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn lease(&mut self, name: &str) -> Result<Option<LeaseRow>> {
        let row =
            sqlx::query("SELECT name, owner, expires_at, version FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(self.conn())
                .await?;
        row.map(|r| {
            Ok(LeaseRow {
                name: r.try_get("name")?,
                owner: r.try_get("owner")?,
                expires_at: r.try_get("expires_at")?,
                version: r.try_get("version")?,
            })
        })
        .transpose()
    }

    async fn put_lease(&mut self, lease: &LeaseRow, version: Option<i64>) -> Result<bool> {
        let done = match version {
            None => {
                sqlx::query(
                    "INSERT INTO leases (name, owner, expires_at, version) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(lease.name.as_str())
                .bind(lease.owner.as_str())
                .bind(lease.expires_at)
                .bind(lease.version)
                .execute(self.conn())
                .await?
            }
            Some(version) => {
                sqlx::query("UPDATE leases SET owner = $1, expires_at = $2, version = $3 WHERE name = $4 AND version = $5")
                    .bind(lease.owner.as_str())
                    .bind(lease.expires_at)
                    .bind(lease.version)
                    .bind(lease.name.as_str())
                    .bind(version)
                    .execute(self.conn())
                    .await?
            }
        };
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn replica(&mut self, name: &str) -> Result<Option<ReplicaRow>> {
        let row = sqlx::query(&format!(
            "SELECT name, instance, host, boot_id, pid, started_at, heartbeat_at FROM replicas WHERE name = $1{}",
            lock::<DB>("FOR UPDATE")
        ))
        .bind(name)
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            Ok(ReplicaRow {
                name: r.try_get("name")?,
                instance: r.try_get("instance")?,
                host: r.try_get("host")?,
                boot_id: r.try_get("boot_id")?,
                pid: r.try_get("pid")?,
                started_at: r.try_get("started_at")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
            })
        })
        .transpose()
    }

    async fn put_replica(&mut self, r: &ReplicaRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO replicas (name, instance, host, boot_id, pid, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, host = excluded.host,
                 boot_id = excluded.boot_id, pid = excluded.pid, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at",
        )
        .bind(r.name.as_str())
        .bind(r.instance.as_str())
        .bind(r.host.as_str())
        .bind(r.boot_id.as_str())
        .bind(r.pid)
        .bind(r.started_at)
        .bind(r.heartbeat_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    async fn beat(&mut self, name: &str, instance: &str, now: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE replicas SET heartbeat_at = $1 WHERE name = $2 AND instance = $3")
                .bind(now)
                .bind(name)
                .bind(instance)
                .execute(self.conn())
                .await?;
        Ok(DB::rows_affected(&done) == 1)
    }
}
