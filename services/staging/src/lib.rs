//! The staging service: the only process that writes the staging tree (a Globus collection root),
//! where smrtshare keeps one directory per SMRT Link project holding hard links to the project's
//! dataset files (DESIGN.md section 6).
//!
//! - [`config`], [`mounts`]: flags, the checked configuration, and the layout staging serves.
//! - [`xml`], [`names`], [`resolve`]: dataset XML to the files and names of a dataset directory;
//!   [`analysis`]: an analysis job's outputs to the files of its directory;
//!   [`sources`]: source directories, opened safely; [`sourcecache`], [`budget`]: what reading
//!   the sources costs, kept down and bounded.
//! - [`fs`], [`marker`]: every system call on the tree, and the markers that make it self-describing.
//! - [`apply`], [`targets`], [`probe`], [`dataset`], [`removal`], [`remove`], [`verify`]: the
//!   operations (blocking, off the runtime); [`recover`]: what others made goes back, never away.
//! - [`records`], [`rebuild`], [`sweep`]: what was staged, in SQLite, its rebuild from the tree,
//!   and the work area swept at start.
//! - [`hooks`]: points where tests act at the dangerous instant.
//! - [`locks`]: per-project serialisation.
//! - [`fault`]: why an item failed and whether a retry can cure it (one classification).
//! - [`service`], [`convert`], [`answer`], [`error`]: the gRPC service, and answers that fit.

pub mod analysis;
pub mod answer;
pub mod apply;
pub mod budget;
pub mod config;
pub mod convert;
pub mod dataset;
pub mod error;
pub mod fault;
pub mod fs;
pub mod hooks;
pub mod locks;
pub mod marker;
pub mod metrics;
pub mod model;
pub mod mounts;
pub mod names;
pub mod probe;
pub mod rebuild;
pub mod records;
pub mod recover;
pub mod removal;
pub mod remove;
pub mod report;
pub mod resolve;
pub mod service;
pub mod sourcecache;
pub mod sources;
pub mod sweep;
pub mod targets;
pub mod verify;
pub mod xml;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use smrtshare_api::staging::v1::staging_server::StagingServer;
use smrtshare_common::db::now_millis;
use smrtshare_common::server::GrpcServer;
use tokio::net::TcpListener;

pub use config::{Args, Config};
pub use service::{Handle, StagingService};

use crate::names::Namer;
use crate::resolve::SourceRoots;
use crate::service::Inner;

/// Serves staging on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with(listener, config, Handle::new(), shutdown).await
}

/// [`run`], with a handle the caller keeps (to read counters).
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    handle: Handle,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let namer = Namer::new(config.templates.clone())?;
    let mut server = GrpcServer::new(config.server.clone())?;
    let max = server.options().max_message_bytes;
    server.add_service(
        StagingServer::new(StagingService::new(handle.clone(), max))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    );
    let ready = async move {
        match start(config, namer, handle.clone()).await {
            Err(error) => match error.downcast::<mounts::Refused>() {
                Ok(refused) => {
                    // Not a passing fault: health stays NOT_SERVING and every call answers with
                    // the reason until the layout is fixed and staging restarted.
                    tracing::error!(
                        reason = %refused,
                        "staging refuses to serve: health stays NOT_SERVING until the configuration is fixed"
                    );
                    handle.refuse(refused.0);
                    std::future::pending().await
                }
                Err(error) => Err(error),
            },
            ok => ok,
        }
    };
    server.serve(listener, ready, shutdown).await
}

/// Start-up, before health turns SERVING: open and lock the root, check extended attributes and
/// the layout (one mount for every tree, no tree inside another: [`mounts::Refused`] otherwise),
/// open the records, rebuild what the tree holds that they miss, then sweep the work area.
async fn start(config: Config, namer: Namer, handle: Handle) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (root, source_roots, dir_mode, hooks) = (
        config.root.clone(),
        config.source_roots.clone(),
        config.dir_mode,
        config.hooks.clone(),
    );
    let (tree, roots) = tokio::task::spawn_blocking(move || {
        let roots = SourceRoots::open(&source_roots)?;
        mounts::check_layout(&root, roots.handles())?;
        let tree = fs::Tree::open(&root, dir_mode)?.with_hooks(hooks);
        Ok::<_, anyhow::Error>((tree, roots))
    })
    .await
    .context("start-up task")??;
    let records = records::Records::open(&config.database).await?;
    let inner = Arc::new(Inner {
        tree,
        roots,
        namer,
        job_rules: config.job_rules,
        limits: config.limits,
        cache: sourcecache::SourceCache::new(config.source_cache_entries),
        budget: budget::ParseBudget::new(config.parse_memory),
        records,
        locks: locks::Locks::default(),
        fs_timeout: config.fs_timeout,
    });
    let blocking = inner.clone();
    let all = inner.records.all();
    let changes =
        tokio::task::spawn_blocking(move || rebuild::rebuild(&blocking.ctx(), &all, now_millis()))
            .await
            .context("rebuild task")?;
    if !changes.is_empty() {
        tracing::info!(projects = changes.len(), "records rebuilt from the tree");
        inner
            .records
            .store(changes)
            .await
            .context("storing rebuilt records")?;
    }
    let blocking = inner.clone();
    let all = inner.records.all();
    let kept = tokio::task::spawn_blocking(move || sweep::sweep(&blocking.ctx(), &all))
        .await
        .context("sweep task")?;
    let inner = Arc::into_inner(inner).context("start-up state still shared")?;

    tracing::info!(
        root = %config.root.display(),
        database = %config.database.display(),
        projects = inner.records.all().len(),
        kept_in_work_area = kept.len(),
        swept_in = ?started.elapsed(),
        "staging ready"
    );
    let inner = Arc::new(inner);
    tokio::spawn(checkpoints(Arc::downgrade(&inner)));
    handle.set(inner);
    Ok(())
}

/// Copies the records' write-ahead log into the database a second after writing paused (at
/// least every 30 s while writes go on), until the service's state is dropped.
async fn checkpoints(inner: std::sync::Weak<Inner>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let (idle, max) = (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        if let Err(error) = inner.records.checkpoint(idle, max).await {
            tracing::warn!(%error, "records checkpoint failed; retried later");
        }
    }
}
