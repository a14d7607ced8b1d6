//! `cargo bench -p smrtshare-access --bench access`
//!
//! 300 projects x 3 members on an empty collection (900 rules, under Globus' 1000), applied
//! through the real gRPC server against the Globus stand-in, which enforces a rate limit of its
//! own and answers 429 beyond it. Then the same 300 applies again, in sync. Prints the Globus
//! calls of each pass by kind and the request rate achieved against the configured limit.
//!
//! Settings (environment): `SMRTSHARE_BENCH_RATE` (client limit, requests/s, default 20, the
//! production default), `SMRTSHARE_BENCH_BACKEND` (`sqlite`, default, or `postgres`),
//! `SMRTSHARE_BENCH_PROJECTS` (default 300).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use smrtshare_access::globus::GlobusConfig;
use smrtshare_access::globus::identities::LoginMapping;
use smrtshare_access::{Access, Config};
use smrtshare_api::access::v1 as pb;
use smrtshare_api::access::v1::access_client::AccessClient;
use smrtshare_common::Secret;
use smrtshare_common::db::{Backend, TestDatabase};
use smrtshare_globus_standin::{
    Counts, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Identity, Kind, RateLimit,
    StandIn, StandInConfig,
};

const MEMBERS: usize = 3;
/// Applies in flight at once (the coordinator's fan-out).
const IN_FLIGHT: usize = 32;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

#[allow(clippy::print_stdout)]
async fn bench() -> anyhow::Result<()> {
    let rate: f64 = env("SMRTSHARE_BENCH_RATE", 20.0);
    let projects: usize = env("SMRTSHARE_BENCH_PROJECTS", 300);
    let backend = match std::env::var("SMRTSHARE_BENCH_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let users: Vec<String> = (0..projects * MEMBERS)
        .map(|i| format!("member{i:04}"))
        .collect();

    // Globus, with its own limit at the same rate (a burst of one second's worth).
    let standin = StandIn::start(StandInConfig {
        identities: users
            .iter()
            .map(|u| Identity::for_username(&format!("{u}@example.edu")))
            .collect(),
        rate_limit: Some(RateLimit {
            per_second: rate,
            burst: rate.ceil().max(1.0) as u32,
        }),
        ..StandInConfig::default()
    })
    .await?;
    let db = TestDatabase::new(backend).await?;

    let mut globus = GlobusConfig::new(
        standin.url().parse()?,
        standin.transfer_url().parse()?,
        DEFAULT_CLIENT_ID,
        Secret::new(DEFAULT_CLIENT_SECRET),
        DEFAULT_ENDPOINT,
    );
    globus.rate_per_second = rate;
    let config = Config::new(
        globus,
        &db.url,
        LoginMapping::new(Some("example.edu"), Default::default())?,
    );
    let access = Access::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(access.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = AccessClient::new(tonic::transport::Channel::from_shared(url)?.connect_lazy());

    println!(
        "access benchmark: {projects} projects x {MEMBERS} members, {} registry, client limit {rate} req/s, stand-in limit {rate} req/s",
        match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    );
    // Wait for readiness (the start-up token fetch, counted in the first pass).
    wait_for_token(&standin).await;
    let mut all_complete = true;
    let mut figures = Vec::new();
    for (index, pass) in ["first (empty collection)", "second (in sync)"]
        .iter()
        .enumerate()
    {
        if index > 0 {
            standin.reset_counts();
        }
        let started = Instant::now();
        let answers: Vec<anyhow::Result<pb::ApplyProjectAccessResponse>> =
            futures::stream::iter(0..projects)
                .map(|p| {
                    let mut client = client.clone();
                    let logins = users[p * MEMBERS..(p + 1) * MEMBERS].to_vec();
                    async move {
                        Ok(client
                            .apply_project_access(pb::ApplyProjectAccessRequest {
                                project_id: i64::try_from(p)? + 2,
                                path: format!("/Project {}/", p + 2),
                                logins,
                                dry_run: false,
                            })
                            .await?
                            .into_inner())
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
        let elapsed = started.elapsed();
        let counts = standin.counts();
        let complete = answers
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|a| a.complete))
            .count();
        all_complete &= complete == projects;
        report(pass, &counts, elapsed, rate, complete, projects);
        figures.push((counts, elapsed));
    }

    let rules = standin
        .rules(DEFAULT_ENDPOINT)
        .map(|r| r.iter().filter(|r| r.id.is_some()).count())
        .unwrap_or(0);
    let (first, first_elapsed) = &figures[0];
    let (second, _) = &figures[1];
    let achieved = first.total() as f64 / first_elapsed.as_secs_f64();
    println!("rules at Globus afterwards: {rules}");
    println!("targets:");
    println!(
        "  first pass creates exactly {}: {} ({} creates)",
        projects * MEMBERS,
        yes(first.requests(Kind::Create) == (projects * MEMBERS) as u64),
        first.requests(Kind::Create)
    );
    println!(
        "  second pass makes zero Globus calls: {} ({} calls)",
        yes(second.total() == 0),
        second.total()
    );
    println!(
        "  achieved rate at least 90% of the limit: {} ({:.1}%)",
        yes(achieved >= 0.9 * rate),
        100.0 * achieved / rate
    );
    println!(
        "  no 429 provoked: {} ({} answers 429)",
        yes(first.with_status(429) + second.with_status(429) == 0),
        first.with_status(429) + second.with_status(429)
    );
    println!("  every apply complete: {}", yes(all_complete));
    let b = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    println!();
    println!("RESULT access.{b}.projects={projects}");
    println!("RESULT access.{b}.rate_limit={rate}");
    println!(
        "RESULT access.{b}.first_pass_s={:.2}",
        first_elapsed.as_secs_f64()
    );
    println!(
        "RESULT access.{b}.first_pass_creates={}",
        first.requests(Kind::Create)
    );
    println!("RESULT access.{b}.first_pass_calls={}", first.total());
    println!("RESULT access.{b}.second_pass_calls={}", second.total());
    println!("RESULT access.{b}.achieved_rate={achieved:.2}");
    println!(
        "RESULT access.{b}.achieved_rate_percent={:.1}",
        100.0 * achieved / rate
    );
    println!(
        "RESULT access.{b}.answers_429={}",
        first.with_status(429) + second.with_status(429)
    );
    println!("RESULT access.{b}.all_complete={}", yes(all_complete));

    let _ = stop.send(());
    server.await??;
    Ok(())
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

async fn wait_for_token(standin: &StandIn) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while standin.counts().succeeded(Kind::Token) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[allow(clippy::print_stdout)]
fn report(
    pass: &str,
    counts: &Counts,
    elapsed: Duration,
    rate: f64,
    complete: usize,
    projects: usize,
) {
    let by_kind = counts.by_kind();
    let kind = |k: Kind| by_kind.get(&k).copied().unwrap_or(0);
    let total = counts.total();
    let achieved = if elapsed.is_zero() {
        0.0
    } else {
        total as f64 / elapsed.as_secs_f64()
    };
    println!(
        "pass {pass}: {complete}/{projects} projects complete in {:.2}s",
        elapsed.as_secs_f64()
    );
    println!(
        "  globus calls: token {}, identities {}, access_list {}, create {}, update {}, delete {}; total {total}",
        kind(Kind::Token),
        kind(Kind::Identities),
        kind(Kind::List),
        kind(Kind::Create),
        kind(Kind::Update),
        kind(Kind::Delete),
    );
    println!(
        "  answered 429: {}; request rate {achieved:.2}/s against a limit of {rate}/s ({:.1}%)",
        counts.with_status(429),
        if rate > 0.0 {
            100.0 * achieved / rate
        } else {
            0.0
        }
    );
}
