//! Changes made inside SMRT Link that never pass the proxy (no mirror, no notification) are
//! repaired by Resync: the tree and the Globus rules end as SMRT Link says.

use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_tests::world::{self, wait_converged};
use smrtshare_tests::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_repairs_changes_made_directly_at_smrt_link() {
    // Removing one project of the four held or listed is 25%; the bound is set below it so the
    // removal is refused until forced.
    let stack = Stack::start(StackOptions {
        coordinator_args: vec!["--resync-max-removal-share".into(), "0.2".into()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let before = world::expected(&stack).await.unwrap();
    let admin = stack.smrtlink_admin();
    let state = admin.state().await.unwrap();
    let uuid_of = |id: i64| {
        state["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"].as_i64() == Some(id))
            .and_then(|d| d["uuid"].as_str())
            .unwrap()
            .to_owned()
    };

    // Inside SMRT Link: a member added, one removed, a rename, a dataset moved in from the
    // General Project, a new project, and project 4 deleted.
    admin.put_member(3, "bob", "CAN_EDIT").await.unwrap();
    admin.delete_member(4, "alice").await.unwrap();
    admin.rename(2, "Heirloom tomato").await.unwrap();
    admin.move_dataset(&uuid_of(108), 3).await.unwrap();
    let oats = admin
        .create_project(
            "Oats",
            &[
                ("admin", "OWNER"),
                ("carol", "CAN_VIEW"),
                ("dave", "CAN_EDIT"),
            ],
            &[],
        )
        .await
        .unwrap();
    admin.delete_project(4).await.unwrap();

    // Nothing told smrtshare: the world still shows the old state.
    let after = world::expected(&stack).await.unwrap();
    assert_ne!(before, after);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = world::differences(&stack, &after, &[]).await.unwrap();
    assert!(
        stale.iter().any(|p| p.contains("Heirloom tomato")),
        "the rename was applied without a resync: {stale:?}"
    );

    let mut client = stack.coordinator().unwrap();

    // The dry run names every difference and records nothing; removing project 4 (one of the
    // four projects held or listed) exceeds the share set above, so it is refused.
    let plan = client
        .resync(pb::ResyncRequest {
            dry_run: true,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.dry_run && plan.listing_complete, "{plan:?}");
    assert_eq!(plan.listed, 3, "{plan:?}");
    let planned: Vec<i64> = plan.items.iter().map(|i| i.project_id).collect();
    for project in [2, 3, oats] {
        assert!(
            planned.contains(&project),
            "project {project} not planned: {plan:?}"
        );
    }
    assert!(plan.items.iter().all(|i| i.change_id == 0), "{plan:?}");
    assert!(plan.removals_refused, "{plan:?}");
    assert!(!plan.refused_reason.is_empty(), "{plan:?}");
    assert!(
        world::differences(&stack, &after, &[])
            .await
            .unwrap()
            .iter()
            .any(|p| p.contains("Heirloom tomato")),
        "a dry run changed the world"
    );

    // The real resync repairs everything but the refused removal.
    let done = client
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!done.dry_run && done.removals_refused, "{done:?}");
    let made: Vec<i64> = done.items.iter().map(|i| i.change_id).collect();
    assert!(made.iter().all(|id| *id > 0), "{done:?}");
    for id in made {
        let change = world::wait_change_final(&stack, id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(change.reason, pb::ChangeReason::Resync as i32, "{change:?}");
        assert_eq!(change.status, pb::ChangeStatus::Ok as i32, "{change:?}");
    }
    assert!(
        stack.root().join("Project 4: Wheat").is_dir(),
        "a refused removal removed the directory"
    );

    // Forced, the removal goes through; the world then matches SMRT Link.
    let forced = client
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!forced.removals_refused, "{forced:?}");
    assert!(
        forced
            .items
            .iter()
            .any(|i| i.project_id == 4 && i.operation == pb::Operation::Remove as i32),
        "{forced:?}"
    );
    let converged = wait_converged(&stack, &[], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(converged, after);
    assert!(!stack.root().join("Project 4: Wheat").exists());
    assert!(stack.root().join("Project 2: Heirloom tomato").is_dir());
    assert!(!stack.root().join("Project 2: Tomato").exists());

    // And a further resync finds nothing to do.
    let again = client
        .resync(pb::ResyncRequest {
            dry_run: true,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.items.is_empty(), "{again:?}");
    assert_eq!(again.in_sync, 3, "{again:?}");
}
