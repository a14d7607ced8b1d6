//! Wire ⇄ domain. Requests become domain types once, here, with errors naming the field;
//! reports become wire messages.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use smrtshare_api::staging::v1 as pb;
use uuid::Uuid;

use crate::answer;
use crate::error::Error;
use crate::model::{
    Action, ActionKind, ApplyReport, ApplyRequest, DatasetSpec, DatasetState, Drift, DriftKind,
    EntryRecord, ItemId, ItemSource, JobFile, JobId, JobSpec, Outcome, ProjectId, ProjectRecord,
    RemoveReport, join,
};
use crate::names;

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field}: {why}"))
}

/// A project id field.
pub fn project_id(id: i64) -> Result<ProjectId, Error> {
    ProjectId::new(id).map_err(|e| invalid("project_id", e))
}

/// A UUID in canonical lower-case hyphenated form.
pub fn uuid(text: &str) -> Result<Uuid, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let uuid = Uuid::parse_str(text).map_err(|e| format!("{text:?} is not a UUID ({e})"))?;
    if uuid.hyphenated().to_string() != text {
        return Err(format!(
            "{text:?} is not in canonical lower-case 8-4-4-4-12 form (expected {uuid})"
        ));
    }
    Ok(uuid)
}

/// An absolute path naming a file.
fn file_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.contains('\0') {
        return Err("must not contain NUL".into());
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("{text:?} is not an absolute path"));
    }
    if !matches!(path.components().next_back(), Some(Component::Normal(_))) {
        return Err(format!("{text:?} does not name a file"));
    }
    Ok(path.to_path_buf())
}

impl TryFrom<pb::ApplyProjectRequest> for ApplyRequest {
    type Error = Error;

    fn try_from(request: pb::ApplyProjectRequest) -> Result<Self, Error> {
        let project = project_id(request.project_id)?;
        names::check_component(&request.directory).map_err(|e| invalid("directory", e))?;
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        let mut datasets = Vec::with_capacity(request.datasets.len());
        for (i, d) in request.datasets.into_iter().enumerate() {
            let field = |name: &str| format!("datasets[{i}].{name}");
            let id = uuid(&d.uuid).map_err(|e| invalid(&field("uuid"), e))?;
            if let Some(first) = seen.insert(id, i) {
                return Err(invalid(
                    &field("uuid"),
                    format!("{id} is also datasets[{first}]; a dataset is listed once"),
                ));
            }
            let xml_path = file_path(&d.xml_path).map_err(|e| invalid(&field("xml_path"), e))?;
            let parent = if d.parent_uuid.is_empty() {
                None
            } else {
                Some(uuid(&d.parent_uuid).map_err(|e| invalid(&field("parent_uuid"), e))?)
            };
            if parent == Some(id) {
                return Err(invalid(
                    &field("parent_uuid"),
                    "a dataset cannot be its own parent",
                ));
            }
            datasets.push(DatasetSpec {
                uuid: id,
                name: d.name,
                xml_path,
                parent,
                num_children: d.num_children,
            });
        }
        let jobs = jobs(request.analysis_jobs)?;
        Ok(Self {
            project,
            directory: request.directory,
            datasets,
            jobs,
            dry_run: request.dry_run,
        })
    }
}

fn jobs(wire: Vec<pb::AnalysisJob>) -> Result<Vec<JobSpec>, Error> {
    let mut seen: HashMap<JobId, usize> = HashMap::new();
    let mut jobs = Vec::with_capacity(wire.len());
    for (i, job) in wire.into_iter().enumerate() {
        let field = |name: &str| format!("analysis_jobs[{i}].{name}");
        let id = JobId::new(job.job_id).map_err(|e| invalid(&field("job_id"), e))?;
        if let Some(first) = seen.insert(id, i) {
            return Err(invalid(
                &field("job_id"),
                format!("{id} is also analysis_jobs[{first}]; a job is listed once"),
            ));
        }
        let mut files = Vec::with_capacity(job.files.len());
        for (f, file) in job.files.into_iter().enumerate() {
            let path = file_path(&file.path)
                .map_err(|e| invalid(&field(&format!("files[{f}].path")), e))?;
            files.push(JobFile {
                path,
                file_type: file.file_type_id,
                source_id: file.source_id,
            });
        }
        jobs.push(JobSpec {
            id,
            name: job.name,
            files,
        });
    }
    Ok(jobs)
}

fn kind(kind: ActionKind) -> pb::ActionKind {
    match kind {
        ActionKind::CreateDirectory => pb::ActionKind::CreateDirectory,
        ActionKind::LinkFile => pb::ActionKind::LinkFile,
        ActionKind::UnlinkFile => pb::ActionKind::UnlinkFile,
        ActionKind::RemoveDirectory => pb::ActionKind::RemoveDirectory,
        ActionKind::RenameProjectDirectory => pb::ActionKind::RenameProjectDirectory,
        ActionKind::MoveDatasetDirectory => pb::ActionKind::MoveDatasetDirectory,
        ActionKind::RenameDatasetDirectory => pb::ActionKind::RenameDatasetDirectory,
        ActionKind::PublishDirectory => pb::ActionKind::PublishDirectory,
        ActionKind::SetMode => pb::ActionKind::SetMode,
        ActionKind::KeepForeign => pb::ActionKind::KeepForeign,
        ActionKind::MarkDirectory => pb::ActionKind::MarkDirectory,
    }
}

fn action(a: Action) -> pb::Action {
    let (outcome, error, permanent) = match a.outcome {
        Outcome::Planned => (pb::ActionOutcome::Planned, String::new(), false),
        Outcome::Done => (pb::ActionOutcome::Done, String::new(), false),
        Outcome::Failed(e) => (pb::ActionOutcome::Failed, e.text, e.permanent),
        Outcome::Skipped(e) => (pb::ActionOutcome::Skipped, e, false),
    };
    pb::Action {
        kind: kind(a.kind) as i32,
        path: a.path,
        from_path: a.from_path,
        source: a.source,
        dataset_uuid: a
            .item
            .and_then(ItemId::uuid)
            .map(|u| u.to_string())
            .unwrap_or_default(),
        outcome: outcome as i32,
        error,
        permanent,
        analysis_job_id: a.item.and_then(ItemId::job).map_or(0, JobId::get),
    }
}

/// A state on the wire: the state, its error and whether the error is permanent.
fn state(state: DatasetState) -> (pb::DatasetState, String, bool) {
    match state {
        DatasetState::Unchanged => (pb::DatasetState::Unchanged, String::new(), false),
        DatasetState::Staged => (pb::DatasetState::Staged, String::new(), false),
        DatasetState::Updated => (pb::DatasetState::Updated, String::new(), false),
        DatasetState::Failed(e) => (pb::DatasetState::Failed, e.text, e.permanent),
        DatasetState::InParent => (pb::DatasetState::InParent, String::new(), false),
    }
}

/// The answer to ApplyProject.
pub fn apply_response(report: ApplyReport) -> pb::ApplyProjectResponse {
    let complete = report.complete();
    let actions: Vec<pb::Action> = report.actions.into_iter().map(action).collect();
    let (mut datasets, mut analysis) = (Vec::new(), Vec::new());
    for r in report.results {
        let (state, error, permanent) = state(r.state);
        match r.item {
            ItemId::Dataset(uuid) => datasets.push(pb::DatasetResult {
                uuid: uuid.to_string(),
                path: r.path,
                state: state as i32,
                file_count: r.file_count,
                error,
                permanent,
            }),
            ItemId::Job(id) => analysis.push(pb::AnalysisResult {
                job_id: id.get(),
                path: r.path,
                state: state as i32,
                file_count: r.file_count,
                skipped: r.skipped,
                error,
                permanent,
            }),
        }
    }
    pb::ApplyProjectResponse {
        project_id: report.project.get(),
        directory: report.directory,
        dry_run: report.dry_run,
        actions_total: actions.len() as u64,
        action_counts: answer::counts(&actions),
        actions,
        datasets,
        complete,
        analysis,
    }
}

/// The answer to RemoveProject.
pub fn remove_response(report: RemoveReport) -> pb::RemoveProjectResponse {
    let actions: Vec<pb::Action> = report.actions.into_iter().map(action).collect();
    pb::RemoveProjectResponse {
        project_id: report.project.get(),
        dry_run: report.dry_run,
        actions_total: actions.len() as u64,
        action_counts: answer::counts(&actions),
        actions,
        removed: report.removed,
        foreign_total: report.foreign_total,
        foreign_paths: report.foreign_paths,
    }
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The answer to GetProject.
pub fn get_response(
    record: &ProjectRecord,
    verified: bool,
    drift: Vec<Drift>,
) -> pb::GetProjectResponse {
    let (mut datasets, mut analysis_jobs) = (Vec::new(), Vec::new());
    for d in record.items.values() {
        let path = join(&[&record.directory, &d.directory]);
        let files = d
            .entries
            .iter()
            .filter_map(|(rel, e)| match e {
                EntryRecord::File(f) => Some(pb::StagedFile {
                    path: join(&[&path, rel]),
                    source: f.source.clone(),
                    size: f.size,
                }),
                EntryRecord::Dir => None,
            })
            .collect();
        match (d.item, &d.source) {
            (ItemId::Dataset(uuid), source) => datasets.push(pb::StagedDataset {
                uuid: uuid.to_string(),
                xml_path: match source {
                    ItemSource::Dataset { xml_path, .. } => xml_path.clone(),
                    ItemSource::Job => String::new(),
                },
                files,
                path,
            }),
            (ItemId::Job(id), _) => analysis_jobs.push(pb::StagedAnalysisJob {
                job_id: id.get(),
                path,
                files,
            }),
        }
    }
    datasets.sort_by(|a, b| a.path.cmp(&b.path));
    analysis_jobs.sort_by(|a, b| a.path.cmp(&b.path));
    pb::GetProjectResponse {
        project_id: record.id.get(),
        directory: record.directory.clone(),
        datasets,
        updated_at: Some(timestamp(record.updated_at)),
        verified,
        analysis_jobs,
        drift: drift
            .into_iter()
            .map(|d| pb::Drift {
                kind: match d.kind {
                    DriftKind::Missing => pb::DriftKind::Missing,
                    DriftKind::NotLinked => pb::DriftKind::NotLinked,
                    DriftKind::WrongType => pb::DriftKind::WrongType,
                    DriftKind::WrongMode => pb::DriftKind::WrongMode,
                    DriftKind::Foreign => pb::DriftKind::Foreign,
                } as i32,
                path: d.path,
                detail: d.detail,
            })
            .collect(),
    }
}

/// One ListProjects item.
pub fn list_item(record: &ProjectRecord) -> pb::ListProjectsResponse {
    pb::ListProjectsResponse {
        project_id: record.id.get(),
        directory: record.directory.clone(),
        dataset_uuids: record.dataset_uuids().map(|u| u.to_string()).collect(),
        file_count: record.file_count() as u64,
        updated_at: Some(timestamp(record.updated_at)),
        analysis_job_ids: record.job_ids().map(JobId::get).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(datasets: Vec<pb::Dataset>) -> pb::ApplyProjectRequest {
        pb::ApplyProjectRequest {
            project_id: 2,
            directory: "Project 2: Tomato".into(),
            datasets,
            dry_run: false,
            analysis_jobs: Vec::new(),
        }
    }

    fn dataset(uuid: &str) -> pb::Dataset {
        pb::Dataset {
            uuid: uuid.into(),
            name: "n".into(),
            xml_path: "/data/x.xml".into(),
            parent_uuid: String::new(),
            num_children: 0,
        }
    }

    fn refusal(r: pb::ApplyProjectRequest) -> String {
        match ApplyRequest::try_from(r) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        let a = "48a71a3e-c97c-43ea-ba41-8c2b31dd32b2";
        let b = "e950eeb9-b402-4776-84e1-9a9905aa781b";
        assert!(
            refusal(pb::ApplyProjectRequest {
                project_id: 1,
                ..request(vec![])
            })
            .starts_with("project_id: project 1")
        );
        assert!(
            refusal(pb::ApplyProjectRequest {
                directory: "../x".into(),
                ..request(vec![])
            })
            .starts_with("directory: ")
        );
        assert!(
            refusal(request(vec![dataset(a), dataset(b), dataset("nope")]))
                .starts_with("datasets[2].uuid: \"nope\" is not a UUID")
        );
        let upper = a.to_uppercase();
        assert!(refusal(request(vec![dataset(&upper)])).contains("canonical lower-case"));
        assert!(refusal(request(vec![dataset(a), dataset(a)])).starts_with(
            "datasets[1].uuid: 48a71a3e-c97c-43ea-ba41-8c2b31dd32b2 is also datasets[0]"
        ));
        let relative = pb::Dataset {
            xml_path: "x.xml".into(),
            ..dataset(a)
        };
        assert!(
            refusal(request(vec![relative]))
                .starts_with("datasets[0].xml_path: \"x.xml\" is not an absolute path")
        );
        let own_parent = pb::Dataset {
            parent_uuid: a.into(),
            ..dataset(a)
        };
        assert!(
            refusal(request(vec![own_parent]))
                .starts_with("datasets[0].parent_uuid: a dataset cannot be its own parent")
        );
        let bad_parent = pb::Dataset {
            parent_uuid: "x".into(),
            ..dataset(a)
        };
        assert!(refusal(request(vec![bad_parent])).starts_with("datasets[0].parent_uuid: "));
        let ok = ApplyRequest::try_from(request(vec![pb::Dataset {
            parent_uuid: b.into(),
            ..dataset(a)
        }]))
        .unwrap();
        assert_eq!(
            ok.datasets[0].parent.map(|u| u.to_string()).as_deref(),
            Some(b)
        );
    }

    #[test]
    fn bad_analysis_jobs_name_the_field() {
        let job = |id: i64, path: &str| pb::AnalysisJob {
            job_id: id,
            name: "j".into(),
            files: vec![pb::AnalysisFile {
                path: path.into(),
                file_type_id: "PacBio.FileTypes.bam".into(),
                source_id: String::new(),
            }],
        };
        let with = |jobs: Vec<pb::AnalysisJob>| pb::ApplyProjectRequest {
            analysis_jobs: jobs,
            ..request(vec![])
        };
        assert!(refusal(with(vec![job(0, "/x")])).starts_with("analysis_jobs[0].job_id: "));
        assert!(
            refusal(with(vec![job(5, "/x"), job(5, "/y")]))
                .starts_with("analysis_jobs[1].job_id: 5 is also analysis_jobs[0]")
        );
        assert!(
            refusal(with(vec![job(5, "/x"), job(6, "rel/y")]))
                .starts_with("analysis_jobs[1].files[0].path: \"rel/y\" is not an absolute path")
        );
        assert!(refusal(with(vec![job(5, "/x/..")])).contains("does not name a file"));
        assert!(refusal(with(vec![job(5, "/x\0y")])).contains("NUL"));
        let ok = ApplyRequest::try_from(with(vec![job(1589, "/jobs/1589/a.fasta")])).unwrap();
        assert_eq!(ok.jobs[0].id.get(), 1589);
        assert_eq!(ok.jobs[0].files[0].file_type, "PacBio.FileTypes.bam");
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }
}
