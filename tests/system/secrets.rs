//! Secrets never reach the logs: after a full run at debug level (changes, a resync, restarts
//! that log in again, expired tokens, refused calls that carry a wrong token), no log of the five
//! processes holds the bearer tokens, the Globus client secret or the SMRT Link password.

use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_tests::logs::occurrences;
use smrtshare_tests::world::wait_converged;
use smrtshare_tests::{Service, Stack, StackOptions, grpcurl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log() {
    let mut stack = Stack::start(StackOptions {
        log_filter: Some("debug".into()),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let secrets = stack.secrets().clone();

    // Work: a mirrored web-UI change, a notification, a resync.
    let mut web = stack.web_ui().unwrap();
    let (_, mirrored) = web
        .update_project(
            3,
            &ProjectRequest {
                members: Some(vec![
                    Member::new("admin", Role::Owner),
                    Member::new("bob", Role::CanView),
                ]),
                ..ProjectRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(mirrored.accepted());
    let mut client = stack.coordinator().unwrap();
    client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 2 })
        .await
        .unwrap();
    client
        .resync(pb::ResyncRequest {
            dry_run: false,
            force: false,
        })
        .await
        .unwrap();
    wait_converged(&stack, &[], Duration::from_secs(20))
        .await
        .unwrap();

    // Refused calls, one carrying a real secret in the wrong place: the peer token sent to the
    // coordinator, the operator token sent to staging.
    let refusals = [
        (
            Service::Coordinator,
            Some(secrets.peer_token.as_str()),
            "smrtshare.coordinator.v1.Coordinator/ListProjects",
        ),
        (
            Service::Coordinator,
            None,
            "smrtshare.coordinator.v1.Coordinator/ListProjects",
        ),
        (
            Service::Staging,
            Some(secrets.operator_token.as_str()),
            "smrtshare.staging.v1.Staging/ListProjects",
        ),
        (
            Service::Access,
            Some("wrong-token"),
            "smrtshare.access.v1.Access/ListRules",
        ),
    ];
    for (service, token, rpc) in refusals {
        let out = grpcurl::run(stack.grpc_address(service), token, Some("{}"), &[rpc])
            .await
            .unwrap();
        assert!(
            !out.success,
            "{service} accepted a wrong token: {}",
            out.text()
        );
        assert!(out.stderr.contains("Unauthenticated"), "{}", out.text());
    }

    // Tokens expire at both stand-ins, and two services start again: every login happens again.
    let http = reqwest::Client::new();
    let expired = http
        .post(format!("{}/admin/expire-tokens", stack.addresses().globus))
        .send()
        .await
        .unwrap();
    assert!(expired.status().is_success());
    let expired = http
        .post(format!(
            "{}/admin/tokens/expire",
            stack.addresses().smrtlink
        ))
        .json(&serde_json::json!({"refresh": true}))
        .send()
        .await
        .unwrap();
    assert!(
        expired.status().is_success(),
        "{}",
        expired.text().await.unwrap()
    );
    stack.restart(Service::Access).await.unwrap();
    stack.restart(Service::Coordinator).await.unwrap();
    stack
        .smrtlink_admin()
        .put_member(4, "carol", "CAN_EDIT")
        .await
        .unwrap();
    let mut client = stack.coordinator().unwrap();
    client
        .notify_project_changed(pb::NotifyProjectChangedRequest { project_id: 4 })
        .await
        .unwrap();
    wait_converged(&stack, &[], Duration::from_secs(20))
        .await
        .unwrap();

    // The scan means something: every log has lines, at debug level.
    for (service, log) in stack.logs() {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.lines().count() > 3, "{service}: log nearly empty");
        assert!(
            text.contains("\"level\":\"DEBUG\""),
            "{service}: no debug lines"
        );
    }
    let mut leaks = Vec::new();
    for (service, log) in stack.logs() {
        for (what, value) in secrets.all() {
            for (line, text) in occurrences(&log, value) {
                leaks.push(format!("{service} log line {line}: the {what}: {text}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in logs:\n{}", leaks.join("\n"));
}
