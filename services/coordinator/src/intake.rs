//! The HTTP endpoint NGINX mirrors SMRT Link's project and analysis requests to (DESIGN.md
//! section 3). It answers 202 with an empty body before any work; the request body is never
//! read or trusted: SMRT Link is re-read after the settle delay.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ipnet::IpNet;
use smrtshare_common::Secret;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::model::{ChangeKind, ChangeReason};
use crate::store::{NewChange, Store};

/// Header carrying the shared secret, when one is configured.
pub const SECRET_HEADER: &str = "x-smrtshare-mirror-secret";

/// Intake settings.
#[derive(Clone, Debug)]
pub struct IntakeConfig {
    /// Wait this long after a mirrored request before reading SMRT Link.
    pub settle: Duration,
    /// A request merged into a settling change pushes its settle time, but never beyond this
    /// long after the change was first recorded.
    pub max_settle: Duration,
    /// Shared secret the mirror must send in `X-Smrtshare-Mirror-Secret`, if set.
    pub secret: Option<Secret>,
    /// Source addresses allowed to post (loopback by default).
    pub allowed: Vec<IpNet>,
}

#[derive(Clone)]
struct Intake {
    store: Store,
    config: Arc<IntakeConfig>,
    wake_readers: Arc<Notify>,
    metrics: Metrics,
}

/// What a mirrored request means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mirrored {
    /// A change to record.
    Change {
        /// The project (0 for creations and analysis submissions).
        project_id: i64,
        /// What kind.
        kind: ChangeKind,
    },
    /// Project 1: never shared (405).
    GeneralProject,
    /// A known path with a method the mirror does not send (405).
    MethodNotAllowed,
    /// Anything else (404).
    Unknown,
}

/// Classifies a mirrored request by method and path. Paths arrive as `/smrt-link/...` or
/// `/SMRTLink/<x.y.z>/smrt-link/...`; a trailing slash is tolerated.
pub fn classify(method: &Method, path: &str) -> Mirrored {
    let path = strip_version_prefix(path);
    let Some(rest) = path.strip_prefix("/smrt-link/") else {
        return Mirrored::Unknown;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["projects"] => match *method {
            Method::POST => Mirrored::Change {
                project_id: 0,
                kind: ChangeKind::ProjectsCreated,
            },
            _ => Mirrored::MethodNotAllowed,
        },
        ["projects", id] => {
            let Some(id) = parse_id(id) else {
                return Mirrored::Unknown;
            };
            if id == 1 {
                return Mirrored::GeneralProject;
            }
            match *method {
                Method::PUT | Method::POST | Method::PATCH => Mirrored::Change {
                    project_id: id,
                    kind: ChangeKind::ProjectChanged,
                },
                Method::DELETE => Mirrored::Change {
                    project_id: id,
                    kind: ChangeKind::ProjectDeleted,
                },
                _ => Mirrored::MethodNotAllowed,
            }
        }
        ["job-manager", "jobs", "analysis"] => match *method {
            Method::POST => Mirrored::Change {
                project_id: 0,
                kind: ChangeKind::AnalysisSubmitted,
            },
            _ => Mirrored::MethodNotAllowed,
        },
        _ => Mirrored::Unknown,
    }
}

fn strip_version_prefix(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/SMRTLink/") else {
        return path;
    };
    let Some((version, tail)) = rest.split_once('/') else {
        return path;
    };
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        &path[path.len() - tail.len() - 1..]
    } else {
        path
    }
}

fn parse_id(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|id| *id > 0)
}

/// The intake router (serve with `into_make_service_with_connect_info::<SocketAddr>()`).
pub fn router(
    store: Store,
    config: IntakeConfig,
    wake_readers: Arc<Notify>,
    metrics: Metrics,
) -> Router {
    let state = Intake {
        store,
        config: Arc::new(config),
        wake_readers,
        metrics,
    };
    Router::new().fallback(mirror).with_state(state)
}

async fn mirror(
    state: State<Intake>,
    peer: ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> StatusCode {
    let metrics = state.0.metrics.clone();
    let answer = answer(state, peer, method, uri, headers).await;
    metrics.intake_answered(answer.as_u16());
    answer
}

async fn answer(
    State(intake): State<Intake>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> StatusCode {
    let path = uri.path();
    if !allowed(&intake.config.allowed, peer.ip()) {
        tracing::warn!(peer = %peer, %method, path, "mirrored request refused: source address not allowed");
        return StatusCode::FORBIDDEN;
    }
    if let Some(secret) = &intake.config.secret {
        let sent = headers
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(sent, secret.expose().as_bytes()) {
            tracing::warn!(peer = %peer, %method, path, "mirrored request refused: missing or wrong shared secret");
            return StatusCode::FORBIDDEN;
        }
    }
    match classify(&method, path) {
        Mirrored::Change { project_id, kind } => {
            let request = format!("{method} {path}");
            let settle_until = intake.store.now() + crate::clock::millis(intake.config.settle);
            let store = intake.store.clone();
            let wake = intake.wake_readers.clone();
            let metrics = intake.metrics.clone();
            let max_settle = intake.config.max_settle;
            // Answer first; record after. A crash in between is repaired by resync.
            tokio::spawn(async move {
                let new = NewChange {
                    project_id,
                    reason: ChangeReason::Mirror,
                    kind,
                    request: request.clone(),
                    caused_by: 0,
                    settle_until,
                    max_settle_ms: crate::clock::millis(max_settle),
                };
                match store.record_change(&new).await {
                    Ok((change_id, merged)) => {
                        if !merged {
                            metrics.change_recorded(ChangeReason::Mirror.as_str(), kind.as_str());
                        }
                        tracing::info!(change_id, project_id, kind = %kind, merged, request, "mirrored change recorded");
                        wake.notify_one();
                    }
                    Err(error) => {
                        tracing::error!(%error, project_id, request, "recording a mirrored change failed; resync will repair")
                    }
                }
            });
            StatusCode::ACCEPTED
        }
        Mirrored::GeneralProject => {
            tracing::debug!(%method, path, "mirrored request for project 1 ignored");
            StatusCode::METHOD_NOT_ALLOWED
        }
        Mirrored::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Mirrored::Unknown => {
            tracing::debug!(%method, path, "mirrored request for an unknown path");
            StatusCode::NOT_FOUND
        }
    }
}

fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    nets.iter().any(|net| net.contains(&ip))
}

/// Compares two secrets without leaking where they differ (the length may show).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Parses `--intake-allow` entries: addresses or CIDR networks.
pub fn parse_allowed(entries: &[String]) -> anyhow::Result<Vec<IpNet>> {
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--intake-allow: {e:?} is neither an address nor a CIDR network"
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_path_shapes_and_every_outcome() {
        let change = |id, kind| Mirrored::Change {
            project_id: id,
            kind,
        };
        assert_eq!(
            classify(&Method::PUT, "/smrt-link/projects/2"),
            change(2, ChangeKind::ProjectChanged)
        );
        assert_eq!(
            classify(&Method::PUT, "/SMRTLink/2.0.0/smrt-link/projects/2"),
            change(2, ChangeKind::ProjectChanged)
        );
        assert_eq!(
            classify(&Method::PUT, "/SMRTLink/1.0.0/smrt-link/projects/2/"),
            change(2, ChangeKind::ProjectChanged)
        );
        assert_eq!(
            classify(&Method::DELETE, "/smrt-link/projects/7"),
            change(7, ChangeKind::ProjectDeleted)
        );
        assert_eq!(
            classify(&Method::POST, "/smrt-link/projects"),
            change(0, ChangeKind::ProjectsCreated)
        );
        assert_eq!(
            classify(
                &Method::POST,
                "/SMRTLink/2.0.0/smrt-link/job-manager/jobs/analysis"
            ),
            change(0, ChangeKind::AnalysisSubmitted)
        );
        assert_eq!(
            classify(&Method::PUT, "/smrt-link/projects/1"),
            Mirrored::GeneralProject
        );
        assert_eq!(
            classify(&Method::DELETE, "/SMRTLink/2.0.0/smrt-link/projects/1"),
            Mirrored::GeneralProject
        );
        assert_eq!(
            classify(&Method::GET, "/smrt-link/projects/2"),
            Mirrored::MethodNotAllowed
        );
        for path in [
            "/smrt-link/projects/abc",
            "/smrt-link/projects/-3",
            "/smrt-link/projects/0",
            "/smrt-link/projects/99999999999999999999",
            "/smrt-link/projects/2/members",
            "/smrt-link/datasets",
            "/SMRTLink/x.y.z/smrt-link/projects/2",
            "/SMRTLink/2.0.0/other/projects/2",
            "/",
            "/smrt-link/projects/%2e%2e",
        ] {
            assert_eq!(classify(&Method::PUT, path), Mirrored::Unknown, "{path}");
        }
    }

    #[test]
    fn allowed_addresses_and_networks() {
        let nets =
            parse_allowed(&["127.0.0.1".into(), "::1".into(), "10.1.0.0/16".into()]).unwrap();
        assert!(allowed(&nets, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&nets, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(allowed(&nets, "10.1.200.3".parse().unwrap()));
        assert!(!allowed(&nets, "10.2.0.1".parse().unwrap()));
        assert!(!allowed(&nets, "192.168.1.1".parse().unwrap()));
        assert!(parse_allowed(&["nonsense".into()]).is_err());
    }
}
