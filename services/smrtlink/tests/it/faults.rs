//! Retries, time limits, listings that fail half-way, odd answers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smrtshare_smrtlink::model::Member;
use smrtshare_smrtlink::{Error, SmrtLinkClient};
use smrtshare_smrtlink_standin::{Endpoint, ListingFailure, NewProject};

use crate::support::{PASSWORD, USER, child_20, fixture, project_json};

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    fx.standin.fail_next(2, 503, &[Endpoint::ListProjects]);
    let projects = client.list_projects().await.unwrap();
    assert_eq!(projects.len(), 2);
    let counters = fx.standin.counters();
    assert_eq!(counters.get(Endpoint::ListProjects), 3);
    assert_eq!(counters.injected_errors, 2);

    // The token endpoint is retried the same way.
    fx.standin.fail_next(1, 502, &[Endpoint::Login]);
    let fresh = fx.client();
    fresh.login().await.unwrap();
    assert_eq!(fx.standin.count(Endpoint::Login), 3);
}

#[tokio::test]
async fn persistent_server_errors_end_unavailable_in_bounded_time() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    client.login().await.unwrap();
    fx.standin
        .set_error_share(1.0, 500, &[Endpoint::GetProject]);
    let started = Instant::now();
    let error = client.get_project(2).await.unwrap_err();
    let elapsed = started.elapsed();
    match &error {
        Error::Unavailable {
            endpoint,
            attempts,
            message,
        } => {
            assert_eq!(endpoint, "GET /smrt-link/projects/2");
            assert_eq!(*attempts, 3);
            assert!(message.contains("HTTP 500"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(error.is_retryable());
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(fx.standin.count(Endpoint::GetProject), 3);

    // Nothing listening at all: connection refused, retried, unavailable.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut config = fx.standin.client_config(USER, PASSWORD);
    config.base_url = format!("http://{addr}/SMRTLink/2.0.0").parse().unwrap();
    let started = Instant::now();
    let error = SmrtLinkClient::new(config)
        .unwrap()
        .list_projects()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Enough projects that half a listing holds several complete ones.
fn add_projects(fx: &crate::support::Fixture, n: usize) {
    for i in 0..n {
        fx.standin
            .create_project(NewProject {
                name: format!("Project number {i}"),
                description: "x".repeat(40),
                members: vec![Member::new("admin", smrtshare_smrtlink::model::Role::Owner)],
                datasets: Vec::new(),
            })
            .unwrap();
    }
}

#[tokio::test]
async fn a_listing_cut_off_mid_body_is_an_error_never_a_short_list() {
    let Some(fx) = fixture().await else { return };
    add_projects(&fx, 30);
    let client = fx.client();
    fx.standin
        .fail_listings(ListingFailure::CloseMidBody, u32::MAX);
    let error = client.list_projects().await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    let counters = fx.standin.counters();
    assert_eq!(
        counters.get(Endpoint::ListProjects),
        3,
        "a dropped body is retried"
    );
    assert_eq!(counters.broken_listings, 3);

    // One broken listing, then a whole one: the retry yields the complete list.
    fx.standin.fail_listings(ListingFailure::CloseMidBody, 1);
    assert_eq!(client.list_projects().await.unwrap().len(), 32);
}

#[tokio::test]
async fn a_truncated_listing_is_a_protocol_error() {
    let Some(fx) = fixture().await else { return };
    add_projects(&fx, 30);
    let client = fx.client();
    fx.standin.fail_listings(ListingFailure::TruncatedJson, 1);
    let error = client.list_projects().await.unwrap_err();
    match &error {
        Error::Protocol { endpoint, message } => {
            assert_eq!(endpoint, "GET /smrt-link/projects");
            assert!(message.contains("invalid JSON"), "{message}");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert_eq!(fx.standin.count(Endpoint::ListProjects), 1);
    assert_eq!(client.list_projects().await.unwrap().len(), 32);
}

#[tokio::test]
async fn slow_answers_time_out() {
    let Some(fx) = fixture().await else { return };
    let mut config = fx.standin.client_config(USER, PASSWORD);
    config.request_timeout = Duration::from_millis(300);
    config.retry.max_attempts = 2;
    let client = SmrtLinkClient::new(config).unwrap();
    client.login().await.unwrap();
    fx.standin
        .set_delay(Duration::from_secs(3), &[Endpoint::GetProject]);
    let started = Instant::now();
    let error = client.get_project(2).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::Timeout { attempts: 2, limit, .. } if limit == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    // Other endpoints are not slowed.
    assert_eq!(client.list_projects().await.unwrap().len(), 2);
}

fn protocol_message(result: Result<impl std::fmt::Debug, Error>, endpoint: &str) -> String {
    match result {
        Err(Error::Protocol {
            endpoint: e,
            message,
        }) => {
            assert_eq!(e, endpoint);
            message
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn odd_answers_are_precise_protocol_errors_naming_field_and_endpoint() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let good = project_json(&fx.standin, 2);
    let bent = |change: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        change(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            bent(&|v| {
                v.as_object_mut().unwrap().remove("id");
            }),
            "project.id: missing",
        ),
        (
            bent(&|v| v["id"] = json!("2")),
            "project.id: expected an integer, found a string (\"2\")",
        ),
        (
            bent(&|v| v["id"] = json!(2.5)),
            "project.id: expected an integer, found a number (2.5)",
        ),
        (
            bent(&|v| v["isActive"] = json!("yes")),
            "project.isActive: expected a boolean",
        ),
        (
            bent(&|v| v["members"] = json!({})),
            "project.members: expected an array, found an object",
        ),
        (
            bent(&|v| v["members"][1]["role"] = json!(7)),
            "project.members[1].role: expected a string",
        ),
        (
            bent(&|v| v["datasets"][0]["uuid"] = json!("48a71a3e")),
            "project.datasets[0].uuid: not a UUID",
        ),
        (
            bent(&|v| v["datasets"][0]["id"] = json!(null)),
            "project.datasets[0].id: missing",
        ),
        (
            bent(&|v| v["datasets"][0]["numChildren"] = json!(-1)),
            "project.datasets[0].numChildren: expected a non-negative integer",
        ),
        (
            bent(&|v| v["updatedAt"] = json!("last tuesday")),
            "project.updatedAt: not a timestamp",
        ),
        (
            bent(&|v| v["id"] = json!(3)),
            "asked for project 2, got project 3",
        ),
        ("<html>Bad gateway</html>".to_owned(), "invalid JSON"),
        (
            "[]".to_owned(),
            "project: expected an object, found an array",
        ),
    ];
    for (body, expected) in &cases {
        fx.standin
            .set_raw_answer("/smrt-link/projects/2", 200, body);
        let message = protocol_message(client.get_project(2).await, "GET /smrt-link/projects/2");
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }

    // A listing with one odd item is an error, not a shorter list.
    fx.standin.set_raw_answer(
        "/smrt-link/projects",
        200,
        r#"[{"id":1,"name":"General Project","isActive":true},{"name":"No id","isActive":true}]"#,
    );
    let message = protocol_message(client.list_projects().await, "GET /smrt-link/projects");
    assert!(message.contains("projects[1].id: missing"), "{message}");
    fx.standin.set_raw_answer(
        "/smrt-link/projects",
        200,
        r#"[{"id":5,"name":"a","isActive":true},{"id":5,"name":"b","isActive":true}]"#,
    );
    let message = protocol_message(client.list_projects().await, "GET /smrt-link/projects");
    assert!(message.contains("listed twice"), "{message}");

    // Dataset look-ups are as strict.
    let path = format!("/smrt-link/datasets/search/{}", child_20());
    fx.standin
        .set_raw_answer(&path, 200, r#"{"id":"35","uuid":"x"}"#);
    let message = protocol_message(client.get_dataset(child_20()).await, &format!("GET {path}"));
    assert!(
        message.contains("dataset.id: expected an integer"),
        "{message}"
    );

    // Unexpected statuses are reported with SMRT Link's message; 4xx are not retried.
    fx.standin.clear_raw_answers();
    fx.standin.reset_counters();
    fx.standin.set_raw_answer(
        "/smrt-link/projects/2",
        403,
        r#"{"httpCode":403,"message":"no access to project 2"}"#,
    );
    match client.get_project(2).await {
        Err(Error::Rejected {
            status: 403,
            message,
            ..
        }) => assert_eq!(message, "no access to project 2"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(fx.standin.count(Endpoint::GetProject), 1);
}
