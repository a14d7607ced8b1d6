//! A create whose answer is lost and whose retry is refused (issue 17, item 4): the first
//! attempt made the rule, the retry meets LimitExceeded (someone else took the last slot). The
//! refusal does not prove nothing happened, so the intent stays open and the rule is adopted,
//! never orphaned (orphaned, it would later be taken for someone else's and never revoked).

use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{Fault, FaultPlan, Kind};

use crate::support::{Harness, K, expect, outcomes};
use smrtshare_testkit::both_backends;

const P: &str = "/Project 2/";

/// The next create is made at Globus but its answer is lost; the retry is refused with
/// LimitExceeded.
fn lost_then_refused(h: &Harness) {
    h.standin.set_faults(
        FaultPlan::none()
            .then(Kind::Create, Fault::DropAnswer)
            .then(
                Kind::Create,
                Fault::Refuse {
                    status: 409,
                    code: "LimitExceeded".into(),
                },
            ),
    );
}

async fn a_grant_whose_retry_is_refused_keeps_its_intent(backend: Backend) {
    let h = Harness::start(backend).await;
    h.apply(9, "/Project 9/", &["frank"]).await;
    lost_then_refused(&h);
    let answer = h.apply(2, P, &["alice"]).await;
    assert_eq!(outcomes(&answer.members), expect(&[("alice", K::Failed)]));
    assert_eq!(answer.members[0].globus_code, "LimitExceeded");
    assert!(
        answer.members[0].message.contains("earlier attempt"),
        "{answer:?}"
    );
    let made = h
        .rule_of("alice", P)
        .expect("the first attempt made the rule");
    // The intent is still there: pending, no id yet.
    let rows = h.registry_rules(2).await;
    assert_eq!(rows.len(), 1, "the intent was forgotten: {rows:?}");
    assert_eq!(rows[0].state, pb::RuleState::Pending as i32);

    // Verify adopts it as smrtshare's own; revoking the project deletes it at Globus.
    let report = h.verify(false).await;
    assert_eq!(report.repairs.len(), 1, "{report:?}");
    assert_eq!(report.repairs[0].kind, pb::RepairKind::Adopted as i32);
    assert_eq!(
        report.repairs[0].rule.as_ref().map(|r| r.access_id.clone()),
        made.id
    );
    assert!(h.revoke(2, false).await.complete);
    assert!(h.rule_of("alice", P).is_none(), "revoked at Globus");
}

async fn a_recreate_whose_retry_is_refused_keeps_its_intent(backend: Backend) {
    let h = Harness::start(backend).await;
    h.apply(9, "/Project 9/", &["frank"]).await;
    h.apply(2, P, &["alice"]).await;
    let first = h.rule_of("alice", P).and_then(|r| r.id).expect("rule");
    assert!(
        h.standin
            .delete_rule_by_hand(smrtshare_globus_standin::DEFAULT_ENDPOINT, &first)
    );
    lost_then_refused(&h);

    // Verify re-creates the rule (a fresh intent on the row): made, answer lost, refused.
    let report = h.verify(false).await;
    assert_eq!(report.repairs.len(), 1, "{report:?}");
    assert!(!report.repairs[0].done, "{report:?}");
    let made = h.rule_of("alice", P).expect("made at Globus");
    let rows = h.registry_rules(2).await;
    assert_eq!(rows.len(), 1, "the member's record was dropped: {rows:?}");
    assert_eq!(rows[0].state, pb::RuleState::Pending as i32);

    let report = h.verify(false).await;
    assert_eq!(
        report.repairs[0].kind,
        pb::RepairKind::Adopted as i32,
        "{report:?}"
    );
    let rows = h.registry_rules(2).await;
    assert_eq!(Some(rows[0].access_id.clone()), made.id);
    assert!(h.revoke(2, false).await.complete);
    assert!(h.rule_of("alice", P).is_none());
}

both_backends!(
    a_grant_whose_retry_is_refused_keeps_its_intent,
    a_recreate_whose_retry_is_refused_keeps_its_intent,
);
