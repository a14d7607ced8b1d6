//! The 1000-rule limit: reported per member, loudly, and not retried in a loop.

use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{DEFAULT_ENDPOINT, Kind, NewRule};

use crate::support::{Harness, K, expect, outcomes};
use smrtshare_testkit::both_backends;

async fn the_rule_limit_fails_members_without_retrying_in_a_loop(backend: Backend) {
    let h = Harness::start(backend).await;
    // Project 9's one member, then 998 rules made by people: 999 of 1000.
    h.apply(9, "/Project 9/", &["frank"]).await;
    for i in 0..998u32 {
        let principal = format!("00000000-0000-4000-8000-{i:012}");
        h.standin
            .add_foreign_rule(
                DEFAULT_ENDPOINT,
                NewRule::identity_read(&principal, &format!("/Shared {i}/")),
            )
            .expect("foreign rule");
    }
    assert_eq!(h.globus_rules().len(), 999);

    // Three members, one slot: one granted, two refused with LimitExceeded.
    h.standin.reset_counts();
    let p = "/Project 2/";
    let answer = h.apply(2, p, &["alice", "bob", "carol"]).await;
    assert!(!answer.complete);
    let granted: Vec<&pb::MemberOutcome> = answer
        .members
        .iter()
        .filter(|m| m.outcome == K::Granted as i32)
        .collect();
    let refused: Vec<&pb::MemberOutcome> = answer
        .members
        .iter()
        .filter(|m| m.outcome == K::Failed as i32)
        .collect();
    assert_eq!((granted.len(), refused.len()), (1, 2), "{answer:?}");
    for member in &refused {
        assert_eq!(member.globus_code, "LimitExceeded");
        assert!(!member.message.is_empty());
    }
    assert_eq!(h.globus_rules().len(), 1000);
    let counts = h.standin.counts();
    assert!(
        counts.with_code(Kind::Create, "LimitExceeded") >= 1,
        "{counts:?}"
    );
    assert!(counts.requests(Kind::Create) <= 3, "{counts:?}");
    // No intent is left for the refused members: nothing was made for them.
    let registry = h.registry_rules(2).await;
    assert_eq!(registry.len(), 1);
    assert_eq!(registry[0].state, pb::RuleState::Active as i32);

    // Applying again soon: refused again, without a single create sent.
    h.standin.reset_counts();
    let again = h.apply(2, p, &["alice", "bob", "carol"]).await;
    let refused_again = again
        .members
        .iter()
        .filter(|m| m.outcome == K::Failed as i32 && m.globus_code == "LimitExceeded")
        .count();
    assert_eq!(refused_again, 2, "{again:?}");
    assert!(
        again
            .members
            .iter()
            .any(|m| m.message.contains("not attempted"))
    );
    assert_eq!(
        h.standin.counts().requests(Kind::Create),
        0,
        "not retried in a loop"
    );

    // smrtshare frees a slot (project 9 is revoked): creates resume at once, one more fits.
    let revoked = h.revoke(9, false).await;
    assert!(revoked.complete);
    h.standin.reset_counts();
    let third = h.apply(2, p, &["alice", "bob", "carol"]).await;
    let kinds: Vec<K> = outcomes(&third.members)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == K::AlreadyGranted).count(),
        1,
        "{third:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == K::Granted).count(),
        1,
        "{third:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == K::Failed).count(),
        1,
        "{third:?}"
    );
    assert_eq!(h.globus_rules().len(), 1000);
    assert_eq!(h.registry_rules(2).await.len(), 2);
}

async fn an_unknown_collection_is_a_failed_precondition(backend: Backend) {
    let h = Harness::start(backend).await;
    // Verify lists the collection: a collection Globus does not know is a configuration error.
    let mut options = h.options.clone();
    options.standin.endpoints = vec!["11111111-2222-4333-8444-555555555555".into()];
    let other = smrtshare_globus_standin::StandIn::start(options.standin.clone())
        .await
        .expect("stand-in");
    let running =
        crate::support::start_access(crate::support::config(&other, &h.db.url, &options)).await;
    let status = running
        .client
        .clone()
        .verify(pb::VerifyRequest { dry_run: true })
        .await
        .expect_err("unknown collection");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("EndpointNotFound"), "{status:?}");
    let answer = running
        .client
        .clone()
        .apply_project_access(pb::ApplyProjectAccessRequest {
            project_id: 2,
            path: "/P/".into(),
            logins: vec!["alice".into()],
            dry_run: false,
        })
        .await
        .expect("apply answers per member")
        .into_inner();
    assert_eq!(outcomes(&answer.members), expect(&[("alice", K::Failed)]));
    assert_eq!(answer.members[0].globus_code, "EndpointNotFound");
    running.stop().await;
}

both_backends!(
    the_rule_limit_fails_members_without_retrying_in_a_loop,
    an_unknown_collection_is_a_failed_precondition,
);
