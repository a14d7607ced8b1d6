//! The front of the stand-in: strips `/SMRTLink/x.y.z`, counts, injects faults, checks the
//! token and `X-User-ID`, routes, and breaks listings on purpose. Serves plain HTTP or TLS
//! (tokio-rustls) on a bound listener until shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use super::Shared;
use super::api::{Caller, sl_error};
use super::faults::{Endpoint, ListingFailure};

/// Everything a connection needs to answer requests.
#[derive(Clone, Debug)]
pub(crate) struct App {
    pub(crate) shared: Arc<Shared>,
    pub(crate) api: Router,
    pub(crate) admin: Router,
}

/// `/SMRTLink/2.0.0/smrt-link/projects` → `/smrt-link/projects`.
fn strip_prefix(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/SMRTLink/") else {
        return path;
    };
    let (version, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return path;
    }
    let start = path.len() - tail.len() - 1;
    if tail.is_empty() { "/" } else { &path[start..] }
}

fn bearer(request: &Request<Body>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl App {
    pub(crate) async fn handle(&self, mut request: Request<Body>) -> Response<Body> {
        let path = strip_prefix(request.uri().path()).to_owned();
        if path != request.uri().path() {
            let path_and_query = match request.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            if let Ok(uri) = path_and_query.parse::<Uri>() {
                *request.uri_mut() = uri;
            }
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return self.route(&self.admin, request).await;
        }
        let mut endpoint = Endpoint::classify(request.method(), &path);
        if endpoint == Endpoint::Login {
            // The grant decides: read the (small) form, then hand it on.
            let (parts, body) = request.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let refresh = url::form_urlencoded::parse(&bytes)
                .any(|(k, v)| k == "grant_type" && v == "refresh_token");
            if refresh {
                endpoint = Endpoint::Refresh;
            }
            request = Request::from_parts(parts, Body::from(bytes));
        }

        // Count, and decide which faults hit this request.
        let (delay, error_status) = {
            let mut state = self.shared.lock();
            state.faults.counters.count(endpoint);
            let faults = &mut state.faults.faults;
            let delay = if faults.delay_ms > 0 && faults.applies_to(endpoint) {
                Some(Duration::from_millis(faults.delay_ms))
            } else {
                None
            };
            let status = faults.error_status;
            let error = faults.take_error(endpoint);
            if error {
                state.faults.counters.injected_errors += 1;
            }
            (delay, error.then_some(status))
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = error_status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            debug!(%path, status = status.as_u16(), "injected error");
            return sl_error(status, "injected fault: the server is not available");
        }
        if matches!(endpoint, Endpoint::Login | Endpoint::Refresh) {
            return self.route(&self.api, request).await;
        }

        // Token and user.
        let user = {
            let state = self.shared.lock();
            bearer(&request).and_then(|t| state.tokens.check_access(t).map(str::to_owned))
        };
        let Some(token_user) = user else {
            self.shared.lock().faults.counters.unauthorized += 1;
            let mut response =
                sl_error(StatusCode::UNAUTHORIZED, "Invalid or expired access token");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        };
        let user = match request.headers().get("x-user-id").map(|v| v.to_str()) {
            Some(Ok(user)) if !user.trim().is_empty() => user.trim().to_owned(),
            _ => {
                return sl_error(
                    StatusCode::BAD_REQUEST,
                    "Missing or invalid X-User-ID header",
                );
            }
        };
        debug!(%path, %user, %token_user, "smrt link request");

        // Canned answers (odd JSON on purpose).
        if request.method() == http::Method::GET {
            let raw = self.shared.lock().faults.raw.get(&path).cloned();
            if let Some(raw) = raw {
                let mut response = Response::new(Body::from(raw.body));
                *response.status_mut() = StatusCode::from_u16(raw.status).unwrap_or(StatusCode::OK);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return response;
            }
        }

        request.extensions_mut().insert(Caller(user));
        let response = self.route(&self.api, request).await;
        if response.status() == StatusCode::OK {
            let failure = self
                .shared
                .lock()
                .faults
                .faults
                .take_listing_failure(endpoint);
            if let Some(how) = failure {
                self.shared.lock().faults.counters.broken_listings += 1;
                return break_listing(response, how).await;
            }
        }
        response
    }

    async fn route(&self, router: &Router, request: Request<Body>) -> Response<Body> {
        match router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A listing answer that fails half-way.
async fn break_listing(response: Response<Body>, how: ListingFailure) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let half = bytes.slice(..bytes.len() / 2);
    match how {
        ListingFailure::TruncatedJson => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
            Response::from_parts(parts, Body::from(half))
        }
        ListingFailure::CloseMidBody => {
            // Promise the whole body, send half, then fail: hyper drops the connection.
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let first = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(half) });
            let cut = futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "listing cut off on purpose",
                ))
            });
            Response::from_parts(parts, Body::from_stream(first.chain(cut)))
        }
    }
}

/// Completes once shutdown is asked for (or the handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections until `shutdown` turns true; then lets open connections finish their
/// requests for up to `drain`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(tcp, app, shutdown, drain).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => connection(stream, app, shutdown, drain).await,
                        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, app: App, mut shutdown: watch::Receiver<bool>, drain: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(request.map(Body::new)).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                debug!(%error, "connection ended with an error");
            }
        }
        _ = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(drain, conn.as_mut()).await;
        }
    }
}
