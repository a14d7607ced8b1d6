//! What an operator watches: every metric the shipped dashboard and alert rules read is exported
//! by the running services, and the logs are honest (each field once per JSON line; no colour
//! codes in a log file).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_tests::monitoring::{
    ALERTS, DASHBOARD, PROMETHEUS_OWN, dashboard_queries, metric_names, rule_queries, sample_names,
};
use smrtshare_tests::process::{Process, Spec};
use smrtshare_tests::stack::{COLLECTION, GLOBUS_CLIENT_ID};
use smrtshare_tests::world::wait_converged;
use smrtshare_tests::{Service, Stack, StackOptions, workspace_root};

/// Every metric name the dashboard and the alert rules read, with where each is read.
fn referenced() -> BTreeMap<String, Vec<String>> {
    let root = workspace_root();
    let mut queries = dashboard_queries(&root.join(DASHBOARD)).unwrap();
    queries.extend(rule_queries(&root.join(ALERTS)).unwrap());
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for query in queries {
        let found = metric_names(&query.expr)
            .unwrap_or_else(|e| panic!("{}: {e:#}: {}", query.origin, query.expr));
        assert!(
            !found.is_empty(),
            "{} reads no metric: {}",
            query.origin,
            query.expr
        );
        for name in found {
            names.entry(name).or_default().push(query.origin.clone());
        }
    }
    names
}

/// The sample names every service's `/metrics` exports now, and the families they declare.
async fn exported(stack: &Stack) -> (BTreeSet<String>, BTreeSet<String>) {
    let http = reqwest::Client::new();
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for (service, address) in &stack.addresses().metrics {
        let answer = http
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("scraping {service}: {e}"));
        assert!(
            answer.status().is_success(),
            "{service}: {}",
            answer.status()
        );
        let text = answer.text().await.unwrap();
        samples.extend(sample_names(&text));
        families.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .map(str::to_owned),
        );
    }
    (samples, families)
}

/// Referenced names no service exports a sample of (Prometheus's own `up` aside), each with
/// where it is read and, for a declared family without samples, a hint.
fn missing(
    referenced: &BTreeMap<String, Vec<String>>,
    samples: &BTreeSet<String>,
    families: &BTreeSet<String>,
) -> Vec<String> {
    referenced
        .iter()
        .filter(|(name, _)| !samples.contains(*name) && !PROMETHEUS_OWN.contains(&name.as_str()))
        .map(|(name, origins)| {
            let family = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            let hint = if families.contains(family) {
                " (declared, but no series yet)"
            } else {
                ""
            };
            format!("{name}{hint}, read by {}", origins.join(", "))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_read_is_exported_and_logs_carry_each_field_once()
{
    let referenced = referenced();
    assert!(referenced.len() > 30, "{referenced:?}");
    for name in referenced.keys() {
        assert!(
            name.starts_with("smrtshare_") || PROMETHEUS_OWN.contains(&name.as_str()),
            "not a smrtshare metric (a label or function taken for one?): {name}"
        );
    }
    let stack = Stack::start(StackOptions::default()).await.unwrap();

    // Work an operator would see: Globus throttles the next rule create (429, retried); carol
    // joins Wheat in the web UI (mirrored), then alice leaves it (a revocation); a Notify; a
    // resync.
    stack
        .globus()
        .set_faults(&json!({"script": [
            {"kind": "create", "fault": "too_many_requests", "retry_after_secs": 0}
        ]}))
        .await
        .unwrap();
    let mut web = stack.web_ui().unwrap();
    for members in [vec!["dave", "alice", "carol"], vec!["dave", "carol"]] {
        let mut list = vec![Member::new("admin", Role::Owner)];
        list.extend(members.iter().map(|m| Member::new(*m, Role::CanView)));
        let (_, mirrored) = web
            .update_project(
                4,
                &ProjectRequest {
                    members: Some(list),
                    ..ProjectRequest::default()
                },
            )
            .await
            .unwrap();
        assert!(mirrored.accepted(), "{mirrored:?}");
        wait_converged(&stack, &[], Duration::from_secs(30))
            .await
            .unwrap();
    }
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
    wait_converged(&stack, &[], Duration::from_secs(30))
        .await
        .unwrap();

    // Results are recorded (and counted) just after the world shows them: look again briefly.
    let started = Instant::now();
    let (samples, families) = loop {
        let (samples, families) = exported(&stack).await;
        if missing(&referenced, &samples, &families).is_empty()
            || started.elapsed() > Duration::from_secs(15)
        {
            break (samples, families);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let missing = missing(&referenced, &samples, &families);
    assert!(
        missing.is_empty(),
        "read by the dashboard or the alerts but exported by no service:\n  {}",
        missing.join("\n  ")
    );

    // Every JSON line of every process holds a change id at most once, and lines of the work
    // above hold one (from a span or from the event).
    let mut with_change = 0;
    for (service, path) in stack.logs() {
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let parsed: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{service}: not a JSON line ({e}): {line}"));
            assert!(parsed.is_object(), "{service}: {line}");
            let count = line.matches("\"change_id\"").count();
            assert!(count <= 1, "{service}: the change id {count} times: {line}");
            with_change += count;
        }
    }
    assert!(
        with_change > 10,
        "only {with_change} lines carry a change id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_logs_written_to_a_file_have_no_colour_codes() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let secret = dir.path().join("globus-secret");
    std::fs::write(&secret, "s3cret-for-the-test\n").unwrap();
    let log = dir.path().join("globus.log");
    let spec = Spec::new(smrtshare_tests::stack::binary(Service::Globus.binary()).unwrap())
        .args(["--log-format", "human"])
        .flag("--listen", "127.0.0.1:0")
        .flag("--client-id", GLOBUS_CLIENT_ID)
        .flag("--client-secret-file", &secret)
        .flag("--endpoint", COLLECTION);
    let _process = Process::start("globus", spec, &log).unwrap();
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("globus stand-in listening") {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no listening line: {text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let line = text
        .lines()
        .find(|l| l.contains("globus stand-in listening"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in a log file:\n{text:?}"
    );
}
