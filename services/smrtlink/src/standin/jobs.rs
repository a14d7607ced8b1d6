//! Analysis jobs at the stand-in: seeded, created by the web UI's POST, moved through their
//! states by tests.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::StandInError;
use super::store::{Store, now};
use crate::model::{GENERAL_PROJECT_ID, JobState};

/// One job: its record, its inputs and its outputs.
#[derive(Clone, Debug)]
pub(crate) struct JobRec {
    pub(crate) record: Map<String, Value>,
    pub(crate) entry_points: Vec<Value>,
    pub(crate) datastore: Vec<Value>,
}

/// A job to seed (tests, `analysis_jobs.json`).
#[derive(Clone, Debug)]
pub struct JobSeed {
    /// Job name.
    pub name: String,
    /// Project.
    pub project_id: i64,
    /// State.
    pub state: JobState,
    /// Input datasets (UUIDs known to the stand-in).
    pub entry_points: Vec<Uuid>,
    /// Output files: `(path, fileTypeId)`.
    pub outputs: Vec<(String, String)>,
}

/// What [`Jobs::create`] needs.
struct NewJob<'a> {
    name: &'a str,
    pipeline: &'a str,
    project_id: i64,
    state: JobState,
    user: &'a str,
    inputs: &'a [Uuid],
}

/// Every job, by id.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    pub(crate) jobs: BTreeMap<i64, JobRec>,
    pub(crate) next_id: i64,
}

impl Jobs {
    pub(crate) fn new() -> Self {
        Self {
            jobs: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// A job by integer id or UUID, as text.
    pub(crate) fn find(&self, key: &str) -> Option<&JobRec> {
        if let Ok(id) = key.parse::<i64>() {
            return self.jobs.get(&id);
        }
        let uuid = Uuid::parse_str(key).ok()?.to_string();
        self.jobs
            .values()
            .find(|j| j.record.get("uuid").and_then(Value::as_str) == Some(uuid.as_str()))
    }

    /// Adds a job record as given (seed files); it must have an integer `id`.
    pub(crate) fn insert(&mut self, rec: JobRec) -> Result<i64, StandInError> {
        let id = rec
            .record
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                StandInError::Invalid("job record: id missing or not an integer".into())
            })?;
        if self.jobs.contains_key(&id) {
            return Err(StandInError::Conflict(format!("job {id} already exists")));
        }
        self.next_id = self.next_id.max(id + 1);
        self.jobs.insert(id, rec);
        Ok(id)
    }

    /// Creates a job record.
    fn create(&mut self, store: &Store, job: NewJob<'_>) -> i64 {
        let NewJob {
            name,
            pipeline,
            project_id,
            state,
            user,
            inputs,
        } = job;
        let id = self.next_id;
        self.next_id += 1;
        let uuid = Uuid::new_v4();
        let at = now();
        let record = json!({
            "id": id,
            "uuid": uuid,
            "name": name,
            "comment": "",
            "state": state.as_str(),
            "jobTypeId": "analysis",
            "subJobTypeId": pipeline,
            "projectId": project_id,
            "path": format!("/opt/pacbio/smrtlink/userdata/jobs_root/{:07}", id),
            "createdAt": at,
            "updatedAt": at,
            "jobUpdatedAt": at,
            "createdBy": user,
            "isActive": true,
            "isMultiJob": false,
            "smrtlinkVersion": "13.0.0-standin",
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
        self.jobs.insert(
            id,
            JobRec {
                record,
                entry_points,
                datastore: Vec::new(),
            },
        );
        id
    }

    /// A job the web UI submits: `CREATED`, inputs resolved by UUID or id.
    pub(crate) fn submit(
        &mut self,
        store: &Store,
        body: &Value,
        user: &str,
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
            },
        ))
    }

    /// A seeded job with outputs.
    pub(crate) fn seed(&mut self, store: &Store, seed: &JobSeed) -> Result<i64, StandInError> {
        store.project(seed.project_id)?;
        for uuid in &seed.entry_points {
            if !store.datasets.contains_key(uuid) {
                return Err(StandInError::NotFound(format!(
                    "Unable to find dataset {uuid}"
                )));
            }
        }
        let id = self.create(
            store,
            NewJob {
                name: &seed.name,
                pipeline: "cromwell.workflows.pb_align_ccs",
                project_id: seed.project_id,
                state: seed.state,
                user: "admin",
                inputs: &seed.entry_points,
            },
        );
        let job_uuid = self
            .jobs
            .get(&id)
            .and_then(|j| j.record.get("uuid").cloned())
            .unwrap_or(Value::Null);
        let at = now();
        let datastore = seed
            .outputs
            .iter()
            .map(|(path, file_type)| {
                let name = path.rsplit('/').next().unwrap_or(path);
                json!({
                    "uuid": Uuid::new_v4(),
                    "fileTypeId": file_type,
                    "sourceId": format!("{}-out-0", seed.name),
                    "fileSize": std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                    "createdAt": at,
                    "modifiedAt": at,
                    "importedAt": at,
                    "path": path,
                    "isChunked": false,
                    "isActive": true,
                    "name": name,
                    "description": "",
                    "jobId": id,
                    "jobUUID": job_uuid,
                })
            })
            .collect();
        if let Some(job) = self.jobs.get_mut(&id) {
            job.datastore = datastore;
        }
        Ok(id)
    }

    /// Moves a job to another state.
    pub(crate) fn set_state(
        &mut self,
        id: i64,
        state: JobState,
        error: Option<String>,
    ) -> Result<(), StandInError> {
        let job = self
            .jobs
            .get_mut(&id)
            .ok_or_else(|| StandInError::NotFound(format!("Unable to find job {id}")))?;
        let at = now();
        job.record.insert("state".into(), json!(state.as_str()));
        job.record.insert("updatedAt".into(), json!(at));
        job.record.insert("jobUpdatedAt".into(), json!(at));
        match error {
            Some(message) => job.record.insert("errorMessage".into(), json!(message)),
            None => job.record.remove("errorMessage"),
        };
        Ok(())
    }
}
