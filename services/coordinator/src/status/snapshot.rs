//! What the status page shows, read from the store: every project with the newest task of each
//! target (its state, last message and the service's decoded report) and its newest change,
//! failures first, and the members access could not resolve to a Globus identity.

use std::collections::BTreeMap;

use prost::Message as _;
use smrtshare_api::access::v1 as access;
use smrtshare_api::coordinator::v1::{TaskReport, task_report};
use smrtshare_api::staging::v1 as staging;

use crate::model::{ChangeStatus, Operation, ReadState, Target, TaskState};
use crate::rules::{JobPhase, job_phase};
use crate::store::{ChangeRow, JobRow, ProjectSummary, Store, StoreError, TaskRow};

/// The status of everything at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Projects to list: failed first, then those with work under way, then the rest, each by
    /// id. Deleted projects are listed only while their removal is not done.
    pub projects: Vec<ProjectStatus>,
    /// Deleted projects whose removal is done (not listed).
    pub removed: usize,
    /// Members whose login mapped to no Globus identity in their project's newest access report.
    pub unresolved: Vec<Unresolved>,
    /// Analysis jobs of listed projects that are not finished yet (the follower looks at them
    /// until they are), by project and job id.
    pub pending_analysis_jobs: Vec<PendingJob>,
}

/// How a project stands, for sorting and colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// A target's newest task failed, or the newest change could not read SMRT Link.
    Failed,
    /// A task waits, runs or is scheduled for a retry, or the newest change is not done.
    Busy,
    /// Every target's newest task succeeded (or none was ever needed).
    Ok,
}

/// One project.
#[derive(Clone, Debug)]
pub struct ProjectStatus {
    /// The project's row and list sizes.
    pub project: ProjectSummary,
    /// How it stands.
    pub health: Health,
    /// The newest staging task.
    pub staging: Option<TargetStatus>,
    /// The newest access task.
    pub access: Option<TargetStatus>,
    /// The newest change.
    pub last_change: Option<ChangeRow>,
}

/// The newest task of one target.
#[derive(Clone, Debug)]
pub struct TargetStatus {
    /// The task as stored.
    pub task: TaskRow,
    /// Its report, decoded.
    pub report: Option<ReportView>,
}

impl TargetStatus {
    /// A short state label: OK, REMOVED, FAILED, RUNNING, RETRYING or WAITING.
    pub fn label(&self) -> &'static str {
        match self.task.state {
            TaskState::Ok if self.task.operation == Some(Operation::Remove) => "REMOVED",
            TaskState::Ok => "OK",
            TaskState::Failed => "FAILED",
            TaskState::Working => "RUNNING",
            TaskState::Ready if self.task.attempts > 0 => "RETRYING",
            TaskState::Ready => "WAITING",
            TaskState::Superseded => "SUPERSEDED",
        }
    }
}

/// The items of a service's report that did not succeed, and how many did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportView {
    /// What the items are ("dataset", "member", "action"; "item" for datasets and analysis jobs).
    pub noun: &'static str,
    /// Items that failed.
    pub problems: Vec<ReportItem>,
    /// Items that succeeded.
    pub fine: usize,
    /// The service's lists were cut to keep the report storable.
    pub truncated: bool,
}

/// One item of a report that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportItem {
    /// The dataset directory (or UUID), the login, or the path acted on.
    pub subject: String,
    /// What became of it.
    pub outcome: String,
    /// Why.
    pub message: String,
    /// No retry cures it.
    pub permanent: bool,
}

/// An analysis job not finished yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingJob {
    /// The job as stored.
    pub job: JobRow,
    /// Its project's name.
    pub project_name: String,
}

/// A member with no Globus identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The project.
    pub project_id: i64,
    /// Its name.
    pub project_name: String,
    /// The SMRT Link login.
    pub login: String,
    /// Access's reason.
    pub message: String,
}

/// Reads the store and builds the snapshot: four plain reads (projects, newest tasks, newest
/// changes, analysis jobs), so a project that changes between them may show half-way for one reading; the
/// next reading shows it whole.
pub async fn take(store: &Store) -> Result<Snapshot, StoreError> {
    let projects = store.project_summaries().await?;
    let mut tasks: BTreeMap<(i64, Target), TaskRow> = store
        .newest_tasks()
        .await?
        .into_iter()
        .map(|t| ((t.project_id, t.target), t))
        .collect();
    let mut changes: BTreeMap<i64, ChangeRow> = store
        .newest_changes()
        .await?
        .into_iter()
        .map(|c| (c.project_id, c))
        .collect();
    let jobs = store.jobs_of(None).await?;
    let mut snapshot = Snapshot::default();
    let mut names = BTreeMap::new();
    for project in projects.into_iter().filter(|p| p.project_id > 1) {
        let id = project.project_id;
        let mut status = |target| {
            tasks.remove(&(id, target)).map(|task| TargetStatus {
                report: task.report.as_deref().map(|bytes| decode(target, bytes)),
                task,
            })
        };
        let (staging, access) = (status(Target::Staging), status(Target::Access));
        let last_change = changes.remove(&id);
        let health = health(&[&staging, &access], last_change.as_ref());
        if let Some(view) = access.as_ref().and_then(|a| a.report.as_ref()) {
            snapshot.unresolved.extend(
                view.problems
                    .iter()
                    .filter(|p| p.outcome == NO_IDENTITY)
                    .map(|p| Unresolved {
                        project_id: id,
                        project_name: project.name.clone(),
                        login: p.subject.clone(),
                        message: p.message.clone(),
                    }),
            );
        }
        if !project.deleted {
            names.insert(id, project.name.clone());
        }
        if project.deleted && health == Health::Ok {
            snapshot.removed += 1;
            continue;
        }
        snapshot.projects.push(ProjectStatus {
            project,
            health,
            staging,
            access,
            last_change,
        });
    }
    snapshot
        .projects
        .sort_by_key(|p| (p.health, p.project.project_id));
    snapshot.pending_analysis_jobs = jobs
        .into_iter()
        .filter(|job| job_phase(&job.state) == JobPhase::Pending)
        .filter_map(|job| {
            let project_name = names.get(&job.project_id)?.clone();
            Some(PendingJob { job, project_name })
        })
        .collect();
    snapshot
        .pending_analysis_jobs
        .sort_by_key(|p| (p.job.project_id, p.job.job_id));
    Ok(snapshot)
}

fn health(targets: &[&Option<TargetStatus>], change: Option<&ChangeRow>) -> Health {
    let states = targets
        .iter()
        .filter_map(|t| t.as_ref())
        .map(|t| t.task.state);
    let mut health = Health::Ok;
    for state in states {
        match state {
            TaskState::Failed => return Health::Failed,
            TaskState::Ready | TaskState::Working => health = Health::Busy,
            TaskState::Ok | TaskState::Superseded => {}
        }
    }
    match change {
        Some(c) if c.read_state == ReadState::Failed => Health::Failed,
        Some(c) if c.status == ChangeStatus::InProgress => Health::Busy,
        _ => health,
    }
}

/// The outcome shown for a member with no Globus identity.
pub const NO_IDENTITY: &str = "no Globus identity";

/// Decodes a stored report into what the page shows; a report that does not decode (a bug or
/// a hand edit) says so instead of failing the page.
pub fn decode(target: Target, bytes: &[u8]) -> ReportView {
    let Ok(report) = TaskReport::decode(bytes) else {
        return ReportView {
            noun: "item",
            problems: vec![ReportItem {
                subject: format!("{target} report"),
                outcome: "unreadable".into(),
                message: "the stored report could not be decoded".into(),
                permanent: false,
            }],
            ..ReportView::default()
        };
    };
    let mut view = match report.report {
        Some(task_report::Report::StagingApply(r)) => staging_apply(&r),
        Some(task_report::Report::StagingRemove(r)) => actions(&r.actions),
        Some(task_report::Report::AccessApply(r)) => members(&r.members),
        Some(task_report::Report::AccessRevoke(r)) => members(&r.members),
        None => ReportView::default(),
    };
    view.truncated = report.truncated;
    view
}

fn staging_apply(r: &staging::ApplyProjectResponse) -> ReportView {
    let failed = |d: &&staging::DatasetResult| d.state == staging::DatasetState::Failed as i32;
    let mut view = ReportView {
        noun: "dataset",
        problems: r
            .datasets
            .iter()
            .filter(failed)
            .map(|d| ReportItem {
                subject: if d.path.is_empty() {
                    d.uuid.clone()
                } else {
                    d.path.clone()
                },
                outcome: "FAILED".into(),
                message: d.error.clone(),
                permanent: d.permanent,
            })
            .collect(),
        fine: r.datasets.iter().filter(|d| !failed(d)).count(),
        truncated: false,
    };
    // Analysis jobs are items of the report like datasets.
    let job_failed = |j: &&staging::AnalysisResult| j.state == staging::DatasetState::Failed as i32;
    view.problems
        .extend(r.analysis.iter().filter(job_failed).map(|j| ReportItem {
            subject: if j.path.is_empty() {
                format!("analysis job {}", j.job_id)
            } else {
                j.path.clone()
            },
            outcome: "FAILED".into(),
            message: j.error.clone(),
            permanent: j.permanent,
        }));
    view.fine += r.analysis.iter().filter(|j| !job_failed(j)).count();
    if !r.analysis.is_empty() {
        // Datasets and jobs together: "3 items fine", not "3 datasets fine".
        view.noun = "item";
    }
    // Project-level actions that failed (a dataset's or a job's own failures are in its result).
    let project_level: Vec<_> = r
        .actions
        .iter()
        .filter(|a| a.dataset_uuid.is_empty() && a.analysis_job_id == 0)
        .cloned()
        .collect();
    view.problems.extend(actions(&project_level).problems);
    view
}

fn actions(list: &[staging::Action]) -> ReportView {
    let failed = |a: &&staging::Action| {
        a.outcome == staging::ActionOutcome::Failed as i32
            || a.outcome == staging::ActionOutcome::Skipped as i32
    };
    ReportView {
        noun: "action",
        problems: list
            .iter()
            .filter(failed)
            .map(|a| ReportItem {
                subject: a.path.clone(),
                outcome: format!(
                    "{} {}",
                    enum_name(staging::ActionKind::try_from(a.kind).map(|k| k.as_str_name())),
                    enum_name(staging::ActionOutcome::try_from(a.outcome).map(|o| o.as_str_name()))
                ),
                message: a.error.clone(),
                permanent: a.permanent,
            })
            .collect(),
        fine: list.iter().filter(|a| !failed(a)).count(),
        truncated: false,
    }
}

fn members(list: &[access::MemberOutcome]) -> ReportView {
    use access::MemberOutcomeKind as K;
    let problem = |m: &access::MemberOutcome| match K::try_from(m.outcome) {
        Ok(K::UnknownIdentity) => Some(NO_IDENTITY.to_owned()),
        Ok(K::Failed) if m.globus_code.is_empty() => Some("FAILED".to_owned()),
        Ok(K::Failed) => Some(format!("FAILED ({})", m.globus_code)),
        _ => None,
    };
    ReportView {
        noun: "member",
        problems: list
            .iter()
            .filter_map(|m| {
                problem(m).map(|outcome| ReportItem {
                    subject: m.login.clone(),
                    outcome,
                    message: m.message.clone(),
                    permanent: m.permanent,
                })
            })
            .collect(),
        fine: list.iter().filter(|m| problem(m).is_none()).count(),
        truncated: false,
    }
}

/// `ACTION_KIND_LINK_FILE` → `LINK_FILE`; an unknown value → `?`.
fn enum_name<E>(name: Result<&'static str, E>) -> &'static str {
    let Ok(name) = name else { return "?" };
    ["ACTION_KIND_", "ACTION_OUTCOME_"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(report: task_report::Report) -> Vec<u8> {
        TaskReport {
            report: Some(report),
            truncated: false,
        }
        .encode_to_vec()
    }

    #[test]
    fn staging_reports_list_failed_datasets_and_project_actions() {
        let bytes = encode(task_report::Report::StagingApply(
            staging::ApplyProjectResponse {
                datasets: vec![
                    staging::DatasetResult {
                        uuid: "u1".into(),
                        path: "P/ok".into(),
                        state: staging::DatasetState::Unchanged as i32,
                        ..Default::default()
                    },
                    staging::DatasetResult {
                        uuid: "u2".into(),
                        state: staging::DatasetState::Failed as i32,
                        error: "broken XML".into(),
                        permanent: true,
                        ..Default::default()
                    },
                ],
                analysis: vec![
                    staging::AnalysisResult {
                        job_id: 41,
                        path: "P/Analysis 41: Mapping".into(),
                        state: staging::DatasetState::Staged as i32,
                        file_count: 3,
                        ..Default::default()
                    },
                    staging::AnalysisResult {
                        job_id: 42,
                        path: "P/Analysis 42: Calls".into(),
                        state: staging::DatasetState::Failed as i32,
                        error: "calls.vcf: a file staging did not make has the name".into(),
                        permanent: true,
                        ..Default::default()
                    },
                ],
                actions: vec![
                    staging::Action {
                        kind: staging::ActionKind::RenameProjectDirectory as i32,
                        path: "P2".into(),
                        outcome: staging::ActionOutcome::Failed as i32,
                        error: "name taken".into(),
                        ..Default::default()
                    },
                    // The job's own failed link is reported by its result, not again here.
                    staging::Action {
                        kind: staging::ActionKind::LinkFile as i32,
                        path: "P/Analysis 42: Calls/calls.vcf".into(),
                        outcome: staging::ActionOutcome::Failed as i32,
                        analysis_job_id: 42,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        ));
        let view = decode(Target::Staging, &bytes);
        assert_eq!((view.noun, view.fine), ("item", 2));
        let subjects: Vec<_> = view.problems.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(subjects, ["u2", "P/Analysis 42: Calls", "P2"]);
        assert_eq!(view.problems[2].outcome, "RENAME_PROJECT_DIRECTORY FAILED");
        assert!(view.problems[0].permanent);
        assert!(view.problems[1].permanent);
    }

    #[test]
    fn access_reports_name_members_without_identity_and_globus_failures() {
        let member =
            |login: &str, kind: access::MemberOutcomeKind, code: &str| access::MemberOutcome {
                login: login.into(),
                outcome: kind as i32,
                globus_code: code.into(),
                message: format!("{login} message"),
                ..Default::default()
            };
        let bytes = encode(task_report::Report::AccessApply(
            access::ApplyProjectAccessResponse {
                members: vec![
                    member("alice", access::MemberOutcomeKind::Granted, ""),
                    member("dave", access::MemberOutcomeKind::UnknownIdentity, ""),
                    member("erin", access::MemberOutcomeKind::Failed, "LimitExceeded"),
                ],
                ..Default::default()
            },
        ));
        let view = decode(Target::Access, &bytes);
        assert_eq!(view.fine, 1);
        assert_eq!(view.problems[0].outcome, NO_IDENTITY);
        assert_eq!(view.problems[1].outcome, "FAILED (LimitExceeded)");
    }

    #[test]
    fn an_unreadable_report_says_so() {
        let view = decode(Target::Access, &[0xff, 0xff, 0xff]);
        assert_eq!(view.problems[0].outcome, "unreadable");
    }
}
