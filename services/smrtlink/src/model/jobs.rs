//! Analysis jobs: `GET /smrt-link/job-manager/jobs/analysis[/{id}[/entry-points|/datastore]]`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::read::{FieldError, Reader, describe};

/// A job's state, as SMRT Link spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// `CREATED` (pending).
    Created,
    /// `SUBMITTED` (pending).
    Submitted,
    /// `RUNNING` (pending).
    Running,
    /// `SUCCESSFUL` (done).
    Successful,
    /// `FAILED` (failed).
    Failed,
    /// `TERMINATED` (failed).
    Terminated,
    /// `ABORTED` (failed).
    Aborted,
}

/// What a job's state means to smrtshare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobPhase {
    /// Not finished: `CREATED`, `SUBMITTED`, `RUNNING`.
    Pending,
    /// Finished with outputs: `SUCCESSFUL`.
    Done,
    /// Finished without usable outputs: `FAILED`, `TERMINATED`, `ABORTED`.
    Failed,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        Self::Created,
        Self::Submitted,
        Self::Running,
        Self::Successful,
        Self::Failed,
        Self::Terminated,
        Self::Aborted,
    ];

    /// Reads SMRT Link's spelling; `None` for a state this library does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// SMRT Link's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Submitted => "SUBMITTED",
            Self::Running => "RUNNING",
            Self::Successful => "SUCCESSFUL",
            Self::Failed => "FAILED",
            Self::Terminated => "TERMINATED",
            Self::Aborted => "ABORTED",
        }
    }

    /// Pending, done or failed.
    pub fn phase(self) -> JobPhase {
        match self {
            Self::Created | Self::Submitted | Self::Running => JobPhase::Pending,
            Self::Successful => JobPhase::Done,
            Self::Failed | Self::Terminated | Self::Aborted => JobPhase::Failed,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An analysis job.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisJob {
    /// Job id.
    pub id: i64,
    /// Job UUID.
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// State.
    pub state: JobState,
    /// The project the job belongs to (the General Project when SMRT Link omits it).
    pub project_id: i64,
    /// Job type (`analysis` for analysis jobs).
    pub job_type_id: String,
    /// The workflow, such as `cromwell.workflows.pb_align_ccs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_job_type_id: Option<String>,
    /// The job directory on SMRT Link's filesystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Last update time of the record (a rename or a move changes it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Last time the job itself (its state) changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_updated_at: Option<DateTime<Utc>>,
    /// Why the job failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Whether the job is active (inactive jobs are soft-deleted).
    pub is_active: bool,
    /// Fields this library does not read, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

const JOB_FIELDS: &[&str] = &[
    "id",
    "uuid",
    "name",
    "state",
    "projectId",
    "jobTypeId",
    "subJobTypeId",
    "path",
    "createdAt",
    "updatedAt",
    "jobUpdatedAt",
    "errorMessage",
    "isActive",
];

impl AnalysisJob {
    /// Reads one job record; `path` names it in errors.
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        let state_text = r.req_str("state")?;
        let state = JobState::parse(&state_text).ok_or_else(|| FieldError {
            path: format!("{path}.state"),
            problem: format!(
                "unknown job state {}",
                describe(&Value::String(state_text.clone()))
            ),
        })?;
        Ok(Self {
            id: r.req_i64("id")?,
            uuid: r.req_uuid("uuid")?,
            name: r.req_str("name")?,
            state,
            project_id: r.opt_i64("projectId")?.unwrap_or(super::GENERAL_PROJECT_ID),
            job_type_id: r.opt_str("jobTypeId")?.unwrap_or_default(),
            sub_job_type_id: r.opt_str("subJobTypeId")?,
            path: r.opt_str("path")?,
            created_at: r.opt_time("createdAt")?,
            updated_at: r.opt_time("updatedAt")?,
            job_updated_at: r.opt_time("jobUpdatedAt")?,
            error_message: r.opt_str("errorMessage")?,
            is_active: r.opt_bool("isActive")?.unwrap_or(true),
            extra: r.extra(JOB_FIELDS),
        })
    }
}

/// A dataset a job was run on (`/entry-points`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPoint {
    /// The job.
    pub job_id: i64,
    /// The input dataset.
    #[serde(rename = "datasetUUID")]
    pub dataset_uuid: Uuid,
    /// The input dataset's MetaType.
    pub dataset_type: String,
    /// Fields this library does not read, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EntryPoint {
    /// Reads one entry point; `path` names it in errors.
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        Ok(Self {
            job_id: r.req_i64("jobId")?,
            dataset_uuid: r.req_uuid("datasetUUID")?,
            dataset_type: r.opt_str("datasetType")?.unwrap_or_default(),
            extra: r.extra(&["jobId", "datasetUUID", "datasetType"]),
        })
    }
}

/// An output file of a job (`/datastore`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataStoreFile {
    /// File UUID.
    pub uuid: Uuid,
    /// File type, such as `PacBio.DataSet.ConsensusReadSet` or `PacBio.FileTypes.JsonReport`.
    pub file_type_id: String,
    /// The task output it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Absolute path on SMRT Link's filesystem.
    pub path: String,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The job that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// That job's UUID.
    #[serde(rename = "jobUUID", skip_serializing_if = "Option::is_none")]
    pub job_uuid: Option<Uuid>,
    /// When the file was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the file last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<DateTime<Utc>>,
    /// When SMRT Link imported it into the datastore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_at: Option<DateTime<Utc>>,
    /// Whether it is an intermediate chunk of a scattered task.
    pub is_chunked: bool,
    /// Whether the file is active (the files of a soft-deleted job are not).
    pub is_active: bool,
    /// Fields this library does not read, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DataStoreFile {
    /// Reads one datastore file; `path` names it in errors.
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        Ok(Self {
            uuid: r.req_uuid("uuid")?,
            file_type_id: r.req_str("fileTypeId")?,
            source_id: r.opt_str("sourceId")?,
            path: r.req_str("path")?,
            file_size: r.opt_u64("fileSize")?,
            name: r.opt_str("name")?,
            description: r.opt_str("description")?,
            job_id: r.opt_i64("jobId")?,
            job_uuid: r.opt_uuid("jobUUID")?,
            created_at: r.opt_time("createdAt")?,
            modified_at: r.opt_time("modifiedAt")?,
            imported_at: r.opt_time("importedAt")?,
            is_chunked: r.opt_bool("isChunked")?.unwrap_or(false),
            is_active: r.opt_bool("isActive")?.unwrap_or(true),
            extra: r.extra(&[
                "uuid",
                "fileTypeId",
                "sourceId",
                "path",
                "fileSize",
                "name",
                "description",
                "jobId",
                "jobUUID",
                "createdAt",
                "modifiedAt",
                "importedAt",
                "isChunked",
                "isActive",
            ]),
        })
    }
}

/// One input of a new analysis job.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPointRequest {
    /// Entry id, such as `eid_ccs`.
    pub entry_id: String,
    /// The dataset's MetaType.
    pub file_type_id: String,
    /// Dataset UUID (or integer id, as text).
    pub dataset_id: String,
}

/// The body of `POST /smrt-link/job-manager/jobs/analysis`, as the web UI sends it. smrtshare
/// never starts jobs; this exists for tests and tools acting as the web UI.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisJobRequest {
    /// Job name.
    pub name: String,
    /// Workflow id, such as `cromwell.workflows.pb_align_ccs`.
    pub pipeline_id: String,
    /// Project the job belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<i64>,
    /// Inputs.
    pub entry_points: Vec<EntryPointRequest>,
    /// Task options, passed through.
    pub task_options: Vec<Value>,
    /// Workflow options, passed through.
    pub workflow_options: Vec<Value>,
}
