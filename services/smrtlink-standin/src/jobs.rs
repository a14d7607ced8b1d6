//! Analysis jobs at the stand-in: seeded, created by the web UI's POST, moved through their
//! states by schedules (see [`super::schedule`]) or by hand, renamed, moved between projects,
//! soft-deleted.
//!
//! What SMRT Link's answers hold, as the stand-in serves them:
//! - the listing holds active jobs only unless `showAll` is given (as SMRT Link's does), and can
//!   be narrowed to one project with `projectId`; a job record is served whether active or not;
//! - a job's datastore lists what SMRT Link has imported so far: nothing before the job runs, the
//!   job's log files (`PacBio.FileTypes.log`) once it runs (SMRT Link imports the job log when the
//!   job starts), every output once it is `SUCCESSFUL` (their `importedAt` then is the time the
//!   job finished), and the logs only when it failed; the files of a soft-deleted job are
//!   `isActive: false`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::StandInError;
use super::schedule::{ScheduleStep, Step, resolve};
use super::store::{Store, format_time};
use smrtshare_smrtlink::model::{GENERAL_PROJECT_ID, JobPhase, JobState};

/// The file type SMRT Link gives job logs.
const LOG_FILE_TYPE: &str = "PacBio.FileTypes.log";

/// A job directory as SMRT Link lays out `jobs_root`: job 1589 is `0000/0000001/0000001589`.
pub(crate) fn job_dir(jobs_root: &str, id: i64) -> String {
    format!(
        "{jobs_root}/{:04}/{:07}/{id:010}",
        id / 1_000_000,
        id / 1000
    )
}

/// One job: its record, its inputs, its outputs and the steps still to come.
#[derive(Clone, Debug)]
pub(crate) struct JobRec {
    pub(crate) record: Map<String, Value>,
    pub(crate) entry_points: Vec<Value>,
    pub(crate) datastore: Vec<Value>,
    /// Steps still to come, in time order (never served).
    pub(crate) schedule: Vec<Step>,
}

impl JobRec {
    /// The job's state (`None` for a state the stand-in does not know, from a seed).
    pub(crate) fn state(&self) -> Option<JobState> {
        self.record
            .get("state")
            .and_then(Value::as_str)
            .and_then(JobState::parse)
    }

    fn project_id(&self) -> i64 {
        self.record
            .get("projectId")
            .and_then(Value::as_i64)
            .unwrap_or(GENERAL_PROJECT_ID)
    }

    fn is_active(&self) -> bool {
        self.record
            .get("isActive")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// The datastore as SMRT Link lists it now (see the module documentation).
    pub(crate) fn listed_datastore(&self) -> Vec<Value> {
        let state = self.state();
        self.datastore
            .iter()
            .filter(|file| {
                let is_log = file.get("fileTypeId").and_then(Value::as_str) == Some(LOG_FILE_TYPE);
                match state {
                    None | Some(JobState::Successful) => true,
                    Some(JobState::Created | JobState::Submitted) => false,
                    Some(_) => is_log,
                }
            })
            .cloned()
            .collect()
    }

    /// Enters `state` at `at`.
    pub(crate) fn enter(&mut self, state: JobState, error: Option<String>, at: DateTime<Utc>) {
        let stamp = json!(format_time(at));
        let record = &mut self.record;
        record.insert("state".into(), json!(state.as_str()));
        record.insert("updatedAt".into(), stamp.clone());
        record.insert("jobUpdatedAt".into(), stamp.clone());
        if state == JobState::Running {
            record
                .entry("jobStartedAt")
                .or_insert_with(|| stamp.clone());
        }
        if state.phase() == JobPhase::Pending {
            record.remove("jobCompletedAt");
        } else {
            record.insert("jobCompletedAt".into(), stamp.clone());
        }
        match error {
            Some(message) => record.insert("errorMessage".into(), json!(message)),
            None => record.remove("errorMessage"),
        };
        if state == JobState::Successful {
            for file in &mut self.datastore {
                let is_log = file.get("fileTypeId").and_then(Value::as_str) == Some(LOG_FILE_TYPE);
                if let (false, Some(obj)) = (is_log, file.as_object_mut()) {
                    obj.insert("importedAt".into(), stamp.clone());
                }
            }
        }
    }

    /// Applies the steps due by `now`.
    pub(crate) fn settle(&mut self, now: DateTime<Utc>) {
        let due = self.schedule.iter().take_while(|s| s.at <= now).count();
        for step in self.schedule.drain(..due).collect::<Vec<_>>() {
            self.enter(step.state, step.error_message, step.at);
        }
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.record
            .insert("updatedAt".into(), json!(format_time(at)));
    }
}

/// Every job, by id.
#[derive(Debug, Default)]
pub(crate) struct Jobs {
    pub(crate) jobs: BTreeMap<i64, JobRec>,
    pub(crate) next_id: i64,
}

fn missing(id: impl std::fmt::Display) -> StandInError {
    StandInError::NotFound(format!("Unable to find job {id}"))
}

impl Jobs {
    pub(crate) fn new() -> Self {
        Self {
            jobs: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// Applies every step due by `now` (every read of a job does this first).
    pub(crate) fn settle(&mut self, now: DateTime<Utc>) {
        for job in self.jobs.values_mut() {
            job.settle(now);
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

    pub(crate) fn get_mut(&mut self, id: i64) -> Result<&mut JobRec, StandInError> {
        self.jobs.get_mut(&id).ok_or_else(|| missing(id))
    }

    /// The listing: active jobs (every job with `show_all`), of one project or all.
    pub(crate) fn list(&self, project: Option<i64>, show_all: bool) -> Vec<Value> {
        self.jobs
            .values()
            .filter(|j| show_all || j.is_active())
            .filter(|j| project.is_none_or(|p| j.project_id() == p))
            .map(|j| Value::Object(j.record.clone()))
            .collect()
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

    /// Moves a job to another state now, by hand; what was left of its schedule is dropped.
    pub(crate) fn set_state(
        &mut self,
        id: i64,
        state: JobState,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), StandInError> {
        let job = self.get_mut(id)?;
        job.schedule.clear();
        job.enter(state, error, now);
        Ok(())
    }

    /// Replaces a job's schedule (relative steps count from `now`).
    pub(crate) fn set_schedule(
        &mut self,
        id: i64,
        steps: &[ScheduleStep],
        now: DateTime<Utc>,
    ) -> Result<(), StandInError> {
        let job = self.get_mut(id)?;
        let current = job.state().ok_or_else(|| {
            StandInError::Invalid(format!("job {id} is in a state the stand-in does not know"))
        })?;
        job.schedule = resolve(steps, current, now, "schedule")?;
        job.settle(now);
        Ok(())
    }

    /// Renames a job.
    pub(crate) fn rename(
        &mut self,
        id: i64,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StandInError> {
        if name.trim().is_empty() {
            return Err(StandInError::Invalid("name: must not be empty".into()));
        }
        let job = self.get_mut(id)?;
        job.record.insert("name".into(), json!(name));
        job.touch(now);
        Ok(())
    }

    /// Moves a job to another project (which must exist).
    pub(crate) fn move_to(
        &mut self,
        store: &Store,
        id: i64,
        project_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StandInError> {
        store.project(project_id)?;
        let job = self.get_mut(id)?;
        job.record.insert("projectId".into(), json!(project_id));
        job.touch(now);
        Ok(())
    }

    /// Soft-deletes (`false`) or restores a job; its datastore files follow.
    pub(crate) fn set_active(
        &mut self,
        id: i64,
        active: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StandInError> {
        let job = self.get_mut(id)?;
        job.record.insert("isActive".into(), json!(active));
        for file in &mut job.datastore {
            if let Some(obj) = file.as_object_mut() {
                obj.insert("isActive".into(), json!(active));
            }
        }
        job.touch(now);
        Ok(())
    }

    /// Removes a job altogether (SMRT Link answers 404 for it from then on).
    pub(crate) fn remove(&mut self, id: i64) -> Result<(), StandInError> {
        self.jobs.remove(&id).map(|_| ()).ok_or_else(|| missing(id))
    }

    /// The jobs of a deleted project return to the General Project.
    pub(crate) fn project_deleted(&mut self, project_id: i64, now: DateTime<Utc>) {
        for job in self.jobs.values_mut() {
            if job.project_id() == project_id {
                job.record
                    .insert("projectId".into(), json!(GENERAL_PROJECT_ID));
                job.touch(now);
            }
        }
    }
}
