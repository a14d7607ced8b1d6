//! SMRT Link through the real client: the [`ProjectSource`] the coordinator runs with.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use smrtshare_smrtlink::{Error, SmrtLinkClient};

use crate::metrics::Metrics;
use crate::model::{AnalysisJobTruth, DatasetTruth, JobOutput, MemberTruth, ProjectTruth};
use crate::source::{ProjectSource, SourceError};

/// SMRT Link's REST API. Projects that are not active (soft-deleted) count as gone, and inactive
/// datasets as absent. A project's answer does not say which datasets are demultiplexed children,
/// so each dataset's parent is looked up once (`GET /smrt-link/datasets/...`) and remembered: a
/// dataset's parent never changes.
#[derive(Debug)]
pub struct SmrtLinkSource {
    client: SmrtLinkClient,
    parents: Mutex<HashMap<uuid::Uuid, Option<uuid::Uuid>>>,
    metrics: Metrics,
}

impl SmrtLinkSource {
    /// A source over the client.
    pub fn new(client: SmrtLinkClient) -> Self {
        Self {
            client,
            parents: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
        }
    }

    /// Reports SMRT Link calls to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn count<T>(&self, call: &str, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(Error::Unavailable { .. }) => "unavailable",
            Err(Error::Timeout { .. }) => "timeout",
            Err(Error::Auth { .. }) => "auth",
            Err(Error::Protocol { .. }) => "protocol",
            Err(Error::NotFound { .. }) => "not_found",
            Err(Error::Rejected { .. }) => "rejected",
            Err(Error::Tls { .. }) => "tls",
            Err(Error::Config(_)) => "config",
        };
        self.metrics.smrtlink_call(call, outcome);
    }

    async fn parent_of(
        &self,
        dataset: &smrtshare_smrtlink::model::Dataset,
    ) -> Result<Option<uuid::Uuid>, SourceError> {
        if dataset.parent_uuid.is_some() || dataset.num_children > 0 {
            return Ok(dataset.parent_uuid);
        }
        let cached = self
            .parents
            .lock()
            .map_err(|_| SourceError::Protocol("parent cache poisoned".into()))?
            .get(&dataset.uuid)
            .copied();
        if let Some(known) = cached {
            return Ok(known);
        }
        let answer = self.client.get_dataset(dataset.uuid).await;
        self.count("get_dataset", &answer);
        let parent = answer.map_err(source_error)?.and_then(|d| d.parent_uuid);
        if let Ok(mut cache) = self.parents.lock() {
            cache.insert(dataset.uuid, parent);
        }
        Ok(parent)
    }
}

fn source_error(error: Error) -> SourceError {
    match error {
        Error::Auth { .. } | Error::Config(_) => SourceError::Auth(error.to_string()),
        Error::Protocol { .. } => SourceError::Protocol(error.to_string()),
        Error::Unavailable { .. }
        | Error::Timeout { .. }
        | Error::Tls { .. }
        | Error::NotFound { .. }
        | Error::Rejected { .. } => SourceError::Unavailable(error.to_string()),
    }
}

impl ProjectSource for SmrtLinkSource {
    fn list_project_ids(&self) -> BoxFuture<'_, Result<Vec<i64>, SourceError>> {
        Box::pin(async move {
            let answer = self.client.list_projects().await;
            self.count("list_projects", &answer);
            let projects = answer.map_err(source_error)?;
            Ok(projects
                .into_iter()
                .filter(|p| p.is_active)
                .map(|p| p.id)
                .collect())
        })
    }

    fn get_project(&self, id: i64) -> BoxFuture<'_, Result<Option<ProjectTruth>, SourceError>> {
        Box::pin(async move {
            let answer = self.client.get_project(id).await;
            self.count("get_project", &answer);
            let Some(project) = answer.map_err(source_error)? else {
                return Ok(None);
            };
            if !project.is_active {
                return Ok(None);
            }
            let mut datasets = Vec::with_capacity(project.datasets.len());
            for d in project.datasets.iter().filter(|d| d.is_active) {
                let parent = self.parent_of(d).await?;
                datasets.push(DatasetTruth {
                    uuid: d.uuid.to_string(),
                    name: d.name.clone(),
                    path: d.path.clone(),
                    parent_uuid: parent.map(|p| p.to_string()),
                    num_children: d.num_children,
                });
            }
            Ok(Some(ProjectTruth {
                id: project.id,
                name: project.name.clone(),
                updated_at: project
                    .updated_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                members: project
                    .members
                    .iter()
                    .map(|m| MemberTruth {
                        login: m.login.clone(),
                        role: m.role.as_str().to_owned(),
                    })
                    .collect(),
                datasets,
            }))
        })
    }

    fn dataset_project(&self, uuid: &str) -> BoxFuture<'_, Result<Option<i64>, SourceError>> {
        let uuid = uuid.parse::<uuid::Uuid>();
        Box::pin(async move {
            let uuid =
                uuid.map_err(|error| SourceError::Protocol(format!("dataset uuid: {error}")))?;
            let answer = self.client.get_dataset(uuid).await;
            self.count("get_dataset", &answer);
            Ok(answer
                .map_err(source_error)?
                .filter(|d| d.is_active)
                .map(|d| d.project_id))
        })
    }

    fn list_analysis_jobs(&self) -> BoxFuture<'_, Result<Vec<AnalysisJobTruth>, SourceError>> {
        Box::pin(async move {
            let answer = self.client.list_analysis_jobs(None).await;
            self.count("list_analysis_jobs", &answer);
            let jobs = answer.map_err(source_error)?;
            Ok(jobs
                .into_iter()
                .filter(|j| j.is_active)
                .map(job_truth)
                .collect())
        })
    }

    fn get_analysis_job(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<AnalysisJobTruth>, SourceError>> {
        Box::pin(async move {
            let answer = self.client.get_analysis_job(id).await;
            self.count("get_analysis_job", &answer);
            Ok(answer
                .map_err(source_error)?
                .filter(|j| j.is_active)
                .map(job_truth))
        })
    }

    fn analysis_outputs(&self, id: i64) -> BoxFuture<'_, Result<Vec<JobOutput>, SourceError>> {
        Box::pin(async move {
            let answer = self.client.analysis_job_datastore(id).await;
            self.count("analysis_job_datastore", &answer);
            Ok(answer
                .map_err(source_error)?
                .into_iter()
                .filter(|f| f.is_active)
                .map(|f| JobOutput {
                    path: f.path,
                    file_type_id: f.file_type_id,
                    source_id: f.source_id.unwrap_or_default(),
                })
                .collect())
        })
    }
}

fn job_truth(job: smrtshare_smrtlink::model::AnalysisJob) -> AnalysisJobTruth {
    AnalysisJobTruth {
        id: job.id,
        project_id: job.project_id,
        state: job.state.as_str().to_owned(),
        name: job.name,
        error: job.error_message.unwrap_or_default(),
    }
}
