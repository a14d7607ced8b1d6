//! A faithful local stand-in for SMRT Link: a real HTTP(S) server.
//!
//! It serves DESIGN.md section 2 under `/SMRTLink/<x.y.z>/...` and `/...`:
//! the token endpoint (`POST /token`, password and refresh grants for configured users; tokens
//! expire), `GET /status`, projects (`GET /smrt-link/projects` in no particular order and
//! without members or datasets; `GET /smrt-link/projects/{id}`, 404 once gone), dataset
//! look-ups (`/smrt-link/datasets/search/{id}` answering `{}` when missing,
//! `/smrt-link/datasets/{id}`, `/smrt-link/datasets/{type}/{id}` with `meta` and the usual short
//! type names), analysis jobs (listed by `projectId`, soft-deleted ones only with `showAll`;
//! detail by id or UUID, 404 when unknown; `entry-points`; `datastore` as SMRT Link imports the
//! outputs, complete once the job is `SUCCESSFUL`; jobs change state on schedules evaluated
//! against the stand-in's clock: see [`jobs`] and [`schedule`]), and the writes the SMRT Link web
//! UI makes (which NGINX mirrors to the coordinator): `POST /smrt-link/projects`,
//! `PUT`/`DELETE /smrt-link/projects/{id}` (dataset stealing; deleted projects' datasets and jobs
//! return to project 1; project 1 answers 403) and
//! `POST /smrt-link/job-manager/jobs/analysis` (a `CREATED` job). Every SMRT Link endpoint but
//! the token endpoint needs a valid bearer token (401 otherwise) and `X-User-ID` (400).
//!
//! [`StandIn`] runs it in-process and derefs to [`Control`], which changes the state as SMRT
//! Link users do, injects faults and reads counters; the admin HTTP API (see [`admin`]) does the
//! same over HTTP for the binary (jobs and the clock: [`admin_jobs`]). Faults (delays, 5xx,
//! answers cut off half-way) apply to every SMRT Link endpoint, the job endpoints included.

pub mod admin;
pub mod admin_jobs;
mod api;
mod control;
mod faults;
mod job_api;
mod job_control;
mod job_new;
pub mod jobs;
pub mod schedule;
mod seed;
mod server;
mod store;
mod tokens;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use smrtshare_common::Secret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use url::Url;
use uuid::Uuid;

pub use control::Control;
pub use faults::{Counters, Endpoint, Faults, ListingFailure, RawAnswer};
pub use job_new::{JobOutput, JobSeed};
pub use schedule::{ScheduleStep, StepTime};
pub use seed::{PathRewrite, Seed};
pub use store::NewProject;

use smrtshare_smrtlink::config::ClientConfig;

/// Why the stand-in refused a change (admin API and web-UI writes alike).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StandInError {
    /// No such project, dataset, member or job (404).
    #[error("{0}")]
    NotFound(String),
    /// Not allowed: the General Project cannot be modified or deleted (403).
    #[error("{0}")]
    Forbidden(String),
    /// A malformed or incomplete request (400).
    #[error("{0}")]
    Invalid(String),
    /// A duplicate name, id or UUID (409).
    #[error("{0}")]
    Conflict(String),
}

impl StandInError {
    /// The HTTP status SMRT Link would answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
        }
    }
}

/// A server certificate and key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    /// PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Secret,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Reads a certificate chain and a key from PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read(cert)
            .with_context(|| format!("reading TLS certificate {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading TLS key {}", key.display()))?;
        Ok(Self {
            cert_pem,
            key_pem: Secret::new(key_pem),
        })
    }

    fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("TLS certificate is not PEM")?;
        anyhow::ensure!(
            !certs.is_empty(),
            "TLS certificate file holds no certificate"
        );
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes())
            .context("TLS key is not a PEM private key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("TLS certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// How to start the stand-in.
#[derive(Clone, Debug)]
pub struct StandInOptions {
    /// Seed directory; `None` starts with only an empty General Project.
    pub seed: Option<Seed>,
    /// `(login, password)` pairs allowed to log in.
    pub users: Vec<(String, Secret)>,
    /// Access token lifetime.
    pub token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Serve HTTPS with this identity.
    pub tls: Option<TlsIdentity>,
    /// How long open requests may finish after shutdown.
    pub drain: Duration,
}

impl Default for StandInOptions {
    /// No seed, user `admin` with password `admin`, tokens for 10 minutes (refresh: 1 hour),
    /// plain HTTP.
    fn default() -> Self {
        Self {
            seed: None,
            users: vec![("admin".into(), Secret::new("admin"))],
            token_ttl: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(3600),
            tls: None,
            drain: Duration::from_secs(5),
        }
    }
}

/// Everything behind the one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) store: store::Store,
    pub(crate) jobs: jobs::Jobs,
    pub(crate) tokens: tokens::Tokens,
    pub(crate) faults: faults::FaultState,
    pub(crate) clock: schedule::Clock,
}

impl State {
    /// The jobs, with every schedule step due by now applied.
    pub(crate) fn jobs_now(&mut self) -> &mut jobs::Jobs {
        self.jobs.settle(self.clock.now());
        &mut self.jobs
    }

    /// Deletes a project: its datasets and jobs return to the General Project.
    pub(crate) fn delete_project(&mut self, id: i64) -> Result<(), StandInError> {
        self.store.delete_project(id)?;
        let now = self.clock.now();
        self.jobs_now().project_deleted(id, now);
        Ok(())
    }
}

/// State shared by the server and every [`Control`].
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) started: Instant,
    pub(crate) id: Uuid,
}

impl Shared {
    /// The state; a poisoned lock (a panic elsewhere) is taken over, not propagated.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn build(
    options: &StandInOptions,
) -> anyhow::Result<(server::App, Control, Option<tokio_rustls::TlsAcceptor>)> {
    let clock = schedule::Clock::default();
    let (store, jobs) = match &options.seed {
        Some(seed) => seed.load(clock.now()).with_context(|| {
            format!("seeding the SMRT Link stand-in from {}", seed.dir.display())
        })?,
        None => (store::Store::new(), jobs::Jobs::new()),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            store,
            jobs,
            tokens: tokens::Tokens::new(&options.users, options.token_ttl, options.refresh_ttl),
            faults: faults::FaultState::default(),
            clock,
        }),
        started: Instant::now(),
        id: Uuid::new_v4(),
    });
    let control = Control {
        shared: Arc::clone(&shared),
    };
    let app = server::App {
        api: api::router(Arc::clone(&shared)),
        admin: admin::router(control.clone()),
        shared,
    };
    let tls = options
        .tls
        .as_ref()
        .map(TlsIdentity::acceptor)
        .transpose()?;
    Ok((app, control, tls))
}

/// Serves the stand-in on `listener` until `shutdown` completes (the binary's entry point).
pub async fn run(
    listener: TcpListener,
    options: StandInOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (app, _control, tls) = build(&options)?;
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(server::serve(listener, app, tls, stopped, options.drain));
    shutdown.await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(options.drain + Duration::from_secs(1), server).await;
    Ok(())
}

/// A stand-in running in this process (tests). Derefs to [`Control`]. Stops when dropped.
#[derive(Debug)]
pub struct StandIn {
    control: Control,
    addr: SocketAddr,
    url: Url,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Starts on `127.0.0.1` on a free port.
    pub async fn start(options: StandInOptions) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the stand-in")?;
        Self::start_on(listener, options)
    }

    /// Starts on a bound listener.
    pub fn start_on(listener: TcpListener, options: StandInOptions) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let (app, control, tls) = build(&options)?;
        let (stop, stopped) = watch::channel(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = Url::parse(&format!("{scheme}://{addr}")).context("stand-in URL")?;
        let task = tokio::spawn(server::serve(listener, app, tls, stopped, options.drain));
        Ok(Self {
            control,
            addr,
            url,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://127.0.0.1:PORT` (the token endpoint is `{url}/token`, admin `{url}/admin`).
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    /// The API base a client uses: `{url}/SMRTLink/2.0.0`.
    pub fn api_url(&self) -> Url {
        smrtshare_smrtlink::config::join(&self.url(), "/SMRTLink/2.0.0")
    }

    /// A client configuration for this stand-in, with short limits fit for tests (request
    /// timeout 5 s, 3 tries, 20-100 ms backoff).
    pub fn client_config(&self, user: &str, password: &str) -> ClientConfig {
        let mut config = ClientConfig::new(self.api_url(), user, Secret::new(password));
        config.request_timeout = Duration::from_secs(5);
        config.connect_timeout = Duration::from_secs(2);
        config.retry = smrtshare_smrtlink::config::RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        };
        config
    }

    /// The state handle (also reachable through `Deref`).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stops accepting, lets open requests finish, and waits for the server.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::ops::Deref for StandIn {
    type Target = Control;

    fn deref(&self) -> &Control {
        &self.control
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
