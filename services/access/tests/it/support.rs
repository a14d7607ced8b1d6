//! The harness: an in-process Globus stand-in, a throwaway registry (SQLite or PostgreSQL) and a
//! real access gRPC server on 127.0.0.1:0, with a generated client.

use std::time::Duration;

use smrtshare_access::globus::identities::LoginMapping;
use smrtshare_access::globus::{GlobusConfig, RetryPolicy};
use smrtshare_access::{Access, Clock, Config, RenewalStatus, RulePolicy};
use smrtshare_api::access::v1 as pb;
use smrtshare_api::access::v1::access_client::AccessClient;
use smrtshare_common::Secret;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Identity, Maker, Rule, StandIn,
    StandInConfig,
};
use smrtshare_testkit::TestDatabase;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use pb::MemberOutcomeKind as K;

/// The username domain every test maps logins with.
pub const DOMAIN: &str = "example.edu";
/// Logins that have Globus identities in every test (as `login@example.edu`).
pub const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

/// What a test may change.
#[derive(Clone, Debug)]
pub struct Options {
    pub policy: RulePolicy,
    pub retry: RetryPolicy,
    pub rate: f64,
    pub burst: u32,
    pub concurrency: usize,
    pub timeout: Duration,
    pub clock: Clock,
    pub standin: StandInConfig,
    pub mapping: LoginMapping,
    pub provision: bool,
}

impl Default for Options {
    fn default() -> Self {
        let identities = USERS
            .iter()
            .map(|u| Identity::for_username(&format!("{u}@{DOMAIN}")))
            .collect();
        Self {
            policy: RulePolicy {
                expiry: Duration::from_secs(90 * 86_400),
                renew_before: Duration::from_secs(14 * 86_400),
                // The background task stays out of the way unless a test wants it.
                renewal_interval: Duration::from_secs(86_400),
                renewal_first_delay: Duration::from_secs(86_400),
                adoption_skew: Duration::from_secs(300),
                limit_cooloff: Duration::from_secs(3600),
                member_concurrency: 8,
                ..RulePolicy::default()
            },
            retry: RetryPolicy {
                max_attempts: 6,
                base: Duration::from_millis(5),
                cap: Duration::from_millis(50),
                max_retry_after: Duration::from_secs(2),
            },
            rate: 0.0,
            burst: 5,
            concurrency: 8,
            timeout: Duration::from_secs(5),
            clock: Clock::System,
            standin: StandInConfig {
                identities,
                ..StandInConfig::default()
            },
            mapping: LoginMapping::new(Some(DOMAIN), Default::default()).expect("valid mapping"),
            provision: false,
        }
    }
}

/// A running access server.
pub struct Running {
    pub client: AccessClient<Channel>,
    pub status: watch::Receiver<RenewalStatus>,
    pub core: std::sync::Arc<smrtshare_access::Core>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task).await.expect("server task");
        result.expect("server stopped cleanly");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The access configuration for a stand-in and a database.
pub fn config(standin: &StandIn, database_url: &str, options: &Options) -> Config {
    let mut globus = GlobusConfig::new(
        standin.url().parse().expect("auth url"),
        standin.transfer_url().parse().expect("transfer url"),
        DEFAULT_CLIENT_ID,
        Secret::new(DEFAULT_CLIENT_SECRET),
        DEFAULT_ENDPOINT,
    );
    globus.groups_url = standin.url().parse().expect("groups url");
    globus.retry = options.retry.clone();
    globus.rate_per_second = options.rate;
    globus.burst = options.burst;
    globus.concurrency = options.concurrency;
    globus.request_timeout = options.timeout;
    globus.connect_timeout = options.timeout;
    let mut config = Config::new(globus, database_url, options.mapping.clone());
    config.policy = options.policy.clone();
    config.clock = options.clock.clone();
    config.provision_identities = options.provision;
    config
}

/// Starts an access server on 127.0.0.1:0 and waits until health reports SERVING.
pub async fn start_access(config: Config) -> Running {
    let access = Access::start(config).await.expect("access starts");
    let status = access.renewal_status();
    let core = access.core().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(access.serve(listener, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(url).expect("url").connect_lazy();
    wait_serving(channel.clone()).await;
    Running {
        client: AccessClient::new(channel),
        status,
        core,
        stop: Some(stop),
        task,
    }
}

/// Waits for SERVING through the health Watch stream (no sleeps: works on a paused clock).
pub async fn wait_serving(channel: Channel) {
    let mut health = HealthClient::new(channel);
    let mut updates = health
        .watch(HealthCheckRequest {
            service: "smrtshare.access.v1.Access".to_owned(),
        })
        .await
        .expect("health watch")
        .into_inner();
    while let Some(update) = updates.message().await.expect("health update") {
        if update.status == ServingStatus::Serving as i32 {
            return;
        }
    }
    panic!("health never reported SERVING");
}

/// A stand-in, a registry and an access server.
pub struct Harness {
    pub standin: StandIn,
    pub db: TestDatabase,
    pub options: Options,
    pub access: Running,
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, options: Options) -> Self {
        smrtshare_common::telemetry::init_for_tests();
        let standin = StandIn::start(options.standin.clone())
            .await
            .expect("stand-in starts");
        let db = TestDatabase::new(backend).await.expect("test database");
        let access = start_access(config(&standin, &db.url, &options)).await;
        standin.reset_counts();
        Self {
            standin,
            db,
            options,
            access,
        }
    }

    pub fn client(&self) -> AccessClient<Channel> {
        self.access.client.clone()
    }

    pub async fn try_apply(
        &self,
        project_id: i64,
        path: &str,
        logins: &[&str],
        dry_run: bool,
    ) -> Result<pb::ApplyProjectAccessResponse, tonic::Status> {
        self.client()
            .apply_project_access(pb::ApplyProjectAccessRequest {
                project_id,
                path: path.to_owned(),
                logins: logins.iter().map(|l| (*l).to_owned()).collect(),
                dry_run,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn apply(
        &self,
        project_id: i64,
        path: &str,
        logins: &[&str],
    ) -> pb::ApplyProjectAccessResponse {
        self.try_apply(project_id, path, logins, false)
            .await
            .expect("apply succeeds")
    }

    pub async fn revoke(&self, project_id: i64, dry_run: bool) -> pb::RevokeProjectAccessResponse {
        self.client()
            .revoke_project_access(pb::RevokeProjectAccessRequest {
                project_id,
                dry_run,
            })
            .await
            .expect("revoke succeeds")
            .into_inner()
    }

    pub async fn registry_rules(&self, project_id: i64) -> Vec<pb::Rule> {
        self.project(project_id).await.rules
    }

    pub async fn project(&self, project_id: i64) -> pb::GetProjectAccessResponse {
        self.client()
            .get_project_access(pb::GetProjectAccessRequest { project_id })
            .await
            .expect("get succeeds")
            .into_inner()
    }

    /// The access service's metrics text.
    pub fn metrics(&self) -> String {
        self.access.core.metrics().encode()
    }

    /// A sample's value in the metrics text (`name{labels} value`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn verify(&self, dry_run: bool) -> pb::VerifyResponse {
        self.client()
            .verify(pb::VerifyRequest { dry_run })
            .await
            .expect("verify succeeds")
            .into_inner()
    }

    /// Rules with an id at the stand-in (rules through roles left out).
    pub fn globus_rules(&self) -> Vec<Rule> {
        self.standin
            .rules(DEFAULT_ENDPOINT)
            .expect("endpoint")
            .into_iter()
            .filter(|r| r.id.is_some())
            .collect()
    }

    /// Rules smrtshare's client made, still at the stand-in.
    pub fn our_rules(&self) -> Vec<Rule> {
        self.globus_rules()
            .into_iter()
            .filter(|r| r.made_by == Maker::Client(DEFAULT_CLIENT_ID.to_owned()))
            .collect()
    }

    /// The identity id of a login.
    pub fn identity(&self, login: &str) -> String {
        self.standin
            .identity(&format!("{login}@{DOMAIN}"))
            .unwrap_or_else(|| panic!("no identity for {login}"))
            .id
    }

    /// The rule at the stand-in for a login on a path.
    pub fn rule_of(&self, login: &str, path: &str) -> Option<Rule> {
        let identity = self.identity(login);
        self.globus_rules()
            .into_iter()
            .find(|r| r.principal == identity && r.path == path)
    }
}

/// (login, outcome) pairs of an answer.
pub fn outcomes(members: &[pb::MemberOutcome]) -> Vec<(String, K)> {
    members
        .iter()
        .map(|m| {
            (
                m.login.clone(),
                K::try_from(m.outcome).unwrap_or(K::Unspecified),
            )
        })
        .collect()
}

/// `[(login, kind)]` from literals.
pub fn expect(pairs: &[(&str, K)]) -> Vec<(String, K)> {
    pairs.iter().map(|(l, k)| ((*l).to_owned(), *k)).collect()
}

pub use smrtshare_testkit::poll_until as eventually;
