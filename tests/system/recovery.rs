//! The coordinator's promises under faults, from the real binaries: killed (`kill -9`) during its
//! start-up resync or during a burst of edits, the restarted coordinator (same replica name, the
//! host name) takes its claims back at once and repairs what no mirror told it within 30 s; and
//! a member removed from a project loses access within 5 s of the edit while another member of
//! that project has no Globus identity (a task that no retry cures, which must delay nothing).

use std::time::{Duration, Instant};

use serde_json::json;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_tests::stack::{OUTSIDER, USERNAME_DOMAIN};
use smrtshare_tests::world::{self, Expected, wait_converged};
use smrtshare_tests::{Service, Stack, StackOptions};

/// How long a restarted coordinator may take to repair lost mirrors.
const REPAIR: Duration = Duration::from_secs(30);
/// How long a removed member may keep access after the edit.
const REVOKE: Duration = Duration::from_secs(5);

/// Polls `cond` every 50 ms until it holds or `within` passes.
async fn until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_in_its_startup_resync_repairs_lost_mirrors_at_restart() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let admin = stack.smrtlink_admin();

    // Changes no mirror tells: the coordinator is down while they are made inside SMRT Link.
    stack.kill(Service::Coordinator).unwrap();
    let state = admin.state().await.unwrap();
    let projects = state["projects"].as_array().unwrap();
    let reader_of = |id: i64| {
        projects
            .iter()
            .find(|p| p["id"].as_i64() == Some(id))
            .and_then(|p| p["members"].as_array())
            .and_then(|m| m.iter().find(|m| m["role"] != "OWNER"))
            .and_then(|m| m["login"].as_str())
            .map(str::to_owned)
            .expect("the demo project has a reader")
    };
    admin.rename(2, "Heirloom tomato").await.unwrap();
    admin.delete_member(3, &reader_of(3)).await.unwrap();
    admin.put_member(4, "carol", "CAN_VIEW").await.unwrap();

    // The next start-up resync reads slowly, and the coordinator is killed in the middle of it,
    // holding the resync lease and its reads.
    admin
        .set_faults(json!({"delay_ms": 2000, "endpoints": ["get_project"]}))
        .await
        .unwrap();
    let reads = admin.requests("get_project").await.unwrap();
    stack.restart(Service::Coordinator).await.unwrap();
    until(
        Duration::from_secs(10),
        "the start-up resync to read a project",
        || async { admin.requests("get_project").await.unwrap() > reads },
    )
    .await;
    stack.kill(Service::Coordinator).unwrap();
    admin.clear_faults().await.unwrap();

    // Restarted under the same name: its start-up resync runs at once and repairs everything.
    let restarted = Instant::now();
    stack.restart(Service::Coordinator).await.unwrap();
    let converged = wait_converged(&stack, &[], REPAIR).await.unwrap();
    let took = restarted.elapsed();
    eprintln!("start-up resync killed; repaired {took:?} after the restart");
    assert!(took < REPAIR, "{took:?}");
    assert_eq!(converged[&2].directory, "Project 2: Heirloom tomato");
    assert!(converged[&4].readers.contains("carol"));
    let log = std::fs::read_to_string(stack.log(Service::Coordinator)).unwrap();
    assert!(
        log.contains("replica registered"),
        "the restart registered its replica"
    );
}

/// The expected world without the logins that have no Globus identity (they can hold no rule).
fn reachable(mut expected: Expected, unreachable: &str) -> Expected {
    for project in expected.values_mut() {
        project.readers.remove(unreachable);
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_loses_access_within_seconds_after_a_kill_during_a_burst() {
    // dave has no Globus identity: any project he is in has an access task no retry cures.
    let options = StackOptions {
        identities: ["alice", "bob", "carol"]
            .iter()
            .map(|m| format!("{m}@{USERNAME_DOMAIN}"))
            .chain([OUTSIDER.to_owned()])
            .collect(),
        wait_converged: false,
        ..StackOptions::default()
    };
    let mut stack = Stack::start(options).await.unwrap();
    let globus = stack.globus();
    let mut web = stack.web_ui().unwrap();

    // A project shared with bob and dave.
    let members = |logins: &[&str]| {
        let mut m = vec![Member::new("admin", Role::Owner)];
        m.extend(logins.iter().map(|l| Member::new(*l, Role::CanView)));
        m
    };
    let (shared, mirrored) = web
        .create_project(&ProjectRequest {
            name: Some("Shared".into()),
            members: Some(members(&["bob", "dave"])),
            ..ProjectRequest::default()
        })
        .await
        .unwrap();
    assert!(mirrored.accepted(), "{mirrored:?}");
    let path = format!("/Project {}: Shared/", shared.id);
    let bob = format!("bob@{USERNAME_DOMAIN}");
    let holds = |username: String, path: String| {
        let globus = globus.clone();
        async move {
            globus
                .rules()
                .await
                .unwrap()
                .iter()
                .any(|r| r.path == path && r.username == username)
        }
    };
    until(
        Duration::from_secs(30),
        "bob's rule on the shared project",
        || holds(bob.clone(), path.clone()),
    )
    .await;

    // A burst of renames, mirrored; the coordinator is killed a third of the way in and started
    // again two thirds in: the edits in between are never told to it.
    let demo = [2, 3, 4];
    let mut lost = 0;
    for n in 0..30 {
        if n == 10 {
            stack.kill(Service::Coordinator).unwrap();
        }
        if n == 20 {
            stack.restart(Service::Coordinator).await.unwrap();
        }
        let id = demo[n % demo.len()];
        let (_, m) = web
            .update_project(
                id,
                &ProjectRequest {
                    name: Some(format!("Renamed {n}")),
                    ..ProjectRequest::default()
                },
            )
            .await
            .unwrap();
        lost += usize::from(!m.accepted());
    }
    assert!(
        lost >= 9,
        "the intake answered while the coordinator was down ({lost} lost)"
    );
    let restarted = Instant::now();
    let started = Instant::now();
    loop {
        let expected = reachable(world::expected(&stack).await.unwrap(), "dave");
        let problems = world::differences(&stack, &expected, &[]).await.unwrap();
        if problems.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < REPAIR,
            "not repaired within {REPAIR:?}: {problems:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "lost mirrors repaired within {:?} of the restart",
        restarted.elapsed()
    );

    // bob is removed from the project: his rule goes within seconds, dave notwithstanding.
    let edited = Instant::now();
    let (_, m) = web
        .update_project(
            shared.id,
            &ProjectRequest {
                members: Some(members(&["dave"])),
                ..ProjectRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(m.accepted(), "{m:?}");
    until(REVOKE, "bob's rule to be deleted", || async {
        !holds(bob.clone(), path.clone()).await
    })
    .await;
    eprintln!("bob lost access {:?} after the edit", edited.elapsed());

    // The removal's change is final: PARTIAL only for dave, who is reported, not retried.
    let mut client = stack.coordinator().unwrap();
    let changes = client
        .list_changes(pb::ListChangesRequest {
            project_id: shared.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    let latest = changes.first().expect("the removal was recorded").change_id;
    let change = world::wait_change_final(&stack, latest, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        change.status,
        pb::ChangeStatus::Partial as i32,
        "{change:?}"
    );
    let access = change
        .tasks
        .iter()
        .find(|t| {
            t.target == pb::Target::Access as i32 && t.state != pb::TaskState::Superseded as i32
        })
        .unwrap();
    assert_eq!(access.state, pb::TaskState::Failed as i32, "{access:?}");
    assert_eq!(access.attempts, 1, "not retried: {access:?}");
    assert!(
        access.last_message.contains("dave"),
        "{}",
        access.last_message
    );
}
