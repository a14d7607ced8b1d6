//! The `smrtshare.coordinator.v1.Coordinator` gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_api::coordinator::v1::coordinator_server::Coordinator;
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::metrics::Metrics;
use crate::model::{ChangeKind, ChangeReason, ChangeStatus};
use crate::resync::{Resync, ResyncError};
use crate::store::{ChangeFilter, NewChange, Store, StoreError};

/// Errors of the coordinator API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing with that id.
    #[error("{0}")]
    NotFound(String),
    /// Another resync holds the lease.
    #[error("another resync is running; try again when it finishes")]
    Busy,
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::Busy => Status::aborted(error.to_string()),
            Error::Store(StoreError::Unavailable(e) | StoreError::Conflict(e)) => {
                tracing::error!(error = e, "database unavailable");
                Status::unavailable("the coordinator's database is unavailable")
            }
            Error::Store(StoreError::Internal(e)) => {
                tracing::error!(error = e, "database error");
                Status::internal("the coordinator's database failed a statement")
            }
            Error::Store(StoreError::Corrupt(m)) => {
                tracing::error!(detail = m, "corrupt row");
                Status::internal("a stored row could not be read")
            }
            // The store answers a lost claim as "not recorded"; no RPC writes under a claim.
            Error::Store(error @ StoreError::Lost) => Status::aborted(error.to_string()),
        }
    }
}

impl From<ResyncError> for Error {
    fn from(error: ResyncError) -> Self {
        match error {
            ResyncError::Busy => Error::Busy,
            lost @ ResyncError::LeaseLost => {
                Error::Store(StoreError::Unavailable(lost.to_string()))
            }
            ResyncError::Store(e) => Error::Store(e),
        }
    }
}

/// The service.
#[derive(Clone, Debug)]
pub struct CoordinatorService {
    store: Store,
    resync: Resync,
    wake_readers: Arc<Notify>,
    watch_poll: Duration,
    metrics: Metrics,
}

impl CoordinatorService {
    /// A service over the store; `resync` serves the Resync RPC.
    pub fn new(store: Store, resync: Resync, wake_readers: Arc<Notify>, metrics: Metrics) -> Self {
        Self {
            store,
            resync,
            wake_readers,
            watch_poll: Duration::from_millis(100),
            metrics,
        }
    }

    async fn notify(&self, project_id: i64, kind: ChangeKind) -> Result<i64, Error> {
        if kind != ChangeKind::ProjectsCreated {
            project_field(project_id)?;
        }
        let new = NewChange {
            project_id,
            reason: ChangeReason::Manual,
            kind,
            request: String::new(),
            caused_by: 0,
            settle_until: self.store.now(),
            // Read as soon as possible: a notification never delays a settling change.
            max_settle_ms: 0,
        };
        let (change_id, merged) = self.store.record_change(&new).await?;
        tracing::info!(change_id, project_id, %kind, merged, "change notified");
        if !merged {
            self.metrics
                .change_recorded(ChangeReason::Manual.as_str(), kind.as_str());
        }
        self.wake_readers.notify_one();
        Ok(change_id)
    }

    async fn load_change(&self, change_id: i64, with_reports: bool) -> Result<pb::Change, Error> {
        let row = self
            .store
            .get_change(change_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("change {change_id} does not exist")))?;
        let tasks = self.store.tasks_of_change(change_id).await?;
        let effects = self.store.effects_of(change_id).await?;
        Ok(convert::change(&row, &tasks, effects, with_reports))
    }
}

fn project_field(project_id: i64) -> Result<(), Error> {
    match project_id {
        1 => Err(Error::InvalidArgument(
            "project_id: project 1 (the General Project) is never shared".into(),
        )),
        id if id < 1 => Err(Error::InvalidArgument(format!(
            "project_id: must be a SMRT Link project id greater than 1, got {id}"
        ))),
        _ => Ok(()),
    }
}

fn change_field(change_id: i64) -> Result<(), Error> {
    if change_id < 1 {
        return Err(Error::InvalidArgument(format!(
            "change_id: must be greater than 0, got {change_id}"
        )));
    }
    Ok(())
}

fn page_token(token: &str, rpc: &str) -> Result<i64, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix("after:")
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .ok_or_else(|| Error::InvalidArgument(format!("page_token: not a token returned by {rpc}")))
}

fn page_size(size: u32, default: u32, max: u32) -> Result<i64, Error> {
    match size {
        0 => Ok(i64::from(default)),
        s if s > max => Err(Error::InvalidArgument(format!(
            "page_size: at most {max}, got {s}"
        ))),
        s => Ok(i64::from(s)),
    }
}

/// True when nothing more will happen to the change without a new event.
fn is_final(change: &pb::Change) -> bool {
    let status = match pb::ChangeStatus::try_from(change.status) {
        Ok(pb::ChangeStatus::Ok) => ChangeStatus::Ok,
        Ok(pb::ChangeStatus::Partial) => ChangeStatus::Partial,
        Ok(pb::ChangeStatus::Failed) => ChangeStatus::Failed,
        _ => ChangeStatus::InProgress,
    };
    crate::rules::is_final(status)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchChangeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn notify_project_changed(
        &self,
        request: Request<pb::NotifyProjectChangedRequest>,
    ) -> Result<Response<pb::NotifyProjectChangedResponse>, Status> {
        let change_id = self
            .notify(request.into_inner().project_id, ChangeKind::ProjectChanged)
            .await?;
        Ok(Response::new(pb::NotifyProjectChangedResponse {
            change_id,
        }))
    }

    async fn notify_project_deleted(
        &self,
        request: Request<pb::NotifyProjectDeletedRequest>,
    ) -> Result<Response<pb::NotifyProjectDeletedResponse>, Status> {
        let change_id = self
            .notify(request.into_inner().project_id, ChangeKind::ProjectDeleted)
            .await?;
        Ok(Response::new(pb::NotifyProjectDeletedResponse {
            change_id,
        }))
    }

    async fn notify_projects_created(
        &self,
        _request: Request<pb::NotifyProjectsCreatedRequest>,
    ) -> Result<Response<pb::NotifyProjectsCreatedResponse>, Status> {
        let change_id = self.notify(0, ChangeKind::ProjectsCreated).await?;
        Ok(Response::new(pb::NotifyProjectsCreatedResponse {
            change_id,
        }))
    }

    async fn get_change(
        &self,
        request: Request<pb::GetChangeRequest>,
    ) -> Result<Response<pb::GetChangeResponse>, Status> {
        let id = request.into_inner().change_id;
        change_field(id)?;
        let change = self.load_change(id, true).await?;
        Ok(Response::new(pb::GetChangeResponse {
            change: Some(change),
        }))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let r = request.into_inner();
        if r.project_id < 0 {
            return Err(Error::InvalidArgument(format!(
                "project_id: must be 0 (any) or a project id, got {}",
                r.project_id
            ))
            .into());
        }
        let status = match pb::ChangeStatus::try_from(r.status) {
            Ok(pb::ChangeStatus::Unspecified) => None,
            Ok(pb::ChangeStatus::InProgress) => Some(ChangeStatus::InProgress),
            Ok(pb::ChangeStatus::Ok) => Some(ChangeStatus::Ok),
            Ok(pb::ChangeStatus::Partial) => Some(ChangeStatus::Partial),
            Ok(pb::ChangeStatus::Failed) => Some(ChangeStatus::Failed),
            Err(_) => {
                return Err(
                    Error::InvalidArgument(format!("status: unknown value {}", r.status)).into(),
                );
            }
        };
        let limit = page_size(r.page_size, 50, 500)?;
        let before = page_token(&r.page_token, "ListChanges")?;
        let rows = self
            .store
            .list_changes(ChangeFilter {
                project_id: r.project_id,
                status,
                before,
                limit,
            })
            .await
            .map_err(Error::from)?;
        // Tasks and effects of the whole page in two statements, not two per change.
        let ids: Vec<i64> = rows.iter().map(|row| row.change_id).collect();
        let mut tasks = self
            .store
            .tasks_of_changes(&ids)
            .await
            .map_err(Error::from)?;
        let mut effects = self
            .store
            .effects_of_changes(&ids)
            .await
            .map_err(Error::from)?;
        let changes = rows
            .iter()
            .map(|row| {
                let tasks = tasks.remove(&row.change_id).unwrap_or_default();
                let effects = effects.remove(&row.change_id).unwrap_or_default();
                convert::change(row, &tasks, effects, false)
            })
            .collect();
        let next_page_token = match rows.last() {
            Some(last) if i64::try_from(rows.len()).unwrap_or(0) == limit => {
                format!("after:{}", last.change_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListChangesResponse {
            changes,
            next_page_token,
        }))
    }

    type WatchChangeStream = WatchStream;

    async fn watch_change(
        &self,
        request: Request<pb::WatchChangeRequest>,
    ) -> Result<Response<Self::WatchChangeStream>, Status> {
        let id = request.into_inner().change_id;
        change_field(id)?;
        let first = self.load_change(id, true).await?;
        let service = self.clone();
        let stream = async_stream(move |tx| async move {
            let mut seen: std::collections::BTreeMap<i64, (i32, u32)> = first
                .tasks
                .iter()
                .map(|t| (t.task_id, (t.state, t.attempts)))
                .collect();
            let mut last_status = first.status;
            let done = is_final(&first);
            if tx
                .send(Ok(pb::WatchChangeResponse {
                    change: Some(first),
                    task: None,
                }))
                .await
                .is_err()
                || done
            {
                return;
            }
            loop {
                tokio::time::sleep(service.watch_poll).await;
                let change = match service.load_change(id, true).await {
                    Ok(change) => change,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                let mut sent_any = false;
                for task in &change.tasks {
                    let now = (task.state, task.attempts);
                    if seen.get(&task.task_id) != Some(&now) {
                        seen.insert(task.task_id, now);
                        sent_any = true;
                        let message = pb::WatchChangeResponse {
                            change: Some(change.clone()),
                            task: Some(task.clone()),
                        };
                        if tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
                if !sent_any
                    && change.status != last_status
                    && tx
                        .send(Ok(pb::WatchChangeResponse {
                            change: Some(change.clone()),
                            task: None,
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
                last_status = change.status;
                if is_final(&change) {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        let id = request.into_inner().project_id;
        project_field(id)?;
        let row = self
            .store
            .get_project(id)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "project {id} is not known; it has never been read from SMRT Link"
                ))
            })?;
        Ok(Response::new(pb::GetProjectResponse {
            project: Some(convert::project(&row)),
        }))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size, 100, 1000)?;
        let after = page_token(&r.page_token, "ListProjects")?;
        let rows = self
            .store
            .list_projects(after, limit, r.include_deleted)
            .await
            .map_err(Error::from)?;
        let next_page_token = match rows.last() {
            Some(last) if i64::try_from(rows.len()).unwrap_or(0) == limit => {
                format!("after:{}", last.project_id)
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListProjectsResponse {
            projects: rows.iter().map(convert::project).collect(),
            next_page_token,
        }))
    }

    async fn resync(
        &self,
        request: Request<pb::ResyncRequest>,
    ) -> Result<Response<pb::ResyncResponse>, Status> {
        let r = request.into_inner();
        let report = self
            .resync
            .run(r.dry_run, r.force)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ResyncResponse {
            dry_run: report.dry_run,
            listed: u32::try_from(report.listed).unwrap_or(u32::MAX),
            listing_complete: report.listing_complete,
            removals_refused: report.removals_refused,
            refused_reason: report.refused_reason,
            items: report
                .items
                .into_iter()
                .map(|i| pb::ResyncItem {
                    project_id: i.project_id,
                    target: i.target.to_proto(),
                    operation: i.operation.to_proto(),
                    reason: i.reason,
                    change_id: i.change_id,
                })
                .collect(),
            in_sync: u32::try_from(report.in_sync).unwrap_or(u32::MAX),
            warnings: report.warnings,
        }))
    }
}

/// A stream fed by a task through a bounded channel; the task stops when the client goes away.
fn async_stream<F, Fut>(
    body: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::WatchChangeResponse, Status>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::WatchChangeResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
