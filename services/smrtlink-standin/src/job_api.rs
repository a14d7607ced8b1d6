//! SMRT Link's analysis-job endpoints (see [`super::jobs`] for what they answer):
//! `GET /smrt-link/job-manager/jobs/analysis[?projectId=N][&showAll]`, `POST` (the web UI
//! starting a job), `GET …/{id}` (integer id or UUID), `GET …/{id}/entry-points`,
//! `GET …/{id}/datastore`. Every read first applies the schedule steps that are due.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use rand::seq::SliceRandom as _;
use serde_json::Value;

use super::api::Caller;
use super::jobs::JobRec;
use super::{Shared, StandInError};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/smrt-link/job-manager/jobs/analysis",
            get(list_jobs).post(create_job),
        )
        .route("/smrt-link/job-manager/jobs/analysis/{id}", get(get_job))
        .route(
            "/smrt-link/job-manager/jobs/analysis/{id}/entry-points",
            get(job_entry_points),
        )
        .route(
            "/smrt-link/job-manager/jobs/analysis/{id}/datastore",
            get(job_datastore),
        )
}

/// `projectId` narrows the listing to one project; `showAll` (present, whatever its value, as
/// SMRT Link reads it) includes soft-deleted jobs. SMRT Link promises no order: neither does the
/// stand-in.
async fn list_jobs(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, StandInError> {
    let project = query
        .get("projectId")
        .map(|p| {
            p.parse::<i64>()
                .map_err(|_| StandInError::Invalid(format!("projectId: {p:?} is not an integer")))
        })
        .transpose()?;
    let show_all = query.contains_key("showAll");
    let mut jobs = shared.lock().jobs_now().list(project, show_all);
    jobs.shuffle(&mut rand::rng());
    Ok(Json(Value::Array(jobs)).into_response())
}

async fn create_job(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, StandInError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| StandInError::Invalid(format!("The request content was malformed: {e}")))?;
    let mut state = shared.lock();
    let now = state.clock.now();
    let state = &mut *state;
    let id = state.jobs.submit(&state.store, &value, &caller.0, now)?;
    let record = state.jobs.get_mut(id)?.record.clone();
    Ok((StatusCode::CREATED, Json(Value::Object(record))).into_response())
}

/// Answers from one job (by integer id or UUID), its due steps applied; 404 when unknown.
fn with_job(shared: &Shared, key: &str, answer: impl FnOnce(&JobRec) -> Value) -> Response {
    let mut state = shared.lock();
    match state.jobs_now().find(key) {
        Some(job) => Json(answer(job)).into_response(),
        None => StandInError::NotFound(format!("Unable to find job {key}")).into_response(),
    }
}

async fn get_job(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    with_job(&shared, &id, |job| Value::Object(job.record.clone()))
}

async fn job_entry_points(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    with_job(&shared, &id, |job| Value::Array(job.entry_points.clone()))
}

async fn job_datastore(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    with_job(&shared, &id, |job| Value::Array(job.listed_datastore()))
}
