//! SMRT Link's JSON, as typed values.
//!
//! Reading is tolerant of fields we do not know (they are kept in `extra`) and strict about the
//! ones we use: a missing id, a non-numeric id, a field of the wrong type or a UUID that is not
//! one is a [`FieldError`] naming the field (`project.datasets[0].uuid: not a UUID ("x")`), which
//! the client reports as [`crate::Error::Protocol`] together with the endpoint. JSON `null` counts
//! as absent. Every type serialises back to SMRT Link's camelCase shape, and `from_json` reads
//! that shape again, so the values can be stored and reloaded.

mod jobs;
pub mod read;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use jobs::{
    AnalysisJob, AnalysisJobRequest, DataStoreFile, EntryPoint, EntryPointRequest, JobPhase,
    JobState,
};
pub use read::FieldError;

use read::Reader;

/// Id of SMRT Link's "General Project": visible to all users, never staged, never shared, and
/// never modified or deleted.
pub const GENERAL_PROJECT_ID: i64 = 1;

/// A project member's role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `OWNER`: the project's owner. Owners are not shared with (they have SMRT Link itself).
    Owner,
    /// `CAN_EDIT`.
    CanEdit,
    /// `CAN_VIEW`.
    CanView,
    /// A role this library does not know, kept verbatim.
    Other(String),
}

impl Role {
    /// Reads SMRT Link's spelling (`OWNER`, `CAN_EDIT`, `CAN_VIEW`, in any case; anything else
    /// is kept verbatim).
    pub fn parse(text: &str) -> Self {
        [Self::Owner, Self::CanEdit, Self::CanView]
            .into_iter()
            .find(|known| text.eq_ignore_ascii_case(known.as_str()))
            .unwrap_or_else(|| Self::Other(text.to_owned()))
    }

    /// SMRT Link's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Owner => "OWNER",
            Self::CanEdit => "CAN_EDIT",
            Self::CanView => "CAN_VIEW",
            Self::Other(other) => other,
        }
    }

    /// Whether smrtshare shares the project with a member of this role: the known roles that
    /// let a member read (`CAN_EDIT`, `CAN_VIEW`). `OWNER` is the core's own login, and a role
    /// SMRT Link may add later is not assumed to grant anything.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::CanEdit | Self::CanView)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A project member: a SMRT Link login and its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// SMRT Link login.
    pub login: String,
    /// Role in the project.
    pub role: Role,
}

impl Member {
    /// A member.
    pub fn new(login: impl Into<String>, role: Role) -> Self {
        Self {
            login: login.into(),
            role,
        }
    }

    fn read(value: &Value, path: String) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        Ok(Self {
            login: r.req_str("login")?,
            role: Role::parse(&r.req_str("role")?),
        })
    }
}

/// A project as `GET /smrt-link/projects` lists it (no members, no datasets).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    /// Project id.
    pub id: i64,
    /// Project name.
    pub name: String,
    /// Description (empty when SMRT Link has none).
    pub description: String,
    /// SMRT Link's state string (`CREATED`, `UPDATED`, ...); empty when absent.
    pub state: String,
    /// Whether the project is active (inactive projects are soft-deleted).
    pub is_active: bool,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// A role granted to every SMRT Link user (the General Project has `CAN_VIEW`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_role_to_all: Option<Role>,
    /// Fields this library does not read, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

const SUMMARY_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "state",
    "isActive",
    "createdAt",
    "updatedAt",
    "grantRoleToAll",
];

impl ProjectSummary {
    /// Reads one project record; `path` names it in errors (`projects[3]`).
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        Self::read(&r, SUMMARY_FIELDS)
    }

    fn read(r: &Reader<'_>, known: &[&str]) -> Result<Self, FieldError> {
        Ok(Self {
            id: r.req_i64("id")?,
            name: r.req_str("name")?,
            description: r.opt_str("description")?.unwrap_or_default(),
            state: r.opt_str("state")?.unwrap_or_default(),
            is_active: r.req_bool("isActive")?,
            created_at: r.opt_time("createdAt")?,
            updated_at: r.opt_time("updatedAt")?,
            grant_role_to_all: r.opt_str("grantRoleToAll")?.map(|s| Role::parse(&s)),
            extra: r.extra(known),
        })
    }

    /// Whether this is the General Project (id 1).
    pub fn is_general(&self) -> bool {
        self.id == GENERAL_PROJECT_ID
    }
}

/// A project as `GET /smrt-link/projects/{id}` answers it: members and datasets included.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Project id.
    pub id: i64,
    /// Project name.
    pub name: String,
    /// Description (empty when SMRT Link has none).
    pub description: String,
    /// SMRT Link's state string; empty when absent.
    pub state: String,
    /// Whether the project is active (inactive projects are soft-deleted).
    pub is_active: bool,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// A role granted to every SMRT Link user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_role_to_all: Option<Role>,
    /// Members, in SMRT Link's order.
    pub members: Vec<Member>,
    /// Datasets SMRT Link lists in the project (children of a listed parent are not listed).
    pub datasets: Vec<Dataset>,
    /// Fields this library does not read, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Project {
    /// Reads one full project record; `path` names it in errors (`project`).
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        let mut known = SUMMARY_FIELDS.to_vec();
        known.extend(["members", "datasets"]);
        let summary = ProjectSummary::read(&r, &known)?;
        let members = r
            .req_array("members")?
            .into_iter()
            .map(|(p, v)| Member::read(v, p))
            .collect::<Result<Vec<_>, _>>()?;
        let datasets = r
            .req_array("datasets")?
            .into_iter()
            .map(|(p, v)| Dataset::from_json(v, &p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            id: summary.id,
            name: summary.name,
            description: summary.description,
            state: summary.state,
            is_active: summary.is_active,
            created_at: summary.created_at,
            updated_at: summary.updated_at,
            grant_role_to_all: summary.grant_role_to_all,
            members,
            datasets,
            extra: summary.extra,
        })
    }

    /// Whether this is the General Project (id 1).
    pub fn is_general(&self) -> bool {
        self.id == GENERAL_PROJECT_ID
    }

    /// The members smrtshare shares the project with: those whose role is `CAN_EDIT` or
    /// `CAN_VIEW` ([`Role::is_shared`]).
    pub fn shared_members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role.is_shared())
    }

    /// The dataset with this UUID, if the project lists it.
    pub fn dataset(&self, uuid: Uuid) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.uuid == uuid)
    }
}

/// A dataset record (in a project's `datasets`, or from a dataset look-up).
///
/// A project's `datasets` carry SMRT Link's common dataset fields only; the naming fields
/// (`dataset_type`, `metadata_context_id`, the sample and barcode names) come with a dataset
/// look-up ([`crate::SmrtLinkClient::get_dataset`]) and are `None` in project answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dataset {
    /// SMRT Link's integer id.
    pub id: i64,
    /// UUID (the dataset XML's `UniqueId`).
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// Absolute path of the dataset XML on SMRT Link's filesystem.
    pub path: String,
    /// Number of demultiplexed children; `> 0` for a parent (0 when SMRT Link omits it).
    pub num_children: u32,
    /// The parent's UUID, for a demultiplexed child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_uuid: Option<Uuid>,
    /// The project SMRT Link records the dataset in.
    pub project_id: i64,
    /// Whether the dataset is active (inactive datasets are soft-deleted).
    pub is_active: bool,
    /// MetaType, such as `PacBio.DataSet.ConsensusReadSet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_type: Option<String>,
    /// Movie id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_context_id: Option<String>,
    /// Well sample name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub well_sample_name: Option<String>,
    /// Bio sample name (`[multiple]` for a parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bio_sample_name: Option<String>,
    /// Barcode name (`[multiple]` for a parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dna_barcode_name: Option<String>,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Last update time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Fields this library does not read, as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

const DATASET_FIELDS: &[&str] = &[
    "id",
    "uuid",
    "name",
    "path",
    "numChildren",
    "parentUuid",
    "projectId",
    "isActive",
    "datasetType",
    "metadataContextId",
    "wellSampleName",
    "bioSampleName",
    "dnaBarcodeName",
    "createdAt",
    "updatedAt",
];

impl Dataset {
    /// Reads one dataset record; `path` names it in errors (`dataset`, `project.datasets[2]`).
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        let num_children = match r.opt_u64("numChildren")? {
            None => 0,
            Some(n) => u32::try_from(n).map_err(|_| FieldError {
                path: format!("{path}.numChildren"),
                problem: format!("{n} is out of range"),
            })?,
        };
        Ok(Self {
            id: r.req_i64("id")?,
            uuid: r.req_uuid("uuid")?,
            name: r.req_str("name")?,
            path: r.req_str("path")?,
            num_children,
            parent_uuid: r.opt_uuid("parentUuid")?,
            project_id: r.req_i64("projectId")?,
            is_active: r.req_bool("isActive")?,
            dataset_type: r.opt_str("datasetType")?,
            metadata_context_id: r.opt_str("metadataContextId")?,
            well_sample_name: r.opt_str("wellSampleName")?,
            bio_sample_name: r.opt_str("bioSampleName")?,
            dna_barcode_name: r.opt_str("dnaBarcodeName")?,
            created_at: r.opt_time("createdAt")?,
            updated_at: r.opt_time("updatedAt")?,
            extra: r.extra(DATASET_FIELDS),
        })
    }

    /// A demultiplexed parent (`numChildren > 0`).
    pub fn is_parent(&self) -> bool {
        self.num_children > 0
    }
}

/// The body of a project create (`POST /smrt-link/projects`) or update
/// (`PUT /smrt-link/projects/{id}`), as the SMRT Link web UI sends it. Absent fields are left
/// as they are by an update. smrtshare itself never writes to SMRT Link; this exists for tests
/// and tools acting as the web UI.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRequest {
    /// Name (required on create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The full member list (replaces the old one on update).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    /// The full dataset list, by SMRT Link dataset id (replaces the old one on update). A
    /// dataset of another project moves here; one dropped from the list returns to the
    /// General Project.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_dataset_ids"
    )]
    pub datasets: Option<Vec<i64>>,
}

fn serialize_dataset_ids<S: Serializer>(ids: &Option<Vec<i64>>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Id {
        id: i64,
    }
    let ids: Vec<Id> = ids.iter().flatten().map(|&id| Id { id }).collect();
    ids.serialize(s)
}

/// SMRT Link's `GET /status` answer (readiness of the server).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerStatus {
    /// Server version string.
    pub version: String,
    /// Status message.
    pub message: String,
    /// Every field, as it came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ServerStatus {
    /// Reads a status answer.
    pub fn from_json(value: &Value, path: &str) -> Result<Self, FieldError> {
        let r = Reader::new(value, path)?;
        Ok(Self {
            version: r.opt_str("version")?.unwrap_or_default(),
            message: r.opt_str("message")?.unwrap_or_default(),
            extra: r.extra(&["version", "message"]),
        })
    }
}
