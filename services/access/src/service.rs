//! The gRPC service `smrtshare.access.v1.Access`: wire types become domain types here, once,
//! and reports become wire types on the way out.

use std::sync::Arc;

use smrtshare_api::access::v1 as pb;
use smrtshare_common::auth::change_id;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::error::Error;
use crate::model::{self, ApplyRequest, CapUsage, MemberOutcome, OutcomeKind, Repair, RepairKind};
use crate::reconcile::Core;
use crate::view::{project_view, rule_to_wire, unresolved_view};

/// The Access service over a [`Core`].
#[derive(Clone, Debug)]
pub struct AccessService {
    core: Arc<Core>,
}

impl AccessService {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn span<T>(method: &'static str, request: &Request<T>) -> tracing::Span {
    let change = change_id(request.metadata()).unwrap_or_default();
    tracing::info_span!("access", method, change_id = change)
}

fn outcome_to_wire(outcome: MemberOutcome) -> pb::MemberOutcome {
    let permanent = outcome.is_permanent();
    pb::MemberOutcome {
        permanent,
        login: outcome.login,
        outcome: match outcome.kind {
            OutcomeKind::Granted => pb::MemberOutcomeKind::Granted,
            OutcomeKind::AlreadyGranted => pb::MemberOutcomeKind::AlreadyGranted,
            OutcomeKind::Revoked => pb::MemberOutcomeKind::Revoked,
            OutcomeKind::UnknownIdentity => pb::MemberOutcomeKind::UnknownIdentity,
            OutcomeKind::Failed => pb::MemberOutcomeKind::Failed,
            OutcomeKind::Moved => pb::MemberOutcomeKind::Moved,
            OutcomeKind::Renewed => pb::MemberOutcomeKind::Renewed,
        } as i32,
        identity_id: outcome.identity_id.unwrap_or_default(),
        access_id: outcome.access_id.unwrap_or_default(),
        globus_code: outcome.globus_code.unwrap_or_default(),
        message: outcome.message,
        invited: outcome.invited,
    }
}

fn repair_to_wire(repair: Repair) -> pb::Repair {
    pb::Repair {
        kind: match repair.kind {
            RepairKind::Recreated => pb::RepairKind::Recreated,
            RepairKind::Renewed => pb::RepairKind::Renewed,
            RepairKind::Adopted => pb::RepairKind::Adopted,
            RepairKind::Deleted => pb::RepairKind::Deleted,
            RepairKind::Created => pb::RepairKind::Created,
            RepairKind::External => pb::RepairKind::External,
            RepairKind::Migrated => pb::RepairKind::Migrated,
            RepairKind::MemberAdded => pb::RepairKind::MemberAdded,
            RepairKind::GroupRecreated => pb::RepairKind::GroupRecreated,
        } as i32,
        rule: repair.rule.as_ref().map(rule_to_wire),
        done: repair.done,
        error: repair.error.unwrap_or_default(),
        project_id: repair.project_id,
        detail: repair.detail,
    }
}

fn caps_to_wire(caps: CapUsage) -> pb::CapUsage {
    pb::CapUsage {
        smrtshare_rules: caps.smrtshare_rules,
        foreign_rules: caps.foreign_rules,
        collection_cap: caps.collection_cap,
        busiest_identity: caps.busiest_identity.unwrap_or_default(),
        busiest_identity_rules: caps.busiest_identity_rules,
        identity_cap: caps.identity_cap,
    }
}

fn log_failures(members: &[MemberOutcome]) {
    for m in members.iter().filter(|m| m.kind == OutcomeKind::Failed) {
        if m.globus_code.as_deref() == Some("LimitExceeded") {
            tracing::error!(login = %m.login, message = %m.message, "member not granted: globus rule limit reached");
        } else {
            tracing::warn!(login = %m.login, code = ?m.globus_code, message = %m.message, "member failed");
        }
    }
}

#[tonic::async_trait]
impl pb::access_server::Access for AccessService {
    async fn apply_project_access(
        &self,
        request: Request<pb::ApplyProjectAccessRequest>,
    ) -> Result<Response<pb::ApplyProjectAccessResponse>, Status> {
        let span = span("ApplyProjectAccess", &request);
        let wire = request.into_inner();
        async move {
            let request = ApplyRequest::new(wire.project_id, wire.path, wire.logins, wire.dry_run)?;
            tracing::info!(project_id = request.project_id, path = %request.path, members = request.logins.len(), dry_run = request.dry_run, "apply");
            let report = self.core.apply(request).await?;
            log_failures(&report.members);
            tracing::info!(complete = report.complete, outcomes = report.members.len(), "apply done");
            Ok::<_, Error>(pb::ApplyProjectAccessResponse {
                project_id: report.project_id,
                path: report.path,
                dry_run: report.dry_run,
                members: report.members.into_iter().map(outcome_to_wire).collect(),
                complete: report.complete,
            })
        }
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
    }

    async fn revoke_project_access(
        &self,
        request: Request<pb::RevokeProjectAccessRequest>,
    ) -> Result<Response<pb::RevokeProjectAccessResponse>, Status> {
        let span = span("RevokeProjectAccess", &request);
        let wire = request.into_inner();
        async move {
            let project_id = model::project_id_field(wire.project_id)?;
            tracing::info!(project_id, dry_run = wire.dry_run, "revoke");
            let report = self.core.revoke(project_id, wire.dry_run).await?;
            log_failures(&report.members);
            Ok::<_, Error>(pb::RevokeProjectAccessResponse {
                project_id: report.project_id,
                dry_run: report.dry_run,
                members: report.members.into_iter().map(outcome_to_wire).collect(),
                complete: report.complete,
            })
        }
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
    }

    async fn get_project_access(
        &self,
        request: Request<pb::GetProjectAccessRequest>,
    ) -> Result<Response<pb::GetProjectAccessResponse>, Status> {
        let project_id = model::project_id_field(request.get_ref().project_id)?;
        let registry = self.core.registry();
        let (rules, group) = project_view(registry, project_id)
            .await
            .map_err(Error::from)?;
        let unresolved = unresolved_view(registry, project_id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::GetProjectAccessResponse {
            project_id,
            rules,
            group,
            unresolved,
        }))
    }

    type ListRulesStream = ReceiverStream<Result<pb::ListRulesResponse, Status>>;

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<Self::ListRulesStream>, Status> {
        let project = request.get_ref().project_id;
        if project < 0 {
            return Err(
                Error::invalid("project_id", "must be 0 (every project) or a project id").into(),
            );
        }
        let only = (project > 0).then_some(project);
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let core = self.core.clone();
        tokio::spawn(async move {
            let projects = match only {
                Some(project) => Ok(vec![project]),
                None => core.registry().project_ids().await,
            };
            let projects = match projects {
                Ok(projects) => projects,
                Err(error) => {
                    let _ = sender.send(Err(Status::from(Error::from(error)))).await;
                    return;
                }
            };
            for project in projects {
                let rules = match project_view(core.registry(), project).await {
                    Ok((rules, _)) => rules,
                    Err(error) => {
                        let _ = sender.send(Err(Status::from(Error::from(error)))).await;
                        return;
                    }
                };
                for rule in rules {
                    let item = pb::ListRulesResponse { rule: Some(rule) };
                    if sender.send(Ok(item)).await.is_err() {
                        return; // the caller went away
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let span = span("Verify", &request);
        let dry_run = request.get_ref().dry_run;
        async move {
            let report = self.core.verify(dry_run).await?;
            Ok::<_, Error>(pb::VerifyResponse {
                dry_run: report.dry_run,
                checked: report.checked,
                foreign: report.foreign,
                repairs: report.repairs.into_iter().map(repair_to_wire).collect(),
                caps: Some(caps_to_wire(report.caps)),
                warnings: report.warnings,
            })
        }
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
    }
}
