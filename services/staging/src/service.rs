//! The `smrtshare.staging.v1.Staging` gRPC service.
//!
//! Every operation runs in a task of its own that takes the project locks, does the filesystem
//! work on the blocking pool and stores the records; the RPC waits for it at most the configured
//! time limit (DEADLINE_EXCEEDED after that, while the task finishes and keeps the records true).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use smrtshare_api::staging::v1 as pb;
use smrtshare_common::auth::change_id;
use smrtshare_common::db::now_millis;
use tonic::{Request, Response, Status};

use crate::analysis::JobRules;
use crate::answer;
use crate::apply::{self, Ctx, Refusal};
use crate::budget::ParseBudget;
use crate::convert;
use crate::error::Error;
use crate::fs::Tree;
use crate::locks::Locks;
use crate::model::{ApplyReport, ApplyRequest, DatasetState, ItemId, ProjectId, RemoveReport};
use crate::names::Namer;
use crate::records::Records;
use crate::remove;
use crate::resolve::SourceRoots;
use crate::sourcecache::SourceCache;
use crate::verify;
use crate::xml::Limits;

/// The running service's state, available once start-up finished.
#[derive(Debug)]
pub struct Inner {
    pub(crate) tree: Tree,
    pub(crate) roots: SourceRoots,
    pub(crate) namer: Namer,
    pub(crate) job_rules: JobRules,
    pub(crate) limits: Limits,
    pub(crate) cache: SourceCache,
    pub(crate) budget: ParseBudget,
    pub(crate) records: Records,
    pub(crate) locks: Locks,
    pub(crate) fs_timeout: Duration,
}

impl Inner {
    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            tree: &self.tree,
            roots: &self.roots,
            namer: &self.namer,
            job_rules: self.job_rules,
            limits: self.limits,
            cache: &self.cache,
            budget: &self.budget,
        }
    }

    /// Runs `work` in a task of its own and waits for it at most the time limit.
    async fn bounded<T: Send + 'static>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(work.await);
        });
        match tokio::time::timeout(self.fs_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Internal(format!(
                "the {what} task ended without an answer"
            ))),
            Err(_) => Err(Error::Timeout(format!(
                "the {what} did not finish within {}; it goes on in the background and the project stays locked until it ends",
                humantime::format_duration(self.fs_timeout)
            ))),
        }
    }

    async fn apply(self: Arc<Self>, request: ApplyRequest) -> Result<ApplyReport, Error> {
        let inner = self.clone();
        self.bounded("apply", async move {
            let items: Vec<ItemId> = request
                .datasets
                .iter()
                .map(|d| ItemId::Dataset(d.uuid))
                .chain(request.jobs.iter().map(|j| ItemId::Job(j.id)))
                .collect();
            let holders = |inner: &Inner| -> BTreeSet<ProjectId> {
                items
                    .iter()
                    .filter_map(|i| inner.records.holder_of(i))
                    .chain([request.project])
                    .collect()
            };
            // Lock this project and every project a requested dataset or job moves from; retry
            // when one changed hands while waiting.
            let held = loop {
                let held = inner.locks.lock(holders(&inner)).await;
                if holders(&inner).is_subset(held.ids()) {
                    break held;
                }
            };
            let others = held
                .ids()
                .iter()
                .filter(|id| **id != request.project)
                .filter_map(|id| inner.records.project(*id))
                .collect();
            let input = apply::Input {
                project: inner.records.project(request.project),
                others,
                request,
                now: now_millis(),
            };
            let blocking = inner.clone();
            let output = tokio::task::spawn_blocking(move || apply::apply(&blocking.ctx(), input))
                .await
                .map_err(|e| Error::Internal(format!("apply task: {e}")))?
                .map_err(|refusal| match refusal {
                    Refusal::Conflict(m) => Error::Conflict(m),
                    Refusal::Filesystem(m) => Error::Filesystem(m),
                })?;
            if !output.changes.is_empty() {
                inner.records.store(output.changes).await?;
            }
            drop(held);
            Ok(output.report)
        })
        .await
    }

    async fn remove(
        self: Arc<Self>,
        project: ProjectId,
        dry_run: bool,
    ) -> Result<RemoveReport, Error> {
        let inner = self.clone();
        self.bounded("removal", async move {
            let held = inner.locks.lock([project].into()).await;
            let record = inner.records.project(project);
            let blocking = inner.clone();
            let output = tokio::task::spawn_blocking(move || {
                remove::remove_project(&blocking.ctx(), project, record, dry_run, now_millis())
            })
            .await
            .map_err(|e| Error::Internal(format!("remove task: {e}")))?
            .map_err(Error::Filesystem)?;
            if let Some(change) = output.change {
                inner.records.store(vec![change]).await?;
            }
            drop(held);
            Ok(output.report)
        })
        .await
    }

    async fn get(
        self: Arc<Self>,
        project: ProjectId,
        verify: bool,
    ) -> Result<pb::GetProjectResponse, Error> {
        let inner = self.clone();
        self.bounded("verification", async move {
            let held = inner.locks.lock([project].into()).await;
            let record = inner
                .records
                .project(project)
                .ok_or_else(|| Error::NotFound(format!("project {project} is not staged")))?;
            let drift = if verify {
                let blocking = inner.clone();
                let checked = record.clone();
                tokio::task::spawn_blocking(move || verify::verify(&blocking.tree, &checked))
                    .await
                    .map_err(|e| Error::Internal(format!("verify task: {e}")))?
            } else {
                Vec::new()
            };
            drop(held);
            Ok(convert::get_response(&record, verify, drift))
        })
        .await
    }
}

/// A handle on the service's state, shared with the gRPC service; tests read counters from it.
#[derive(Clone, Debug, Default)]
pub struct Handle {
    state: Arc<OnceLock<Arc<Inner>>>,
    refused: Arc<OnceLock<String>>,
    metrics: crate::metrics::Metrics,
}

impl Handle {
    /// A handle whose service is not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start-up refused to serve (the layout is wrong): every call answers with `reason`.
    pub(crate) fn refuse(&self, reason: String) {
        let _ = self.refused.set(reason);
    }

    pub(crate) fn set(&self, inner: Arc<Inner>) {
        self.metrics.projects(inner.records.project_count());
        let _ = self.state.set(inner);
    }

    /// Resolved layouts the source cache gave back and those resolved anew, since start (`None`
    /// before start-up).
    pub fn layout_lookups(&self) -> Option<(u64, u64)> {
        self.state.get().map(|inner| inner.cache.layout_counts())
    }

    /// The service's metrics (served on `--metrics-listen`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Counts one answered RPC and, for applies and removes, its actions.
    fn observe<T>(
        &self,
        method: &'static str,
        started: Instant,
        answer: &Result<Response<T>, Status>,
        actions: impl FnOnce(&T) -> &[pb::Action],
    ) {
        let code = match answer {
            Ok(response) => {
                self.metrics.actions(actions(response.get_ref()));
                tonic::Code::Ok
            }
            Err(status) => status.code(),
        };
        self.metrics.request(method, code, started.elapsed());
        if let Some(inner) = self.state.get() {
            self.metrics.projects(inner.records.project_count());
            self.metrics.mutating_calls(inner.tree.mutating_calls());
            self.metrics.source_cache(
                inner.cache.doc_counts(),
                inner.cache.listing_counts(),
                inner.cache.layout_counts(),
            );
        }
    }

    fn inner(&self) -> Result<Arc<Inner>, Error> {
        if let Some(reason) = self.refused.get() {
            return Err(Error::Refused(reason.clone()));
        }
        self.state.get().cloned().ok_or_else(|| {
            Error::Starting(
                "staging is starting (sweeping the work area, checking its records); retry".into(),
            )
        })
    }

    /// Mutating filesystem calls made under the root since start (0 before start-up finished).
    pub fn mutating_calls(&self) -> u64 {
        self.state
            .get()
            .map(|i| i.tree.mutating_calls())
            .unwrap_or(0)
    }
}

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct StagingService {
    handle: Handle,
    /// Largest answer encoded, in bytes.
    answer_limit: usize,
}

impl StagingService {
    /// The service over a handle, answering in messages of at most `answer_limit` bytes.
    pub fn new(handle: Handle, answer_limit: usize) -> Self {
        Self {
            handle,
            answer_limit,
        }
    }
}

#[tonic::async_trait]
impl pb::staging_server::Staging for StagingService {
    async fn apply_project(
        &self,
        request: Request<pb::ApplyProjectRequest>,
    ) -> Result<Response<pb::ApplyProjectResponse>, Status> {
        let started = Instant::now();
        let answer = self.apply_project_inner(request).await;
        self.handle
            .observe("ApplyProject", started, &answer, |r| &r.actions);
        answer
    }

    async fn remove_project(
        &self,
        request: Request<pb::RemoveProjectRequest>,
    ) -> Result<Response<pb::RemoveProjectResponse>, Status> {
        let started = Instant::now();
        let answer = self.remove_project_inner(request).await;
        self.handle
            .observe("RemoveProject", started, &answer, |r| &r.actions);
        answer
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        let started = Instant::now();
        let answer = self.get_project_inner(request).await;
        self.handle.observe("GetProject", started, &answer, |_| &[]);
        answer
    }

    type ListProjectsStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListProjectsResponse, Status>>>;

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<Self::ListProjectsStream>, Status> {
        let started = Instant::now();
        let answer = self.list_projects_inner(request).await;
        self.handle
            .observe("ListProjects", started, &answer, |_| &[]);
        answer
    }
}

impl StagingService {
    async fn apply_project_inner(
        &self,
        request: Request<pb::ApplyProjectRequest>,
    ) -> Result<Response<pb::ApplyProjectResponse>, Status> {
        let change = change_id(request.metadata());
        let inner = self.handle.inner()?;
        let request = ApplyRequest::try_from(request.into_inner())?;
        answer::check_room(
            request.datasets.len() + request.jobs.len(),
            self.answer_limit,
        )
        .map_err(|e| Error::InvalidArgument(format!("datasets and analysis_jobs: {e}")))?;
        let project = request.project;
        if let Some(holder) = inner
            .records
            .holder_of_directory(&request.directory)
            .filter(|h| *h != project)
        {
            return Err(Error::Conflict(format!(
                "the directory {:?} is project {holder}'s",
                request.directory
            ))
            .into());
        }
        let started = Instant::now();
        let dry_run = request.dry_run;
        let report = inner.apply(request).await?;
        log_failures(&report, change);
        let (actions, mutating_calls) = (report.actions.len(), report.mutating_calls);
        let mut response = convert::apply_response(report);
        answer::fit_apply(&mut response, self.answer_limit);
        tracing::info!(
            project = project.get(),
            change_id = change,
            dry_run,
            actions,
            mutating_calls,
            complete = response.complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "project applied"
        );
        Ok(Response::new(response))
    }

    async fn remove_project_inner(
        &self,
        request: Request<pb::RemoveProjectRequest>,
    ) -> Result<Response<pb::RemoveProjectResponse>, Status> {
        let change = change_id(request.metadata());
        let inner = self.handle.inner()?;
        let request = request.into_inner();
        let project = convert::project_id(request.project_id)?;
        let report = inner.remove(project, request.dry_run).await?;
        tracing::info!(
            project = project.get(),
            change_id = change,
            dry_run = request.dry_run,
            actions = report.actions.len(),
            mutating_calls = report.mutating_calls,
            removed = report.removed,
            foreign = report.foreign_total,
            "project removed"
        );
        let mut response = convert::remove_response(report);
        answer::fit_remove(&mut response, self.answer_limit);
        Ok(Response::new(response))
    }

    async fn get_project_inner(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        let inner = self.handle.inner()?;
        let request = request.into_inner();
        let project = convert::project_id(request.project_id)?;
        Ok(Response::new(inner.get(project, request.verify).await?))
    }

    async fn list_projects_inner(
        &self,
        _request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<<Self as pb::staging_server::Staging>::ListProjectsStream>, Status> {
        let inner = self.handle.inner()?;
        let items: Vec<Result<pb::ListProjectsResponse, Status>> = inner
            .records
            .all()
            .iter()
            .map(|p| Ok(convert::list_item(p)))
            .collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }
}

/// One warning per dataset that failed, with the reason and whether a retry can cure it.
fn log_failures(report: &ApplyReport, change: Option<i64>) {
    for r in &report.results {
        let DatasetState::Failed(fault) = &r.state else {
            continue;
        };
        let (project, permanent) = (report.project.get(), fault.permanent);
        match r.item {
            ItemId::Dataset(uuid) => tracing::warn!(
                project,
                change_id = change,
                dataset = %uuid,
                path = r.path,
                permanent,
                dry_run = report.dry_run,
                reason = fault.text,
                "dataset not staged"
            ),
            ItemId::Job(job) => tracing::warn!(
                project,
                change_id = change,
                analysis_job = job.get(),
                path = r.path,
                files_staged = r.file_count,
                permanent,
                dry_run = report.dry_run,
                reason = fault.text,
                "analysis job outputs not all staged"
            ),
        }
    }
}
