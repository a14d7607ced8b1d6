//! The admin HTTP API under `/admin` (no token; bind the stand-in to loopback). Bodies and
//! answers are JSON; errors use SMRT Link's error body.
//!
//! | route | does |
//! |---|---|
//! | `GET /admin/state` | projects (full), datasets, jobs |
//! | `POST /admin/projects` `{name, description?, members?: [{login, role}], datasets?: [uuid]}` | create → `{id}` |
//! | `PATCH /admin/projects/{id}` `{name?, description?, is_active?}` | rename, describe, soft-delete |
//! | `DELETE /admin/projects/{id}` | delete (datasets return to project 1) |
//! | `PUT /admin/projects/{id}/members/{login}` `{role}` | add a member or change its role |
//! | `DELETE /admin/projects/{id}/members/{login}` | remove a member |
//! | `PUT /admin/projects/{id}/datasets/{uuid}` | list a dataset here (moves it) |
//! | `DELETE /admin/projects/{id}/datasets/{uuid}` | drop it (back to project 1) |
//! | `POST /admin/datasets/{uuid}/move` `{project_id}` | move a dataset |
//! | `POST /admin/datasets` `{project_id, record}` | import a dataset record → `{uuid}` |
//! | `POST /admin/jobs`, `PATCH`/`DELETE /admin/jobs/{id}`, `PUT /admin/jobs/{id}/state`, `PUT /admin/jobs/{id}/schedule` | analysis jobs: see [`super::admin_jobs`] |
//! | `GET /admin/clock`, `POST /admin/clock/advance` `{seconds}` | the clock job schedules follow |
//! | `POST /admin/users` `{login, password}` | add a user |
//! | `POST /admin/tokens/expire` `{refresh}` | expire tokens |
//! | `GET`/`PUT`/`DELETE /admin/faults` | read, set ([`Faults`] as JSON), clear faults |
//! | `PUT /admin/raw-answers` `{path, status, body}` | canned answer for a GET path |
//! | `GET`/`DELETE /admin/counters` | read ([`Counters`]), reset |

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::StandInError;
use super::api::uuid_param;
use super::control::Control;
use super::faults::{Counters, Faults, RawAnswer};
use super::store::NewProject;
use smrtshare_smrtlink::model::{Member, Role};

type Result<T> = std::result::Result<T, StandInError>;

pub(crate) fn router(control: Control) -> Router {
    Router::new()
        .route("/admin/state", get(state))
        .route("/admin/projects", post(create_project))
        .route(
            "/admin/projects/{id}",
            axum::routing::patch(patch_project).delete(delete_project),
        )
        .route(
            "/admin/projects/{id}/members/{login}",
            put(put_member).delete(delete_member),
        )
        .route(
            "/admin/projects/{id}/datasets/{uuid}",
            put(put_dataset).delete(delete_dataset),
        )
        .route("/admin/datasets", post(import_dataset))
        .route("/admin/datasets/{uuid}/move", post(move_dataset))
        .merge(super::admin_jobs::routes())
        .route("/admin/users", post(add_user))
        .route("/admin/tokens/expire", post(expire_tokens))
        .route(
            "/admin/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/admin/raw-answers", put(put_raw).delete(clear_raw))
        .route("/admin/counters", get(get_counters).delete(reset_counters))
        .fallback(|| async { super::api::sl_error(StatusCode::NOT_FOUND, "no such admin route") })
        .with_state(control)
}

fn parse_id(text: &str) -> Result<i64> {
    text.parse()
        .map_err(|_| StandInError::Invalid(format!("{text:?} is not a project id")))
}

fn role(text: &str) -> Result<Role> {
    match Role::parse(text) {
        Role::Other(other) => Err(StandInError::Invalid(format!("unknown role {other:?}"))),
        known => Ok(known),
    }
}

fn project_answer(control: &Control, id: i64) -> Response {
    match control.project(id) {
        Some(project) => Json(project).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn state(State(control): State<Control>) -> Json<Value> {
    Json(control.state_json())
}

#[derive(Debug, Deserialize)]
struct MemberBody {
    login: String,
    role: String,
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    members: Vec<MemberBody>,
    #[serde(default)]
    datasets: Vec<String>,
}

async fn create_project(
    State(control): State<Control>,
    Json(body): Json<CreateBody>,
) -> Result<Response> {
    let members = body
        .members
        .iter()
        .map(|m| Ok(Member::new(&m.login, role(&m.role)?)))
        .collect::<Result<Vec<_>>>()?;
    let datasets = body
        .datasets
        .iter()
        .map(|u| uuid_param(u))
        .collect::<Result<Vec<_>>>()?;
    let id = control.create_project(NewProject {
        name: body.name,
        description: body.description,
        members,
        datasets,
    })?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

#[derive(Debug, Deserialize)]
struct PatchBody {
    name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
}

async fn patch_project(
    State(control): State<Control>,
    Path(id): Path<String>,
    Json(body): Json<PatchBody>,
) -> Result<Response> {
    let id = parse_id(&id)?;
    if let Some(name) = &body.name {
        control.rename_project(id, name)?;
    }
    if let Some(description) = &body.description {
        control.set_description(id, description)?;
    }
    if let Some(active) = body.is_active {
        control.set_project_active(id, active)?;
    }
    Ok(project_answer(&control, id))
}

async fn delete_project(
    State(control): State<Control>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    control.delete_project(parse_id(&id)?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct RoleBody {
    role: String,
}

async fn put_member(
    State(control): State<Control>,
    Path((id, login)): Path<(String, String)>,
    Json(body): Json<RoleBody>,
) -> Result<Response> {
    let id = parse_id(&id)?;
    control.add_member(id, &login, role(&body.role)?)?;
    Ok(project_answer(&control, id))
}

async fn delete_member(
    State(control): State<Control>,
    Path((id, login)): Path<(String, String)>,
) -> Result<StatusCode> {
    control.remove_member(parse_id(&id)?, &login)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_dataset(
    State(control): State<Control>,
    Path((id, uuid)): Path<(String, String)>,
) -> Result<Response> {
    let id = parse_id(&id)?;
    control.add_dataset(id, uuid_param(&uuid)?)?;
    Ok(project_answer(&control, id))
}

async fn delete_dataset(
    State(control): State<Control>,
    Path((id, uuid)): Path<(String, String)>,
) -> Result<StatusCode> {
    control.remove_dataset(parse_id(&id)?, uuid_param(&uuid)?)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct MoveBody {
    project_id: i64,
}

async fn move_dataset(
    State(control): State<Control>,
    Path(uuid): Path<String>,
    Json(body): Json<MoveBody>,
) -> Result<Response> {
    control.move_dataset(uuid_param(&uuid)?, body.project_id)?;
    Ok(project_answer(&control, body.project_id))
}

#[derive(Debug, Deserialize)]
struct ImportBody {
    #[serde(default = "general")]
    project_id: i64,
    record: Value,
}

pub(crate) fn general() -> i64 {
    smrtshare_smrtlink::model::GENERAL_PROJECT_ID
}

async fn import_dataset(
    State(control): State<Control>,
    Json(body): Json<ImportBody>,
) -> Result<Response> {
    let uuid = control.import_dataset(body.project_id, body.record)?;
    Ok((StatusCode::CREATED, Json(json!({"uuid": uuid}))).into_response())
}

#[derive(Debug, Deserialize)]
struct UserBody {
    login: String,
    password: String,
}

async fn add_user(State(control): State<Control>, Json(body): Json<UserBody>) -> StatusCode {
    control.add_user(&body.login, &body.password);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Default, Deserialize)]
struct ExpireBody {
    #[serde(default)]
    refresh: bool,
}

async fn expire_tokens(
    State(control): State<Control>,
    body: Option<Json<ExpireBody>>,
) -> StatusCode {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    control.expire_tokens(body.refresh);
    StatusCode::NO_CONTENT
}

async fn get_faults(State(control): State<Control>) -> Json<Faults> {
    Json(control.faults())
}

async fn put_faults(State(control): State<Control>, Json(faults): Json<Faults>) -> StatusCode {
    control.set_faults(faults);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(control): State<Control>) -> StatusCode {
    control.clear_faults();
    StatusCode::NO_CONTENT
}

async fn put_raw(State(control): State<Control>, Json(raw): Json<RawAnswer>) -> StatusCode {
    control.set_raw_answer(&raw.path, raw.status, &raw.body);
    StatusCode::NO_CONTENT
}

async fn clear_raw(State(control): State<Control>) -> StatusCode {
    control.clear_raw_answers();
    StatusCode::NO_CONTENT
}

async fn get_counters(State(control): State<Control>) -> Json<Counters> {
    Json(control.counters())
}

async fn reset_counters(State(control): State<Control>) -> StatusCode {
    control.reset_counters();
    StatusCode::NO_CONTENT
}
