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
