//! The coordinator against the real SMRT Link stand-in, seeded from the shared fixtures:
//! resync repairs changes made at SMRT Link with no notification, never touches project 1, and
//! removes nothing after a listing that fails half-way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::smrtlink::SmrtLinkSource;
use smrtshare_smrtlink::SmrtLinkClient;
use smrtshare_smrtlink::model::Role;
use smrtshare_smrtlink_standin::{ListingFailure, NewProject, Seed, StandIn, StandInOptions};

use crate::harness::{FakePeers, Running, settings, status, store, wait_change};
use smrtshare_testkit::both_backends;

const FIXTURE_PREFIX: &str = "/home/dnasc/smrtlink-container/data/L9j.pacb/";
const PARENT: &str = "48a71a3e-c97c-43ea-ba41-8c2b31dd32b2";

both_backends!(resync_against_the_stand_in_repairs_silent_changes);

async fn settle(client: &mut crate::harness::Client, report: &pb::ResyncResponse) {
    for item in &report.items {
        wait_change(client, item.change_id, Duration::from_secs(30), |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
}

async fn resync_against_the_stand_in_repairs_silent_changes(backend: Backend) {
    let Some(fixtures) =
        smrtshare_testkit::smrtlink_fixtures(Path::new(env!("CARGO_MANIFEST_DIR")))
    else {
        return;
    };
    let tomatoes = format!("{}/", fixtures.join("tomatoes").display());
    let standin = StandIn::start(StandInOptions {
        seed: Some(Seed::new(&fixtures).rewrite(FIXTURE_PREFIX, tomatoes.as_str())),
        ..Default::default()
    })
    .await
    .unwrap();
    let source = Arc::new(SmrtLinkSource::new(
        SmrtLinkClient::new(standin.client_config("admin", "admin")).unwrap(),
    ));
    let (store, _db) = store(backend, Clock::system()).await;
    let peers = FakePeers::start().await;
    let mut s = settings("solo", Duration::ZERO);
    s.resync.max_removal_share = 0.5;
    let running = Running::start(store, source, peers.peers(), s).await;
    let mut client = running.client();

    // Startup renewal: project 2 is staged and shared with its one non-owner; project 1 never.
    let report = client
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        report.listing_complete && report.listed == 1,
        "project 1 is not counted: {report:#?}"
    );
    settle(&mut client, &report).await;
    let staged = peers.staging.state.lock().unwrap().clone();
    assert_eq!(
        staged.keys().copied().collect::<Vec<_>>(),
        vec![2],
        "only project 2 is staged"
    );
    assert_eq!(staged[&2].0, "Project 2: Tomato");
    assert_eq!(
        staged[&2].1.iter().cloned().collect::<Vec<_>>(),
        vec![PARENT.to_owned()]
    );
    let shared = peers.access.state.lock().unwrap()[&2].clone();
    assert_eq!(
        (
            shared.0.as_str(),
            shared.1.iter().cloned().collect::<Vec<_>>()
        ),
        ("/Project 2: Tomato/", vec!["dnasc".to_owned()])
    );
    let project = client
        .get_project(pb::GetProjectRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(project.datasets[0].num_children, 2);
    assert!(
        project
            .members
            .iter()
            .any(|m| m.login == "admin" && !m.shared)
    );

    // Changes made at SMRT Link directly (port 8243): no notification reaches the coordinator.
    standin.add_member(2, "eve", Role::CanView).unwrap();
    let tomato2 = standin
        .create_project(NewProject {
            name: "Tomato 2".into(),
            description: String::new(),
            members: vec![],
            datasets: vec![PARENT.parse().unwrap()],
        })
        .unwrap();
    let report = client
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    settle(&mut client, &report).await;
    let staged = peers.staging.state.lock().unwrap().clone();
    assert!(
        staged[&2].1.is_empty(),
        "the parent moved away from project 2: {staged:?}"
    );
    assert_eq!(
        staged[&tomato2].1.iter().cloned().collect::<Vec<_>>(),
        vec![PARENT.to_owned()]
    );
    assert!(peers.access.state.lock().unwrap()[&2].1.contains("eve"));

    // Project 2 deleted at SMRT Link, and the listing fails half-way: nothing is removed.
    standin.delete_project(2).unwrap();
    for how in [ListingFailure::CloseMidBody, ListingFailure::TruncatedJson] {
        standin.fail_listings(how, 20);
        let report = client
            .resync(pb::ResyncRequest {
                dry_run: false,
                force: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!report.listing_complete, "{how:?}: {report:#?}");
        assert!(
            report
                .items
                .iter()
                .all(|i| i.operation != pb::Operation::Remove as i32),
            "{report:#?}"
        );
        standin.clear_faults();
    }
    assert!(peers.staging.state.lock().unwrap().contains_key(&2));

    // With a complete listing, project 2 is removed from both targets (1 of 2 known: allowed).
    let report = client
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        report.listing_complete && !report.removals_refused,
        "{report:#?}"
    );
    settle(&mut client, &report).await;
    assert!(!peers.staging.state.lock().unwrap().contains_key(&2));
    assert!(!peers.access.state.lock().unwrap().contains_key(&2));
    assert!(
        !peers.staging.state.lock().unwrap().contains_key(&1) && peers.staging.count(1) == 0,
        "project 1 never touched"
    );
    running.stop().await;
    standin.stop().await;
}
