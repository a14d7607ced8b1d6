//! A change's id travels: the coordinator's, staging's and access's logs all carry it.

use std::time::{Duration, Instant};

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_tests::logs::lines_with_change;
use smrtshare_tests::world::{self, wait_converged};
use smrtshare_tests::{Service, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_id_reaches_the_logs_of_all_three_services() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();

    // Carol joins Wheat in the web UI; the request is mirrored to the intake.
    let mut web = stack.web_ui().unwrap();
    let (_, mirrored) = web
        .update_project(
            4,
            &ProjectRequest {
                members: Some(vec![
                    Member::new("admin", Role::Owner),
                    Member::new("dave", Role::CanView),
                    Member::new("alice", Role::CanView),
                    Member::new("carol", Role::CanView),
                ]),
                ..ProjectRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(mirrored.accepted(), "{mirrored:?}");
    let mut client = stack.coordinator().unwrap();
    let started = Instant::now();
    let change_id = loop {
        let changes = client
            .list_changes(pb::ListChangesRequest {
                project_id: 4,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .changes;
        if let Some(change) = changes
            .iter()
            .find(|c| c.reason == pb::ChangeReason::Mirror as i32)
        {
            break change.change_id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no mirrored change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let change = world::wait_change_final(&stack, change_id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(change.status, pb::ChangeStatus::Ok as i32, "{change:?}");
    wait_converged(&stack, &[], Duration::from_secs(20))
        .await
        .unwrap();

    let messages = |service: Service| -> Vec<String> {
        lines_with_change(&stack.log(service), change_id)
            .iter()
            .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let coordinator = messages(Service::Coordinator);
    assert!(
        coordinator.iter().any(|m| m == "mirrored change recorded"),
        "{coordinator:?}"
    );
    let done = coordinator.iter().filter(|m| *m == "task done").count();
    assert!(done >= 2, "a task done per target: {coordinator:?}");
    let staging = messages(Service::Staging);
    assert!(
        staging.iter().any(|m| m == "project applied"),
        "{staging:?}"
    );
    let access = messages(Service::Access);
    assert!(access.iter().any(|m| m == "apply"), "{access:?}");
    assert!(
        access.iter().any(|m| m == "globus rule created"),
        "carol's rule was created under the change: {access:?}"
    );

    // The match is on the id itself: an id no change has is in no log.
    for service in Service::ALL {
        assert!(
            lines_with_change(&stack.log(service), change_id + 1000).is_empty(),
            "{service}"
        );
    }
}
