//! Seeding from a directory in the fixtures' format:
//!
//! - `projects.json`: a list of full project records (as `GET /smrt-link/projects/{id}`
//!   answers), members and datasets included;
//! - `datasets.json`: full dataset records keyed by UUID (children included);
//! - `analysis_jobs.json` (optional): a list of job records, each may carry `entryPoints` and
//!   `datastore` lists, and a `standinSchedule` (the states it enters later; see
//!   [`super::schedule`]: relative steps count from the moment the stand-in loads the seed).
//!   These three keys are taken out of the record; the rest is served as it is.
//!
//! Every `path` (datasets, jobs, datastore files) that starts with a rewrite's `FROM` has it
//! replaced by `TO`, so fixtures recorded on another machine point at a local copy.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context as _;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::jobs::{JobRec, Jobs};
use super::schedule;
use super::store::{ProjectRec, Store};
use smrtshare_smrtlink::model::read::Reader;
use smrtshare_smrtlink::model::{GENERAL_PROJECT_ID, JobState, Member, Role};

/// `FROM=TO`: a path prefix replaced when seeding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRewrite {
    /// Prefix as recorded.
    pub from: String,
    /// Replacement.
    pub to: String,
}

impl FromStr for PathRewrite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (from, to) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not FROM=TO"))?;
        if from.is_empty() {
            return Err(format!("{s:?}: FROM is empty"));
        }
        Ok(Self {
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }
}

/// Where to seed from.
#[derive(Clone, Debug)]
pub struct Seed {
    /// Directory holding `projects.json` and `datasets.json`.
    pub dir: PathBuf,
    /// Path prefixes to rewrite.
    pub rewrites: Vec<PathRewrite>,
}

impl Seed {
    /// Seeds from `dir` with no rewrite.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            rewrites: Vec::new(),
        }
    }

    /// Adds a rewrite of `from` to `to`.
    pub fn rewrite(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.rewrites.push(PathRewrite {
            from: from.into(),
            to: to.into(),
        });
        self
    }

    fn rewrite_path(&self, record: &mut Map<String, Value>) {
        let Some(Value::String(path)) = record.get_mut("path") else {
            return;
        };
        if let Some(rule) = self.rewrites.iter().find(|r| path.starts_with(&r.from)) {
            *path = format!("{}{}", rule.to, &path[rule.from.len()..]);
        }
    }

    /// Reads the directory into a store and jobs; job schedules count from `now`.
    pub(crate) fn load(&self, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<(Store, Jobs)> {
        let mut store = Store::new();
        store.projects.clear();
        let datasets = read_json(&self.dir.join("datasets.json"))?;
        let datasets = datasets
            .as_object()
            .context("datasets.json: expected an object keyed by dataset UUID")?;
        for (key, record) in datasets {
            let mut record = record
                .as_object()
                .with_context(|| format!("datasets.json: {key}: expected an object"))?
                .clone();
            record
                .entry("uuid")
                .or_insert_with(|| Value::String(key.clone()));
            if record.get("uuid").and_then(Value::as_str) != Some(key.as_str()) {
                anyhow::bail!("datasets.json: {key}: uuid differs from its key");
            }
            self.rewrite_path(&mut record);
            store
                .insert_dataset(record)
                .map_err(|e| anyhow::anyhow!("datasets.json: {key}: {e}"))?;
        }

        let projects = read_json(&self.dir.join("projects.json"))?;
        let projects = projects
            .as_array()
            .context("projects.json: expected a list of projects")?;
        for (i, value) in projects.iter().enumerate() {
            let project = self
                .read_project(&mut store, value, i)
                .with_context(|| format!("projects.json: projects[{i}]"))?;
            anyhow::ensure!(
                !store.projects.contains_key(&project.id),
                "projects.json: project {} appears twice",
                project.id
            );
            store.next_project_id = store.next_project_id.max(project.id + 1);
            store.projects.insert(project.id, project);
        }
        store.ensure_general_project();
        store.next_project_id = store.next_project_id.max(GENERAL_PROJECT_ID + 1);

        let mut jobs = Jobs::new();
        let jobs_file = self.dir.join("analysis_jobs.json");
        if jobs_file.is_file() {
            let list = read_json(&jobs_file)?;
            let list = list
                .as_array()
                .context("analysis_jobs.json: expected a list of jobs")?;
            for (i, job) in list.iter().enumerate() {
                let rec = self
                    .read_job(job, now)
                    .with_context(|| format!("analysis_jobs.json: jobs[{i}]"))?;
                jobs.insert(rec)
                    .map_err(|e| anyhow::anyhow!("analysis_jobs.json: jobs[{i}]: {e}"))?;
            }
        }
        Ok((store, jobs))
    }

    fn read_project(
        &self,
        store: &mut Store,
        value: &Value,
        i: usize,
    ) -> anyhow::Result<ProjectRec> {
        let r = Reader::new(value, format!("projects[{i}]"))?;
        let id = r.req_i64("id")?;
        let mut project = ProjectRec::new(id, r.req_str("name")?);
        project.description = r.opt_str("description")?.unwrap_or_default();
        project.state = r.opt_str("state")?.unwrap_or_else(|| "CREATED".into());
        project.is_active = r.opt_bool("isActive")?.unwrap_or(true);
        if let Some(at) = r.opt_str("createdAt")? {
            project.created_at = at;
        }
        if let Some(at) = r.opt_str("updatedAt")? {
            project.updated_at = at;
        }
        project.grant_role_to_all = r.opt_str("grantRoleToAll")?;
        for (path, m) in r.req_array("members")? {
            let m = Reader::new(m, path)?;
            project.members.push(Member::new(
                m.req_str("login")?,
                Role::parse(&m.req_str("role")?),
            ));
        }
        for (path, d) in r.req_array("datasets")? {
            let embedded = d
                .as_object()
                .with_context(|| format!("{path}: expected an object"))?;
            let uuid = Reader::new(d, path.clone())?.req_uuid("uuid")?;
            let mut embedded = embedded.clone();
            self.rewrite_path(&mut embedded);
            match store.datasets.get_mut(&uuid) {
                // The full record wins; the project's copy fills in what it lacks.
                Some(record) => {
                    for (k, v) in embedded {
                        record.entry(k).or_insert(v);
                    }
                    record.insert("projectId".into(), Value::from(id));
                }
                None => {
                    embedded.insert("projectId".into(), Value::from(id));
                    store
                        .insert_dataset(embedded)
                        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
                }
            }
            anyhow::ensure!(
                !store.projects.values().any(|p| p.datasets.contains(&uuid)),
                "{path}: dataset {uuid} is listed by two projects"
            );
            project.datasets.push(uuid);
        }
        project.extra = r.extra(&[
            "id",
            "name",
            "description",
            "state",
            "isActive",
            "createdAt",
            "updatedAt",
            "grantRoleToAll",
            "members",
            "datasets",
        ]);
        Ok(project)
    }

    fn read_job(
        &self,
        value: &Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<JobRec> {
        let mut record = value.as_object().context("expected an object")?.clone();
        let list = |record: &mut Map<String, Value>, key: &str| -> anyhow::Result<Vec<Value>> {
            match record.remove(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => Ok(items),
                Some(_) => anyhow::bail!("{key}: expected a list"),
            }
        };
        let entry_points = list(&mut record, "entryPoints")?;
        let mut datastore = list(&mut record, "datastore")?;
        self.rewrite_path(&mut record);
        for file in &mut datastore {
            if let Some(obj) = file.as_object_mut() {
                self.rewrite_path(obj);
            }
        }
        if let Some(uuid) = record.get("uuid").and_then(Value::as_str) {
            Uuid::parse_str(uuid).with_context(|| format!("uuid {uuid:?} is not a UUID"))?;
        }
        let schedule = match record.remove("standinSchedule") {
            None | Some(Value::Null) => Vec::new(),
            Some(steps) => {
                let steps = schedule::parse(&steps, "standinSchedule")?;
                let state = record
                    .get("state")
                    .and_then(Value::as_str)
                    .and_then(JobState::parse)
                    .context("state: a job with a standinSchedule needs a known state")?;
                schedule::resolve(&steps, state, now, "standinSchedule")?
            }
        };
        let mut job = JobRec {
            record,
            entry_points,
            datastore,
            schedule,
        };
        job.settle(now);
        Ok(job)
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
