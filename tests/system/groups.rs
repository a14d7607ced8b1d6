//! The whole system with group sharing (`smrtshare-access --sharing groups`): the coordinator is
//! unchanged, access shares each demo project through one Globus group and one rule, the
//! coordinator's resync sees nothing to do, and a member added in SMRT Link is added to the group.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_tests::stack::{GLOBUS_CLIENT_ID, USERNAME_DOMAIN};
use smrtshare_tests::world::{self, Expected};
use smrtshare_tests::{Stack, StackOptions};

/// Per project path: the usernames of the group its rule names (smrtshare's rules only, all of
/// them group rules).
async fn shared(stack: &Stack) -> BTreeMap<String, BTreeSet<String>> {
    let http = reqwest::Client::new();
    let rules: Value = http
        .get(format!(
            "{}/admin/endpoints/{}/rules",
            stack.addresses().globus,
            smrtshare_tests::stack::COLLECTION
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Read after the rules: a group exists before any rule names it.
    let groups: Value = http
        .get(format!("{}/admin/groups", stack.addresses().globus))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identities = stack.globus().identities().await.unwrap();
    let mut out = BTreeMap::new();
    for rule in rules.as_array().unwrap() {
        if rule["made_by"]["client_id"] != GLOBUS_CLIENT_ID {
            continue;
        }
        assert_eq!(rule["principal_type"], "group", "{rule}");
        let group = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == rule["principal"])
            .unwrap_or_else(|| panic!("no group for {rule}"));
        let members: BTreeSet<String> = group["memberships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "member")
            .filter_map(|m| {
                identities
                    .iter()
                    .find(|(id, _)| m["identity_id"] == id.as_str())
                    .map(|(_, u)| u.clone())
            })
            .collect();
        let previous = out.insert(rule["path"].as_str().unwrap().to_owned(), members);
        assert!(previous.is_none(), "two rules on one path: {rules}");
    }
    out
}

fn wanted(expected: &Expected) -> BTreeMap<String, BTreeSet<String>> {
    expected
        .values()
        .map(|p| {
            (
                format!("/{}/", p.directory),
                p.readers
                    .iter()
                    .map(|r| format!("{r}@{USERNAME_DOMAIN}"))
                    .collect(),
            )
        })
        .collect()
}

async fn wait_shared(stack: &Stack) -> Expected {
    let started = Instant::now();
    loop {
        let expected = world::expected(stack).await.unwrap();
        if shared(stack).await == wanted(&expected) {
            return expected;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not shared through groups: {:?} vs {:?}",
            shared(stack).await,
            wanted(&expected)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_sharing_runs_under_the_unchanged_coordinator() {
    let stack = Stack::start(StackOptions {
        access_args: vec!["--sharing".into(), "groups".into()],
        wait_converged: false,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let expected = wait_shared(&stack).await;
    assert_eq!(expected.len(), 3);

    // The coordinator compares what access lists with SMRT Link and finds nothing to do.
    let mut coordinator = stack.coordinator().unwrap();
    let started = Instant::now();
    loop {
        let plan = coordinator
            .resync(pb::ResyncRequest {
                dry_run: true,
                force: false,
            })
            .await
            .unwrap()
            .into_inner();
        let access: Vec<&pb::ResyncItem> = plan
            .items
            .iter()
            .filter(|i| i.target == pb::Target::Access as i32)
            .collect();
        if access.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{plan:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A member added inside SMRT Link joins the project's group after a resync.
    stack
        .smrtlink_admin()
        .put_member(3, "bob", "CAN_VIEW")
        .await
        .unwrap();
    coordinator
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap();
    let expected = wait_shared(&stack).await;
    assert!(expected[&3].readers.contains("bob"));
}
