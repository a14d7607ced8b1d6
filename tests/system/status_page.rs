//! The coordinator's status page in headless Chromium (WebDriver), on the demo stack with the
//! shipped NGINX mirror in front of SMRT Link: sign-in with the token, the demo projects
//! listed, a change made through NGINX appearing without a reload, a PARTIAL change with its
//! failed task, message and per-member report, the page at a phone's width, the resync button,
//! and no token in the log. `SMRTSHARE_STATUS_SCREENSHOT=<file.png>` saves a desktop-width
//! screenshot (the one in docs/).

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use smrtshare_api::coordinator::v1 as cpb;
use smrtshare_common::Secret;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_smrtlink::{ClientConfig, SmrtLinkClient};
use smrtshare_tests::browser::Browser;
use smrtshare_tests::stack::SMRTLINK_USER;
use smrtshare_tests::{Service, Stack, StackOptions};

use crate::nginx::start_nginx;

const WITHIN: Duration = Duration::from_secs(60);
const WRONG_TOKEN: &str = "wrong-token-5e1d9c";

/// Polls the text of the element at `css` until it contains `needle`; answers the text.
async fn wait_for_text(page: &Client, css: &str, needle: &str) -> String {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < WITHIN {
        if let Ok(element) = page.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{css} never showed {needle:?} within {WITHIN:?}; last: {last:?}");
}

async fn script(page: &Client, code: &str) -> serde_json::Value {
    page.execute(code, vec![]).await.unwrap()
}

fn number(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

async fn sign_in(page: &Client, token: &str) {
    let field = page.find(Locator::Css("#token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    page.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium() {
    let Some(browser) = Browser::start(1280, 900).await.expect("start chromium") else {
        return;
    };
    let scratch = smrtshare_testkit::tempfile::tempdir().unwrap();
    let secret = scratch.path().join("intake-secret");
    std::fs::write(&secret, "mirror-secret-3b7f1e\n").unwrap();
    let stack = Stack::start(StackOptions {
        coordinator_args: vec!["--intake-secret-file".into(), secret.display().to_string()],
        status_page: true,
        ..StackOptions::default()
    })
    .await
    .expect("start the stack");
    let nginx_dir = scratch.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = start_nginx(
        &nginx_dir,
        &stack.addresses().smrtlink,
        &stack.addresses().intake,
        &secret,
    );
    let ui = SmrtLinkClient::new(ClientConfig::new(
        format!("http://{}/SMRTLink/2.0.0", nginx.address)
            .parse()
            .unwrap(),
        SMRTLINK_USER,
        Secret::new(stack.secrets().smrtlink_password.clone()),
    ))
    .unwrap();
    let page = browser.client();
    let base = format!("http://{}", stack.addresses().status);

    // Signed out, the page asks for the token; a wrong one is refused.
    page.goto(&base).await.unwrap();
    assert!(page.current_url().await.unwrap().path() == "/login");
    sign_in(page, WRONG_TOKEN).await;
    wait_for_text(page, ".error", "not accepted").await;
    sign_in(page, &stack.secrets().operator_token).await;

    // The demo projects, every one in step.
    for (id, name) in [(2, "Tomato"), (3, "Rice"), (4, "Wheat")] {
        let row = wait_for_text(page, &format!("#project-{id}"), name).await;
        assert!(row.contains("OK"), "project {id}: {row}");
    }
    assert!(page.find(Locator::Css("#failures")).await.is_err());
    script(page, "window.smrtshareMarker = 7; return 1;").await;

    // A rename through NGINX reaches the open page without a reload.
    ui.update_project(
        2,
        &ProjectRequest {
            name: Some("Tomato pangenome".into()),
            ..ProjectRequest::default()
        },
    )
    .await
    .expect("rename through NGINX");
    wait_for_text(page, "#project-2", "Tomato pangenome").await;

    // frank has no Globus identity: adding him to Rice through NGINX makes a PARTIAL change
    // (staging OK, access FAILED), shown first with access's message and per-member report.
    ui.update_project(
        3,
        &ProjectRequest {
            members: Some(vec![
                Member::new(SMRTLINK_USER, Role::Owner),
                Member::new("carol", Role::CanView),
                Member::new("frank", Role::CanView),
            ]),
            ..ProjectRequest::default()
        },
    )
    .await
    .expect("add a member through NGINX");
    let card = wait_for_text(page, "#failure-3", "frank").await;
    let change = stack
        .coordinator()
        .unwrap()
        .list_changes(cpb::ListChangesRequest {
            project_id: 3,
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes
        .remove(0);
    assert_eq!(
        change.status,
        cpb::ChangeStatus::Partial as i32,
        "{change:?}"
    );
    let failed = change
        .tasks
        .iter()
        .find(|t| t.state == cpb::TaskState::Failed as i32)
        .expect("a failed task");
    assert_eq!(failed.target, cpb::Target::Access as i32);
    for expected in [
        "PARTIAL",
        "access",
        "FAILED",
        failed.last_message.trim(),
        "no Globus identity",
    ] {
        assert!(
            card.contains(expected),
            "{expected:?} not in the card: {card}"
        );
    }
    wait_for_text(page, "#unresolved", "frank").await;
    let failures_first = script(
        page,
        "return document.querySelector('#failures').compareDocumentPosition(
             document.querySelector('#projects')) === Node.DOCUMENT_POSITION_FOLLOWING;",
    )
    .await;
    assert_eq!(failures_first, serde_json::Value::Bool(true));
    let marker = script(page, "return window.smrtshareMarker;").await;
    assert_eq!(
        marker.as_i64(),
        Some(7),
        "the page reloaded instead of updating itself"
    );

    // A desktop-width screenshot of the whole page.
    browser.fit_page(1200).await.unwrap();
    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(path) = std::env::var_os("SMRTSHARE_STATUS_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
    }

    // A phone's width: nothing wider than the screen, the key parts on it.
    browser.viewport(375, 812).await.unwrap();
    let widths = script(
        page,
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
    )
    .await;
    let (scroll, client) = (number(&widths[0]), number(&widths[1]));
    assert!(
        scroll <= client,
        "{scroll} px of content in a {client} px screen"
    );
    // Tables become blocks of labelled lines: no cell is squeezed into a narrow column.
    let cells = script(
        page,
        "return Array.from(document.querySelectorAll('#project-2 td, #failure-3 td, #unresolved td'))
                    .map(td => Math.round(td.getBoundingClientRect().width));",
    )
    .await;
    let cells: Vec<u64> = cells.as_array().unwrap().iter().map(number).collect();
    assert!(cells.len() >= 10, "{cells:?}");
    assert!(
        cells.iter().all(|w| *w >= 300),
        "squeezed cells: {cells:?} px"
    );
    for css in [
        "#failure-3",
        "#project-2",
        "#unresolved",
        "#resync",
        "#live",
    ] {
        let element = page.find(Locator::Css(css)).await.unwrap();
        assert!(element.is_displayed().await.unwrap(), "{css} is hidden");
        let (x, _, width, _) = element.rectangle().await.unwrap();
        assert!(
            x >= 0.0 && x + width <= 375.5,
            "{css} spans {x}..{}",
            x + width
        );
    }

    // The resync button runs a resync and the page reports it.
    page.find(Locator::Css("#resync"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(page, "#resync-notice", "projects listed").await;

    // Neither token typed reached the log.
    let log = std::fs::read_to_string(stack.log(Service::Coordinator)).unwrap();
    assert!(
        log.contains("status page sign-in refused"),
        "the refusal is logged"
    );
    assert!(!log.contains(WRONG_TOKEN) && !log.contains(&stack.secrets().operator_token));
    browser.close().await.unwrap();
}
