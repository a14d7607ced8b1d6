//! Coordinator benchmark (not a test): `cargo bench -p smrtshare-coordinator --bench coordinator`.
//!
//! The whole chain in one process on 127.0.0.1 sockets, every part real: the SMRT Link stand-in
//! (seeded with `smrtshare_demo::generate_synthetic`: 1,000 projects with small datasets, one
//! shared member each), the staging service (hard links into a temporary collection root), the
//! access service against the Globus stand-in, and the coordinator. Per database backend
//! (SQLite in a temporary directory, then PostgreSQL in a database of its own on
//! `SMRTSHARE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`):
//!
//! - setup (not a target): every project staged and granted through one `Resync`;
//! - (a) floor: every project renamed at the stand-in, then, per project, the bare calls a change
//!   needs (SMRT Link `GET /smrt-link/projects/{id}`, staging `ApplyProject`, access
//!   `ApplyProjectAccess`) made directly, as many projects at once as the coordinator runs tasks
//!   per target: changes/s;
//! - (b) throughput: every project renamed again, and a mirrored `PUT` for each sent to the intake
//!   as NGINX would; changes/s from the first request to the last task recorded OK (target: at
//!   least 150 changes/s, a guard, not a goal: real load is people editing projects), with its
//!   ratio to the floor for context. (a) and (b) alternate for `SMRTSHARE_BENCH_ROUNDS` rounds
//!   (1), and the medians are compared;
//! - (c) latency: every project renamed again, and the mirrored `PUT`s paced at 20 changes/s;
//!   per change, the time from the intake's 202 to both tasks recorded OK: p50 and p99, and both
//!   minus the settle delay (target: p99 under 100 ms beyond the settle delay).
//!
//! It also prints the store's size in lines (`src/store` and `src/rules.rs`).
//!
//! Completion times are the tasks' `finished_at` as the coordinator recorded them (read back
//! with `ListChanges` after each phase), so no client polls while a phase is measured.
//!
//! Settings (environment): `SMRTSHARE_BENCH_PROJECTS` (1000), `SMRTSHARE_BENCH_DATASETS` (2),
//! `SMRTSHARE_BENCH_FILES` (2 data files per dataset), `SMRTSHARE_BENCH_BACKENDS`
//! (`sqlite,postgres`), `SMRTSHARE_BENCH_SETTLE_MS` (50), `SMRTSHARE_BENCH_POLL_MS` (1000, the
//! coordinator's idle poll interval and production default: readers sleep until the next settle
//! time and workers are woken when tasks appear, so a shorter poll (20 or 100 ms were tried)
//! changes nothing measurable and only adds idle queries), `SMRTSHARE_BENCH_WORKERS` (4, the
//! production default), `SMRTSHARE_BENCH_READERS` (4, the production default),
//! `SMRTSHARE_BENCH_PACED_RATE` (100 changes/s), `SMRTSHARE_BENCH_ROUNDS` (3), `SMRTSHARE_BENCH_GLOBUS_RATE` (access' Globus
//! request limit for the bench; default 0, no limit; production 20/s), `SMRTSHARE_BENCH_LOG`
//! (log filter, `warn`).
//!
//! Besides the tables it prints `RESULT name=value` lines for `scripts/bench`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::StreamExt as _;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_api::coordinator::v1::coordinator_client::CoordinatorClient;
use smrtshare_common::Secret;
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::client::{PeerChannel, PeerOptions, peer_channel};
use smrtshare_common::config::{LogArgs, LogFormat};
use smrtshare_common::db::Backend;
use smrtshare_common::server::ServerOptions;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::engine::EngineConfig;
use smrtshare_coordinator::intake::{IntakeConfig, parse_allowed};
use smrtshare_coordinator::lease::LeaseTimes;
use smrtshare_coordinator::model::{Desired, Target};
use smrtshare_coordinator::naming::DirectoryNamer;
use smrtshare_coordinator::peers::Peers;
use smrtshare_coordinator::reader::ReaderConfig;
use smrtshare_coordinator::resync::ResyncConfig;
use smrtshare_coordinator::rules::{Backoff, RetryPolicy, TaskResult};
use smrtshare_coordinator::smrtlink::SmrtLinkSource;
use smrtshare_coordinator::source::ProjectSource as _;
use smrtshare_coordinator::store::Store;
use smrtshare_coordinator::{Deps, Listeners, Settings};
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Identity, Kind, StandIn as Globus,
    StandInConfig,
};
use smrtshare_smrtlink::SmrtLinkClient;
use smrtshare_smrtlink_standin::{Endpoint, Seed, StandIn as SmrtLink, StandInOptions};
use smrtshare_testkit::TestDatabase;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const PEER_TOKEN: &str = "bench-peer-token";
const COORDINATOR_TOKEN: &str = "bench-coordinator-token";
/// Change ids sent with the floor's direct calls (only logged by the services).
const FLOOR_CHANGE_IDS: i64 = 1_000_000_000;
/// Longest wait for one phase to finish.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Everything the run is configured with.
#[derive(Clone, Debug)]
struct Params {
    projects: usize,
    datasets: usize,
    files: usize,
    backends: Vec<Backend>,
    settle: Duration,
    poll: Duration,
    workers: usize,
    readers: usize,
    paced_rate: f64,
    /// Rounds of floor then throughput.
    rounds: usize,
    /// Mirrored requests in flight at once in the throughput phase.
    send_concurrency: usize,
    globus_rate: f64,
    globus_burst: u32,
    rule_limit: usize,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    smrtshare_common::telemetry::init(&LogArgs {
        log_format: LogFormat::Human,
        log_filter: std::env::var("SMRTSHARE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
    })?;
    let projects: usize = env("SMRTSHARE_BENCH_PROJECTS", 1000);
    let backends = std::env::var("SMRTSHARE_BENCH_BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(|b| match b.trim() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            other => Err(anyhow::anyhow!(
                "SMRTSHARE_BENCH_BACKENDS: unknown backend {other:?}"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let params = Params {
        projects,
        datasets: env("SMRTSHARE_BENCH_DATASETS", 2),
        files: env("SMRTSHARE_BENCH_FILES", 2),
        backends,
        settle: Duration::from_millis(env("SMRTSHARE_BENCH_SETTLE_MS", 50)),
        poll: Duration::from_millis(env("SMRTSHARE_BENCH_POLL_MS", 1000)),
        workers: env("SMRTSHARE_BENCH_WORKERS", 4),
        readers: env("SMRTSHARE_BENCH_READERS", 4),
        paced_rate: env("SMRTSHARE_BENCH_PACED_RATE", 20.0),
        rounds: env("SMRTSHARE_BENCH_ROUNDS", 1_usize).max(1),
        send_concurrency: 16,
        // 0: no limit. A limit of 1000/s (burst 100) capped the floor at 525 changes/s (two
        // Globus calls per rename), so the bench runs without one.
        globus_rate: env("SMRTSHARE_BENCH_GLOBUS_RATE", 0.0),
        globus_burst: 100,
        // One rule per project, plus the access manager's role rule, plus a moved rule's new
        // copy while the old one still exists: well above Globus' 1000 per collection.
        rule_limit: 2 * projects + 1000,
    };

    let work = smrtshare_testkit::tempfile::tempdir()?;
    let data = work.path().join("data");
    let seed = work.path().join("smrtlink");
    std::fs::create_dir_all(&seed)?;
    let started = Instant::now();
    let specs = smrtshare_demo::generate_synthetic(
        &data,
        params.projects,
        params.datasets,
        params.files,
        64,
    )?;
    let records: Vec<(smrtshare_demo::DatasetRecord, i64)> = specs
        .iter()
        .flat_map(|p| p.datasets.iter().map(|d| (d.clone(), p.id)))
        .collect();
    smrtshare_demo::write_json(
        &seed.join("projects.json"),
        &smrtshare_demo::projects_json(&specs),
    )?;
    smrtshare_demo::write_json(
        &seed.join("datasets.json"),
        &smrtshare_demo::datasets_json(&records),
    )?;
    let ids: Vec<i64> = specs.iter().map(|p| p.id).collect();
    let logins: Vec<String> = specs
        .iter()
        .flat_map(|p| p.members.iter())
        .filter(|(_, role)| role != "OWNER")
        .map(|(login, _)| login.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let files: usize = records.iter().map(|(d, _)| d.files.len()).sum();

    println!("coordinator benchmark");
    println!(
        "  data: {} projects x {} datasets x {} files ({files} data files of 64 bytes, {} shared members) generated in {:.1} s",
        params.projects,
        params.datasets,
        params.files,
        logins.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  coordinator: settle delay {} ms; poll interval {} ms (production default 1 s; readers sleep until the \
         next settle time and workers are woken when a read makes tasks, so polling is not on the latency \
         path: 20 ms and 100 ms measured the same within noise); {} task workers per target, {} SMRT Link \
         readers (production defaults); database pool 8; periodic resync off; logs at warn",
        params.settle.as_millis(),
        params.poll.as_millis(),
        params.workers,
        params.readers
    );
    println!(
        "  Globus stand-in and access's collection cap: rule limit raised to {} (Globus allows 1000 per collection; here {} member rules \
         plus the access manager's role rule, and a renamed directory's rules are created before the old ones \
         go); no rate limit of its own; {} identities",
        params.rule_limit,
        logins.len(),
        logins.len()
    );
    let limit = if params.globus_rate > 0.0 {
        format!(
            "raised to {} requests/s, burst {}",
            params.globus_rate, params.globus_burst
        )
    } else {
        "removed (rate 0: no limit)".to_owned()
    };
    println!(
        "  access: Globus client rate limit {limit} (production: 20 requests/s, burst 5; \
         the Globus stand-in is the only party here); at most 8 Globus requests in flight (production \
         default); same database backend as the coordinator"
    );
    println!(
        "  floor concurrency {} projects at once (= task workers per target); throughput phase sends \
         {} mirrored requests at once; latency phase paced at {} changes/s",
        params.workers, params.send_concurrency, params.paced_rate
    );

    let mut results = Vec::new();
    for &backend in &params.backends {
        println!();
        println!("== {} ==", backend.name());
        let figures = run_backend(backend, &params, &data, &seed, &ids, &logins)
            .await
            .with_context(|| format!("the {} run", backend.name()))?;
        results.push((backend, figures));
    }

    let settle_ms = params.settle.as_secs_f64() * 1000.0;
    println!();
    println!(
        "summary: {} projects; settle delay {settle_ms:.0} ms; poll {} ms",
        params.projects,
        params.poll.as_millis()
    );
    println!(
        "  {:<9} {:>11} {:>11} {:>7} {:>7} | {:>8} {:>8} {:>8} {:>10} {:>10} {:>7}",
        "backend",
        "floor/s",
        "changes/s",
        "ratio",
        ">=150/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p50-settle",
        "p99-settle",
        "<100ms"
    );
    for (backend, f) in &results {
        let ratio = f.throughput / f.floor;
        println!(
            "  {:<9} {:>11.1} {:>11.1} {:>7.2} {:>7} | {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1} {:>7}",
            backend.name(),
            f.floor,
            f.throughput,
            ratio,
            yes(f.throughput >= 150.0),
            f.latency.p50,
            f.latency.p99,
            f.latency.max,
            f.latency.p50 - settle_ms,
            f.latency.p99 - settle_ms,
            yes(f.latency.p99 - settle_ms < 100.0),
        );
    }
    println!();
    let lines = store_lines()?;
    println!("store: {lines} lines (src/store and src/rules.rs)");
    println!("RESULT coordinator.store_lines={lines}");
    println!("RESULT coordinator.projects={}", params.projects);
    println!("RESULT coordinator.settle_ms={settle_ms:.0}");
    println!("RESULT coordinator.poll_ms={}", params.poll.as_millis());
    for (backend, f) in &results {
        let b = backend.name();
        let ratio = f.throughput / f.floor;
        println!("RESULT coordinator.{b}.floor_changes_per_s={:.1}", f.floor);
        println!("RESULT coordinator.{b}.changes_per_s={:.1}", f.throughput);
        println!("RESULT coordinator.{b}.ratio={ratio:.2}");
        println!(
            "RESULT coordinator.{b}.throughput_target_met={}",
            yes(f.throughput >= 150.0)
        );
        println!("RESULT coordinator.{b}.paced_rate={:.1}", f.paced_rate);
        println!("RESULT coordinator.{b}.latency_p50_ms={:.1}", f.latency.p50);
        println!("RESULT coordinator.{b}.latency_p99_ms={:.1}", f.latency.p99);
        println!("RESULT coordinator.{b}.latency_max_ms={:.1}", f.latency.max);
        println!(
            "RESULT coordinator.{b}.latency_p50_beyond_settle_ms={:.1}",
            f.latency.p50 - settle_ms
        );
        println!(
            "RESULT coordinator.{b}.latency_p99_beyond_settle_ms={:.1}",
            f.latency.p99 - settle_ms
        );
        println!(
            "RESULT coordinator.{b}.latency_target_met={}",
            yes(f.latency.p99 - settle_ms < 100.0)
        );
    }
    Ok(())
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// Percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[r.clamp(1, values.len()) - 1]
        };
        Self {
            p50: rank(50.0),
            p99: rank(99.0),
            max: values[values.len() - 1],
        }
    }

    fn show(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50, self.p99, self.max
        )
    }
}

/// One backend's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    floor: f64,
    throughput: f64,
    paced_rate: f64,
    latency: Percentiles,
}

/// Staging, access, both stand-ins and the coordinator, in-process on real sockets.
struct Stack {
    _dir: smrtshare_testkit::tempfile::TempDir,
    root: PathBuf,
    smrtlink: SmrtLink,
    globus: Globus,
    source: Arc<SmrtLinkSource>,
    peers: Peers,
    namer: DirectoryNamer,
    client: CoordinatorClient<PeerChannel>,
    intake: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    coordinator_stop: oneshot::Sender<()>,
    coordinator: tokio::task::JoinHandle<anyhow::Result<()>>,
    coordinator_db: String,
    backend: Backend,
    _dbs: Vec<TestDatabase>,
}

impl Stack {
    async fn start(
        backend: Backend,
        params: &Params,
        data: &Path,
        seed: &Path,
        logins: &[String],
    ) -> anyhow::Result<Self> {
        let dir =
            smrtshare_testkit::tempfile::tempdir_in(data.parent().context("data has a parent")?)?;
        let root = dir.path().join("collection");
        std::fs::create_dir_all(&root)?;
        let smrtlink = SmrtLink::start(StandInOptions {
            seed: Some(Seed::new(seed)),
            ..Default::default()
        })
        .await?;
        let globus = Globus::start(StandInConfig {
            identities: logins
                .iter()
                .map(|l| Identity::for_username(&format!("{l}@example.edu")))
                .collect(),
            rule_limit: params.rule_limit,
            rate_limit: None,
            ..StandInConfig::default()
        })
        .await?;
        let auth = || ServerAuth::Token(Secret::new(PEER_TOKEN));
        let mut stops = Vec::new();

        // Staging.
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let staging_url = format!("http://{}", listener.local_addr()?);
        let config = smrtshare_staging::Config::new(
            root.clone(),
            vec![data.to_path_buf()],
            ServerOptions::new(auth()),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(error) = smrtshare_staging::run(listener, config, async move {
                let _ = stopped.await;
            })
            .await
            {
                eprintln!("staging stopped: {error:#}");
            }
        });
        stops.push(stop);

        // Access.
        let access_db = TestDatabase::new(backend).await?;
        let mut globus_config = smrtshare_access::globus::GlobusConfig::new(
            url::Url::parse(&globus.url())?,
            url::Url::parse(&globus.transfer_url())?,
            DEFAULT_CLIENT_ID,
            Secret::new(DEFAULT_CLIENT_SECRET),
            DEFAULT_ENDPOINT,
        );
        globus_config.rate_per_second = params.globus_rate;
        globus_config.burst = params.globus_burst;
        let mapping = smrtshare_access::globus::identities::LoginMapping::new(
            Some("example.edu"),
            Default::default(),
        )?;
        let mut access_config =
            smrtshare_access::Config::new(globus_config, &access_db.url, mapping);
        access_config.server = ServerOptions::new(auth());
        // Access counts its rules against Globus' cap (1000 per collection) and refuses a
        // grant over it; the bench measures the coordinator, so access's cap follows the
        // stand-in's raised limit.
        access_config.policy.caps.collection = u32::try_from(params.rule_limit)?;
        let access = smrtshare_access::Access::start(access_config).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let access_url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(error) = access
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
            {
                eprintln!("access stopped: {error:#}");
            }
        });
        stops.push(stop);

        // The coordinator.
        let coordinator_db = TestDatabase::new(backend).await?;
        let store = Store::open(&coordinator_db.url, 8, Clock::system()).await?;
        let options = PeerOptions {
            token: Some(Secret::new(PEER_TOKEN)),
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let peers = Peers::connect(&staging_url, &access_url, &options, 16 << 20)?;
        let source = Arc::new(SmrtLinkSource::new(SmrtLinkClient::new(
            smrtlink.client_config("admin", "admin"),
        )?));
        let namer = DirectoryNamer::new("Project {id}: {name}", false)?;
        let settings = settings(params, namer.clone())?;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let intake_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_addr, intake) = (grpc.local_addr()?, intake_listener.local_addr()?);
        let deps = Deps {
            store,
            source: source.clone(),
            peers: peers.clone(),
            metrics: smrtshare_coordinator::metrics::Metrics::new(),
        };
        let (coordinator_stop, stopped) = oneshot::channel::<()>();
        let coordinator = tokio::spawn(smrtshare_coordinator::run(
            Listeners {
                grpc,
                intake: intake_listener,
                metrics: None,
                status: None,
            },
            ServerOptions::new(ServerAuth::Token(Secret::new(COORDINATOR_TOKEN))),
            settings,
            deps,
            async move {
                let _ = stopped.await;
            },
        ));
        let client = CoordinatorClient::new(peer_channel(
            &format!("http://{grpc_addr}"),
            &PeerOptions {
                token: Some(Secret::new(COORDINATOR_TOKEN)),
                timeout: Duration::from_secs(120),
                ..Default::default()
            },
        )?)
        .max_decoding_message_size(64 << 20);
        Ok(Self {
            _dir: dir,
            root,
            smrtlink,
            globus,
            source,
            peers,
            namer,
            client,
            intake,
            stops,
            coordinator_stop,
            coordinator,
            coordinator_db: coordinator_db.url.clone(),
            backend,
            _dbs: vec![access_db, coordinator_db],
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.coordinator_stop.send(());
        self.coordinator.await??;
        for stop in self.stops {
            let _ = stop.send(());
        }
        // Let the services close their pools before the databases are dropped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.smrtlink.stop().await;
        Ok(())
    }

    fn rename_all(&self, ids: &[i64], prefix: &str) -> anyhow::Result<()> {
        for id in ids {
            self.smrtlink
                .rename_project(*id, &format!("{prefix} {id}"))
                .map_err(|e| anyhow::anyhow!("renaming project {id}: {e}"))?;
        }
        Ok(())
    }

    /// Project directories in the collection and API rules at Globus whose names carry `prefix`.
    fn placed(&self, prefix: &str) -> anyhow::Result<(usize, usize)> {
        let needle = format!(": {prefix} ");
        let mut dirs = 0;
        for entry in std::fs::read_dir(&self.root)? {
            if entry?.file_name().to_string_lossy().contains(&needle) {
                dirs += 1;
            }
        }
        let rules = self
            .globus
            .rules(DEFAULT_ENDPOINT)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.id.is_some() && r.path.contains(&needle))
            .count();
        Ok((dirs, rules))
    }

    /// PostgreSQL only: transactions committed or rolled back in the coordinator's database so
    /// far (each statement outside a transaction counts as one), after the server's statistics
    /// caught up.
    async fn transactions(&self) -> anyhow::Result<Option<i64>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        // Backends publish their counts once they have been idle for about a second.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut conn =
            <sqlx::AnyConnection as sqlx::Connection>::connect(&self.coordinator_db).await?;
        let row = sqlx::query(
            "SELECT (xact_commit + xact_rollback)::BIGINT AS n FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await?;
        sqlx::Connection::close(conn).await?;
        Ok(Some(sqlx::Row::try_get(&row, "n")?))
    }

    /// The newest change id (0 when none).
    async fn newest_change(&self) -> anyhow::Result<i64> {
        let answer = self
            .client
            .clone()
            .list_changes(pb::ListChangesRequest {
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(answer.changes.first().map(|c| c.change_id).unwrap_or(0))
    }

    /// Every change newer than `baseline`, newest first.
    async fn changes_since(&self, baseline: i64) -> anyhow::Result<Vec<pb::Change>> {
        let mut client = self.client.clone();
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let answer = client
                .list_changes(pb::ListChangesRequest {
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut reached = false;
            for change in answer.changes {
                if change.change_id <= baseline {
                    reached = true;
                    break;
                }
                out.push(change);
            }
            if reached || answer.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = answer.next_page_token;
        }
    }

    /// Waits until every project in `ids` has a change newer than `baseline` and every change
    /// newer than `baseline` is final; answers the newest change per project. Polls every
    /// 100 ms, starting after the phase's requests are all sent.
    async fn wait_phase(
        &self,
        baseline: i64,
        ids: &[i64],
    ) -> anyhow::Result<BTreeMap<i64, pb::Change>> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        let mut client = self.client.clone();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let busy = !client
                .list_changes(pb::ListChangesRequest {
                    status: pb::ChangeStatus::InProgress as i32,
                    page_size: 1,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .changes
                .is_empty();
            if !busy {
                let changes = self.changes_since(baseline).await?;
                let mut newest: BTreeMap<i64, pb::Change> = BTreeMap::new();
                for change in &changes {
                    newest
                        .entry(change.project_id)
                        .or_insert_with(|| change.clone());
                }
                let covered = ids.iter().all(|id| newest.contains_key(id));
                if covered && changes.iter().all(is_final) {
                    return Ok(newest);
                }
            }
            if Instant::now() > deadline {
                let changes = self.changes_since(baseline).await?;
                let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
                for c in &changes {
                    *by_status.entry(status_name(c.status)).or_default() += 1;
                }
                anyhow::bail!(
                    "the phase did not finish within {PHASE_TIMEOUT:?}: {} changes since {baseline}, by status {by_status:?}",
                    changes.len()
                );
            }
        }
    }

    /// One mirrored PUT, as NGINX sends it; answers the wall-clock time of the 202 (ms).
    async fn mirror(&self, http: &reqwest::Client, id: i64) -> anyhow::Result<f64> {
        let answer = http
            .put(format!(
                "http://{}/SMRTLink/2.0.0/smrt-link/projects/{id}",
                self.intake
            ))
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"mirrored {id}\"}}"))
            .send()
            .await?;
        let at = wall_ms();
        anyhow::ensure!(
            answer.status() == reqwest::StatusCode::ACCEPTED,
            "the intake answered {} for project {id}",
            answer.status()
        );
        Ok(at)
    }
}

fn settings(params: &Params, namer: DirectoryNamer) -> anyhow::Result<Settings> {
    // Production defaults (see config.rs) but for the settle delay and the poll interval.
    let retry = RetryPolicy {
        backoff: Backoff::new(
            std::time::Duration::from_millis(2_000),
            std::time::Duration::from_millis(300_000),
        ),
        max_attempts: 8,
    };
    let lease = LeaseTimes::new(Duration::from_secs(15));
    Ok(Settings {
        engine: EngineConfig {
            workers_per_target: params.workers,
            lease,
            retry,
            poll: params.poll,
        },
        reader: ReaderConfig {
            readers: params.readers,
            lease,
            retry,
            poll: params.poll,
        },
        follower: smrtshare_coordinator::follower::FollowerConfig {
            followers: 2,
            lease,
            schedule: smrtshare_coordinator::rules::CheckSchedule {
                first_ms: 60_000,
                most_ms: 1_800_000,
            },
            poll: params.poll,
        },
        resync: ResyncConfig {
            interval: Duration::from_secs(3600),
            max_removal_share: 0.25,
            read_concurrency: 8,
            lease,
        },
        periodic_resync: false,
        intake: IntakeConfig {
            settle: params.settle,
            max_settle: params.settle * 15,
            secret: None,
            allowed: parse_allowed(&["127.0.0.1".into(), "::1".into()])?,
        },
        namer,
        owner: "bench".into(),
        drain_grace: Duration::from_secs(10),
    })
}

/// Lines of the store: the rules and the `store` module, as a newcomer reads them.
fn store_lines() -> anyhow::Result<usize> {
    fn lines_under(path: &Path) -> anyhow::Result<usize> {
        if path.is_dir() {
            let mut total = 0;
            for entry in std::fs::read_dir(path)? {
                total += lines_under(&entry?.path())?;
            }
            Ok(total)
        } else if path.extension().is_some_and(|e| e == "rs") {
            Ok(std::fs::read_to_string(path)?.lines().count())
        } else {
            Ok(0)
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    Ok(lines_under(&src.join("store"))? + lines_under(&src.join("rules.rs"))?)
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

fn ts_ms(ts: &Option<prost_types::Timestamp>) -> Option<f64> {
    ts.as_ref()
        .map(|t| t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6)
}

fn status_name(status: i32) -> String {
    pb::ChangeStatus::try_from(status)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| status.to_string())
}

fn is_final(change: &pb::Change) -> bool {
    change.status != pb::ChangeStatus::InProgress as i32
        && !change.tasks.iter().any(|t| t.retry_scheduled)
}

/// When both of a change's tasks were recorded OK (ms), or why not.
fn done_at(change: &pb::Change) -> Result<f64, String> {
    if change.status != pb::ChangeStatus::Ok as i32 {
        return Err(format!(
            "change {} of project {} is {}: {}",
            change.change_id,
            change.project_id,
            status_name(change.status),
            change
                .tasks
                .iter()
                .map(|t| t.last_message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let mut done = None::<f64>;
    for target in [pb::Target::Staging, pb::Target::Access] {
        let task = change
            .tasks
            .iter()
            .filter(|t| t.target == target as i32 && t.state != pb::TaskState::Superseded as i32)
            .max_by_key(|t| t.task_id)
            .ok_or_else(|| format!("change {} has no {target:?} task", change.change_id))?;
        if task.state != pb::TaskState::Ok as i32 {
            return Err(format!(
                "change {}: {target:?} task is not OK: {}",
                change.change_id, task.last_message
            ));
        }
        let at = ts_ms(&task.finished_at).ok_or_else(|| {
            format!(
                "change {}: {target:?} task has no finish time",
                change.change_id
            )
        })?;
        done = Some(done.map_or(at, |d: f64| d.max(at)));
    }
    done.ok_or_else(|| "no tasks".into())
}

/// Checks every change of a phase ended OK with both tasks; answers the done times by project.
fn done_times(
    changes: &BTreeMap<i64, pb::Change>,
    ids: &[i64],
) -> anyhow::Result<BTreeMap<i64, f64>> {
    let mut out = BTreeMap::new();
    let mut failures = Vec::new();
    for id in ids {
        match changes.get(id).map(done_at) {
            Some(Ok(at)) => {
                out.insert(*id, at);
            }
            Some(Err(why)) => failures.push(why),
            None => failures.push(format!("project {id}: no change")),
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} changes did not end OK; first: {:?}",
        failures.len(),
        ids.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    Ok(out)
}

fn globus_calls(globus: &Globus) -> String {
    let counts = globus.counts();
    let by_kind = counts.by_kind();
    let kind = |k: Kind| by_kind.get(&k).copied().unwrap_or(0);
    format!(
        "token {}, identities {}, access_list {}, create {}, update {}, delete {}; 429s {}",
        kind(Kind::Token),
        kind(Kind::Identities),
        kind(Kind::List),
        kind(Kind::Create),
        kind(Kind::Update),
        kind(Kind::Delete),
        counts.with_status(429)
    )
}

fn smrtlink_gets(smrtlink: &SmrtLink) -> String {
    let counters = smrtlink.counters();
    format!(
        "SMRT Link: {} project GETs, {} dataset GETs, {} listings",
        counters.get(Endpoint::GetProject),
        counters.get(Endpoint::GetDataset),
        counters.get(Endpoint::ListProjects)
    )
}

fn reset_counters(stack: &Stack) {
    stack.smrtlink.reset_counters();
    stack.globus.reset_counts();
}

async fn run_backend(
    backend: Backend,
    params: &Params,
    data: &Path,
    seed: &Path,
    ids: &[i64],
    logins: &[String],
) -> anyhow::Result<Figures> {
    let stack = Stack::start(backend, params, data, seed, logins).await?;
    let n = ids.len() as f64;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    // 0. Setup: stage and grant everything through one Resync.
    let baseline = stack.newest_change().await?;
    let started = Instant::now();
    let resync = stack
        .client
        .clone()
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await?
        .into_inner();
    let changes = stack.wait_phase(baseline, ids).await?;
    done_times(&changes, ids)?;
    let setup = started.elapsed();
    let (dirs, rules) = stack.placed("Synthetic")?;
    println!(
        "0. setup: Resync listed {} projects, {} items; all staged and granted in {:.1} s ({:.1} projects/s); {dirs} directories, {rules} rules",
        resync.listed,
        resync.items.len(),
        setup.as_secs_f64(),
        n / setup.as_secs_f64()
    );
    anyhow::ensure!(dirs == ids.len() && rules == ids.len(), "setup incomplete");

    // a. and b., alternating for `rounds` rounds: the floor's bare calls, then the same changes
    // through the intake. The machine's background (disk write-back, other processes) moves
    // single phases by tens of percent, so the medians are compared.
    let mut floors = Vec::with_capacity(params.rounds);
    let mut throughputs = Vec::with_capacity(params.rounds);
    for round in 1..=params.rounds {
        let floor = floor_round(&stack, params, ids, round).await?;
        let throughput = throughput_round(&stack, params, ids, &http, round, floor).await?;
        floors.push(floor);
        throughputs.push(throughput);
    }
    let floor = median(&floors);
    let throughput = median(&throughputs);
    if params.rounds > 1 {
        let ratios: Vec<String> = floors
            .iter()
            .zip(&throughputs)
            .map(|(f, t)| format!("{:.2}", t / f))
            .collect();
        println!(
            "a+b. medians of {} rounds: floor {floor:.1} changes/s, throughput {throughput:.1} changes/s (target >= 150: {}), ratio {:.2}; per-round ratios {}",
            params.rounds,
            yes(throughput >= 150.0),
            throughput / floor,
            ratios.join(", ")
        );
    }

    // c. Latency at a paced rate.
    stack.rename_all(ids, "Paced")?;
    reset_counters(&stack);
    let baseline = stack.newest_change().await?;
    let period = Duration::from_secs_f64(1.0 / params.paced_rate);
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(ids.len());
    let shared = Arc::new(stack);
    for (i, id) in ids.iter().copied().enumerate() {
        tokio::time::sleep_until(start + period * u32::try_from(i)?).await;
        let stack = shared.clone();
        let http = http.clone();
        handles.push(tokio::spawn(async move {
            let sent = wall_ms();
            stack.mirror(&http, id).await.map(|at| (id, sent, at))
        }));
    }
    let mut accepted = BTreeMap::new();
    let (mut first, mut last_sent) = (f64::MAX, f64::MIN);
    let mut intake_ms = Vec::new();
    for handle in handles {
        let (id, sent, at) = handle.await??;
        first = first.min(sent);
        last_sent = last_sent.max(sent);
        intake_ms.push(at - sent);
        accepted.insert(id, at);
    }
    let paced_rate = (n - 1.0) * 1000.0 / (last_sent - first);
    let stack = Arc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("stack still shared"))?;
    let changes = stack.wait_phase(baseline, ids).await?;
    let done = done_times(&changes, ids)?;
    let mut latency = Vec::new();
    let mut to_read = Vec::new();
    let mut read_to_done = Vec::new();
    for id in ids {
        let (at, finished) = (accepted[id], done[id]);
        latency.push(finished - at);
        if let Some(read) = ts_ms(&changes[id].read_at) {
            to_read.push(read - at);
            read_to_done.push(finished - read);
        }
    }
    let latency = Percentiles::of(latency);
    let settle_ms = params.settle.as_secs_f64() * 1000.0;
    let (dirs, rules) = stack.placed("Paced")?;
    println!(
        "c. latency (mirrored PUTs paced at {paced_rate:.1} changes/s), intake 202 to both tasks OK: {}",
        latency.show()
    );
    println!(
        "   beyond the settle delay ({settle_ms:.0} ms): p50 {:.1} ms, p99 {:.1} ms (target p99 < 100 ms: {}); {dirs} directories, {rules} rules renamed",
        latency.p50 - settle_ms,
        latency.p99 - settle_ms,
        yes(latency.p99 - settle_ms < 100.0)
    );
    if throughput < 1.1 * params.paced_rate {
        println!(
            "   note: this backend's throughput (b: {throughput:.1} changes/s) is not clearly above the paced rate, so changes queue and latency grows over the run"
        );
    }
    println!(
        "   parts: intake round trip {}; 202 to SMRT Link read {}; read to both tasks OK {}",
        Percentiles::of(intake_ms).show(),
        Percentiles::of(to_read).show(),
        Percentiles::of(read_to_done).show()
    );
    println!(
        "   {}; Globus: {}",
        smrtlink_gets(&stack.smrtlink),
        globus_calls(&stack.globus)
    );
    anyhow::ensure!(
        dirs == ids.len() && rules == ids.len(),
        "latency phase incomplete"
    );

    stack.stop().await?;
    Ok(Figures {
        floor,
        throughput,
        paced_rate,
        latency,
    })
}

/// a. The floor: the bare calls each change needs, made directly; changes/s.
async fn floor_round(
    stack: &Stack,
    params: &Params,
    ids: &[i64],
    round: usize,
) -> anyhow::Result<f64> {
    let n = ids.len() as f64;
    let prefix = format!("Floor{round}");
    stack.rename_all(ids, &prefix)?;
    reset_counters(stack);
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<()>> = futures::stream::iter(ids.iter().copied())
        .map(|id| {
            let source = stack.source.clone();
            let peers = stack.peers.clone();
            let namer = stack.namer.clone();
            async move {
                let truth = source
                    .get_project(id)
                    .await?
                    .with_context(|| format!("project {id} is gone"))?;
                let mut shared_logins: Vec<String> = truth
                    .members
                    .iter()
                    .filter(|m| m.is_shared())
                    .map(|m| m.login.clone())
                    .collect();
                shared_logins.sort();
                let desired = Desired {
                    project_id: id,
                    deleted: false,
                    directory: namer.name(truth.id, &truth.name),
                    datasets: truth.datasets,
                    shared_logins,
                    analysis: Vec::new(),
                };
                let (staging, access) = tokio::join!(
                    peers.run(Target::Staging, &desired, FLOOR_CHANGE_IDS + id),
                    peers.run(Target::Access, &desired, FLOOR_CHANGE_IDS + id)
                );
                for (what, result) in [("staging", staging), ("access", access)] {
                    if let TaskResult::Retry { message, .. }
                    | TaskResult::Permanent { message, .. } = result.result
                    {
                        anyhow::bail!("floor: {what} for project {id}: {message}");
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(params.workers)
        .collect()
        .await;
    let floor_time = started.elapsed();
    for outcome in outcomes {
        outcome?;
    }
    let floor = n / floor_time.as_secs_f64();
    let (dirs, rules) = stack.placed(&prefix)?;
    println!(
        "a{round}. floor (GET project + ApplyProject + ApplyProjectAccess per project, {} at once): {} changes in {:.2} s = {floor:.1} changes/s; {dirs} directories, {rules} rules renamed",
        params.workers,
        ids.len(),
        floor_time.as_secs_f64()
    );
    println!(
        "   {}; Globus: {}",
        smrtlink_gets(&stack.smrtlink),
        globus_calls(&stack.globus)
    );
    anyhow::ensure!(dirs == ids.len() && rules == ids.len(), "floor incomplete");
    Ok(floor)
}

/// b. Throughput: every project renamed, every PUT mirrored at once; changes/s from the first
/// request to the last task recorded OK.
async fn throughput_round(
    stack: &Stack,
    params: &Params,
    ids: &[i64],
    http: &reqwest::Client,
    round: usize,
    floor: f64,
) -> anyhow::Result<f64> {
    let n = ids.len() as f64;
    let prefix = format!("Renamed{round}");
    stack.rename_all(ids, &prefix)?;
    reset_counters(stack);
    let transactions_before = stack.transactions().await?;
    let baseline = stack.newest_change().await?;
    let first_sent = wall_ms();
    let started = Instant::now();
    let sent: Vec<anyhow::Result<f64>> = futures::stream::iter(ids.iter().copied())
        .map(|id| async move { stack.mirror(http, id).await })
        .buffer_unordered(params.send_concurrency)
        .collect()
        .await;
    let sending = started.elapsed();
    for s in sent {
        s?;
    }
    let changes = stack.wait_phase(baseline, ids).await?;
    let done = done_times(&changes, ids)?;
    let last = done.values().copied().fold(f64::MIN, f64::max);
    let elapsed_ms = last - first_sent;
    let throughput = n * 1000.0 / elapsed_ms;
    let (dirs, rules) = stack.placed(&prefix)?;
    println!(
        "b{round}. throughput (mirrored PUTs, {} in flight, sent in {:.2} s): {} changes OK in {:.2} s = {throughput:.1} changes/s (target >= 150: {}); ratio to the floor {:.2}; {dirs} directories, {rules} rules renamed",
        params.send_concurrency,
        sending.as_secs_f64(),
        ids.len(),
        elapsed_ms / 1000.0,
        yes(throughput >= 150.0),
        throughput / floor
    );
    println!(
        "   {}; Globus: {}",
        smrtlink_gets(&stack.smrtlink),
        globus_calls(&stack.globus)
    );
    if let (Some(before), Some(after)) = (transactions_before, stack.transactions().await?) {
        // The bench's own reads (one ListChanges a 100 ms, the final listing) are a few dozen.
        println!(
            "   coordinator database: {} transactions (statements outside a transaction count as one) = {:.1} per change",
            after - before,
            (after - before) as f64 / n
        );
    }
    anyhow::ensure!(
        dirs == ids.len() && rules == ids.len(),
        "throughput phase incomplete"
    );
    Ok(throughput)
}

/// The median (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}
