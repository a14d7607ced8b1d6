//! The stand-in's data: projects, dataset records and their moves, as SMRT Link keeps them.
//!
//! A project lists its datasets explicitly (children of a listed parent are recorded in the
//! General Project without being listed there, as in the fixtures). A dataset is listed by one
//! project at a time: placing it in another project takes it out of the first ("dataset
//! stealing"), and a dataset dropped from a project returns to the General Project.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::StandInError;
use smrtshare_smrtlink::model::{GENERAL_PROJECT_ID, Member, Role};

/// Fields of a dataset that SMRT Link includes in a project's `datasets` (its common dataset
/// metadata); the rest of the record comes only with a dataset look-up.
const META_FIELDS: &[&str] = &[
    "comments",
    "createdAt",
    "createdBy",
    "id",
    "importedAt",
    "isActive",
    "jobId",
    "md5",
    "name",
    "numChildren",
    "numRecords",
    "numResources",
    "parentUuid",
    "path",
    "projectId",
    "tags",
    "totalLength",
    "updatedAt",
    "uuid",
    "version",
];

/// A time in SMRT Link's timestamp format (`2024-03-11T20:16:38.435Z`).
pub(crate) fn format_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Now, in SMRT Link's timestamp format.
pub(crate) fn now() -> String {
    format_time(chrono::Utc::now())
}

/// One project.
#[derive(Clone, Debug)]
pub(crate) struct ProjectRec {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) state: String,
    pub(crate) is_active: bool,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) grant_role_to_all: Option<String>,
    pub(crate) members: Vec<Member>,
    pub(crate) datasets: Vec<Uuid>,
    /// Fields of the seed record the stand-in does not manage, served back as they were.
    pub(crate) extra: Map<String, Value>,
}

impl ProjectRec {
    /// A new, empty project.
    pub(crate) fn new(id: i64, name: String) -> Self {
        let at = now();
        Self {
            id,
            name,
            description: String::new(),
            state: "CREATED".into(),
            is_active: true,
            created_at: at.clone(),
            updated_at: at,
            grant_role_to_all: None,
            members: Vec::new(),
            datasets: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// What a new project holds.
#[derive(Clone, Debug, Default)]
pub struct NewProject {
    /// Name (required, unique among active projects).
    pub name: String,
    /// Description.
    pub description: String,
    /// Members.
    pub members: Vec<Member>,
    /// Datasets, by UUID; each moves here from wherever it was listed.
    pub datasets: Vec<Uuid>,
}

/// A change to a project; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProjectPatch {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) is_active: Option<bool>,
    pub(crate) members: Option<Vec<Member>>,
    pub(crate) datasets: Option<Vec<Uuid>>,
}

/// Projects and datasets.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) projects: BTreeMap<i64, ProjectRec>,
    /// Full dataset records by UUID.
    pub(crate) datasets: BTreeMap<Uuid, Map<String, Value>>,
    pub(crate) dataset_ids: HashMap<i64, Uuid>,
    pub(crate) next_project_id: i64,
    pub(crate) next_dataset_id: i64,
}

impl Store {
    /// An empty store holding only the General Project.
    pub(crate) fn new() -> Self {
        let mut store = Self {
            next_project_id: GENERAL_PROJECT_ID + 1,
            next_dataset_id: 1,
            ..Self::default()
        };
        store.ensure_general_project();
        store
    }

    pub(crate) fn ensure_general_project(&mut self) {
        self.projects.entry(GENERAL_PROJECT_ID).or_insert_with(|| {
            let mut p = ProjectRec::new(GENERAL_PROJECT_ID, "General Project".into());
            p.description = "General SMRT Link project. By default all imported datasets and \
                             analysis jobs will be assigned to this project"
                .into();
            p.grant_role_to_all = Some("CAN_VIEW".into());
            p.members.push(Member::new("admin", Role::Owner));
            p
        });
    }

    /// Adds a dataset record (seed or import). The record must carry an integer `id` and a
    /// `uuid`; both must be new.
    pub(crate) fn insert_dataset(
        &mut self,
        record: Map<String, Value>,
    ) -> Result<Uuid, StandInError> {
        let uuid = record
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                StandInError::Invalid("dataset record: uuid missing or not a UUID".into())
            })?;
        let id = record.get("id").and_then(Value::as_i64).ok_or_else(|| {
            StandInError::Invalid(format!("dataset {uuid}: id missing or not an integer"))
        })?;
        if self.datasets.contains_key(&uuid) {
            return Err(StandInError::Conflict(format!(
                "dataset {uuid} already exists"
            )));
        }
        if let Some(other) = self.dataset_ids.get(&id) {
            return Err(StandInError::Conflict(format!(
                "dataset id {id} is already dataset {other}"
            )));
        }
        self.dataset_ids.insert(id, uuid);
        self.next_dataset_id = self.next_dataset_id.max(id + 1);
        self.datasets.insert(uuid, record);
        Ok(uuid)
    }

    /// A dataset by UUID or integer id, as text.
    pub(crate) fn find_dataset(&self, key: &str) -> Option<Uuid> {
        if let Ok(uuid) = Uuid::parse_str(key) {
            return self.datasets.contains_key(&uuid).then_some(uuid);
        }
        key.parse::<i64>()
            .ok()
            .and_then(|id| self.dataset_ids.get(&id).copied())
    }

    pub(crate) fn project(&self, id: i64) -> Result<&ProjectRec, StandInError> {
        self.projects
            .get(&id)
            .ok_or_else(|| StandInError::NotFound(format!("Unable to find project {id}")))
    }

    fn check_dataset(&self, uuid: Uuid) -> Result<(), StandInError> {
        if self.datasets.contains_key(&uuid) {
            Ok(())
        } else {
            Err(StandInError::NotFound(format!(
                "Unable to find dataset {uuid}"
            )))
        }
    }

    fn touch(&mut self, id: i64, at: &str) {
        if let Some(p) = self.projects.get_mut(&id) {
            p.updated_at = at.to_owned();
            if p.state == "CREATED" {
                p.state = "UPDATED".into();
            }
        }
    }

    /// Lists `uuid` in project `to` and nowhere else; its record moves to `to`. Every project
    /// that changes is touched.
    fn place_dataset(&mut self, uuid: Uuid, to: i64, at: &str) {
        let mut changed = Vec::new();
        for p in self.projects.values_mut() {
            if p.id != to && p.datasets.contains(&uuid) {
                p.datasets.retain(|d| *d != uuid);
                changed.push(p.id);
            }
        }
        if let Some(p) = self.projects.get_mut(&to)
            && !p.datasets.contains(&uuid)
        {
            p.datasets.push(uuid);
            changed.push(to);
        }
        if let Some(record) = self.datasets.get_mut(&uuid)
            && record.get("projectId").and_then(Value::as_i64) != Some(to)
        {
            record.insert("projectId".into(), json!(to));
            record.insert("updatedAt".into(), json!(at));
        }
        for id in changed {
            self.touch(id, at);
        }
    }

    fn check_name(&self, name: &str, except: Option<i64>) -> Result<(), StandInError> {
        if name.trim().is_empty() {
            return Err(StandInError::Invalid(
                "Project name must not be empty".into(),
            ));
        }
        let taken = self
            .projects
            .values()
            .any(|p| p.is_active && Some(p.id) != except && p.name == name);
        if taken {
            return Err(StandInError::Conflict(format!(
                "Project with name '{name}' already exists"
            )));
        }
        Ok(())
    }

    /// Creates a project; answers its id.
    pub(crate) fn create_project(&mut self, new: NewProject) -> Result<i64, StandInError> {
        self.check_name(&new.name, None)?;
        for uuid in &new.datasets {
            self.check_dataset(*uuid)?;
        }
        let id = self.next_project_id;
        self.next_project_id += 1;
        let mut project = ProjectRec::new(id, new.name);
        project.description = new.description;
        project.members = dedup_members(new.members);
        let at = project.updated_at.clone();
        self.projects.insert(id, project);
        for uuid in new.datasets {
            self.place_dataset(uuid, id, &at);
        }
        Ok(id)
    }

    /// Changes a project. `protect_general` refuses any change to the General Project (as the
    /// web API does); the admin API may still list datasets there.
    pub(crate) fn update_project(
        &mut self,
        id: i64,
        patch: ProjectPatch,
        protect_general: bool,
    ) -> Result<(), StandInError> {
        self.project(id)?;
        if id == GENERAL_PROJECT_ID
            && (protect_general || patch.name.is_some() || patch.is_active == Some(false))
        {
            return Err(StandInError::Forbidden(
                "The General Project cannot be modified".into(),
            ));
        }
        if let Some(name) = &patch.name {
            self.check_name(name, Some(id))?;
        }
        if let Some(datasets) = &patch.datasets {
            for uuid in datasets {
                self.check_dataset(*uuid)?;
            }
        }
        let at = now();
        {
            let Some(p) = self.projects.get_mut(&id) else {
                return Err(StandInError::NotFound(format!(
                    "Unable to find project {id}"
                )));
            };
            if let Some(name) = patch.name {
                p.name = name;
            }
            if let Some(description) = patch.description {
                p.description = description;
            }
            if let Some(active) = patch.is_active {
                p.is_active = active;
                if !active {
                    p.state = "DELETED".into();
                }
            }
            if let Some(members) = patch.members {
                p.members = dedup_members(members);
            }
        }
        if let Some(datasets) = patch.datasets {
            let old = self.project(id)?.datasets.clone();
            for uuid in old.iter().filter(|u| !datasets.contains(u)) {
                self.place_dataset(*uuid, GENERAL_PROJECT_ID, &at);
            }
            for uuid in datasets {
                self.place_dataset(uuid, id, &at);
            }
        }
        self.touch(id, &at);
        Ok(())
    }

    /// Deletes a project: it disappears, and its datasets return to the General Project.
    pub(crate) fn delete_project(&mut self, id: i64) -> Result<(), StandInError> {
        if id == GENERAL_PROJECT_ID {
            return Err(StandInError::Forbidden(
                "The General Project cannot be deleted".into(),
            ));
        }
        let project = self
            .projects
            .remove(&id)
            .ok_or_else(|| StandInError::NotFound(format!("Unable to find project {id}")))?;
        let at = now();
        for uuid in project.datasets {
            self.place_dataset(uuid, GENERAL_PROJECT_ID, &at);
        }
        Ok(())
    }

    /// Adds or changes one member.
    pub(crate) fn set_member(&mut self, id: i64, member: Member) -> Result<(), StandInError> {
        let mut members = self.project(id)?.members.clone();
        match members.iter_mut().find(|m| m.login == member.login) {
            Some(existing) => existing.role = member.role,
            None => members.push(member),
        }
        self.update_project(
            id,
            ProjectPatch {
                members: Some(members),
                ..ProjectPatch::default()
            },
            false,
        )
    }

    /// Removes one member.
    pub(crate) fn remove_member(&mut self, id: i64, login: &str) -> Result<(), StandInError> {
        let mut members = self.project(id)?.members.clone();
        let before = members.len();
        members.retain(|m| m.login != login);
        if members.len() == before {
            return Err(StandInError::NotFound(format!(
                "{login} is not a member of project {id}"
            )));
        }
        self.update_project(
            id,
            ProjectPatch {
                members: Some(members),
                ..ProjectPatch::default()
            },
            false,
        )
    }

    /// Lists a dataset in a project, taking it from wherever it was.
    pub(crate) fn add_dataset(&mut self, id: i64, uuid: Uuid) -> Result<(), StandInError> {
        self.project(id)?;
        self.check_dataset(uuid)?;
        let at = now();
        self.place_dataset(uuid, id, &at);
        Ok(())
    }

    /// Takes a dataset out of a project; it returns to the General Project.
    pub(crate) fn remove_dataset(&mut self, id: i64, uuid: Uuid) -> Result<(), StandInError> {
        if !self.project(id)?.datasets.contains(&uuid) {
            return Err(StandInError::NotFound(format!(
                "dataset {uuid} is not in project {id}"
            )));
        }
        if id == GENERAL_PROJECT_ID {
            return Err(StandInError::Forbidden(
                "a dataset leaves the General Project only by moving to another project".into(),
            ));
        }
        let at = now();
        self.place_dataset(uuid, GENERAL_PROJECT_ID, &at);
        Ok(())
    }

    /// A list item: no members, no datasets.
    pub(crate) fn summary_json(p: &ProjectRec) -> Value {
        let mut obj = p.extra.clone();
        obj.insert("id".into(), json!(p.id));
        obj.insert("name".into(), json!(p.name));
        obj.insert("description".into(), json!(p.description));
        obj.insert("state".into(), json!(p.state));
        obj.insert("isActive".into(), json!(p.is_active));
        obj.insert("createdAt".into(), json!(p.created_at));
        obj.insert("updatedAt".into(), json!(p.updated_at));
        if let Some(role) = &p.grant_role_to_all {
            obj.insert("grantRoleToAll".into(), json!(role));
        }
        Value::Object(obj)
    }

    /// The full project: members and the listed datasets' common metadata.
    pub(crate) fn detail_json(&self, p: &ProjectRec) -> Value {
        let mut value = Self::summary_json(p);
        let members: Vec<Value> = p
            .members
            .iter()
            .map(|m| json!({"login": m.login, "role": m.role.as_str()}))
            .collect();
        let datasets: Vec<Value> = p
            .datasets
            .iter()
            .filter_map(|u| self.datasets.get(u))
            .map(|record| Value::Object(meta(record)))
            .collect();
        if let Some(obj) = value.as_object_mut() {
            obj.insert("members".into(), Value::Array(members));
            obj.insert("datasets".into(), Value::Array(datasets));
        }
        value
    }
}

/// A dataset record reduced to what a project answer carries.
pub(crate) fn meta(record: &Map<String, Value>) -> Map<String, Value> {
    record
        .iter()
        .filter(|(k, _)| META_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One entry per login (the last role given wins), order kept.
fn dedup_members(members: Vec<Member>) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::with_capacity(members.len());
    for m in members {
        match out.iter_mut().find(|o| o.login == m.login) {
            Some(existing) => existing.role = m.role,
            None => out.push(m),
        }
    }
    out
}
