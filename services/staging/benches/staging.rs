//! Staging benchmark (not a test): `cargo bench -p smrtshare-staging --bench staging`.
//!
//! Against the real `smrtshare-staging` binary as a child process, on one filesystem (the system
//! temporary directory, or `SMRTSHARE_BENCH_DIR`), twice: on a synthetic source tree of 500
//! projects x 4 datasets x 25 files (50,000 files; `SMRTSHARE_BENCH_PROJECTS`, `_DATASETS`,
//! `_FILES` change it), plus one finished analysis job per project with 5 outputs staged and a log
//! left out (`SMRTSHARE_BENCH_JOB_FILES`; 0: no jobs), then of 2,000 projects (200,000 files;
//! `SMRTSHARE_BENCH_LARGE_PROJECTS`, 0 skips it), so growth shows. Each run measures:
//!
//! 1. initial staging of every project through the gRPC API, against `cp -al` of the same tree:
//!    `SMRTSHARE_BENCH_ROUNDS` (3) rounds, each a `cp -al` into a new directory then a new server
//!    staging into a new root, each phase after a `sync`; medians (the disk's write-back makes
//!    single runs vary by tens of percent). Target: staging <= 1.0x `cp -al`;
//! 2. re-applying every project unchanged, against the stat-walk `find ROOT -printf '%n\n'` over
//!    the staged tree (`SMRTSHARE_BENCH_REAPPLY_ROUNDS` (5) rounds of each, alternating; medians),
//!    and the mutating system calls of such a pass, counted twice: by the service's own counter
//!    (its per-apply log lines) and by `strace -f -c` attached to the server for one more pass.
//!    Target: re-apply <= 1.2x the stat-walk, 0 mutating calls;
//! 3. the staging process's peak resident memory (VmHWM).
//!
//! Then memory: `SMRTSHARE_BENCH_XML_REQUESTS` (20) requests at once, each staging a dataset whose
//! XML is `SMRTSHARE_BENCH_XML_MB` (12) MB, against a fresh server: its peak resident memory
//! (target < 300 MiB with the default parse budget), how many parses waited for the budget, and
//! what one such parse takes alone (`SMRTSHARE_BENCH_XML_REQUESTS=0` skips it).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "staging/memory.rs"]
mod memory;
#[path = "staging/server.rs"]
mod server;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use smrtshare_api::staging::v1 as pb;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_common::client::PeerChannel;

use crate::server::{Server, TOKEN, pass, requests, write_jobs};

/// File system calls that change something (strace names, x86_64 and aarch64).
const MUTATING: &str = "mkdir,mkdirat,link,linkat,symlink,symlinkat,unlink,unlinkat,rmdir,rename,renameat,renameat2,chmod,fchmod,\
fchmodat,chown,fchown,fchownat,lchown,setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr,truncate,ftruncate,\
fallocate,utimensat,mknodat,pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range,copy_file_range";

/// Initial staging at most this many times `cp -al`.
const STAGE_TARGET: f64 = 1.0;
/// An unchanged re-apply at most this many times the stat-walk.
const REAPPLY_TARGET: f64 = 1.2;
/// Peak resident memory of the XML burst, MiB.
const MEMORY_TARGET_MIB: f64 = 300.0;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until the server's stderr reader has seen `count` apply log lines (it may lag behind
/// the answers).
async fn all_logged(server: &Server, count: usize, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while server.applied_calls.lock().unwrap().len() < count {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the apply log lines of {what} never all arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn timed(mut command: Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = command.stdout(Stdio::null()).status()?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What one run at one scale measured.
struct Scale {
    projects: usize,
    files: usize,
    rounds: usize,
    reapplies: usize,
    cp: Duration,
    stage: Duration,
    find: Duration,
    reapply: Duration,
    counted_calls: u64,
    strace_calls: u64,
    strace_table: String,
    peak_kib: Option<u64>,
}

impl Scale {
    fn stage_ratio(&self) -> f64 {
        self.stage.as_secs_f64() / self.cp.as_secs_f64()
    }

    fn reapply_ratio(&self) -> f64 {
        self.reapply.as_secs_f64() / self.find.as_secs_f64()
    }

    fn print(&self) {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "{} projects, {} files: initial staging (gRPC, real binary) vs cp -al, medians of {}",
            self.projects, self.files, self.rounds
        );
        println!("   cp -al:            {}", ms(self.cp));
        println!("   staging:           {}", ms(self.stage));
        println!(
            "   ratio:             {:.2}x   (target <= {STAGE_TARGET:.2}x: {})",
            self.stage_ratio(),
            verdict(self.stage_ratio() <= STAGE_TARGET)
        );
        println!(
            "  re-applying all {} projects unchanged vs find ROOT -printf '%n\\n', medians of {}",
            self.projects, self.reapplies
        );
        println!("   find:              {}", ms(self.find));
        println!("   re-apply:          {}", ms(self.reapply));
        println!(
            "   ratio:             {:.2}x   (target <= {REAPPLY_TARGET:.2}x: {})",
            self.reapply_ratio(),
            verdict(self.reapply_ratio() <= REAPPLY_TARGET)
        );
        println!(
            "   mutating calls, service counter over {} passes: {}   (target 0)",
            self.reapplies, self.counted_calls
        );
        println!(
            "   mutating calls, strace -f -c over one more pass: {}   (target 0)",
            self.strace_calls
        );
        if self.strace_calls > 0 {
            println!("{}", self.strace_table);
        }
        match self.peak_kib {
            Some(kib) => println!(
                "  peak RSS of smrtshare-staging (VmHWM): {:.1} MiB",
                mib(kib)
            ),
            None => println!("  peak RSS of smrtshare-staging: unavailable"),
        }
    }

    fn results(&self, prefix: &str) {
        println!("RESULT {prefix}.projects={}", self.projects);
        println!("RESULT {prefix}.files={}", self.files);
        println!(
            "RESULT {prefix}.cp_al_ms={:.0}",
            self.cp.as_secs_f64() * 1000.0
        );
        println!(
            "RESULT {prefix}.stage_ms={:.0}",
            self.stage.as_secs_f64() * 1000.0
        );
        println!("RESULT {prefix}.stage_ratio={:.2}", self.stage_ratio());
        println!(
            "RESULT {prefix}.find_ms={:.0}",
            self.find.as_secs_f64() * 1000.0
        );
        println!(
            "RESULT {prefix}.reapply_ms={:.0}",
            self.reapply.as_secs_f64() * 1000.0
        );
        println!("RESULT {prefix}.reapply_ratio={:.2}", self.reapply_ratio());
        println!(
            "RESULT {prefix}.mutating_calls_counter={}",
            self.counted_calls
        );
        println!(
            "RESULT {prefix}.mutating_calls_strace={}",
            self.strace_calls
        );
        if let Some(kib) = self.peak_kib {
            println!("RESULT {prefix}.peak_rss_mib={:.1}", mib(kib));
        }
    }
}

/// One run at one scale, in a directory of its own under `base` (removed afterwards).
async fn scale(base: &Path, token: &Path, projects: usize, what: &str) -> anyhow::Result<Scale> {
    let datasets = setting("SMRTSHARE_BENCH_DATASETS", 4);
    let files = setting("SMRTSHARE_BENCH_FILES", 25);
    let job_files = setting("SMRTSHARE_BENCH_JOB_FILES", 5);
    let concurrency = setting("SMRTSHARE_BENCH_CONCURRENCY", 8);
    let rounds = setting("SMRTSHARE_BENCH_ROUNDS", 3).max(1);
    let reapplies = setting("SMRTSHARE_BENCH_REAPPLY_ROUNDS", 5).max(1);
    let work = smrtshare_testkit::tempfile::tempdir_in(base)?;
    let src = work.path().join("src");
    std::fs::create_dir_all(&src)?;
    println!(
        "{what}: {projects} projects x {datasets} datasets x {files} files and 1 analysis job x {job_files} outputs, client concurrency {concurrency}, in {}",
        work.path().display()
    );
    let started = Instant::now();
    let specs = smrtshare_demo::generate_synthetic(&src, projects, datasets, files, 64)?;
    let jobs = write_jobs(&src, &specs, job_files)?;
    let job_outputs: usize = jobs.values().flatten().map(|j| j.files.len() - 1).sum();
    let total_files: usize = specs
        .iter()
        .flat_map(|p| &p.datasets)
        .map(|d| d.files.len())
        .sum::<usize>()
        + job_outputs;
    println!(
        "  source tree: {total_files} data files ({job_outputs} of them analysis job outputs, and a log per job left out) generated in {}",
        ms(started.elapsed())
    );
    let requests = requests(&specs, &jobs);

    // 1. Rounds of cp -al into a new directory, then the initial staging by a new server into a
    //    new root; medians. The last round's server and tree serve the rest.
    let mut t_cps = Vec::new();
    let mut t_stages = Vec::new();
    let mut last: Option<(Server, StagingClient<PeerChannel>, PathBuf)> = None;
    for round in 0..rounds {
        let (root, copy, state) = (
            work.path().join(format!("root{round}")),
            work.path().join(format!("copy{round}")),
            work.path().join(format!("state{round}")),
        );
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&state)?;
        if let Some((server, _, _)) = last.take() {
            server.stop()?;
        }
        // Each timed phase starts with nothing left to write back (the generated tree, the
        // previous phase's links), so neither pays for the other's dirty pages.
        rustix::fs::sync();
        let mut cp = Command::new("cp");
        cp.arg("-al").arg(&src).arg(&copy);
        t_cps.push(timed(cp)?);

        let server = Server::start(&root, &src, &state, token, &[])?;
        let client = server.client()?;
        let staged = Arc::new(Mutex::new(0u64));
        let counted = staged.clone();
        let staging = pass(&client, &requests, concurrency, move |r| {
            anyhow::ensure!(
                r.complete,
                "project {} incomplete: {:?}",
                r.project_id,
                r.datasets.iter().map(|d| &d.error).collect::<Vec<_>>()
            );
            anyhow::ensure!(
                r.analysis.iter().all(|j| j.skipped == 1),
                "project {}: each job's log is left out",
                r.project_id
            );
            *counted.lock().unwrap() += r
                .datasets
                .iter()
                .map(|d| u64::from(d.file_count))
                .chain(r.analysis.iter().map(|j| u64::from(j.file_count)))
                .sum::<u64>();
            Ok(())
        });
        rustix::fs::sync();
        let t_stage = if round + 1 == rounds {
            perf(&server, "STAGE", staging).await??
        } else {
            staging.await?
        };
        t_stages.push(t_stage);
        let staged = *staged.lock().unwrap();
        anyhow::ensure!(
            staged as usize == total_files,
            "{staged} files staged, expected {total_files}"
        );
        println!(
            "  round {}: cp -al {}, staging {}",
            round + 1,
            ms(t_cps[round]),
            ms(t_stage)
        );
        last = Some((server, client, root));
    }
    let (cp, stage) = (median(t_cps), median(t_stages));
    let (server, client, root) = last.context("no round ran")?;
    // The service copies its records' write-ahead log into the database a second after writes
    // stop; let that happen before measuring the steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The log lines of the staging pass are read from the server's stderr by another thread,
    // which may lag behind the answers: every one is in before the re-applies are counted.
    all_logged(&server, requests.len(), "the staging pass").await?;
    server.applied_calls.lock().unwrap().clear();

    // 2. Unchanged re-applies against the stat-walk, alternating, medians.
    let mut t_reapply = Vec::new();
    let mut t_find = Vec::new();
    for round in 0..reapplies {
        let mut find = Command::new("find");
        find.arg(&root).args(["-printf", "%n\n"]);
        t_find.push(timed(find)?);
        t_reapply.push(
            pass(&client, &requests, concurrency, |r| {
                anyhow::ensure!(
                    r.complete && r.actions.is_empty(),
                    "project {} was not idle: {} actions",
                    r.project_id,
                    r.actions.len()
                );
                Ok(())
            })
            .await?,
        );
        println!(
            "  re-apply round {}: find {}, re-apply {}",
            round + 1,
            ms(t_find[round]),
            ms(t_reapply[round])
        );
    }
    let (reapply, find) = (median(t_reapply), median(t_find));
    all_logged(&server, reapplies * requests.len(), "the re-applies").await?;
    let logged: Vec<u64> = std::mem::take(&mut *server.applied_calls.lock().unwrap());
    anyhow::ensure!(
        logged.len() == reapplies * requests.len(),
        "{} apply log lines for {} applies",
        logged.len(),
        reapplies * requests.len()
    );
    let counted_calls: u64 = logged.iter().sum();
    perf(&server, "REAPPLY", async {
        for _ in 0..5 {
            pass(&client, &requests, concurrency, |_| Ok(())).await?;
        }
        server.applied_calls.lock().unwrap().clear();
        Ok::<(), anyhow::Error>(())
    })
    .await??;
    let (strace_calls, strace_table) = strace_pass(
        &server,
        &client,
        &requests,
        concurrency,
        &work.path().join("strace.txt"),
    )
    .await?;
    let peak_kib = server.status_kib("VmHWM");
    server.stop()?;
    Ok(Scale {
        projects: requests.len(),
        files: total_files,
        rounds,
        reapplies,
        cp,
        stage,
        find,
        reapply,
        counted_calls,
        strace_calls,
        strace_table,
        peak_kib,
    })
}

/// `perf record` attached to the server while `work` runs, when `SMRTSHARE_BENCH_PERF_<WHAT>`
/// names an output file (for profiling; the figures are taken without it).
async fn perf<T>(
    server: &Server,
    what: &str,
    work: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    let Some(out) = std::env::var_os(format!("SMRTSHARE_BENCH_PERF_{what}")) else {
        return Ok(work.await);
    };
    let mut perf = Command::new("perf")
        .args(["record", "-F", "2000", "--call-graph=dwarf,16384", "-o"])
        .arg(&out)
        .args(["-p", &server.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let value = work.await;
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&perf),
        rustix::process::Signal::INT,
    )?;
    perf.wait()?;
    println!(
        "  perf profile of {what} written to {}",
        PathBuf::from(out).display()
    );
    Ok(value)
}

/// Runs one pass with strace attached to every thread of the server; returns the number of
/// mutating calls strace saw and its summary table.
async fn strace_pass(
    server: &Server,
    client: &StagingClient<PeerChannel>,
    requests: &[pb::ApplyProjectRequest],
    concurrency: usize,
    out: &Path,
) -> anyhow::Result<(u64, String)> {
    let mut strace = Command::new("/usr/bin/strace")
        .args(["-f", "-c", "-e", &format!("trace={MUTATING}"), "-o"])
        .arg(out)
        .args(["-p", &server.pid().to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting strace")?;
    let stderr = strace.stderr.take().context("strace stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .context("strace did not attach")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pass(client, requests, concurrency, |_| Ok(())).await?;
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&strace),
        rustix::process::Signal::INT,
    )?;
    strace.wait()?;
    let table = std::fs::read_to_string(out)?;
    // The summary's last line: "100.00 <seconds> <usecs/call> <calls> [errors] total" (empty when none).
    let total = table
        .lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok((total, table))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var_os("SMRTSHARE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = smrtshare_testkit::tempfile::tempdir_in(&base)?;
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN)?;

    println!("staging benchmark");
    let small = scale(
        &base,
        &token,
        setting("SMRTSHARE_BENCH_PROJECTS", 500),
        "run 1",
    )
    .await?;
    let large_projects = setting("SMRTSHARE_BENCH_LARGE_PROJECTS", 2000);
    let large = if large_projects > 0 {
        Some(scale(&base, &token, large_projects, "run 2").await?)
    } else {
        None
    };
    let (count, megabytes) = (
        setting("SMRTSHARE_BENCH_XML_REQUESTS", 20),
        setting("SMRTSHARE_BENCH_XML_MB", 12),
    );
    let memory = if count > 0 {
        println!("memory: {count} requests at once, each with a {megabytes} MB dataset XML");
        Some(memory::run(&base, &token, count, megabytes << 20).await?)
    } else {
        None
    };

    println!();
    small.print();
    if let Some(large) = &large {
        large.print();
    }
    if let Some(memory) = &memory {
        memory_print(memory);
    }
    println!();
    small.results("staging");
    if let Some(large) = &large {
        large.results("staging.large");
    }
    if let Some(memory) = &memory {
        memory_results(memory);
    }
    Ok(())
}

fn memory_print(memory: &memory::Memory) {
    let peak = mib(memory.burst.1);
    println!(
        "{} requests at once, each a dataset whose XML is {:.1} MB, on a fresh server",
        memory.requests,
        memory.xml_bytes as f64 / 1e6
    );
    println!(
        "   one parse alone:   {:.1} MiB above the {:.1} MiB after start ({:.1} bytes per byte of XML)",
        mib(memory.single.1.saturating_sub(memory.single.0)),
        mib(memory.single.0),
        memory.factor()
    );
    println!(
        "   peak RSS (VmHWM):  {peak:.1} MiB   (target < {MEMORY_TARGET_MIB:.0} MiB: {}); {:.1} MiB after start, {:.1} MiB after the burst (VmRSS)",
        if peak < MEMORY_TARGET_MIB {
            "met"
        } else {
            "MISSED"
        },
        mib(memory.burst.0),
        mib(memory.burst.2)
    );
    println!("   parses that waited for the budget: {}", memory.waits);
}

fn memory_results(memory: &memory::Memory) {
    let peak = mib(memory.burst.1);
    println!("RESULT staging.memory.requests={}", memory.requests);
    println!("RESULT staging.memory.xml_bytes={}", memory.xml_bytes);
    println!("RESULT staging.memory.parse_factor={:.1}", memory.factor());
    println!("RESULT staging.memory.peak_rss_mib={peak:.1}");
    println!(
        "RESULT staging.memory.after_rss_mib={:.1}",
        mib(memory.burst.2)
    );
    println!("RESULT staging.memory.waits={}", memory.waits);
}
