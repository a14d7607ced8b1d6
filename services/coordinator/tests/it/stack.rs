//! The whole chain in one process, every part real: a PUT mirrored to the intake ends with the
//! tree staged (hard links) by the staging service and the rules granted at the Globus stand-in
//! by the access service, read back through GetChange. Both backends.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::Secret;
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::client::PeerOptions;
use smrtshare_common::db::Backend;
use smrtshare_common::server::ServerOptions;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::peers::Peers;
use smrtshare_coordinator::smrtlink::SmrtLinkSource;
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, StandIn as Globus, StandInConfig,
};
use smrtshare_smrtlink::SmrtLinkClient;
use smrtshare_smrtlink::model::Role;
use smrtshare_smrtlink_standin::{Seed, StandIn as SmrtLink, StandInOptions};
use smrtshare_testkit::TestDatabase;
use tokio::net::TcpListener;

use crate::harness::{Running, settings, status, store, task_of, wait_change};
use smrtshare_testkit::both_backends;

const FIXTURE_PREFIX: &str = "/home/dnasc/smrtlink-container/data/L9j.pacb/";
const TOKEN: &str = "stack-token";

/// Staging, access, both stand-ins and the coordinator, in-process on real sockets.
pub struct Stack {
    pub dir: smrtshare_testkit::tempfile::TempDir,
    pub root: PathBuf,
    pub smrtlink: SmrtLink,
    pub globus: Globus,
    pub coordinator: Running,
    _dbs: Vec<TestDatabase>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Stack {
    pub async fn start(backend: Backend, fixtures: &Path) -> Self {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        smrtshare_testkit::copy_tree(&fixtures.join("tomatoes"), &data).unwrap();
        let root = dir.path().join("collection");
        std::fs::create_dir_all(&root).unwrap();
        let prefix = format!("{}/", data.display());
        let smrtlink = SmrtLink::start(StandInOptions {
            seed: Some(Seed::new(fixtures).rewrite(FIXTURE_PREFIX, prefix.as_str())),
            ..Default::default()
        })
        .await
        .unwrap();
        let globus = Globus::start(StandInConfig::default()).await.unwrap();
        for login in ["dnasc", "alice"] {
            globus.add_identity(&format!("{login}@example.edu"));
        }
        let mut stops = Vec::new();
        let auth = || ServerAuth::Token(Secret::new(TOKEN));

        let staging_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let staging_url = format!("http://{}", staging_listener.local_addr().unwrap());
        let staging_config = smrtshare_staging::Config::new(
            root.clone(),
            vec![data.clone()],
            ServerOptions::new(auth()),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(smrtshare_staging::run(
            staging_listener,
            staging_config,
            async move {
                let _ = stopped.await;
            },
        ));
        stops.push(stop);

        let access_db = TestDatabase::new(backend).await.unwrap();
        let globus_config = smrtshare_access::globus::GlobusConfig::new(
            url::Url::parse(&globus.url()).unwrap(),
            url::Url::parse(&globus.transfer_url()).unwrap(),
            DEFAULT_CLIENT_ID,
            Secret::new(DEFAULT_CLIENT_SECRET),
            DEFAULT_ENDPOINT,
        );
        let mapping = smrtshare_access::globus::identities::LoginMapping::new(
            Some("example.edu"),
            Default::default(),
        )
        .unwrap();
        let mut access_config =
            smrtshare_access::Config::new(globus_config, &access_db.url, mapping);
        access_config.server = ServerOptions::new(auth());
        let access = smrtshare_access::Access::start(access_config)
            .await
            .unwrap();
        let access_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let access_url = format!("http://{}", access_listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(access.serve(access_listener, async move {
            let _ = stopped.await;
        }));
        stops.push(stop);

        let (coordinator_store, coordinator_db) = store(backend, Clock::system()).await;
        let options = PeerOptions {
            token: Some(Secret::new(TOKEN)),
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let peers = Peers::connect(&staging_url, &access_url, &options, 16 << 20).unwrap();
        let source = Arc::new(SmrtLinkSource::new(
            SmrtLinkClient::new(smrtlink.client_config("admin", "admin")).unwrap(),
        ));
        let coordinator = Running::start(
            coordinator_store,
            source,
            peers,
            settings("stack", Duration::from_millis(200)),
        )
        .await;
        Self {
            dir,
            root,
            smrtlink,
            globus,
            coordinator,
            _dbs: vec![access_db, coordinator_db],
            stops,
        }
    }

    /// Rules at the Globus stand-in made through the API (not through roles), as (username, path).
    pub fn rules(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .globus
            .rules(DEFAULT_ENDPOINT)
            .unwrap()
            .into_iter()
            .filter(|r| r.id.is_some())
            .map(|r| {
                let who = ["dnasc", "alice"]
                    .iter()
                    .map(|l| format!("{l}@example.edu"))
                    .find(|u| self.globus.identity(u).is_some_and(|i| i.id == r.principal))
                    .unwrap_or(r.principal.clone());
                (who, r.path)
            })
            .collect();
        out.sort();
        out
    }

    pub async fn stop(self) {
        self.coordinator.stop().await;
        for stop in self.stops {
            let _ = stop.send(());
        }
    }
}

both_backends!(a_mirrored_put_ends_staged_and_granted);

async fn a_mirrored_put_ends_staged_and_granted(backend: Backend) {
    let Some(fixtures) =
        smrtshare_testkit::smrtlink_fixtures(Path::new(env!("CARGO_MANIFEST_DIR")))
    else {
        return;
    };
    let stack = Stack::start(backend, &fixtures).await;
    let mut client = stack.coordinator.client();

    // A SMRT Link user adds alice to project 2; NGINX mirrors the PUT to the intake.
    stack
        .smrtlink
        .add_member(2, "alice", Role::CanView)
        .unwrap();
    let http = reqwest::Client::new();
    let answer = http
        .put(format!(
            "http://{}/SMRTLink/2.0.0/smrt-link/projects/2",
            stack.coordinator.intake
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);

    let mut change_id = 0;
    for _ in 0..100 {
        let changes = client
            .list_changes(pb::ListChangesRequest {
                project_id: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .changes;
        if let Some(c) = changes.first() {
            change_id = c.change_id;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(change_id > 0, "the mirrored PUT was recorded");
    let change = wait_change(&mut client, change_id, Duration::from_secs(60), |c| {
        status(c) != pb::ChangeStatus::InProgress
    })
    .await;
    assert_eq!(status(&change), pb::ChangeStatus::Ok, "{change:#?}");

    // GetChange carries both services' reports.
    let staging = task_of(&change, pb::Target::Staging);
    let Some(pb::task_report::Report::StagingApply(report)) = staging.report.and_then(|r| r.report)
    else {
        panic!("no staging report")
    };
    assert!(report.complete && !report.actions.is_empty());
    let access = task_of(&change, pb::Target::Access);
    let Some(pb::task_report::Report::AccessApply(report)) = access.report.and_then(|r| r.report)
    else {
        panic!("no access report")
    };
    assert_eq!(report.members.len(), 2, "{report:#?}");

    // The tree: hard links to the copied run files, under the documented names.
    let parent = stack
        .root
        .join("Project 2: Tomato")
        .join("Movie m84100_240301_194028_s1 - Germany tomato 20 and 21 (2 barcoded samples)");
    let bam = parent
        .join("Tomato 20 (bc1047--bc1047)")
        .join("m84100_240301_194028_s1.hifi_reads.bc1047.bam");
    let source = stack
        .dir
        .path()
        .join("data/hifi_reads/m84100_240301_194028_s1.hifi_reads.bc1047.bam");
    let (a, b) = (
        std::fs::metadata(&bam).unwrap(),
        std::fs::metadata(&source).unwrap(),
    );
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "{} is a hard link to {}",
        bam.display(),
        source.display()
    );
    assert!(parent.join("Supplemental Run Data").is_dir());

    // The rules: one read-only rule per shared member on the project directory; admin (OWNER) none.
    assert_eq!(
        stack.rules(),
        vec![
            (
                "alice@example.edu".to_owned(),
                "/Project 2: Tomato/".to_owned()
            ),
            (
                "dnasc@example.edu".to_owned(),
                "/Project 2: Tomato/".to_owned()
            )
        ]
    );
    stack.stop().await;
}
