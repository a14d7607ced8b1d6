//! The rows the store reads and writes, as plain values.

use crate::model::{
    ChangeKind, ChangeReason, ChangeStatus, Operation, ReadState, Target, TaskState,
};

/// A change to insert.
#[derive(Clone, Debug)]
pub struct NewChangeRow {
    /// The project (0 for discovery and analysis changes).
    pub project_id: i64,
    /// Why.
    pub reason: ChangeReason,
    /// What about.
    pub kind: ChangeKind,
    /// Its status.
    pub status: ChangeStatus,
    /// Account of the change.
    pub message: String,
    /// The change that caused this one, or 0.
    pub caused_by: i64,
    /// The mirrored request, if any.
    pub request: String,
    /// SETTLING, or READ for a change whose read is already done (resync).
    pub read_state: ReadState,
    /// When SMRT Link may be read for it.
    pub settle_until: i64,
    /// Now.
    pub created_at: i64,
    /// When it was read (0 while it settles).
    pub read_at: i64,
}

/// A change claimed by a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadClaim {
    /// Change id.
    pub change_id: i64,
    /// Project (0 for discovery/analysis).
    pub project_id: i64,
    /// Kind.
    pub kind: ChangeKind,
    /// Reason.
    pub reason: ChangeReason,
    /// Read attempts so far, this one included (the fencing token).
    pub read_attempts: i64,
}

/// What a change's status is computed from.
#[derive(Clone, Debug)]
pub struct StatusInput {
    /// The change.
    pub change_id: i64,
    /// Its read state.
    pub read_state: ReadState,
    /// Its stored status.
    pub status: ChangeStatus,
    /// The states of the tasks linked to it.
    pub tasks: Vec<TaskState>,
}

/// A named singleton lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// Its name.
    pub name: String,
    /// The holder ('' when free).
    pub owner: String,
    /// When it lapses (epoch ms).
    pub expires_at: i64,
    /// Bumped by every write (compare-and-set).
    pub version: i64,
}

/// A coordinator process registered under a replica name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRow {
    /// The replica name (the owner of its claims).
    pub name: String,
    /// This process's own id.
    pub instance: String,
    /// Host name.
    pub host: String,
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Process id.
    pub pid: i64,
    /// When it registered.
    pub started_at: i64,
    /// Its last heartbeat.
    pub heartbeat_at: i64,
}

/// A task claimed by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// When that change was recorded (epoch ms; 0 without one): what the task's latency counts
    /// from.
    pub change_at: i64,
}

/// A running task, as a reaper or a restarted replica finds it.
#[derive(Clone, Debug)]
pub struct RunningTask {
    /// Task id.
    pub task_id: i64,
    /// Project.
    pub project_id: i64,
    /// Target.
    pub target: Target,
    /// Attempt running.
    pub attempts: i64,
    /// Lease holder.
    pub owner: String,
}

/// A project's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectHead {
    /// Id.
    pub project_id: i64,
    /// Name ('' once deleted).
    pub name: String,
    /// Directory name ('' once deleted).
    pub directory: String,
    /// Gone from SMRT Link.
    pub deleted: bool,
    /// SMRT Link's updatedAt.
    pub updated_at: String,
    /// When the stored truth was read (epoch ms).
    pub read_at: i64,
    /// The stamp of the read whose truth is stored.
    pub stamp: i64,
}

/// A dataset held by a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetHolder {
    /// The project holding it.
    pub project_id: i64,
    /// The dataset.
    pub uuid: String,
    /// That project's stamp.
    pub stamp: i64,
}

/// A known project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownProject {
    /// Id.
    pub project_id: i64,
    /// Gone from SMRT Link.
    pub deleted: bool,
    /// The stamp of its stored truth.
    pub stamp: i64,
}

/// The newest task of a project and target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestTask {
    /// Project.
    pub project_id: i64,
    /// Target.
    pub target: Target,
    /// Task id.
    pub task_id: i64,
    /// Its state.
    pub state: TaskState,
    /// The newest change linked to it.
    pub change_id: i64,
    /// Its last message.
    pub last_message: String,
    /// Last finished (epoch ms).
    pub finished_at: i64,
    /// The fingerprint of the desired state it last ran with.
    pub desired_hash: String,
    /// Items it reported as failing for good.
    pub residue: Vec<String>,
}

/// Which changes to list.
#[derive(Clone, Copy, Debug)]
pub struct ChangeFilter {
    /// Only this project (0: any).
    pub project_id: i64,
    /// Only this status.
    pub status: Option<ChangeStatus>,
    /// Only changes older than this id (0: from the newest).
    pub before: i64,
    /// At most this many.
    pub limit: i64,
}

/// A change as stored.
#[derive(Clone, Debug)]
pub struct ChangeRow {
    /// Change id.
    pub change_id: i64,
    /// Project.
    pub project_id: i64,
    /// Reason.
    pub reason: ChangeReason,
    /// Kind.
    pub kind: ChangeKind,
    /// Status.
    pub status: ChangeStatus,
    /// Account of the change.
    pub message: String,
    /// Cause.
    pub caused_by: i64,
    /// Mirrored request.
    pub request: String,
    /// Read phase.
    pub read_state: ReadState,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Read (epoch ms, 0 if not yet).
    pub read_at: i64,
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
    /// Attempts.
    pub attempts: i64,
    /// Next run (epoch ms) while READY.
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

/// An analysis job as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    /// SMRT Link job id.
    pub job_id: i64,
    /// Its project.
    pub project_id: i64,
    /// Its name.
    pub name: String,
    /// SMRT Link's state text.
    pub state: String,
    /// SMRT Link's error message, or why the job could not be read.
    pub message: String,
    /// Looks taken while it was pending.
    pub checks: i64,
    /// When it is looked at again (0: its state is final).
    pub next_check_at: i64,
    /// The stamp of the read whose state is stored.
    pub stamp: i64,
    /// When it was last read (epoch ms).
    pub checked_at: i64,
    /// Output files stored for it.
    pub outputs: i64,
}

/// A job claimed by a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobClaim {
    /// SMRT Link job id.
    pub job_id: i64,
    /// Looks taken before this one (the fencing token: a finish moves it on).
    pub checks: i64,
}
