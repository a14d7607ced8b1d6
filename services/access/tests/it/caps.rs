//! The caps (1,000 rules per collection, 100 per identity, configurable): a member over a cap is
//! a permanent outcome naming the cap and the remedy, no Globus call is made for it, nothing is
//! retried in a loop; Verify warns from 90%, and metrics show the usage.

use smrtshare_access::SharingMode;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{DEFAULT_ENDPOINT, Kind, NewRule};

use crate::support::{Harness, K, Options};
use smrtshare_testkit::both_backends;

fn capped(collection: u32, identity: u32) -> Options {
    let mut options = Options::default();
    options.policy.caps.collection = collection;
    options.policy.caps.identity = identity;
    options
}

async fn over_the_collection_cap_members_are_refused_without_a_call(backend: Backend) {
    let h = Harness::start_with(backend, capped(6, 100)).await;
    // A rule someone else made counts once Verify has seen it.
    h.standin
        .add_foreign_rule(
            DEFAULT_ENDPOINT,
            NewRule::identity_read("abcdefab-cdef-4abc-8def-abcdefabcdef", "/Shared/"),
        )
        .expect("foreign rule");
    h.verify(false).await;
    h.apply(2, "/Project 2/", &["alice", "bob", "carol"]).await;
    h.standin.reset_counts();
    let answer = h.apply(3, "/Project 3/", &["alice", "bob", "carol"]).await;
    assert!(!answer.complete);
    let refused: Vec<_> = answer
        .members
        .iter()
        .filter(|m| m.outcome == K::Failed as i32)
        .collect();
    assert_eq!(refused.len(), 1, "{answer:?}");
    let member = refused[0];
    assert_eq!(member.globus_code, "CollectionRuleCap");
    assert!(member.permanent);
    assert!(
        member.message.contains("SMRTSHARE_ACCESS_SHARING=groups"),
        "{member:?}"
    );
    assert!(member.message.contains("6 access rules"), "{member:?}");
    assert_eq!(
        h.standin.counts().requests(Kind::Create),
        2,
        "no call for the refused member"
    );

    // Applying again: refused again, still without a create (no retry storm).
    h.standin.reset_counts();
    let again = h.apply(3, "/Project 3/", &["alice", "bob", "carol"]).await;
    assert_eq!(
        again
            .members
            .iter()
            .filter(|m| m.globus_code == "CollectionRuleCap")
            .count(),
        1
    );
    assert_eq!(h.standin.counts().writes(), 0);

    // Verify reports the usage and warns at 90% and more.
    let report = h.verify(true).await;
    let caps = report.caps.clone().expect("caps");
    assert_eq!(
        (
            caps.smrtshare_rules,
            caps.foreign_rules,
            caps.collection_cap
        ),
        (5, 1, 6)
    );
    assert_eq!(report.warnings.len(), 1, "{report:?}");
    assert!(report.warnings[0].contains("group sharing"), "{report:?}");
    assert_eq!(
        h.metric("smrtshare_access_cap_usage_ratio{cap=\"Collection\"}"),
        1.0
    );
    assert_eq!(
        h.metric("smrtshare_access_cap_refusals_total{cap=\"Collection\"}"),
        2.0
    );
    assert_eq!(
        h.metric("smrtshare_access_collection_rules{owner=\"others\"}"),
        1.0
    );
}

async fn over_the_identity_cap_a_member_is_refused_in_both_modes(backend: Backend) {
    for mode in [SharingMode::Rules, SharingMode::Groups] {
        let mut options = capped(1000, 2);
        options.policy.sharing = mode;
        let h = Harness::start_with(backend, options).await;
        h.apply(2, "/Project 2/", &["alice", "bob"]).await;
        h.apply(3, "/Project 3/", &["alice"]).await;
        h.standin.reset_counts();
        let answer = h.apply(4, "/Project 4/", &["alice", "bob"]).await;
        let alice = &answer.members[0];
        assert_eq!(alice.outcome, K::Failed as i32, "{mode:?}: {answer:?}");
        assert_eq!(alice.globus_code, "IdentityRuleCap");
        assert!(
            alice.permanent && alice.message.contains("2 rules"),
            "{alice:?}"
        );
        assert_eq!(
            answer.members[1].outcome,
            K::Granted as i32,
            "{mode:?}: {answer:?}"
        );
        let report = h.verify(true).await;
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("rules Globus counts for one identity")),
            "{mode:?}: {report:?}"
        );
    }
}

both_backends!(
    over_the_collection_cap_members_are_refused_without_a_call,
    over_the_identity_cap_a_member_is_refused_in_both_modes,
);
