//! The page's routes: the page itself, sign-in and sign-out, the live feed, the resync button,
//! and the two static files. Every answer carries a strict content security policy (no inline
//! script or style, no framing) and is never cached.

use axum::Form;
use axum::Router;
use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::auth::{self, CsrfForm, Role, see_other};
use super::render::{self, Header, esc, time};
use super::{Page, PageResync, events};
use crate::resync::{Report, ResyncError};

const CSS: &str = include_str!("assets/status.css");
const JS: &str = include_str!("assets/status.js");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page's router (serve with `into_make_service_with_connect_info::<SocketAddr>()`).
pub fn router(page: Page) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/events", get(events::events))
        .route("/resync", post(resync))
        .route("/static/status.css", get(|| asset("text/css", CSS)))
        .route("/static/status.js", get(|| asset("text/javascript", JS)))
        .layer(axum::middleware::map_response(guarded))
        .with_state(page)
}

async fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the page's own forms.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the whole page, read from the store now.
async fn index(State(page): State<Page>, headers: HeaderMap) -> Response {
    let Some(signed) = page.gate.signed(&headers) else {
        return see_other("/login");
    };
    match page.fragment().await {
        Ok(fragment) => {
            let as_of = time(page.store.now());
            let header = Header {
                as_of: &as_of,
                resync: page.resync.is_some() && signed.role == Role::Operator,
                signed_in: signed.session,
                csrf: &signed.csrf,
            };
            Html(render::page(&fragment, &header)).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "status page: reading the store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the coordinator's database did not answer; try again shortly",
            )
                .into_response()
        }
    }
}

/// `POST /resync`: an operator's resync, run in the background (the page shows its outcome).
async fn resync(
    State(page): State<Page>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(resync) = page.resync.clone() else {
        return (StatusCode::NOT_FOUND, "resync from the page is not enabled").into_response();
    };
    let Some(signed) = page.gate.signed(&headers) else {
        return see_other("/login");
    };
    if signed.role != Role::Operator {
        return (StatusCode::FORBIDDEN, "the read-only token cannot resync").into_response();
    }
    if !auth::form_allowed(&signed, &headers, &form.csrf) {
        tracing::warn!("status page: resync refused: stale form or another site");
        return (StatusCode::FORBIDDEN, "resync refused: stale form").into_response();
    }
    {
        let mut last = page.last_resync.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*last, Some(PageResync::Running(_))) {
            return see_other("/");
        }
        *last = Some(PageResync::Running(page.store.now()));
    }
    tracing::info!("resync requested on the status page");
    page.feed.poke();
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = resync.run(false, false) => account(&outcome),
            () = page.cancel.cancelled() => "stopped: the coordinator is shutting down".to_owned(),
        };
        *page.last_resync.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(PageResync::Ended(page.store.now(), outcome));
        page.feed.poke();
    });
    see_other("/")
}

/// A resync's outcome in one escaped line.
fn account(outcome: &Result<Report, ResyncError>) -> String {
    match outcome {
        Ok(r) => {
            let mut text = format!(
                "{} projects listed, {} differences (changes recorded), {} in step",
                r.listed,
                r.items.len(),
                r.in_sync
            );
            if !r.listing_complete {
                text.push_str("; the listing was incomplete, so nothing was removed");
            }
            if r.removals_refused {
                text.push_str(&format!("; removals refused: {}", r.refused_reason));
            }
            if !r.warnings.is_empty() {
                text.push_str(&format!("; {} warnings (see the log)", r.warnings.len()));
            }
            esc(&text)
        }
        Err(error) => esc(&format!("failed: {error}")),
    }
}

/// The page's account of its last resync (HTML; empty when none ran).
pub fn notice(last: Option<&PageResync>) -> String {
    match last {
        None => String::new(),
        Some(PageResync::Running(since)) => format!(
            r#"<p class="notice busy" id="resync-notice">Resync started from this page at {} is running.</p>"#,
            time(*since)
        ),
        Some(PageResync::Ended(at, account)) => format!(
            r#"<p class="notice" id="resync-notice">Resync from this page, ended {}: {account}.</p>"#,
            time(*at)
        ),
    }
}
