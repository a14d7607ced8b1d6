//! The Globus Groups API v2 (`https://groups.api.globus.org/v2/...`) as smrtshare uses it:
//! create a group, read one (with `include=memberships`), list the caller's groups, batch
//! membership actions (`add`, `remove`) and delete. Calls carry a token issued for
//! `groups.api.globus.org` (a Transfer token is refused with 401). Errors answer
//! `{code, detail}`; per-identity failures of a batch are listed under `errors`, as Globus does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth_api::bearer_token;
use crate::groups::{ActionError, Membership, client_identity};
use crate::model::{ApiError, GROUPS_RESOURCE_SERVER, Maker};
use crate::server::AnswerCode;
use crate::state::Shared;

/// A Groups API error answer.
fn fail(error: &ApiError) -> Response {
    let mut response = (
        error.status,
        Json(json!({
            "code": error.code,
            "detail": error.message,
            "status": error.status.as_u16(),
        })),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(AnswerCode(error.code.clone()));
    response
}

fn ok(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The caller's client id and identity id, from a live Groups token.
fn caller(shared: &Shared, headers: &HeaderMap) -> Result<(String, String), Box<Response>> {
    let refused = |message: &str| {
        Box::new(fail(&ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            message,
        )))
    };
    let Some(token) = bearer_token(headers) else {
        return Err(refused("No Authorization header with a bearer token"));
    };
    let now = shared.now();
    match shared.with_world(|world, _| world.check_token(&token, GROUPS_RESOURCE_SERVER, now)) {
        Ok(client_id) => {
            let (identity, _) = client_identity(&client_id);
            Ok((client_id, identity))
        }
        Err(error) => Err(refused(&error.message)),
    }
}

fn json_object(body: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETERS", m);
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("the body must be a JSON object".to_owned())),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

/// `POST /v2/groups` `{name, description?}`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (client_id, identity) = match caller(&shared, &headers) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let now = shared.now();
    let made = json_object(&body).and_then(|map| {
        let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
        shared.with_world(|world, _| {
            world.create_group(
                text("name"),
                text("description"),
                Maker::Client(client_id),
                now,
            )
        })
    });
    match made {
        Ok(group) => ok(StatusCode::OK, group.to_json(&identity, false)),
        Err(error) => fail(&error),
    }
}

/// `GET /v2/groups/my_groups`.
pub(crate) async fn my_groups(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let (_, identity) = match caller(&shared, &headers) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let groups: Vec<Value> = shared.with_world(|world, _| {
        world
            .groups_of(&identity)
            .into_iter()
            .map(|g| g.to_json(&identity, false))
            .collect()
    });
    ok(StatusCode::OK, Value::Array(groups))
}

/// `GET /v2/groups/{id}` (`?include=memberships` lists every membership).
pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (_, identity) = match caller(&shared, &headers) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let memberships = query
        .get("include")
        .is_some_and(|v| v.split(',').any(|i| i.trim() == "memberships"));
    match shared.with_world(|world, _| {
        world
            .group_for(&id, &identity)
            .map(|g| g.to_json(&identity, memberships))
    }) {
        Ok(doc) => ok(StatusCode::OK, doc),
        Err(error) => fail(&error),
    }
}

/// The identity ids of one action's items (`[{identity_id, role?}]`).
fn action_ids(map: &serde_json::Map<String, Value>, action: &str) -> Result<Vec<String>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_PARAMETERS", m);
    let Some(items) = map.get(action) else {
        return Ok(Vec::new());
    };
    let items = items
        .as_array()
        .ok_or_else(|| bad(format!("{action} must be a list")))?;
    items
        .iter()
        .map(|item| {
            let id = item
                .get("identity_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("every {action} item needs an identity_id")))?;
            uuid::Uuid::parse_str(id)
                .map_err(|_| bad(format!("{action}: identity_id {id:?} is not a UUID")))?;
            if action == "add"
                && let Some(role) = item.get("role")
                && role != "member"
            {
                return Err(bad(format!("{action}: role {role} is not supported here")));
            }
            Ok(id.to_owned())
        })
        .collect()
}

fn memberships_json(group: &str, memberships: &[Membership]) -> Vec<Value> {
    memberships
        .iter()
        .map(|m| {
            json!({
                "group_id": group,
                "identity_id": m.identity_id,
                "username": m.username,
                "role": m.role,
                "status": m.status,
            })
        })
        .collect()
}

fn errors_json(errors: &[ActionError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| json!({"code": e.code, "detail": e.detail, "identity_id": e.identity_id}))
        .collect()
}

/// `POST /v2/groups/{id}`: batch membership actions (`add`, `remove`).
pub(crate) async fn batch(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (_, identity) = match caller(&shared, &headers) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    let done = json_object(&body).and_then(|map| {
        if let Some(other) = map.keys().find(|k| !matches!(k.as_str(), "add" | "remove")) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_PARAMETERS",
                format!("unsupported action {other:?}"),
            ));
        }
        let add = action_ids(&map, "add")?;
        let remove = action_ids(&map, "remove")?;
        shared.with_world(|world, _| world.batch(&id, &identity, &add, &remove))
    });
    match done {
        Ok(result) => ok(
            StatusCode::OK,
            json!({
                "add": memberships_json(&id, &result.added),
                "remove": memberships_json(&id, &result.removed),
                "errors": {
                    "add": errors_json(&result.add_errors),
                    "remove": errors_json(&result.remove_errors),
                },
            }),
        ),
        Err(error) => fail(&error),
    }
}

/// `DELETE /v2/groups/{id}`.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_, identity) = match caller(&shared, &headers) {
        Ok(caller) => caller,
        Err(response) => return *response,
    };
    match shared.with_world(|world, _| world.delete_group(&id, &identity)) {
        Ok(group) => ok(StatusCode::OK, group.to_json(&identity, false)),
        Err(error) => fail(&error),
    }
}
