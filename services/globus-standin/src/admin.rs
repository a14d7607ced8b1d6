//! The test-side API over HTTP, for the binary (tests in the same process use
//! [`crate::StandIn`] directly). Never counted, faulted or rate-limited.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/counts`, `DELETE /admin/counts` | requests by kind and answer; reset |
//! | `GET/PUT/DELETE /admin/faults` | the fault plan (JSON [`FaultPlan`]) |
//! | `GET/PUT/DELETE /admin/rate-limit` | the stand-in's own limit (JSON [`RateLimit`]) |
//! | `POST /admin/expire-tokens` | every issued token expires now |
//! | `GET /admin/identities`, `POST /admin/identities` `{username}` | identities |
//! | `GET /admin/endpoints/{id}/rules` | every rule with who made it |
//! | `POST /admin/endpoints/{id}/rules` | a rule made by a person at the web interface (or through a role, with `role_type`) |
//! | `DELETE /admin/endpoints/{id}/rules/{rule}` | a rule deleted by hand |
//! | `GET /admin/invitations` | emails sent for rules made with `notify_email` |
//! | `GET /admin/groups` | every group with its memberships |
//! | `DELETE /admin/groups/{id}` | a group deleted by hand |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::StandInHandle;
use crate::faults::FaultPlan;
use crate::model::{Identity, NewRule};
use crate::state::{RateLimit, Shared};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/admin/counts", get(counts).delete(reset_counts))
        .route(
            "/admin/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route(
            "/admin/rate-limit",
            get(get_rate_limit)
                .put(put_rate_limit)
                .delete(clear_rate_limit),
        )
        .route("/admin/expire-tokens", post(expire_tokens))
        .route("/admin/identities", get(identities).post(add_identity))
        .route(
            "/admin/endpoints/{endpoint}/rules",
            get(rules).post(add_rule),
        )
        .route(
            "/admin/endpoints/{endpoint}/rules/{rule}",
            delete(delete_rule),
        )
        .route("/admin/invitations", get(invitations))
        .route("/admin/groups", get(groups))
        .route("/admin/groups/{group}", delete(delete_group))
}

async fn invitations(State(shared): State<Arc<Shared>>) -> Response {
    Json(handle(shared).invitations()).into_response()
}

async fn groups(State(shared): State<Arc<Shared>>) -> Response {
    Json(handle(shared).groups()).into_response()
}

async fn delete_group(State(shared): State<Arc<Shared>>, Path(group): Path<String>) -> StatusCode {
    if handle(shared).delete_group_by_hand(&group) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

fn handle(shared: Arc<Shared>) -> StandInHandle {
    StandInHandle { shared }
}

async fn counts(State(shared): State<Arc<Shared>>) -> Response {
    Json(handle(shared).counts()).into_response()
}

async fn reset_counts(State(shared): State<Arc<Shared>>) -> StatusCode {
    handle(shared).reset_counts();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults()).into_response()
}

async fn put_faults(State(shared): State<Arc<Shared>>, Json(plan): Json<FaultPlan>) -> Response {
    if !(0.0..=1.0).contains(&plan.share) {
        return (StatusCode::BAD_REQUEST, "share must lie in 0..=1").into_response();
    }
    shared.set_faults(plan);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_faults(FaultPlan::none());
    StatusCode::NO_CONTENT
}

async fn get_rate_limit(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.rate_limit()).into_response()
}

async fn put_rate_limit(
    State(shared): State<Arc<Shared>>,
    Json(limit): Json<RateLimit>,
) -> Response {
    if limit.per_second.is_nan() || limit.per_second <= 0.0 {
        return (StatusCode::BAD_REQUEST, "per_second must be positive").into_response();
    }
    shared.set_rate_limit(Some(limit));
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_rate_limit(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_rate_limit(None);
    StatusCode::NO_CONTENT
}

async fn expire_tokens(State(shared): State<Arc<Shared>>) -> StatusCode {
    handle(shared).expire_tokens();
    StatusCode::NO_CONTENT
}

async fn identities(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.with_world(|world, _| world.identities.clone())).into_response()
}

#[derive(Deserialize)]
struct NewIdentity {
    username: String,
    id: Option<String>,
}

async fn add_identity(State(shared): State<Arc<Shared>>, Json(new): Json<NewIdentity>) -> Response {
    if new.username.trim().is_empty() || new.username.contains(',') {
        return (
            StatusCode::BAD_REQUEST,
            "username is empty or holds a comma",
        )
            .into_response();
    }
    let mut identity = Identity::for_username(&new.username);
    if let Some(id) = new.id {
        if uuid::Uuid::parse_str(&id).is_err() {
            return (StatusCode::BAD_REQUEST, "id is not a UUID").into_response();
        }
        identity.id = id;
    }
    let added = shared.with_world(|world, _| world.add_identity(identity));
    (StatusCode::CREATED, Json(added)).into_response()
}

async fn rules(State(shared): State<Arc<Shared>>, Path(endpoint): Path<String>) -> Response {
    match handle(shared).rules(&endpoint) {
        Some(rules) => Json(rules).into_response(),
        None => (StatusCode::NOT_FOUND, "no such endpoint").into_response(),
    }
}

#[derive(Deserialize)]
struct AddRule {
    #[serde(flatten)]
    rule: NewRuleBody,
    role_type: Option<String>,
}

#[derive(Deserialize)]
struct NewRuleBody {
    principal_type: String,
    #[serde(default)]
    principal: String,
    path: String,
    permissions: String,
    expiration_date: Option<String>,
}

async fn add_rule(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    Json(add): Json<AddRule>,
) -> Response {
    let expiration_date = match add.rule.expiration_date.as_deref() {
        None => None,
        Some(text) => match crate::clock::parse_time(text) {
            Some(t) => Some(t),
            None => {
                return (StatusCode::BAD_REQUEST, "expiration_date is not ISO 8601")
                    .into_response();
            }
        },
    };
    let rule = NewRule {
        principal_type: add.rule.principal_type,
        principal: add.rule.principal,
        path: add.rule.path,
        permissions: add.rule.permissions,
        expiration_date,
        notify_email: None,
        notify_message: None,
    };
    let handle = handle(shared);
    let made = match add.role_type {
        Some(role_type) => handle
            .add_role_rule(&endpoint, rule, &role_type)
            .map(|()| None),
        None => handle.add_foreign_rule(&endpoint, rule).map(Some),
    };
    match made {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(error) => (
            error.status,
            Json(json!({ "code": error.code, "message": error.message })),
        )
            .into_response(),
    }
}

async fn delete_rule(
    State(shared): State<Arc<Shared>>,
    Path((endpoint, rule)): Path<(String, String)>,
) -> StatusCode {
    if handle(shared).delete_rule_by_hand(&endpoint, &rule) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
