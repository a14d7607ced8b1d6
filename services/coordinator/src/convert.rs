//! Stored rows to wire messages.

use prost::Message as _;
use smrtshare_api::coordinator::v1 as pb;

use crate::clock::timestamp;
use crate::model::TaskState;
use crate::store::{ChangeRow, ProjectRow, TaskRow};

/// A task for the wire; the report is included only when asked (GetChange, WatchChange).
pub fn task(row: &TaskRow, with_report: bool) -> pb::Task {
    let report = if with_report {
        row.report
            .as_deref()
            .and_then(|bytes| pb::TaskReport::decode(bytes).ok())
    } else {
        None
    };
    pb::Task {
        task_id: row.task_id,
        project_id: row.project_id,
        target: row.target.to_proto(),
        operation: row.operation.map(|o| o.to_proto()).unwrap_or(0),
        state: row.state.to_proto(),
        attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
        next_run_at: if row.state == TaskState::Ready {
            timestamp(row.next_run_at)
        } else {
            None
        },
        lease_expires_at: if row.state == TaskState::Working {
            timestamp(row.lease_expires_at)
        } else {
            None
        },
        retry_scheduled: row.state == TaskState::Ready && row.attempts > 0,
        last_message: row.last_message.clone(),
        report,
        created_at: timestamp(row.created_at),
        finished_at: timestamp(row.finished_at),
        superseded_by: row.superseded_by,
    }
}

/// A change for the wire.
pub fn change(
    row: &ChangeRow,
    tasks: &[TaskRow],
    effects: Vec<i64>,
    with_reports: bool,
) -> pb::Change {
    pb::Change {
        change_id: row.change_id,
        project_id: row.project_id,
        reason: row.reason.to_proto(),
        kind: row.kind.to_proto(),
        status: row.status.to_proto(),
        message: row.message.clone(),
        tasks: tasks.iter().map(|t| task(t, with_reports)).collect(),
        caused_by: row.caused_by,
        effects,
        created_at: timestamp(row.created_at),
        read_at: timestamp(row.read_at),
        request: row.request.clone(),
    }
}

/// A project for the wire.
pub fn project(row: &ProjectRow) -> pb::Project {
    pb::Project {
        project_id: row.project_id,
        name: row.name.clone(),
        directory: row.directory.clone(),
        members: row
            .members
            .iter()
            .map(|m| pb::Member {
                login: m.login.clone(),
                role: m.role.clone(),
                shared: m.is_shared(),
            })
            .collect(),
        datasets: row
            .datasets
            .iter()
            .map(|d| pb::ProjectDataset {
                uuid: d.uuid.clone(),
                name: d.name.clone(),
                path: d.path.clone(),
                parent_uuid: d.parent_uuid.clone().unwrap_or_default(),
                num_children: d.num_children,
            })
            .collect(),
        deleted: row.deleted,
        read_at: timestamp(row.read_at),
        updated_at: parse_rfc3339(&row.updated_at),
        targets: row
            .targets
            .iter()
            .map(|t| pb::TargetStatus {
                target: t.target.to_proto(),
                state: t.state.to_proto(),
                task_id: t.task_id,
                change_id: t.change_id,
                last_message: t.last_message.clone(),
                finished_at: timestamp(t.finished_at),
            })
            .collect(),
        analysis_jobs: row
            .jobs
            .iter()
            .map(|j| pb::AnalysisJobStatus {
                job_id: j.job_id,
                name: j.name.clone(),
                state: j.state.clone(),
                message: j.message.clone(),
                outputs: u32::try_from(j.outputs).unwrap_or(u32::MAX),
                next_check_at: timestamp(j.next_check_at),
                checked_at: timestamp(j.checked_at),
            })
            .collect(),
    }
}

fn parse_rfc3339(text: &str) -> Option<prost_types::Timestamp> {
    text.parse::<prost_types::Timestamp>().ok()
}
