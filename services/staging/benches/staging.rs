//! Staging benchmark (not a test): `cargo bench -p smrtshare-staging --bench staging`.
//!
//! Against the real `smrtshare-staging` binary as a child process, on a synthetic source tree of
//! 500 projects x 4 datasets x 25 files (50,000 files; `SMRTSHARE_BENCH_PROJECTS` etc. change it),
//! on one filesystem (the system temporary directory, or `SMRTSHARE_BENCH_DIR`):
//!
//! 1. initial staging of every project through the gRPC API, against `cp -al` of the same tree:
//!    `SMRTSHARE_BENCH_ROUNDS` (3) rounds, each a `cp -al` into a new directory then a new server
//!    staging into a new root, each phase after a `sync`; medians (the disk's write-back makes
//!    single runs vary by tens of percent);
//! 2. re-applying every project unchanged, against `find ROOT -printf '%n\n'` over the staged tree
//!    (`SMRTSHARE_BENCH_REAPPLY_ROUNDS` (5) rounds of each, alternating; medians), and the
//!    mutating system calls of such a pass, counted twice: by the service's own counter
//!    (its per-apply log lines) and by `strace -f -c` attached to the server for one more pass;
//! 3. the staging process's peak resident memory (VmHWM).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use smrtshare_api::staging::v1 as pb;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_common::Secret;
use smrtshare_common::client::{PeerChannel, PeerOptions, peer_channel};

const TOKEN: &str = "bench-token";
/// File system calls that change something (strace names, x86_64 and aarch64).
const MUTATING: &str = "mkdir,mkdirat,link,linkat,symlink,symlinkat,unlink,unlinkat,rmdir,rename,renameat,renameat2,chmod,fchmod,\
fchmodat,chown,fchown,fchownat,lchown,setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr,truncate,ftruncate,\
fallocate,utimensat,mknodat,pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range,copy_file_range";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    address: String,
    applied_calls: Arc<Mutex<Vec<u64>>>,
}

impl Server {
    fn start(root: &Path, src: &Path, state: &Path, token: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smrtshare-staging"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--log-filter",
                "info",
            ])
            .arg("--root")
            .arg(root)
            .arg("--source-root")
            .arg(src)
            .arg("--database")
            .arg(state.join("staging.sqlite3"))
            .arg("--auth-token-file")
            .arg(token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting smrtshare-staging")?;
        let stderr = child.stderr.take().context("stderr")?;
        let applied_calls = Arc::new(Mutex::new(Vec::new()));
        let calls = applied_calls.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                match event["message"].as_str() {
                    Some("grpc server listening") => {
                        let _ = tx.send(event["address"].as_str().unwrap_or_default().to_owned());
                    }
                    Some("ready: health reports SERVING") => {
                        let _ = tx.send("ready".into());
                    }
                    Some("project applied") => calls
                        .lock()
                        .unwrap()
                        .push(event["mutating_calls"].as_u64().unwrap_or(u64::MAX)),
                    Some(other) if event["level"] == "ERROR" || event["level"] == "WARN" => {
                        eprintln!("server: {other}: {line}")
                    }
                    _ => {}
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server never logged its address")?;
        anyhow::ensure!(
            rx.recv_timeout(Duration::from_secs(600))
                .context("the server never became ready")?
                == "ready"
        );
        Ok(Self {
            child,
            address,
            applied_calls,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "smrtshare-staging exited with {status}");
        Ok(())
    }
}

impl Drop for Server {
    /// A run that fails half-way kills its server rather than leaving it running (with the
    /// descriptors it inherited, such as a lock the benchmark was started under).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Applies every request with `concurrency` calls in flight; returns the elapsed time.
async fn pass(
    client: &StagingClient<PeerChannel>,
    requests: &[pb::ApplyProjectRequest],
    concurrency: usize,
    check: impl Fn(&pb::ApplyProjectResponse) -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut answers = futures::stream::iter(requests.iter().cloned())
        .map(|r| {
            let mut client = client.clone();
            async move { client.apply_project(r).await }
        })
        .buffer_unordered(concurrency);
    while let Some(answer) = answers.next().await {
        check(&answer?.into_inner())?;
    }
    Ok(started.elapsed())
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
    let projects = setting("SMRTSHARE_BENCH_PROJECTS", 500);
    let datasets = setting("SMRTSHARE_BENCH_DATASETS", 4);
    let files = setting("SMRTSHARE_BENCH_FILES", 25);
    let concurrency = setting("SMRTSHARE_BENCH_CONCURRENCY", 8);
    let base = std::env::var_os("SMRTSHARE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&base)?;
    let rounds = setting("SMRTSHARE_BENCH_ROUNDS", 3).max(1);
    let src = work.path().join("src");
    std::fs::create_dir_all(&src)?;
    let token = work.path().join("token");
    std::fs::write(&token, TOKEN)?;

    println!(
        "staging benchmark: {projects} projects x {datasets} datasets x {files} files, client concurrency {concurrency}, in {}",
        work.path().display()
    );
    let started = Instant::now();
    let specs = smrtshare_demo::generate_synthetic(&src, projects, datasets, files, 64)?;
    let total_files: usize = specs
        .iter()
        .flat_map(|p| &p.datasets)
        .map(|d| d.files.len())
        .sum();
    println!(
        "  source tree: {total_files} data files generated in {}",
        ms(started.elapsed())
    );
    let requests: Vec<pb::ApplyProjectRequest> = specs
        .iter()
        .map(|p| pb::ApplyProjectRequest {
            project_id: p.id,
            directory: format!("Project {}: {}", p.id, p.name),
            datasets: p
                .datasets
                .iter()
                .map(|d| pb::Dataset {
                    uuid: d.uuid.clone(),
                    name: d.name.clone(),
                    xml_path: d.xml_path.display().to_string(),
                    parent_uuid: String::new(),
                    num_children: 0,
                })
                .collect(),
            dry_run: false,
        })
        .collect();

    // 1. Rounds of cp -al into a new directory, then the initial staging by a new server into a
    //    new root; medians. The last round's server and tree serve the rest.
    let options = PeerOptions {
        token: Some(Secret::new(TOKEN)),
        timeout: Duration::from_secs(600),
        ..PeerOptions::default()
    };
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

        let server = Server::start(&root, &src, &state, &token)?;
        let client = StagingClient::new(peer_channel(
            &format!("http://{}", server.address),
            &options,
        )?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
        let staged = Arc::new(Mutex::new(0u64));
        let counted = staged.clone();
        let staging = pass(&client, &requests, concurrency, move |r| {
            anyhow::ensure!(
                r.complete,
                "project {} incomplete: {:?}",
                r.project_id,
                r.datasets.iter().map(|d| &d.error).collect::<Vec<_>>()
            );
            *counted.lock().unwrap() += r
                .datasets
                .iter()
                .map(|d| u64::from(d.file_count))
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
    let (t_cp, t_stage) = (median(t_cps), median(t_stages));
    let (server, client, root) = last.context("no round ran")?;
    server.applied_calls.lock().unwrap().clear();
    // The service copies its records' write-ahead log into the database a second after writes
    // stop; let that happen before measuring the steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. Unchanged re-applies against find, three rounds each, medians.
    let mut t_reapply = Vec::new();
    let mut t_find = Vec::new();
    let reapplies = setting("SMRTSHARE_BENCH_REAPPLY_ROUNDS", 5).max(1);
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
    let (t_reapply, t_find) = (median(t_reapply), median(t_find));
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
    let (strace_calls, table) = strace_pass(
        &server,
        &client,
        &requests,
        concurrency,
        &work.path().join("strace.txt"),
    )
    .await?;
    let peak = server.peak_rss_kib();
    server.stop()?;

    println!();
    println!(
        "1. initial staging of {total_files} files (gRPC, real binary) vs cp -al (medians of {rounds})"
    );
    println!("   cp -al:            {}", ms(t_cp));
    println!("   staging:           {}", ms(t_stage));
    println!(
        "   ratio:             {:.2}x   (target <= 1.30x)",
        t_stage.as_secs_f64() / t_cp.as_secs_f64()
    );
    println!(
        "2. re-applying all {} projects unchanged vs find ROOT -printf '%n\\n' (medians of {reapplies})",
        requests.len()
    );
    println!("   find:              {}", ms(t_find));
    println!("   re-apply:          {}", ms(t_reapply));
    println!(
        "   ratio:             {:.2}x   (target <= 1.50x)",
        t_reapply.as_secs_f64() / t_find.as_secs_f64()
    );
    println!(
        "   mutating calls, service counter over {reapplies} passes: {counted_calls}   (target 0)"
    );
    println!("   mutating calls, strace -f -c over one more pass: {strace_calls}   (target 0)");
    if strace_calls > 0 {
        println!("{table}");
    }
    match peak {
        Some(kib) => println!(
            "3. peak RSS of smrtshare-staging (VmHWM): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("3. peak RSS of smrtshare-staging: unavailable"),
    }
    println!();
    println!("RESULT staging.projects={}", requests.len());
    println!("RESULT staging.files={total_files}");
    println!("RESULT staging.cp_al_ms={:.0}", t_cp.as_secs_f64() * 1000.0);
    println!(
        "RESULT staging.stage_ms={:.0}",
        t_stage.as_secs_f64() * 1000.0
    );
    println!(
        "RESULT staging.stage_ratio={:.2}",
        t_stage.as_secs_f64() / t_cp.as_secs_f64()
    );
    println!(
        "RESULT staging.find_ms={:.0}",
        t_find.as_secs_f64() * 1000.0
    );
    println!(
        "RESULT staging.reapply_ms={:.0}",
        t_reapply.as_secs_f64() * 1000.0
    );
    println!(
        "RESULT staging.reapply_ratio={:.2}",
        t_reapply.as_secs_f64() / t_find.as_secs_f64()
    );
    println!("RESULT staging.mutating_calls_counter={counted_calls}");
    println!("RESULT staging.mutating_calls_strace={strace_calls}");
    if let Some(kib) = peak {
        println!("RESULT staging.peak_rss_mib={:.1}", kib as f64 / 1024.0);
    }
    Ok(())
}
