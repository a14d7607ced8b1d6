//! New analysis jobs at the stand-in: the web UI's submissions, and jobs seeded by tests and the
//! admin API with their outputs and schedules.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::StandInError;
use super::jobs::{JobRec, Jobs, job_dir};
use super::schedule::{ScheduleStep, resolve};
use super::store::{Store, format_time};
use smrtshare_smrtlink::model::{GENERAL_PROJECT_ID, JobState};

/// An output file of a job to seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOutput {
    /// Absolute path.
    pub path: String,
    /// File type, such as `PacBio.FileTypes.bam` or `PacBio.DataSet.ConsensusAlignmentSet`.
    pub file_type_id: String,
    /// Display name (default: the file's base name).
    pub name: Option<String>,
    /// The task output it came from (default: `<pipeline>.out-<n>`).
    pub source_id: Option<String>,
}

impl JobOutput {
    /// An output with default name and source.
    pub fn new(path: impl Into<String>, file_type_id: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            file_type_id: file_type_id.into(),
            name: None,
            source_id: None,
        }
    }
}

/// A job to seed (tests, the admin API).
#[derive(Clone, Debug)]
pub struct JobSeed {
    /// Job name.
    pub name: String,
    /// Project.
    pub project_id: i64,
    /// State it starts in.
    pub state: JobState,
    /// Workflow id (`subJobTypeId`); `None`: `cromwell.workflows.pb_align_ccs`.
    pub pipeline: Option<String>,
    /// Input datasets (UUIDs known to the stand-in).
    pub entry_points: Vec<Uuid>,
    /// Output files.
    pub outputs: Vec<JobOutput>,
    /// States it enters later.
    pub schedule: Vec<ScheduleStep>,
}

impl JobSeed {
    /// A job with no inputs, outputs or schedule.
    pub fn new(name: impl Into<String>, project_id: i64, state: JobState) -> Self {
        Self {
            name: name.into(),
            project_id,
            state,
            pipeline: None,
            entry_points: Vec::new(),
            outputs: Vec::new(),
            schedule: Vec::new(),
        }
    }
}

/// What `Jobs::create` needs.
struct NewJob<'a> {
    name: &'a str,
    pipeline: &'a str,
    project_id: i64,
    state: JobState,
    user: &'a str,
    inputs: &'a [Uuid],
    at: DateTime<Utc>,
}

impl Jobs {
    /// Creates a job record.
    fn create(&mut self, store: &Store, job: NewJob<'_>) -> i64 {
        let NewJob {
            name,
            pipeline,
            project_id,
            state,
            user,
            inputs,
            at,
        } = job;
        let id = self.next_id;
        self.next_id += 1;
        let uuid = Uuid::new_v4();
        let stamp = format_time(at);
        let settings = json!({"pipelineId": pipeline, "name": name, "projectId": project_id});
        let record = json!({
            "id": id,
            "uuid": uuid,
            "name": name,
            "comment": "",
            "state": state.as_str(),
            "jobTypeId": "analysis",
            "subJobTypeId": pipeline,
            "projectId": project_id,
            "path": job_dir("/opt/pacbio/smrtlink/userdata/jobs_root", id),
            "createdAt": stamp,
            "updatedAt": stamp,
            "jobUpdatedAt": stamp,
            "createdBy": user,
            "isActive": true,
            "isMultiJob": false,
            "tags": "",
            "jsonSettings": settings.to_string(),
            "smrtlinkVersion": "13.0.0.standin",
        });
        let entry_points = inputs
            .iter()
            .map(|u| {
                let dataset_type = store
                    .datasets
                    .get(u)
                    .and_then(|r| r.get("datasetType").cloned())
                    .unwrap_or_else(|| json!("PacBio.DataSet.ConsensusReadSet"));
                json!({"jobId": id, "datasetUUID": u, "datasetType": dataset_type})
            })
            .collect();
        let record = match record {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut rec = JobRec {
            record,
            entry_points,
            datastore: Vec::new(),
            schedule: Vec::new(),
        };
        // A job created in a later state has the timestamps of having entered it.
        if state != JobState::Created {
            rec.enter(state, None, at);
        }
        self.jobs.insert(id, rec);
        id
    }

    /// A job the web UI submits: `CREATED`, inputs resolved by UUID or id.
    pub(crate) fn submit(
        &mut self,
        store: &Store,
        body: &Value,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<i64, StandInError> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| StandInError::Invalid("name: missing or empty".into()))?;
        let pipeline = body
            .get("pipelineId")
            .and_then(Value::as_str)
            .ok_or_else(|| StandInError::Invalid("pipelineId: missing".into()))?;
        let project_id = match body.get("projectId") {
            None | Some(Value::Null) => GENERAL_PROJECT_ID,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| StandInError::Invalid("projectId: not an integer".into()))?,
        };
        store.project(project_id)?;
        let mut inputs = Vec::new();
        let entry_points = body
            .get("entryPoints")
            .and_then(Value::as_array)
            .ok_or_else(|| StandInError::Invalid("entryPoints: missing or not an array".into()))?;
        for (i, ep) in entry_points.iter().enumerate() {
            let key = match ep.get("datasetId") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(StandInError::Invalid(format!(
                        "entryPoints[{i}].datasetId: missing"
                    )));
                }
            };
            let uuid = store.find_dataset(&key).ok_or_else(|| {
                StandInError::Invalid(format!("entryPoints[{i}]: unable to find dataset {key}"))
            })?;
            inputs.push(uuid);
        }
        Ok(self.create(
            store,
            NewJob {
                name,
                pipeline,
                project_id,
                state: JobState::Created,
                user,
                inputs: &inputs,
                at,
            },
        ))
    }

    /// A seeded job with outputs and a schedule (relative steps count from `now`).
    pub(crate) fn seed(
        &mut self,
        store: &Store,
        seed: &JobSeed,
        now: DateTime<Utc>,
    ) -> Result<i64, StandInError> {
        store.project(seed.project_id)?;
        if seed.name.trim().is_empty() {
            return Err(StandInError::Invalid("name: missing or empty".into()));
        }
        for uuid in &seed.entry_points {
            if !store.datasets.contains_key(uuid) {
                return Err(StandInError::NotFound(format!(
                    "Unable to find dataset {uuid}"
                )));
            }
        }
        for (i, output) in seed.outputs.iter().enumerate() {
            if !output.path.starts_with('/') {
                return Err(StandInError::Invalid(format!(
                    "outputs[{i}].path: {:?} is not absolute",
                    output.path
                )));
            }
            if output.file_type_id.trim().is_empty() {
                return Err(StandInError::Invalid(format!(
                    "outputs[{i}].file_type_id: missing"
                )));
            }
        }
        let schedule = resolve(&seed.schedule, seed.state, now, "schedule")?;
        let pipeline = seed
            .pipeline
            .as_deref()
            .unwrap_or("cromwell.workflows.pb_align_ccs");
        let id = self.create(
            store,
            NewJob {
                name: &seed.name,
                pipeline,
                project_id: seed.project_id,
                state: seed.state,
                user: "admin",
                inputs: &seed.entry_points,
                at: now,
            },
        );
        let job = self.get_mut(id)?;
        let job_uuid = job.record.get("uuid").cloned().unwrap_or(Value::Null);
        let stamp = format_time(now);
        job.datastore = seed
            .outputs
            .iter()
            .enumerate()
            .map(|(i, output)| {
                let base = output.path.rsplit('/').next().unwrap_or(&output.path);
                json!({
                    "uuid": Uuid::new_v4(),
                    "fileTypeId": output.file_type_id,
                    "sourceId": output.source_id.clone().unwrap_or_else(|| format!("{pipeline}.out-{i}")),
                    "fileSize": std::fs::metadata(&output.path).map(|m| m.len()).unwrap_or(0),
                    "createdAt": stamp,
                    "modifiedAt": stamp,
                    "importedAt": stamp,
                    "path": output.path,
                    "isChunked": false,
                    "isActive": true,
                    "name": output.name.as_deref().unwrap_or(base),
                    "description": output.name.as_deref().unwrap_or(base),
                    "jobId": id,
                    "jobUUID": job_uuid,
                })
            })
            .collect();
        job.schedule = schedule;
        Ok(id)
    }
}
