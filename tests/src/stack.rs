//! The whole system from its real binaries: demo data, the SMRT Link and Globus stand-ins, and
//! staging, access and the coordinator wired with tokens, SQLite everywhere, each logging JSON
//! into the stack's temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use smrtshare_api::access::v1::access_client::AccessClient;
use smrtshare_api::coordinator::v1::coordinator_client::CoordinatorClient;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_common::Secret;
use smrtshare_common::client::{PeerChannel, PeerOptions, peer_channel};

use crate::globus::GlobusAdmin;
use crate::process::{Process, Spec};
pub use crate::secrets::Secrets;
pub use crate::service::{Service, binary};
use crate::smrtlink::{SmrtLinkAdmin, WebUi};

/// The Globus collection the stand-in serves and access manages.
pub const COLLECTION: &str = "5a6e1e52-0c0f-4c4b-9d57-2a3c1f0e7b11";
/// The confidential client access logs in as.
pub const GLOBUS_CLIENT_ID: &str = "7d3f1c52-1b8e-4c0a-9a61-0c5e2f4d8a10";
/// Appended to SMRT Link logins to make Globus usernames.
pub const USERNAME_DOMAIN: &str = "example.edu";
/// The SMRT Link members of the demo data (admin owns every project).
pub const MEMBERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// A Globus user who is no SMRT Link member: people grant them access by hand.
pub const OUTSIDER: &str = "erin@example.edu";
/// The SMRT Link login smrtshare reads as (and the web UI writes as).
pub const SMRTLINK_USER: &str = "admin";

/// How to start the stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// The coordinator's `--settle-delay`.
    pub settle_delay: Duration,
    /// Extra arguments for the coordinator: `--flag value` replaces the harness's value of a
    /// flag it already passes; anything else is appended.
    pub coordinator_args: Vec<String>,
    /// Extra arguments for access, applied the same way (e.g. `--sharing groups`).
    pub access_args: Vec<String>,
    /// Globus usernames that exist at the stand-in (default: every member at `example.edu`).
    pub identities: Vec<String>,
    /// Wait until the startup renewal has staged and granted the demo projects.
    pub wait_converged: bool,
    /// `--log-filter` of every process (their default, `info`, when `None`).
    pub log_filter: Option<String>,
    /// Serve the coordinator's status page (a loopback port the kernel picks, with the resync
    /// button); its address is then in [`Addresses::status`].
    pub status_page: bool,
    /// Generate the demo's analysis jobs too (`smrtshare-demo --analysis-jobs`).
    pub analysis_jobs: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            settle_delay: Duration::from_millis(100),
            coordinator_args: Vec::new(),
            access_args: Vec::new(),
            identities: MEMBERS
                .iter()
                .map(|m| format!("{m}@{USERNAME_DOMAIN}"))
                .chain([OUTSIDER.to_owned()])
                .collect(),
            wait_converged: true,
            log_filter: None,
            status_page: false,
            analysis_jobs: false,
        }
    }
}

/// Addresses the processes bound (`host:port`).
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    /// The SMRT Link stand-in's API base URL (`http://…/SMRTLink/2.0.0`).
    pub smrtlink_api: String,
    /// The SMRT Link stand-in's root URL (`http://host:port`; admin API under `/admin`).
    pub smrtlink: String,
    /// The Globus stand-in's root URL.
    pub globus: String,
    /// staging's gRPC address.
    pub staging: String,
    /// access's gRPC address.
    pub access: String,
    /// The coordinator's gRPC address.
    pub coordinator: String,
    /// The coordinator's mirror intake.
    pub intake: String,
    /// Metrics endpoints of staging, access and the coordinator.
    pub metrics: Vec<(Service, String)>,
    /// The coordinator's status page (`host:port`; empty unless `StackOptions::status_page`).
    pub status: String,
}

/// The running system. Every child is killed when it is dropped.
#[derive(Debug)]
pub struct Stack {
    dir: smrtshare_testkit::tempfile::TempDir,
    data_root: PathBuf,
    root: PathBuf,
    secrets: Secrets,
    addresses: Addresses,
    processes: Vec<(Service, Process)>,
}

fn write_secret(path: &Path, value: &str) -> anyhow::Result<PathBuf> {
    std::fs::write(path, format!("{value}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn field(line: &serde_json::Value, name: &str) -> anyhow::Result<String> {
    line[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name:?} in the log line {line}"))
}

impl Stack {
    /// Generates demo data and starts all five processes, each ready (health SERVING) before
    /// the next starts; with `wait_converged`, also waits until the demo projects are staged
    /// and granted.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let dir = smrtshare_testkit::tempfile::Builder::new()
            .prefix("smrtshare-system-")
            .tempdir()?;
        let base = dir.path().to_path_buf();
        for sub in ["secrets", "state", "logs", "collection"] {
            std::fs::create_dir_all(base.join(sub))?;
        }
        let demo = base.join("demo");
        let output = Command::new(binary("smrtshare-demo")?)
            .arg("--out")
            .arg(&demo)
            .args(options.analysis_jobs.then_some("--analysis-jobs"))
            .output()
            .context("running smrtshare-demo")?;
        if !output.status.success() {
            bail!(
                "smrtshare-demo failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let secrets = Secrets::default();
        let s = base.join("secrets");
        let peer_token = write_secret(&s.join("peer-token"), &secrets.peer_token)?;
        let operator_token = write_secret(&s.join("operator-token"), &secrets.operator_token)?;
        let globus_secret = write_secret(&s.join("globus-secret"), &secrets.globus_client_secret)?;
        let smrtlink_password =
            write_secret(&s.join("smrtlink-password"), &secrets.smrtlink_password)?;
        let state = base.join("state");
        let logs = base.join("logs");
        let mut stack = Self {
            data_root: demo.join("data"),
            root: base.join("collection"),
            dir,
            secrets,
            addresses: Addresses::default(),
            processes: Vec::new(),
        };
        let log = |service: Service| logs.join(format!("{}.log", service.name()));
        let spec = |service: Service| -> anyhow::Result<Spec> {
            let spec = Spec::new(binary(service.binary())?).args(["--log-format", "json"]);
            Ok(match &options.log_filter {
                Some(filter) => spec.flag("--log-filter", filter),
                None => spec,
            })
        };

        // SMRT Link, seeded with the demo projects; the user's password comes from the
        // environment variable the stand-in reads (its --user flag would put it on the command line).
        let mut sl = spec(Service::SmrtLink)?
            .flag("--listen", "127.0.0.1:0")
            .flag("--seed-dir", demo.join("smrtlink"))
            .flag("--token-ttl", "10m");
        sl.env.push((
            "SMRTSHARE_SMRTLINK_STANDIN_USERS".into(),
            format!("{SMRTLINK_USER}:{}", stack.secrets.smrtlink_password),
        ));
        let mut process = Process::start("smrtlink", sl, &log(Service::SmrtLink))?;
        let line = process.wait_for_log("smrt link stand-in listening").await?;
        let api = field(&line, "api")?;
        let root_url = api.trim_end_matches("/SMRTLink/2.0.0").to_owned();
        process.spec_mut().set_flag(
            "--listen",
            root_url.trim_start_matches("http://").to_owned(),
        );
        stack.addresses.smrtlink_api = api;
        stack.addresses.smrtlink = root_url;
        stack.processes.push((Service::SmrtLink, process));

        // Globus.
        let mut globus = spec(Service::Globus)?
            .flag("--listen", "127.0.0.1:0")
            .flag("--client-id", GLOBUS_CLIENT_ID)
            .flag("--client-secret-file", &globus_secret)
            .flag("--endpoint", COLLECTION)
            .flag("--rate-limit", "0");
        for identity in &options.identities {
            globus = globus.flag("--identity", identity);
        }
        let mut process = Process::start("globus", globus, &log(Service::Globus))?;
        let line = process.wait_for_log("globus stand-in listening").await?;
        let address = field(&line, "address")?;
        process.spec_mut().set_flag("--listen", address.clone());
        stack.addresses.globus = format!("http://{address}");
        stack.processes.push((Service::Globus, process));

        // Staging.
        let staging = spec(Service::Staging)?
            .flag("--listen", "127.0.0.1:0")
            .flag("--metrics-listen", "127.0.0.1:0")
            .flag("--root", &stack.root)
            .flag("--source-root", &stack.data_root)
            .flag("--database", state.join("staging.sqlite3"))
            .flag("--auth-token-file", &peer_token)
            .flag("--fs-timeout", "30s");
        let (process, grpc) =
            Self::start_grpc(Service::Staging, staging, &log(Service::Staging)).await?;
        stack.addresses.staging = grpc.0;
        stack.addresses.metrics.push((Service::Staging, grpc.1));
        stack.processes.push((Service::Staging, process));

        // Access.
        let globus_url = stack.addresses.globus.clone();
        let access = spec(Service::Access)?
            .flag("--listen", "127.0.0.1:0")
            .flag("--metrics-listen", "127.0.0.1:0")
            .flag("--auth-token-file", &peer_token)
            .flag(
                "--database-url",
                format!("sqlite://{}", state.join("access.sqlite3").display()),
            )
            .flag("--globus-auth-url", &globus_url)
            .flag("--globus-transfer-url", format!("{globus_url}/v0.10"))
            .flag("--globus-groups-url", &globus_url)
            .flag("--globus-client-id", GLOBUS_CLIENT_ID)
            .flag("--globus-client-secret-file", &globus_secret)
            .flag("--globus-collection-id", COLLECTION)
            .flag("--globus-username-domain", USERNAME_DOMAIN)
            .flag("--globus-rate-limit", "0")
            .flag("--globus-backoff", "50ms")
            .flag("--globus-backoff-cap", "1s");
        let access = access.with_overrides(&options.access_args);
        let (process, grpc) =
            Self::start_grpc(Service::Access, access, &log(Service::Access)).await?;
        stack.addresses.access = grpc.0;
        stack.addresses.metrics.push((Service::Access, grpc.1));
        stack.processes.push((Service::Access, process));

        // The coordinator.
        let settle = format!("{}ms", options.settle_delay.as_millis());
        let coordinator = spec(Service::Coordinator)?
            .flag("--listen", "127.0.0.1:0")
            .flag("--intake-listen", "127.0.0.1:0")
            .flag("--metrics-listen", "127.0.0.1:0")
            .flag("--auth-token-file", &operator_token)
            .flag("--peer-token-file", &peer_token)
            .flag(
                "--database-url",
                format!("sqlite://{}", state.join("coordinator.sqlite3").display()),
            )
            .flag("--state-dir", &state)
            .flag(
                "--staging-url",
                format!("http://{}", stack.addresses.staging),
            )
            .flag("--access-url", format!("http://{}", stack.addresses.access))
            .flag("--smrtlink-url", &stack.addresses.smrtlink_api)
            .flag("--smrtlink-user", SMRTLINK_USER)
            .flag("--smrtlink-password-file", &smrtlink_password)
            .flag("--smrtlink-timeout", "10s")
            .flag("--smrtlink-backoff", "50ms")
            .flag("--smrtlink-max-backoff", "500ms")
            .flag("--settle-delay", settle)
            .flag("--peer-timeout", "20s")
            .flag("--task-lease", "25s")
            .flag("--read-lease", "20s")
            .flag("--retry-base", "100ms")
            .flag("--retry-cap", "1s")
            .flag("--poll-interval", "250ms")
            .flag("--resync-interval", "1h");
        let coordinator = if options.status_page {
            coordinator
                .flag("--status-listen", "127.0.0.1:0")
                .args(["--status-resync"])
        } else {
            coordinator
        };
        let coordinator = coordinator.with_overrides(&options.coordinator_args);
        let (mut process, grpc) = Self::start_grpc(
            Service::Coordinator,
            coordinator,
            &log(Service::Coordinator),
        )
        .await?;
        let intake = field(
            &process.wait_for_log("mirror intake listening").await?,
            "address",
        )?;
        process
            .spec_mut()
            .set_flag("--intake-listen", intake.clone());
        stack.addresses.coordinator = grpc.0;
        stack.addresses.intake = intake;
        stack.addresses.metrics.push((Service::Coordinator, grpc.1));
        if options.status_page {
            let status = field(
                &process.wait_for_log("status page listening").await?,
                "address",
            )?;
            process
                .spec_mut()
                .set_flag("--status-listen", status.clone());
            stack.addresses.status = status;
        }
        stack.processes.push((Service::Coordinator, process));

        for service in Service::GRPC {
            stack.wait_serving(service).await?;
        }
        if options.wait_converged
            && let Err(error) =
                crate::world::wait_converged(&stack, &[], Duration::from_secs(30)).await
        {
            stack.dir.disable_cleanup(true);
            bail!(
                "the demo projects were not staged and granted ({} kept): {error:#}",
                stack.dir.path().display()
            );
        }
        Ok(stack)
    }

    /// Starts a gRPC service, waits until it logs its addresses and health SERVING, and pins
    /// its listen addresses for restarts. Answers (gRPC address, metrics address).
    async fn start_grpc(
        service: Service,
        spec: Spec,
        log: &Path,
    ) -> anyhow::Result<(Process, (String, String))> {
        let mut process = Process::start(service.name(), spec, log)?;
        let grpc = field(
            &process.wait_for_log("grpc server listening").await?,
            "address",
        )?;
        let metrics = field(&process.wait_for_log("metrics listening").await?, "address")?;
        process
            .wait_for_log("ready: health reports SERVING")
            .await?;
        process.spec_mut().set_flag("--listen", grpc.clone());
        process
            .spec_mut()
            .set_flag("--metrics-listen", metrics.clone());
        Ok((process, (grpc, metrics)))
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The staging root (the collection root).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The demo run trees (staging's source root).
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// The secrets.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The bound addresses.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The gRPC address (`host:port`) of a smrtshare service.
    pub fn grpc_address(&self, service: Service) -> &str {
        match service {
            Service::Staging => &self.addresses.staging,
            Service::Access => &self.addresses.access,
            Service::Coordinator => &self.addresses.coordinator,
            Service::SmrtLink | Service::Globus => "",
        }
    }

    fn process(&mut self, service: Service) -> anyhow::Result<&mut Process> {
        self.processes
            .iter_mut()
            .find(|(s, _)| *s == service)
            .map(|(_, p)| p)
            .with_context(|| format!("{service} is not part of the stack"))
    }

    /// The log file of one process (every incarnation appends to it).
    pub fn log(&self, service: Service) -> PathBuf {
        self.dir
            .path()
            .join("logs")
            .join(format!("{}.log", service.name()))
    }

    /// Every log file.
    pub fn logs(&self) -> Vec<(Service, PathBuf)> {
        Service::ALL.iter().map(|s| (*s, self.log(*s))).collect()
    }

    /// `kill -9`.
    pub fn kill(&mut self, service: Service) -> anyhow::Result<()> {
        self.process(service)?.kill();
        Ok(())
    }

    /// Kills the process if it runs, starts it again with the same arguments, ports and
    /// database, and waits until it is ready.
    pub async fn restart(&mut self, service: Service) -> anyhow::Result<()> {
        let process = self.process(service)?;
        process.restart()?;
        match service {
            Service::SmrtLink => {
                process.wait_for_log("smrt link stand-in listening").await?;
            }
            Service::Globus => {
                process.wait_for_log("globus stand-in listening").await?;
            }
            Service::Staging | Service::Access | Service::Coordinator => {
                process
                    .wait_for_log("ready: health reports SERVING")
                    .await?;
                self.wait_serving(service).await?;
            }
        }
        Ok(())
    }

    /// Stops every process as Ctrl-C on `scripts/stack` does (SIGTERM, the coordinator first,
    /// the stand-ins last) and waits for each to exit cleanly. The state directory stays.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        for (_, process) in self.processes.iter_mut().rev() {
            process.terminate(Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// Fails when a process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for (_, process) in &mut self.processes {
            process.check_running()?;
        }
        Ok(())
    }

    /// Polls `grpc.health.v1.Health/Check` for the service until it answers SERVING.
    pub async fn wait_serving(&self, service: Service) -> anyhow::Result<()> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let name = service.grpc_name().context("not a gRPC service")?;
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            self.grpc_address(service)
        ))?
        .connect_lazy();
        let mut health = HealthClient::new(channel);
        let started = Instant::now();
        loop {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: name.to_owned(),
                })
                .await;
            if let Ok(answer) = &answer
                && answer.get_ref().status == ServingStatus::Serving as i32
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{service} is not SERVING after 30 s: {answer:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn channel(&self, address: &str, token: &str) -> anyhow::Result<PeerChannel> {
        peer_channel(
            &format!("http://{address}"),
            &PeerOptions {
                token: Some(Secret::new(token)),
                timeout: Duration::from_secs(30),
                ..PeerOptions::default()
            },
        )
    }

    /// A coordinator client sending the operator token.
    pub fn coordinator(&self) -> anyhow::Result<CoordinatorClient<PeerChannel>> {
        Ok(CoordinatorClient::new(self.channel(
            &self.addresses.coordinator,
            &self.secrets.operator_token,
        )?))
    }

    /// A staging client sending the peer token.
    pub fn staging(&self) -> anyhow::Result<StagingClient<PeerChannel>> {
        Ok(StagingClient::new(self.channel(
            &self.addresses.staging,
            &self.secrets.peer_token,
        )?))
    }

    /// An access client sending the peer token.
    pub fn access(&self) -> anyhow::Result<AccessClient<PeerChannel>> {
        Ok(AccessClient::new(self.channel(
            &self.addresses.access,
            &self.secrets.peer_token,
        )?))
    }

    /// A SMRT Link web-UI session as the admin user, mirrored to the intake.
    pub fn web_ui(&self) -> anyhow::Result<WebUi> {
        WebUi::new(
            &self.addresses.smrtlink_api,
            SMRTLINK_USER,
            &self.secrets.smrtlink_password,
            &self.addresses.intake,
        )
    }

    /// The SMRT Link stand-in's admin API.
    pub fn smrtlink_admin(&self) -> SmrtLinkAdmin {
        SmrtLinkAdmin::new(&self.addresses.smrtlink)
    }

    /// The Globus stand-in's admin API.
    pub fn globus(&self) -> GlobusAdmin {
        GlobusAdmin::new(&self.addresses.globus, COLLECTION)
    }
}

impl Drop for Stack {
    /// On a failing test: kills the children, keeps the directory and prints where the logs are
    /// with each log's tail. `SMRTSHARE_KEEP_STACK=1` keeps it always.
    fn drop(&mut self) {
        let keep = std::env::var_os("SMRTSHARE_KEEP_STACK").is_some_and(|v| v == "1");
        for (_, process) in &mut self.processes {
            process.kill();
        }
        if std::thread::panicking() || keep {
            self.dir.disable_cleanup(true);
            eprintln!("stack kept at {}", self.dir.path().display());
        }
        if std::thread::panicking() {
            for (service, process) in &self.processes {
                eprintln!("---- {service} log tail ----\n{}", process.log_tail(15));
            }
        }
    }
}
