//! The store on its own: what is written when SMRT Link's truth is stored again (only the
//! differences, with the same result as writing it all), datasets taken from other projects,
//! and the filters of the change listing.

use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::model::{
    ChangeKind, ChangeReason, ChangeStatus, DatasetTruth, MemberTruth, ProjectTruth,
};
use smrtshare_coordinator::store::NewChange;

use crate::both_backends;
use crate::harness::store;

both_backends!(
    storing_truth_again_writes_exactly_the_new_state,
    listing_changes_applies_each_filter,
    the_database_computes_statuses_by_the_documented_rule,
    results_recorded_at_once_are_fenced_and_claim_for_each_worker,
    changes_that_come_together_merge_as_they_would_one_at_a_time,
);

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
    assert!(
        store
            .store_project_truth(&first, "dir-2")
            .await
            .unwrap()
            .is_empty()
    );

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
            .store_project_truth(&second, "dir-2b")
            .await
            .unwrap()
            .is_empty()
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

    // Project 3 now lists u1 and u4: they leave project 2, which is reported as affected.
    let third = truth(
        3,
        vec![member("eve", "CAN_VIEW")],
        vec![dataset("u1", "one", None), dataset("u4", "four", None)],
    );
    assert_eq!(
        store.store_project_truth(&third, "dir-3").await.unwrap(),
        vec![2]
    );
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
    assert!(
        store
            .store_project_truth(&big, "dir-4")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.desired(4).await.unwrap().unwrap().datasets.len(), 450);
    let taker = truth(5, vec![], many);
    assert_eq!(
        store.store_project_truth(&taker, "dir-5").await.unwrap(),
        vec![4]
    );
    assert!(store.desired(4).await.unwrap().unwrap().datasets.is_empty());
    assert_eq!(store.desired(5).await.unwrap().unwrap().datasets.len(), 450);
    let emptied = truth(5, vec![], vec![]);
    assert!(
        store
            .store_project_truth(&emptied, "dir-5")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.desired(5).await.unwrap().unwrap().datasets.is_empty());
}

async fn listing_changes_applies_each_filter(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let mut ids = Vec::new();
    for project_id in [2, 3, 2, 4] {
        let (id, merged) = store
            .record_change(NewChange {
                project_id,
                reason: ChangeReason::Mirror,
                kind: ChangeKind::ProjectChanged,
                request: String::new(),
                caused_by: 0,
                settle_until: i64::MAX,
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
    let all = store.list_changes(0, None, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![read, ids[2], ids[1], ids[0]]
    );
    let of_two = store.list_changes(2, None, 0, 100).await.unwrap();
    assert_eq!(
        of_two.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let in_progress = store
        .list_changes(0, Some(ChangeStatus::InProgress), 0, 100)
        .await
        .unwrap();
    assert_eq!(in_progress.len(), 3);
    let ok = store
        .list_changes(0, Some(ChangeStatus::Ok), 0, 100)
        .await
        .unwrap();
    assert_eq!(
        ok.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![read]
    );
    let page = store.list_changes(0, None, ids[2], 1).await.unwrap();
    assert_eq!(
        page.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let combined = store
        .list_changes(3, Some(ChangeStatus::InProgress), ids[2], 10)
        .await
        .unwrap();
    assert_eq!(
        combined.iter().map(|c| c.change_id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert!(
        store
            .list_changes(3, Some(ChangeStatus::Ok), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Statuses are computed in SQL, in the statement that writes them; the rule there must be
/// `change_status`'s for every read state and every mix of up to three task states.
async fn the_database_computes_statuses_by_the_documented_rule(backend: Backend) {
    use smrtshare_coordinator::model::{ReadState, TaskState as T};
    use smrtshare_coordinator::store::change_status;
    let (store, _db) = store(backend, Clock::system()).await;
    let all = [T::Ready, T::Working, T::Ok, T::Failed, T::Superseded];
    // Every multiset of up to three states (order does not matter to the rule).
    let mut mixes: Vec<Vec<T>> = vec![vec![]];
    for a in 0..all.len() {
        mixes.push(vec![all[a]]);
        for b in a..all.len() {
            mixes.push(vec![all[a], all[b]]);
            for c in b..all.len() {
                mixes.push(vec![all[a], all[b], all[c]]);
            }
        }
    }
    assert_eq!(mixes.len(), 56);
    let mut seen = std::collections::BTreeSet::new();
    for read_state in [
        ReadState::Settling,
        ReadState::Reading,
        ReadState::Read,
        ReadState::Failed,
    ] {
        for mix in &mixes {
            let expected = change_status(read_state, mix);
            let got = store
                .status_by_rule(read_state, mix)
                .await
                .expect("evaluate the rule");
            assert_eq!(got, expected, "{read_state:?} with tasks {mix:?}");
            seen.insert(expected.as_str());
        }
    }
    // The cases reach every status.
    assert_eq!(seen.len(), 4, "{seen:?}");
}

/// Results that arrive together (on PostgreSQL they are recorded in one transaction): each is
/// fenced on its own, the statuses of changes whose tasks are recorded side by side come out
/// right, and the next claims are shared among the workers that asked, one task each.
async fn results_recorded_at_once_are_fenced_and_claim_for_each_worker(backend: Backend) {
    use smrtshare_coordinator::model::{Operation, Target, TaskState};
    use smrtshare_coordinator::store::{Backoff, NextClaim, TaskResult};
    let (store, _db) = store(backend, Clock::system()).await;
    let both = [Target::Staging, Target::Access];
    let mut changes = std::collections::BTreeMap::new();
    for id in 2..=9 {
        store
            .store_project_truth(
                &truth(id, vec![member("ann", "CAN_VIEW")], vec![]),
                &format!("{id}-dir"),
            )
            .await
            .unwrap();
    }
    for id in 2..=7 {
        let change = store
            .record_read_change(id, ChangeReason::Manual, &both, "test")
            .await
            .unwrap();
        changes.insert(id, change);
    }
    let lease_ms = 60_000;
    let mut claims = Vec::new();
    for target in both {
        while let Some(claim) = store.claim_task(target, "w", lease_ms).await.unwrap() {
            claims.push(claim);
        }
    }
    assert_eq!(claims.len(), 12);
    // Work that the records claim: one more change each for projects 8 and 9.
    let waiting: Vec<i64> = vec![
        store
            .record_read_change(8, ChangeReason::Manual, &both, "test")
            .await
            .unwrap(),
        store
            .record_read_change(9, ChangeReason::Manual, &both, "test")
            .await
            .unwrap(),
    ];
    // Project 3's access task fails for good; project 4's staging claim is stale (its lease was
    // lost: the attempt it holds is not the task's), and so is a second report of project 5's
    // staging task, from an attempt before the one that holds it, sent beside the current one.
    let mut reports: Vec<(smrtshare_coordinator::store::TaskClaim, bool)> =
        claims.iter().map(|claim| (claim.clone(), false)).collect();
    let five = claims
        .iter()
        .find(|c| c.project_id == 5 && c.target == Target::Staging)
        .unwrap();
    reports.push((five.clone(), true));
    let results = reports.into_iter().map(|(claim, earlier)| {
        let mut claim = claim.clone();
        if earlier {
            claim.attempts -= 1;
        }
        let result = if claim.project_id == 3 && claim.target == Target::Access {
            TaskResult::Permanent {
                operation: Operation::Apply,
                // PostgreSQL's text holds no NUL: it is stored as U+FFFD.
                message: "refused\0by the service".into(),
                report: None,
            }
        } else {
            TaskResult::Ok {
                operation: Operation::Apply,
                message: "done".into(),
                report: Some(vec![0, 1, 0xfe, 0xff]),
            }
        };
        if claim.project_id == 4 && claim.target == Target::Staging {
            claim.attempts += 1;
        }
        let store = store.clone();
        async move {
            let next = NextClaim {
                owner: "w".into(),
                lease_ms,
                reap: false,
            };
            let backoff = Backoff {
                base_ms: 100,
                cap_ms: 1000,
            };
            let answer = store
                .finish_and_claim(&claim, result, backoff, Some(next))
                .await
                .unwrap();
            (claim, answer)
        }
    });
    let answers = futures::future::join_all(results).await;
    let mut next_ids = std::collections::BTreeSet::new();
    for (claim, (recorded, next)) in &answers {
        let stale = (claim.project_id == 4 && claim.target == Target::Staging)
            || (claim.project_id == 5 && claim.target == Target::Staging && claim.attempts == 0);
        assert_eq!(
            *recorded, !stale,
            "task of project {} {}",
            claim.project_id, claim.target
        );
        if let Some(next) = next {
            assert_eq!(
                next.target, claim.target,
                "a worker gets a task of its own target"
            );
            assert!([8, 9].contains(&next.project_id), "{next:?}");
            assert!(
                next_ids.insert(next.task_id),
                "task {} claimed twice",
                next.task_id
            );
            if let Some(desired) = next.desired.clone().flatten() {
                assert_eq!(desired.project_id, next.project_id);
                assert_eq!(desired.directory, format!("{}-dir", next.project_id));
                assert_eq!(desired.shared_logins, vec!["ann".to_owned()]);
            }
        }
    }
    assert_eq!(next_ids.len(), 4, "each waiting task went to one worker");
    for (id, change) in &changes {
        let expected = match id {
            3 => ChangeStatus::Partial,
            4 => ChangeStatus::InProgress,
            _ => ChangeStatus::Ok,
        };
        let row = store.get_change(*change).await.unwrap().unwrap();
        assert_eq!(row.status, expected, "change of project {id}");
        for task in store.tasks_of_change(*change).await.unwrap() {
            let expected = match (id, task.target) {
                (3, Target::Access) => TaskState::Failed,
                (4, Target::Staging) => TaskState::Working,
                _ => TaskState::Ok,
            };
            assert_eq!(task.state, expected, "project {id} {}", task.target);
            if expected == TaskState::Failed {
                assert_eq!(task.last_message, "refused\u{fffd}by the service");
            }
            if expected == TaskState::Ok {
                assert_eq!(task.report.as_deref(), Some(&[0, 1, 0xfe, 0xff][..]));
                assert_eq!(task.last_message, "done");
            }
        }
    }
    for change in waiting {
        let row = store.get_change(change).await.unwrap().unwrap();
        assert_eq!(row.status, ChangeStatus::InProgress);
        for task in store.tasks_of_change(change).await.unwrap() {
            assert_eq!(task.state, TaskState::Working, "claimed by the records");
        }
    }
}

/// Changes recorded at the same time (on PostgreSQL, in one statement while an earlier one is
/// held up): of several for one project and kind the first is inserted and the rest merge into
/// it, a change of a project that already settles merges into that one, kinds stay apart, and
/// the request stored is the inserted change's own (with NUL replaced).
async fn changes_that_come_together_merge_as_they_would_one_at_a_time(backend: Backend) {
    use sqlx::Connection as _;
    let (store, db) = store(backend, Clock::system()).await;
    let change = |project_id: i64, kind: ChangeKind, request: String| NewChange {
        project_id,
        reason: ChangeReason::Mirror,
        kind,
        request,
        caused_by: 0,
        settle_until: i64::MAX,
    };
    let (settling, merged) = store
        .record_change(change(2, ChangeKind::ProjectChanged, "PUT 2 first".into()))
        .await
        .unwrap();
    assert!(!merged);

    // PostgreSQL: inserts into `changes` wait for this lock, so the first change below is held
    // up in its statement and the rest queue behind it, to be recorded together.
    let mut holder = None;
    if backend == Backend::Postgres {
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE changes IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .unwrap();
        holder = Some(conn);
    }
    let send = |new: NewChange| {
        let store = store.clone();
        let request = new.request.clone();
        tokio::spawn(async move { (request, store.record_change(new).await.unwrap()) })
    };
    let held = send(change(9, ChangeKind::ProjectChanged, "PUT 9".into()));
    if let Some(conn) = holder.as_mut() {
        let mut tries = 0;
        loop {
            let row = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            if sqlx::Row::try_get::<i64, _>(&row, "n").unwrap() > 0 {
                break;
            }
            tries += 1;
            assert!(tries < 500, "the first change never waited for the lock");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let mut sent = Vec::new();
    for (k, (project_id, kind)) in [
        (3, ChangeKind::ProjectChanged),
        (2, ChangeKind::ProjectChanged),
        (4, ChangeKind::ProjectChanged),
        (3, ChangeKind::ProjectChanged),
        (3, ChangeKind::ProjectDeleted),
        (0, ChangeKind::ProjectsCreated),
        (4, ChangeKind::ProjectChanged),
        (3, ChangeKind::ProjectChanged),
        (0, ChangeKind::ProjectsCreated),
    ]
    .into_iter()
    .enumerate()
    {
        sent.push((
            project_id,
            kind,
            send(change(project_id, kind, format!("#{k}\0 of {project_id}"))),
        ));
    }
    // Time for every one to queue (the answers below do not depend on it).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    if let Some(mut conn) = holder {
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    }
    let (_, (nine, merged)) = held.await.unwrap();
    assert!(!merged);

    let mut groups: std::collections::BTreeMap<(i64, &str), Vec<(String, i64, bool)>> =
        std::collections::BTreeMap::new();
    for (project_id, kind, answer) in sent {
        let (request, (id, merged)) = answer.await.unwrap();
        groups
            .entry((project_id, kind.as_str()))
            .or_default()
            .push((request, id, merged));
    }
    assert_eq!(groups.len(), 5);
    for ((project_id, kind), answers) in &groups {
        let ids: std::collections::BTreeSet<i64> = answers.iter().map(|a| a.1).collect();
        assert_eq!(ids.len(), 1, "{project_id} {kind}: {answers:?}");
        let id = answers[0].1;
        let inserted: Vec<&String> = answers.iter().filter(|a| !a.2).map(|a| &a.0).collect();
        let stored = store.get_change(id).await.unwrap().unwrap();
        assert_eq!(stored.project_id, *project_id);
        assert_eq!(stored.kind.as_str(), *kind);
        if *project_id == 2 {
            // Merged into the change that already settled.
            assert_eq!(id, settling);
            assert!(inserted.is_empty(), "{answers:?}");
            assert_eq!(stored.request, "PUT 2 first");
        } else {
            assert_eq!(inserted.len(), 1, "{project_id} {kind}: {answers:?}");
            assert_eq!(stored.request, inserted[0].replace('\0', "\u{fffd}"));
            assert_ne!(id, settling);
            assert_ne!(id, nine);
        }
    }
    // One settling change per project and kind, no more.
    let all = store.list_changes(0, None, 0, 100).await.unwrap();
    assert_eq!(all.len(), 6, "{all:?}");
    // PostgreSQL recorded the first change, the held one, then the nine that queued behind it
    // in one statement (not written again one at a time).
    let expected = match backend {
        Backend::Postgres => (3, 11),
        Backend::Sqlite => (0, 0),
    };
    let [changes, _] = store.batched_writes();
    assert_eq!((changes.1, changes.2), expected);
}
