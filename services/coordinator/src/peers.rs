//! Calls to staging and access: one project's full desired state per call, the change id in
//! metadata, and the answer turned into a task result (retryable or permanent).

use prost::Message as _;
use smrtshare_api::access::v1 as access;
use smrtshare_api::access::v1::access_client::AccessClient;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_api::staging::v1 as staging;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_common::auth::set_change_id;
use smrtshare_common::client::{PeerChannel, PeerOptions, peer_channel};
use tonic::Code;

use crate::model::{Desired, Operation, Target};
use crate::rules::TaskResult;

/// Largest encoded report stored with a task; longer lists are cut.
const MAX_REPORT_BYTES: usize = 256 * 1024;

/// Clients of both services, connected lazily.
#[derive(Clone, Debug)]
pub struct Peers {
    staging: StagingClient<PeerChannel>,
    access: AccessClient<PeerChannel>,
}

impl Peers {
    /// Clients for the two services at these URLs.
    pub fn connect(
        staging_url: &str,
        access_url: &str,
        options: &PeerOptions,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            staging: StagingClient::new(peer_channel(staging_url, options)?)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            access: AccessClient::new(peer_channel(access_url, options)?)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        })
    }

    /// Sends the desired state to one target and classifies the answer.
    pub async fn run(&self, target: Target, desired: &Desired, change_id: i64) -> PeerAnswer {
        let (result, revoked) = match (target, desired.deleted) {
            (Target::Staging, false) => (self.staging_apply(desired, change_id).await, 0),
            (Target::Staging, true) => {
                (self.staging_remove(desired.project_id, change_id).await, 0)
            }
            (Target::Access, false) => self.access_apply(desired, change_id).await,
            (Target::Access, true) => self.access_revoke(desired.project_id, change_id).await,
        };
        PeerAnswer { result, revoked }
    }

    async fn staging_apply(&self, desired: &Desired, change_id: i64) -> TaskResult {
        let op = Operation::Apply;
        let mut request = tonic::Request::new(staging::ApplyProjectRequest {
            project_id: desired.project_id,
            directory: desired.directory.clone(),
            datasets: desired
                .datasets
                .iter()
                .map(|d| staging::Dataset {
                    uuid: d.uuid.clone(),
                    name: d.name.clone(),
                    xml_path: d.path.clone(),
                    parent_uuid: d.parent_uuid.clone().unwrap_or_default(),
                    num_children: d.num_children,
                })
                .collect(),
            dry_run: false,
            analysis_jobs: desired
                .analysis
                .iter()
                .map(|job| staging::AnalysisJob {
                    job_id: job.job_id,
                    name: job.name.clone(),
                    files: job
                        .files
                        .iter()
                        .map(|f| staging::AnalysisFile {
                            path: f.path.clone(),
                            file_type_id: f.file_type_id.clone(),
                            source_id: f.source_id.clone(),
                        })
                        .collect(),
                })
                .collect(),
        });
        set_change_id(&mut request, change_id);
        match self.staging.clone().apply_project(request).await {
            Err(status) => failure(op, "staging", &status),
            Ok(answer) => {
                let mut answer = answer.into_inner();
                let failed_state = staging::DatasetState::Failed as i32;
                let failed: Vec<String> = answer
                    .datasets
                    .iter()
                    .filter(|d| d.state == failed_state)
                    .map(|d| format!("{}: {}", d.uuid, d.error))
                    .chain(
                        answer
                            .analysis
                            .iter()
                            .filter(|j| j.state == failed_state)
                            .map(|j| format!("analysis job {}: {}", j.job_id, j.error)),
                    )
                    .collect();
                // Items that failed for good, and whether anything failed that a retry may cure.
                let mut residue = Residue::default();
                for d in answer
                    .datasets
                    .iter()
                    .filter(|d| d.state == staging::DatasetState::Failed as i32)
                {
                    residue.add(d.permanent, format!("dataset:{}", d.uuid));
                }
                for j in answer.analysis.iter().filter(|j| j.state == failed_state) {
                    residue.add(j.permanent, format!("analysis:{}", j.job_id));
                }
                for a in answer
                    .actions
                    .iter()
                    .filter(|a| a.outcome == staging::ActionOutcome::Failed as i32)
                {
                    let key = if a.analysis_job_id != 0 {
                        format!("analysis:{}", a.analysis_job_id)
                    } else if a.dataset_uuid.is_empty() {
                        format!("path:{}", a.path)
                    } else {
                        format!("dataset:{}", a.dataset_uuid)
                    };
                    residue.add(a.permanent, key);
                }
                // Every action, listed or only counted (a long answer lists the first ones).
                let actions = usize::try_from(answer.actions_total)
                    .unwrap_or(usize::MAX)
                    .max(answer.actions.len());
                let counted: u64 = answer
                    .action_counts
                    .iter()
                    .filter(|c| c.outcome == staging::ActionOutcome::Failed as i32)
                    .map(|c| c.count)
                    .sum();
                let listed = answer
                    .actions
                    .iter()
                    .filter(|a| a.outcome == staging::ActionOutcome::Failed as i32)
                    .count();
                let action_failures = usize::try_from(counted).unwrap_or(usize::MAX).max(listed);
                let complete = answer.complete;
                let directory = answer.directory.clone();
                let jobs = answer.analysis.len();
                let staged = (answer.datasets.len() + jobs).saturating_sub(failed.len());
                let mut truncated = false;
                if answer.encoded_len() > MAX_REPORT_BYTES {
                    answer.actions.truncate(500);
                    truncated = true;
                }
                let report = encode(pb::task_report::Report::StagingApply(answer), truncated);
                if complete {
                    let message = if actions == 0 {
                        format!(
                            "{staged} datasets and analysis jobs already in place in {directory:?}"
                        )
                    } else {
                        format!(
                            "staged {staged} datasets and analysis jobs in {directory:?} ({actions} actions)"
                        )
                    };
                    TaskResult::Ok {
                        operation: op,
                        message,
                        report,
                    }
                } else {
                    let message = format!(
                        "staging incomplete: {} of {} datasets and analysis jobs failed, {action_failures} actions failed{}{}",
                        failed.len(),
                        staged + failed.len(),
                        if failed.is_empty() { "" } else { ": " },
                        failed
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    residue.result(op, message, report)
                }
            }
        }
    }

    async fn staging_remove(&self, project_id: i64, change_id: i64) -> TaskResult {
        let op = Operation::Remove;
        let mut request = tonic::Request::new(staging::RemoveProjectRequest {
            project_id,
            dry_run: false,
        });
        set_change_id(&mut request, change_id);
        match self.staging.clone().remove_project(request).await {
            Err(status) => failure(op, "staging", &status),
            Ok(answer) => {
                let mut answer = answer.into_inner();
                let removed = answer.removed;
                let foreign = answer.foreign_paths.len();
                let actions = answer.actions.len();
                let mut truncated = false;
                if answer.encoded_len() > MAX_REPORT_BYTES {
                    answer.actions.truncate(500);
                    answer.foreign_paths.truncate(500);
                    truncated = true;
                }
                let report = encode(pb::task_report::Report::StagingRemove(answer), truncated);
                if removed {
                    let mut message =
                        format!("removed project {project_id} from staging ({actions} actions)");
                    if foreign > 0 {
                        message
                            .push_str(&format!("; kept {foreign} files smrtshare did not stage"));
                    }
                    TaskResult::Ok {
                        operation: op,
                        message,
                        report,
                    }
                } else {
                    TaskResult::Retry {
                        operation: op,
                        message: format!(
                            "staging could not remove project {project_id} completely"
                        ),
                        report,
                    }
                }
            }
        }
    }

    async fn access_apply(&self, desired: &Desired, change_id: i64) -> (TaskResult, usize) {
        let op = Operation::Apply;
        let mut request = tonic::Request::new(access::ApplyProjectAccessRequest {
            project_id: desired.project_id,
            path: desired.globus_path(),
            logins: desired.shared_logins.clone(),
            dry_run: false,
        });
        set_change_id(&mut request, change_id);
        match self.access.clone().apply_project_access(request).await {
            Err(status) => (failure(op, "access", &status), 0),
            Ok(answer) => {
                let answer = answer.into_inner();
                let complete = answer.complete;
                let (summary, failures) = member_summary(&answer.members);
                let residue = member_residue(&answer.members);
                let revoked = revoked_count(&answer.members);
                let report = encode(pb::task_report::Report::AccessApply(answer), false);
                let result = if complete {
                    TaskResult::Ok {
                        operation: op,
                        message: summary,
                        report,
                    }
                } else {
                    residue.result(
                        op,
                        format!("access incomplete: {failures}; {summary}"),
                        report,
                    )
                };
                (result, revoked)
            }
        }
    }

    async fn access_revoke(&self, project_id: i64, change_id: i64) -> (TaskResult, usize) {
        let op = Operation::Remove;
        let mut request = tonic::Request::new(access::RevokeProjectAccessRequest {
            project_id,
            dry_run: false,
        });
        set_change_id(&mut request, change_id);
        match self.access.clone().revoke_project_access(request).await {
            Err(status) => (failure(op, "access", &status), 0),
            Ok(answer) => {
                let answer = answer.into_inner();
                let complete = answer.complete;
                let (summary, failures) = member_summary(&answer.members);
                let residue = member_residue(&answer.members);
                let revoked = revoked_count(&answer.members);
                let report = encode(pb::task_report::Report::AccessRevoke(answer), false);
                let result = if complete {
                    TaskResult::Ok {
                        operation: op,
                        message: format!("revoked project {project_id}: {summary}"),
                        report,
                    }
                } else {
                    residue.result(
                        op,
                        format!("revocation incomplete: {failures}; {summary}"),
                        report,
                    )
                };
                (result, revoked)
            }
        }
    }

    /// Every project staging holds.
    pub async fn staged_projects(&self) -> Result<Vec<StagedProject>, PeerError> {
        let fail = |status: tonic::Status| PeerError::of("staging", &status);
        let mut stream = self
            .staging
            .clone()
            .list_projects(staging::ListProjectsRequest {})
            .await
            .map_err(fail)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.map_err(fail)? {
            out.push(StagedProject {
                project_id: item.project_id,
                directory: item.directory,
                dataset_uuids: item.dataset_uuids,
                analysis_job_ids: item.analysis_job_ids,
            });
        }
        Ok(out)
    }

    /// Every rule access holds for smrtshare.
    pub async fn access_rules(&self) -> Result<Vec<HeldRule>, PeerError> {
        let fail = |status: tonic::Status| PeerError::of("access", &status);
        let mut stream = self
            .access
            .clone()
            .list_rules(access::ListRulesRequest { project_id: 0 })
            .await
            .map_err(fail)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.map_err(fail)? {
            if let Some(rule) = item.rule {
                out.push(HeldRule {
                    project_id: rule.project_id,
                    login: rule.login,
                    path: rule.path,
                    deleting: rule.state == access::RuleState::Deleting as i32,
                });
            }
        }
        Ok(out)
    }
}

/// What a service answered, as a task result, and what it did that the coordinator measures.
#[derive(Clone, Debug)]
pub struct PeerAnswer {
    /// The task result.
    pub result: TaskResult,
    /// Members whose access the call revoked (access only).
    pub revoked: usize,
}

/// A project as staging holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedProject {
    /// The project.
    pub project_id: i64,
    /// Its directory name.
    pub directory: String,
    /// The datasets staged in it (top-level directories).
    pub dataset_uuids: Vec<String>,
    /// The analysis jobs staged in it.
    pub analysis_job_ids: Vec<i64>,
}

/// A rule access holds for a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRule {
    /// The project.
    pub project_id: i64,
    /// The member's SMRT Link login.
    pub login: String,
    /// The Globus path it grants.
    pub path: String,
    /// Being deleted (the member left, or the project was removed).
    pub deleting: bool,
}

/// Why a service could not be asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PeerError {
    /// The service did not answer, or answered with a code a later call may not meet.
    #[error("{service} is unavailable ({code}): {message}")]
    Unavailable {
        /// Which service.
        service: &'static str,
        /// The gRPC code's name.
        code: String,
        /// Its message.
        message: String,
    },
    /// The service refused the call.
    #[error("{service} refused the call ({code}): {message}")]
    Refused {
        /// Which service.
        service: &'static str,
        /// The gRPC code's name.
        code: String,
        /// Its message.
        message: String,
    },
}

impl PeerError {
    fn of(service: &'static str, status: &tonic::Status) -> Self {
        let code = format!("{:?}", status.code());
        let message = status.message().to_owned();
        if retryable(status.code()) {
            Self::Unavailable {
                service,
                code,
                message,
            }
        } else {
            Self::Refused {
                service,
                code,
                message,
            }
        }
    }
}

/// The items of an incomplete answer: those that failed for good (`residue`), and whether any
/// failed in a way a retry may cure.
#[derive(Debug, Default)]
struct Residue {
    keys: std::collections::BTreeSet<String>,
    passing: bool,
}

impl Residue {
    fn add(&mut self, permanent: bool, key: String) {
        if permanent {
            self.keys.insert(key);
        } else {
            self.passing = true;
        }
    }

    /// The result of an incomplete answer: retried while anything may still pass, final (with
    /// the items that failed for good) otherwise.
    fn result(self, operation: Operation, message: String, report: Option<Vec<u8>>) -> TaskResult {
        if self.passing || self.keys.is_empty() {
            TaskResult::Retry {
                operation,
                message,
                report,
            }
        } else {
            TaskResult::Permanent {
                operation,
                message: format!(
                    "{message}; not retried: these failures last until the project, the dataset or \
                     the member changes"
                ),
                report,
                residue: self.keys.into_iter().collect(),
            }
        }
    }
}

/// Members whose access an answer revoked.
fn revoked_count(members: &[access::MemberOutcome]) -> usize {
    members
        .iter()
        .filter(|m| m.outcome == access::MemberOutcomeKind::Revoked as i32)
        .count()
}

/// The residue of member outcomes.
fn member_residue(members: &[access::MemberOutcome]) -> Residue {
    use access::MemberOutcomeKind as K;
    let mut residue = Residue::default();
    for m in members {
        if matches!(K::try_from(m.outcome), Ok(K::Failed | K::UnknownIdentity)) {
            residue.add(m.permanent, format!("login:{}", m.login));
        }
    }
    residue
}

/// Counts member outcomes ("2 granted, 1 already granted") and lists the failures.
fn member_summary(members: &[access::MemberOutcome]) -> (String, String) {
    use access::MemberOutcomeKind as K;
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut failures = Vec::new();
    for m in members {
        let label = match K::try_from(m.outcome).unwrap_or(K::Unspecified) {
            K::Granted => "granted",
            K::AlreadyGranted => "already granted",
            K::Revoked => "revoked",
            K::Moved => "moved",
            K::Renewed => "renewed",
            K::UnknownIdentity => {
                failures.push(format!("{}: unknown Globus identity", m.login));
                "unknown identity"
            }
            K::Failed => {
                failures.push(format!("{}: {} {}", m.login, m.globus_code, m.message));
                "failed"
            }
            K::Unspecified => "unspecified",
        };
        *counts.entry(label).or_default() += 1;
    }
    let summary = if counts.is_empty() {
        "no members to share with".to_owned()
    } else {
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    (
        summary,
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    )
}

fn encode(report: pb::task_report::Report, truncated: bool) -> Option<Vec<u8>> {
    Some(
        pb::TaskReport {
            report: Some(report),
            truncated,
        }
        .encode_to_vec(),
    )
}

/// gRPC codes a later attempt may cure (DESIGN.md section 5, plus UNKNOWN, INTERNAL and
/// CANCELLED, which a restarting peer produces).
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
    )
}

fn failure(operation: Operation, service: &str, status: &tonic::Status) -> TaskResult {
    let message = format!(
        "{service} answered {:?}: {}",
        status.code(),
        status.message()
    );
    if retryable(status.code()) {
        TaskResult::Retry {
            operation,
            message,
            report: None,
        }
    } else {
        TaskResult::Permanent {
            operation,
            message,
            report: None,
            residue: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_split_into_retryable_and_permanent() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }
}
