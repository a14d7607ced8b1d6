//! [`Control`] for analysis jobs and the stand-in's clock: what SMRT Link's job engine and its
//! users do to jobs (none of it notifies anyone, as on port 8243).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::StandInError;
use super::control::Control;
use super::job_new::JobSeed;
use super::schedule::ScheduleStep;
use smrtshare_smrtlink::model::{AnalysisJob, DataStoreFile, JobState};

type Result<T> = std::result::Result<T, StandInError>;

impl Control {
    /// Adds an analysis job with its inputs, outputs and schedule (relative steps count from
    /// now); answers its id.
    pub fn add_analysis_job(&self, seed: JobSeed) -> Result<i64> {
        let mut state = self.shared.lock();
        let now = state.clock.now();
        let state = &mut *state;
        state.jobs.seed(&state.store, &seed, now)
    }

    /// Moves a job to another state now (with an error message for failed states); what was
    /// left of its schedule is dropped.
    pub fn set_job_state(&self, id: i64, job_state: JobState, error: Option<&str>) -> Result<()> {
        let mut state = self.shared.lock();
        let now = state.clock.now();
        state
            .jobs_now()
            .set_state(id, job_state, error.map(str::to_owned), now)
    }

    /// Replaces a job's schedule (relative steps count from now; an empty list stops it).
    pub fn set_job_schedule(&self, id: i64, steps: &[ScheduleStep]) -> Result<()> {
        let mut state = self.shared.lock();
        let now = state.clock.now();
        state.jobs_now().set_schedule(id, steps, now)
    }

    /// Renames a job.
    pub fn rename_job(&self, id: i64, name: &str) -> Result<()> {
        let mut state = self.shared.lock();
        let now = state.clock.now();
        state.jobs_now().rename(id, name, now)
    }

    /// Moves a job to another project.
    pub fn move_job(&self, id: i64, project_id: i64) -> Result<()> {
        let mut state = self.shared.lock();
        let now = state.clock.now();
        let state = &mut *state;
        state.jobs.settle(now);
        state.jobs.move_to(&state.store, id, project_id, now)
    }

    /// Soft-deletes (`false`: `isActive: false`, left out of listings without `showAll`, its
    /// datastore files inactive) or restores a job.
    pub fn set_job_active(&self, id: i64, active: bool) -> Result<()> {
        let mut state = self.shared.lock();
        let now = state.clock.now();
        state.jobs_now().set_active(id, active, now)
    }

    /// Removes a job altogether: SMRT Link answers 404 for it from then on.
    pub fn delete_job(&self, id: i64) -> Result<()> {
        self.shared.lock().jobs.remove(id)
    }

    /// A job as `GET …/jobs/analysis/{id}` answers it now.
    pub fn analysis_job(&self, id: i64) -> Option<AnalysisJob> {
        let mut state = self.shared.lock();
        let job = state.jobs_now().jobs.get(&id)?;
        AnalysisJob::from_json(&Value::Object(job.record.clone()), "job").ok()
    }

    /// A job's datastore as `GET …/jobs/analysis/{id}/datastore` answers it now.
    pub fn analysis_job_datastore(&self, id: i64) -> Option<Vec<DataStoreFile>> {
        let mut state = self.shared.lock();
        let job = state.jobs_now().jobs.get(&id)?;
        job.listed_datastore()
            .iter()
            .enumerate()
            .map(|(i, file)| DataStoreFile::from_json(file, &format!("datastore[{i}]")).ok())
            .collect()
    }

    /// Moves the stand-in's clock forward: schedule steps due by then take effect at the next
    /// read, with the timestamps of when they were due.
    pub fn advance_clock(&self, by: Duration) -> Result<()> {
        self.shared.lock().clock.advance(by)
    }

    /// Now, by the stand-in's clock (the wall clock plus every advance).
    pub fn clock_now(&self) -> DateTime<Utc> {
        self.shared.lock().clock.now()
    }

    /// How far the stand-in's clock has been advanced.
    pub fn clock_offset(&self) -> Duration {
        self.shared
            .lock()
            .clock
            .offset()
            .to_std()
            .unwrap_or_default()
    }
}
