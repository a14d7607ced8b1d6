//! Verify: drift between the registry and the collection, found with one access_list call and
//! repaired (or listed, in a dry run).

use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{DEFAULT_ENDPOINT, Fault, FaultPlan, Kind, NewRule};

use crate::support::{Harness, K, expect, outcomes};
use smrtshare_testkit::both_backends;

const P: &str = "/Project 4: Drift/";

async fn verify_repairs_drift_and_leaves_foreign_rules_alone(backend: Backend) {
    let h = Harness::start(backend).await;
    h.apply(4, P, &["alice", "bob", "carol"]).await;
    h.standin
        .add_foreign_rule(
            DEFAULT_ENDPOINT,
            NewRule::identity_read("abcdefab-cdef-4abc-8def-abcdefabcdef", P),
        )
        .expect("foreign rule");

    // Someone deletes alice's rule by hand at Globus.
    let lost = h
        .rule_of("alice", P)
        .and_then(|r| r.id)
        .expect("alice's rule");
    assert!(h.standin.delete_rule_by_hand(DEFAULT_ENDPOINT, &lost));

    // bob leaves, and Globus fails his delete (502 ExternalError is not retried): his rule
    // stays marked for deletion.
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Delete, Fault::ExternalError));
    let left = h.apply(4, P, &["alice", "carol"]).await;
    assert_eq!(
        outcomes(&left.members),
        expect(&[
            ("alice", K::AlreadyGranted),
            ("carol", K::AlreadyGranted),
            ("bob", K::Failed)
        ])
    );
    let bob = h
        .registry_rules(4)
        .await
        .into_iter()
        .find(|r| r.login == "bob")
        .expect("bob");
    assert_eq!(bob.state, pb::RuleState::Deleting as i32);
    assert!(h.rule_of("bob", P).is_some());

    // dave's create is made at Globus but both answers are lost (the retry meets a 502): the
    // intent stays open with a rule at Globus.
    h.standin.set_faults(
        FaultPlan::none()
            .then(Kind::Create, Fault::DropAnswer)
            .then(Kind::Create, Fault::ExternalError),
    );
    let dave = h.apply(5, "/Project 5/", &["dave"]).await;
    assert_eq!(outcomes(&dave.members), expect(&[("dave", K::Failed)]));
    assert!(h.rule_of("dave", "/Project 5/").is_some(), "globus made it");
    assert_eq!(
        h.registry_rules(5).await[0].state,
        pb::RuleState::Pending as i32
    );

    // A dry run lists the repairs and changes nothing: one list call, no writes.
    h.standin.reset_counts();
    let plan = h.verify(true).await;
    let mut kinds: Vec<(String, i32, bool)> = plan
        .repairs
        .iter()
        .map(|r| (r.rule.clone().expect("rule").login, r.kind, r.done))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("alice".to_owned(), pb::RepairKind::Recreated as i32, false),
            ("bob".to_owned(), pb::RepairKind::Deleted as i32, false),
            ("dave".to_owned(), pb::RepairKind::Adopted as i32, false),
        ]
    );
    assert_eq!((plan.checked, plan.foreign), (4, 1), "{plan:?}");
    let counts = h.standin.counts();
    assert_eq!(
        (counts.total(), counts.requests(Kind::List)),
        (1, 1),
        "{counts:?}"
    );
    assert!(h.rule_of("alice", P).is_none());

    // The real pass repairs all three.
    let repaired = h.verify(false).await;
    assert_eq!(repaired.repairs.len(), 3, "{repaired:?}");
    assert!(
        repaired
            .repairs
            .iter()
            .all(|r| r.done && r.error.is_empty()),
        "{repaired:?}"
    );
    assert_eq!(repaired.foreign, 1);
    let alice = h.rule_of("alice", P).expect("alice's rule is back");
    assert_ne!(alice.id.as_deref(), Some(lost.as_str()));
    assert!(h.rule_of("bob", P).is_none());
    let registry = h.registry_rules(4).await;
    assert_eq!(registry.len(), 2);
    assert!(
        registry
            .iter()
            .all(|r| r.state == pb::RuleState::Active as i32)
    );
    assert_eq!(
        registry
            .iter()
            .find(|r| r.login == "alice")
            .map(|r| r.access_id.clone()),
        alice.id
    );
    assert_eq!(
        h.registry_rules(5).await[0].state,
        pb::RuleState::Active as i32
    );
    assert_eq!(h.our_rules().len(), 3, "alice, carol and dave");
    assert_eq!(h.globus_rules().len(), 4, "and the foreign rule, untouched");

    // In sync now: a second verify repairs nothing.
    let clean = h.verify(false).await;
    assert!(clean.repairs.is_empty(), "{clean:?}");
    assert_eq!((clean.checked, clean.foreign), (3, 1));
}

both_backends!(verify_repairs_drift_and_leaves_foreign_rules_alone);
