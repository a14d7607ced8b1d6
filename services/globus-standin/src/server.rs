//! The HTTP server: routes, the gate every Globus request passes (rate limit, faults, counting)
//! and an accept loop that can close a connection without answering, the way a lost network
//! answer looks to a client.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::faults::{Fault, Kind};
use crate::state::Shared;
use crate::{admin, auth_api, groups_api, transfer_api};

/// Response extension naming the Globus code of an answer, for counting.
#[derive(Clone, Debug)]
pub(crate) struct AnswerCode(pub String);

/// Request extension: closes the request's connection when notified.
#[derive(Clone, Debug)]
struct ConnectionKill(Arc<Notify>);

/// Every route, behind the gate.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/oauth2/token", post(auth_api::token))
        .route("/v2/api/identities", get(auth_api::identities))
        .route(
            "/v0.10/endpoint/{endpoint}/access_list",
            get(transfer_api::access_list),
        )
        .route(
            "/v0.10/endpoint/{endpoint}/access",
            post(transfer_api::create),
        )
        .route(
            "/v0.10/endpoint/{endpoint}/access/{rule}",
            get(transfer_api::get_rule)
                .put(transfer_api::update)
                .delete(transfer_api::delete),
        )
        .route("/v2/groups", post(groups_api::create))
        .route("/v2/groups/my_groups", get(groups_api::my_groups))
        .route(
            "/v2/groups/{group}",
            get(groups_api::get)
                .post(groups_api::batch)
                .delete(groups_api::delete),
        )
        .route("/healthz", get(|| async { "ok" }))
        .merge(admin::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

async fn not_found(request: Request) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "ClientError.NotFound",
        &format!("No such resource {}", request.uri().path()),
        request.uri().path(),
        "",
    )
}

/// A Globus error answer: `{code, message, request_id, resource}`.
pub(crate) fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    resource: &str,
    request_id: &str,
) -> Response {
    let mut response = (
        status,
        axum::Json(json!({
            "code": code,
            "message": message,
            "request_id": request_id,
            "resource": resource,
        })),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(AnswerCode(code.to_owned()));
    response
}

fn too_many_requests(retry_after_secs: u64, code: &str, resource: &str, id: &str) -> Response {
    let mut response = error_body(
        StatusCode::TOO_MANY_REQUESTS,
        code,
        "Too many requests; slow down",
        resource,
        id,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// Rate limit, faults and counting for every Globus request (the admin API passes untouched).
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(kind) = Kind::of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let resource = request.uri().path().trim_start_matches("/v0.10").to_owned();
    let kill = request.extensions().get::<ConnectionKill>().cloned();
    let _in_flight = shared.enter();

    if let Err(wait) = shared.rate_check() {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        shared.count(kind, 429, "RateLimited");
        tracing::debug!(?kind, secs, "rate limit exceeded");
        return too_many_requests(secs, "RateLimited", &resource, &shared.request_id());
    }

    let fault = shared.decide_fault(kind);
    let mut answer_delay = None;
    let mut drop_answer = false;
    if let Some(fault) = &fault {
        tracing::debug!(?kind, ?fault, "injecting fault");
        let id = shared.request_id();
        let failed = |status: StatusCode, code: &str, message: &str| {
            shared.count(kind, status.as_u16(), code);
            error_body(status, code, message, &resource, &id)
        };
        match fault {
            Fault::TooManyRequests { retry_after_secs } => {
                shared.count(kind, 429, "TooManyRequests");
                return too_many_requests(*retry_after_secs, "TooManyRequests", &resource, &id);
            }
            Fault::ServiceUnavailable => {
                return failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable",
                );
            }
            Fault::ExternalError => {
                return failed(
                    StatusCode::BAD_GATEWAY,
                    "ExternalError.DirListingFailed.Timeout",
                    "The collection did not answer in time",
                );
            }
            Fault::EndpointError => {
                return failed(
                    StatusCode::BAD_GATEWAY,
                    "EndpointError",
                    "The collection reported an error",
                );
            }
            Fault::InternalError => {
                return failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "An internal error occurred",
                );
            }
            Fault::GatewayTimeout => {
                return failed(
                    StatusCode::GATEWAY_TIMEOUT,
                    "GatewayTimeout",
                    "The gateway timed out",
                );
            }
            Fault::Slow { millis } => tokio::time::sleep(Duration::from_millis(*millis)).await,
            Fault::SlowAnswer { millis } => answer_delay = Some(Duration::from_millis(*millis)),
            Fault::DropRequest => {
                shared.count(kind, 0, "dropped");
                return drop_connection(kill).await;
            }
            Fault::DropAnswer => drop_answer = true,
            Fault::Refuse { status, code } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                return failed(status, code, "Refused (injected)");
            }
            Fault::ExpireTokens => {
                let now = shared.now();
                shared.with_world(|world, _| world.expire_tokens(now));
            }
        }
    }

    let response = next.run(request).await;
    if drop_answer {
        shared.count(kind, 0, "dropped");
        return drop_connection(kill).await;
    }
    if let Some(delay) = answer_delay {
        tokio::time::sleep(delay).await;
    }
    let code = response
        .extensions()
        .get::<AnswerCode>()
        .map_or_else(|| "ok".to_owned(), |c| c.0.clone());
    shared.count(kind, response.status().as_u16(), &code);
    response
}

/// Closes the request's connection; the future never completes (the connection task drops it).
async fn drop_connection(kill: Option<ConnectionKill>) -> Response {
    match kill {
        Some(kill) => {
            kill.0.notify_one();
            std::future::pending::<Response>().await
        }
        // Served outside the stand-in's own accept loop: nothing to close; say so loudly.
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot drop this connection",
        )
            .into_response(),
    }
}

/// Accepts connections until `shutdown` completes, then closes every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn serve_connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let extension = ConnectionKill(kill.clone());
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        request.extensions_mut().insert(extension.clone());
        let router = router.clone();
        async move {
            let request = request.map(axum::body::Body::new);
            Ok::<_, Infallible>(match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            })
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = kill.notified() => tracing::debug!("connection dropped on purpose"),
    }
}
