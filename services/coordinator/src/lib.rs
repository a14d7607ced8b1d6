//! The coordinator: takes every SMRT Link project change (the NGINX mirror's HTTP intake, the
//! Notify RPCs, resync), re-reads SMRT Link after a settle delay, and fans each change out as two
//! independent tasks (staging and access), recorded durably with per-task outcomes.
//!
//! - [`store`]: the tables of DESIGN.md section 5 on SQLite or PostgreSQL.
//! - [`reader`]: reads SMRT Link for settled changes; [`engine`]: runs tasks; [`resync`]:
//!   startup renewal and periodic resync; [`intake`]: the mirror's HTTP endpoint;
//!   [`service`]: the gRPC API; [`status`]: the status page.

pub mod clock;
pub mod config;
pub mod convert;
pub mod engine;
pub mod follower;
pub mod intake;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod naming;
pub mod peers;
pub mod reader;
pub mod replica;
pub mod resync;
pub mod rules;
pub mod service;
pub mod smrtlink;
pub mod source;
pub mod status;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use smrtshare_api::coordinator::v1::coordinator_server::CoordinatorServer;
use smrtshare_common::server::{GrpcServer, ServerOptions};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineConfig};
use crate::intake::IntakeConfig;
use crate::naming::DirectoryNamer;
use crate::peers::Peers;
use crate::reader::{Reader, ReaderConfig};
use crate::resync::{Resync, ResyncConfig};
use crate::source::ProjectSource;
use crate::store::Store;

/// Everything the coordinator runs with, besides its listeners.
#[derive(Clone)]
pub struct Settings {
    /// Task engine.
    pub engine: EngineConfig,
    /// SMRT Link readers.
    pub reader: ReaderConfig,
    /// Analysis job followers.
    pub follower: follower::FollowerConfig,
    /// Resync.
    pub resync: ResyncConfig,
    /// Run the periodic resync (the first run is the startup renewal).
    pub periodic_resync: bool,
    /// Mirror intake.
    pub intake: IntakeConfig,
    /// Project directory names.
    pub namer: DirectoryNamer,
    /// This replica's name in leases.
    pub owner: String,
    /// After the drain (`ServerOptions::drain_timeout`, in which work in flight may finish),
    /// how long abandoned work gets to hand its claims back before the process exits.
    pub drain_grace: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("owner", &self.owner)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// What the coordinator talks to.
#[derive(Clone)]
pub struct Deps {
    /// Its database.
    pub store: Store,
    /// SMRT Link.
    pub source: Arc<dyn ProjectSource>,
    /// Staging and access.
    pub peers: Peers,
    /// Where measurements go (the same handle the SMRT Link source reports to).
    pub metrics: metrics::Metrics,
}

/// The sockets the coordinator serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// The mirror intake (HTTP).
    pub intake: TcpListener,
    /// `/metrics` (HTTP), when served.
    pub metrics: Option<TcpListener>,
    /// The status page (HTTP) and its settings, when served.
    pub status: Option<status::StatusListener>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Runs the coordinator until `shutdown`: gRPC on `grpc`, the mirror intake on `intake`,
/// readers, task workers and the periodic resync.
///
/// It registers as its replica first (taking back the claims a previous process of the same name
/// left). When `shutdown` fires, nothing new is claimed, the gRPC server drains and work in flight
/// may finish, both within `options.drain_timeout`; work still running then is abandoned and its
/// claims handed back within `settings.drain_grace`. So the process ends within the sum.
pub async fn run(
    listeners: Listeners,
    options: ServerOptions,
    settings: Settings,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let Listeners {
        grpc,
        intake,
        metrics: metrics_listener,
        status: status_listener,
    } = listeners;
    let metrics = deps.metrics.clone();
    let wake_tasks = engine::TaskWake::new();
    let wake_readers = Arc::new(Notify::new());
    // `cancel`: stop claiming; `abort`: drop work in flight and hand it back; `lost`: another
    // process took this replica's name.
    let (cancel, abort, lost) = (
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );

    let me = replica::Identity::of_this_process(&settings.owner);
    replica::register(&deps.store, &me, settings.engine.lease).await?;
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = replica::spawn_heartbeat(
        deps.store.clone(),
        me,
        settings.engine.lease.renew_every,
        heartbeat_stop.clone(),
        lost.clone(),
    );

    let engine = Engine::new(
        deps.store.clone(),
        deps.peers.clone(),
        settings.engine.clone(),
        settings.owner.clone(),
        wake_tasks.clone(),
    )
    .with_metrics(metrics.clone());
    let reader = Reader::new(
        deps.store.clone(),
        deps.source.clone(),
        settings.namer.clone(),
        settings.reader.clone(),
        settings.owner.clone(),
        wake_readers.clone(),
        wake_tasks.clone(),
    )
    .with_metrics(metrics.clone());
    let resync = Resync::new(
        deps.store.clone(),
        deps.source.clone(),
        deps.peers.clone(),
        settings.namer.clone(),
        settings.resync.clone(),
        settings.owner.clone(),
        wake_tasks.clone(),
    )
    .with_metrics(metrics.clone());

    let follower = follower::Follower::new(
        deps.store.clone(),
        deps.source.clone(),
        settings.follower.clone(),
        settings.owner.clone(),
        wake_tasks.clone(),
    )
    .with_metrics(metrics.clone());

    let mut background = engine.spawn(cancel.clone(), abort.clone());
    background.extend(reader.spawn(cancel.clone(), abort.clone()));
    background.extend(follower.spawn(cancel.clone(), abort.clone()));
    if settings.periodic_resync {
        background.push(resync.spawn_periodic(cancel.clone()));
    }
    background.push(spawn_task_gauges(
        deps.store.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let encode_from = metrics.clone();
        let metrics_cancel = cancel.clone();
        background.push(tokio::spawn(async move {
            let encode: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || encode_from.encode());
            if let Err(error) = smrtshare_common::metrics::serve(listener, encode, async move {
                metrics_cancel.cancelled().await
            })
            .await
            {
                tracing::error!(error = format!("{error:#}"), "metrics endpoint failed");
            }
        }));
    }

    let intake_addr = intake.local_addr().context("reading the intake address")?;
    let app = intake::router(
        deps.store.clone(),
        settings.intake.clone(),
        wake_readers.clone(),
        metrics.clone(),
    );
    let intake_cancel = cancel.clone();
    background.push(tokio::spawn(async move {
        let served = axum::serve(
            intake,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { intake_cancel.cancelled().await })
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "the mirror intake failed");
        }
    }));
    tracing::info!(address = %intake_addr, "mirror intake listening");

    if let Some(page) = status_listener {
        let operator_token = match &options.auth {
            smrtshare_common::auth::ServerAuth::Token(token) => Some(token.clone()),
            smrtshare_common::auth::ServerAuth::Disabled => None,
        };
        background.extend(status::serve(
            page,
            operator_token,
            deps.store.clone(),
            resync.clone(),
            cancel.clone(),
        )?);
    }

    let (max, drain) = (options.max_message_bytes, options.drain_timeout);
    let mut server = GrpcServer::new(options)?;
    let service =
        service::CoordinatorService::new(deps.store.clone(), resync, wake_readers, metrics);
    server.add_service(
        CoordinatorServer::new(service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    );
    // Shutdown begins at the signal, or when another process took this replica's name.
    let began = Arc::new(std::sync::OnceLock::new());
    let stopping = {
        let (began, cancel, lost) = (began.clone(), cancel.clone(), lost.clone());
        async move {
            tokio::select! {
                () = shutdown => {}
                () = lost.cancelled() => {}
            }
            let _ = began.set(tokio::time::Instant::now());
            cancel.cancel();
        }
    };
    let served = server.serve(grpc, async { Ok(()) }, stopping).await;

    // Work in flight had the drain to finish; then it is dropped and handed back.
    cancel.cancel();
    let deadline = began
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now)
        + drain;
    let mut pending = futures::future::join_all(background);
    if tokio::time::timeout_at(deadline, &mut pending)
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "work still in flight after the drain; abandoning it and handing its claims back"
        );
        abort.cancel();
        if tokio::time::timeout(settings.drain_grace, &mut pending)
            .await
            .is_err()
        {
            tracing::warn!(grace = ?settings.drain_grace, "claims not handed back within the grace; they lapse");
        }
    }
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    if lost.is_cancelled() {
        anyhow::bail!(
            "another process registered under replica name {:?}",
            settings.owner
        );
    }
    served
}

/// Refreshes the tasks-by-state gauges from the database every few seconds.
fn spawn_task_gauges(
    store: Store,
    metrics: metrics::Metrics,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match store.task_counts().await {
                Ok(counts) => metrics.set_task_counts(
                    &counts
                        .into_iter()
                        .map(|(t, s, n)| (t.as_str().to_owned(), s.as_str().to_owned(), n))
                        .collect::<Vec<_>>(),
                ),
                Err(error) => tracing::debug!(%error, "reading task counts for metrics failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    })
}
