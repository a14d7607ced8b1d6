//! Rule ids as Globus hands them out: random UUIDs, never repeated, also not by a stand-in
//! started again with the same seed (a restarted local stack).

use std::collections::BTreeSet;

use reqwest::StatusCode;
use smrtshare_globus_standin::{Identity, StandIn};

use super::{config, create, fetch_token, rule_body};

async fn make_rules(standin: &StandIn) -> Vec<String> {
    let token = fetch_token(standin).await;
    let alice = Identity::for_username("alice@example.edu").id;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = create(standin, &token, rule_body(&alice, &format!("/P{n}/"))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["access_id"].as_str().expect("access_id").to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_restarted_stand_in_never_repeats_a_rule_id() {
    let first = StandIn::start(config()).await.expect("stand-in");
    let before = make_rules(&first).await;
    drop(first);
    // The same configuration and seed, as `scripts/stack` starts it again.
    let second = StandIn::start(config()).await.expect("stand-in");
    let after = make_rules(&second).await;
    let all: BTreeSet<&String> = before.iter().chain(&after).collect();
    assert_eq!(all.len(), 6, "{before:?} {after:?}");
}

#[tokio::test]
async fn a_test_can_make_it_repeat_an_id() {
    let standin = StandIn::start(config()).await.expect("stand-in");
    let token = fetch_token(&standin).await;
    let repeated = "0b0c4f9e-8a57-4e55-9a36-2f7d8d6c0a11";
    standin.repeat_rule_ids(&[repeated]);
    let bob = Identity::for_username("bob@example.edu").id;
    let (_, body) = create(&standin, &token, rule_body(&bob, "/P/")).await;
    assert_eq!(body["access_id"], repeated);
    let (_, body) = create(&standin, &token, rule_body(&bob, "/Q/")).await;
    assert_ne!(body["access_id"], repeated);
}
