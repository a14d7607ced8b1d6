//! The status page over real HTTP, on a coordinator with the fake peers: sign-in and sessions,
//! failures first with the service's report, hostile names escaped, the live feed following a
//! change, and the resync button's guards (role, CSRF, origin, the switch).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::Secret;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;
use smrtshare_coordinator::status::StatusConfig;

use crate::harness::{FakePeers, MemorySource, Running, eventually_async, settings, store};
use smrtshare_testkit::both_backends;

const OPERATOR: &str = "coordinator-token";
const VIEWER: &str = "read-only-status-token";
const HOSTILE: &str = r#"<script>alert('x')</script> & "Tomato""#;

fn config(resync: bool) -> StatusConfig {
    StatusConfig {
        viewer_token: Some(Secret::new(VIEWER)),
        resync,
        refresh: Duration::from_millis(200),
        session_ttl: Duration::from_secs(600),
        secure_cookie: false,
    }
}

/// A browser without JavaScript: keeps the session cookie, follows no redirect.
struct Viewer {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Viewer {
    fn new(running: &Running) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!(
                "http://{}",
                running.status.expect("the status page is served")
            ),
            cookie: None,
        }
    }

    fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let request = self.http.get(format!("{}{path}", self.base));
        self.with_cookie(request).send().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], origin: &str) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(ORIGIN, origin)
            .form(form);
        self.with_cookie(request).send().await.unwrap()
    }

    fn origin(&self) -> String {
        self.base.clone()
    }

    /// Signs in; answers the status and keeps the cookie it got.
    async fn sign_in(&mut self, token: &str) -> StatusCode {
        let answer = self
            .post("/login", &[("token", token)], &self.origin())
            .await;
        if let Some(set) = answer.headers().get(SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        answer.status()
    }

    async fn page(&self) -> String {
        let answer = self.get("/").await;
        assert_eq!(answer.status(), StatusCode::OK);
        let policy = answer.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        answer.text().await.unwrap()
    }
}

fn csrf(page: &str) -> String {
    let start = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

/// Reads a server-sent event stream until it holds `needle`; answers what it read.
async fn read_until(events: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(needle) {
            let chunk = events.chunk().await.unwrap().expect("the feed stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(read.is_ok(), "the feed never showed {needle:?}: {seen}");
    seen
}

fn location(answer: &reqwest::Response) -> &str {
    answer.headers()[LOCATION].to_str().unwrap()
}

async fn until_final(running: &Running, project_id: i64) {
    let client = running.client();
    eventually_async(
        Duration::from_secs(20),
        "the project's change to end",
        || {
            let mut client = client.clone();
            async move {
                let changes = client
                    .list_changes(pb::ListChangesRequest {
                        project_id,
                        page_size: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .changes;
                changes.first().is_some_and(|c| {
                    c.status != pb::ChangeStatus::InProgress as i32
                        && c.status != pb::ChangeStatus::Unspecified as i32
                })
            }
        },
    )
    .await;
}

async fn page_shows_failures_first_escaped_and_live(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d2"]);
    source.put(3, HOSTILE, &["bob"], &["d3"]);
    source.put(4, "Rice", &["carol", "dave"], &["d4"]);
    let peers = FakePeers::start().await;
    peers.access.hopeless.lock().unwrap().insert("dave".into());
    let running = Running::start_with_status(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::from_millis(50)),
        Some(config(true)),
    )
    .await;
    let mut client = running.client();
    for project_id in [2, 3, 4] {
        client
            .notify_project_changed(pb::NotifyProjectChangedRequest { project_id })
            .await
            .unwrap();
        until_final(&running, project_id).await;
    }

    // Nothing without a session; a wrong token opens none.
    let mut viewer = Viewer::new(&running);
    let answer = viewer.get("/").await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&answer), "/login");
    assert_eq!(
        viewer.get("/events").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        viewer.sign_in("not-the-token").await,
        StatusCode::UNAUTHORIZED
    );
    assert!(viewer.cookie.is_none());
    let cross = viewer
        .post("/login", &[("token", OPERATOR)], "http://evil.example")
        .await;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert_eq!(viewer.sign_in(OPERATOR).await, StatusCode::SEE_OTHER);

    let page = viewer.page().await;
    // Failures first, with the failed task's message and access's per-member report.
    let failure = page.find(r#"id="failure-4""#).expect("project 4 failed");
    assert!(failure < page.find(r#"id="project-2""#).unwrap());
    assert!(page.find(r#"id="project-4""#).unwrap() < page.find(r#"id="project-2""#).unwrap());
    let card = &page[failure..page[failure..].find("</article>").unwrap() + failure];
    assert!(card.contains(r#"data-target="access""#), "{card}");
    assert!(card.contains("PARTIAL"), "{card}");
    assert!(
        card.contains("<code>dave</code>") && card.contains("no Globus identity"),
        "{card}"
    );
    assert!(card.contains("1 other member fine"), "{card}");
    assert!(page.contains(r#"<section id="unresolved">"#));
    // The hostile name is text, never markup.
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;Tomato&quot;")
    );
    assert!(
        page.contains(r#"id="resync""#),
        "an operator sees the resync button"
    );

    // The live feed follows a change.
    let mut events = viewer.get("/events").await;
    assert_eq!(events.status(), StatusCode::OK);
    source.put(2, "Tomato pangenome", &["alice"], &["d2"]);
    client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap();
    let seen = read_until(&mut events, "Tomato pangenome").await;
    assert!(seen.contains("event: status"), "{seen}");
    // A page opened now was read before, or after, what the feed holds: its stream sends the
    // next reading whatever the feed held, although nothing changes any more.
    let mut late = viewer.get("/events").await;
    read_until(&mut late, "Tomato pangenome").await;
    drop((events, late));

    // Resync: only with this session's CSRF token, from this site.
    let token = csrf(&page);
    let origin = viewer.origin();
    let refused = [
        viewer.post("/resync", &[("csrf", "forged")], &origin).await,
        viewer
            .post("/resync", &[("csrf", &token)], "http://evil.example")
            .await,
    ];
    for answer in refused {
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    }
    assert!(!viewer.page().await.contains("resync-notice"));
    let answer = viewer.post("/resync", &[("csrf", &token)], &origin).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    eventually_async(Duration::from_secs(20), "the resync to end", || async {
        viewer.page().await.contains("Resync from this page, ended")
    })
    .await;

    // Signing out ends the session.
    let answer = viewer.post("/logout", &[("csrf", &token)], &origin).await;
    assert_eq!(location(&answer), "/login");
    assert_eq!(viewer.get("/").await.status(), StatusCode::SEE_OTHER);
    running.stop().await;
}

both_backends!(page_shows_failures_first_escaped_and_live);

async fn pending_analysis_jobs_are_listed_until_they_finish(backend: Backend) {
    let (store, _db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d2"]);
    source.put(3, "Rice", &["bob"], &["d3"]);
    source.put_job(7, 2, HOSTILE, "RUNNING", &["aligned.bam"]);
    source.put_job(8, 3, "Call variants", "SUCCESSFUL", &["variants.vcf"]);
    source.put_job(9, 3, "Assemble", "FAILED", &[]);
    let peers = FakePeers::start().await;
    let running = Running::start_with_status(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::from_millis(50)),
        Some(config(false)),
    )
    .await;
    let mut client = running.client();
    client.resync(pb::ResyncRequest::default()).await.unwrap();
    let mut viewer = Viewer::new(&running);
    assert_eq!(viewer.sign_in(VIEWER).await, StatusCode::SEE_OTHER);
    eventually_async(
        Duration::from_secs(20),
        "job 7 listed as pending",
        || async { viewer.page().await.contains(r#"id="job-7""#) },
    )
    .await;
    let page = viewer.page().await;
    let section = &page[page
        .find(r#"<section id="analysis">"#)
        .expect("the section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(section.contains("RUNNING"), "{section}");
    assert!(
        section.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "the job's name is text: {section}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    // Finished jobs, successful or failed, are not pending.
    assert!(
        !section.contains("job-8") && !section.contains("job-9"),
        "{section}"
    );

    source.put_job(7, 2, HOSTILE, "SUCCESSFUL", &["aligned.bam"]);
    client.resync(pb::ResyncRequest::default()).await.unwrap();
    eventually_async(Duration::from_secs(20), "the section to go", || async {
        !viewer.page().await.contains(r#"<section id="analysis">"#)
    })
    .await;
    running.stop().await;
}

both_backends!(pending_analysis_jobs_are_listed_until_they_finish);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_token_never_resyncs_and_the_switch_hides_the_button() {
    let (store, _db) = store(Backend::Sqlite, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d2"]);
    let peers = FakePeers::start().await;
    let running = Running::start_with_status(
        store,
        source,
        peers.peers(),
        settings("solo", Duration::from_millis(50)),
        Some(config(true)),
    )
    .await;
    let mut reader = Viewer::new(&running);
    assert_eq!(reader.sign_in(VIEWER).await, StatusCode::SEE_OTHER);
    let page = reader.page().await;
    assert!(!page.contains(r#"id="resync""#), "{page}");
    let answer = reader
        .post("/resync", &[("csrf", &csrf(&page))], &reader.origin())
        .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    running.stop().await;

    let (empty, _empty_db) = crate::harness::store(Backend::Sqlite, Clock::system()).await;
    let running = Running::start_with_status(
        empty,
        Arc::new(MemorySource::default()),
        peers.peers(),
        settings("solo", Duration::from_millis(50)),
        Some(config(false)),
    )
    .await;
    let mut operator = Viewer::new(&running);
    assert_eq!(operator.sign_in(OPERATOR).await, StatusCode::SEE_OTHER);
    let page = operator.page().await;
    assert!(!page.contains(r#"id="resync""#), "{page}");
    assert!(page.contains("No projects known yet"), "{page}");
    let answer = operator
        .post("/resync", &[("csrf", &csrf(&page))], &operator.origin())
        .await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    running.stop().await;
}
