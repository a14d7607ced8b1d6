//! Globus Transfer v0.10 access rules on a collection: list, get, create, update, delete.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth_api::bearer_token;
use crate::clock::parse_time;
use crate::model::{
    ApiError, Maker, NewRule, TRANSFER_RESOURCE_SERVER, validate_expiration, validate_permissions,
};
use crate::server::{AnswerCode, error_body};
use crate::state::Shared;

/// The parts every Transfer handler needs: who called, the resource path, a request id.
struct Call {
    client_id: String,
    resource: String,
    request_id: String,
}

fn resource(uri: &Uri) -> String {
    uri.path().trim_start_matches("/v0.10").to_owned()
}

fn fail(error: ApiError, resource: &str, request_id: &str) -> Response {
    error_body(
        error.status,
        &error.code,
        &error.message,
        resource,
        request_id,
    )
}

/// Checks the bearer token (401 `AuthenticationFailed` when missing, unknown or expired).
fn authenticate(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Result<Call, Box<Response>> {
    let resource = resource(uri);
    let request_id = shared.request_id();
    let Some(token) = bearer_token(headers) else {
        return Err(Box::new(fail(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "No Authorization header with a bearer token",
            ),
            &resource,
            &request_id,
        )));
    };
    let now = shared.now();
    match shared.with_world(|world, _| world.check_token(&token, TRANSFER_RESOURCE_SERVER, now)) {
        Ok(client_id) => Ok(Call {
            client_id,
            resource,
            request_id,
        }),
        Err(error) => Err(Box::new(fail(error, &resource, &request_id))),
    }
}

fn success(status: StatusCode, code: &str, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .extensions_mut()
        .insert(AnswerCode(code.to_owned()));
    response
}

fn parse_body(body: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", m);
    let value: Value =
        serde_json::from_str(body).map_err(|e| bad(format!("Request body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("Request body must be a JSON object".to_owned()));
    };
    match map.get("DATA_TYPE") {
        Some(Value::String(t)) if t == "access" => Ok(map),
        Some(other) => Err(bad(format!("DATA_TYPE must be 'access', not {other}"))),
        None => Err(bad("DATA_TYPE is required".to_owned())),
    }
}

fn string_field(
    map: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("{name} must be a string, not {other}"),
        )),
    }
}

fn expiration_field(
    map: &serde_json::Map<String, Value>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    match string_field(map, "expiration_date")? {
        None => Ok(None),
        Some(text) => parse_time(&text).map(Some).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Invalid expiration_date '{text}': expected ISO 8601"),
            )
        }),
    }
}

/// `GET /endpoint/{id}/access_list`.
pub(crate) async fn access_list(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = match authenticate(&shared, &headers, &uri) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let now = shared.now();
    let listed = shared.with_world(|world, _| {
        world
            .rules_mut(&endpoint, now)
            .map(|rules| rules.iter().map(|r| r.to_json()).collect::<Vec<_>>())
    });
    match listed {
        Ok(data) => success(
            StatusCode::OK,
            "ok",
            json!({
                "DATA_TYPE": "access_list",
                "endpoint": endpoint,
                "length": data.len(),
                "DATA": data,
            }),
        ),
        Err(error) => fail(error, &call.resource, &call.request_id),
    }
}

/// `GET /endpoint/{id}/access/{rule}`.
pub(crate) async fn get_rule(
    State(shared): State<Arc<Shared>>,
    Path((endpoint, rule)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = match authenticate(&shared, &headers, &uri) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let now = shared.now();
    match shared.with_world(|world, _| world.find_rule(&endpoint, &rule, now).map(|r| r.to_json()))
    {
        Ok(body) => success(StatusCode::OK, "ok", body),
        Err(error) => fail(error, &call.resource, &call.request_id),
    }
}

/// `POST /endpoint/{id}/access`.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Response {
    let call = match authenticate(&shared, &headers, &uri) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let now = shared.now();
    let made = (|| {
        let map = parse_body(&body)?;
        let required = |name: &str| {
            string_field(&map, name)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("{name} is required"),
                )
            })
        };
        let new = NewRule {
            principal_type: required("principal_type")?,
            principal: string_field(&map, "principal")?.unwrap_or_default(),
            path: required("path")?,
            permissions: required("permissions")?,
            expiration_date: expiration_field(&map)?,
            notify_email: string_field(&map, "notify_email")?,
            notify_message: string_field(&map, "notify_message")?,
        };
        shared.with_world(|world, _| {
            world.create_rule(&endpoint, new, Maker::Client(call.client_id.clone()), now)
        })
    })();
    match made {
        Ok(access_id) => {
            tracing::debug!(endpoint, access_id, "rule created");
            success(
                StatusCode::CREATED,
                "Created",
                json!({
                    "code": "Created",
                    "resource": call.resource,
                    "DATA_TYPE": "access_create_result",
                    "request_id": call.request_id,
                    "access_id": access_id,
                    "message": "Access rule created successfully.",
                }),
            )
        }
        Err(error) => fail(error, &call.resource, &call.request_id),
    }
}

/// `PUT /endpoint/{id}/access/{rule}`: permissions and/or expiration_date.
pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    Path((endpoint, rule)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: String,
) -> Response {
    let call = match authenticate(&shared, &headers, &uri) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let now = shared.now();
    let updated = (|| {
        let map = parse_body(&body)?;
        let permissions = string_field(&map, "permissions")?;
        let expiration = if map.contains_key("expiration_date") {
            Some(expiration_field(&map)?)
        } else {
            None
        };
        if let Some(p) = &permissions {
            validate_permissions(p)?;
        }
        if let Some(e) = expiration {
            validate_expiration(e, now)?;
        }
        shared.with_world(|world, _| {
            let existing = world.find_rule(&endpoint, &rule, now)?;
            for fixed in ["principal_type", "principal", "path"] {
                let current = match fixed {
                    "principal_type" => &existing.principal_type,
                    "principal" => &existing.principal,
                    _ => &existing.path,
                };
                if let Some(asked) = string_field(&map, fixed)?
                    && asked != *current
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("{fixed} of an access rule cannot be changed"),
                    ));
                }
            }
            if let Some(p) = permissions {
                existing.permissions = p;
            }
            if let Some(e) = expiration {
                existing.expiration_date = e;
            }
            Ok(())
        })
    })();
    match updated {
        Ok(()) => success(
            StatusCode::OK,
            "Updated",
            json!({
                "code": "Updated",
                "resource": call.resource,
                "DATA_TYPE": "result",
                "request_id": call.request_id,
                "message": format!("Access rule '{rule}' updated successfully"),
            }),
        ),
        Err(error) => fail(error, &call.resource, &call.request_id),
    }
}

/// `DELETE /endpoint/{id}/access/{rule}`.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((endpoint, rule)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = match authenticate(&shared, &headers, &uri) {
        Ok(call) => call,
        Err(response) => return *response,
    };
    let now = shared.now();
    match shared.with_world(|world, _| world.delete_rule(&endpoint, &rule, now)) {
        Ok(_) => success(
            StatusCode::OK,
            "Deleted",
            json!({
                "code": "Deleted",
                "resource": call.resource,
                "DATA_TYPE": "result",
                "request_id": call.request_id,
                "message": format!("Access rule '{rule}' deleted successfully"),
            }),
        ),
        Err(error) => fail(error, &call.resource, &call.request_id),
    }
}
