//! Test harness: an in-memory SMRT Link, fake staging and access servers, and a coordinator
//! started in-process on real sockets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use smrtshare_api::access::v1 as access;
use smrtshare_api::access::v1::access_server::{Access, AccessServer};
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_api::coordinator::v1::coordinator_client::CoordinatorClient;
use smrtshare_api::staging::v1 as staging;
use smrtshare_api::staging::v1::staging_server::{Staging, StagingServer};
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::client::PeerOptions;
use smrtshare_common::db::Backend;
use smrtshare_common::server::{GrpcServer, ServerOptions};
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::engine::EngineConfig;
use smrtshare_coordinator::intake::IntakeConfig;
use smrtshare_coordinator::lease::LeaseTimes;
use smrtshare_coordinator::model::{
    AnalysisJobTruth, DatasetTruth, JobOutput, MemberTruth, ProjectTruth,
};
use smrtshare_coordinator::naming::DirectoryNamer;
use smrtshare_coordinator::peers::Peers;
use smrtshare_coordinator::reader::ReaderConfig;
use smrtshare_coordinator::resync::ResyncConfig;
use smrtshare_coordinator::rules::{Backoff, RetryPolicy};
use smrtshare_coordinator::source::{ProjectSource, SourceError};
use smrtshare_coordinator::store::Store;
use smrtshare_coordinator::{Deps, Settings};
use smrtshare_testkit::TestDatabase;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// SMRT Link in memory: projects by id, a switch that makes every read fail, and gates that
/// hold a read of a project at the dangerous point (after it read the truth, before it answers).
#[derive(Default)]
pub struct MemorySource {
    pub projects: Mutex<BTreeMap<i64, ProjectTruth>>,
    pub down: AtomicBool,
    pub reads: AtomicUsize,
    gates: Mutex<BTreeMap<i64, Arc<Gate>>>,
    listing_gate: Mutex<Option<Arc<Gate>>>,
    /// Analysis jobs and their outputs.
    pub jobs: Mutex<BTreeMap<i64, (AnalysisJobTruth, Vec<JobOutput>)>>,
    pub job_reads: AtomicUsize,
}

/// Holds the next call that meets it: `reached` says it got there, `release` lets it go on.
pub struct Gate {
    reached: tokio::sync::Semaphore,
    released: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            reached: tokio::sync::Semaphore::new(0),
            released: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    /// Waits until a call is held here.
    pub async fn reached(&self) {
        self.reached.acquire().await.unwrap().forget();
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.released.add_permits(1);
    }

    async fn hold(&self) {
        self.reached.add_permits(1);
        self.released.acquire().await.unwrap().forget();
    }
}

impl MemorySource {
    pub fn put(&self, id: i64, name: &str, shared: &[&str], datasets: &[&str]) {
        let mut members = vec![MemberTruth {
            login: "admin".into(),
            role: "OWNER".into(),
        }];
        members.extend(shared.iter().map(|l| MemberTruth {
            login: (*l).into(),
            role: "CAN_VIEW".into(),
        }));
        let truth = ProjectTruth {
            id,
            name: name.into(),
            updated_at: "2024-03-11T20:16:38.435Z".into(),
            members,
            datasets: datasets
                .iter()
                .map(|u| DatasetTruth {
                    uuid: (*u).into(),
                    name: format!("dataset {u}"),
                    path: format!("/data/{u}.xml"),
                    parent_uuid: None,
                    num_children: 0,
                })
                .collect(),
        };
        self.projects.lock().unwrap().insert(id, truth);
    }

    pub fn remove(&self, id: i64) {
        self.projects.lock().unwrap().remove(&id);
    }

    /// Holds the next read of project `id` after it took the project's truth as it is now, so
    /// it answers that (older) truth when released.
    pub fn hold_read(&self, id: i64) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.gates.lock().unwrap().insert(id, gate.clone());
        gate
    }

    /// Puts an analysis job (outputs are served once it is SUCCESSFUL).
    pub fn put_job(&self, id: i64, project_id: i64, name: &str, state: &str, outputs: &[&str]) {
        let job = AnalysisJobTruth {
            id,
            project_id,
            state: state.into(),
            name: name.into(),
            error: if state == "FAILED" {
                "the aligner ran out of memory".into()
            } else {
                String::new()
            },
        };
        let outputs = outputs
            .iter()
            .map(|p| JobOutput {
                path: format!("/jobs_root/{id}/{p}"),
                file_type_id: "PacBio.FileTypes.bam".into(),
                source_id: format!("{name}-out"),
            })
            .collect();
        self.jobs.lock().unwrap().insert(id, (job, outputs));
    }

    /// Holds the next listing after it took the project ids as they are now.
    pub fn hold_listing(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        *self.listing_gate.lock().unwrap() = Some(gate.clone());
        gate
    }
}

impl ProjectSource for MemorySource {
    fn list_project_ids(&self) -> BoxFuture<'_, Result<Vec<i64>, SourceError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable("memory source is down".into()));
            }
            let ids = self.projects.lock().unwrap().keys().copied().collect();
            let gate = self.listing_gate.lock().unwrap().take();
            if let Some(gate) = gate {
                gate.hold().await;
            }
            Ok(ids)
        })
    }

    fn get_project(&self, id: i64) -> BoxFuture<'_, Result<Option<ProjectTruth>, SourceError>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable("memory source is down".into()));
            }
            let truth = self.projects.lock().unwrap().get(&id).cloned();
            let gate = self.gates.lock().unwrap().remove(&id);
            if let Some(gate) = gate {
                gate.hold().await;
            }
            Ok(truth)
        })
    }

    fn dataset_project(&self, uuid: &str) -> BoxFuture<'_, Result<Option<i64>, SourceError>> {
        let uuid = uuid.to_owned();
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable("memory source is down".into()));
            }
            Ok(self
                .projects
                .lock()
                .unwrap()
                .values()
                .find(|p| p.datasets.iter().any(|d| d.uuid == uuid))
                .map(|p| p.id))
        })
    }

    fn list_analysis_jobs(&self) -> BoxFuture<'_, Result<Vec<AnalysisJobTruth>, SourceError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable("memory source is down".into()));
            }
            Ok(self
                .jobs
                .lock()
                .unwrap()
                .values()
                .map(|(j, _)| j.clone())
                .collect())
        })
    }

    fn get_analysis_job(
        &self,
        id: i64,
    ) -> BoxFuture<'_, Result<Option<AnalysisJobTruth>, SourceError>> {
        Box::pin(async move {
            self.job_reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable("memory source is down".into()));
            }
            Ok(self.jobs.lock().unwrap().get(&id).map(|(j, _)| j.clone()))
        })
    }

    fn analysis_outputs(&self, id: i64) -> BoxFuture<'_, Result<Vec<JobOutput>, SourceError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(SourceError::Unavailable("memory source is down".into()));
            }
            match self.jobs.lock().unwrap().get(&id) {
                Some((job, outputs)) if job.state == "SUCCESSFUL" => Ok(outputs.clone()),
                Some(_) => Ok(Vec::new()),
                None => Err(SourceError::Unavailable(format!("job {id} not found"))),
            }
        })
    }
}

/// What a fake peer saw.
#[derive(Default)]
pub struct Calls {
    /// (project, operation) per call, in order.
    pub log: Mutex<Vec<(i64, &'static str, i64)>>,
    /// Calls in flight per project right now.
    in_flight: Mutex<BTreeMap<i64, usize>>,
    /// Times two calls for one project overlapped.
    pub overlaps: AtomicUsize,
    /// Answer UNAVAILABLE while set.
    pub down: AtomicBool,
    /// Time each call takes.
    pub delay_ms: AtomicUsize,
    /// Last state applied per project (staging: directory + uuids; access: path + logins).
    pub state: Mutex<BTreeMap<i64, (String, BTreeSet<String>)>>,
    /// Staging: the analysis jobs staged per project, with their files.
    pub analysis: Mutex<BTreeMap<i64, BTreeMap<i64, Vec<String>>>>,
    /// Access: logins with no Globus identity (a failure no retry cures); staging: dataset
    /// uuids whose XML is broken (the same).
    pub hopeless: Mutex<BTreeSet<String>>,
    /// Holds the next call here, when set.
    pub gate: Mutex<Option<Arc<Gate>>>,
}

impl Calls {
    async fn enter(&self, project: i64, op: &'static str, change_id: i64) -> Result<(), Status> {
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            let n = in_flight.entry(project).or_default();
            if *n > 0 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            *n += 1;
        }
        self.log.lock().unwrap().push((project, op, change_id));
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.hold().await;
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            self.leave(project);
            return Err(Status::unavailable("fake peer is down"));
        }
        Ok(())
    }

    fn leave(&self, project: i64) {
        *self.in_flight.lock().unwrap().entry(project).or_default() -= 1;
    }

    fn is_hopeless(&self, key: &str) -> bool {
        self.hopeless.lock().unwrap().contains(key)
    }

    pub fn count(&self, project: i64) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| *p == project)
            .count()
    }

    /// Calls made for projects in `ids`.
    pub fn total_for(&self, ids: std::ops::RangeInclusive<i64>) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| ids.contains(p))
            .count()
    }
}

fn change_id<T>(request: &Request<T>) -> i64 {
    smrtshare_common::auth::change_id(request.metadata()).unwrap_or(0)
}

#[derive(Clone)]
pub struct FakeStaging(pub Arc<Calls>);

#[tonic::async_trait]
impl Staging for FakeStaging {
    async fn apply_project(
        &self,
        request: Request<staging::ApplyProjectRequest>,
    ) -> Result<Response<staging::ApplyProjectResponse>, Status> {
        let id = change_id(&request);
        let r = request.into_inner();
        self.0.enter(r.project_id, "apply", id).await?;
        let (broken, good): (Vec<_>, Vec<_>) =
            r.datasets.iter().partition(|d| self.0.is_hopeless(&d.uuid));
        self.0.analysis.lock().unwrap().insert(
            r.project_id,
            r.analysis_jobs
                .iter()
                .map(|j| (j.job_id, j.files.iter().map(|f| f.path.clone()).collect()))
                .collect(),
        );
        self.0.state.lock().unwrap().insert(
            r.project_id,
            (
                r.directory.clone(),
                good.iter().map(|d| d.uuid.clone()).collect(),
            ),
        );
        self.0.leave(r.project_id);
        let results = good
            .iter()
            .map(|d| staging::DatasetResult {
                uuid: d.uuid.clone(),
                state: staging::DatasetState::Unchanged as i32,
                ..Default::default()
            })
            .chain(broken.iter().map(|d| staging::DatasetResult {
                uuid: d.uuid.clone(),
                state: staging::DatasetState::Failed as i32,
                error: "the dataset XML is not well-formed".into(),
                permanent: true,
                ..Default::default()
            }))
            .collect();
        Ok(Response::new(staging::ApplyProjectResponse {
            project_id: r.project_id,
            directory: r.directory,
            dry_run: false,
            actions: vec![],
            datasets: results,
            analysis: r
                .analysis_jobs
                .iter()
                .map(|j| staging::AnalysisResult {
                    job_id: j.job_id,
                    state: staging::DatasetState::Staged as i32,
                    file_count: u32::try_from(j.files.len()).unwrap(),
                    ..Default::default()
                })
                .collect(),
            complete: broken.is_empty(),
            ..Default::default()
        }))
    }

    async fn remove_project(
        &self,
        request: Request<staging::RemoveProjectRequest>,
    ) -> Result<Response<staging::RemoveProjectResponse>, Status> {
        let id = change_id(&request);
        let r = request.into_inner();
        self.0.enter(r.project_id, "remove", id).await?;
        self.0.state.lock().unwrap().remove(&r.project_id);
        self.0.analysis.lock().unwrap().remove(&r.project_id);
        self.0.leave(r.project_id);
        Ok(Response::new(staging::RemoveProjectResponse {
            project_id: r.project_id,
            dry_run: false,
            actions: vec![],
            removed: true,
            foreign_paths: vec![],
            ..Default::default()
        }))
    }

    async fn get_project(
        &self,
        _: Request<staging::GetProjectRequest>,
    ) -> Result<Response<staging::GetProjectResponse>, Status> {
        Err(Status::unimplemented(
            "the fake staging answers only what the coordinator calls",
        ))
    }

    type ListProjectsStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<staging::ListProjectsResponse, Status>>>;

    async fn list_projects(
        &self,
        _: Request<staging::ListProjectsRequest>,
    ) -> Result<Response<Self::ListProjectsStream>, Status> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake peer is down"));
        }
        let analysis = self.0.analysis.lock().unwrap().clone();
        let items: Vec<_> = self
            .0
            .state
            .lock()
            .unwrap()
            .iter()
            .map(|(id, (dir, uuids))| {
                Ok(staging::ListProjectsResponse {
                    project_id: *id,
                    directory: dir.clone(),
                    dataset_uuids: uuids.iter().cloned().collect(),
                    file_count: 0,
                    updated_at: None,
                    analysis_job_ids: analysis
                        .get(id)
                        .map(|jobs| jobs.keys().copied().collect())
                        .unwrap_or_default(),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(items)))
    }
}

#[derive(Clone)]
pub struct FakeAccess(pub Arc<Calls>);

#[tonic::async_trait]
impl Access for FakeAccess {
    async fn apply_project_access(
        &self,
        request: Request<access::ApplyProjectAccessRequest>,
    ) -> Result<Response<access::ApplyProjectAccessResponse>, Status> {
        let id = change_id(&request);
        let r = request.into_inner();
        self.0.enter(r.project_id, "apply", id).await?;
        let (unknown, known): (Vec<_>, Vec<_>) =
            r.logins.iter().partition(|l| self.0.is_hopeless(l));
        let before = self.0.state.lock().unwrap().insert(
            r.project_id,
            (r.path.clone(), known.iter().map(|l| (*l).clone()).collect()),
        );
        let revoked: Vec<String> = before
            .map(|(_, logins)| {
                logins
                    .into_iter()
                    .filter(|l| !r.logins.contains(l))
                    .collect()
            })
            .unwrap_or_default();
        self.0.leave(r.project_id);
        let members = known
            .iter()
            .map(|l| access::MemberOutcome {
                login: (*l).clone(),
                outcome: access::MemberOutcomeKind::Granted as i32,
                ..Default::default()
            })
            .chain(unknown.iter().map(|l| access::MemberOutcome {
                login: (*l).clone(),
                outcome: access::MemberOutcomeKind::UnknownIdentity as i32,
                message: "no Globus identity".into(),
                permanent: true,
                ..Default::default()
            }))
            .chain(revoked.into_iter().map(|login| access::MemberOutcome {
                login,
                outcome: access::MemberOutcomeKind::Revoked as i32,
                ..Default::default()
            }))
            .collect();
        Ok(Response::new(access::ApplyProjectAccessResponse {
            project_id: r.project_id,
            path: r.path,
            dry_run: false,
            members,
            complete: unknown.is_empty(),
        }))
    }

    async fn revoke_project_access(
        &self,
        request: Request<access::RevokeProjectAccessRequest>,
    ) -> Result<Response<access::RevokeProjectAccessResponse>, Status> {
        let id = change_id(&request);
        let r = request.into_inner();
        self.0.enter(r.project_id, "remove", id).await?;
        self.0.state.lock().unwrap().remove(&r.project_id);
        self.0.leave(r.project_id);
        Ok(Response::new(access::RevokeProjectAccessResponse {
            project_id: r.project_id,
            dry_run: false,
            members: vec![],
            complete: true,
        }))
    }

    async fn get_project_access(
        &self,
        _: Request<access::GetProjectAccessRequest>,
    ) -> Result<Response<access::GetProjectAccessResponse>, Status> {
        Err(Status::unimplemented(
            "the fake access answers only what the coordinator calls",
        ))
    }

    type ListRulesStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<access::ListRulesResponse, Status>>>;

    async fn list_rules(
        &self,
        _: Request<access::ListRulesRequest>,
    ) -> Result<Response<Self::ListRulesStream>, Status> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake peer is down"));
        }
        let mut items = Vec::new();
        for (id, (path, logins)) in self.0.state.lock().unwrap().iter() {
            for login in logins {
                items.push(Ok(access::ListRulesResponse {
                    rule: Some(access::Rule {
                        project_id: *id,
                        login: login.clone(),
                        path: path.clone(),
                        state: access::RuleState::Active as i32,
                        permissions: "r".into(),
                        ..Default::default()
                    }),
                }));
            }
        }
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn verify(
        &self,
        _: Request<access::VerifyRequest>,
    ) -> Result<Response<access::VerifyResponse>, Status> {
        Err(Status::unimplemented(
            "the fake access answers only what the coordinator calls",
        ))
    }
}

/// Both fake peers, served on one socket (they are different gRPC services).
pub struct FakePeers {
    pub staging: Arc<Calls>,
    pub access: Arc<Calls>,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakePeers {
    pub async fn start() -> Self {
        let staging = Arc::new(Calls::default());
        let access = Arc::new(Calls::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut server = GrpcServer::new(ServerOptions::new(ServerAuth::Token(
            smrtshare_common::Secret::new("peer-token"),
        )))
        .unwrap();
        server.add_service(StagingServer::new(FakeStaging(staging.clone())));
        server.add_service(AccessServer::new(FakeAccess(access.clone())));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async { Ok(()) }, async move {
            let _ = stopped.await;
        }));
        Self {
            staging,
            access,
            url,
            stop: Some(stop),
        }
    }

    pub fn peers(&self) -> Peers {
        let options = PeerOptions {
            token: Some(smrtshare_common::Secret::new("peer-token")),
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        Peers::connect(&self.url, &self.url, &options, 16 << 20).unwrap()
    }
}

impl Drop for FakePeers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Settings for tests: short settle, small backoff, fast polling, leases of a few seconds.
pub fn settings(owner: &str, settle: Duration) -> Settings {
    let retry = RetryPolicy {
        backoff: Backoff::new(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_millis(300),
        ),
        max_attempts: 5,
    };
    let lease = LeaseTimes::new(Duration::from_secs(3));
    Settings {
        engine: EngineConfig {
            workers_per_target: 3,
            lease,
            retry,
            poll: Duration::from_millis(100),
        },
        reader: ReaderConfig {
            readers: 2,
            lease,
            retry,
            poll: Duration::from_millis(100),
        },
        resync: ResyncConfig {
            interval: Duration::from_secs(3600),
            max_removal_share: 0.5,
            read_concurrency: 4,
            lease,
        },
        periodic_resync: false,
        follower: smrtshare_coordinator::follower::FollowerConfig {
            followers: 1,
            lease,
            schedule: smrtshare_coordinator::rules::CheckSchedule {
                first_ms: 200,
                most_ms: 1_000,
            },
            poll: Duration::from_millis(100),
        },
        intake: IntakeConfig {
            settle,
            max_settle: settle * 10,
            secret: None,
            allowed: smrtshare_coordinator::intake::parse_allowed(&[
                "127.0.0.1".into(),
                "::1".into(),
            ])
            .unwrap(),
        },
        namer: DirectoryNamer::new("Project {id}: {name}", false).unwrap(),
        owner: owner.into(),
        drain_grace: Duration::from_secs(2),
    }
}

/// A coordinator client carrying the test token.
pub type Client = CoordinatorClient<smrtshare_common::client::PeerChannel>;

/// A coordinator running in-process.
pub struct Running {
    /// What the coordinator measured.
    pub metrics: smrtshare_coordinator::metrics::Metrics,
    pub grpc: SocketAddr,
    pub intake: SocketAddr,
    /// The status page, when served.
    pub status: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub async fn start(
        store: Store,
        source: Arc<dyn ProjectSource>,
        peers: Peers,
        settings: Settings,
    ) -> Self {
        Self::start_with_status(store, source, peers, settings, None).await
    }

    /// As [`Running::start`], serving the status page with `status` when given.
    pub async fn start_with_status(
        store: Store,
        source: Arc<dyn ProjectSource>,
        peers: Peers,
        settings: Settings,
        status: Option<smrtshare_coordinator::status::StatusConfig>,
    ) -> Self {
        let status = match status {
            Some(config) => Some(smrtshare_coordinator::status::StatusListener {
                listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                config,
            }),
            None => None,
        };
        let status_addr = status.as_ref().map(|s| s.listener.local_addr().unwrap());
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let intake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, intake_addr) = (grpc.local_addr().unwrap(), intake.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = smrtshare_coordinator::metrics::Metrics::new();
        let deps = Deps {
            store,
            source,
            peers,
            metrics: metrics.clone(),
        };
        let mut options = ServerOptions::new(ServerAuth::Token(smrtshare_common::Secret::new(
            "coordinator-token",
        )));
        options.drain_timeout = Duration::from_secs(2);
        let listeners = smrtshare_coordinator::Listeners {
            grpc,
            intake,
            metrics: None,
            status,
        };
        let handle = tokio::spawn(smrtshare_coordinator::run(
            listeners,
            options,
            settings,
            deps,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            metrics,
            grpc: grpc_addr,
            intake: intake_addr,
            status: status_addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn client(&self) -> Client {
        let options = PeerOptions {
            token: Some(smrtshare_common::Secret::new("coordinator-token")),
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        CoordinatorClient::new(
            smrtshare_common::client::peer_channel(&format!("http://{}", self.grpc), &options)
                .unwrap(),
        )
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

/// A fresh store on a fresh database of `backend`.
pub async fn store(backend: Backend, clock: Clock) -> (Store, TestDatabase) {
    smrtshare_common::telemetry::init_for_tests();
    let db = TestDatabase::new(backend).await.unwrap();
    let store = Store::open(&db.url, 8, clock).await.unwrap();
    (store, db)
}

/// Polls GetChange until the change satisfies `done` (or panics after `within`).
pub async fn wait_change(
    client: &mut Client,
    change_id: i64,
    within: Duration,
    done: impl Fn(&pb::Change) -> bool,
) -> pb::Change {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let change = client
            .get_change(pb::GetChangeRequest { change_id })
            .await
            .unwrap()
            .into_inner()
            .change
            .unwrap();
        if done(&change) {
            return change;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "change {change_id} never got there: {change:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub use smrtshare_testkit::{eventually, eventually_async};

pub fn status(change: &pb::Change) -> pb::ChangeStatus {
    pb::ChangeStatus::try_from(change.status).unwrap()
}

pub fn task_of(change: &pb::Change, target: pb::Target) -> pb::Task {
    change
        .tasks
        .iter()
        .filter(|t| t.target == target as i32 && t.state != pb::TaskState::Superseded as i32)
        .max_by_key(|t| t.task_id)
        .cloned()
        .unwrap_or_else(|| panic!("no {target:?} task in {change:#?}"))
}
