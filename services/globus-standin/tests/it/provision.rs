//! Identity provisioning (`provision=true`) and invitations (`notify_email` on a rule).

use reqwest::StatusCode;
use serde_json::{Value, json};
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, FaultPlan, Identity, Kind, StandIn,
    StandInConfig,
};

use super::{config, create, fetch_token, http, rule_body};

async fn lookup(
    standin: &StandIn,
    usernames: &str,
    provision: Option<&str>,
) -> (StatusCode, Value) {
    let mut query = vec![("usernames", usernames)];
    if let Some(p) = provision {
        query.push(("provision", p));
    }
    let response = http()
        .get(format!("{}/v2/api/identities", standin.url()))
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .query(&query)
        .send()
        .await
        .expect("identities call");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn provisioning_makes_unused_identities_for_allowed_domains() {
    let standin = StandIn::start(StandInConfig {
        provision_domains: vec!["example.edu".into()],
        ..config()
    })
    .await
    .expect("stand-in");
    let names = "alice@example.edu,newcomer@example.edu,stranger@elsewhere.org";
    let (_, plain) = lookup(&standin, names, None).await;
    assert_eq!(plain["identities"].as_array().map(Vec::len), Some(1));
    let (status, provisioned) = lookup(&standin, names, Some("true")).await;
    assert_eq!(status, StatusCode::OK);
    let found: Vec<(&str, &str)> = provisioned["identities"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| {
            (
                i["username"].as_str().unwrap_or(""),
                i["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("alice@example.edu", "used"),
            ("newcomer@example.edu", "unused")
        ]
    );
    // The same id on the next look-up, with or without provision.
    let (_, again) = lookup(&standin, "newcomer@example.edu", None).await;
    assert_eq!(
        again["identities"][0]["id"],
        provisioned["identities"][1]["id"]
    );
    assert_eq!(standin.provisioned(), 1);
    let (status, _) = lookup(&standin, names, Some("yes")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Faults apply to look-ups as to everything else.
    standin.set_faults(FaultPlan::none().then(Kind::Identities, Fault::ServiceUnavailable));
    let (status, _) = lookup(&standin, "other@example.edu", Some("true")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(standin.provisioned(), 1, "not processed");
}

#[tokio::test]
async fn a_rule_with_notify_email_sends_one_invitation() {
    let standin = StandIn::start(config()).await.expect("stand-in");
    let token = fetch_token(&standin).await;
    let alice = Identity::for_username("alice@example.edu").id;
    let mut body = rule_body(&alice, "/Project 2/");
    body["notify_email"] = json!("alice@lab.example.edu");
    body["notify_message"] = json!("Project 2 is shared with you.");
    let (status, made) = create(&standin, &token, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let sent = standin.invitations();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].email, "alice@lab.example.edu");
    assert_eq!(
        sent[0].message.as_deref(),
        Some("Project 2 is shared with you.")
    );
    assert_eq!(sent[0].rule_id, made["access_id"].as_str().unwrap_or(""));
    assert_eq!(sent[0].path, "/Project 2/");

    for (email, message) in [
        (json!("not an address"), json!(null)),
        (json!("a@b.example"), json!("x".repeat(2049))),
        (json!(null), json!("a message without an address")),
    ] {
        let mut bad = rule_body(&alice, "/Project 3/");
        bad["notify_email"] = email;
        bad["notify_message"] = message;
        let (status, answer) = create(&standin, &token, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    assert_eq!(standin.invitations().len(), 1, "refused rules send nothing");
}
