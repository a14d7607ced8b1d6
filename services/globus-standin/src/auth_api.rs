//! Globus Auth: the client-credentials token endpoint and identity look-ups.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use crate::model::{GROUPS_SCOPE, TRANSFER_SCOPE, resource_server_of};
use crate::server::AnswerCode;
use crate::state::Shared;

/// Most usernames one identities call may name.
pub const MAX_USERNAMES: usize = 100;

/// `client_id:secret` from an HTTP Basic header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The token of an HTTP Bearer header (the scheme in any case, as RFC 7235 has it).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?;
    smrtshare_common::auth::bearer_token(value.as_bytes())
        .and_then(|token| std::str::from_utf8(token).ok())
        .map(str::to_owned)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(AnswerCode(error.to_owned()));
    response
}

fn auth_api_error(status: StatusCode, code: &str, detail: &str) -> Response {
    let mut response = (
        status,
        Json(json!({
            "errors": [{ "status": status.as_u16().to_string(), "code": code, "detail": detail }],
            "error": code.to_lowercase(),
            "error_description": detail,
        })),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(AnswerCode(code.to_owned()));
    response
}

/// `POST /v2/oauth2/token`: HTTP Basic client credentials, form
/// `grant_type=client_credentials&scope=…`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some((client_id, secret)) = basic_credentials(&headers) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication (HTTP Basic) is required",
        );
    };
    let known = shared.with_world(|world, _| world.check_client(&client_id, &secret));
    if !known {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let form: HashMap<String, String> = url_form(&body);
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    let scopes: Vec<&str> = form
        .get("scope")
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    // One token per request, for Transfer or for Groups (smrtshare asks for each separately).
    let resource_server = match scopes.as_slice() {
        [scope] => resource_server_of(scope),
        _ => None,
    };
    let Some(resource_server) = resource_server else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("scope must be one of {TRANSFER_SCOPE} and {GROUPS_SCOPE}"),
        );
    };
    let scope = scopes[0].to_owned();
    let now = shared.now();
    let (token, lifetime) = shared.with_world(|world, rng| {
        (
            world.issue_token(&client_id, resource_server, now, rng),
            world.token_lifetime,
        )
    });
    tracing::debug!(client_id, resource_server, "issued a token");
    Json(json!({
        "access_token": token,
        "scope": scope,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
        "resource_server": resource_server,
        "other_tokens": [],
    }))
    .into_response()
}

fn url_form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

/// `GET /v2/api/identities?usernames=a,b` (or `ids=`): HTTP Basic client credentials only.
/// With `provision=true`, usernames Globus does not know yet are provisioned (status `unused`)
/// when their domain may be (see [`crate::StandInConfig::provision_domains`]), as globus-cli's
/// `--provision-identity` does: the identity exists before its first login.
pub(crate) async fn identities(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if bearer_token(&headers).is_some() {
        return auth_api_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this call must be authenticated as a confidential client (HTTP Basic); \
             a token for transfer.api.globus.org is not accepted here",
        );
    }
    let Some((client_id, secret)) = basic_credentials(&headers) else {
        return auth_api_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "client authentication is required",
        );
    };
    if !shared.with_world(|world, _| world.check_client(&client_id, &secret)) {
        return auth_api_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "unknown client or wrong secret",
        );
    }
    let split = |key: &str| -> Option<Vec<String>> {
        query.get(key).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    };
    let (usernames, ids) = (split("usernames"), split("ids"));
    let wanted = match (&usernames, &ids) {
        (Some(u), None) => u,
        (None, Some(i)) => i,
        _ => {
            return auth_api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETERS",
                "exactly one of usernames and ids is required",
            );
        }
    };
    if wanted.len() > MAX_USERNAMES {
        return auth_api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETERS",
            &format!("at most {MAX_USERNAMES} usernames or ids per call"),
        );
    }
    let provision = match query.get("provision").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return auth_api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETERS",
                &format!("provision must be true or false, not {other:?}"),
            );
        }
    };
    let found: Vec<serde_json::Value> = shared.with_world(|world, _| {
        wanted
            .iter()
            .filter_map(|w| {
                if usernames.is_some() {
                    match world.identity_by_username(w) {
                        Some(identity) => Some(identity.to_json()),
                        None if provision => world.provision(w).map(|i| i.to_json()),
                        None => None,
                    }
                } else {
                    world
                        .identities
                        .iter()
                        .find(|i| i.id == *w)
                        .map(|i| i.to_json())
                }
            })
            .collect()
    });
    Json(json!({ "identities": found })).into_response()
}
