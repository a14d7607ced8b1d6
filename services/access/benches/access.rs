//! `cargo bench -p smrtshare-access --bench access`
//!
//! 900 projects x 5 members (4,500 members, each with a Globus identity), applied through the
//! real gRPC server against the Globus stand-in (1,000 rules per collection; it enforces a rate
//! limit of its own and answers 429 beyond it), once with rule sharing and once with group
//! sharing, each on an empty collection and then again in sync:
//! - rules: one rule per member; the collection cap is reached at 1,000 rules, every other member
//!   gets a permanent CollectionRuleCap outcome and no Globus call (no retry storm, also on the
//!   second pass);
//! - groups: one group and one rule per project: everyone is shared with 900 rules.
//!
//! Prints the Globus calls of each pass by kind and per project, the request rate achieved
//! against the configured limit, and the ratio of calls per project between the two modes.
//!
//! Settings (environment): `SMRTSHARE_BENCH_RATE` (client limit, requests/s, default 20, the
//! production default), `SMRTSHARE_BENCH_BACKEND` (`sqlite`, default, or `postgres`),
//! `SMRTSHARE_BENCH_PROJECTS` (default 900), `SMRTSHARE_BENCH_MEMBERS` (default 5).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use smrtshare_access::globus::GlobusConfig;
use smrtshare_access::globus::identities::LoginMapping;
use smrtshare_access::{Access, Config, SharingMode};
use smrtshare_api::access::v1 as pb;
use smrtshare_api::access::v1::access_client::AccessClient;
use smrtshare_common::Secret;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{
    Counts, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Identity, Kind, RateLimit,
    StandIn, StandInConfig,
};
use smrtshare_testkit::TestDatabase;

/// Applies in flight at once (the coordinator's fan-out).
const IN_FLIGHT: usize = 32;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    rate: f64,
    projects: usize,
    members: usize,
    backend: Backend,
    users: Vec<String>,
}

/// One pass's figures.
struct PassFigures {
    counts: Counts,
    elapsed: Duration,
    complete: usize,
    granted: usize,
    capped: usize,
    other_failures: usize,
    capped_permanent: bool,
}

/// One mode's figures.
struct ModeFigures {
    mode: &'static str,
    first: PassFigures,
    second: PassFigures,
    rules: usize,
    groups: usize,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

#[allow(clippy::print_stdout)]
async fn bench() -> anyhow::Result<()> {
    let projects: usize = env("SMRTSHARE_BENCH_PROJECTS", 900);
    let members: usize = env("SMRTSHARE_BENCH_MEMBERS", 5);
    let setup = Setup {
        rate: env("SMRTSHARE_BENCH_RATE", 20.0),
        projects,
        members,
        backend: match std::env::var("SMRTSHARE_BENCH_BACKEND").as_deref() {
            Ok("postgres") => Backend::Postgres,
            _ => Backend::Sqlite,
        },
        users: (0..projects * members)
            .map(|i| format!("member{i:05}"))
            .collect(),
    };
    println!(
        "access benchmark: {projects} projects x {members} members, {} registry, client limit {} req/s, stand-in limit {} req/s, 1000 rules per collection",
        setup.backend.name(),
        setup.rate,
        setup.rate
    );
    let rules = run_mode(&setup, SharingMode::Rules, "rules").await?;
    let groups = run_mode(&setup, SharingMode::Groups, "groups").await?;

    let per_project = |f: &PassFigures| f.counts.total() as f64 / setup.projects as f64;
    let wanted = setup.projects * setup.members;
    println!();
    println!("targets:");
    println!(
        "  rules: the cap is reached (1000 rules at Globus): {} ({} rules)",
        yes(rules.rules == 1000),
        rules.rules
    );
    println!(
        "  rules: every member over the cap has a permanent CollectionRuleCap outcome: {} ({} of {}; {} other failures)",
        yes(rules.first.capped == wanted - 1000
            && rules.first.capped_permanent
            && rules.first.other_failures == 0),
        rules.first.capped,
        wanted - 1000,
        rules.first.other_failures
    );
    println!(
        "  rules: no retry storm: creates sent = rules made, no LimitExceeded, second pass sends nothing: {} ({} creates, {} LimitExceeded, {} calls in the second pass)",
        yes(rules.first.counts.requests(Kind::Create) == 1000
            && limit_exceeded(&rules) == 0
            && rules.second.counts.total() == 0),
        rules.first.counts.requests(Kind::Create),
        limit_exceeded(&rules),
        rules.second.counts.total()
    );
    println!(
        "  groups: everyone shared with {} rules and {} groups: {} ({} of {wanted} granted)",
        setup.projects,
        setup.projects,
        yes(groups.rules == setup.projects
            && groups.groups == setup.projects
            && groups.first.granted == wanted
            && groups.first.complete == setup.projects),
        groups.first.granted
    );
    for figures in [&rules, &groups] {
        println!(
            "  {}: the in-sync pass makes 0 writes: {} ({} writes, {} calls)",
            figures.mode,
            yes(figures.second.counts.writes() == 0),
            figures.second.counts.writes(),
            figures.second.counts.total()
        );
    }
    for figures in [&rules, &groups] {
        let achieved = figures.first.counts.total() as f64 / figures.first.elapsed.as_secs_f64();
        println!(
            "  {}: no 429 provoked: {} ({} answers 429); request rate {:.1}% of the limit",
            figures.mode,
            yes(
                figures.first.counts.with_status(429) + figures.second.counts.with_status(429) == 0
            ),
            figures.first.counts.with_status(429) + figures.second.counts.with_status(429),
            100.0 * achieved / setup.rate
        );
    }
    println!(
        "  groups vs rules: Globus calls per project {:.2} vs {:.2} (ratio {:.2}); members shared per rule {:.1} vs {:.1}",
        per_project(&groups.first),
        per_project(&rules.first),
        per_project(&groups.first) / per_project(&rules.first).max(f64::MIN_POSITIVE),
        groups.first.granted as f64 / groups.rules.max(1) as f64,
        rules.first.granted as f64 / rules.rules.max(1) as f64,
    );
    let per_member = |f: &PassFigures| f.counts.total() as f64 / f.granted.max(1) as f64;
    println!(
        "  groups vs rules: Globus calls per member granted {:.2} vs {:.2} (ratio {:.2})",
        per_member(&groups.first),
        per_member(&rules.first),
        per_member(&groups.first) / per_member(&rules.first).max(f64::MIN_POSITIVE),
    );

    let b = setup.backend.name();
    println!();
    println!("RESULT access.{b}.projects={}", setup.projects);
    println!("RESULT access.{b}.members_per_project={}", setup.members);
    println!("RESULT access.{b}.rate_limit={}", setup.rate);
    for figures in [&rules, &groups] {
        let m = figures.mode;
        println!(
            "RESULT access.{b}.{m}.first_pass_s={:.2}",
            figures.first.elapsed.as_secs_f64()
        );
        println!(
            "RESULT access.{b}.{m}.first_pass_calls={}",
            figures.first.counts.total()
        );
        println!(
            "RESULT access.{b}.{m}.calls_per_project={:.2}",
            per_project(&figures.first)
        );
        let achieved = figures.first.counts.total() as f64 / figures.first.elapsed.as_secs_f64();
        println!(
            "RESULT access.{b}.{m}.achieved_rate_percent={:.1}",
            100.0 * achieved / setup.rate
        );
        println!(
            "RESULT access.{b}.{m}.answers_429={}",
            figures.first.counts.with_status(429) + figures.second.counts.with_status(429)
        );
        println!(
            "RESULT access.{b}.{m}.rule_creates={}",
            figures.first.counts.requests(Kind::Create)
        );
        println!(
            "RESULT access.{b}.{m}.limit_exceeded={}",
            limit_exceeded(figures)
        );
        println!("RESULT access.{b}.{m}.granted={}", figures.first.granted);
        println!("RESULT access.{b}.{m}.capped={}", figures.first.capped);
        println!("RESULT access.{b}.{m}.rules_at_globus={}", figures.rules);
        println!(
            "RESULT access.{b}.{m}.in_sync_writes={}",
            figures.second.counts.writes()
        );
        println!(
            "RESULT access.{b}.{m}.in_sync_calls={}",
            figures.second.counts.total()
        );
    }
    Ok(())
}

fn limit_exceeded(figures: &ModeFigures) -> u64 {
    figures
        .first
        .counts
        .with_code(Kind::Create, "LimitExceeded")
        + figures
            .second
            .counts
            .with_code(Kind::Create, "LimitExceeded")
}

/// A fresh stand-in, registry and access server in `mode`; two passes.
#[allow(clippy::print_stdout)]
async fn run_mode(
    setup: &Setup,
    mode: SharingMode,
    name: &'static str,
) -> anyhow::Result<ModeFigures> {
    let standin = StandIn::start(StandInConfig {
        identities: setup
            .users
            .iter()
            .map(|u| Identity::for_username(&format!("{u}@example.edu")))
            .collect(),
        rate_limit: Some(RateLimit {
            per_second: setup.rate,
            burst: setup.rate.ceil().max(1.0) as u32,
        }),
        ..StandInConfig::default()
    })
    .await?;
    let db = TestDatabase::new(setup.backend).await?;
    let mut globus = GlobusConfig::new(
        standin.url().parse()?,
        standin.transfer_url().parse()?,
        DEFAULT_CLIENT_ID,
        Secret::new(DEFAULT_CLIENT_SECRET),
        DEFAULT_ENDPOINT,
    );
    globus.groups_url = standin.url().parse()?;
    globus.rate_per_second = setup.rate;
    let mut config = Config::new(
        globus,
        &db.url,
        LoginMapping::new(Some("example.edu"), Default::default())?,
    );
    config.policy.sharing = mode;
    let access = Access::start(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(access.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = AccessClient::new(tonic::transport::Channel::from_shared(url)?.connect_lazy());
    wait_for_token(&standin).await;

    println!();
    println!("mode {name}:");
    let first = apply_all(setup, &client, &standin, "first (empty collection)").await?;
    standin.reset_counts();
    let second = apply_all(setup, &client, &standin, "second (in sync)").await?;
    let rules = standin
        .rules(DEFAULT_ENDPOINT)
        .map(|r| r.iter().filter(|r| r.id.is_some()).count())
        .unwrap_or(0);
    let groups = standin.groups().len();
    println!("  at Globus afterwards: {rules} rules, {groups} groups");
    let _ = stop.send(());
    server.await??;
    Ok(ModeFigures {
        mode: name,
        first,
        second,
        rules,
        groups,
    })
}

#[allow(clippy::print_stdout)]
async fn apply_all(
    setup: &Setup,
    client: &AccessClient<tonic::transport::Channel>,
    standin: &StandIn,
    pass: &str,
) -> anyhow::Result<PassFigures> {
    let started = Instant::now();
    let answers: Vec<anyhow::Result<pb::ApplyProjectAccessResponse>> =
        futures::stream::iter(0..setup.projects)
            .map(|p| {
                let mut client = client.clone();
                let logins = setup.users[p * setup.members..(p + 1) * setup.members].to_vec();
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
    let mut figures = PassFigures {
        counts: standin.counts(),
        elapsed,
        complete: 0,
        granted: 0,
        capped: 0,
        other_failures: 0,
        capped_permanent: true,
    };
    for answer in answers {
        let answer = answer?;
        figures.complete += usize::from(answer.complete);
        for member in &answer.members {
            let kind = pb::MemberOutcomeKind::try_from(member.outcome)
                .unwrap_or(pb::MemberOutcomeKind::Unspecified);
            match kind {
                pb::MemberOutcomeKind::Granted | pb::MemberOutcomeKind::AlreadyGranted => {
                    figures.granted += 1;
                }
                _ if member.globus_code == "CollectionRuleCap" => {
                    figures.capped += 1;
                    figures.capped_permanent &= member.permanent;
                }
                _ => figures.other_failures += 1,
            }
        }
    }
    report(pass, setup, &figures);
    Ok(figures)
}

async fn wait_for_token(standin: &StandIn) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while standin.counts().succeeded(Kind::Token) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

#[allow(clippy::print_stdout)]
fn report(pass: &str, setup: &Setup, figures: &PassFigures) {
    let by_kind = figures.counts.by_kind();
    let kind = |k: Kind| by_kind.get(&k).copied().unwrap_or(0);
    let total = figures.counts.total();
    let seconds = figures.elapsed.as_secs_f64();
    println!(
        "  pass {pass}: {}/{} projects complete in {seconds:.2}s; members granted {}, over the cap {}, other failures {}",
        figures.complete, setup.projects, figures.granted, figures.capped, figures.other_failures
    );
    println!(
        "    globus calls: token {}, identities {}, access_list {}, rule create {}, update {}, delete {}, group create {}, group list {}, group get {}, group members {}, group delete {}; total {total} ({:.2} per project, {} writes)",
        kind(Kind::Token),
        kind(Kind::Identities),
        kind(Kind::List),
        kind(Kind::Create),
        kind(Kind::Update),
        kind(Kind::Delete),
        kind(Kind::GroupCreate),
        kind(Kind::GroupList),
        kind(Kind::GroupGet),
        kind(Kind::GroupMembers),
        kind(Kind::GroupDelete),
        total as f64 / setup.projects as f64,
        figures.counts.writes(),
    );
    println!(
        "    answered 429: {}; request rate {:.2}/s against a limit of {}/s",
        figures.counts.with_status(429),
        if seconds > 0.0 {
            total as f64 / seconds
        } else {
            0.0
        },
        setup.rate
    );
}
