//! The bearer token every RPC but health and reflection must carry.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// A secret string (token, password, client secret). It never prints: `Debug` and `Display`
/// show `[redacted]`, so it can sit in configuration structs that are logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// Reads a secret from a file, trimming surrounding whitespace (a trailing newline is usual).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read secret file {}: {e}", path.display()))?;
        let value = text.trim();
        anyhow::ensure!(!value.is_empty(), "secret file {} is empty", path.display());
        Ok(Self::new(value))
    }

    /// The secret itself. Call only where it is sent, never where it could be logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a server checks callers.
#[derive(Clone, Debug)]
pub enum ServerAuth {
    /// Every RPC except health and reflection must carry `authorization: Bearer <token>`.
    Token(Secret),
    /// No check. Only when explicitly disabled by the operator (`--no-auth`).
    Disabled,
}

/// gRPC path prefixes that stay open for probes and tooling.
const OPEN_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The credentials of an `Authorization` value in the Bearer scheme: the scheme name in any
/// case (RFC 7235: `bearer`, `Bearer`, `BEARER`), one or more spaces, then the token. `None`
/// for another scheme or an empty token.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    let token = rest[start..].trim_ascii_end();
    (!token.is_empty()).then_some(token)
}

/// Tower layer that refuses RPCs without the right bearer token as `UNAUTHENTICATED`.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    expected: Option<Arc<[u8]>>,
}

impl AuthLayer {
    /// A layer for the given policy.
    pub fn new(auth: &ServerAuth) -> Self {
        let expected = match auth {
            ServerAuth::Token(secret) => Some(Arc::from(secret.expose().as_bytes())),
            ServerAuth::Disabled => None,
        };
        Self { expected }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            expected: self.expected.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    expected: Option<Arc<[u8]>>,
}

impl<S> AuthService<S> {
    fn allowed<B>(&self, req: &Request<B>) -> Result<(), &'static str> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let path = req.uri().path();
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(());
        }
        let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
            return Err("missing bearer token");
        };
        let Some(token) = bearer_token(value.as_bytes()) else {
            return Err("the authorization header is not `Bearer <token>`");
        };
        if bool::from(token.ct_eq(expected)) {
            Ok(())
        } else {
            Err("invalid bearer token")
        }
    }
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        futures::future::Ready<Result<Response<Body>, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.allowed(&req) {
            Ok(()) => futures::future::Either::Right(self.inner.call(req)),
            Err(why) => {
                tracing::warn!(method = req.uri().path(), reason = why, "rpc refused");
                futures::future::Either::Left(futures::future::ready(Ok(Status::unauthenticated(
                    why,
                )
                .into_http())))
            }
        }
    }
}

/// Client interceptor that sends the bearer token on every call. The header value is validated
/// once, when the interceptor is made.
#[derive(Clone)]
pub struct BearerInterceptor {
    header: Option<AsciiMetadataValue>,
}

impl fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerInterceptor")
            .field("token", &self.header.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl BearerInterceptor {
    /// Sends `authorization: Bearer <token>`, or nothing when `token` is `None`.
    pub fn new(token: Option<&Secret>) -> anyhow::Result<Self> {
        let header = token
            .map(|t| {
                let mut value: AsciiMetadataValue =
                    format!("Bearer {}", t.expose()).parse().map_err(|_| {
                        anyhow::anyhow!("the bearer token holds characters a header cannot carry")
                    })?;
                value.set_sensitive(true);
                Ok::<_, anyhow::Error>(value)
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Sets the change id on an outgoing request (see [`smrtshare_api::CHANGE_ID_METADATA`]).
pub fn set_change_id<T>(request: &mut tonic::Request<T>, change_id: i64) {
    if let Ok(value) = change_id.to_string().parse() {
        request
            .metadata_mut()
            .insert(smrtshare_api::CHANGE_ID_METADATA, value);
    }
}

/// Reads the change id from incoming metadata, if a valid one is present.
pub fn change_id(metadata: &MetadataMap) -> Option<i64> {
    metadata
        .get(smrtshare_api::CHANGE_ID_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer t0k",
            "bearer t0k",
            "BEARER t0k",
            "bEaReR   t0k ",
            "Bearer  t0k",
        ] {
            assert_eq!(
                bearer_token(value.as_bytes()),
                Some(&b"t0k"[..]),
                "{value:?}"
            );
        }
        for value in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "", "t0k"] {
            assert_eq!(bearer_token(value.as_bytes()), None, "{value:?}");
        }
    }
}
