//! Analysis jobs, in SQL.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{Db, SqlTx, lock, placeholders};
use crate::model::{AnalysisOutputs, JobOutput};
use crate::store::Result;
use crate::store::rows::{JobClaim, JobRow};
use crate::store::tx::JobTx;

const JOB_COLUMNS: &str = "j.job_id, j.project_id, j.name, j.state, j.message, j.checks, j.next_check_at, \
     j.read_stamp, j.checked_at, \
     CAST((SELECT COUNT(*) FROM analysis_outputs o WHERE o.job_id = j.job_id) AS BIGINT) AS outputs";

#[async_trait]
impl<DB> JobTx for SqlTx<DB>
where
    DB: Db,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    async fn job(&mut self, job_id: i64) -> Result<Option<JobRow>> {
        // The lock is on the job's row alone (`OF j`): the count of its outputs is only read.
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM analysis_jobs j WHERE j.job_id = $1{}",
            lock::<DB>("FOR UPDATE OF j")
        ))
        .bind(job_id)
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn put_job(&mut self, j: &JobRow, exists: bool) -> Result<()> {
        let sql = if exists {
            "UPDATE analysis_jobs SET project_id = $2, name = $3, state = $4, message = $5, checks = $6,
                    next_check_at = $7, read_stamp = $8, checked_at = $9
             WHERE job_id = $1"
        } else {
            "INSERT INTO analysis_jobs (job_id, project_id, name, state, message, checks, next_check_at, read_stamp, checked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        };
        sqlx::query(sql)
            .bind(j.job_id)
            .bind(j.project_id)
            .bind(j.name.as_str())
            .bind(j.state.as_str())
            .bind(crate::store::message(&j.message))
            .bind(j.checks)
            .bind(j.next_check_at)
            .bind(j.stamp)
            .bind(j.checked_at)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn delete_job(&mut self, job_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM analysis_outputs WHERE job_id = $1")
            .bind(job_id)
            .execute(self.conn())
            .await?;
        sqlx::query("DELETE FROM analysis_jobs WHERE job_id = $1")
            .bind(job_id)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn put_outputs(&mut self, job_id: i64, outputs: &[JobOutput]) -> Result<()> {
        sqlx::query("DELETE FROM analysis_outputs WHERE job_id = $1")
            .bind(job_id)
            .execute(self.conn())
            .await?;
        let mut seen = std::collections::BTreeSet::new();
        let unique: Vec<&JobOutput> = outputs
            .iter()
            .filter(|o| seen.insert(o.path.as_str()))
            .collect();
        for chunk in unique.chunks(200) {
            let rows = (0..chunk.len())
                .map(|r| format!("($1, {})", placeholders(2 + r * 3, 3)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO analysis_outputs (job_id, path, file_type_id, source_id) VALUES {rows}"
            );
            let mut query = sqlx::query(&sql).bind(job_id);
            for o in chunk {
                query = query
                    .bind(o.path.as_str())
                    .bind(o.file_type_id.as_str())
                    .bind(o.source_id.as_str());
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }

    async fn jobs(&mut self, project_ids: Option<&[i64]>) -> Result<Vec<JobRow>> {
        let ids: &[i64] = project_ids.unwrap_or_default();
        let filter = match project_ids {
            Some([]) => return Ok(Vec::new()),
            Some(ids) => format!("WHERE j.project_id IN ({})", placeholders(1, ids.len())),
            None => String::new(),
        };
        let sql = format!("SELECT {JOB_COLUMNS} FROM analysis_jobs j {filter} ORDER BY j.job_id");
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(self.conn()).await?;
        rows.iter().map(job_row).collect()
    }

    async fn analysis(
        &mut self,
        project_ids: Option<&[i64]>,
    ) -> Result<Vec<(i64, AnalysisOutputs)>> {
        let ids: &[i64] = project_ids.unwrap_or_default();
        let filter = match project_ids {
            Some([]) => return Ok(Vec::new()),
            Some(ids) => format!("AND j.project_id IN ({})", placeholders(1, ids.len())),
            None => String::new(),
        };
        let sql = format!(
            "SELECT j.project_id, j.job_id, j.name, o.path, o.file_type_id, o.source_id
             FROM analysis_jobs j JOIN analysis_outputs o ON o.job_id = j.job_id
             WHERE j.state = 'SUCCESSFUL' {filter} ORDER BY j.job_id, o.path"
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let mut out: Vec<(i64, AnalysisOutputs)> = Vec::new();
        for r in query.fetch_all(self.conn()).await? {
            let job_id: i64 = r.try_get("job_id")?;
            let file = JobOutput {
                path: r.try_get("path")?,
                file_type_id: r.try_get("file_type_id")?,
                source_id: r.try_get("source_id")?,
            };
            match out.last_mut() {
                Some((_, job)) if job.job_id == job_id => job.files.push(file),
                _ => out.push((
                    r.try_get("project_id")?,
                    AnalysisOutputs {
                        job_id,
                        name: r.try_get("name")?,
                        files: vec![file],
                    },
                )),
            }
        }
        Ok(out)
    }

    async fn claim_job(&mut self, owner: &str, now: i64, expires: i64) -> Result<Option<JobClaim>> {
        let row = sqlx::query(&format!(
            "UPDATE analysis_jobs SET check_owner = $2, check_expires_at = $3
             WHERE job_id = (
                 SELECT job_id FROM analysis_jobs
                 WHERE next_check_at > 0 AND next_check_at <= $1 AND check_expires_at <= $1
                 ORDER BY next_check_at, job_id LIMIT 1{})
             RETURNING job_id, checks",
            lock::<DB>("FOR UPDATE SKIP LOCKED")
        ))
        .bind(now)
        .bind(owner)
        .bind(expires)
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| {
            Ok(JobClaim {
                job_id: r.try_get("job_id")?,
                checks: r.try_get("checks")?,
            })
        })
        .transpose()
    }

    async fn renew_job(&mut self, claim: &JobClaim, owner: &str, expires: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE analysis_jobs SET check_expires_at = $1 WHERE job_id = $2 AND check_owner = $3 AND checks = $4",
        )
        .bind(expires)
        .bind(claim.job_id)
        .bind(owner)
        .bind(claim.checks)
        .execute(self.conn())
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn end_job_claim(&mut self, claim: &JobClaim, owner: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE analysis_jobs SET check_owner = '', check_expires_at = 0
             WHERE job_id = $1 AND check_owner = $2 AND checks = $3",
        )
        .bind(claim.job_id)
        .bind(owner)
        .bind(claim.checks)
        .execute(self.conn())
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn next_job_check(&mut self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(next_check_at) AS due FROM analysis_jobs WHERE next_check_at > 0",
        )
        .fetch_one(self.conn())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }
}

fn job_row<R>(r: &R) -> Result<JobRow>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(JobRow {
        job_id: r.try_get("job_id")?,
        project_id: r.try_get("project_id")?,
        name: r.try_get("name")?,
        state: r.try_get("state")?,
        message: r.try_get("message")?,
        checks: r.try_get("checks")?,
        next_check_at: r.try_get("next_check_at")?,
        stamp: r.try_get("read_stamp")?,
        checked_at: r.try_get("checked_at")?,
        outputs: r.try_get("outputs")?,
    })
}
