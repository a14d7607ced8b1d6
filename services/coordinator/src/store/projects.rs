//! Renewable copies of SMRT Link's projects, members, datasets and analysis jobs.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{AnyConnection, Row as _};

use super::{Result, Store, parse_col, placeholders, rows_of};
use crate::model::{
    AnalysisJobTruth, DatasetTruth, Desired, MemberTruth, ProjectTruth, Target, TaskState,
};

/// A project as stored, with what the coordinator knows of its targets.
#[derive(Clone, Debug)]
pub struct ProjectRow {
    /// Id.
    pub project_id: i64,
    /// Name.
    pub name: String,
    /// Directory name.
    pub directory: String,
    /// Gone from SMRT Link.
    pub deleted: bool,
    /// SMRT Link's updatedAt.
    pub updated_at: String,
    /// Last read (epoch ms).
    pub read_at: i64,
    /// Members.
    pub members: Vec<MemberTruth>,
    /// Datasets.
    pub datasets: Vec<DatasetTruth>,
    /// The latest task per target.
    pub targets: Vec<TargetStatusRow>,
}

/// The latest task of one target for a project.
#[derive(Clone, Debug)]
pub struct TargetStatusRow {
    /// Target.
    pub target: Target,
    /// The latest task's state.
    pub state: TaskState,
    /// Task id.
    pub task_id: i64,
    /// The newest change linked to it.
    pub change_id: i64,
    /// Its last message.
    pub last_message: String,
    /// Last finished (epoch ms).
    pub finished_at: i64,
}

/// Rows per multi-row statement when writing members and datasets (well under both databases'
/// limits on bound values).
const ROWS_PER_STATEMENT: usize = 200;

/// Stores what SMRT Link said about a project. Datasets it now holds are taken from any other
/// project that had them (a dataset belongs to one project at a time); the ids of those projects
/// are returned so the caller can record effect changes for them.
///
/// Members and datasets are compared with what is stored and only the differences written: a
/// project read again with nothing changed but its name costs one statement on PostgreSQL and
/// two on SQLite.
pub(super) async fn store_truth(
    tx: &mut AnyConnection,
    truth: &ProjectTruth,
    directory: &str,
    now: i64,
) -> Result<Vec<i64>> {
    const UPSERT: &str = "INSERT INTO projects (project_id, name, directory, deleted, updated_at, read_at) VALUES ($1, $2, $3, 0, $4, $5)
         ON CONFLICT (project_id) DO UPDATE SET name = excluded.name, directory = excluded.directory, deleted = 0,
             updated_at = excluded.updated_at, read_at = excluded.read_at";
    // PostgreSQL writes the project row in the statement that reads what is stored (below);
    // SQLite, which has no INSERT in WITH, writes it first.
    let postgres = super::is_postgres(tx);
    if !postgres {
        sqlx::query(UPSERT)
            .bind(truth.id)
            .bind(&truth.name)
            .bind(directory)
            .bind(&truth.updated_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }

    // SMRT Link's lists, one entry per key (the last wins, as row-by-row upserts would have it).
    let members: BTreeMap<&str, &MemberTruth> = truth
        .members
        .iter()
        .map(|m| (m.login.as_str(), m))
        .collect();
    let datasets: BTreeMap<&str, &DatasetTruth> = truth
        .datasets
        .iter()
        .map(|d| (d.uuid.as_str(), d))
        .collect();
    let uuids: Vec<&str> = datasets.keys().copied().collect();
    let mut chunks = uuids.chunks(ROWS_PER_STATEMENT);

    // What is stored, and which other projects hold the first chunk of the datasets, in one
    // statement; further chunks (projects of hundreds of datasets) are asked after it.
    let first = chunks.next().unwrap_or(&[]);
    let mut sql = if postgres {
        format!("WITH up AS ({UPSERT}) ")
    } else {
        String::new()
    };
    sql.push_str(
        "SELECT CAST(1 AS BIGINT) AS part, CAST(0 AS BIGINT) AS holder, login AS a, role AS b, '' AS c, '' AS d, CAST(0 AS BIGINT) AS n
           FROM project_members WHERE project_id = $1
         UNION ALL
         SELECT CAST(2 AS BIGINT), CAST(0 AS BIGINT), uuid, name, path, parent_uuid, num_children
           FROM project_datasets WHERE project_id = $1",
    );
    if !first.is_empty() {
        sql.push_str(&format!(
            " UNION ALL SELECT CAST(3 AS BIGINT), project_id, uuid, '', '', '', CAST(0 AS BIGINT)
                FROM project_datasets WHERE project_id <> $1 AND uuid IN ({})",
            placeholders(if postgres { 6 } else { 2 }, first.len())
        ));
    }
    let mut query = sqlx::query(&sql).bind(truth.id);
    if postgres {
        query = query
            .bind(&truth.name)
            .bind(directory)
            .bind(&truth.updated_at)
            .bind(now);
    }
    for uuid in first {
        query = query.bind(*uuid);
    }
    let rows = query.fetch_all(&mut *tx).await?;
    let mut stored_members = BTreeMap::new();
    let mut stored_datasets = BTreeMap::new();
    let mut held: Vec<(i64, String)> = Vec::new();
    for row in &rows {
        let a: String = row.try_get("a")?;
        match row.try_get::<i64, _>("part")? {
            1 => {
                stored_members.insert(a, row.try_get::<String, _>("b")?);
            }
            2 => {
                let parent: String = row.try_get("d")?;
                stored_datasets.insert(
                    a.clone(),
                    DatasetTruth {
                        uuid: a,
                        name: row.try_get("b")?,
                        path: row.try_get("c")?,
                        parent_uuid: (!parent.is_empty()).then_some(parent),
                        num_children: u32::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                    },
                );
            }
            _ => held.push((row.try_get("holder")?, a)),
        }
    }
    for chunk in chunks {
        let sql = format!(
            "SELECT project_id, uuid FROM project_datasets WHERE project_id <> $1 AND uuid IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(truth.id);
        for uuid in chunk {
            query = query.bind(*uuid);
        }
        for row in query.fetch_all(&mut *tx).await? {
            held.push((row.try_get("project_id")?, row.try_get("uuid")?));
        }
    }

    // Datasets taken from other projects.
    let mut effects = BTreeSet::new();
    let taken: Vec<&str> = held
        .iter()
        .map(|(_, uuid)| uuid.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for chunk in taken.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM project_datasets WHERE project_id <> $1 AND uuid IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(truth.id);
        for uuid in chunk {
            query = query.bind(*uuid);
        }
        query.execute(&mut *tx).await?;
    }
    effects.extend(
        held.iter()
            .map(|(other, _)| *other)
            .filter(|other| *other != 1),
    );

    // Members.
    let gone: Vec<&str> = stored_members
        .keys()
        .map(String::as_str)
        .filter(|login| !members.contains_key(login))
        .collect();
    delete_keys(
        tx,
        "DELETE FROM project_members WHERE project_id = $1 AND login IN",
        truth.id,
        &gone,
    )
    .await?;
    let changed: Vec<&MemberTruth> = members
        .values()
        .copied()
        .filter(|m| stored_members.get(&m.login) != Some(&m.role))
        .collect();
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO project_members (project_id, login, role) VALUES {}
             ON CONFLICT (project_id, login) DO UPDATE SET role = excluded.role",
            rows_of(chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql).bind(truth.id);
        for m in chunk {
            query = query.bind(&m.login).bind(&m.role);
        }
        query.execute(&mut *tx).await?;
    }

    // Datasets.
    let gone: Vec<&str> = stored_datasets
        .keys()
        .map(String::as_str)
        .filter(|uuid| !datasets.contains_key(uuid))
        .collect();
    delete_keys(
        tx,
        "DELETE FROM project_datasets WHERE project_id = $1 AND uuid IN",
        truth.id,
        &gone,
    )
    .await?;
    let changed: Vec<&DatasetTruth> = datasets
        .values()
        .copied()
        .filter(|d| stored_datasets.get(&d.uuid) != Some(*d))
        .collect();
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO project_datasets (project_id, uuid, name, path, parent_uuid, num_children) VALUES {}
             ON CONFLICT (project_id, uuid) DO UPDATE SET name = excluded.name, path = excluded.path,
                 parent_uuid = excluded.parent_uuid, num_children = excluded.num_children",
            rows_of(chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql).bind(truth.id);
        for d in chunk {
            query = query
                .bind(&d.uuid)
                .bind(&d.name)
                .bind(&d.path)
                .bind(d.parent_uuid.clone().unwrap_or_default())
                .bind(i64::from(d.num_children));
        }
        query.execute(&mut *tx).await?;
    }
    Ok(effects.into_iter().collect())
}

/// Runs `{delete} (keys...)` for the project, in chunks; nothing when `keys` is empty.
async fn delete_keys(
    tx: &mut AnyConnection,
    delete: &str,
    project_id: i64,
    keys: &[&str],
) -> Result<()> {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("{delete} ({})", placeholders(2, chunk.len()));
        let mut query = sqlx::query(&sql).bind(project_id);
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Marks a project gone from SMRT Link (creating the row if the project was never known), and
/// forgets its members and datasets.
pub(super) async fn mark_deleted(tx: &mut AnyConnection, project_id: i64, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO projects (project_id, name, directory, deleted, updated_at, read_at) VALUES ($1, '', '', 1, '', $2)
         ON CONFLICT (project_id) DO UPDATE SET deleted = 1, read_at = excluded.read_at",
    )
    .bind(project_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM project_members WHERE project_id = $1")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM project_datasets WHERE project_id = $1")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records analysis jobs; returns how many were new and the projects they belong to.
pub(super) async fn store_jobs(
    tx: &mut AnyConnection,
    jobs: &[AnalysisJobTruth],
    now: i64,
) -> Result<(usize, Vec<i64>)> {
    let mut new = 0;
    let mut projects = BTreeSet::new();
    for job in jobs {
        let inserted = sqlx::query(
            "INSERT INTO analysis_jobs (job_id, project_id, state, name, seen_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job.id)
        .bind(job.project_id)
        .bind(&job.state)
        .bind(&job.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            new += 1;
            projects.insert(job.project_id);
        } else {
            sqlx::query("UPDATE analysis_jobs SET state = $1, project_id = $2 WHERE job_id = $3")
                .bind(&job.state)
                .bind(job.project_id)
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok((new, projects.into_iter().collect()))
}

fn dataset_row(row: &sqlx::any::AnyRow) -> Result<DatasetTruth> {
    let parent: String = row.try_get("parent_uuid")?;
    let children: i64 = row.try_get("num_children")?;
    Ok(DatasetTruth {
        uuid: row.try_get("uuid")?,
        name: row.try_get("name")?,
        path: row.try_get("path")?,
        parent_uuid: (!parent.is_empty()).then_some(parent),
        num_children: u32::try_from(children).unwrap_or(0),
    })
}

/// The rows a desired state is read from, for the project `id` (a placeholder or a column):
/// the project row, then its datasets, then its members, told apart by `part`. Callers order
/// them by `part, a`.
pub(super) fn desired_parts(id: &str) -> String {
    format!(
        "SELECT CAST(0 AS BIGINT) AS part, directory AS a, '' AS b, '' AS c, '' AS d, deleted AS n
           FROM projects WHERE project_id = {id}
         UNION ALL
         SELECT CAST(1 AS BIGINT), uuid, name, path, parent_uuid, num_children
           FROM project_datasets WHERE project_id = {id}
         UNION ALL
         SELECT CAST(2 AS BIGINT), login, role, '', '', CAST(0 AS BIGINT)
           FROM project_members WHERE project_id = {id}"
    )
}

/// A desired state from the rows of [`desired_parts`] (rows whose `part` is NULL are skipped);
/// `None` when the project was never read.
pub(super) fn desired_of(project_id: i64, rows: &[sqlx::any::AnyRow]) -> Result<Option<Desired>> {
    let mut project: Option<(String, bool)> = None;
    let mut datasets = Vec::new();
    let mut shared_logins = Vec::new();
    for row in rows {
        match row.try_get::<Option<i64>, _>("part")? {
            None => {}
            Some(0) => project = Some((row.try_get("a")?, row.try_get::<i64, _>("n")? == 1)),
            Some(1) => {
                let parent: String = row.try_get("d")?;
                datasets.push(DatasetTruth {
                    uuid: row.try_get("a")?,
                    name: row.try_get("b")?,
                    path: row.try_get("c")?,
                    parent_uuid: (!parent.is_empty()).then_some(parent),
                    num_children: u32::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                });
            }
            Some(_) => {
                let member = MemberTruth {
                    login: row.try_get("a")?,
                    role: row.try_get("b")?,
                };
                if member.is_shared() {
                    shared_logins.push(member.login);
                }
            }
        }
    }
    let Some((directory, deleted)) = project else {
        return Ok(None);
    };
    Ok(Some(Desired {
        project_id,
        deleted,
        directory,
        datasets,
        shared_logins,
    }))
}

impl Store {
    /// The desired state of a project as the tasks send it, or `None` if it was never read. One
    /// statement (a task reads it on every attempt): the project row, then its datasets, then its
    /// members, told apart by `part`.
    pub async fn desired(&self, project_id: i64) -> Result<Option<Desired>> {
        let mut conn = self.kept().await?;
        let rows = sqlx::query(&format!("{} ORDER BY part, a", desired_parts("$1")))
            .bind(project_id)
            .fetch_all(&mut **conn)
            .await?;
        conn.keep();
        desired_of(project_id, &rows)
    }

    /// One project with members, datasets and the latest task per target.
    pub async fn get_project(&self, project_id: i64) -> Result<Option<ProjectRow>> {
        Ok(self
            .list_projects(project_id - 1, 1, true)
            .await?
            .into_iter()
            .find(|p| p.project_id == project_id))
    }

    /// Projects with id greater than `after`, ordered by id.
    pub async fn list_projects(
        &self,
        after: i64,
        limit: i64,
        include_deleted: bool,
    ) -> Result<Vec<ProjectRow>> {
        let rows = sqlx::query(
            "SELECT project_id, name, directory, deleted, updated_at, read_at FROM projects
             WHERE project_id > $1 AND ($2 = 1 OR deleted = 0) ORDER BY project_id LIMIT $3",
        )
        .bind(after)
        .bind(i64::from(include_deleted))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let project_id: i64 = row.try_get("project_id")?;
            let members = sqlx::query(
                "SELECT login, role FROM project_members WHERE project_id = $1 ORDER BY login",
            )
            .bind(project_id)
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(|m| {
                Ok(MemberTruth {
                    login: m.try_get("login")?,
                    role: m.try_get("role")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
            let datasets = sqlx::query(
                "SELECT uuid, name, path, parent_uuid, num_children FROM project_datasets WHERE project_id = $1 ORDER BY uuid",
            )
            .bind(project_id)
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(dataset_row)
            .collect::<Result<Vec<_>>>()?;
            let mut targets = Vec::new();
            for target in Target::ALL {
                let latest = sqlx::query(
                    "SELECT t.state, t.task_id, t.last_message, t.finished_at,
                            (SELECT MAX(ct.change_id) FROM change_tasks ct WHERE ct.task_id = t.task_id) AS change_id
                     FROM tasks t WHERE t.project_id = $1 AND t.target = $2 ORDER BY t.task_id DESC LIMIT 1",
                )
                .bind(project_id)
                .bind(target.as_str())
                .fetch_optional(&self.db.pool)
                .await?;
                if let Some(t) = latest {
                    targets.push(TargetStatusRow {
                        target,
                        state: parse_col(&t, "state", TaskState::parse)?,
                        task_id: t.try_get("task_id")?,
                        change_id: t.try_get::<Option<i64>, _>("change_id")?.unwrap_or(0),
                        last_message: t.try_get("last_message")?,
                        finished_at: t.try_get("finished_at")?,
                    });
                }
            }
            out.push(ProjectRow {
                project_id,
                name: row.try_get("name")?,
                directory: row.try_get("directory")?,
                deleted: row.try_get::<i64, _>("deleted")? == 1,
                updated_at: row.try_get("updated_at")?,
                read_at: row.try_get("read_at")?,
                members,
                datasets,
                targets,
            });
        }
        Ok(out)
    }

    /// Every known project id with its deleted flag.
    pub async fn known_projects(&self) -> Result<Vec<(i64, bool)>> {
        let rows = sqlx::query("SELECT project_id, deleted FROM projects ORDER BY project_id")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("project_id")?,
                    r.try_get::<i64, _>("deleted")? == 1,
                ))
            })
            .collect()
    }

    /// Stores SMRT Link's truth about a project outside any change (resync's rebuild of the
    /// project tables). Returns projects that lost datasets to it.
    pub async fn store_project_truth(
        &self,
        truth: &ProjectTruth,
        directory: &str,
    ) -> Result<Vec<i64>> {
        let now = self.now();
        let truth = truth.clone();
        let directory = directory.to_owned();
        self.write(|tx| {
            let truth = truth.clone();
            let directory = directory.clone();
            Box::pin(async move { store_truth(tx, &truth, &directory, now).await })
        })
        .await
    }

    /// Marks a project gone from SMRT Link outside any change (resync).
    pub async fn mark_project_deleted(&self, project_id: i64) -> Result<()> {
        let now = self.now();
        self.write(|tx| Box::pin(async move { mark_deleted(tx, project_id, now).await }))
            .await
    }
}
