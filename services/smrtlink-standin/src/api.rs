//! SMRT Link's endpoints (paths without the `/SMRTLink/x.y.z` prefix, which the server strips).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use rand::seq::SliceRandom as _;
use serde_json::{Value, json};
use uuid::Uuid;

use super::store::{ProjectPatch, Store, meta};
use super::{Shared, StandInError};
use smrtshare_smrtlink::model::{GENERAL_PROJECT_ID, Member, Role};

/// The login the caller named in `X-User-ID` (set by the server after the token check).
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub(crate) String);

/// SMRT Link's error body.
pub(crate) fn sl_error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = json!({
        "httpCode": status.as_u16(),
        "errorType": status.canonical_reason().unwrap_or("Error"),
        "message": message,
        "description": message,
    });
    (status, Json(body)).into_response()
}

impl IntoResponse for StandInError {
    fn into_response(self) -> Response {
        sl_error(self.status(), self.to_string())
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/status", get(status))
        .route(
            "/smrt-link/projects",
            get(list_projects).post(create_project),
        )
        .route(
            "/smrt-link/projects/{id}",
            get(get_project).put(update_project).delete(delete_project),
        )
        .route("/smrt-link/datasets/search/{id}", get(search_dataset))
        .route("/smrt-link/datasets/{id}", get(get_dataset))
        .route("/smrt-link/datasets/{kind}/{id}", get(get_typed_dataset))
        .merge(super::job_api::routes())
        .fallback(|| async {
            sl_error(
                StatusCode::NOT_FOUND,
                "The requested resource could not be found.",
            )
        })
        .with_state(shared)
}

async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut state = shared.lock();
    let grant = form.get("grant_type").map(String::as_str);
    let result = match grant {
        Some("password") => state.tokens.password_grant(
            form.get("username").map(String::as_str),
            form.get("password").map(String::as_str),
        ),
        Some("refresh_token") => state
            .tokens
            .refresh_grant(form.get("refresh_token").map(String::as_str)),
        _ => {
            let body = json!({"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    match result {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(e.body()),
        )
            .into_response(),
    }
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let uptime = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Json(json!({
        "id": "smrtlink-standin",
        "uuid": shared.id,
        "uptime": uptime,
        "message": "SMRT Link stand-in is running",
        "version": "13.0.0.standin",
        "user": caller.0,
    }))
    .into_response()
}

async fn list_projects(State(shared): State<Arc<Shared>>) -> Response {
    let mut items: Vec<Value> = {
        let state = shared.lock();
        state
            .store
            .projects
            .values()
            .map(Store::summary_json)
            .collect()
    };
    // SMRT Link promises no order: neither does the stand-in.
    items.shuffle(&mut rand::rng());
    Json(Value::Array(items)).into_response()
}

fn project_id(text: &str) -> Result<i64, StandInError> {
    text.parse()
        .map_err(|_| StandInError::NotFound(format!("Unable to find project {text}")))
}

async fn get_project(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, StandInError> {
    let id = project_id(&id)?;
    let state = shared.lock();
    let project = state.store.project(id)?;
    Ok(Json(state.store.detail_json(project)).into_response())
}

/// Reads a web-UI project body: `name`, `description`, `members: [{login, role}]`, and
/// `datasets` as `[{id}]` (also `[{uuid}]`, bare ids or UUIDs).
fn project_patch(store: &Store, body: &[u8]) -> Result<ProjectPatch, StandInError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| StandInError::Invalid(format!("The request content was malformed: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| StandInError::Invalid("expected a JSON object".into()))?;
    let text = |key: &str| -> Result<Option<String>, StandInError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(StandInError::Invalid(format!("{key}: expected a string"))),
        }
    };
    let mut patch = ProjectPatch {
        name: text("name")?,
        description: text("description")?,
        ..ProjectPatch::default()
    };
    if let Some(members) = obj.get("members").filter(|v| !v.is_null()) {
        let members = members
            .as_array()
            .ok_or_else(|| StandInError::Invalid("members: expected a list".into()))?;
        let mut out = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let login = m.get("login").and_then(Value::as_str);
            let role = m.get("role").and_then(Value::as_str);
            let (Some(login), Some(role)) = (login, role) else {
                return Err(StandInError::Invalid(format!(
                    "members[{i}]: login and role are required"
                )));
            };
            let role = Role::parse(role);
            if matches!(role, Role::Other(_)) {
                return Err(StandInError::Invalid(format!(
                    "members[{i}].role: unknown role {}",
                    role.as_str()
                )));
            }
            out.push(Member::new(login, role));
        }
        patch.members = Some(out);
    }
    if let Some(datasets) = obj.get("datasets").filter(|v| !v.is_null()) {
        let datasets = datasets
            .as_array()
            .ok_or_else(|| StandInError::Invalid("datasets: expected a list".into()))?;
        let mut out = Vec::new();
        for (i, d) in datasets.iter().enumerate() {
            let key = match d {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                Value::Object(o) => match (o.get("id"), o.get("uuid")) {
                    (Some(Value::Number(n)), _) => n.to_string(),
                    (_, Some(Value::String(s))) => s.clone(),
                    _ => {
                        return Err(StandInError::Invalid(format!(
                            "datasets[{i}]: id or uuid required"
                        )));
                    }
                },
                _ => {
                    return Err(StandInError::Invalid(format!(
                        "datasets[{i}]: expected {{\"id\": ..}}"
                    )));
                }
            };
            let uuid = store
                .find_dataset(&key)
                .ok_or_else(|| StandInError::NotFound(format!("Unable to find dataset {key}")))?;
            if !out.contains(&uuid) {
                out.push(uuid);
            }
        }
        patch.datasets = Some(out);
    }
    Ok(patch)
}

async fn create_project(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, StandInError> {
    let mut state = shared.lock();
    let patch = project_patch(&state.store, &body)?;
    let name = patch
        .name
        .ok_or_else(|| StandInError::Invalid("name: required".into()))?;
    let mut members = patch.members.unwrap_or_default();
    // The creator owns a project created without an owner.
    if !members.iter().any(|m| m.role == Role::Owner) {
        members.retain(|m| m.login != caller.0);
        members.insert(0, Member::new(caller.0.clone(), Role::Owner));
    }
    let id = state.store.create_project(super::store::NewProject {
        name,
        description: patch.description.unwrap_or_default(),
        members,
        datasets: patch.datasets.unwrap_or_default(),
    })?;
    let project = state.store.project(id)?;
    Ok((StatusCode::CREATED, Json(state.store.detail_json(project))).into_response())
}

async fn update_project(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, StandInError> {
    let id = project_id(&id)?;
    let mut state = shared.lock();
    state.store.project(id)?;
    if id == GENERAL_PROJECT_ID {
        return Err(StandInError::Forbidden(
            "The General Project cannot be modified".into(),
        ));
    }
    let patch = project_patch(&state.store, &body)?;
    state.store.update_project(id, patch, true)?;
    let project = state.store.project(id)?;
    Ok(Json(state.store.detail_json(project)).into_response())
}

async fn delete_project(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, StandInError> {
    let id = project_id(&id)?;
    shared.lock().delete_project(id)?;
    Ok(Json(json!({"message": format!("Project {id} deleted")})).into_response())
}

async fn search_dataset(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = shared.lock();
    // SMRT Link answers `{}` for a dataset it does not have.
    let record = state
        .store
        .find_dataset(&id)
        .and_then(|u| state.store.datasets.get(&u))
        .cloned()
        .unwrap_or_default();
    Json(Value::Object(record)).into_response()
}

async fn get_dataset(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, StandInError> {
    let state = shared.lock();
    let record = state
        .store
        .find_dataset(&id)
        .and_then(|u| state.store.datasets.get(&u))
        .ok_or_else(|| StandInError::NotFound(format!("Unable to find dataset {id}")))?;
    Ok(Json(Value::Object(record.clone())).into_response())
}

/// `ccsreads` → `PacBio.DataSet.ConsensusReadSet`, ...; `meta` matches every type.
fn dataset_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ccsreads" => "PacBio.DataSet.ConsensusReadSet",
        "subreads" => "PacBio.DataSet.SubreadSet",
        "references" => "PacBio.DataSet.ReferenceSet",
        "barcodes" => "PacBio.DataSet.BarcodeSet",
        "alignments" => "PacBio.DataSet.AlignmentSet",
        "ccsalignments" => "PacBio.DataSet.ConsensusAlignmentSet",
        "transcripts" => "PacBio.DataSet.TranscriptSet",
        "contigs" => "PacBio.DataSet.ContigSet",
        "gmapreferences" => "PacBio.DataSet.GmapReferenceSet",
        _ => return None,
    })
}

async fn get_typed_dataset(
    State(shared): State<Arc<Shared>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, StandInError> {
    let missing = || StandInError::NotFound(format!("Unable to find {kind} dataset {id}"));
    let state = shared.lock();
    let record = state
        .store
        .find_dataset(&id)
        .and_then(|u| state.store.datasets.get(&u))
        .ok_or_else(missing)?;
    if kind == "meta" {
        return Ok(Json(Value::Object(meta(record))).into_response());
    }
    let wanted = dataset_type(&kind).ok_or_else(missing)?;
    match record.get("datasetType").and_then(Value::as_str) {
        Some(t) if t != wanted => Err(missing()),
        _ => Ok(Json(Value::Object(record.clone())).into_response()),
    }
}

/// Parses a UUID path segment for the admin API.
pub(crate) fn uuid_param(text: &str) -> Result<Uuid, StandInError> {
    Uuid::parse_str(text).map_err(|_| StandInError::Invalid(format!("{text:?} is not a UUID")))
}
