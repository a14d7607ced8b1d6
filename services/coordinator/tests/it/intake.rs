//! The mirror intake over real HTTP: 202 before any work, both path shapes, 405 for project 1,
//! 404 for anything else, and refusal of unknown sources and missing secrets.

use std::sync::Arc;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::Secret;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::intake::{SECRET_HEADER, parse_allowed};

use crate::harness::{FakePeers, MemorySource, Running, settings, status, store, wait_change};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_get_the_documented_answers() {
    let (store, _db) = store(Backend::Sqlite, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        source,
        peers.peers(),
        settings("solo", Duration::from_millis(50)),
    )
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", running.intake);

    let answer = http
        .put(format!("{base}/smrt-link/projects/2"))
        .body("{\"not\": \"trusted\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert!(
        answer.bytes().await.unwrap().is_empty(),
        "202 with an empty body"
    );
    for (method, path, code) in [
        (
            reqwest::Method::PUT,
            "/SMRTLink/2.0.0/smrt-link/projects/1",
            405,
        ),
        (reqwest::Method::DELETE, "/smrt-link/projects/1", 405),
        (reqwest::Method::GET, "/smrt-link/projects/2", 405),
        (reqwest::Method::PUT, "/smrt-link/projects/abc", 404),
        (reqwest::Method::PUT, "/smrt-link/projects/2%2F..%2F3", 404),
        (reqwest::Method::POST, "/smrt-link/datasets", 404),
        (
            reqwest::Method::POST,
            "/SMRTLink/2.0.0/smrt-link/projects",
            202,
        ),
        (
            reqwest::Method::POST,
            "/SMRTLink/2.0.0/smrt-link/job-manager/jobs/analysis",
            202,
        ),
    ] {
        let answer = http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), code, "{method} {path}");
    }

    // The PUT became a change that read SMRT Link (not the body) and fanned out.
    let mut client = running.client();
    let mut found = None;
    for _ in 0..100 {
        let changes = client
            .list_changes(pb::ListChangesRequest {
                project_id: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .changes;
        if let Some(c) = changes
            .into_iter()
            .find(|c| c.reason == pb::ChangeReason::Mirror as i32)
        {
            found = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let change = found.expect("the mirrored PUT was recorded");
    assert_eq!(change.request, "PUT /smrt-link/projects/2");
    let change = wait_change(
        &mut client,
        change.change_id,
        Duration::from_secs(20),
        |c| status(c) == pb::ChangeStatus::Ok,
    )
    .await;
    assert_eq!(change.tasks.len(), 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sources_and_missing_secrets_are_refused() {
    let (store, _db) = store(Backend::Sqlite, Clock::system()).await;
    let peers = FakePeers::start().await;
    let mut s = settings("solo", Duration::ZERO);
    s.intake.secret = Some(Secret::new("mirror-secret"));
    let running = Running::start(
        store.clone(),
        Arc::new(MemorySource::default()),
        peers.peers(),
        s,
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/smrt-link/projects/2", running.intake);
    assert_eq!(http.put(&url).send().await.unwrap().status(), 403);
    assert_eq!(
        http.put(&url)
            .header(SECRET_HEADER, "wrong")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        http.put(&url)
            .header(SECRET_HEADER, "mirror-secret")
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    running.stop().await;

    let mut s = settings("solo", Duration::ZERO);
    s.intake.allowed = parse_allowed(&["10.0.0.0/8".into()]).unwrap();
    let running = Running::start(
        store.clone(),
        Arc::new(MemorySource::default()),
        peers.peers(),
        s,
    )
    .await;
    let url = format!("http://{}/smrt-link/projects/3", running.intake);
    assert_eq!(
        http.put(&url).send().await.unwrap().status(),
        403,
        "loopback is not in 10.0.0.0/8"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        store
            .list_changes(smrtshare_coordinator::store::ChangeFilter {
                project_id: 3,
                status: None,
                before: 0,
                limit: 10,
            })
            .await
            .unwrap()
            .is_empty(),
        "a refused request records nothing"
    );
    running.stop().await;
}
