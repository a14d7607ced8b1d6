//! The admin API for analysis jobs and the stand-in's clock (bodies in snake_case; schedule
//! steps as in [`super::schedule`], the same list as a seed's `standinSchedule`).
//!
//! | route | does |
//! |---|---|
//! | `POST /admin/jobs` `{name, project_id?, state, pipeline?, entry_points?: [uuid], outputs?: [{path, file_type_id, name?, source_id?}], schedule?: [step]}` | add a job → 201 `{id, uuid}` |
//! | `PATCH /admin/jobs/{id}` `{name?, project_id?, is_active?}` | rename, move to another project, soft-delete or restore → the job as SMRT Link serves it |
//! | `DELETE /admin/jobs/{id}` | remove a job altogether (404 from then on) → 204 |
//! | `PUT /admin/jobs/{id}/state` `{state, error_message?}` | move a job now (drops the rest of its schedule) → 204 |
//! | `PUT /admin/jobs/{id}/schedule` `{schedule: [step]}` | replace its schedule, relative steps from now (`[]` stops it) → 204 |
//! | `GET /admin/clock` | `{now, offset_seconds}` |
//! | `POST /admin/clock/advance` `{seconds}` | move the clock forward → `{now, offset_seconds}` |

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::StandInError;
use super::admin::general;
use super::api::uuid_param;
use super::control::Control;
use super::job_new::{JobOutput, JobSeed};
use super::schedule;
use super::store::format_time;
use smrtshare_smrtlink::model::JobState;

type Result<T> = std::result::Result<T, StandInError>;

pub(crate) fn routes() -> Router<Control> {
    Router::new()
        .route("/admin/jobs", post(add_job))
        .route(
            "/admin/jobs/{id}",
            axum::routing::patch(patch_job).delete(delete_job),
        )
        .route("/admin/jobs/{id}/state", put(set_job_state))
        .route("/admin/jobs/{id}/schedule", put(set_job_schedule))
        .route("/admin/clock", get(clock))
        .route("/admin/clock/advance", post(advance_clock))
}

fn job_id(text: &str) -> Result<i64> {
    text.parse()
        .map_err(|_| StandInError::Invalid(format!("{text:?} is not a job id")))
}

fn job_state(text: &str) -> Result<JobState> {
    JobState::parse(text)
        .ok_or_else(|| StandInError::Invalid(format!("unknown job state {text:?}")))
}

fn steps(value: Option<&Value>) -> Result<Vec<schedule::ScheduleStep>> {
    value.map_or(Ok(Vec::new()), |v| schedule::parse(v, "schedule"))
}

#[derive(Debug, Deserialize)]
struct OutputBody {
    path: String,
    file_type_id: String,
    name: Option<String>,
    source_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JobBody {
    name: String,
    #[serde(default = "general")]
    project_id: i64,
    state: String,
    pipeline: Option<String>,
    #[serde(default)]
    entry_points: Vec<String>,
    #[serde(default)]
    outputs: Vec<OutputBody>,
    schedule: Option<Value>,
}

async fn add_job(State(control): State<Control>, Json(body): Json<JobBody>) -> Result<Response> {
    let seed = JobSeed {
        name: body.name,
        project_id: body.project_id,
        state: job_state(&body.state)?,
        pipeline: body.pipeline,
        entry_points: body
            .entry_points
            .iter()
            .map(|u| uuid_param(u))
            .collect::<Result<Vec<_>>>()?,
        outputs: body
            .outputs
            .into_iter()
            .map(|o| JobOutput {
                path: o.path,
                file_type_id: o.file_type_id,
                name: o.name,
                source_id: o.source_id,
            })
            .collect(),
        schedule: steps(body.schedule.as_ref())?,
    };
    let id = control.add_analysis_job(seed)?;
    let uuid = control.analysis_job(id).map(|j| j.uuid);
    Ok((StatusCode::CREATED, Json(json!({"id": id, "uuid": uuid}))).into_response())
}

#[derive(Debug, Deserialize)]
struct PatchBody {
    name: Option<String>,
    project_id: Option<i64>,
    is_active: Option<bool>,
}

async fn patch_job(
    State(control): State<Control>,
    Path(id): Path<String>,
    Json(body): Json<PatchBody>,
) -> Result<Response> {
    let id = job_id(&id)?;
    if let Some(name) = &body.name {
        control.rename_job(id, name)?;
    }
    if let Some(project_id) = body.project_id {
        control.move_job(id, project_id)?;
    }
    if let Some(active) = body.is_active {
        control.set_job_active(id, active)?;
    }
    let job = control
        .analysis_job(id)
        .ok_or_else(|| StandInError::NotFound(format!("Unable to find job {id}")))?;
    Ok(Json(job).into_response())
}

async fn delete_job(State(control): State<Control>, Path(id): Path<String>) -> Result<StatusCode> {
    control.delete_job(job_id(&id)?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct JobStateBody {
    state: String,
    error_message: Option<String>,
}

async fn set_job_state(
    State(control): State<Control>,
    Path(id): Path<String>,
    Json(body): Json<JobStateBody>,
) -> Result<StatusCode> {
    control.set_job_state(
        job_id(&id)?,
        job_state(&body.state)?,
        body.error_message.as_deref(),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ScheduleBody {
    schedule: Value,
}

async fn set_job_schedule(
    State(control): State<Control>,
    Path(id): Path<String>,
    Json(body): Json<ScheduleBody>,
) -> Result<StatusCode> {
    control.set_job_schedule(job_id(&id)?, &steps(Some(&body.schedule))?)?;
    Ok(StatusCode::NO_CONTENT)
}

fn clock_answer(control: &Control) -> Json<Value> {
    Json(json!({
        "now": format_time(control.clock_now()),
        "offset_seconds": control.clock_offset().as_secs_f64(),
    }))
}

async fn clock(State(control): State<Control>) -> Json<Value> {
    clock_answer(&control)
}

#[derive(Debug, Deserialize)]
struct AdvanceBody {
    seconds: f64,
}

async fn advance_clock(
    State(control): State<Control>,
    Json(body): Json<AdvanceBody>,
) -> Result<Json<Value>> {
    let by = Duration::try_from_secs_f64(body.seconds).map_err(|_| {
        StandInError::Invalid(format!(
            "seconds: expected a non-negative number, found {}",
            body.seconds
        ))
    })?;
    control.advance_clock(by)?;
    Ok(clock_answer(&control))
}
