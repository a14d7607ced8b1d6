//! What the API, the metrics and resync read.

use std::collections::HashMap;

use super::rows::{ChangeFilter, ChangeRow, LatestTask, TaskRow};
use super::{Result, Store};
use crate::model::{Target, TaskState};

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

/// A project's row with the size of its SMRT Link lists (the status page's overview).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectSummary {
    /// Id.
    pub project_id: i64,
    /// Name (kept once deleted, so the operator can tell which project it was).
    pub name: String,
    /// Directory name.
    pub directory: String,
    /// Gone from SMRT Link.
    pub deleted: bool,
    /// When the stored truth was read (epoch ms).
    pub read_at: i64,
    /// Datasets SMRT Link lists in it.
    pub datasets: i64,
    /// Members SMRT Link lists (the owner included).
    pub members: i64,
}

impl From<LatestTask> for TargetStatusRow {
    fn from(t: LatestTask) -> Self {
        Self {
            target: t.target,
            state: t.state,
            task_id: t.task_id,
            change_id: t.change_id,
            last_message: t.last_message,
            finished_at: t.finished_at,
        }
    }
}

impl Store {
    /// One change.
    pub async fn get_change(&self, change_id: i64) -> Result<Option<ChangeRow>> {
        let mut tx = self.begin_read().await?;
        let change = tx.change(change_id).await?;
        tx.commit().await?;
        Ok(change)
    }

    /// Changes newest first, filtered.
    pub async fn list_changes(&self, filter: ChangeFilter) -> Result<Vec<ChangeRow>> {
        let mut tx = self.begin_read().await?;
        let changes = tx.changes(&filter).await?;
        tx.commit().await?;
        Ok(changes)
    }

    /// The tasks linked to a change, oldest first.
    pub async fn tasks_of_change(&self, change_id: i64) -> Result<Vec<TaskRow>> {
        Ok(self
            .tasks_of_changes(&[change_id])
            .await?
            .remove(&change_id)
            .unwrap_or_default())
    }

    /// The tasks linked to each of `change_ids`, oldest first; a change with none is absent.
    pub async fn tasks_of_changes(&self, change_ids: &[i64]) -> Result<HashMap<i64, Vec<TaskRow>>> {
        let mut tx = self.begin_read().await?;
        let rows = tx.tasks_of_changes(change_ids).await?;
        tx.commit().await?;
        Ok(grouped(rows))
    }

    /// The changes `change_id` caused.
    pub async fn effects_of(&self, change_id: i64) -> Result<Vec<i64>> {
        Ok(self
            .effects_of_changes(&[change_id])
            .await?
            .remove(&change_id)
            .unwrap_or_default())
    }

    /// The changes each of `change_ids` caused, oldest first; a change that caused none is absent.
    pub async fn effects_of_changes(&self, change_ids: &[i64]) -> Result<HashMap<i64, Vec<i64>>> {
        let mut tx = self.begin_read().await?;
        let rows = tx.effects_of_changes(change_ids).await?;
        tx.commit().await?;
        Ok(grouped(rows))
    }

    /// The newest task per target of every project (resync compares with them).
    pub async fn latest_tasks(&self) -> Result<Vec<LatestTask>> {
        let mut tx = self.begin_read().await?;
        let tasks = tx.latest_tasks(None).await?;
        tx.commit().await?;
        Ok(tasks)
    }

    /// Tasks by target and state, for metrics.
    pub async fn task_counts(&self) -> Result<Vec<(Target, TaskState, i64)>> {
        let mut tx = self.begin_read().await?;
        let counts = tx.task_counts().await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The earliest time a settling change may be read, if any settles.
    pub async fn next_settle(&self) -> Result<Option<i64>> {
        let mut tx = self.begin_read().await?;
        let due = tx.next_settle().await?;
        tx.commit().await?;
        Ok(due)
    }

    /// The earliest due time of a waiting task of `target`, if any waits.
    pub async fn next_due(&self, target: Target) -> Result<Option<i64>> {
        let mut tx = self.begin_read().await?;
        let due = tx.next_due(target).await?;
        tx.commit().await?;
        Ok(due)
    }

    /// Every project, deleted ones included, with the size of its lists, by id.
    pub async fn project_summaries(&self) -> Result<Vec<ProjectSummary>> {
        let mut tx = self.begin_read().await?;
        let projects = tx.project_summaries().await?;
        tx.commit().await?;
        Ok(projects)
    }

    /// The newest task per project and target, superseded tasks skipped, with its report.
    pub async fn newest_tasks(&self) -> Result<Vec<TaskRow>> {
        let mut tx = self.begin_read().await?;
        let tasks = tx.newest_tasks().await?;
        tx.commit().await?;
        Ok(tasks)
    }

    /// The newest change of every project.
    pub async fn newest_changes(&self) -> Result<Vec<ChangeRow>> {
        let mut tx = self.begin_read().await?;
        let changes = tx.newest_changes().await?;
        tx.commit().await?;
        Ok(changes)
    }

    /// Attempts made on every task of a project and target (tests and metrics).
    pub async fn attempts_of(&self, project_id: i64, target: Target) -> Result<i64> {
        let mut tx = self.begin_read().await?;
        let n = tx.attempts_of(project_id, target).await?;
        tx.commit().await?;
        Ok(n)
    }
}

fn grouped<T>(rows: Vec<(i64, T)>) -> HashMap<i64, Vec<T>> {
    let mut out: HashMap<i64, Vec<T>> = HashMap::new();
    for (key, value) in rows {
        out.entry(key).or_default().push(value);
    }
    out
}
