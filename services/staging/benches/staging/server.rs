//! The real `smrtshare-staging` binary as the benchmark's child process, and passes of applies.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use smrtshare_api::staging::v1 as pb;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_common::Secret;
use smrtshare_common::client::{PeerChannel, PeerOptions, peer_channel};

pub const TOKEN: &str = "bench-token";

pub struct Server {
    child: Child,
    pub address: String,
    /// `mutating_calls` of every "project applied" log line.
    pub applied_calls: Arc<Mutex<Vec<u64>>>,
    /// Log lines by message.
    pub messages: Arc<Mutex<HashMap<String, u64>>>,
}

impl Server {
    /// Starts the binary on `root` and `src` with its records in `state`, and waits until ready.
    pub fn start(
        root: &Path,
        src: &Path,
        state: &Path,
        token: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
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
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting smrtshare-staging")?;
        let stderr = child.stderr.take().context("stderr")?;
        let applied_calls = Arc::new(Mutex::new(Vec::new()));
        let messages = Arc::new(Mutex::new(HashMap::new()));
        let (calls, seen) = (applied_calls.clone(), messages.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let message = event["message"].as_str().unwrap_or_default().to_owned();
                *seen.lock().unwrap().entry(message.clone()).or_default() += 1;
                match message.as_str() {
                    "grpc server listening" => {
                        let _ = tx.send(event["address"].as_str().unwrap_or_default().to_owned());
                    }
                    "ready: health reports SERVING" => {
                        let _ = tx.send("ready".into());
                    }
                    "project applied" => calls
                        .lock()
                        .unwrap()
                        .push(event["mutating_calls"].as_u64().unwrap_or(u64::MAX)),
                    _ if event["level"] == "ERROR" || event["level"] == "WARN" => {
                        eprintln!("server: {message}: {line}")
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
            messages,
        })
    }

    /// A client with the token and a long deadline.
    pub fn client(&self) -> anyhow::Result<StagingClient<PeerChannel>> {
        let options = PeerOptions {
            token: Some(Secret::new(TOKEN)),
            timeout: Duration::from_secs(600),
            ..PeerOptions::default()
        };
        Ok(
            StagingClient::new(peer_channel(&format!("http://{}", self.address), &options)?)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` figure in KiB: `VmHWM` (peak resident memory) or `VmRSS` (now).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// How many log lines said `message`.
    pub fn said(&self, message: &str) -> u64 {
        self.messages
            .lock()
            .unwrap()
            .get(message)
            .copied()
            .unwrap_or(0)
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
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
pub async fn pass(
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

/// Writes one finished analysis job per project under `src/jobs_root`, as SMRT Link lays jobs
/// out: `files` outputs that are staged, and the job's log, which the rules leave out. Returns
/// each project's jobs, for [`requests`].
pub fn write_jobs(
    src: &Path,
    specs: &[smrtshare_demo::ProjectSpec],
    files: usize,
) -> anyhow::Result<HashMap<i64, Vec<pb::AnalysisJob>>> {
    let mut jobs = HashMap::new();
    if files == 0 {
        return Ok(jobs);
    }
    for (n, p) in specs.iter().enumerate() {
        let id = 1000 + n as i64;
        let dir = src
            .join("jobs_root/0000")
            .join(format!("{:07}", id / 1000))
            .join(format!("{id:010}"));
        std::fs::create_dir_all(dir.join("outputs"))?;
        let mut outputs = Vec::with_capacity(files + 1);
        for f in 0..files {
            let path = dir.join("outputs").join(format!("result{f:02}.bam"));
            std::fs::write(&path, format!("job {id} output {f}"))?;
            outputs.push((path, "PacBio.FileTypes.bam"));
        }
        let log = dir.join("pbsmrtpipe.log");
        std::fs::write(&log, "log")?;
        outputs.push((log, "PacBio.FileTypes.log"));
        let job = pb::AnalysisJob {
            job_id: id,
            name: format!("Mapping {n}"),
            files: outputs
                .into_iter()
                .map(|(path, file_type)| pb::AnalysisFile {
                    path: path.display().to_string(),
                    file_type_id: file_type.into(),
                    source_id: "pbmm2.tasks.pbmm2_align-out-0".into(),
                })
                .collect(),
        };
        jobs.insert(p.id, vec![job]);
    }
    Ok(jobs)
}

/// The requests that stage `specs` as they are, each project with its analysis jobs in `jobs`.
pub fn requests(
    specs: &[smrtshare_demo::ProjectSpec],
    jobs: &HashMap<i64, Vec<pb::AnalysisJob>>,
) -> Vec<pb::ApplyProjectRequest> {
    specs
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
            analysis_jobs: jobs.get(&p.id).cloned().unwrap_or_default(),
        })
        .collect()
}
