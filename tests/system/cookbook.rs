//! The operator's grpcurl cookbook against the running system: `list`, `describe` and health on
//! all three services, every Coordinator RPC with a token, and UNAUTHENTICATED without one.

use std::time::Duration;

use serde_json::Value;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_tests::grpcurl::{self, Output};
use smrtshare_tests::world::{self, wait_converged};
use smrtshare_tests::{Service, Stack, StackOptions};

const COORDINATOR: &str = "smrtshare.coordinator.v1.Coordinator";

/// protojson writes int64 as a string.
fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

struct Operator<'a> {
    stack: &'a Stack,
}

impl Operator<'_> {
    /// `grpcurl -plaintext -H 'authorization: Bearer …' -d DATA coordinator Coordinator/RPC`.
    async fn call(&self, rpc: &str, data: &str) -> Output {
        grpcurl::run(
            self.stack.grpc_address(Service::Coordinator),
            Some(&self.stack.secrets().operator_token),
            Some(data),
            &[&format!("{COORDINATOR}/{rpc}")],
        )
        .await
        .unwrap()
        .ok()
        .unwrap()
    }

    async fn json(&self, rpc: &str, data: &str) -> Value {
        self.call(rpc, data).await.json().unwrap()
    }

    /// WatchChange, streamed until the change is final; answers every message.
    async fn watch(&self, change_id: i64) -> Vec<Value> {
        let out = self
            .call("WatchChange", &format!(r#"{{"change_id": {change_id}}}"#))
            .await;
        out.json_stream().unwrap()
    }
}

fn status(change: &Value) -> &str {
    change["status"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coordinator_rpc_works_through_grpcurl() {
    // A settle delay long enough for WatchChange to start before the change is read.
    let stack = Stack::start(StackOptions {
        settle_delay: Duration::from_secs(1),
        ..StackOptions::default()
    })
    .await
    .unwrap();

    // list, describe and health on every service; reflection and health need no token.
    for service in Service::GRPC {
        let name = service.grpc_name().unwrap();
        let address = stack.grpc_address(service);
        let list = grpcurl::run(address, None, None, &["list"])
            .await
            .unwrap()
            .ok()
            .unwrap();
        for wanted in [name, "grpc.health.v1.Health"] {
            assert!(
                list.stdout.lines().any(|l| l == wanted),
                "{service}: {wanted} not in\n{}",
                list.text()
            );
        }
        assert!(
            list.stdout.contains("grpc.reflection."),
            "{service}: no reflection service in\n{}",
            list.text()
        );
        let describe = grpcurl::run(address, None, None, &["describe", name])
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert!(describe.stdout.contains("rpc "), "{}", describe.text());
        let health = grpcurl::run(
            address,
            None,
            Some(&format!(r#"{{"service": "{name}"}}"#)),
            &["grpc.health.v1.Health/Check"],
        )
        .await
        .unwrap()
        .ok()
        .unwrap();
        assert_eq!(health.json().unwrap()["status"], "SERVING", "{service}");
    }
    let describe = grpcurl::run(
        stack.grpc_address(Service::Coordinator),
        None,
        None,
        &["describe", COORDINATOR],
    )
    .await
    .unwrap();
    for rpc in [
        "NotifyProjectChanged",
        "NotifyProjectDeleted",
        "NotifyProjectsCreated",
        "GetChange",
        "ListChanges",
        "WatchChange",
        "GetProject",
        "ListProjects",
        "Resync",
    ] {
        assert!(
            describe.stdout.contains(&format!("rpc {rpc} (")),
            "{rpc} missing:\n{}",
            describe.text()
        );
    }
    // Comments reach describe through reflection.
    let message = grpcurl::run(
        stack.grpc_address(Service::Coordinator),
        None,
        None,
        &["describe", "smrtshare.coordinator.v1.ResyncRequest"],
    )
    .await
    .unwrap()
    .ok()
    .unwrap();
    assert!(message.stdout.contains("dry_run"), "{}", message.text());
    assert!(
        message.stdout.contains("//"),
        "no comments: {}",
        message.text()
    );

    // Without a token, or with the wrong one, every service refuses its API.
    for service in Service::GRPC {
        let rpc = match service {
            Service::Staging => "smrtshare.staging.v1.Staging/GetProject",
            Service::Access => "smrtshare.access.v1.Access/GetProjectAccess",
            _ => "smrtshare.coordinator.v1.Coordinator/GetProject",
        };
        for token in [None, Some("not-the-token")] {
            let refused = grpcurl::run(
                stack.grpc_address(service),
                token,
                Some(r#"{"project_id": 2}"#),
                &[rpc],
            )
            .await
            .unwrap();
            assert!(
                !refused.success,
                "{service} answered without a valid token: {}",
                refused.text()
            );
            assert!(
                refused.stderr.contains("Unauthenticated"),
                "{service}: {}",
                refused.text()
            );
        }
    }

    let op = Operator { stack: &stack };

    // ListProjects and GetProject: the demo projects, staged and granted by the startup renewal.
    let projects = op.json("ListProjects", "{}").await;
    let ids: Vec<i64> = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| int(&p["projectId"]))
        .collect();
    assert_eq!(ids, [2, 3, 4], "{projects}");
    let tomato = op.json("GetProject", r#"{"project_id": 2}"#).await;
    let project = &tomato["project"];
    assert_eq!(project["name"], "Tomato");
    assert_eq!(project["directory"], "Project 2: Tomato");
    let targets = project["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{tomato}");
    assert!(
        targets.iter().all(|t| t["state"] == "TASK_STATE_OK"),
        "{tomato}"
    );

    // NotifyProjectChanged after carol joins Tomato at SMRT Link; WatchChange until final.
    let admin = stack.smrtlink_admin();
    admin.put_member(2, "carol", "CAN_VIEW").await.unwrap();
    let notified = op
        .json("NotifyProjectChanged", r#"{"project_id": 2}"#)
        .await;
    let changed = int(&notified["changeId"]);
    assert!(changed > 0, "{notified}");
    let steps = op.watch(changed).await;
    let last = &steps.last().unwrap()["change"];
    assert_eq!(status(last), "CHANGE_STATUS_OK", "{steps:#?}");
    assert!(
        steps.iter().skip(1).all(|s| s["task"].is_object()),
        "{steps:#?}"
    );

    // A change still settling (mirrored from the web UI): WatchChange streams it as it stands,
    // then each task transition, and ends when it is final.
    let mut web = stack.web_ui().unwrap();
    let (_, mirrored) = web
        .update_project(
            4,
            &ProjectRequest {
                members: Some(vec![
                    Member::new("admin", Role::Owner),
                    Member::new("dave", Role::CanView),
                    Member::new("alice", Role::CanView),
                    Member::new("bob", Role::CanEdit),
                ]),
                ..ProjectRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(mirrored.accepted(), "{mirrored:?}");
    let listed = op
        .json("ListChanges", r#"{"project_id": 4, "page_size": 1}"#)
        .await;
    let newest = &listed["changes"][0];
    assert_eq!(newest["reason"], "CHANGE_REASON_MIRROR", "{listed}");
    assert_eq!(status(newest), "CHANGE_STATUS_IN_PROGRESS", "{listed}");
    let request = newest["request"].as_str().unwrap_or_default();
    assert!(
        request.starts_with("PUT /") && request.ends_with("smrt-link/projects/4"),
        "{listed}"
    );
    let steps = op.watch(int(&newest["changeId"])).await;
    assert!(
        steps.len() >= 3,
        "the change, then its two tasks' transitions: {steps:#?}"
    );
    assert!(steps[0]["task"].is_null(), "{steps:#?}");
    assert!(
        steps.iter().skip(1).all(|s| s["task"].is_object()),
        "{steps:#?}"
    );
    let mut targets: Vec<&str> = steps
        .iter()
        .filter_map(|s| s["task"]["target"].as_str())
        .collect();
    targets.dedup();
    targets.sort_unstable();
    targets.dedup();
    assert_eq!(targets, ["TARGET_ACCESS", "TARGET_STAGING"], "{steps:#?}");
    assert_eq!(
        status(&steps.last().unwrap()["change"]),
        "CHANGE_STATUS_OK",
        "{steps:#?}"
    );

    // GetChange: the change, its reason and a task per target with the service's report.
    let got = op
        .json("GetChange", &format!(r#"{{"change_id": {changed}}}"#))
        .await;
    let change = &got["change"];
    assert_eq!(int(&change["changeId"]), changed);
    assert_eq!(int(&change["projectId"]), 2);
    assert_eq!(change["reason"], "CHANGE_REASON_MANUAL");
    assert_eq!(change["kind"], "CHANGE_KIND_PROJECT_CHANGED");
    assert_eq!(status(change), "CHANGE_STATUS_OK");
    let mut targets: Vec<&str> = change["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap_or_default())
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, ["TARGET_ACCESS", "TARGET_STAGING"], "{got}");
    let access_task = change["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "TARGET_ACCESS")
        .unwrap();
    let granted = access_task["report"]["accessApply"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no access report: {got}"));
    assert!(
        granted
            .iter()
            .any(|m| m["login"] == "carol" && m["outcome"] == "MEMBER_OUTCOME_KIND_GRANTED"),
        "{got}"
    );
    wait_converged(&stack, &[], Duration::from_secs(20))
        .await
        .unwrap();

    // ListChanges for project 2 holds it, newest first.
    let listed = op
        .json("ListChanges", r#"{"project_id": 2, "page_size": 10}"#)
        .await;
    let listed_ids: Vec<i64> = listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| int(&c["changeId"]))
        .collect();
    assert_eq!(listed_ids.first(), Some(&changed), "{listed}");
    let ok_only = op
        .json("ListChanges", r#"{"status": "CHANGE_STATUS_OK"}"#)
        .await;
    assert!(
        ok_only["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| status(c) == "CHANGE_STATUS_OK"),
        "{ok_only}"
    );

    // NotifyProjectsCreated after a project is created at SMRT Link: the discovery change finds
    // it and records a change for it.
    let barley = admin
        .create_project("Barley", &[("admin", "OWNER"), ("dave", "CAN_VIEW")], &[])
        .await
        .unwrap();
    let maize = world_dataset_uuid(&stack, 108).await;
    admin.move_dataset(&maize, barley).await.unwrap();
    let created = op.json("NotifyProjectsCreated", "{}").await;
    let discovery = int(&created["changeId"]);
    let steps = op.watch(discovery).await;
    let last = &steps.last().unwrap()["change"];
    assert_eq!(last["kind"], "CHANGE_KIND_PROJECTS_CREATED", "{last}");
    assert_eq!(status(last), "CHANGE_STATUS_OK", "{steps:#?}");
    let effects: Vec<i64> = last["effects"]
        .as_array()
        .unwrap_or_else(|| panic!("no effects: {last}"))
        .iter()
        .map(int)
        .collect();
    assert_eq!(effects.len(), 1, "{last}");
    let found = world::wait_change_final(&stack, effects[0], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(found.project_id, barley);
    assert_eq!(found.caused_by, discovery);
    let expected = wait_converged(&stack, &[], Duration::from_secs(20))
        .await
        .unwrap();
    assert!(expected.contains_key(&barley));
    assert!(
        stack
            .root()
            .join(format!("Project {barley}: Barley"))
            .is_dir()
    );

    // NotifyProjectDeleted after it is deleted at SMRT Link: directory and rules go.
    admin.delete_project(barley).await.unwrap();
    let deleted = op
        .json(
            "NotifyProjectDeleted",
            &format!(r#"{{"project_id": {barley}}}"#),
        )
        .await;
    let deletion = int(&deleted["changeId"]);
    let steps = op.watch(deletion).await;
    let last = &steps.last().unwrap()["change"];
    assert_eq!(last["kind"], "CHANGE_KIND_PROJECT_DELETED");
    assert_eq!(status(last), "CHANGE_STATUS_OK", "{steps:#?}");
    wait_converged(&stack, &[], Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        !stack
            .root()
            .join(format!("Project {barley}: Barley"))
            .exists()
    );
    let gone = op
        .json("ListProjects", r#"{"include_deleted": true}"#)
        .await;
    assert!(
        gone["projects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| int(&p["projectId"]) == barley && p["deleted"] == true),
        "{gone}"
    );

    // Resync with dry_run: everything in sync; then a rename made inside SMRT Link (no
    // notification) shows in the plan, and the dry run changes nothing.
    let plan = op.json("Resync", r#"{"dry_run": true}"#).await;
    assert_eq!(plan["dryRun"], true, "{plan}");
    assert_eq!(plan["listingComplete"], true, "{plan}");
    assert_eq!(int(&plan["listed"]), 3, "{plan}");
    assert_eq!(int(&plan["inSync"]), 3, "{plan}");
    assert!(plan["items"].as_array().is_none_or(Vec::is_empty), "{plan}");
    admin.rename(3, "Rice panel").await.unwrap();
    let plan = op.json("Resync", r#"{"dry_run": true}"#).await;
    let items = plan["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {plan}"));
    assert!(
        items
            .iter()
            .any(|i| int(&i["projectId"]) == 3 && int(&i["changeId"]) == 0),
        "{plan}"
    );
    assert!(stack.root().join("Project 3: Rice").is_dir());
    assert!(!stack.root().join("Project 3: Rice panel").exists());
    let in_progress = world::changes(
        &stack,
        smrtshare_api::coordinator::v1::ChangeStatus::InProgress,
    )
    .await
    .unwrap();
    assert!(
        in_progress.is_empty(),
        "a dry run recorded changes: {in_progress:?}"
    );
}

/// The UUID of the SMRT Link dataset with id `id`.
async fn world_dataset_uuid(stack: &Stack, id: i64) -> String {
    let state = stack.smrtlink_admin().state().await.unwrap();
    state["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"].as_i64() == Some(id))
        .and_then(|d| d["uuid"].as_str())
        .unwrap_or_else(|| panic!("no dataset {id}"))
        .to_owned()
}

/// `grpcurl list` on one service names only what that service answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_list_names_only_the_service_served() {
    let stack = Stack::start(StackOptions {
        wait_converged: false,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    for service in Service::GRPC {
        let list = grpcurl::run(stack.grpc_address(service), None, None, &["list"])
            .await
            .unwrap()
            .ok()
            .unwrap();
        for other in Service::GRPC.iter().filter(|s| **s != service) {
            let name = other.grpc_name().unwrap();
            assert!(
                !list.stdout.lines().any(|l| l == name),
                "{service} lists {name}, which it does not serve:\n{}",
                list.text()
            );
        }
    }
}
