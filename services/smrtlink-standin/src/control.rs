//! [`Control`]: what tests and operators do to the stand-in without going through SMRT Link's
//! API — act as SMRT Link users do (the changes notify no one, as if made on port 8243), inject
//! faults, read counters. The admin HTTP API calls the same methods.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use smrtshare_common::Secret;
use uuid::Uuid;

use super::faults::{Counters, Endpoint, Faults, ListingFailure, RawAnswer};
use super::store::{NewProject, ProjectPatch};
use super::{Shared, StandInError};
use smrtshare_smrtlink::model::{Dataset, Member, Project, Role};

/// A handle on the stand-in's state. Cheap to clone; every method takes effect at once.
#[derive(Clone, Debug)]
pub struct Control {
    pub(crate) shared: Arc<Shared>,
}

type Result<T> = std::result::Result<T, StandInError>;

impl Control {
    fn patch(&self, id: i64, patch: ProjectPatch) -> Result<()> {
        self.shared.lock().store.update_project(id, patch, false)
    }

    /// Creates a project (as a SMRT Link user would, without the web UI); answers its id.
    pub fn create_project(&self, project: NewProject) -> Result<i64> {
        self.shared.lock().store.create_project(project)
    }

    /// Renames a project (not the General Project).
    pub fn rename_project(&self, id: i64, name: &str) -> Result<()> {
        self.patch(
            id,
            ProjectPatch {
                name: Some(name.to_owned()),
                ..ProjectPatch::default()
            },
        )
    }

    /// Changes a project's description.
    pub fn set_description(&self, id: i64, description: &str) -> Result<()> {
        self.patch(
            id,
            ProjectPatch {
                description: Some(description.to_owned()),
                ..ProjectPatch::default()
            },
        )
    }

    /// Soft-deletes (`false`: `isActive: false`, state `DELETED`, still listed) or reactivates
    /// a project.
    pub fn set_project_active(&self, id: i64, active: bool) -> Result<()> {
        self.patch(
            id,
            ProjectPatch {
                is_active: Some(active),
                ..ProjectPatch::default()
            },
        )
    }

    /// Deletes a project: gone from list and detail; its datasets and analysis jobs return to the
    /// General Project.
    pub fn delete_project(&self, id: i64) -> Result<()> {
        self.shared.lock().delete_project(id)
    }

    /// Adds a member, or changes the role of one.
    pub fn add_member(&self, id: i64, login: &str, role: Role) -> Result<()> {
        self.shared
            .lock()
            .store
            .set_member(id, Member::new(login, role))
    }

    /// Removes a member.
    pub fn remove_member(&self, id: i64, login: &str) -> Result<()> {
        self.shared.lock().store.remove_member(id, login)
    }

    /// Lists a dataset in a project, taking it out of the project that listed it.
    pub fn add_dataset(&self, id: i64, uuid: Uuid) -> Result<()> {
        self.shared.lock().store.add_dataset(id, uuid)
    }

    /// Takes a dataset out of a project; it returns to the General Project.
    pub fn remove_dataset(&self, id: i64, uuid: Uuid) -> Result<()> {
        self.shared.lock().store.remove_dataset(id, uuid)
    }

    /// Moves a dataset to project `to` (both projects change).
    pub fn move_dataset(&self, uuid: Uuid, to: i64) -> Result<()> {
        self.add_dataset(to, uuid)
    }

    /// Imports a dataset record (it needs `uuid`, `name` and `path`; `id` is assigned when
    /// absent) and lists it in a project.
    pub fn import_dataset(&self, project_id: i64, record: Value) -> Result<Uuid> {
        let Value::Object(mut record) = record else {
            return Err(StandInError::Invalid(
                "dataset record: expected an object".into(),
            ));
        };
        let mut state = self.shared.lock();
        state.store.project(project_id)?;
        for key in ["name", "path"] {
            if !record.get(key).is_some_and(Value::is_string) {
                return Err(StandInError::Invalid(format!(
                    "dataset record: {key} missing"
                )));
            }
        }
        if !record.contains_key("id") {
            record.insert("id".into(), json!(state.store.next_dataset_id));
        }
        let at = super::store::now();
        for (key, default) in [
            ("isActive", json!(true)),
            ("numChildren", json!(0)),
            ("createdAt", json!(at)),
            ("updatedAt", json!(at)),
            ("importedAt", json!(at)),
        ] {
            record.entry(key).or_insert(default);
        }
        record.insert("projectId".into(), json!(project_id));
        let uuid = state.store.insert_dataset(record)?;
        state.store.add_dataset(project_id, uuid)?;
        Ok(uuid)
    }

    /// A project as `GET /smrt-link/projects/{id}` answers it now.
    pub fn project(&self, id: i64) -> Option<Project> {
        let state = self.shared.lock();
        let rec = state.store.projects.get(&id)?;
        Project::from_json(&state.store.detail_json(rec), "project").ok()
    }

    /// Every project, by id.
    pub fn projects(&self) -> Vec<Project> {
        let state = self.shared.lock();
        state
            .store
            .projects
            .values()
            .filter_map(|p| Project::from_json(&state.store.detail_json(p), "project").ok())
            .collect()
    }

    /// A dataset's full record.
    pub fn dataset(&self, uuid: Uuid) -> Option<Dataset> {
        let state = self.shared.lock();
        let record = state.store.datasets.get(&uuid)?;
        Dataset::from_json(&Value::Object(record.clone()), "dataset").ok()
    }

    /// Everything the stand-in holds, as JSON (projects in detail, datasets, jobs with their
    /// whole datastore and the schedule steps still to come).
    pub fn state_json(&self) -> Value {
        let mut state = self.shared.lock();
        state.jobs_now();
        let projects: Vec<Value> = state
            .store
            .projects
            .values()
            .map(|p| state.store.detail_json(p))
            .collect();
        let datasets: Vec<Value> = state
            .store
            .datasets
            .values()
            .cloned()
            .map(Value::Object)
            .collect();
        let jobs: Vec<Value> = state
            .jobs
            .jobs
            .values()
            .map(|j| {
                let schedule: Vec<Value> = j
                    .schedule
                    .iter()
                    .map(|s| json!({"at": super::store::format_time(s.at), "state": s.state.as_str(), "errorMessage": s.error_message}))
                    .collect();
                json!({"job": j.record, "entryPoints": j.entry_points, "datastore": j.datastore, "schedule": schedule})
            })
            .collect();
        json!({"projects": projects, "datasets": datasets, "jobs": jobs})
    }

    /// Adds a user (or changes a password).
    pub fn add_user(&self, login: &str, password: &str) {
        self.shared
            .lock()
            .tokens
            .add_user(login.to_owned(), Secret::new(password));
    }

    /// Expires every access token now (the next call gets 401); refresh tokens too when
    /// `refresh` is set (the client must log in again).
    pub fn expire_tokens(&self, refresh: bool) {
        self.shared.lock().tokens.expire(refresh);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.faults.clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults.faults = faults;
    }

    /// Removes every fault and canned answer.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.faults = Faults::default();
        state.faults.raw.clear();
    }

    /// Answers the next `n` requests to `endpoints` (all when empty) with `status`.
    pub fn fail_next(&self, n: u32, status: u16, endpoints: &[Endpoint]) {
        let mut state = self.shared.lock();
        let f = &mut state.faults.faults;
        f.fail_next = n;
        f.error_status = status;
        f.endpoints = endpoints.to_vec();
    }

    /// Answers a share (0 to 1) of requests to `endpoints` (all when empty) with `status`.
    pub fn set_error_share(&self, share: f64, status: u16, endpoints: &[Endpoint]) {
        let mut state = self.shared.lock();
        let f = &mut state.faults.faults;
        f.error_share = share.clamp(0.0, 1.0);
        f.error_status = status;
        f.endpoints = endpoints.to_vec();
    }

    /// Delays every answer of `endpoints` (all when empty).
    pub fn set_delay(&self, delay: Duration, endpoints: &[Endpoint]) {
        let mut state = self.shared.lock();
        let f = &mut state.faults.faults;
        f.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        f.endpoints = endpoints.to_vec();
    }

    /// Makes the next `count` project listings fail half-way (`u32::MAX`: all of them).
    pub fn fail_listings(&self, how: ListingFailure, count: u32) {
        self.fail_answers(&[Endpoint::ListProjects], how, count);
    }

    /// Makes the next `count` successful answers of `endpoints` (GET endpoints, such as
    /// [`Endpoint::ListJobs`] or [`Endpoint::JobDatastore`]) fail half-way.
    pub fn fail_answers(&self, endpoints: &[Endpoint], how: ListingFailure, count: u32) {
        let mut state = self.shared.lock();
        let f = &mut state.faults.faults;
        f.listing_failure = Some(how);
        f.listing_failures = count;
        f.listing_endpoints = endpoints.to_vec();
    }

    /// Serves `body` with `status` for GETs of `path` (without the `/SMRTLink/x.y.z` prefix),
    /// after the token check, instead of the real answer: for odd JSON.
    pub fn set_raw_answer(&self, path: &str, status: u16, body: &str) {
        self.shared.lock().faults.raw.insert(
            path.to_owned(),
            RawAnswer {
                path: path.to_owned(),
                status,
                body: body.to_owned(),
            },
        );
    }

    /// Removes every canned answer.
    pub fn clear_raw_answers(&self) {
        self.shared.lock().faults.raw.clear();
    }

    /// What the stand-in has seen.
    pub fn counters(&self) -> Counters {
        self.shared.lock().faults.counters.clone()
    }

    /// Requests seen at one endpoint.
    pub fn count(&self, endpoint: Endpoint) -> u64 {
        self.shared.lock().faults.counters.get(endpoint)
    }

    /// Zeroes the counters.
    pub fn reset_counters(&self) {
        self.shared.lock().faults.counters = Counters::default();
    }
}
