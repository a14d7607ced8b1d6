//! The coordinator's command line: every flag has an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use smrtshare_common::Secret;
use smrtshare_common::config::{DatabaseArgs, LogArgs, PeerArgs, ServerArgs};

use crate::engine::EngineConfig;
use crate::intake::{IntakeConfig, parse_allowed};
use crate::lease::LeaseTimes;
use crate::naming::DirectoryNamer;
use crate::reader::ReaderConfig;
use crate::resync::ResyncConfig;
use crate::rules::{Backoff, RetryPolicy};

/// Default gRPC address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50053";

/// smrtshare coordinator: takes every SMRT Link project change and fans it out to staging and
/// access as independent tasks.
#[derive(Parser, Debug, Clone)]
#[command(name = "smrtshare-coordinator", version, about)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub peers: PeerArgs,
    #[command(flatten)]
    pub smrtlink: smrtshare_smrtlink::SmrtLinkArgs,
    #[command(flatten)]
    pub metrics: smrtshare_common::metrics::MetricsArgs,
    #[command(flatten)]
    pub status: crate::status::StatusArgs,

    /// Directory for the default SQLite database (`coordinator.db`) when --database-url is not set.
    #[arg(
        long,
        env = "SMRTSHARE_STATE_DIR",
        default_value = "/var/lib/smrtshare"
    )]
    pub state_dir: PathBuf,

    /// URL of the staging service (`http://` or `https://`).
    #[arg(
        long,
        env = "SMRTSHARE_STAGING_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub staging_url: String,

    /// URL of the access service (`http://` or `https://`).
    #[arg(
        long,
        env = "SMRTSHARE_ACCESS_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub access_url: String,

    /// Address of the HTTP intake NGINX mirrors SMRT Link's requests to.
    #[arg(
        long,
        env = "SMRTSHARE_INTAKE_LISTEN",
        default_value = "127.0.0.1:50080"
    )]
    pub intake_listen: SocketAddr,

    /// Source addresses or CIDR networks allowed to post to the intake (comma-separated).
    #[arg(
        long,
        env = "SMRTSHARE_INTAKE_ALLOW",
        value_delimiter = ',',
        default_value = "127.0.0.1,::1"
    )]
    pub intake_allow: Vec<String>,

    /// File holding the shared secret the mirror must send in X-Smrtshare-Mirror-Secret.
    #[arg(
        long,
        env = "SMRTSHARE_INTAKE_SECRET_FILE",
        conflicts_with = "intake_secret"
    )]
    pub intake_secret_file: Option<PathBuf>,

    /// The shared secret itself (prefer --intake-secret-file; never logged).
    #[arg(long, env = "SMRTSHARE_INTAKE_SECRET", hide_env_values = true)]
    pub intake_secret: Option<String>,

    /// Wait this long after a mirrored request before re-reading SMRT Link (it may not have
    /// finished the request yet).
    #[arg(long, env = "SMRTSHARE_SETTLE_DELAY", value_parser = humantime::parse_duration, default_value = "2s")]
    pub settle_delay: Duration,

    /// A request that merges into a change still settling pushes its settle time by the settle
    /// delay, but never beyond this long after the change was first recorded (so a stream of
    /// edits cannot keep a project from being read).
    #[arg(long, env = "SMRTSHARE_MAX_SETTLE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub max_settle: Duration,

    /// Project directory name template: `{id}` (required) and `{name}`.
    #[arg(
        long,
        env = "SMRTSHARE_DIRECTORY_TEMPLATE",
        default_value = "Project {id}: {name}"
    )]
    pub directory_template: String,

    /// Replace characters Windows cannot store (`<>:"\|?*`) in directory names with `_`.
    #[arg(long, env = "SMRTSHARE_WINDOWS_SAFE_NAMES")]
    pub windows_safe_names: bool,

    /// Task workers per target (staging, access).
    #[arg(long, env = "SMRTSHARE_WORKERS", default_value_t = 4)]
    pub workers: usize,

    /// How long a worker's claim on a task holds unless renewed. It is renewed every third of
    /// this while the call runs (however long the call takes), so a replica that dies loses its
    /// tasks to the others within this time.
    #[arg(long, env = "SMRTSHARE_TASK_LEASE", value_parser = humantime::parse_duration, default_value = "15s")]
    pub task_lease: Duration,

    /// How long a reader's claim on a change holds unless renewed (renewed as task leases are).
    /// The resync lease and the replica's heartbeat use --task-lease.
    #[arg(long, env = "SMRTSHARE_READ_LEASE", value_parser = humantime::parse_duration, default_value = "15s")]
    pub read_lease: Duration,

    /// First retry delay of a failed task (before jitter); doubles per failure.
    #[arg(long, env = "SMRTSHARE_RETRY_BASE", value_parser = humantime::parse_duration, default_value = "2s")]
    pub retry_base: Duration,

    /// Longest retry delay of a failed task.
    #[arg(long, env = "SMRTSHARE_RETRY_CAP", value_parser = humantime::parse_duration, default_value = "5m")]
    pub retry_cap: Duration,

    /// Attempts of a task before its failure is final (a failure no retry cures is final at
    /// once). A new change of the project makes a new task with attempts of its own.
    #[arg(long, env = "SMRTSHARE_TASK_ATTEMPTS", default_value_t = 8)]
    pub task_attempts: i64,

    /// A running analysis job is looked at again this long after the first look, then twice as
    /// long after each further look, at most --job-check-most apart, until its state is final.
    #[arg(long, env = "SMRTSHARE_JOB_CHECK_FIRST", value_parser = humantime::parse_duration, default_value = "1m")]
    pub job_check_first: Duration,

    /// The longest time between two looks at a running analysis job.
    #[arg(long, env = "SMRTSHARE_JOB_CHECK_MOST", value_parser = humantime::parse_duration, default_value = "30m")]
    pub job_check_most: Duration,

    /// Concurrent analysis job followers.
    #[arg(long, env = "SMRTSHARE_JOB_FOLLOWERS", default_value_t = 2)]
    pub job_followers: usize,

    /// Concurrent SMRT Link readers.
    #[arg(long, env = "SMRTSHARE_READERS", default_value_t = 4)]
    pub readers: usize,

    /// Reads of one change before it is given up as FAILED (resync repairs it later).
    #[arg(long, env = "SMRTSHARE_READ_ATTEMPTS", default_value_t = 8)]
    pub read_attempts: i64,

    /// Longest sleep of an idle worker or reader before it looks for work (other replicas'
    /// work is found this way).
    #[arg(long, env = "SMRTSHARE_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub poll_interval: Duration,

    /// Time between periodic resyncs (the first runs at start: the startup renewal).
    #[arg(long, env = "SMRTSHARE_RESYNC_INTERVAL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub resync_interval: Duration,

    /// Do not resync at start or periodically (Resync still works on request).
    #[arg(long, env = "SMRTSHARE_NO_PERIODIC_RESYNC")]
    pub no_periodic_resync: bool,

    /// Largest share (0–1) of known projects a resync may remove without force.
    #[arg(
        long,
        env = "SMRTSHARE_RESYNC_MAX_REMOVAL_SHARE",
        default_value_t = 0.25
    )]
    pub resync_max_removal_share: f64,

    /// Concurrent SMRT Link project reads during a resync.
    #[arg(long, env = "SMRTSHARE_RESYNC_CONCURRENCY", default_value_t = 8)]
    pub resync_concurrency: usize,

    /// This replica's name in leases (default: the host name). Stable across restarts, so a
    /// restarted coordinator takes its own claims back at once; each live replica needs its own.
    #[arg(long, env = "SMRTSHARE_REPLICA_NAME")]
    pub replica_name: Option<String>,

    /// After the drain (SMRTSHARE_DRAIN_TIMEOUT, in which calls in flight may finish), how long
    /// calls still running get to be abandoned and their tasks handed back to other replicas.
    /// The process exits within the drain plus this grace: keep the sum under the service
    /// manager's stop timeout (40 s in the shipped units).
    #[arg(long, env = "SMRTSHARE_DRAIN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain_grace: Duration,
}

impl Config {
    /// The database URL (default: SQLite in the state directory).
    pub fn database_url(&self) -> String {
        self.database.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.state_dir.join("coordinator.db").display()
            )
        })
    }

    /// The runtime settings these flags describe, checked.
    pub fn settings(&self) -> anyhow::Result<crate::Settings> {
        for (flag, lease) in [
            ("--task-lease", self.task_lease),
            ("--read-lease", self.read_lease),
        ] {
            anyhow::ensure!(
                lease >= Duration::from_secs(3),
                "{flag} must be at least 3s (it is renewed every third), got {lease:?}"
            );
        }
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.resync_max_removal_share),
            "--resync-max-removal-share must be between 0 and 1, got {}",
            self.resync_max_removal_share
        );
        anyhow::ensure!(
            self.retry_base <= self.retry_cap,
            "--retry-base must not exceed --retry-cap"
        );
        anyhow::ensure!(
            self.task_attempts >= 1,
            "--task-attempts must be at least 1"
        );
        anyhow::ensure!(
            self.job_check_first >= Duration::from_secs(1)
                && self.job_check_first <= self.job_check_most,
            "--job-check-first must be at least 1s and not exceed --job-check-most"
        );
        anyhow::ensure!(
            self.read_attempts >= 1,
            "--read-attempts must be at least 1"
        );
        anyhow::ensure!(
            self.max_settle >= self.settle_delay,
            "--max-settle ({:?}) must not be shorter than --settle-delay ({:?})",
            self.max_settle,
            self.settle_delay
        );
        let secret = match (&self.intake_secret_file, &self.intake_secret) {
            (Some(path), _) => Some(Secret::from_file(path)?),
            (None, Some(value)) if !value.trim().is_empty() => Some(Secret::new(value.trim())),
            _ => None,
        };
        let backoff = Backoff::new(self.retry_base, self.retry_cap);
        let owner = self
            .replica_name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(crate::replica::host_name);
        let task_lease = LeaseTimes::new(self.task_lease);
        Ok(crate::Settings {
            engine: EngineConfig {
                workers_per_target: self.workers.max(1),
                lease: task_lease,
                retry: RetryPolicy {
                    backoff,
                    max_attempts: self.task_attempts,
                },
                poll: self.poll_interval,
            },
            reader: ReaderConfig {
                readers: self.readers.max(1),
                lease: LeaseTimes::new(self.read_lease),
                retry: RetryPolicy {
                    backoff,
                    max_attempts: self.read_attempts,
                },
                poll: self.poll_interval,
            },
            follower: crate::follower::FollowerConfig {
                followers: self.job_followers.max(1),
                lease: LeaseTimes::new(self.read_lease),
                schedule: crate::rules::CheckSchedule {
                    first_ms: crate::clock::millis(self.job_check_first),
                    most_ms: crate::clock::millis(self.job_check_most),
                },
                poll: self.poll_interval,
            },
            resync: ResyncConfig {
                interval: self.resync_interval,
                max_removal_share: self.resync_max_removal_share,
                read_concurrency: self.resync_concurrency.max(1),
                lease: task_lease,
            },
            periodic_resync: !self.no_periodic_resync,
            intake: IntakeConfig {
                settle: self.settle_delay,
                max_settle: self.max_settle,
                secret,
                allowed: parse_allowed(&self.intake_allow)?,
            },
            namer: DirectoryNamer::new(&self.directory_template, self.windows_safe_names)?,
            owner,
            drain_grace: self.drain_grace,
        })
    }
}
