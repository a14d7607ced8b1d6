//! The store on its own: what is written when SMRT Link's truth is stored again (only the
//! differences, with the same result as writing it all), datasets taken from other projects,
//! the filters of the change listing, and the rules it applies in its transactions (stamped
//! truths, settle merges, no inherited backoff, leases).

use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::model::{
    ChangeKind, ChangeReason, ChangeStatus, DatasetTruth, MemberTruth, ProjectTruth,
};
use smrtshare_coordinator::store::{ChangeFilter, NewChange};

use crate::harness::store;
use smrtshare_testkit::both_backends;

both_backends!(
    storing_truth_again_writes_exactly_the_new_state,
    listing_changes_applies_each_filter,
    an_older_read_never_replaces_a_newer_truth,
    a_merged_change_pushes_its_settle_within_the_bound,
    a_new_change_never_inherits_a_retry_backoff,
    claims_of_a_vanished_replica_lapse_and_a_restart_takes_them_back_at_once,
);

fn filter(project_id: i64, status: Option<ChangeStatus>, before: i64, limit: i64) -> ChangeFilter {
    ChangeFilter {
        project_id,
        status,
        before,
        limit,
    }
}

fn member(login: &str, role: &str) -> MemberTruth {
    MemberTruth {
        login: login.into(),
        role: role.into(),
    }
}

fn dataset(uuid: &str, name: &str, parent: Option<&str>) -> DatasetTruth {
    DatasetTruth {
        uuid: uuid.into(),
        name: name.into(),
        path: format!("/data/{uuid}.xml"),
        parent_uuid: parent.map(str::to_owned),
        num_children: 0,
    }
}

fn truth(id: i64, members: Vec<MemberTruth>, datasets: Vec<DatasetTruth>) -> ProjectTruth {
    ProjectTruth {
        id,
        name: format!("Project {id}"),
        updated_at: "2026-11-24T00:00:00Z".into(),
        members,
        datasets,
    }
}

async fn storing_truth_again_writes_exactly_the_new_state(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let first = truth(
        2,
        vec![
            member("ann", "OWNER"),
            member("bob", "CAN_VIEW"),
            member("cy", "CAN_EDIT"),
        ],
        vec![
            dataset("u1", "one", None),
            dataset("u2", "two", Some("u1")),
            dataset("u3", "three", None),
        ],
    );
    assert!(store.store_project_truth(&first, "dir-2", 1).await.unwrap());

    // A role changed, a member left, one joined; a dataset renamed, one gone, one new; and the
    // same login listed twice (the last entry wins).
    let second = truth(
        2,
        vec![
            member("ann", "OWNER"),
            member("bob", "CAN_EDIT"),
            member("dee", "CAN_VIEW"),
            member("dee", "CAN_EDIT"),
        ],
        vec![
            dataset("u1", "one", None),
            dataset("u2", "two renamed", Some("u1")),
            dataset("u4", "four", None),
        ],
    );
    assert!(
        store
            .store_project_truth(&second, "dir-2b", 2)
            .await
            .unwrap()
    );
    let desired = store.desired(2).await.unwrap().expect("project 2 is known");
    assert_eq!(desired.directory, "dir-2b");
    let mut uuids: Vec<(String, String)> = desired
        .datasets
        .iter()
        .map(|d| (d.uuid.clone(), d.name.clone()))
        .collect();
    uuids.sort();
    assert_eq!(
        uuids,
        vec![
            ("u1".into(), "one".into()),
            ("u2".into(), "two renamed".into()),
            ("u4".into(), "four".into())
        ]
    );
    let mut shared = desired.shared_logins.clone();
    shared.sort();
    assert_eq!(shared, vec!["bob".to_owned(), "dee".to_owned()]);
    let project = store.get_project(2).await.unwrap().unwrap();
    let roles: Vec<(String, String)> = project
        .members
        .iter()
        .map(|m| (m.login.clone(), m.role.clone()))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("ann".into(), "OWNER".into()),
            ("bob".into(), "CAN_EDIT".into()),
            ("dee".into(), "CAN_EDIT".into())
        ]
    );

    // Project 3 now lists u1 and u4, in a later read: they leave project 2.
    let third = truth(
        3,
        vec![member("eve", "CAN_VIEW")],
        vec![dataset("u1", "one", None), dataset("u4", "four", None)],
    );
    assert!(store.store_project_truth(&third, "dir-3", 3).await.unwrap());
    let two = store.desired(2).await.unwrap().unwrap();
    assert_eq!(
        two.datasets
            .iter()
            .map(|d| d.uuid.as_str())
            .collect::<Vec<_>>(),
        vec!["u2"]
    );
    let three = store.desired(3).await.unwrap().unwrap();
    assert_eq!(three.datasets.len(), 2);

    // Many datasets at once (more than one statement's worth of rows), then none.
    let many: Vec<DatasetTruth> = (0..450)
        .map(|i| dataset(&format!("m{i:03}"), "many", None))
        .collect();
    let big = truth(4, vec![], many.clone());
    assert!(store.store_project_truth(&big, "dir-4", 4).await.unwrap());
    assert_eq!(store.desired(4).await.unwrap().unwrap().datasets.len(), 450);
    let taker = truth(5, vec![], many);
    assert!(store.store_project_truth(&taker, "dir-5", 5).await.unwrap());
    assert!(store.desired(4).await.unwrap().unwrap().datasets.is_empty());
    assert_eq!(store.desired(5).await.unwrap().unwrap().datasets.len(), 450);
    let emptied = truth(5, vec![], vec![]);
    assert!(
        store
            .store_project_truth(&emptied, "dir-5", 6)
            .await
            .unwrap()
    );
    assert!(store.desired(5).await.unwrap().unwrap().datasets.is_empty());
}

async fn listing_changes_applies_each_filter(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let mut ids = Vec::new();
    for project_id in [2, 3, 2, 4] {
        let (id, merged) = store
            .record_change(&NewChange {
                project_id,
                reason: ChangeReason::Mirror,
                kind: ChangeKind::ProjectChanged,
                request: String::new(),
                caused_by: 0,
                settle_until: i64::MAX,
                max_settle_ms: 0,
            })
            .await
            .unwrap();
        if !merged {
            ids.push(id);
        }
    }
    // The second change of project 2 merged into its settling one.
    assert_eq!(ids.len(), 3);
    let read = store
        .record_read_change(6, ChangeReason::Resync, &[], "read by a resync")
        .await
        .unwrap();
    let all = store.list_changes(filter(0, None, 0, 100)).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![read, ids[2], ids[1], ids[0]]
    );
    let of_two = store.list_changes(filter(2, None, 0, 100)).await.unwrap();
    assert_eq!(
        of_two.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let in_progress = store
        .list_changes(filter(0, Some(ChangeStatus::InProgress), 0, 100))
        .await
        .unwrap();
    assert_eq!(in_progress.len(), 3);
    let ok = store
        .list_changes(filter(0, Some(ChangeStatus::Ok), 0, 100))
        .await
        .unwrap();
    assert_eq!(
        ok.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![read]
    );
    let page = store
        .list_changes(filter(0, None, ids[2], 1))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let combined = store
        .list_changes(filter(3, Some(ChangeStatus::InProgress), ids[2], 10))
        .await
        .unwrap();
    assert_eq!(
        combined.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert!(
        store
            .list_changes(filter(3, Some(ChangeStatus::Ok), 0, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Stamps are taken as reads start; a truth stored from a later read is never replaced by an
/// earlier one (a project, its deletion, and the datasets it holds).
async fn an_older_read_never_replaces_a_newer_truth(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let (early, late) = (
        store.next_stamp().await.unwrap(),
        store.next_stamp().await.unwrap(),
    );
    assert!(late > early, "stamps increase");
    let with_bob = truth(
        2,
        vec![member("ann", "CAN_VIEW"), member("bob", "CAN_VIEW")],
        vec![],
    );
    let without_bob = truth(2, vec![member("ann", "CAN_VIEW")], vec![]);
    // The later read (bob removed) is stored first; the earlier one comes last and is dropped.
    assert!(
        store
            .store_project_truth(&without_bob, "dir-2", late)
            .await
            .unwrap()
    );
    assert!(
        !store
            .store_project_truth(&with_bob, "dir-2", early)
            .await
            .unwrap()
    );
    assert_eq!(
        store.desired(2).await.unwrap().unwrap().shared_logins,
        vec!["ann".to_owned()]
    );
    // Nor does an earlier read that found the project gone delete it.
    assert!(!store.mark_project_deleted(2, early).await.unwrap());
    assert!(!store.desired(2).await.unwrap().unwrap().deleted);
    let later = store.next_stamp().await.unwrap();
    assert!(store.mark_project_deleted(2, later).await.unwrap());
    assert!(store.desired(2).await.unwrap().unwrap().deleted);
    // And once gone, an earlier read of it alive does not bring it back.
    assert!(
        !store
            .store_project_truth(&with_bob, "dir-2", late)
            .await
            .unwrap()
    );
    assert!(store.desired(2).await.unwrap().unwrap().deleted);

    // A dataset belongs to the project whose read of it is the most recent: project 4's read
    // (later) took d1 from project 3; project 3's earlier read listing it again leaves it there.
    let (s3, s4) = (
        store.next_stamp().await.unwrap(),
        store.next_stamp().await.unwrap(),
    );
    let three = truth(
        3,
        vec![],
        vec![dataset("d1", "one", None), dataset("d3", "three", None)],
    );
    let four = truth(4, vec![], vec![dataset("d1", "one", None)]);
    assert!(store.store_project_truth(&four, "dir-4", s4).await.unwrap());
    assert!(
        store
            .store_project_truth(&three, "dir-3", s3)
            .await
            .unwrap()
    );
    let uuids = |id: i64| {
        let store = store.clone();
        async move {
            let d = store.desired(id).await.unwrap().unwrap();
            d.datasets.into_iter().map(|d| d.uuid).collect::<Vec<_>>()
        }
    };
    assert_eq!(uuids(3).await, vec!["d3".to_owned()]);
    assert_eq!(uuids(4).await, vec!["d1".to_owned()]);
}

/// A change merged into one that settles pushes its settle time by the new request's settle
/// delay (SMRT Link may not have finished that request either), within the bound.
async fn a_merged_change_pushes_its_settle_within_the_bound(backend: Backend) {
    let clock = Clock::manual();
    let (store, _db) = store(backend, clock.clone()).await;
    let settle = 2_000;
    let mirrored = |clock: &Clock| NewChange {
        project_id: 2,
        reason: ChangeReason::Mirror,
        kind: ChangeKind::ProjectChanged,
        request: "PUT /smrt-link/projects/2".into(),
        caused_by: 0,
        settle_until: clock.now_millis() + settle,
        max_settle_ms: 5_000,
    };
    let start = clock.now_millis();
    let (first, merged) = store.record_change(&mirrored(&clock)).await.unwrap();
    assert!(!merged);
    // 1.9 s into the settle, another request: the change is not read 0.1 s later.
    clock.advance(std::time::Duration::from_millis(1_900));
    assert_eq!(
        store.record_change(&mirrored(&clock)).await.unwrap(),
        (first, true)
    );
    clock.advance(std::time::Duration::from_millis(200));
    assert_eq!(
        store.claim_read("reader", 10_000).await.unwrap(),
        None,
        "still settling"
    );
    assert_eq!(store.next_settle().await.unwrap(), Some(start + 3_900));
    // A stream of edits cannot push it past the bound (5 s after it was first recorded).
    for _ in 0..6 {
        clock.advance(std::time::Duration::from_millis(900));
        store.record_change(&mirrored(&clock)).await.unwrap();
    }
    assert_eq!(store.next_settle().await.unwrap(), Some(start + 5_000));
    clock.advance(std::time::Duration::from_millis(5_000));
    let claim = store
        .claim_read("reader", 10_000)
        .await
        .unwrap()
        .expect("settled");
    assert_eq!(claim.change_id, first);
}

/// A task waiting out a retry's backoff is superseded by a new change's task, which is due at
/// once with attempts of its own; a task that never ran is joined.
async fn a_new_change_never_inherits_a_retry_backoff(backend: Backend) {
    use smrtshare_coordinator::model::{Operation, Target, TaskState};
    use smrtshare_coordinator::rules::{Backoff, RetryPolicy, TaskResult};
    let clock = Clock::manual();
    let (store, _db) = store(backend, clock.clone()).await;
    let stamp = store.next_stamp().await.unwrap();
    store
        .store_project_truth(
            &truth(2, vec![member("ann", "CAN_VIEW")], vec![]),
            "dir-2",
            stamp,
        )
        .await
        .unwrap();
    let first = store
        .record_read_change(2, ChangeReason::Manual, &[Target::Access], "first")
        .await
        .unwrap();
    let joined = store
        .record_read_change(
            2,
            ChangeReason::Manual,
            &[Target::Access],
            "joins the task that never ran",
        )
        .await
        .unwrap();
    let (a, b) = (
        store.tasks_of_change(first).await.unwrap(),
        store.tasks_of_change(joined).await.unwrap(),
    );
    assert_eq!(
        a[0].task_id, b[0].task_id,
        "a task that never ran is joined"
    );

    // The task fails; its retry is an hour away.
    let hour = RetryPolicy {
        backoff: Backoff::new(
            std::time::Duration::from_millis(3_600_000),
            std::time::Duration::from_millis(3_600_000),
        ),
        max_attempts: 5,
    };
    let claim = store
        .claim_task(Target::Access, "w", 10_000)
        .await
        .unwrap()
        .unwrap();
    let down = TaskResult::Retry {
        operation: Operation::Apply,
        message: "access is down".into(),
        report: None,
    };
    assert!(store.finish_task(&claim, &down, "h", &hour).await.unwrap());
    let waiting = store.tasks_of_change(first).await.unwrap();
    assert_eq!(
        (waiting[0].state, waiting[0].attempts),
        (TaskState::Ready, 1)
    );
    assert!(
        store
            .claim_task(Target::Access, "w", 10_000)
            .await
            .unwrap()
            .is_none(),
        "backing off"
    );

    // A member is removed: the new change's task runs now, not in an hour.
    let removal = store
        .record_read_change(2, ChangeReason::Mirror, &[Target::Access], "bob removed")
        .await
        .unwrap();
    let next = store
        .claim_task(Target::Access, "w", 10_000)
        .await
        .unwrap()
        .expect("due at once");
    assert_eq!(next.attempts, 1, "attempts of its own");
    assert_ne!(next.task_id, claim.task_id);
    assert_eq!(next.change_id, removal);
    let old = store.tasks_of_change(first).await.unwrap();
    let superseded = old.iter().find(|t| t.task_id == claim.task_id).unwrap();
    assert_eq!(
        (superseded.state, superseded.superseded_by),
        (TaskState::Superseded, next.task_id)
    );
    assert!(
        old.iter().any(|t| t.task_id == next.task_id),
        "the first change follows the new task"
    );
}

/// A replica that vanished holding claims (a task, a read, the resync lease) loses them when
/// its lease lapses; a replica restarting under the same name takes them back at once.
async fn claims_of_a_vanished_replica_lapse_and_a_restart_takes_them_back_at_once(
    backend: Backend,
) {
    use smrtshare_coordinator::model::Target;
    use smrtshare_coordinator::rules::{Backoff, RetryPolicy};
    use smrtshare_coordinator::store::ReplicaRow;
    let clock = Clock::manual();
    let (store, _db) = store(backend, clock.clone()).await;
    let policy = RetryPolicy {
        backoff: Backoff::new(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(10),
        ),
        max_attempts: 5,
    };
    let lease = 3_000;
    let claim_all = |owner: &'static str, project: i64| {
        let store = store.clone();
        async move {
            let stamp = store.next_stamp().await.unwrap();
            store
                .store_project_truth(&truth(project, vec![], vec![]), "dir", stamp)
                .await
                .unwrap();
            store
                .record_read_change(project, ChangeReason::Manual, &[Target::Staging], "t")
                .await
                .unwrap();
            store
                .record_change(&NewChange {
                    project_id: project + 1,
                    reason: ChangeReason::Manual,
                    kind: ChangeKind::ProjectChanged,
                    request: String::new(),
                    caused_by: 0,
                    settle_until: store.now(),
                    max_settle_ms: 0,
                })
                .await
                .unwrap();
            let task = store
                .claim_task(Target::Staging, owner, lease)
                .await
                .unwrap()
                .expect("task");
            let read = store.claim_read(owner, lease).await.unwrap().expect("read");
            assert!(
                store
                    .try_lease("resync", owner, lease)
                    .await
                    .unwrap()
                    .is_some()
            );
            (task, read)
        }
    };

    // A vanished replica: nothing is taken while its leases hold, everything once they lapse.
    let (task, read) = claim_all("dead", 2).await;
    assert!(store.reap_expired(&policy).await.unwrap().is_empty());
    assert!(store.claim_read("alive", lease).await.unwrap().is_none());
    assert!(
        store
            .try_lease("resync", "alive", lease)
            .await
            .unwrap()
            .is_none()
    );
    clock.advance(std::time::Duration::from_millis(3_001));
    assert_eq!(store.reap_expired(&policy).await.unwrap().len(), 1);
    let again = store
        .claim_task(Target::Staging, "alive", lease)
        .await
        .unwrap()
        .expect("task taken over");
    assert_eq!(
        (again.task_id, again.attempts),
        (task.task_id, task.attempts + 1)
    );
    let reread = store
        .claim_read("alive", lease)
        .await
        .unwrap()
        .expect("read taken over");
    assert_eq!(reread.change_id, read.change_id);
    let version = store
        .try_lease("resync", "alive", lease)
        .await
        .unwrap()
        .expect("lease taken over");
    assert!(
        store
            .release_lease("resync", "alive", version)
            .await
            .unwrap()
    );

    // A restart under the same name: taken back at once, no lapse needed.
    let (task, read) = claim_all("r1", 4).await;
    let me = ReplicaRow {
        name: "r1".into(),
        instance: "second".into(),
        host: "h".into(),
        boot_id: "b".into(),
        pid: 1,
        started_at: store.now(),
        heartbeat_at: store.now(),
    };
    assert_eq!(store.register_replica(&me).await.unwrap(), [1, 1, 1]);
    assert_eq!(store.reap_expired(&policy).await.unwrap().len(), 1);
    let again = store
        .claim_task(Target::Staging, "r1", lease)
        .await
        .unwrap()
        .expect("task back");
    assert_eq!(again.task_id, task.task_id);
    assert_eq!(
        store
            .claim_read("r1", lease)
            .await
            .unwrap()
            .map(|c| c.change_id),
        Some(read.change_id)
    );
    assert!(
        store
            .try_lease("resync", "other", lease)
            .await
            .unwrap()
            .is_some(),
        "the lease was freed"
    );
}
