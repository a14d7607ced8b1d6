//! The stack stopped (SIGTERM, as Ctrl-C on `scripts/stack`) and started again on the same
//! state, the way `scripts/stack` does it without `--fresh`: the Globus stand-in comes back
//! empty (it keeps rules in memory), access's Verify makes every rule again under new ids, and
//! the system keeps working.

use std::collections::BTreeSet;
use std::time::Duration;

use smrtshare_api::access::v1 as access;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_tests::stack::GLOBUS_CLIENT_ID;
use smrtshare_tests::world::wait_converged;
use smrtshare_tests::{Service, Stack, StackOptions};

async fn our_rule_ids(stack: &Stack) -> BTreeSet<String> {
    let ours = format!("client:{GLOBUS_CLIENT_ID}");
    stack
        .globus()
        .rules()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.made_by == ours)
        .map(|r| r.id)
        .collect()
}

async fn registry_ids(stack: &Stack) -> BTreeSet<String> {
    let mut stream = stack
        .access()
        .unwrap()
        .list_rules(access::ListRulesRequest { project_id: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut ids = BTreeSet::new();
    while let Some(item) = stream.message().await.unwrap() {
        ids.insert(item.rule.unwrap().access_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_stops_and_starts_again_on_the_same_state() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let before = our_rule_ids(&stack).await;
    assert!(!before.is_empty());
    assert_eq!(registry_ids(&stack).await, before);
    // Every rule id Globus handed out so far: a Globus never hands one out twice.
    let mut seen = before.clone();

    for round in 1..=2 {
        stack.stop_all().await.unwrap();
        for service in [
            Service::SmrtLink,
            Service::Globus,
            Service::Staging,
            Service::Access,
        ] {
            stack.restart(service).await.unwrap();
        }
        // What `scripts/stack` runs before starting the coordinator.
        let verify = stack
            .access()
            .unwrap()
            .verify(access::VerifyRequest { dry_run: false })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            verify.repairs.len(),
            before.len(),
            "round {round}: {verify:?}"
        );
        assert!(
            verify
                .repairs
                .iter()
                .all(|r| r.done && r.kind == access::RepairKind::Recreated as i32),
            "round {round}: {verify:?}"
        );
        stack.restart(Service::Coordinator).await.unwrap();
        wait_converged(&stack, &[], Duration::from_secs(60))
            .await
            .unwrap();
        let now = our_rule_ids(&stack).await;
        assert_eq!(now.len(), before.len(), "round {round}");
        assert!(now.is_disjoint(&seen), "round {round}: ids repeated");
        seen.extend(now.iter().cloned());
        assert_eq!(registry_ids(&stack).await, now, "round {round}");
    }

    // Still working: a member added in SMRT Link is granted after a resync.
    stack
        .smrtlink_admin()
        .put_member(3, "bob", "CAN_VIEW")
        .await
        .unwrap();
    stack
        .coordinator()
        .unwrap()
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap();
    let expected = wait_converged(&stack, &[], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(expected[&3].readers.contains("bob"));
    let log = std::fs::read_to_string(stack.log(Service::Access)).unwrap();
    assert!(!log.contains("UNIQUE constraint"), "access refused an id");
}
