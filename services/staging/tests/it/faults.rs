//! Failures say whether sending the same request again can cure them: a source that vanishes
//! between the resolution and its link is a passing failure (the next apply resolves afresh and
//! then finds it missing for good), and a request whose every failure is lasting says so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use smrtshare_api::staging::v1 as pb;
use smrtshare_staging::hooks::{Hooks, Point};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_gone_while_linking_may_be_retried_and_then_fails_for_good() {
    // The hook removes a data file at the instant after the apply checked it and before any link.
    let armed: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    let trigger = armed.clone();
    let mut env = Env::with(move |c| {
        c.hooks = Hooks::new(move |point, _| {
            if point == Point::Resolved
                && let Some(file) = trigger.lock().unwrap().take()
            {
                std::fs::remove_file(file).unwrap();
            }
        })
    })
    .await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    let b = env.plain("r2/1_A01", "Wheat-Cell1", 1);
    *armed.lock().unwrap() = Some(a.files[1].clone());

    let req = request(2, "Project 2", vec![ds(&a), ds(&b)]);
    let first = env.apply(req.clone()).await;
    assert!(armed.lock().unwrap().is_none(), "the hook ran");
    assert!(!first.complete);
    assert_eq!(state(&first.datasets[0]), pb::DatasetState::Failed);
    assert!(
        first.datasets[0]
            .error
            .contains("disappeared before it was linked"),
        "{}",
        first.datasets[0].error
    );
    assert!(
        !first.datasets[0].permanent,
        "a retry resolves the dataset afresh"
    );
    let link = first
        .actions
        .iter()
        .find(|x| x.outcome == pb::ActionOutcome::Failed as i32)
        .unwrap();
    assert_eq!(link.kind, pb::ActionKind::LinkFile as i32);
    assert!(!link.permanent, "{link:?}");
    assert_eq!(state(&first.datasets[1]), pb::DatasetState::Staged);

    // The retry finds the file missing: no retry cures that.
    let again = env.apply(req).await;
    assert_eq!(state(&again.datasets[0]), pb::DatasetState::Failed);
    assert!(
        again.datasets[0].error.contains("file not found"),
        "{}",
        again.datasets[0].error
    );
    assert!(again.datasets[0].permanent);
    assert_eq!(state(&again.datasets[1]), pb::DatasetState::Unchanged);
}
