//! The Groups API v2 over HTTP: a Groups token (a Transfer token is refused), create, read with
//! memberships, the caller's groups, batch add/remove with per-identity errors, delete, faults;
//! and group rules on the collection.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Fault, FaultPlan, GROUPS_SCOPE, Identity, Kind,
    StandIn, client_identity,
};

use super::{config, create, fetch_token, http};

async fn groups_token(standin: &StandIn) -> String {
    let answer: Value = http()
        .post(format!("{}/v2/oauth2/token", standin.url()))
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", GROUPS_SCOPE),
        ])
        .send()
        .await
        .expect("token call")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["resource_server"], "groups.api.globus.org");
    answer["access_token"].as_str().expect("token").to_owned()
}

async fn call(
    standin: &StandIn,
    token: &str,
    method: Method,
    tail: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http()
        .request(method, format!("{}/v2/groups{tail}", standin.url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("groups call");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn groups_are_made_filled_emptied_and_deleted_with_a_groups_token() {
    let standin = StandIn::start(config()).await.expect("stand-in");
    let transfer = fetch_token(&standin).await;
    let token = groups_token(&standin).await;
    let alice = Identity::for_username("alice@example.edu").id;
    let bob = Identity::for_username("bob@example.edu").id;
    let (me, _) = client_identity(DEFAULT_CLIENT_ID);

    // A Transfer token is not a Groups token, and a Groups token is not a Transfer token.
    let (status, body) = call(&standin, &transfer, Method::GET, "/my_groups", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = create(&standin, &token, super::rule_body(&alice, "/P/")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, group) = call(
        &standin,
        &token,
        Method::POST,
        "",
        Some(json!({"name": "smrtshare project 2", "description": "made by smrtshare"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{group}");
    let id = group["id"].as_str().expect("id").to_owned();
    assert_eq!(group["my_memberships"][0]["identity_id"], me);
    assert_eq!(group["my_memberships"][0]["role"], "admin");
    let (status, body) = call(
        &standin,
        &token,
        Method::POST,
        "",
        Some(json!({"name": " "})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Add two, one of them twice and one unknown identity: per-identity errors.
    let unknown = "00000000-0000-4000-8000-000000000009";
    let (status, answer) = call(
        &standin,
        &token,
        Method::POST,
        &format!("/{id}"),
        Some(json!({"add": [
            {"identity_id": alice, "role": "member"},
            {"identity_id": bob},
            {"identity_id": alice},
            {"identity_id": unknown},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["add"].as_array().map(Vec::len), Some(2), "{answer}");
    let errors = answer["errors"]["add"].as_array().expect("errors");
    let codes: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["identity_id"].as_str().unwrap_or(""),
                e["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (alice.as_str(), "ALREADY_ACTIVE"),
            (unknown, "INVALID_IDENTITY")
        ]
    );

    // Read with memberships; the caller's groups list it.
    let (_, doc) = call(
        &standin,
        &token,
        Method::GET,
        &format!("/{id}?include=memberships"),
        None,
    )
    .await;
    let members: Vec<&str> = doc["memberships"]
        .as_array()
        .expect("memberships")
        .iter()
        .filter_map(|m| m["identity_id"].as_str())
        .collect();
    assert_eq!(members, [me.as_str(), alice.as_str(), bob.as_str()]);
    let (_, mine) = call(&standin, &token, Method::GET, "/my_groups", None).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));

    // Remove bob, then bob again (NO_MEMBERSHIP); unknown actions are refused whole.
    let (_, answer) = call(
        &standin,
        &token,
        Method::POST,
        &format!("/{id}"),
        Some(json!({"remove": [{"identity_id": bob}, {"identity_id": bob}]})),
    )
    .await;
    assert_eq!(answer["remove"][0]["status"], "removed", "{answer}");
    assert_eq!(answer["errors"]["remove"][0]["code"], "NO_MEMBERSHIP");
    let (status, _) = call(
        &standin,
        &token,
        Method::POST,
        &format!("/{id}"),
        Some(json!({"invite": [{"identity_id": bob}]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A rule for the group on the collection; an unknown group is refused.
    let group_rule = |group: &str| {
        json!({"DATA_TYPE": "access", "principal_type": "group", "principal": group,
               "path": "/Project 2/", "permissions": "r"})
    };
    let (status, body) = create(&standin, &transfer, group_rule(&id)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = create(&standin, &transfer, group_rule(unknown)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A group someone else made is not ours: not listed, not readable, not deletable.
    let foreign = standin.add_foreign_group("Lab", "", &[&alice], None);
    let (_, mine) = call(&standin, &token, Method::GET, "/my_groups", None).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    let (status, _) = call(&standin, &token, Method::GET, &format!("/{foreign}"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &standin,
        &token,
        Method::DELETE,
        &format!("/{foreign}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Delete ours; a second delete finds nothing.
    let (status, _) = call(&standin, &token, Method::DELETE, &format!("/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&standin, &token, Method::DELETE, &format!("/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(standin.groups().len(), 1, "only the foreign group is left");

    let counts = standin.counts();
    assert_eq!(counts.requests(Kind::GroupCreate), 2);
    assert_eq!(counts.requests(Kind::GroupMembers), 3);
    assert_eq!(counts.requests(Kind::GroupDelete), 3);
    assert_eq!(counts.with_code(Kind::GroupDelete, "NOT_FOUND"), 1);
}

#[tokio::test]
async fn group_calls_meet_the_same_faults() {
    let standin = StandIn::start(config()).await.expect("stand-in");
    let token = groups_token(&standin).await;
    standin.set_faults(
        FaultPlan::none()
            .then(Kind::GroupCreate, Fault::ServiceUnavailable)
            .then(
                Kind::GroupList,
                Fault::TooManyRequests {
                    retry_after_secs: 1,
                },
            ),
    );
    let (status, _) = call(
        &standin,
        &token,
        Method::POST,
        "",
        Some(json!({"name": "g"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(standin.groups().is_empty(), "not processed");
    let (status, _) = call(&standin, &token, Method::GET, "/my_groups", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // A create made whose answer is lost: the group exists, the caller never heard.
    standin.set_faults(FaultPlan::none().then(Kind::GroupCreate, Fault::DropAnswer));
    let lost = http()
        .post(format!("{}/v2/groups", standin.url()))
        .bearer_auth(&token)
        .json(&json!({"name": "g"}))
        .send()
        .await;
    assert!(lost.is_err(), "{lost:?}");
    assert_eq!(standin.groups().len(), 1);
}
