//! Projects (renewable copies of SMRT Link) and the reads of the API, in SQL.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{Db, SqlTx, lines, lock, parse_col, placeholders};
use crate::model::{AnalysisOutputs, Desired, JobOutput};
use crate::model::{
    ChangeKind, ChangeReason, ChangeStatus, DatasetTruth, MemberTruth, Operation, ReadState,
    Target, TaskState,
};
use crate::store::Result;
use crate::store::queries::ProjectSummary;
use crate::store::rows::{
    ChangeFilter, ChangeRow, DatasetHolder, KnownProject, LatestTask, ProjectHead, TaskRow,
};
use crate::store::tx::ProjectTx;

/// Rows per multi-row statement (well under both databases' limits on bound values).
const CHUNK: usize = 200;

const CHANGE_COLUMNS: &str = "c.change_id, c.project_id, c.reason, c.kind, c.status, c.message, c.caused_by, c.request, c.read_state, c.created_at, c.read_at";
const TASK_COLUMNS: &str = "t.task_id, t.project_id, t.target, t.operation, t.state, t.attempts, t.next_run_at, \
     t.lease_expires_at, t.last_message, t.report, t.created_at, t.finished_at, t.superseded_by";
const HEAD_COLUMNS: &str = "project_id, name, directory, deleted, updated_at, read_at, read_stamp";

#[async_trait]
impl<DB> ProjectTx for SqlTx<DB>
where
    DB: Db,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::ColumnIndex<DB::Row>,
{
    async fn desired(&mut self, project_id: i64) -> Result<Option<Desired>> {
        // The project row, then its datasets, then its members, told apart by `part`.
        let rows = sqlx::query(
            "SELECT CAST(0 AS BIGINT) AS part, directory AS a, '' AS b, '' AS c, '' AS d, deleted AS n
               FROM projects WHERE project_id = $1
             UNION ALL
             SELECT CAST(1 AS BIGINT), uuid, name, path, parent_uuid, num_children
               FROM project_datasets WHERE project_id = $1
             UNION ALL
             SELECT CAST(2 AS BIGINT), login, role, '', '', CAST(0 AS BIGINT)
               FROM project_members WHERE project_id = $1
             UNION ALL
             SELECT CAST(3 AS BIGINT), o.path, j.name, o.file_type_id, o.source_id, j.job_id
               FROM analysis_jobs j JOIN analysis_outputs o ON o.job_id = j.job_id
               WHERE j.project_id = $1 AND j.state = 'SUCCESSFUL'
             ORDER BY part, a",
        )
        .bind(project_id)
        .fetch_all(self.conn())
        .await?;
        let mut desired: Option<Desired> = None;
        let mut jobs: std::collections::BTreeMap<i64, AnalysisOutputs> = Default::default();
        for r in &rows {
            let a: String = r.try_get("a")?;
            match (r.try_get::<i64, _>("part")?, desired.as_mut()) {
                (0, _) => {
                    desired = Some(Desired {
                        project_id,
                        deleted: r.try_get::<i64, _>("n")? == 1,
                        directory: a,
                        datasets: Vec::new(),
                        shared_logins: Vec::new(),
                        analysis: Vec::new(),
                    });
                }
                (1, Some(d)) => {
                    let parent: String = r.try_get("d")?;
                    d.datasets.push(DatasetTruth {
                        uuid: a,
                        name: r.try_get("b")?,
                        path: r.try_get("c")?,
                        parent_uuid: (!parent.is_empty()).then_some(parent),
                        num_children: u32::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                    });
                }
                (2, Some(d)) => {
                    let member = MemberTruth {
                        login: a,
                        role: r.try_get("b")?,
                    };
                    if member.is_shared() {
                        d.shared_logins.push(member.login);
                    }
                }
                (3, Some(_)) => {
                    let job_id: i64 = r.try_get("n")?;
                    let name: String = r.try_get("b")?;
                    jobs.entry(job_id)
                        .or_insert_with(|| AnalysisOutputs {
                            job_id,
                            name,
                            files: Vec::new(),
                        })
                        .files
                        .push(JobOutput {
                            path: a,
                            file_type_id: r.try_get("c")?,
                            source_id: r.try_get("d")?,
                        });
                }
                // Datasets or members of a project with no row: none, as rows go together.
                _ => {}
            }
        }
        if let Some(d) = desired.as_mut() {
            d.analysis = jobs.into_values().collect();
        }
        Ok(desired)
    }

    async fn project_head(&mut self, project_id: i64) -> Result<Option<ProjectHead>> {
        let row = sqlx::query(&format!(
            "SELECT {HEAD_COLUMNS} FROM projects WHERE project_id = $1{}",
            lock::<DB>("FOR UPDATE")
        ))
        .bind(project_id)
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(head).transpose()
    }

    async fn put_project(&mut self, h: &ProjectHead, exists: bool) -> Result<()> {
        let sql = if exists {
            "UPDATE projects SET name = $2, directory = $3, deleted = $4, updated_at = $5, read_at = $6, read_stamp = $7
             WHERE project_id = $1"
        } else {
            "INSERT INTO projects (project_id, name, directory, deleted, updated_at, read_at, read_stamp)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        };
        sqlx::query(sql)
            .bind(h.project_id)
            .bind(h.name.as_str())
            .bind(h.directory.as_str())
            .bind(i64::from(h.deleted))
            .bind(h.updated_at.as_str())
            .bind(h.read_at)
            .bind(h.stamp)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    async fn members(&mut self, project_ids: &[i64]) -> Result<Vec<(i64, MemberTruth)>> {
        let mut out = Vec::new();
        for chunk in project_ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT project_id, login, role FROM project_members WHERE project_id IN ({})
                 ORDER BY project_id, login",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(self.conn()).await? {
                let member = MemberTruth {
                    login: r.try_get("login")?,
                    role: r.try_get("role")?,
                };
                out.push((r.try_get("project_id")?, member));
            }
        }
        Ok(out)
    }

    async fn datasets(&mut self, project_ids: &[i64]) -> Result<Vec<(i64, DatasetTruth)>> {
        let mut out = Vec::new();
        for chunk in project_ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT project_id, uuid, name, path, parent_uuid, num_children FROM project_datasets
                 WHERE project_id IN ({}) ORDER BY project_id, uuid",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(self.conn()).await? {
                let parent: String = r.try_get("parent_uuid")?;
                let dataset = DatasetTruth {
                    uuid: r.try_get("uuid")?,
                    name: r.try_get("name")?,
                    path: r.try_get("path")?,
                    parent_uuid: (!parent.is_empty()).then_some(parent),
                    num_children: u32::try_from(r.try_get::<i64, _>("num_children")?).unwrap_or(0),
                };
                out.push((r.try_get("project_id")?, dataset));
            }
        }
        Ok(out)
    }

    async fn delete_members(&mut self, project_id: i64, logins: &[&str]) -> Result<()> {
        for chunk in logins.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM project_members WHERE project_id = $1 AND login IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(project_id);
            for login in chunk {
                query = query.bind(*login);
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }

    async fn put_members(&mut self, project_id: i64, members: &[&MemberTruth]) -> Result<()> {
        for chunk in members.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO project_members (project_id, login, role) VALUES {}
                 ON CONFLICT (project_id, login) DO UPDATE SET role = excluded.role",
                rows_of(chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql).bind(project_id);
            for m in chunk {
                query = query.bind(m.login.as_str()).bind(m.role.as_str());
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }

    async fn delete_datasets(&mut self, project_id: i64, uuids: &[&str]) -> Result<()> {
        for chunk in uuids.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM project_datasets WHERE project_id = $1 AND uuid IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(project_id);
            for uuid in chunk {
                query = query.bind(*uuid);
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }

    async fn put_datasets(&mut self, project_id: i64, datasets: &[&DatasetTruth]) -> Result<()> {
        for chunk in datasets.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO project_datasets (project_id, uuid, name, path, parent_uuid, num_children) VALUES {}
                 ON CONFLICT (project_id, uuid) DO UPDATE SET name = excluded.name, path = excluded.path,
                     parent_uuid = excluded.parent_uuid, num_children = excluded.num_children",
                rows_of(chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql).bind(project_id);
            for d in chunk {
                query = query
                    .bind(d.uuid.as_str())
                    .bind(d.name.as_str())
                    .bind(d.path.as_str())
                    .bind(d.parent_uuid.as_deref().unwrap_or_default())
                    .bind(i64::from(d.num_children));
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }

    async fn holders(&mut self, uuids: &[&str], except: i64) -> Result<Vec<DatasetHolder>> {
        let mut out = Vec::new();
        for chunk in uuids.chunks(CHUNK) {
            let sql = format!(
                "SELECT d.project_id, d.uuid, p.read_stamp FROM project_datasets d
                 JOIN projects p ON p.project_id = d.project_id
                 WHERE d.project_id <> $1 AND d.uuid IN ({}) ORDER BY d.project_id{}",
                placeholders(2, chunk.len()),
                lock::<DB>("FOR UPDATE OF p")
            );
            let mut query = sqlx::query(&sql).bind(except);
            for uuid in chunk {
                query = query.bind(*uuid);
            }
            for r in query.fetch_all(self.conn()).await? {
                out.push(DatasetHolder {
                    project_id: r.try_get("project_id")?,
                    uuid: r.try_get("uuid")?,
                    stamp: r.try_get("read_stamp")?,
                });
            }
        }
        Ok(out)
    }

    async fn known_projects(&mut self) -> Result<Vec<KnownProject>> {
        let rows =
            sqlx::query("SELECT project_id, deleted, read_stamp FROM projects ORDER BY project_id")
                .fetch_all(self.conn())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(KnownProject {
                    project_id: r.try_get("project_id")?,
                    deleted: r.try_get::<i64, _>("deleted")? == 1,
                    stamp: r.try_get("read_stamp")?,
                })
            })
            .collect()
    }

    async fn projects(
        &mut self,
        after: i64,
        limit: i64,
        include_deleted: bool,
    ) -> Result<Vec<ProjectHead>> {
        let rows = sqlx::query(&format!(
            "SELECT {HEAD_COLUMNS} FROM projects WHERE project_id > $1 AND ($2 = 1 OR deleted = 0)
             ORDER BY project_id LIMIT $3"
        ))
        .bind(after)
        .bind(i64::from(include_deleted))
        .bind(limit)
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(head).collect()
    }

    async fn latest_tasks(&mut self, project_ids: Option<&[i64]>) -> Result<Vec<LatestTask>> {
        let ids: &[i64] = project_ids.unwrap_or_default();
        let filter = match project_ids {
            Some([]) => return Ok(Vec::new()),
            Some(ids) => format!("AND project_id IN ({})", placeholders(1, ids.len())),
            None => String::new(),
        };
        let sql = format!(
            "SELECT t.project_id, t.target, t.task_id, t.state, t.last_message, t.finished_at, t.desired_hash, t.residue,
                    COALESCE((SELECT MAX(ct.change_id) FROM change_tasks ct WHERE ct.task_id = t.task_id), 0) AS change_id
             FROM tasks t
             WHERE t.task_id IN (SELECT MAX(task_id) FROM tasks WHERE state <> 'SUPERSEDED' {filter}
                                 GROUP BY project_id, target)
             ORDER BY t.project_id, t.target"
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(self.conn()).await?;
        rows.iter()
            .map(|r| {
                Ok(LatestTask {
                    project_id: r.try_get("project_id")?,
                    target: parse_col(r, "target", Target::parse)?,
                    task_id: r.try_get("task_id")?,
                    state: parse_col(r, "state", TaskState::parse)?,
                    change_id: r.try_get("change_id")?,
                    last_message: r.try_get("last_message")?,
                    finished_at: r.try_get("finished_at")?,
                    desired_hash: r.try_get("desired_hash")?,
                    residue: lines(&r.try_get::<String, _>("residue")?),
                })
            })
            .collect()
    }

    async fn change(&mut self, change_id: i64) -> Result<Option<ChangeRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.change_id = $1"
        ))
        .bind(change_id)
        .fetch_optional(self.conn())
        .await?;
        row.as_ref().map(change_row).transpose()
    }

    async fn changes(&mut self, f: &ChangeFilter) -> Result<Vec<ChangeRow>> {
        // Only the filters in use go into the statement, so each can use its index; unused
        // arguments are bound all the same (placeholders are numbered).
        let mut filters = Vec::new();
        if f.project_id != 0 {
            filters.push("c.project_id = $1");
        }
        if f.status.is_some() {
            filters.push("c.status = $2");
        }
        if f.before != 0 {
            filters.push("c.change_id < $3");
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        let rows = sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM changes c {filter} ORDER BY c.change_id DESC LIMIT $4"
        ))
        .bind(f.project_id)
        .bind(f.status.map(ChangeStatus::as_str).unwrap_or_default())
        .bind(f.before)
        .bind(f.limit)
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(change_row).collect()
    }

    async fn tasks_of_changes(&mut self, change_ids: &[i64]) -> Result<Vec<(i64, TaskRow)>> {
        let mut out = Vec::new();
        for chunk in change_ids.chunks(500) {
            let sql = format!(
                "SELECT ct.change_id AS linked_to, {TASK_COLUMNS} FROM tasks t JOIN change_tasks ct ON ct.task_id = t.task_id
                 WHERE ct.change_id IN ({}) ORDER BY ct.change_id, t.task_id",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(self.conn()).await? {
                out.push((r.try_get("linked_to")?, task_row(&r)?));
            }
        }
        Ok(out)
    }

    async fn effects_of_changes(&mut self, change_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
        let mut out = Vec::new();
        for chunk in change_ids.chunks(500) {
            // `caused_by <> 0` lets the index of changes that have a cause serve the look-up.
            let sql = format!(
                "SELECT caused_by, change_id FROM changes WHERE caused_by IN ({}) AND caused_by <> 0
                 ORDER BY caused_by, change_id",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(self.conn()).await? {
                out.push((r.try_get("caused_by")?, r.try_get("change_id")?));
            }
        }
        Ok(out)
    }

    async fn task_counts(&mut self) -> Result<Vec<(Target, TaskState, i64)>> {
        let rows =
            sqlx::query("SELECT target, state, COUNT(*) AS n FROM tasks GROUP BY target, state")
                .fetch_all(self.conn())
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

    async fn next_settle(&mut self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(settle_until) AS due FROM changes WHERE read_state = 'SETTLING'",
        )
        .fetch_one(self.conn())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    async fn next_due(&mut self, target: Target) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(next_run_at) AS due FROM tasks WHERE target = $1 AND pending = 1",
        )
        .bind(target.as_str())
        .fetch_one(self.conn())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    async fn project_summaries(&mut self) -> Result<Vec<ProjectSummary>> {
        let rows = sqlx::query(
            "SELECT p.project_id, p.name, p.directory, p.deleted, p.read_at,
                    (SELECT COUNT(*) FROM project_datasets d WHERE d.project_id = p.project_id) AS datasets,
                    (SELECT COUNT(*) FROM project_members m WHERE m.project_id = p.project_id) AS members
             FROM projects p ORDER BY p.project_id",
        )
        .fetch_all(self.conn())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ProjectSummary {
                    project_id: r.try_get("project_id")?,
                    name: r.try_get("name")?,
                    directory: r.try_get("directory")?,
                    deleted: r.try_get::<i64, _>("deleted")? == 1,
                    read_at: r.try_get("read_at")?,
                    datasets: r.try_get("datasets")?,
                    members: r.try_get("members")?,
                })
            })
            .collect()
    }

    async fn newest_tasks(&mut self) -> Result<Vec<TaskRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t
             WHERE t.task_id IN (SELECT MAX(task_id) FROM tasks WHERE state <> 'SUPERSEDED'
                                 GROUP BY project_id, target)
             ORDER BY t.project_id, t.target"
        ))
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(task_row).collect()
    }

    async fn newest_changes(&mut self) -> Result<Vec<ChangeRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM changes c
             WHERE c.change_id IN (SELECT MAX(change_id) FROM changes WHERE project_id > 0
                                   GROUP BY project_id)
             ORDER BY c.project_id"
        ))
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(change_row).collect()
    }

    async fn attempts_of(&mut self, project_id: i64, target: Target) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) AS n FROM tasks WHERE project_id = $1 AND target = $2",
        )
        .bind(project_id)
        .bind(target.as_str())
        .fetch_one(self.conn())
        .await?;
        Ok(row.try_get("n")?)
    }
}

fn task_row<R>(r: &R) -> Result<TaskRow>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Vec<u8>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    let operation: String = r.try_get("operation")?;
    Ok(TaskRow {
        task_id: r.try_get("task_id")?,
        project_id: r.try_get("project_id")?,
        target: parse_col(r, "target", Target::parse)?,
        operation: Operation::parse(&operation),
        state: parse_col(r, "state", TaskState::parse)?,
        attempts: r.try_get("attempts")?,
        next_run_at: r.try_get("next_run_at")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        last_message: r.try_get("last_message")?,
        report: r.try_get("report")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        superseded_by: r.try_get("superseded_by")?,
    })
}

/// `($1, $2, $3), ($1, $4, $5), ...`: `rows` rows of the value bound first (`$1`) and `width` more.
fn rows_of(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| format!("($1, {})", placeholders(2 + r * width, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn head<R>(r: &R) -> Result<ProjectHead>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ProjectHead {
        project_id: r.try_get("project_id")?,
        name: r.try_get("name")?,
        directory: r.try_get("directory")?,
        deleted: r.try_get::<i64, _>("deleted")? == 1,
        updated_at: r.try_get("updated_at")?,
        read_at: r.try_get("read_at")?,
        stamp: r.try_get("read_stamp")?,
    })
}

fn change_row<R>(r: &R) -> Result<ChangeRow>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ChangeRow {
        change_id: r.try_get("change_id")?,
        project_id: r.try_get("project_id")?,
        reason: parse_col(r, "reason", ChangeReason::parse)?,
        kind: parse_col(r, "kind", ChangeKind::parse)?,
        status: parse_col(r, "status", ChangeStatus::parse)?,
        message: r.try_get("message")?,
        caused_by: r.try_get("caused_by")?,
        request: r.try_get("request")?,
        read_state: parse_col(r, "read_state", ReadState::parse)?,
        created_at: r.try_get("created_at")?,
        read_at: r.try_get("read_at")?,
    })
}
