//! Reads of SMRT Link racing each other, each made to happen: a gate holds one read at the
//! dangerous point (after it read the project, before its result is recorded) while the other
//! side goes ahead.

use std::sync::Arc;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;

use crate::harness::{FakePeers, MemorySource, Running, settings, status, store, wait_change};
use smrtshare_testkit::both_backends;

const LONG: Duration = Duration::from_secs(30);

both_backends!(
    an_older_read_never_undoes_a_newer_one,
    a_project_marked_deleted_before_it_existed_is_discovered,
    a_dataset_moved_away_notifies_the_project_that_took_it,
);

async fn notify(client: &mut crate::harness::Client, project_id: i64) -> i64 {
    client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id })
        .await
        .unwrap()
        .into_inner()
        .change_id
}

fn granted(peers: &FakePeers, project: i64) -> Vec<String> {
    peers.access.state.lock().unwrap()[&project]
        .1
        .iter()
        .cloned()
        .collect()
}

/// Two changes of one project read at once: the first read (bob still a member) is held until
/// the second (bob removed) is recorded and applied. The first, older read is dropped: bob is
/// not granted again.
async fn an_older_read_never_undoes_a_newer_one(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice", "bob"], &["d1"]);
    let peers = FakePeers::start().await;
    let running = Running::start(
        store.clone(),
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();

    let gate = source.hold_read(2);
    let older = notify(&mut client, 2).await;
    gate.reached().await; // read with bob; held before it is recorded

    source.put(2, "Tomato", &["alice"], &["d1"]);
    let newer = notify(&mut client, 2).await;
    assert_ne!(
        older, newer,
        "the first change is being read, so the second is a change of its own"
    );
    wait_change(&mut client, newer, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert_eq!(granted(&peers, 2), vec!["alice".to_owned()]);

    gate.release();
    let change = wait_change(&mut client, older, LONG, |c| {
        status(c) != pb::ChangeStatus::InProgress
    })
    .await;
    assert!(change.message.contains("dropped"), "{}", change.message);
    // Whatever ran after it ran on the newer truth.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        granted(&peers, 2),
        vec!["alice".to_owned()],
        "bob stays revoked"
    );
    assert_eq!(
        store.desired(2).await.unwrap().unwrap().shared_logins,
        vec!["alice".to_owned()]
    );
    running.stop().await;
}

/// A mirrored PUT reaches the coordinator for a project SMRT Link does not have yet: the read
/// marks it deleted. When the project is then created, the POST's discovery must find it.
async fn a_project_marked_deleted_before_it_existed_is_discovered(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();
    let first = notify(&mut client, 2).await;
    wait_change(&mut client, first, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;

    let early = notify(&mut client, 9).await;
    wait_change(&mut client, early, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    let project = client
        .get_project(pb::GetProjectRequest { project_id: 9 })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert!(project.deleted);

    source.put(9, "Late", &["bob"], &["d9"]);
    let discovery = client
        .notify_projects_created(pb::NotifyProjectsCreatedRequest {})
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, discovery, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert!(change.message.contains("new: [9]"), "{}", change.message);
    assert_eq!(change.effects.len(), 1, "{change:#?}");
    wait_change(&mut client, change.effects[0], LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert_eq!(granted(&peers, 9), vec!["bob".to_owned()]);
    assert!(peers.staging.state.lock().unwrap()[&9].1.contains("d9"));
    running.stop().await;
}

/// A dataset moved from project 2 to project 3 with only project 2's request mirrored: project 3
/// changed too and is read, so the dataset is staged there.
async fn a_dataset_moved_away_notifies_the_project_that_took_it(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1", "d2"]);
    source.put(3, "Rice", &["bob"], &["d3"]);
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();
    for id in [2, 3] {
        let change = notify(&mut client, id).await;
        wait_change(&mut client, change, LONG, |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }

    source.put(2, "Tomato", &["alice"], &["d1"]);
    source.put(3, "Rice", &["bob"], &["d2", "d3"]);
    let moved = notify(&mut client, 2).await;
    let change = wait_change(&mut client, moved, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert_eq!(
        change.effects.len(),
        1,
        "project 3 took a dataset: {change:#?}"
    );
    let effect = wait_change(&mut client, change.effects[0], LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert_eq!((effect.project_id, effect.caused_by), (3, moved));
    let staged = |id: i64| {
        peers.staging.state.lock().unwrap()[&id]
            .1
            .iter()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(staged(2), vec!["d1".to_owned()]);
    assert_eq!(staged(3), vec!["d2".to_owned(), "d3".to_owned()]);
    // Effect changes count among the changes recorded.
    let metrics = running.metrics.encode();
    assert!(
        metrics.contains(
            r#"smrtshare_coordinator_changes_total{reason="EFFECT",kind="PROJECT_CHANGED"} 1"#
        ),
        "{metrics}"
    );
    running.stop().await;
}
