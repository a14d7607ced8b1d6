//! The storage trait: the plain statements the store is made of, one method each, run inside a
//! short transaction ([`Tx`]). The store composes them with the rules of [`crate::rules`]; the
//! SQL adapter ([`super::sql`]) implements them for SQLite and PostgreSQL. Nothing here decides
//! anything: a method reads or writes rows and says what it found.

use async_trait::async_trait;

use super::Result;
use super::queries::ProjectSummary;
use super::rows::{
    ChangeFilter, ChangeRow, DatasetHolder, JobClaim, JobRow, KnownProject, LatestTask, LeaseRow,
    NewChangeRow, ProjectHead, ReadClaim, ReplicaRow, RunningTask, StatusInput, TaskClaim, TaskRow,
};
use crate::model::{AnalysisOutputs, Desired, JobOutput};
use crate::model::{
    ChangeKind, ChangeStatus, DatasetTruth, MemberTruth, ReadState, Target, TaskState,
};
use crate::rules::{Outcome, Waiting};

/// One open transaction. Dropped without [`Tx::commit`], it rolls back.
#[async_trait]
pub trait Tx: ChangeTx + TaskTx + ProjectTx + JobTx + Send {
    /// Commits.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Changes, read claims, stamps, leases and replicas.
#[async_trait]
pub trait ChangeTx: Send {
    /// The next read stamp (one increasing sequence for every replica).
    async fn next_stamp(&mut self) -> Result<i64>;
    /// Inserts a change. A SETTLING change is not inserted when one of the same project and kind
    /// settles already (`None`).
    async fn insert_change(&mut self, change: &NewChangeRow) -> Result<Option<i64>>;
    /// The settling change of a project and kind: `(change_id, created_at, settle_until)`.
    async fn settling_change(
        &mut self,
        project_id: i64,
        kind: ChangeKind,
    ) -> Result<Option<(i64, i64, i64)>>;
    /// Sets a settling change's settle time.
    async fn set_settle(&mut self, change_id: i64, settle_until: i64) -> Result<()>;
    /// Takes the change settled longest (or whose reader's lease lapsed) for `owner` until
    /// `expires`.
    async fn claim_read(
        &mut self,
        owner: &str,
        now: i64,
        expires: i64,
    ) -> Result<Option<ReadClaim>>;
    /// Moves a held read lease to `expires`; false when the claim no longer holds.
    async fn renew_read(&mut self, claim: &ReadClaim, owner: &str, expires: i64) -> Result<bool>;
    /// Ends a read (fenced on owner and attempt): false when the claim no longer holds.
    async fn mark_read(
        &mut self,
        claim: &ReadClaim,
        owner: &str,
        state: ReadState,
        message: &str,
        now: i64,
    ) -> Result<bool>;
    /// Puts a read back to settle until `at` (fenced), unless another change of the same project
    /// and kind settles already: false then, or when the claim no longer holds.
    async fn requeue_read(
        &mut self,
        claim: &ReadClaim,
        owner: &str,
        at: i64,
        message: &str,
    ) -> Result<bool>;
    /// Ends every lease `owner` holds at once (reads, tasks, named leases), so that they are
    /// taken over without waiting for them to lapse; answers how many of each.
    async fn expire_claims(&mut self, owner: &str) -> Result<[u64; 3]>;
    /// The changes linked to a task, locked (PostgreSQL: in id order, so two transactions never
    /// wait on each other crosswise; SQLite's writer holds the whole database).
    async fn lock_changes_of_task(&mut self, task_id: i64) -> Result<Vec<i64>>;
    /// What each change's status is computed from.
    async fn status_inputs(&mut self, change_ids: &[i64]) -> Result<Vec<StatusInput>>;
    /// Writes a change's status.
    async fn set_status(&mut self, change_id: i64, status: ChangeStatus) -> Result<()>;
    /// A named lease.
    async fn lease(&mut self, name: &str) -> Result<Option<LeaseRow>>;
    /// Writes a lease if its version is still `version` (or, with `None`, if it does not exist).
    async fn put_lease(&mut self, lease: &LeaseRow, version: Option<i64>) -> Result<bool>;
    /// The replica registered under `name`.
    async fn replica(&mut self, name: &str) -> Result<Option<ReplicaRow>>;
    /// Registers (or re-registers) a replica.
    async fn put_replica(&mut self, replica: &ReplicaRow) -> Result<()>;
    /// Records a heartbeat; false when another instance registered under the name since.
    async fn beat(&mut self, name: &str, instance: &str, now: i64) -> Result<bool>;
}

/// Tasks.
#[async_trait]
pub trait TaskTx: Send {
    /// The task waiting to run for a project and target, locked, if any.
    async fn waiting_task(&mut self, project_id: i64, target: Target) -> Result<Option<Waiting>>;
    /// Inserts a task waiting to run, due `now`.
    async fn insert_task(&mut self, project_id: i64, target: Target, now: i64) -> Result<i64>;
    /// Makes a never-run waiting task due at `now` at the latest.
    async fn hasten(&mut self, task_id: i64, now: i64) -> Result<()>;
    /// Links a change to a task (a link that exists stays).
    async fn link(&mut self, change_id: i64, task_id: i64) -> Result<()>;
    /// Takes a waiting task out of the wait (SUPERSEDED), so that a new one may wait in its place.
    async fn retire(&mut self, task_id: i64) -> Result<()>;
    /// Marks a task superseded by `new`, and links `new` to every change of `old`.
    async fn supersede(&mut self, old: i64, new: i64) -> Result<()>;
    /// Takes the due task of `target` waiting longest whose project has no task of that target
    /// running, for `owner` until `expires`.
    async fn claim_task(
        &mut self,
        target: Target,
        owner: &str,
        now: i64,
        expires: i64,
    ) -> Result<Option<TaskClaim>>;
    /// Moves a held task lease to `expires`; false when the claim no longer holds.
    async fn renew_task(&mut self, claim: &TaskClaim, owner: &str, expires: i64) -> Result<bool>;
    /// Writes an attempt's outcome if the claim still holds (the task runs attempt `attempts`)
    /// and, with `expired_by`, only if its lease expired by then (a reaper's write).
    async fn write_outcome(
        &mut self,
        task_id: i64,
        attempts: i64,
        outcome: &Outcome,
        desired_hash: &str,
        now: i64,
        expired_by: Option<i64>,
    ) -> Result<bool>;
    /// Running tasks whose lease expired by `now`, at most `limit`.
    async fn expired_tasks(&mut self, now: i64, limit: i64) -> Result<Vec<RunningTask>>;
}

/// Projects (renewable copies of SMRT Link) and the reads of the API.
#[async_trait]
pub trait ProjectTx: Send {
    /// A project's desired state (its row, datasets and shared members) in one statement, so it
    /// is read from one snapshot; `None` when the project was never read.
    async fn desired(&mut self, project_id: i64) -> Result<Option<Desired>>;
    /// A project's row, locked.
    async fn project_head(&mut self, project_id: i64) -> Result<Option<ProjectHead>>;
    /// Writes a project's row: an update when `exists`, else an insert (which meets a
    /// concurrent insert as a conflict, and the transaction is tried again).
    async fn put_project(&mut self, head: &ProjectHead, exists: bool) -> Result<()>;
    /// The members of projects: `(project_id, member)`, by project and login.
    async fn members(&mut self, project_ids: &[i64]) -> Result<Vec<(i64, MemberTruth)>>;
    /// The datasets of projects: `(project_id, dataset)`, by project and uuid.
    async fn datasets(&mut self, project_ids: &[i64]) -> Result<Vec<(i64, DatasetTruth)>>;
    /// Deletes members of a project.
    async fn delete_members(&mut self, project_id: i64, logins: &[&str]) -> Result<()>;
    /// Inserts or updates members of a project.
    async fn put_members(&mut self, project_id: i64, members: &[&MemberTruth]) -> Result<()>;
    /// Deletes datasets of a project.
    async fn delete_datasets(&mut self, project_id: i64, uuids: &[&str]) -> Result<()>;
    /// Inserts or updates datasets of a project.
    async fn put_datasets(&mut self, project_id: i64, datasets: &[&DatasetTruth]) -> Result<()>;
    /// Which other projects hold these datasets, with their stamps; their rows locked.
    async fn holders(&mut self, uuids: &[&str], except: i64) -> Result<Vec<DatasetHolder>>;
    /// Every known project.
    async fn known_projects(&mut self) -> Result<Vec<KnownProject>>;
    /// Projects with ids above `after`, in id order.
    async fn projects(
        &mut self,
        after: i64,
        limit: i64,
        include_deleted: bool,
    ) -> Result<Vec<ProjectHead>>;
    /// The newest task per target of each project (of every project with `None`), superseded
    /// tasks skipped.
    async fn latest_tasks(&mut self, project_ids: Option<&[i64]>) -> Result<Vec<LatestTask>>;
    /// One change.
    async fn change(&mut self, change_id: i64) -> Result<Option<ChangeRow>>;
    /// Changes newest first.
    async fn changes(&mut self, filter: &ChangeFilter) -> Result<Vec<ChangeRow>>;
    /// The tasks linked to each change: `(change_id, task)`, oldest first.
    async fn tasks_of_changes(&mut self, change_ids: &[i64]) -> Result<Vec<(i64, TaskRow)>>;
    /// The changes each change caused: `(cause, effect)`, oldest first.
    async fn effects_of_changes(&mut self, change_ids: &[i64]) -> Result<Vec<(i64, i64)>>;
    /// Tasks by target and state.
    async fn task_counts(&mut self) -> Result<Vec<(Target, TaskState, i64)>>;
    /// The earliest settle time of any settling change.
    async fn next_settle(&mut self) -> Result<Option<i64>>;
    /// The earliest due time of any waiting task of `target`.
    async fn next_due(&mut self, target: Target) -> Result<Option<i64>>;
    /// The number of attempts made on tasks of a project and target (tests and metrics).
    async fn attempts_of(&mut self, project_id: i64, target: Target) -> Result<i64>;
    /// Every project's row with how many datasets and members SMRT Link lists for it, by id.
    async fn project_summaries(&mut self) -> Result<Vec<ProjectSummary>>;
    /// The newest task per project and target (superseded tasks skipped), whole, with its
    /// report.
    async fn newest_tasks(&mut self) -> Result<Vec<TaskRow>>;
    /// The newest change of every project (discovery and analysis changes, of project 0, left
    /// out).
    async fn newest_changes(&mut self) -> Result<Vec<ChangeRow>>;
}

/// Analysis jobs.
#[async_trait]
pub trait JobTx: Send {
    /// A job, locked.
    async fn job(&mut self, job_id: i64) -> Result<Option<JobRow>>;
    /// Writes a job's row (an update when `exists`, else an insert); its claim stays.
    async fn put_job(&mut self, job: &JobRow, exists: bool) -> Result<()>;
    /// Deletes a job and its outputs.
    async fn delete_job(&mut self, job_id: i64) -> Result<()>;
    /// Replaces a job's output files.
    async fn put_outputs(&mut self, job_id: i64, outputs: &[JobOutput]) -> Result<()>;
    /// Every job of projects (every job with `None`), by id.
    async fn jobs(&mut self, project_ids: Option<&[i64]>) -> Result<Vec<JobRow>>;
    /// The finished jobs of projects with their outputs: `(project_id, outputs)`.
    async fn analysis(
        &mut self,
        project_ids: Option<&[i64]>,
    ) -> Result<Vec<(i64, AnalysisOutputs)>>;
    /// Takes the job due for a look longest (or whose follower's claim lapsed) for `owner` until
    /// `expires`.
    async fn claim_job(&mut self, owner: &str, now: i64, expires: i64) -> Result<Option<JobClaim>>;
    /// Moves a held job claim to `expires`; false when the claim no longer holds.
    async fn renew_job(&mut self, claim: &JobClaim, owner: &str, expires: i64) -> Result<bool>;
    /// Ends a claim (fenced on owner and checks): false when it no longer held.
    async fn end_job_claim(&mut self, claim: &JobClaim, owner: &str) -> Result<bool>;
    /// The earliest time a job is due for a look.
    async fn next_job_check(&mut self) -> Result<Option<i64>>;
}
