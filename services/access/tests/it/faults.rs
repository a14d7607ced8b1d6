//! Globus failing: the retry contract, lost answers, tokens that expire, and a 30% fault rate
//! over 200 projects.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use smrtshare_api::access::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_globus_standin::{Fault, FaultPlan, Identity, Kind};

use crate::support::{DOMAIN, Harness, K, Options, eventually, expect, outcomes};
use smrtshare_testkit::both_backends;

async fn retries_follow_the_contract(backend: Backend) {
    let options = Options {
        timeout: Duration::from_millis(400),
        ..Options::default()
    };
    let h = Harness::start_with(backend, options).await;
    let p = "/Project 5/";

    // 503 and 429 are retried; the 429's Retry-After (1 s) is honoured.
    h.standin.set_faults(
        FaultPlan::none()
            .then(Kind::Create, Fault::ServiceUnavailable)
            .then(
                Kind::Create,
                Fault::TooManyRequests {
                    retry_after_secs: 1,
                },
            ),
    );
    let started = Instant::now();
    let applied = h.apply(5, p, &["alice"]).await;
    assert_eq!(outcomes(&applied.members), expect(&[("alice", K::Granted)]));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured: {:?}",
        started.elapsed()
    );
    let counts = h.standin.counts();
    assert_eq!(counts.with_code(Kind::Create, "ServiceUnavailable"), 1);
    assert_eq!(counts.with_code(Kind::Create, "TooManyRequests"), 1);
    assert_eq!(counts.with_code(Kind::Create, "Created"), 1);

    // 502 ExternalError is not retried: the member fails with Globus' code, the intent stays
    // open, and the next apply finds no rule at Globus and creates it.
    h.standin.reset_counts();
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Create, Fault::ExternalError));
    let failed = h.apply(5, p, &["alice", "bob"]).await;
    assert_eq!(
        outcomes(&failed.members),
        expect(&[("alice", K::AlreadyGranted), ("bob", K::Failed)])
    );
    assert!(!failed.complete);
    assert!(
        failed.members[1].globus_code.starts_with("ExternalError"),
        "{:?}",
        failed.members[1]
    );
    assert_eq!(h.standin.counts().requests(Kind::Create), 1, "not retried");
    let pending = h.registry_rules(5).await;
    let bob = pending
        .iter()
        .find(|r| r.login == "bob")
        .expect("bob's intent");
    assert_eq!(bob.state, pb::RuleState::Pending as i32);
    assert!(
        bob.last_error.contains("ExternalError"),
        "{}",
        bob.last_error
    );
    h.standin.reset_counts();
    let healed = h.apply(5, p, &["alice", "bob"]).await;
    assert_eq!(
        outcomes(&healed.members),
        expect(&[("alice", K::AlreadyGranted), ("bob", K::Granted)])
    );
    let counts = h.standin.counts();
    assert_eq!(
        (counts.requests(Kind::List), counts.requests(Kind::Create)),
        (1, 1)
    );

    // EndpointError is not retried either.
    h.standin.reset_counts();
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Create, Fault::EndpointError));
    let failed = h.apply(5, p, &["alice", "bob", "carol"]).await;
    assert_eq!(failed.members[2].globus_code, "EndpointError");
    assert_eq!(h.standin.counts().requests(Kind::Create), 1);

    // A create slower than the time limit times out and is retried; the slow one, processed
    // later, meets the rule the retry made and changes nothing.
    h.standin.reset_counts();
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Create, Fault::Slow { millis: 900 }));
    let slow = h.apply(5, p, &["alice", "bob", "carol"]).await;
    assert_eq!(
        slow.members[2].outcome,
        K::Granted as i32,
        "{:?}",
        slow.members[2]
    );
    assert_eq!(h.standin.counts().with_code(Kind::Create, "Created"), 1);
    // The abandoned request may still be processed (or dropped with its connection); if it
    // is, it meets the retry's rule.
    if eventually(Duration::from_secs(2), || {
        h.standin.counts().requests(Kind::Create) == 2
    })
    .await
    {
        assert_eq!(h.standin.counts().with_code(Kind::Create, "Exists"), 1);
    }
    assert_eq!(
        h.our_rules().iter().filter(|r| r.path == p).count(),
        3,
        "no duplicate rule"
    );

    // 500 and 504 are retried (here on deletes).
    h.standin.reset_counts();
    h.standin.set_faults(
        FaultPlan::none()
            .then(Kind::Delete, Fault::InternalError)
            .then(Kind::Delete, Fault::GatewayTimeout),
    );
    let revoked = h.revoke(5, false).await;
    assert!(revoked.complete, "{revoked:?}");
    assert_eq!(h.standin.counts().requests(Kind::Delete), 5);
    assert!(h.our_rules().is_empty());
}

async fn lost_answers_end_in_exists_and_not_found_which_are_successes(backend: Backend) {
    let h = Harness::start(backend).await;
    let p = "/Project 6/";
    // The create is made at Globus but its answer is lost; the retry is answered Exists.
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Create, Fault::DropAnswer));
    let applied = h.apply(6, p, &["alice"]).await;
    assert_eq!(outcomes(&applied.members), expect(&[("alice", K::Granted)]));
    assert!(
        applied.members[0].message.contains("adopted"),
        "{:?}",
        applied.members[0]
    );
    let counts = h.standin.counts();
    assert_eq!(counts.with_code(Kind::Create, "dropped"), 1);
    assert_eq!(counts.with_code(Kind::Create, "Exists"), 1);
    assert_eq!(counts.requests(Kind::List), 1);
    let rule = h.rule_of("alice", p).expect("one rule");
    assert_eq!(h.our_rules().len(), 1);
    let registry = h.registry_rules(6).await;
    assert_eq!(registry[0].access_id, rule.id.clone().expect("id"));
    assert_eq!(registry[0].state, pb::RuleState::Active as i32);

    // The delete is made but its answer is lost; the retry is answered AccessRuleNotFound.
    h.standin.reset_counts();
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Delete, Fault::DropAnswer));
    let revoked = h.revoke(6, false).await;
    assert_eq!(outcomes(&revoked.members), expect(&[("alice", K::Revoked)]));
    assert!(revoked.complete);
    let counts = h.standin.counts();
    assert_eq!(counts.with_code(Kind::Delete, "dropped"), 1);
    assert_eq!(counts.with_code(Kind::Delete, "AccessRuleNotFound"), 1);
    assert!(h.our_rules().is_empty());
    assert!(h.registry_rules(6).await.is_empty());

    // A request dropped before Globus saw it is simply sent again.
    h.standin.reset_counts();
    h.standin
        .set_faults(FaultPlan::none().then(Kind::Create, Fault::DropRequest));
    let applied = h.apply(6, p, &["bob"]).await;
    assert_eq!(outcomes(&applied.members), expect(&[("bob", K::Granted)]));
    assert_eq!(h.standin.counts().with_code(Kind::Create, "Created"), 1);
    assert_eq!(h.our_rules().len(), 1);
}

async fn a_token_that_expires_mid_run_is_replaced_once(backend: Backend) {
    // One member at a time, so the order of requests (and of 401s) is known.
    let mut options = Options::default();
    options.policy.member_concurrency = 1;
    let h = Harness::start_with(backend, options).await;
    h.apply(7, "/Project 7/", &["alice"]).await;
    assert_eq!(
        h.standin.counts().requests(Kind::Token),
        0,
        "the token from start-up is reused"
    );

    // Globus forgets the token (it expired early, or was revoked).
    h.standin.expire_tokens();
    h.standin.reset_counts();
    let applied = h.apply(8, "/Project 8/", &["alice", "bob"]).await;
    assert!(applied.complete, "{applied:?}");
    let counts = h.standin.counts();
    assert_eq!(
        counts.with_status(401),
        1,
        "one 401, then a new token: {counts:?}"
    );
    assert_eq!(counts.succeeded(Kind::Token), 1);
    assert_eq!(counts.succeeded(Kind::Create), 2);

    // Mid-run: the token expires between two creates of one apply.
    h.standin.reset_counts();
    h.standin.set_faults(
        FaultPlan::none()
            .then(Kind::Create, Fault::Slow { millis: 0 })
            .then(Kind::Create, Fault::ExpireTokens),
    );
    let applied = h.apply(9, "/Project 9/", &["alice", "bob", "carol"]).await;
    assert!(applied.complete, "{applied:?}");
    let counts = h.standin.counts();
    assert_eq!(counts.succeeded(Kind::Token), 1, "{counts:?}");
    assert_eq!(counts.with_status(401), 1, "{counts:?}");
    assert_eq!(
        h.our_rules()
            .iter()
            .filter(|r| r.path == "/Project 9/")
            .count(),
        3
    );
}

async fn thirty_percent_faults_converge_to_exactly_the_wanted_rules(backend: Backend) {
    const PROJECTS: i64 = 200;
    const MEMBERS: i64 = 3;
    let mut options = Options::default();
    options.retry.max_attempts = 8;
    let users: Vec<String> = (0..PROJECTS * MEMBERS)
        .map(|i| format!("u{i:03}"))
        .collect();
    options.standin.identities = users
        .iter()
        .map(|u| Identity::for_username(&format!("{u}@{DOMAIN}")))
        .collect();
    options.standin.seed = 30;
    let h = Harness::start_with(backend, options).await;
    h.standin.set_faults(FaultPlan::mixed(
        0.3,
        &[
            (
                Fault::TooManyRequests {
                    retry_after_secs: 0,
                },
                1,
            ),
            (Fault::ServiceUnavailable, 1),
            (Fault::ExternalError, 1),
            (Fault::DropRequest, 1),
            (Fault::DropAnswer, 1),
        ],
    ));
    let wanted: BTreeSet<(String, String)> = (0..PROJECTS)
        .flat_map(|p| {
            let h = &h;
            let users = &users;
            (0..MEMBERS).map(move |m| {
                let user = &users[usize::try_from(p * MEMBERS + m).expect("index")];
                (h.identity(user), format!("/Project {}/", p + 2))
            })
        })
        .collect();

    let mut incomplete: Vec<i64> = (0..PROJECTS).collect();
    let mut passes = 0;
    while !incomplete.is_empty() {
        passes += 1;
        assert!(
            passes <= 8,
            "not converged after 8 passes: {} projects left",
            incomplete.len()
        );
        let results: Vec<(i64, bool)> = futures::stream::iter(incomplete.clone())
            .map(|p| {
                let h = &h;
                let users = &users;
                async move {
                    let logins: Vec<&str> = (0..MEMBERS)
                        .map(|m| users[usize::try_from(p * MEMBERS + m).expect("index")].as_str())
                        .collect();
                    let done = match h
                        .try_apply(p + 2, &format!("/Project {}/", p + 2), &logins, false)
                        .await
                    {
                        Ok(answer) => answer.complete,
                        // Globus unreachable for this project's identity look-up: UNAVAILABLE.
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                            false
                        }
                    };
                    (p, done)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        incomplete = results
            .into_iter()
            .filter(|(_, done)| !done)
            .map(|(p, _)| p)
            .collect();
    }

    // Exactly the wanted rules: none missing, none twice, nothing else.
    let held: Vec<(String, String)> = h
        .our_rules()
        .into_iter()
        .map(|r| (r.principal, r.path))
        .collect();
    assert_eq!(held.len(), wanted.len(), "no duplicates");
    assert_eq!(held.into_iter().collect::<BTreeSet<_>>(), wanted);
    let counts = h.standin.counts();
    // Bounded retries: about 1/0.7 attempts per request at a 30% fault rate, plus the lists
    // that follow Exists; far below 2.5 times the 600 creates.
    assert!(
        counts.total() < 1500,
        "{} requests: {counts:?}",
        counts.total()
    );
    assert!(counts.requests(Kind::Create) < 1100, "{counts:?}");
    eprintln!(
        "converged in {passes} passes with {} requests: {:?}",
        counts.total(),
        counts.by_kind()
    );

    // Converged means in sync: one more pass over every project calls Globus not at all.
    h.standin.clear_faults();
    h.standin.reset_counts();
    for p in 0..PROJECTS {
        let logins: Vec<&str> = (0..MEMBERS)
            .map(|m| users[usize::try_from(p * MEMBERS + m).expect("index")].as_str())
            .collect();
        let answer = h
            .apply(p + 2, &format!("/Project {}/", p + 2), &logins)
            .await;
        assert!(
            answer
                .members
                .iter()
                .all(|m| m.outcome == K::AlreadyGranted as i32)
        );
    }
    assert_eq!(h.standin.counts().total(), 0);
}

both_backends!(
    retries_follow_the_contract,
    lost_answers_end_in_exists_and_not_found_which_are_successes,
    a_token_that_expires_mid_run_is_replaced_once,
    thirty_percent_faults_converge_to_exactly_the_wanted_rules,
);
