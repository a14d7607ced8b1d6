//! The task engine: coalescing, partial failure and retry, finality, no inherited backoff,
//! replicas sharing one database, lease expiry with fencing, a restart taking its claims back,
//! and what each kind of change sends to staging and access.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::engine::{Engine, TaskWake};
use smrtshare_coordinator::model::{ChangeReason, Target};
use smrtshare_coordinator::rules::{Backoff, RetryPolicy};
use tokio_util::sync::CancellationToken;

use crate::harness::{
    FakePeers, MemorySource, Running, eventually, settings, status, store, task_of, wait_change,
};
use smrtshare_testkit::both_backends;

const LONG: Duration = Duration::from_secs(30);

fn retry_scheduled(change: &pb::Change) -> bool {
    change.tasks.iter().any(|t| t.retry_scheduled)
}

both_backends!(
    burst_of_notifications_runs_at_most_two_executions_per_target,
    access_down_keeps_the_change_in_progress_until_it_is_back_or_given_up,
    two_replicas_never_run_one_task_twice,
    expired_lease_is_reclaimed_and_the_late_result_discarded,
    moved_renamed_and_deleted_projects_reach_both_targets,
    bad_requests_are_refused_with_the_field_named,
    a_removal_runs_at_once_whatever_an_earlier_task_backs_off,
    failures_no_retry_cures_end_the_task_until_something_changes,
    a_restarted_replica_takes_its_tasks_back_at_once,
    a_vanished_replicas_claims_are_taken_over_within_a_lease,
);

async fn burst_of_notifications_runs_at_most_two_executions_per_target(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(5, "Burst", &["alice"], &["d5"]);
    let peers = FakePeers::start().await;
    peers.staging.delay_ms.store(150, Ordering::SeqCst);
    peers.access.delay_ms.store(150, Ordering::SeqCst);
    let running = Running::start(
        store.clone(),
        source.clone(),
        peers.peers(),
        settings("solo", Duration::from_millis(300)),
    )
    .await;

    // 100 mirrored PUTs in a burst, through the HTTP intake like NGINX sends them.
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/SMRTLink/2.0.0/smrt-link/projects/5",
        running.intake
    );
    let sends = (0..100).map(|_| http.put(&url).body("{\"name\":\"ignored\"}").send());
    for answer in futures::future::join_all(sends).await {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 202);
    }
    let mut client = running.client();
    let mut changes = Vec::new();
    eventually(LONG, "the burst to be recorded", || true).await;
    for _ in 0..200 {
        changes = client
            .list_changes(pb::ListChangesRequest {
                project_id: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .changes;
        if !changes.is_empty() && changes.iter().all(|c| status(c) == pb::ChangeStatus::Ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !changes.is_empty() && changes.iter().all(|c| status(c) == pb::ChangeStatus::Ok),
        "{changes:#?}"
    );
    assert!(
        changes.len() <= 2,
        "100 events for one project merged into {} changes",
        changes.len()
    );
    for target in [Target::Staging, Target::Access] {
        let executions = store.attempts_of(5, target).await.unwrap();
        assert!(
            (1..=2).contains(&executions),
            "{target}: {executions} executions"
        );
    }
    assert!((1..=2).contains(&peers.staging.count(5)));
    assert!((1..=2).contains(&peers.access.count(5)));
    assert_eq!(peers.staging.overlaps.load(Ordering::SeqCst), 0);
    running.stop().await;
}

async fn access_down_keeps_the_change_in_progress_until_it_is_back_or_given_up(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice", "bob"], &["d1"]);
    let peers = FakePeers::start().await;
    peers.access.down.store(true, Ordering::SeqCst);
    let mut s = settings("solo", Duration::ZERO);
    s.engine.retry.backoff = Backoff::new(
        std::time::Duration::from_millis(400),
        std::time::Duration::from_millis(400),
    );
    let running = Running::start(store, source.clone(), peers.peers(), s).await;
    let mut client = running.client();

    // While a retry is scheduled the change is IN_PROGRESS, its access task READY.
    let change_id = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, change_id, LONG, retry_scheduled).await;
    assert_eq!(status(&change), pb::ChangeStatus::InProgress);
    let staging = task_of(&change, pb::Target::Staging);
    let access = task_of(&change, pb::Target::Access);
    assert_eq!(staging.state, pb::TaskState::Ok as i32, "{staging:#?}");
    assert_eq!(access.state, pb::TaskState::Ready as i32, "{access:#?}");
    assert!(access.next_run_at.is_some(), "{access:#?}");
    assert!(
        access.last_message.contains("Unavailable")
            && access.last_message.contains("fake peer is down"),
        "{}",
        access.last_message
    );
    assert!(change.message.contains("Tomato"));

    peers.access.down.store(false, Ordering::SeqCst);
    let change = wait_change(&mut client, change_id, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    let access = task_of(&change, pb::Target::Access);
    assert_eq!(access.state, pb::TaskState::Ok as i32);
    assert!(access.attempts >= 2);
    let state = peers.access.state.lock().unwrap().get(&2).cloned().unwrap();
    assert_eq!(state.0, "/Project 2: Tomato/");
    assert_eq!(
        state.1.into_iter().collect::<Vec<_>>(),
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    running.stop().await;

    // With the retries spent, the task is FAILED for good and the change PARTIAL: final.
    let (store, _db) = crate::harness::store(backend, Clock::system()).await;
    peers.access.down.store(true, Ordering::SeqCst);
    let mut s = settings("solo", Duration::ZERO);
    s.engine.retry.max_attempts = 2;
    let running = Running::start(store, source, peers.peers(), s).await;
    let mut client = running.client();
    let change_id = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, change_id, LONG, |c| {
        status(c) == pb::ChangeStatus::Partial
    })
    .await;
    let access = task_of(&change, pb::Target::Access);
    assert_eq!(
        (access.state, access.attempts, access.retry_scheduled),
        (pb::TaskState::Failed as i32, 2, false)
    );
    assert!(
        access.last_message.contains("gave up after 2 attempts"),
        "{}",
        access.last_message
    );
    peers.access.down.store(false, Ordering::SeqCst);
    running.stop().await;
}

async fn two_replicas_never_run_one_task_twice(backend: Backend) {
    let (store_a, db) = store(backend, Clock::system()).await;
    let store_b = smrtshare_coordinator::store::Store::open(&db.url, 8, Clock::system())
        .await
        .unwrap();
    let source = Arc::new(MemorySource::default());
    for id in 2..32 {
        source.put(id, &format!("P{id}"), &["alice"], &[&format!("d{id}")]);
    }
    let peers = FakePeers::start().await;
    peers.staging.delay_ms.store(20, Ordering::SeqCst);
    peers.access.delay_ms.store(20, Ordering::SeqCst);
    let a = Running::start(
        store_a.clone(),
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
    let (mut ca, mut cb) = (a.client(), b.client());

    let mut ids = Vec::new();
    for round in 0..3 {
        for id in 2..32i64 {
            let client = if (id + round) % 2 == 0 {
                &mut ca
            } else {
                &mut cb
            };
            ids.push(
                client
                    .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: id })
                    .await
                    .unwrap()
                    .into_inner()
                    .change_id,
            );
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for id in ids {
        wait_change(&mut ca, id, Duration::from_secs(60), |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
    assert_eq!(
        peers.staging.overlaps.load(Ordering::SeqCst),
        0,
        "two executions of one project ran at once"
    );
    assert_eq!(peers.access.overlaps.load(Ordering::SeqCst), 0);
    for id in 2..32 {
        for (target, calls) in [
            (Target::Staging, &peers.staging),
            (Target::Access, &peers.access),
        ] {
            let attempts = store_a.attempts_of(id, target).await.unwrap();
            assert_eq!(
                calls.count(id) as i64,
                attempts,
                "project {id} {target}: every claim ran exactly once"
            );
            assert!(
                (1..=3).contains(&attempts),
                "project {id} {target}: {attempts}"
            );
        }
    }
    a.stop().await;
    b.stop().await;
}

async fn expired_lease_is_reclaimed_and_the_late_result_discarded(backend: Backend) {
    let clock = Clock::manual();
    let (store, _db) = store(backend, clock.clone()).await;
    let peers = FakePeers::start().await;
    let truth = smrtshare_coordinator::model::ProjectTruth {
        id: 9,
        name: "Leased".into(),
        updated_at: String::new(),
        members: vec![],
        datasets: vec![],
    };
    let stamp = store.next_stamp().await.unwrap();
    store
        .store_project_truth(&truth, "Project 9: Leased", stamp)
        .await
        .unwrap();
    let change_id = store
        .record_read_change(9, ChangeReason::Manual, &[Target::Staging], "test")
        .await
        .unwrap();

    let config = settings("x", Duration::ZERO).engine;
    let lease = config.lease;
    let b = Engine::new(
        store.clone(),
        peers.peers(),
        config.clone(),
        "worker-b".into(),
        TaskWake::new(),
    );
    let never = CancellationToken::new();

    // Worker a claims the task, then stalls and stops renewing (its process hangs).
    let claim_a = store
        .claim_task(Target::Staging, "worker-a", lease.lease_ms())
        .await
        .unwrap()
        .expect("a claims the task");
    assert!(
        b.run_once(Target::Staging, &never).await.unwrap().is_none(),
        "a held lease is not claimable"
    );
    clock.advance(lease.lease + Duration::from_secs(1));
    let run_b = b
        .run_once(Target::Staging, &never)
        .await
        .unwrap()
        .expect("b takes the expired task back and runs it");
    assert_eq!(run_b.claim.task_id, claim_a.task_id);
    assert_eq!(run_b.claim.attempts, claim_a.attempts + 1);
    assert!(run_b.recorded);
    // a wakes up and reports: its late result is discarded by fencing.
    let late = smrtshare_coordinator::rules::TaskResult::Ok {
        operation: smrtshare_coordinator::model::Operation::Apply,
        message: "late".into(),
        report: None,
    };
    assert!(
        !store
            .finish_task(&claim_a, &late, "", &config.retry)
            .await
            .unwrap(),
        "the stale worker's result must be discarded"
    );
    assert!(
        !store
            .renew_task(&claim_a, "worker-a", lease.lease_ms())
            .await
            .unwrap(),
        "nor may it renew"
    );

    let tasks = store.tasks_of_change(change_id).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].attempts, 2);
    assert_eq!(tasks[0].state, smrtshare_coordinator::model::TaskState::Ok);
    assert_eq!(
        store.get_change(change_id).await.unwrap().unwrap().status,
        smrtshare_coordinator::model::ChangeStatus::Ok
    );
}

async fn moved_renamed_and_deleted_projects_reach_both_targets(backend: Backend) {
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
    let ok = |c: &pb::Change| status(c) == pb::ChangeStatus::Ok;

    for id in [2, 3] {
        let change = client
            .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: id })
            .await
            .unwrap()
            .into_inner()
            .change_id;
        wait_change(&mut client, change, LONG, ok).await;
    }
    let staged = |id: i64| {
        peers
            .staging
            .state
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap()
    };
    assert_eq!(staged(2).1.len(), 2);

    // d2 moves from project 2 to project 3; only project 3's PUT is mirrored.
    source.put(2, "Tomato", &["alice"], &["d1"]);
    source.put(3, "Rice", &["bob"], &["d3", "d2"]);
    let moved = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 3 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, moved, LONG, ok).await;
    assert_eq!(
        change.effects.len(),
        1,
        "project 2 lost a dataset: an effect change: {change:#?}"
    );
    let effect = wait_change(&mut client, change.effects[0], LONG, ok).await;
    assert_eq!(effect.project_id, 2);
    assert_eq!(effect.reason, pb::ChangeReason::Effect as i32);
    assert_eq!(effect.caused_by, moved);
    assert_eq!(
        staged(3).1.iter().cloned().collect::<Vec<_>>(),
        vec!["d2".to_owned(), "d3".to_owned()]
    );
    assert_eq!(
        staged(2).1.iter().cloned().collect::<Vec<_>>(),
        vec!["d1".to_owned()]
    );

    // Project 2 renamed: a new directory and a new Globus path.
    source.put(2, "Tomato (2024)", &["alice"], &["d1"]);
    let renamed = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    wait_change(&mut client, renamed, LONG, ok).await;
    assert_eq!(staged(2).0, "Project 2: Tomato (2024)");
    assert_eq!(
        peers.access.state.lock().unwrap().get(&2).unwrap().0,
        "/Project 2: Tomato (2024)/"
    );

    // Project 3 deleted at SMRT Link: removed from both.
    source.remove(3);
    let deleted = client
        .notify_project_deleted(pb::NotifyProjectDeletedRequest { project_id: 3 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, deleted, LONG, ok).await;
    for t in &change.tasks {
        assert_eq!(t.operation, pb::Operation::Remove as i32, "{t:#?}");
    }
    assert!(peers.staging.state.lock().unwrap().get(&3).is_none());
    assert!(peers.access.state.lock().unwrap().get(&3).is_none());
    let project = client
        .get_project(pb::GetProjectRequest { project_id: 3 })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert!(project.deleted);
    assert_eq!(project.targets.len(), 2);

    // A deletion SMRT Link refused: the read finds the project and applies it instead.
    let refused = client
        .notify_project_deleted(pb::NotifyProjectDeletedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, refused, LONG, ok).await;
    assert!(
        change
            .tasks
            .iter()
            .all(|t| t.operation == pb::Operation::Apply as i32),
        "{change:#?}"
    );

    // The listing, which reads the tasks and effects of a whole page at once, tells each change
    // as GetChange does (but for the services' reports, which only GetChange carries).
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_changes(pb::ListChangesRequest {
                page_size: 3,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.changes);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(listed.iter().any(|c| !c.effects.is_empty()), "{listed:#?}");
    assert!(listed.iter().all(|c| !c.tasks.is_empty()), "{listed:#?}");
    for change in &listed {
        let mut got = client
            .get_change(pb::GetChangeRequest {
                change_id: change.change_id,
            })
            .await
            .unwrap()
            .into_inner()
            .change
            .unwrap();
        for task in &mut got.tasks {
            task.report = None;
        }
        assert_eq!(change, &got);
    }
    running.stop().await;
}

async fn bad_requests_are_refused_with_the_field_named(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        Arc::new(MemorySource::default()),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();
    let err = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().starts_with("project_id:"),
        "{}",
        err.message()
    );
    let err = client
        .notify_project_deleted(pb::NotifyProjectDeletedRequest { project_id: -4 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .get_change(pb::GetChangeRequest { change_id: 0 })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().starts_with("change_id:"));
    let err = client
        .get_change(pb::GetChangeRequest { change_id: 4242 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .list_changes(pb::ListChangesRequest {
            page_size: 501,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().starts_with("page_size:"));
    let err = client
        .list_changes(pb::ListChangesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().starts_with("page_token:"));
    let err = client
        .list_changes(pb::ListChangesRequest {
            status: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().starts_with("status:"));
    let err = client
        .get_project(pb::GetProjectRequest { project_id: 77 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    running.stop().await;
}

/// The first promise: a removed member loses access within seconds of the edit, even when the
/// project's access task is waiting out a long backoff (a hopeless retry) and another member has
/// no Globus identity.
async fn a_removal_runs_at_once_whatever_an_earlier_task_backs_off(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice", "bob", "nobody"], &["d1"]);
    let peers = FakePeers::start().await;
    peers
        .access
        .hopeless
        .lock()
        .unwrap()
        .insert("nobody".into());
    let mut s = settings("solo", Duration::ZERO);
    // An hour between retries: only a task that does not inherit it is done in seconds.
    s.engine.retry = RetryPolicy {
        backoff: Backoff::new(
            std::time::Duration::from_millis(3_600_000),
            std::time::Duration::from_millis(3_600_000),
        ),
        max_attempts: 5,
    };
    let running = Running::start(store, source.clone(), peers.peers(), s).await;
    let mut client = running.client();
    // alice and bob are granted (nobody cannot be: final, PARTIAL).
    let shared = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    wait_change(&mut client, shared, LONG, |c| {
        status(c) == pb::ChangeStatus::Partial
    })
    .await;
    // Then access goes down during another change: its task waits an hour for a retry.
    peers.access.down.store(true, Ordering::SeqCst);
    source.put(2, "Tomato (2)", &["alice", "bob", "nobody"], &["d1"]);
    let first = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    wait_change(&mut client, first, LONG, retry_scheduled).await;

    // Access is back; bob is removed at SMRT Link and the edit mirrored.
    peers.access.down.store(false, Ordering::SeqCst);
    source.put(2, "Tomato (2)", &["alice", "nobody"], &["d1"]);
    let edited = tokio::time::Instant::now();
    let removal = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    let change = wait_change(&mut client, removal, Duration::from_secs(5), |c| {
        status(c) != pb::ChangeStatus::InProgress
    })
    .await;
    let took = edited.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "bob kept access for {took:?}"
    );
    let granted = peers
        .access
        .state
        .lock()
        .unwrap()
        .get(&2)
        .cloned()
        .unwrap()
        .1;
    assert_eq!(
        granted.into_iter().collect::<Vec<_>>(),
        vec!["alice".to_owned()]
    );
    // nobody has no identity: the change is PARTIAL, final, and says why.
    assert_eq!(status(&change), pb::ChangeStatus::Partial, "{change:#?}");
    let access = task_of(&change, pb::Target::Access);
    assert_eq!(
        (access.state, access.attempts),
        (pb::TaskState::Failed as i32, 1)
    );
    assert!(
        access
            .last_message
            .contains("nobody: unknown Globus identity"),
        "{}",
        access.last_message
    );
    // The revocation's latency is measured.
    let metrics = running.metrics.encode();
    assert!(
        metrics.contains("smrtshare_coordinator_revocation_latency_seconds_count 1"),
        "{metrics}"
    );
    running.stop().await;
}

/// A failure no retry cures (a member with no Globus identity, a broken dataset XML) ends the
/// task with its report: the change is final, WatchChange ends, and resync leaves the project
/// alone until SMRT Link or the services change.
async fn failures_no_retry_cures_end_the_task_until_something_changes(backend: Backend) {
    use futures::StreamExt as _;
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice", "nobody"], &["d1", "broken"]);
    let peers = FakePeers::start().await;
    peers
        .access
        .hopeless
        .lock()
        .unwrap()
        .insert("nobody".into());
    peers
        .staging
        .hopeless
        .lock()
        .unwrap()
        .insert("broken".into());
    let running = Running::start(
        store.clone(),
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();
    let change_id = client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap()
        .into_inner()
        .change_id;
    // WatchChange ends by itself once the change is final.
    let mut stream = client
        .watch_change(pb::WatchChangeRequest { change_id })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(message) = tokio::time::timeout(LONG, stream.next())
        .await
        .expect("the watch ends")
    {
        last = message.unwrap().change;
    }
    let change = last.unwrap();
    assert_eq!(status(&change), pb::ChangeStatus::Failed, "{change:#?}");
    for target in [pb::Target::Staging, pb::Target::Access] {
        let task = task_of(&change, target);
        assert_eq!(
            (task.state, task.attempts),
            (pb::TaskState::Failed as i32, 1),
            "{task:#?}"
        );
        assert!(
            task.last_message.contains("not retried"),
            "{}",
            task.last_message
        );
        assert!(task.report.is_some(), "the service's report is kept");
    }

    // Nothing changed: resync finds the project in step and makes no change.
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        report.items.is_empty() && report.in_sync == 1,
        "{report:#?}"
    );
    let calls = (peers.staging.count(2), peers.access.count(2));

    // The broken dataset is replaced at SMRT Link: the project changed for staging, so resync
    // tries staging again; for access nothing changed, and nobody is still left alone.
    source.put(2, "Tomato", &["alice", "nobody"], &["d1", "repaired"]);
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.items.len(), 1, "{report:#?}");
    assert_eq!(report.items[0].target, pb::Target::Staging as i32);
    let change = wait_change(&mut client, report.items[0].change_id, LONG, |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert_eq!(change.reason, pb::ChangeReason::Resync as i32);
    assert_eq!(
        (peers.staging.count(2), peers.access.count(2)),
        (calls.0 + 1, calls.1)
    );
    assert!(
        peers.staging.state.lock().unwrap()[&2]
            .1
            .contains("repaired")
    );
    running.stop().await;
}

/// A coordinator killed while holding a task and restarted under the same replica name takes
/// the task back at once, not after its lease lapses.
async fn a_restarted_replica_takes_its_tasks_back_at_once(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    let stamp = store.next_stamp().await.unwrap();
    let truth = source.projects.lock().unwrap().get(&2).cloned().unwrap();
    store
        .store_project_truth(&truth, "Project 2: Tomato", stamp)
        .await
        .unwrap();
    let change_id = store
        .record_read_change(2, ChangeReason::Manual, &Target::ALL, "before the crash")
        .await
        .unwrap();
    // The previous process of replica "r1" claimed both tasks, with a long lease, and died.
    let lease = Duration::from_secs(600);
    for target in Target::ALL {
        store
            .claim_task(target, "r1", lease.as_millis() as i64)
            .await
            .unwrap()
            .unwrap();
    }
    let peers = FakePeers::start().await;
    let mut s = settings("r1", Duration::ZERO);
    s.engine.lease = smrtshare_coordinator::lease::LeaseTimes::new(lease);
    let started = tokio::time::Instant::now();
    let running = Running::start(store, source, peers.peers(), s).await;
    let mut client = running.client();
    let change = wait_change(&mut client, change_id, Duration::from_secs(10), |c| {
        status(c) == pb::ChangeStatus::Ok
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        task_of(&change, pb::Target::Staging).attempts,
        2,
        "the interrupted attempt counts"
    );
    running.stop().await;
}

/// A replica that vanished holding a task, a read and the resync lease: a live replica takes
/// them over once the (short) lease lapses.
async fn a_vanished_replicas_claims_are_taken_over_within_a_lease(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    source.put(3, "Rice", &["bob"], &["d3"]);
    let stamp = store.next_stamp().await.unwrap();
    let truth = source.projects.lock().unwrap().get(&2).cloned().unwrap();
    store
        .store_project_truth(&truth, "Project 2: Tomato", stamp)
        .await
        .unwrap();
    let task_change = store
        .record_read_change(
            2,
            ChangeReason::Manual,
            &[Target::Access],
            "claimed by the dead",
        )
        .await
        .unwrap();
    let (read_change, _) = store
        .record_change(&smrtshare_coordinator::store::NewChange {
            project_id: 3,
            reason: ChangeReason::Manual,
            kind: smrtshare_coordinator::model::ChangeKind::ProjectChanged,
            request: String::new(),
            caused_by: 0,
            settle_until: store.now(),
            max_settle_ms: 0,
        })
        .await
        .unwrap();
    let s = settings("alive", Duration::ZERO);
    let lease = s.engine.lease.lease_ms();
    store
        .claim_task(Target::Access, "dead", lease)
        .await
        .unwrap()
        .unwrap();
    store.claim_read("dead", lease).await.unwrap().unwrap();
    assert!(
        store
            .try_lease("resync", "dead", lease)
            .await
            .unwrap()
            .is_some()
    );

    let peers = FakePeers::start().await;
    let started = tokio::time::Instant::now();
    let running = Running::start(store, source, peers.peers(), s).await;
    let mut client = running.client();
    let within = Duration::from_millis(lease as u64) + Duration::from_secs(5);
    for change_id in [task_change, read_change] {
        wait_change(&mut client, change_id, within, |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
    crate::harness::eventually_async(within, "the resync lease to lapse", || {
        let mut client = client.clone();
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
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    running.stop().await;
}
