//! The stand-in against DESIGN.md section 4, over real HTTP with reqwest: the token endpoint,
//! identities, access rules with Globus' validations, faults, its rate limit, and the binary's
//! admin API.

mod groups;
mod provision;
mod rule_ids;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use smrtshare_globus_standin::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT, Fault, FaultPlan, Identity, Kind,
    NewRule, RateLimit, StandIn, StandInConfig, TRANSFER_SCOPE,
};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn config() -> StandInConfig {
    StandInConfig {
        identities: ["alice@example.edu", "bob@example.edu"]
            .iter()
            .map(|u| Identity::for_username(u))
            .collect(),
        ..StandInConfig::default()
    }
}

async fn fetch_token(standin: &StandIn) -> String {
    let answer: Value = http()
        .post(format!("{}/v2/oauth2/token", standin.url()))
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", TRANSFER_SCOPE),
        ])
        .send()
        .await
        .expect("token call")
        .json()
        .await
        .expect("json");
    answer["access_token"].as_str().expect("token").to_owned()
}

fn rules_url(standin: &StandIn) -> String {
    format!(
        "{}/endpoint/{DEFAULT_ENDPOINT}/access",
        standin.transfer_url()
    )
}

async fn create(standin: &StandIn, token: &str, body: Value) -> (StatusCode, Value) {
    let response = http()
        .post(rules_url(standin))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("create call");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn rule_body(principal: &str, path: &str) -> Value {
    json!({
        "DATA_TYPE": "access",
        "principal_type": "identity",
        "principal": principal,
        "path": path,
        "permissions": "r",
    })
}

#[tokio::test]
async fn the_token_endpoint_checks_credentials_grant_and_scope() {
    let standin = StandIn::start(config()).await.expect("start");
    let url = format!("{}/v2/oauth2/token", standin.url());
    let call = |id: &str, secret: &str, grant: &str, scope: &str| {
        http()
            .post(&url)
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", grant), ("scope", scope)])
            .send()
    };
    let ok = call(
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        "client_credentials",
        TRANSFER_SCOPE,
    )
    .await
    .expect("call");
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 172_800);
    assert_eq!(body["scope"], TRANSFER_SCOPE);
    assert_eq!(body["resource_server"], "transfer.api.globus.org");
    assert_eq!(body["other_tokens"], json!([]));
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 20));

    let wrong = call(
        DEFAULT_CLIENT_ID,
        "wrong",
        "client_credentials",
        TRANSFER_SCOPE,
    )
    .await
    .expect("call");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    let grant = call(
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        "password",
        TRANSFER_SCOPE,
    )
    .await
    .expect("call");
    assert_eq!(grant.status(), StatusCode::BAD_REQUEST);
    let scope = call(
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        "client_credentials",
        "openid",
    )
    .await
    .expect("call");
    assert_eq!(scope.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        scope.json::<Value>().await.expect("json")["error"],
        "invalid_scope"
    );
    let counts = standin.counts();
    assert_eq!(counts.requests(Kind::Token), 4);
    assert_eq!(counts.succeeded(Kind::Token), 1);
    assert_eq!(counts.with_code(Kind::Token, "invalid_client"), 1);
}

#[tokio::test]
async fn identities_take_client_credentials_only_and_leave_unknown_names_out() {
    let standin = StandIn::start(config()).await.expect("start");
    let url = format!("{}/v2/api/identities", standin.url());
    let answer = http()
        .get(&url)
        .query(&[(
            "usernames",
            "bob@example.edu,nobody@example.edu,ALICE@example.edu",
        )])
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.expect("json");
    let names: Vec<&str> = body["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| i["username"].as_str().expect("username"))
        .collect();
    assert_eq!(
        names,
        ["bob@example.edu", "alice@example.edu"],
        "unknown left out, case ignored"
    );
    let bob = &body["identities"][0];
    assert_eq!(
        bob["id"],
        standin.identity("bob@example.edu").expect("bob").id
    );
    for field in [
        "status",
        "name",
        "email",
        "organization",
        "identity_provider",
    ] {
        assert!(!bob[field].is_null(), "{field} missing");
    }

    // A transfer token is refused here; so are wrong credentials and more than 100 names.
    let transfer = fetch_token(&standin).await;
    let refused = http()
        .get(&url)
        .query(&[("usernames", "bob@example.edu")])
        .bearer_auth(&transfer)
        .send()
        .await
        .expect("call");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let wrong = http()
        .get(&url)
        .query(&[("usernames", "bob@example.edu")])
        .basic_auth(DEFAULT_CLIENT_ID, Some("x"))
        .send()
        .await
        .expect("call");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let many: Vec<String> = (0..101).map(|i| format!("u{i}@example.edu")).collect();
    let too_many = http()
        .get(&url)
        .query(&[("usernames", many.join(","))])
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .send()
        .await
        .expect("call");
    assert_eq!(too_many.status(), StatusCode::BAD_REQUEST);
    let hundred = http()
        .get(&url)
        .query(&[("usernames", many[..100].join(","))])
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .send()
        .await
        .expect("call");
    assert_eq!(hundred.status(), StatusCode::OK);
}

#[tokio::test]
async fn access_rules_follow_globus_validations_and_error_bodies() {
    let standin = StandIn::start(config()).await.expect("start");
    let token = fetch_token(&standin).await;
    let alice = standin.identity("alice@example.edu").expect("alice").id;

    let (status, created) = create(&standin, &token, rule_body(&alice, "/Project 2/")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["code"], "Created");
    assert_eq!(created["DATA_TYPE"], "access_create_result");
    assert_eq!(
        created["resource"],
        format!("/endpoint/{DEFAULT_ENDPOINT}/access")
    );
    assert!(
        created["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let id = created["access_id"].as_str().expect("access_id").to_owned();

    // The error body is {code, message, request_id, resource}.
    let (status, exists) = create(&standin, &token, rule_body(&alice, "/Project 2/")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(exists["code"], "Exists");
    for field in ["message", "request_id", "resource"] {
        assert!(
            exists[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {exists}"
        );
    }
    for bad in ["Project 2/", "/Project 2", "/a//b/", "/a/../b/"] {
        let (status, body) = create(&standin, &token, rule_body(&alice, bad)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("InvalidPath")),
            "{bad}"
        );
    }
    let mut rw = rule_body(&alice, "/Other/");
    rw["permissions"] = json!("rwx");
    assert_eq!(create(&standin, &token, rw).await.1["code"], "BadRequest");
    let mut past = rule_body(&alice, "/Other/");
    past["expiration_date"] = json!("2001-01-01T00:00:00+00:00");
    assert_eq!(create(&standin, &token, past).await.1["code"], "BadRequest");
    assert_eq!(
        create(&standin, &token, rule_body("not-a-uuid", "/Other/"))
            .await
            .1["code"],
        "BadRequest"
    );

    // Authentication: missing, unknown and expired tokens are 401 AuthenticationFailed.
    let (status, body) = create(&standin, "nonsense", rule_body(&alice, "/Other/")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("AuthenticationFailed"))
    );

    // Unknown collection and unknown rule.
    let other = format!(
        "{}/endpoint/00000000-0000-4000-8000-000000000000/access_list",
        standin.transfer_url()
    );
    let answer = http()
        .get(other)
        .bearer_auth(&token)
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        answer.json::<Value>().await.expect("json")["code"],
        "EndpointNotFound"
    );
    let missing = format!(
        "{}/00000000-0000-4000-8000-000000000001",
        rules_url(&standin)
    );
    for method in [
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let answer = http()
            .request(method.clone(), &missing)
            .bearer_auth(&token)
            .json(&json!({"DATA_TYPE": "access", "permissions": "r"}))
            .send()
            .await
            .expect("call");
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{method}");
        assert_eq!(
            answer.json::<Value>().await.expect("json")["code"],
            "AccessRuleNotFound"
        );
    }

    // Update the expiry; the listing shows it, and the role rule with id null.
    let rule_url = format!("{}/{id}", rules_url(&standin));
    let updated = http()
        .put(&rule_url)
        .bearer_auth(&token)
        .json(&json!({"DATA_TYPE": "access", "permissions": "r", "expiration_date": "2099-01-02T03:04:05+00:00"}))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(
        updated.json::<Value>().await.expect("json")["code"],
        "Updated"
    );
    let moved = http()
        .put(&rule_url)
        .bearer_auth(&token)
        .json(&json!({"DATA_TYPE": "access", "path": "/Elsewhere/"}))
        .send()
        .await
        .expect("update");
    assert_eq!(
        moved.status(),
        StatusCode::BAD_REQUEST,
        "a rule's path cannot change"
    );
    let list: Value = http()
        .get(format!(
            "{}/endpoint/{DEFAULT_ENDPOINT}/access_list",
            standin.transfer_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["DATA_TYPE"], "access_list");
    assert_eq!(list["length"], 2);
    let data = list["DATA"].as_array().expect("DATA");
    let role = data.iter().find(|r| r["id"].is_null()).expect("role rule");
    assert_eq!(
        (role["role_type"].as_str(), role["path"].as_str()),
        (Some("access_manager"), Some("/"))
    );
    let ours = data
        .iter()
        .find(|r| r["id"] == id.as_str())
        .expect("our rule");
    assert_eq!(ours["expiration_date"], "2099-01-02T03:04:05+00:00");
    assert_eq!(ours["principal"], alice.as_str());
    assert!(ours["create_time"].as_str().is_some());

    // Delete, then delete again.
    let deleted = http()
        .delete(&rule_url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(
        deleted.json::<Value>().await.expect("json")["code"],
        "Deleted"
    );
    let again = http()
        .delete(&rule_url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(
        again.json::<Value>().await.expect("json")["code"],
        "AccessRuleNotFound"
    );

    // The limit counts rules with ids only (not the role rule).
    standin.set_rule_limit(2);
    let bob = standin.identity("bob@example.edu").expect("bob").id;
    assert_eq!(
        create(&standin, &token, rule_body(&alice, "/A/")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        create(&standin, &token, rule_body(&bob, "/A/")).await.0,
        StatusCode::CREATED
    );
    let (status, body) = create(&standin, &token, rule_body(&bob, "/B/")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("LimitExceeded"))
    );

    // Tokens expire.
    standin.expire_tokens();
    let (status, body) = create(&standin, &token, rule_body(&bob, "/C/")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("AuthenticationFailed"))
    );
}

#[tokio::test(start_paused = true)]
async fn expired_rules_disappear_on_the_stand_ins_clock() {
    let standin = StandIn::start(StandInConfig {
        clock: smrtshare_globus_standin::Clock::following_tokio(),
        token_lifetime: Duration::from_secs(3600),
        ..config()
    })
    .await
    .expect("start");
    let alice = standin.identity("alice@example.edu").expect("alice").id;
    let mut rule = NewRule::identity_read(&alice, "/P/");
    rule.expiration_date = Some(standin.now() + chrono::Duration::days(2));
    standin
        .add_foreign_rule(DEFAULT_ENDPOINT, rule)
        .expect("rule");
    assert_eq!(
        standin
            .rules(DEFAULT_ENDPOINT)
            .expect("rules")
            .iter()
            .filter(|r| r.id.is_some())
            .count(),
        1
    );
    tokio::time::advance(Duration::from_secs(3 * 86_400)).await;
    assert_eq!(
        standin
            .rules(DEFAULT_ENDPOINT)
            .expect("rules")
            .iter()
            .filter(|r| r.id.is_some())
            .count(),
        0,
        "Globus deletes expired rules"
    );
}

#[tokio::test]
async fn faults_drop_connections_delay_and_answer_errors() {
    let standin = StandIn::start(config()).await.expect("start");
    let token = fetch_token(&standin).await;
    let alice = standin.identity("alice@example.edu").expect("alice").id;

    // Dropped before processing: no answer, no rule.
    standin.set_faults(FaultPlan::none().then(Kind::Create, Fault::DropRequest));
    let lost = http()
        .post(rules_url(&standin))
        .bearer_auth(&token)
        .json(&rule_body(&alice, "/D/"))
        .send()
        .await;
    assert!(
        lost.is_err(),
        "the connection closed without an answer: {lost:?}"
    );
    assert!(
        standin
            .rules(DEFAULT_ENDPOINT)
            .expect("rules")
            .iter()
            .all(|r| r.path != "/D/")
    );
    // Dropped after processing: no answer, but the rule exists.
    standin.set_faults(FaultPlan::none().then(Kind::Create, Fault::DropAnswer));
    let lost = http()
        .post(rules_url(&standin))
        .bearer_auth(&token)
        .json(&rule_body(&alice, "/D/"))
        .send()
        .await;
    assert!(lost.is_err());
    assert!(
        standin
            .rules(DEFAULT_ENDPOINT)
            .expect("rules")
            .iter()
            .any(|r| r.path == "/D/")
    );
    assert_eq!(standin.counts().with_code(Kind::Create, "dropped"), 2);

    // 429 with Retry-After, 503, 502 ExternalError: not processed.
    standin.set_faults(
        FaultPlan::none()
            .then(
                Kind::Create,
                Fault::TooManyRequests {
                    retry_after_secs: 7,
                },
            )
            .then(Kind::Create, Fault::ServiceUnavailable)
            .then(Kind::Create, Fault::ExternalError),
    );
    let answer = http()
        .post(rules_url(&standin))
        .bearer_auth(&token)
        .json(&rule_body(&alice, "/E/"))
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers()["retry-after"], "7");
    let answer = http()
        .post(rules_url(&standin))
        .bearer_auth(&token)
        .json(&rule_body(&alice, "/E/"))
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.json::<Value>().await.expect("json")["code"],
        "ServiceUnavailable"
    );
    let answer = http()
        .post(rules_url(&standin))
        .bearer_auth(&token)
        .json(&rule_body(&alice, "/E/"))
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    assert!(
        answer.json::<Value>().await.expect("json")["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("ExternalError"))
    );
    assert!(
        standin
            .rules(DEFAULT_ENDPOINT)
            .expect("rules")
            .iter()
            .all(|r| r.path != "/E/")
    );

    // Slow answers take their time.
    standin.set_faults(FaultPlan::none().then(Kind::List, Fault::Slow { millis: 300 }));
    let started = std::time::Instant::now();
    let answer = http()
        .get(format!(
            "{}/endpoint/{DEFAULT_ENDPOINT}/access_list",
            standin.transfer_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("call");
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // The same seed gives the same answers to the same sequence of requests.
    let statuses = |seed: u64| async move {
        let standin = StandIn::start(StandInConfig { seed, ..config() })
            .await
            .expect("start");
        let token = fetch_token(&standin).await;
        standin.set_faults(FaultPlan::mixed(
            0.5,
            &[(Fault::ServiceUnavailable, 1), (Fault::InternalError, 1)],
        ));
        let mut out = Vec::new();
        for _ in 0..40 {
            let answer = http()
                .get(format!(
                    "{}/endpoint/{DEFAULT_ENDPOINT}/access_list",
                    standin.transfer_url()
                ))
                .bearer_auth(&token)
                .send()
                .await
                .expect("call");
            out.push(answer.status().as_u16());
        }
        out
    };
    let first = statuses(11).await;
    assert_eq!(first, statuses(11).await);
    assert!(
        first.contains(&503) && first.contains(&500) && first.contains(&200),
        "{first:?}"
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_beyond_the_burst() {
    let standin = StandIn::start(StandInConfig {
        rate_limit: Some(RateLimit {
            per_second: 2.0,
            burst: 3,
        }),
        ..config()
    })
    .await
    .expect("start");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let answer = http()
            .get(format!(
                "{}/v2/api/identities?usernames=alice@example.edu",
                standin.url()
            ))
            .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
            .send()
            .await
            .expect("call");
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(answer.headers()["retry-after"], "1");
        }
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(
        standin.counts().with_code(Kind::Identities, "RateLimited"),
        2
    );
}

/// The binary with its admin API.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_globus_and_its_admin_api() {
    let dir = smrtshare_testkit::tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "binary-secret\n").expect("secret");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smrtshare-globus-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--client-id",
            "binary-client",
        ])
        .arg("--client-secret-file")
        .arg(&secret)
        .args([
            "--identity",
            "carol@example.edu=0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let stderr = child.stderr.take().expect("stderr");
    let binary = Binary(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("globus stand-in listening"))
            {
                let _ = tx.send(event["address"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("address logged");
    let base = format!("http://{address}");

    // The configured client, secret and identity.
    let answer: Value = http()
        .get(format!(
            "{base}/v2/api/identities?usernames=carol@example.edu"
        ))
        .basic_auth("binary-client", Some("binary-secret"))
        .send()
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["identities"][0]["id"],
        "0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c"
    );

    // Faults through the admin API: the next token request is answered 503.
    let plan = FaultPlan::none().then(Kind::Token, Fault::ServiceUnavailable);
    let put = http()
        .put(format!("{base}/admin/faults"))
        .json(&plan)
        .send()
        .await
        .expect("put faults");
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let token_call = || {
        http()
            .post(format!("{base}/v2/oauth2/token"))
            .basic_auth("binary-client", Some("binary-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", TRANSFER_SCOPE),
            ])
            .send()
    };
    assert_eq!(
        token_call().await.expect("call").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(token_call().await.expect("call").status(), StatusCode::OK);

    // A rule made by a person, listed through the admin API.
    let added = http()
        .post(format!("{base}/admin/endpoints/{DEFAULT_ENDPOINT}/rules"))
        .json(&json!({"principal_type": "identity", "principal": "0c0c0c0c-0c0c-4c0c-8c0c-0c0c0c0c0c0c", "path": "/Hand made/", "permissions": "r"}))
        .send()
        .await
        .expect("add");
    assert_eq!(added.status(), StatusCode::CREATED);
    let rules: Value = http()
        .get(format!("{base}/admin/endpoints/{DEFAULT_ENDPOINT}/rules"))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("json");
    let person = rules
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["path"] == "/Hand made/")
        .expect("rule");
    assert_eq!(person["made_by"]["by"], "person");

    // Counts, by kind and answer; admin calls are not counted.
    let counts: Value = http()
        .get(format!("{base}/admin/counts"))
        .send()
        .await
        .expect("counts")
        .json()
        .await
        .expect("json");
    let entries = counts["entries"].as_array().expect("entries");
    let find = |kind: &str, status: u64| {
        entries
            .iter()
            .find(|e| e["kind"] == kind && e["status"] == status)
            .map(|e| e["count"].as_u64().unwrap_or(0))
    };
    assert_eq!(find("token", 503), Some(1));
    assert_eq!(find("token", 200), Some(1));
    assert_eq!(find("identities", 200), Some(1));
    assert_eq!(entries.len(), 3, "{counts}");
    drop(binary);
}
