//! The monitoring files: the alert rules and the example scrape configuration pass promtool and
//! the rules' unit tests; every dashboard query is valid PromQL and reads the dashboard's
//! datasource variable; alerts carry a severity, a summary and a description naming only real
//! settings; the dashboard names only alerts that exist. (That every metric they read is
//! exported by the running services is checked by the system test `observability`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use smrtshare_tests::monitoring::{ALERTS, DASHBOARD, dashboard_queries, rule_queries};
use yaml_rust2::YamlLoader;

use super::{settings_of, workspace};

/// Debian's promtool (the `prometheus` package, installed by `scripts/ensure-tools`).
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file());
    found.expect("promtool is missing: run scripts/ensure-tools (it installs Debian's prometheus)")
}

/// Runs promtool with `args` in `dir` and fails the test with its output unless it succeeds.
fn promtool_ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_and_the_scrape_configuration_pass_promtool_and_their_unit_tests() {
    let dir = workspace().join("deploy/prometheus");
    let rules = promtool_ok(&dir, &["check", "rules", "alerts.yml"]);
    assert!(rules.contains("SUCCESS"), "{rules}");
    promtool_ok(&dir, &["check", "config", "prometheus.yml"]);
    let tests = promtool_ok(&dir, &["test", "rules", "alerts.test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
}

/// A dashboard query as Prometheus would receive it from Grafana.
fn as_prometheus_reads_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "2m")
        .replace("$__interval", "30s")
        .replace("$__range", "6h")
}

#[test]
fn every_dashboard_query_is_valid_promql_reading_the_datasource_variable() {
    let path = workspace().join(DASHBOARD);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable: {variables:?}"
    );
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel id repeated: {title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            !panel["description"].as_str().unwrap_or_default().is_empty(),
            "{title}: no description"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }

    // promtool parses each query as a recording rule's expression.
    let queries = dashboard_queries(&path).unwrap();
    assert!(queries.len() > 20, "{} queries", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, query) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&as_prometheus_reads_it(&query.expr)).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query{n}\n        expr: {expr}\n"
        ));
    }
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), &rules).unwrap();
    promtool_ok(dir.path(), &["check", "rules", "dashboard.yml"]);
}

#[test]
fn alerts_carry_a_severity_a_summary_and_a_description_naming_real_settings() {
    let path = workspace().join(ALERTS);
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let mut names = BTreeSet::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(names.insert(name.to_owned()), "alert {name} defined twice");
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for annotation in ["summary", "description"] {
                let value = rule["annotations"][annotation].as_str().unwrap_or_default();
                assert!(value.len() > 20, "{name}: {annotation} {value:?}");
            }
        }
    }
    assert_eq!(names.len(), rule_queries(&path).unwrap().len());

    // Every setting an alert tells the operator to look at exists: a flag's environment variable
    // of a binary, or a variable of the NGINX render script.
    let mut settings = BTreeSet::new();
    for binary in [
        "smrtshare-staging",
        "smrtshare-access",
        "smrtshare-coordinator",
    ] {
        settings.extend(settings_of(binary));
    }
    let render = std::fs::read_to_string(workspace().join("deploy/nginx/render")).unwrap();
    settings.extend(variables_in(&render));
    let named = variables_in(&text);
    assert!(named.len() > 10, "{named:?}");
    let unknown: Vec<_> = named.difference(&settings).collect();
    assert!(
        unknown.is_empty(),
        "alerts.yml names settings that do not exist: {unknown:?}"
    );

    // The dashboard points at alerts by name: they exist.
    let dashboard = std::fs::read_to_string(workspace().join(DASHBOARD)).unwrap();
    let pointed: BTreeSet<String> = dashboard
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.starts_with("Smrtshare") && w.len() > "Smrtshare".len())
        .map(str::to_owned)
        .collect();
    assert!(!pointed.is_empty());
    let missing: Vec<_> = pointed.difference(&names).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names alerts that do not exist: {missing:?}"
    );
}

/// Every `SMRTSHARE_*` word in `text`.
fn variables_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("SMRTSHARE_") && w.len() > "SMRTSHARE_".len())
        .map(str::to_owned)
        .collect()
}
