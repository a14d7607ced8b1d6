//! Who may see the status page. A browser cannot send a bearer header on a plain page load, so
//! the token is typed once into a sign-in form and exchanged for a session: a random id in an
//! `HttpOnly`, `SameSite=Strict` cookie, kept in memory (hashed) until it expires or the viewer
//! signs out. Tokens are compared in constant time and never logged; every form that changes
//! something (sign-out, resync) carries the session's CSRF token, and a POST whose `Origin`
//! names another site is refused.
//!
//! Two roles: the coordinator's own bearer token signs in an operator (who may resync from the
//! page when that is enabled); the read-only status token, when set, signs in a viewer. With
//! neither configured (`--no-auth`), the page is open to anyone who reaches its listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use sha2::Digest as _;
use smrtshare_common::Secret;
use tokio::time::Instant;

use super::{Page, render};
use crate::intake::constant_time_eq;

/// The session cookie.
const COOKIE_NAME: &str = "smrtshare_status";
/// Most sessions held; past it the oldest is dropped.
const MOST_SESSIONS: usize = 1000;

/// What a signed-in viewer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read the page.
    Viewer,
    /// Read the page and, when enabled, resync.
    Operator,
}

/// A viewer the page recognised.
#[derive(Clone, Debug)]
pub struct Signed {
    /// Their role.
    pub role: Role,
    /// The token their forms must carry.
    pub csrf: String,
    /// When the session ends.
    pub until: Instant,
    /// False on an open page (nobody signs in).
    pub session: bool,
}

struct Session {
    role: Role,
    csrf: String,
    until: Instant,
}

/// The tokens and the sessions they opened.
pub struct Gate {
    operator: Option<Secret>,
    viewer: Option<Secret>,
    ttl: Duration,
    secure_cookie: bool,
    /// Sessions by the SHA-256 of their cookie value.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// The CSRF token of an open page.
    open_csrf: String,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.is_open())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key(value: &str) -> [u8; 32] {
    sha2::Sha256::digest(value.as_bytes()).into()
}

impl Gate {
    /// `operator`: the coordinator's bearer token; `viewer`: the read-only status token.
    pub fn new(
        operator: Option<Secret>,
        viewer: Option<Secret>,
        ttl: Duration,
        secure_cookie: bool,
    ) -> Self {
        Self {
            operator,
            viewer,
            ttl,
            secure_cookie,
            sessions: Mutex::new(HashMap::new()),
            open_csrf: random_hex(),
        }
    }

    /// No token configured: anyone who reaches the listener sees the page.
    pub fn is_open(&self) -> bool {
        self.operator.is_none() && self.viewer.is_none()
    }

    /// The role a typed token signs in, compared in constant time with every configured token.
    fn role_of(&self, token: &str) -> Option<Role> {
        let matches = |secret: &Option<Secret>| {
            secret
                .as_ref()
                .is_some_and(|s| constant_time_eq(token.as_bytes(), s.expose().as_bytes()))
        };
        let (operator, viewer) = (matches(&self.operator), matches(&self.viewer));
        if operator {
            Some(Role::Operator)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// The viewer a request comes from: anyone on an open page, else the holder of a live
    /// session cookie.
    pub fn signed(&self, headers: &HeaderMap) -> Option<Signed> {
        if self.is_open() {
            return Some(Signed {
                role: Role::Operator,
                csrf: self.open_csrf.clone(),
                until: Instant::now() + Duration::from_secs(365 * 24 * 3600),
                session: false,
            });
        }
        let value = cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let id = key(value);
        match sessions.get(&id) {
            Some(s) if s.until > Instant::now() => Some(Signed {
                role: s.role,
                csrf: s.csrf.clone(),
                until: s.until,
                session: true,
            }),
            Some(_) => {
                sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Opens a session; answers its cookie value.
    fn start(&self, role: Role) -> String {
        let value = random_hex();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.until > now);
        if sessions.len() >= MOST_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            key(&value),
            Session {
                role,
                csrf: random_hex(),
                until: now + self.ttl,
            },
        );
        value
    }

    /// Ends the session a request carries.
    fn end(&self, headers: &HeaderMap) {
        if let Some(value) = cookie(headers) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.remove(&key(value));
        }
    }

    /// A `Set-Cookie` value: the session for `max_age`, or (empty value, 0) its removal.
    fn set_cookie(&self, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let text = format!(
            "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            max_age.as_secs()
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The session cookie's value, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE_NAME && !value.is_empty())
        .map(|(_, value)| value)
}

/// False when a browser says the request comes from another site: an `Origin` other than this
/// host, or `Sec-Fetch-Site: cross-site`. Requests without either (curl) pass; the CSRF token
/// still guards them.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return false;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let host = headers.get(HOST).map(HeaderValue::as_bytes);
    let origin = origin.as_bytes();
    let named = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    named.is_some() && named == host
}

/// True when a form carries the viewer's CSRF token and comes from this site.
pub fn form_allowed(signed: &Signed, headers: &HeaderMap, sent: &str) -> bool {
    same_origin(headers) && constant_time_eq(sent.as_bytes(), signed.csrf.as_bytes())
}

/// A redirect (303: the browser follows with a GET).
pub fn see_other(to: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, HeaderValue::from_static(to))],
    )
        .into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// A form that carries only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

// Both forms carry secrets: their `Debug` shows none.
impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginForm { token: [redacted] }")
    }
}

impl std::fmt::Debug for CsrfForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfForm { csrf: [redacted] }")
    }
}

/// `GET /login`.
pub async fn login_form(State(page): State<Page>, headers: HeaderMap) -> Response {
    if page.gate.signed(&headers).is_some() {
        return see_other("/");
    }
    Html(render::login(None)).into_response()
}

/// `POST /login`: a token that matches opens a session.
pub async fn login(
    State(page): State<Page>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if page.gate.is_open() {
        return see_other("/");
    }
    if !same_origin(&headers) {
        tracing::warn!(%peer, "status page sign-in refused: posted from another site");
        return (StatusCode::FORBIDDEN, "sign-in from another site refused").into_response();
    }
    let Some(role) = page.gate.role_of(form.token.trim()) else {
        tracing::warn!(%peer, "status page sign-in refused: wrong token");
        let form = render::login(Some("That token is not accepted."));
        return (StatusCode::UNAUTHORIZED, Html(form)).into_response();
    };
    let value = page.gate.start(role);
    tracing::info!(%peer, ?role, "status page sign-in");
    let mut response = see_other("/");
    response
        .headers_mut()
        .insert(SET_COOKIE, page.gate.set_cookie(&value, page.gate.ttl));
    response
}

/// `POST /logout`.
pub async fn logout(
    State(page): State<Page>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    match page.gate.signed(&headers) {
        Some(signed) if signed.session && form_allowed(&signed, &headers, &form.csrf) => {
            page.gate.end(&headers);
            let mut response = see_other("/login");
            response
                .headers_mut()
                .insert(SET_COOKIE, page.gate.set_cookie("", Duration::ZERO));
            response
        }
        Some(_) => (StatusCode::FORBIDDEN, "sign-out refused: stale form").into_response(),
        None => see_other("/login"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn tokens_sign_in_their_role_and_sessions_expire() {
        let gate = Gate::new(
            Some(Secret::new("operator-token")),
            Some(Secret::new("viewer-token")),
            Duration::from_secs(60),
            false,
        );
        assert_eq!(gate.role_of("operator-token"), Some(Role::Operator));
        assert_eq!(gate.role_of("viewer-token"), Some(Role::Viewer));
        assert_eq!(gate.role_of("viewer-toke"), None);
        assert_eq!(gate.role_of(""), None);
        let value = gate.start(Role::Viewer);
        let signed = gate
            .signed(&headers(&[(
                "cookie",
                &format!("a=b; smrtshare_status={value}"),
            )]))
            .unwrap();
        assert_eq!(signed.role, Role::Viewer);
        assert!(
            gate.signed(&headers(&[("cookie", "smrtshare_status=forged")]))
                .is_none()
        );
        assert!(gate.signed(&HeaderMap::new()).is_none());
    }

    #[test]
    fn origins_of_other_sites_are_refused() {
        let host = ("host", "127.0.0.1:50090");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:50090")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
    }
}
