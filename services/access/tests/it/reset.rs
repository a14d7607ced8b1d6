//! A Globus that hands out a rule id smrtshare already holds for another rule (a stand-in that
//! was restarted used to): the new rule takes the id, the stale record is made again.

use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::DEFAULT_ENDPOINT;

use crate::support::{Harness, K, expect, outcomes};
use smrtshare_testkit::both_backends;

async fn a_rule_id_globus_reuses_moves_to_the_new_rule_and_the_old_one_is_made_again(
    backend: Backend,
) {
    let h = Harness::start(backend).await;
    let first = h.apply(2, "/Project 2/", &["alice"]).await;
    let reused = first.members[0].access_id.clone();
    // Globus loses alice's rule (reset), then gives bob's new rule the same id.
    assert!(h.standin.delete_rule_by_hand(DEFAULT_ENDPOINT, &reused));
    h.standin.repeat_rule_ids(&[&reused]);
    let second = h.apply(3, "/Project 3/", &["bob"]).await;
    assert_eq!(outcomes(&second.members), expect(&[("bob", K::Granted)]));
    assert_eq!(second.members[0].access_id, reused);

    // alice's record no longer claims the id: it is an open intent, made again by Verify.
    let alice = h.registry_rules(2).await;
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].state, pb::RuleState::Pending as i32, "{alice:?}");
    assert!(alice[0].access_id.is_empty());
    assert!(alice[0].last_error.contains("gone"), "{alice:?}");
    let repaired = h.verify(false).await;
    assert_eq!(repaired.repairs.len(), 1, "{repaired:?}");
    assert!(repaired.repairs[0].done, "{repaired:?}");
    let alice = h.registry_rules(2).await;
    assert_eq!(alice[0].state, pb::RuleState::Active as i32);
    assert_ne!(alice[0].access_id, reused);
    let held = h
        .rule_of("alice", "/Project 2/")
        .expect("alice's rule is back");
    assert_eq!(held.id.as_deref(), Some(alice[0].access_id.as_str()));
    // Both rules at Globus, each recorded once; a second Verify finds nothing to do.
    assert_eq!(h.our_rules().len(), 2);
    assert!(h.verify(false).await.repairs.is_empty());
}

async fn verify_does_not_take_a_reused_id_for_the_recorded_rule(backend: Backend) {
    let h = Harness::start(backend).await;
    let first = h.apply(2, "/Project 2/", &["alice"]).await;
    let reused = first.members[0].access_id.clone();
    // Globus is reset and the id now names a rule a person made for someone else.
    assert!(h.standin.delete_rule_by_hand(DEFAULT_ENDPOINT, &reused));
    h.standin.repeat_rule_ids(&[&reused]);
    let carol = h.identity("carol");
    h.standin
        .add_foreign_rule(
            DEFAULT_ENDPOINT,
            smrtshare_globus_standin::NewRule::identity_read(&carol, "/Elsewhere/"),
        )
        .expect("foreign rule");
    let report = h.verify(false).await;
    assert_eq!(report.repairs.len(), 1, "{report:?}");
    assert_eq!(report.repairs[0].kind, pb::RepairKind::Recreated as i32);
    assert_eq!(
        report.foreign, 1,
        "carol's rule is not smrtshare's: {report:?}"
    );
    assert!(h.rule_of("alice", "/Project 2/").is_some());
}

both_backends!(
    a_rule_id_globus_reuses_moves_to_the_new_rule_and_the_old_one_is_made_again,
    verify_does_not_take_a_reused_id_for_the_recorded_rule,
);
