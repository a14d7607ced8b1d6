//! Domain types: what a request asks for, what was done, and what is recorded. Wire types become
//! these once, in [`crate::service`]; nothing below the handler sees an `Option`-wrapped field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::fault::Fault;

/// A SMRT Link project id that may be staged (greater than 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectId(i64);

impl ProjectId {
    /// Checks that `id` names a project that may be staged.
    pub fn new(id: i64) -> Result<Self, String> {
        match id {
            1 => Err("project 1 (the General Project) is never staged".to_owned()),
            id if id < 1 => Err(format!(
                "must be a SMRT Link project id greater than 1, got {id}"
            )),
            id => Ok(Self(id)),
        }
    }

    /// The id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A SMRT Link analysis job id (greater than 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(i64);

impl JobId {
    /// Checks that `id` can be a SMRT Link job id.
    pub fn new(id: i64) -> Result<Self, String> {
        if id < 1 {
            return Err(format!(
                "must be a SMRT Link job id greater than 0, got {id}"
            ));
        }
        Ok(Self(id))
    }

    /// The id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a directory in a project directory holds: a dataset, or an analysis job's outputs.
/// Both follow one set of rules (hard links only, built in the work area, renamed, taken from
/// another project, removed without touching what others added, recorded and rebuilt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemId {
    /// A dataset, by its SMRT Link UUID.
    Dataset(Uuid),
    /// An analysis job's outputs, by the job's id.
    Job(JobId),
}

impl ItemId {
    /// The dataset's UUID, for a dataset.
    pub fn uuid(self) -> Option<Uuid> {
        match self {
            Self::Dataset(uuid) => Some(uuid),
            Self::Job(_) => None,
        }
    }

    /// The job's id, for an analysis job.
    pub fn job(self) -> Option<JobId> {
        match self {
            Self::Job(id) => Some(id),
            Self::Dataset(_) => None,
        }
    }

    /// How work items made for it are named in the work area.
    pub fn work_tag(self) -> String {
        match self {
            Self::Dataset(uuid) => uuid.to_string(),
            Self::Job(id) => format!("job-{id}"),
        }
    }

    /// A key for names made unique ([`crate::names::disambiguate`]).
    pub fn key(self) -> String {
        match self {
            Self::Dataset(uuid) => uuid.to_string(),
            Self::Job(id) => format!("job {id}"),
        }
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dataset(uuid) => write!(f, "dataset {uuid}"),
            Self::Job(id) => write!(f, "analysis job {id}"),
        }
    }
}

/// What kind of dataset directory: a plain one (files directly inside) or a demultiplexed parent
/// (one sub-directory per child plus the supplemental run data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Files directly inside.
    Plain,
    /// Children and supplemental data in sub-directories.
    Parent,
}

impl Kind {
    /// The name stored in records and markers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Parent => "parent",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "plain" => Some(Self::Plain),
            "parent" => Some(Self::Parent),
            _ => None,
        }
    }
}

/// One dataset the project should hold, as the coordinator sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetSpec {
    /// SMRT Link UUID.
    pub uuid: Uuid,
    /// SMRT Link name (naming only).
    pub name: String,
    /// Absolute path of the dataset XML.
    pub xml_path: PathBuf,
    /// Parent UUID for a demultiplexed child.
    pub parent: Option<Uuid>,
    /// Number of children SMRT Link reports.
    pub num_children: u32,
}

/// One output file of an analysis job, as SMRT Link's datastore lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFile {
    /// Absolute path.
    pub path: PathBuf,
    /// SMRT Link's file type (`PacBio.FileTypes.bam`, `PacBio.DataSet.AlignmentSet`, ...).
    pub file_type: String,
    /// The task output it came from.
    pub source_id: String,
}

/// A finished analysis job the project should hold the outputs of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// SMRT Link's job id.
    pub id: JobId,
    /// Its name in SMRT Link (naming only).
    pub name: String,
    /// Its output files.
    pub files: Vec<JobFile>,
}

/// The full desired state of one project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyRequest {
    /// The project.
    pub project: ProjectId,
    /// Its directory name under the root (a single safe component).
    pub directory: String,
    /// Every dataset it should hold, in request order.
    pub datasets: Vec<DatasetSpec>,
    /// Every analysis job whose outputs it should hold, in request order.
    pub jobs: Vec<JobSpec>,
    /// Plan only.
    pub dry_run: bool,
}

/// What kind of filesystem change an action is (mirrors the wire enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    /// A directory is created.
    CreateDirectory,
    /// A source file is hard-linked.
    LinkFile,
    /// A staged file is unlinked.
    UnlinkFile,
    /// A directory smrtshare created is removed.
    RemoveDirectory,
    /// The project directory is renamed.
    RenameProjectDirectory,
    /// A dataset directory moves here from another project.
    MoveDatasetDirectory,
    /// A dataset directory is renamed inside the project.
    RenameDatasetDirectory,
    /// A directory built in the work area is renamed into place.
    PublishDirectory,
    /// A directory's mode is set back to the configured one.
    SetMode,
    /// A directory is kept because it holds files smrtshare did not stage.
    KeepForeign,
    /// A directory's smrtshare marker is written or corrected.
    MarkDirectory,
}

/// What became of an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Dry run: it would be done.
    Planned,
    /// Done.
    Done,
    /// Failed, with the reason.
    Failed(Fault),
    /// Not attempted because an earlier action it depends on failed.
    Skipped(String),
}

/// One filesystem change, planned or made. Paths are relative to the collection root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// What.
    pub kind: ActionKind,
    /// The path acted on (the new path for renames and moves).
    pub path: String,
    /// The old path for renames, moves and publishes.
    pub from_path: String,
    /// The source of a link.
    pub source: String,
    /// The dataset or analysis job it belongs to.
    pub item: Option<ItemId>,
    /// What became of it.
    pub outcome: Outcome,
}

/// The state of one requested dataset after an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetState {
    /// Everything was in place.
    Unchanged,
    /// Its directory was created.
    Staged,
    /// Its directory existed and was brought up to date.
    Updated,
    /// It could not be staged; the reason names the XML or file.
    Failed(Fault),
    /// A child staged inside its parent's directory.
    InParent,
}

/// Per-item outcome of an apply (a dataset's, or an analysis job's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemResult {
    /// The dataset or job.
    pub item: ItemId,
    /// Its directory relative to the root (empty when it failed before one was named).
    pub path: String,
    /// What became of it.
    pub state: DatasetState,
    /// Files staged for it.
    pub file_count: u32,
    /// Files left out by the rules (an analysis job's dataset XMLs and internal files).
    pub skipped: u32,
    /// Files of an analysis job that could not be staged (the job's other files are): they fail
    /// the job once its directory is done ([`ItemResult::settle`]).
    pub file_faults: Vec<Fault>,
}

impl ItemResult {
    /// A result not yet known (unchanged until something happens).
    pub fn new(item: ItemId) -> Self {
        Self {
            item,
            path: String::new(),
            state: DatasetState::Unchanged,
            file_count: 0,
            skipped: 0,
            file_faults: Vec::new(),
        }
    }

    /// Folds the failures of single files into the state: failed, naming each (with the item's
    /// own failure, if any).
    pub fn settle(&mut self) {
        if self.file_faults.is_empty() {
            return;
        }
        let mut all = crate::fault::Faults::default();
        if let DatasetState::Failed(own) = &self.state {
            all.push(own.clone());
        }
        for fault in self.file_faults.drain(..) {
            all.push(fault);
        }
        if let Some(fault) = all.combined() {
            self.state = DatasetState::Failed(fault);
        }
    }
}

/// The answer to an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    /// The project.
    pub project: ProjectId,
    /// Its directory.
    pub directory: String,
    /// Dry run.
    pub dry_run: bool,
    /// Every action in order.
    pub actions: Vec<Action>,
    /// One result per requested dataset, in request order, then one per requested analysis
    /// job, in request order.
    pub results: Vec<ItemResult>,
    /// Mutating filesystem calls made (0 for a dry run or when everything was in place).
    pub mutating_calls: u64,
}

impl ApplyReport {
    /// True when every dataset is staged and every action succeeded.
    pub fn complete(&self) -> bool {
        self.results
            .iter()
            .all(|d| !matches!(d.state, DatasetState::Failed(_)))
            && self
                .actions
                .iter()
                .all(|a| matches!(a.outcome, Outcome::Planned | Outcome::Done))
    }
}

/// The answer to a removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveReport {
    /// The project.
    pub project: ProjectId,
    /// Dry run.
    pub dry_run: bool,
    /// Every action in order.
    pub actions: Vec<Action>,
    /// True when no records of the project remain.
    pub removed: bool,
    /// Files smrtshare did not stage that were left in place (the first ones).
    pub foreign_paths: Vec<String>,
    /// How many there are, listed or not.
    pub foreign_total: u64,
    /// Mutating filesystem calls made.
    pub mutating_calls: u64,
}

/// A staged file's identity: the source it is a hard link to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// Canonical path of the source.
    pub source: String,
    /// Device of the source (and so of the link).
    pub dev: u64,
    /// Inode of the source (and so of the link).
    pub ino: u64,
    /// Size when staged.
    pub size: u64,
}

/// One entry smrtshare made inside a dataset directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryRecord {
    /// A sub-directory (a child's or the supplemental data's).
    Dir,
    /// A hard link.
    File(FileRecord),
}

/// Where a staged directory's files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemSource {
    /// A dataset XML.
    Dataset {
        /// The dataset XML as SMRT Link reports it.
        xml_path: String,
        /// Plain or parent.
        kind: Kind,
    },
    /// An analysis job's datastore (the file list comes with every request).
    Job,
}

/// A dataset directory, or an analysis job's, that smrtshare staged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRecord {
    /// The dataset or job.
    pub item: ItemId,
    /// Directory name inside the project directory.
    pub directory: String,
    /// Where its files come from.
    pub source: ItemSource,
    /// Entries by path relative to the dataset directory ('/'-separated); parents before children
    /// in this order. Shared: an apply that changes nothing hands the same map back.
    pub entries: Arc<BTreeMap<String, EntryRecord>>,
}

impl ItemRecord {
    /// Number of staged files.
    pub fn file_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e, EntryRecord::File(_)))
            .count()
    }
}

/// A project smrtshare staged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    /// The project.
    pub id: ProjectId,
    /// Its directory under the root.
    pub directory: String,
    /// When it last changed (ms since the epoch).
    pub updated_at: i64,
    /// Its dataset and analysis job directories.
    pub items: BTreeMap<ItemId, ItemRecord>,
}

impl ProjectRecord {
    /// Number of staged files.
    pub fn file_count(&self) -> usize {
        self.items.values().map(ItemRecord::file_count).sum()
    }

    /// The UUIDs of its datasets, sorted.
    pub fn dataset_uuids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.items.keys().filter_map(|i| i.uuid())
    }

    /// The ids of its analysis jobs, sorted.
    pub fn job_ids(&self) -> impl Iterator<Item = JobId> + '_ {
        self.items.keys().filter_map(|i| i.job())
    }
}

/// What kind of difference between records and tree was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftKind {
    /// A recorded entry is not on disk.
    Missing,
    /// A recorded file is no longer a hard link to its source.
    NotLinked,
    /// A recorded path is a symbolic link or another kind of file.
    WrongType,
    /// A directory's mode differs from the configured one.
    WrongMode,
    /// An entry smrtshare did not stage.
    Foreign,
}

/// One difference between the records and the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// What kind.
    pub kind: DriftKind,
    /// Path relative to the root.
    pub path: String,
    /// Expected and found.
    pub detail: String,
}

/// Joins '/'-separated relative path parts, skipping empty ones.
pub fn join(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_below_two_are_refused_with_a_reason() {
        assert!(ProjectId::new(1).unwrap_err().contains("General Project"));
        assert!(ProjectId::new(0).unwrap_err().contains("greater than 1"));
        assert!(ProjectId::new(-5).unwrap_err().contains("-5"));
        assert_eq!(ProjectId::new(2).unwrap().get(), 2);
    }

    #[test]
    fn join_skips_empty_parts() {
        assert_eq!(join(&["a", "", "b/c"]), "a/b/c");
        assert_eq!(join(&["", ""]), "");
    }
}
