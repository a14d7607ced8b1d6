//! Resync: repairs what no notification told the coordinator, plans without acting in a dry
//! run, and removes nothing after an incomplete or suspicious listing unless forced.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;

use crate::harness::{FakePeers, MemorySource, Running, settings, status, store, wait_change};
use smrtshare_testkit::both_backends;

both_backends!(
    resync_repairs_silent_changes_and_guards_removals,
    watch_change_streams_transitions_until_final,
    a_resync_never_undoes_a_change_read_while_it_ran,
    a_project_created_while_resync_runs_is_not_removed,
    the_resync_lease_is_renewed_while_it_runs_and_freed_when_cancelled,
);

async fn resync(
    client: &mut crate::harness::Client,
    dry_run: bool,
    force: bool,
) -> pb::ResyncResponse {
    client
        .resync(pb::ResyncRequest { dry_run, force })
        .await
        .unwrap()
        .into_inner()
}

async fn settle_all(client: &mut crate::harness::Client, report: &pb::ResyncResponse) {
    for item in &report.items {
        wait_change(client, item.change_id, Duration::from_secs(30), |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
}

async fn resync_repairs_silent_changes_and_guards_removals(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    for id in 2..=5 {
        source.put(id, &format!("P{id}"), &["alice"], &[&format!("d{id}")]);
    }
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();

    // Startup renewal on an empty coordinator: every project is applied to both targets.
    let report = resync(&mut client, false, false).await;
    assert!(report.listing_complete && report.listed == 4, "{report:#?}");
    assert_eq!(report.items.len(), 8, "{report:#?}");
    settle_all(&mut client, &report).await;
    assert_eq!(peers.staging.total_for(2..=5), 4);

    // Nothing changed: nothing to do, no call made.
    let calls = peers.staging.total_for(2..=5) + peers.access.total_for(2..=5);
    let report = resync(&mut client, false, false).await;
    assert!(
        report.items.is_empty() && report.in_sync == 4,
        "{report:#?}"
    );

    // A change made at SMRT Link with no notification (port 8243): the dry run plans it, the
    // resync repairs it, and only the target that differs gets a task.
    source.put(3, "P3", &["alice", "carol"], &["d3"]);
    let plan = resync(&mut client, true, false).await;
    assert_eq!(plan.items.len(), 1, "{plan:#?}");
    assert_eq!(
        (
            plan.items[0].project_id,
            plan.items[0].target,
            plan.items[0].change_id
        ),
        (3, pb::Target::Access as i32, 0)
    );
    assert!(
        plan.items[0].reason.contains("1 members without a rule"),
        "{}",
        plan.items[0].reason
    );
    assert_eq!(
        peers.staging.total_for(2..=5) + peers.access.total_for(2..=5),
        calls,
        "a dry run acts on nothing"
    );
    let report = resync(&mut client, false, false).await;
    assert_eq!(report.items.len(), 1);
    settle_all(&mut client, &report).await;
    assert!(peers.access.state.lock().unwrap()[&3].1.contains("carol"));

    // SMRT Link down: the listing is incomplete; nothing is removed.
    source.down.store(true, Ordering::SeqCst);
    let report = resync(&mut client, false, false).await;
    assert!(
        !report.listing_complete && report.items.is_empty(),
        "{report:#?}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("listing SMRT Link projects failed")),
        "{report:#?}"
    );
    source.down.store(false, Ordering::SeqCst);

    // An empty listing would remove every project: refused unless forced.
    let saved: Vec<_> = source
        .projects
        .lock()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
    source.projects.lock().unwrap().clear();
    let report = resync(&mut client, false, false).await;
    assert!(
        report.removals_refused && report.refused_reason.contains("all 4"),
        "{report:#?}"
    );
    assert!(report.items.is_empty());
    assert_eq!(
        peers.staging.state.lock().unwrap().len(),
        4,
        "nothing was removed"
    );
    source.projects.lock().unwrap().extend(saved);

    // One project of four gone (25%, within the allowed 50%): removed from both targets.
    source.remove(5);
    let report = resync(&mut client, false, false).await;
    assert!(!report.removals_refused, "{report:#?}");
    assert_eq!(report.items.len(), 2);
    assert!(
        report
            .items
            .iter()
            .all(|i| i.project_id == 5 && i.operation == pb::Operation::Remove as i32)
    );
    settle_all(&mut client, &report).await;
    assert!(!peers.staging.state.lock().unwrap().contains_key(&5));
    assert!(!peers.access.state.lock().unwrap().contains_key(&5));

    // Two of the three known projects gone: above the allowed share, refused.
    source.remove(2);
    source.remove(3);
    let report = resync(&mut client, false, false).await;
    assert!(
        report.removals_refused && report.refused_reason.contains("2 of 3"),
        "{report:#?}"
    );
    assert!(report.items.is_empty(), "{report:#?}");

    // Every project known before is gone (only a new one is listed): 3 of the 4 held or listed,
    // refused; forced, it goes through.
    source.remove(4);
    source.put(6, "P6", &[], &[]);
    let report = resync(&mut client, false, false).await;
    assert!(
        report.removals_refused && report.refused_reason.contains("3 of 4 projects (75%)"),
        "{report:#?}"
    );
    let forced = resync(&mut client, false, true).await;
    assert!(!forced.removals_refused);
    assert_eq!(
        forced
            .items
            .iter()
            .filter(|i| i.operation == pb::Operation::Remove as i32)
            .count(),
        6,
        "{forced:#?}"
    );
    running.stop().await;
}

async fn watch_change_streams_transitions_until_final(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    let peers = FakePeers::start().await;
    peers.staging.delay_ms.store(300, Ordering::SeqCst);
    peers.access.down.store(true, Ordering::SeqCst);
    let mut s = settings("solo", Duration::from_millis(200));
    s.engine.retry.backoff = smrtshare_coordinator::rules::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_millis(500),
    );
    let running = Running::start(store, source, peers.peers(), s).await;
    let mut client = running.client();
    let change_id = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let mut stream = client
        .watch_change(pb::WatchChangeRequest { change_id })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        first.task.is_none(),
        "the first message is the change as it stands"
    );
    let first = first.change.unwrap();
    assert_eq!(first.status, pb::ChangeStatus::InProgress as i32);

    // Under load the staging task may already be WORKING in the first snapshot (the change is
    // read at once); the states it stands in count as seen.
    let mut transitions: Vec<(i32, i32)> = first
        .tasks
        .iter()
        .filter(|t| t.state == pb::TaskState::Working as i32)
        .map(|t| (t.target, t.state))
        .collect();
    let mut saw_retry = false;
    let peers_access = peers.access.clone();
    while let Some(step) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        let change = step.change.unwrap();
        // While a retry is scheduled the change stays IN_PROGRESS.
        if !saw_retry && change.tasks.iter().any(|t| t.retry_scheduled) {
            assert_eq!(
                change.status,
                pb::ChangeStatus::InProgress as i32,
                "{change:#?}"
            );
            saw_retry = true;
            peers_access.down.store(false, Ordering::SeqCst);
        }
        if let Some(task) = step.task {
            transitions.push((task.target, task.state));
        }
        if change.status == pb::ChangeStatus::Ok as i32
            && change.tasks.iter().all(|t| !t.retry_scheduled)
        {
            // The stream ends by itself once the change is final (after the other transitions
            // the same look found, if any).
            while let Some(step) = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .unwrap()
                .unwrap()
            {
                assert_eq!(step.change.unwrap().status, pb::ChangeStatus::Ok as i32);
                if let Some(task) = step.task {
                    transitions.push((task.target, task.state));
                }
            }
            break;
        }
    }
    assert!(
        saw_retry,
        "the access outage showed as a scheduled retry: {transitions:?}"
    );
    let staging = pb::Target::Staging as i32;
    let access = pb::Target::Access as i32;
    assert!(
        transitions.contains(&(staging, pb::TaskState::Working as i32)),
        "{transitions:?}"
    );
    assert!(transitions.contains(&(staging, pb::TaskState::Ok as i32)));
    assert!(
        transitions.contains(&(access, pb::TaskState::Ready as i32)),
        "{transitions:?}"
    );
    for target in [staging, access] {
        assert_eq!(
            transitions.iter().rev().find(|(t, _)| *t == target),
            Some(&(target, pb::TaskState::Ok as i32)),
            "{transitions:?}"
        );
    }

    // Watching a final change answers once and ends.
    let mut stream = client
        .watch_change(pb::WatchChangeRequest { change_id })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_none());
    running.stop().await;
}

/// A resync reads project 2 and is held before it stores what it read; meanwhile bob is removed
/// and the mirrored change is read and applied. The resync's older read must not undo it.
async fn a_resync_never_undoes_a_change_read_while_it_ran(backend: Backend) {
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
    let first = resync(&mut client, false, false).await;
    settle_all(&mut client, &first).await;
    let granted = |peers: &FakePeers| {
        peers.access.state.lock().unwrap()[&2]
            .1
            .iter()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(granted(&peers), vec!["alice".to_owned(), "bob".to_owned()]);

    let gate = source.hold_read(2);
    let mut resync_client = client.clone();
    let resyncing = tokio::spawn(async move { resync(&mut resync_client, false, false).await });
    gate.reached().await; // the resync has read bob as a member, and waits

    source.put(2, "Tomato", &["alice"], &["d1"]);
    let removal = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    wait_change(&mut client, removal, Duration::from_secs(30), |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert_eq!(granted(&peers), vec!["alice".to_owned()]);

    gate.release();
    let report = resyncing.await.unwrap();
    assert!(
        report.items.is_empty(),
        "the older read made no change: {report:#?}"
    );
    assert_eq!(
        granted(&peers),
        vec!["alice".to_owned()],
        "bob stays revoked"
    );
    assert_eq!(
        store.desired(2).await.unwrap().unwrap().shared_logins,
        vec!["alice".to_owned()]
    );
    running.stop().await;
}

/// A project created and staged while a resync runs (after its listing) is not one the resync
/// may remove: it was not known before the listing, and a change recorded it meanwhile.
async fn a_project_created_while_resync_runs_is_not_removed(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    for id in 2..=4 {
        source.put(id, &format!("P{id}"), &["alice"], &[&format!("d{id}")]);
    }
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();
    let first = resync(&mut client, false, false).await;
    settle_all(&mut client, &first).await;

    let gate = source.hold_listing();
    let mut resync_client = client.clone();
    let resyncing = tokio::spawn(async move { resync(&mut resync_client, false, false).await });
    gate.reached().await; // listed 2, 3 and 4; not yet compared

    source.put(9, "New", &["alice"], &["d9"]);
    let created = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 9 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    wait_change(&mut client, created, Duration::from_secs(30), |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;

    gate.release();
    let report = resyncing.await.unwrap();
    assert!(!report.removals_refused, "{report:#?}");
    assert!(
        report.items.iter().all(|i| i.project_id != 9),
        "{report:#?}"
    );
    assert!(peers.staging.state.lock().unwrap().contains_key(&9));
    assert!(peers.access.state.lock().unwrap().contains_key(&9));
    running.stop().await;
}

/// The resync lease is short and renewed while resync runs (a long resync keeps it), and given
/// back when the resync is cancelled (the next one need not wait for it to lapse).
async fn the_resync_lease_is_renewed_while_it_runs_and_freed_when_cancelled(backend: Backend) {
    let (store_a, db) = store(backend, Clock::system()).await;
    let store_b = smrtshare_coordinator::store::Store::open(&db.url, 8, Clock::system())
        .await
        .unwrap();
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    let peers = FakePeers::start().await;
    let a = Running::start(
        store_a,
        source.clone(),
        peers.peers(),
        settings("replica-a", Duration::ZERO),
    )
    .await;
    let b = Running::start(
        store_b,
        source.clone(),
        peers.peers(),
        settings("replica-b", Duration::ZERO),
    )
    .await;
    let lease = settings("x", Duration::ZERO).resync.lease.lease;

    let gate = source.hold_listing();
    let mut client_a = a.client();
    let held = tokio::spawn(async move { client_a.resync(pb::ResyncRequest::default()).await });
    gate.reached().await;
    tokio::time::sleep(lease + lease / 2).await;
    let busy = b
        .client()
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        busy.code(),
        tonic::Code::Aborted,
        "the lease was renewed: {busy:?}"
    );

    // The caller goes away: the resync is dropped and its lease given back at once.
    held.abort();
    let freed = tokio::time::Instant::now();
    crate::harness::eventually_async(lease / 2, "the lease to be given back", || {
        let mut client = b.client();
        async move {
            client
                .resync(pb::ResyncRequest {
                    dry_run: true,
                    force: false,
                })
                .await
                .is_ok()
        }
    })
    .await;
    assert!(freed.elapsed() < lease / 2, "{:?}", freed.elapsed());
    a.stop().await;
    b.stop().await;
}
