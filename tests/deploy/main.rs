//! The shipped deployment files (`deploy/`) checked against the real binaries:
//!
//! - Kubernetes: every Deployment's probes are native gRPC probes on a port the container declares
//!   and the service listens on (its `SMRTSHARE_LISTEN`); every Secret and key referenced exists
//!   in the example Secrets; the coordinator runs two replicas on PostgreSQL.
//! - Every `SMRTSHARE_*` variable in the manifests and the systemd environment examples is a
//!   setting of that binary (read from its `--help`), and the examples' values parse (the binary
//!   gets past argument parsing and stops only at the missing secret files).
//! - The systemd units start the binaries they are named after with the matching environment file.
//! - Staging gets the collection root and every source root through ONE mount (hard links cannot
//!   cross mounts): the systemd unit lists their common parent once in `ReadWritePaths=` and no
//!   path below it, and the Kubernetes Deployment mounts one volume holding both trees.
//! - Every service stops within its unit's `TimeoutStopSec` and its pod's
//!   `terminationGracePeriodSeconds`: the drain (`SMRTSHARE_DRAIN_TIMEOUT`) plus, for the
//!   coordinator, the grace in which abandoned work is handed back (`SMRTSHARE_DRAIN_GRACE`), as
//!   the shipped files set them or the binaries default them, with a margin.
//!
//! - The monitoring files (`deploy/prometheus`, `deploy/grafana`): see [`monitoring`].
//! - The documentation names only real settings and its links resolve: see [`documentation`].
//!
//! Needs the binaries built (`cargo build --workspace --bins`, which the test command does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

mod documentation;
mod monitoring;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// The `SMRTSHARE_*` variables a binary reads, from its `--help`.
fn settings_of(name: &str) -> BTreeSet<String> {
    let out = Command::new(binary(name)).arg("--help").output().unwrap();
    assert!(out.status.success(), "{name} --help failed");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = BTreeSet::new();
    for part in help.split("[env: ").skip(1) {
        let variable: String = part
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        found.insert(variable);
    }
    assert!(found.len() > 5, "{name}: no settings found in --help");
    found
}

fn documents(dir: &Path) -> Vec<(String, Yaml)> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
        {
            if !doc.is_null() {
                docs.push((name.clone(), doc));
            }
        }
    }
    docs
}

fn port_of_address(address: &str) -> i64 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} has no port"))
}

/// Which binary a container runs (its command's file name).
fn binary_of(container: &Yaml) -> String {
    let command = container["command"][0]
        .as_str()
        .expect("every container names its binary in `command`");
    Path::new(command)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn kubernetes_probes_target_the_ports_the_services_listen_on() {
    let docs = documents(&workspace().join("deploy/kubernetes"));
    let secrets: BTreeMap<String, BTreeSet<String>> = docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some("Secret"))
        .map(|(_, d)| {
            let keys = d["stringData"]
                .as_hash()
                .map(|h| {
                    h.keys()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (d["metadata"]["name"].as_str().unwrap().to_owned(), keys)
        })
        .collect();
    let mut seen = BTreeMap::new();
    for (file, doc) in docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some("Deployment"))
    {
        let deployment = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let pod = &doc["spec"]["template"]["spec"];
        let volumes: BTreeMap<String, &Yaml> = pod["volumes"]
            .as_vec()
            .map(|v| {
                v.iter()
                    .map(|v| (v["name"].as_str().unwrap().to_owned(), v))
                    .collect()
            })
            .unwrap_or_default();
        for volume in volumes.values() {
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains_key(secret),
                    "{file}: {deployment} mounts Secret {secret}, which secrets.example.yaml lacks"
                );
            }
        }
        for container in pod["containers"].as_vec().unwrap() {
            let bin = binary_of(container);
            let settings = settings_of(&bin);
            let env: BTreeMap<String, &Yaml> = container["env"]
                .as_vec()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap().to_owned(), e))
                .collect();
            for (name, entry) in &env {
                if name.starts_with("SMRTSHARE_") {
                    assert!(
                        settings.contains(name),
                        "{file}: {deployment} sets {name}, which {bin} does not read"
                    );
                }
                let reference = &entry["valueFrom"]["secretKeyRef"];
                if let (Some(secret), Some(key)) =
                    (reference["name"].as_str(), reference["key"].as_str())
                {
                    assert!(
                        secrets.get(secret).is_some_and(|keys| keys.contains(key)),
                        "{file}: {deployment} reads key {key} of Secret {secret}, which does not exist"
                    );
                }
            }
            let listen = env
                .get("SMRTSHARE_LISTEN")
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("{file}: {deployment} does not set SMRTSHARE_LISTEN"));
            assert!(
                listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"),
                "{file}: {deployment} listens on {listen}, which the kubelet cannot reach"
            );
            let grpc_port = port_of_address(listen);
            let declared: BTreeSet<i64> = container["ports"]
                .as_vec()
                .unwrap()
                .iter()
                .map(|p| p["containerPort"].as_i64().unwrap())
                .collect();
            // Every other listener the container declares is one the service is told to use.
            for (name, entry) in &env {
                if name.ends_with("_LISTEN") && name.as_str() != "SMRTSHARE_LISTEN" {
                    let port = port_of_address(entry["value"].as_str().unwrap());
                    assert!(
                        declared.contains(&port),
                        "{file}: {deployment}: {name} port {port} is not a declared containerPort"
                    );
                }
            }
            let mut probes = 0;
            for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let probe = &container[kind];
                assert!(!probe.is_badvalue(), "{file}: {deployment} has no {kind}");
                let port = probe["grpc"]["port"].as_i64().unwrap_or_else(|| {
                    panic!("{file}: {deployment}: {kind} is not a native gRPC probe")
                });
                assert_eq!(
                    port, grpc_port,
                    "{file}: {deployment}: {kind} probes port {port} but the service listens on {listen}"
                );
                assert!(
                    declared.contains(&port),
                    "{file}: {deployment}: {kind} port {port} is not a declared containerPort"
                );
                probes += 1;
            }
            assert_eq!(probes, 3);
            for mount in container["volumeMounts"].as_vec().unwrap() {
                let name = mount["name"].as_str().unwrap();
                assert!(
                    volumes.contains_key(name),
                    "{file}: {deployment} mounts volume {name}, which the pod does not define"
                );
            }
            // Secrets are files named by *_FILE settings, never values in the manifest.
            for (name, entry) in &env {
                if name.ends_with("_FILE") {
                    let path = entry["value"].as_str().unwrap();
                    assert!(
                        container["volumeMounts"]
                            .as_vec()
                            .unwrap()
                            .iter()
                            .any(|m| path.starts_with(m["mountPath"].as_str().unwrap())),
                        "{file}: {deployment}: {name}={path} is on no mounted volume"
                    );
                }
                for forbidden in [
                    "SMRTSHARE_AUTH_TOKEN",
                    "SMRTSHARE_PEER_TOKEN",
                    "SMRTSHARE_GLOBUS_CLIENT_SECRET",
                    "SMRTSHARE_SMRTLINK_PASSWORD",
                    "SMRTSHARE_INTAKE_SECRET",
                ] {
                    assert_ne!(
                        name, forbidden,
                        "{file}: {deployment} puts a secret in a variable"
                    );
                }
            }
            seen.insert(bin, doc["spec"]["replicas"].as_i64().unwrap_or(1));
        }
    }
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "smrtshare-access",
            "smrtshare-coordinator",
            "smrtshare-staging"
        ]
    );
    assert_eq!(seen["smrtshare-coordinator"], 2, "two coordinator replicas");
    assert!(
        secrets["smrtshare-coordinator"].contains("database-url"),
        "the coordinator's replicas share a PostgreSQL URL"
    );
}

fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {l:?} is not NAME=value", path.display()));
            (name.to_owned(), value.trim_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn systemd_units_and_environment_examples_match_the_binaries() {
    let dir = workspace().join("deploy/systemd");
    for service in ["staging", "access", "coordinator"] {
        let bin = format!("smrtshare-{service}");
        let unit = std::fs::read_to_string(dir.join(format!("{bin}.service"))).unwrap();
        assert!(
            unit.lines()
                .any(|l| l == format!("ExecStart=/usr/local/bin/{bin}")),
            "{bin}.service does not start {bin}"
        );
        assert!(
            unit.lines()
                .any(|l| l == format!("EnvironmentFile=/etc/smrtshare/{service}.env")),
            "{bin}.service does not read /etc/smrtshare/{service}.env"
        );
        let settings = settings_of(&bin);
        let example = env_file(&dir.join(format!("{service}.env.example")));
        assert!(example.len() > 5);
        for (name, value) in &example {
            assert!(
                settings.contains(name),
                "{service}.env.example sets {name}, which {bin} does not read"
            );
            for secret in [
                "SMRTSHARE_AUTH_TOKEN",
                "SMRTSHARE_PEER_TOKEN",
                "SMRTSHARE_GLOBUS_CLIENT_SECRET",
                "SMRTSHARE_SMRTLINK_PASSWORD",
                "SMRTSHARE_INTAKE_SECRET",
                "SMRTSHARE_STATUS_TOKEN",
            ] {
                assert_ne!(
                    name, secret,
                    "{service}.env.example holds a secret value ({value:?}); use the _FILE form"
                );
            }
        }
        // Every value parses: the binary gets past its arguments and stops at the first missing
        // secret file, never with a usage error.
        let out = Command::new(binary(&bin))
            .env_clear()
            .envs(example.iter().cloned())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} started on the example paths");
        assert!(
            !stderr.contains("Usage:") && !stderr.contains("invalid value"),
            "{service}.env.example does not parse:\n{stderr}"
        );
        assert!(
            stderr.contains("/etc/smrtshare/secrets/") || stderr.contains("/srv/"),
            "{bin} stopped for another reason than the missing files:\n{stderr}"
        );
    }
}

/// The one path, among `mounts` (paths that each become a mount of their own), through which every
/// tree is reached; an error when a tree is reached through none, or when another mount lies
/// between it and a tree or inside a tree (it would split them: EXDEV on every link).
fn one_mount_for(trees: &[String], mounts: &[String]) -> Result<String, String> {
    let under = |path: &str, parent: &str| {
        let parent = parent.trim_end_matches('/');
        path == parent || path.starts_with(&format!("{parent}/"))
    };
    let related: Vec<&String> = mounts
        .iter()
        .filter(|m| trees.iter().any(|t| under(t, m) || under(m, t)))
        .collect();
    match related.as_slice() {
        [one] if trees.iter().all(|t| under(t, one)) => Ok((*one).clone()),
        [] => Err(format!("no mount holds {trees:?}")),
        many => Err(format!(
            "{trees:?} are reached through several mounts {many:?}; hard links cannot cross them"
        )),
    }
}

/// The staging trees an environment gives: the root and every source root.
fn staging_trees(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut trees = vec![get("SMRTSHARE_STAGING_ROOT").expect("SMRTSHARE_STAGING_ROOT is set")];
    trees.extend(
        get("SMRTSHARE_STAGING_SOURCE_ROOTS")
            .expect("SMRTSHARE_STAGING_SOURCE_ROOTS is set")
            .split(',')
            .map(str::to_owned),
    );
    trees
}

/// Paths a systemd unit turns into mounts of their own, with whether a missing one is tolerated
/// (the `-` prefix), and which of them are writable.
fn unit_mounts(unit: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    for line in unit.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let writable = key == "ReadWritePaths";
        if ![
            "ReadWritePaths",
            "ReadOnlyPaths",
            "InaccessiblePaths",
            "ExecPaths",
            "NoExecPaths",
            "BindPaths",
            "BindReadOnlyPaths",
            "TemporaryFileSystem",
        ]
        .contains(&key)
        {
            continue;
        }
        for entry in value.split_whitespace() {
            let tolerant = entry.starts_with('-');
            let entry = entry.trim_start_matches(['-', '+']);
            // BindPaths=SRC:DEST, TemporaryFileSystem=PATH:OPTIONS: the mount is at the first
            // path for the latter, the second for the former.
            let path = match key {
                "BindPaths" | "BindReadOnlyPaths" => entry.split(':').nth(1).unwrap_or(entry),
                _ => entry.split(':').next().unwrap_or(entry),
            };
            out.push((path.to_owned(), tolerant, writable));
        }
    }
    out
}

#[test]
fn staging_reaches_both_trees_through_one_mount() {
    // systemd: the environment example's trees, through the unit's one writable common parent.
    let dir = workspace().join("deploy/systemd");
    let example: BTreeMap<String, String> = env_file(&dir.join("staging.env.example"))
        .into_iter()
        .collect();
    let trees = staging_trees(|k| example.get(k).cloned());
    let unit = std::fs::read_to_string(dir.join("smrtshare-staging.service")).unwrap();
    let mounts = unit_mounts(&unit);
    let paths: Vec<String> = mounts.iter().map(|(p, _, _)| p.clone()).collect();
    let parent = one_mount_for(&trees, &paths)
        .unwrap_or_else(|e| panic!("smrtshare-staging.service with staging.env.example: {e}"));
    assert!(
        mounts.iter().any(|(p, _, w)| *p == parent && *w),
        "smrtshare-staging.service: {parent} holds the collection but is not in ReadWritePaths="
    );
    for (path, tolerant, _) in &mounts {
        assert!(
            tolerant,
            "smrtshare-staging.service: {path} without '-' fails the unit (226/NAMESPACE) when missing"
        );
    }
    // The check refuses the layout that broke: the collection and the data as two mounts.
    let split = "ReadWritePaths=/var/lib/smrtshare /srv/globus/collection\nReadOnlyPaths=/srv/smrtlink/data\n";
    let split: Vec<String> = unit_mounts(split).into_iter().map(|(p, _, _)| p).collect();
    assert!(one_mount_for(&trees, &split).is_err());

    // Kubernetes: the staging container's trees, through one volume mount.
    let docs = documents(&workspace().join("deploy/kubernetes"));
    let (_, staging) = docs
        .iter()
        .find(|(_, d)| {
            d["kind"].as_str() == Some("Deployment")
                && d["metadata"]["name"].as_str() == Some("smrtshare-staging")
        })
        .expect("a smrtshare-staging Deployment");
    let pod = &staging["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_vec().unwrap();
    let trees = staging_trees(|k| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(k))
            .and_then(|e| e["value"].as_str().map(str::to_owned))
    });
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                m["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let paths: Vec<String> = mounts.iter().map(|(p, _)| p.clone()).collect();
    let parent = one_mount_for(&trees, &paths)
        .unwrap_or_else(|e| panic!("staging.yaml: smrtshare-staging: {e}"));
    let volume = &mounts.iter().find(|(p, _)| *p == parent).unwrap().1;
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(volume))
        .unwrap();
    assert!(
        volume["hostPath"]["path"].as_str().is_some(),
        "staging.yaml: the trees' volume is not one host directory"
    );
    let split = vec![
        "/srv/smrtlink/data".to_owned(),
        "/srv/globus/collection".to_owned(),
    ];
    assert!(one_mount_for(&trees, &split).is_err());
}

/// The value of a setting of `bin` as `configured` sets it, else the binary's default (from its
/// `--help`), in seconds.
fn seconds_of(bin: &str, variable: &str, configured: &[(String, String)]) -> f64 {
    let value = configured
        .iter()
        .find(|(name, _)| name == variable)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| {
            let out = Command::new(binary(bin)).arg("--help").output().unwrap();
            let help = String::from_utf8_lossy(&out.stdout).into_owned();
            let after = help
                .split(&format!("[env: {variable}="))
                .nth(1)
                .unwrap_or_else(|| panic!("{bin} has no setting {variable}"));
            after
                .split("[default: ")
                .nth(1)
                .and_then(|d| d.split(']').next())
                .unwrap_or_else(|| panic!("{bin}: {variable} has no default"))
                .to_owned()
        });
    humantime::parse_duration(&value)
        .unwrap_or_else(|e| panic!("{bin}: {variable}={value:?}: {e}"))
        .as_secs_f64()
}

/// How long a service takes to stop at most after SIGTERM, by its settings.
fn stop_budget(service: &str, configured: &[(String, String)]) -> f64 {
    let bin = format!("smrtshare-{service}");
    let mut budget = seconds_of(&bin, "SMRTSHARE_DRAIN_TIMEOUT", configured);
    if service == "coordinator" {
        budget += seconds_of(&bin, "SMRTSHARE_DRAIN_GRACE", configured);
    }
    budget
}

/// Time left for the process to exit after its bounded drain (logs flushed, sockets closed).
const STOP_MARGIN_S: f64 = 5.0;

#[test]
fn stop_timeouts_outlast_the_bounded_drain() {
    let systemd = workspace().join("deploy/systemd");
    for service in ["staging", "access", "coordinator"] {
        let unit =
            std::fs::read_to_string(systemd.join(format!("smrtshare-{service}.service"))).unwrap();
        let timeout = unit
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap_or_else(|| panic!("smrtshare-{service}.service sets no TimeoutStopSec"));
        let timeout = humantime::parse_duration(timeout).unwrap().as_secs_f64();
        let budget = stop_budget(
            service,
            &env_file(&systemd.join(format!("{service}.env.example"))),
        );
        assert!(
            timeout >= budget + STOP_MARGIN_S,
            "smrtshare-{service}.service: TimeoutStopSec={timeout}s, but the service may take {budget}s to drain (+{STOP_MARGIN_S}s margin)"
        );
    }
    for (file, doc) in documents(&workspace().join("deploy/kubernetes")) {
        if doc["kind"].as_str() != Some("Deployment") {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        for container in pod["containers"].as_vec().unwrap() {
            let service = binary_of(container)
                .trim_start_matches("smrtshare-")
                .to_owned();
            let env: Vec<(String, String)> = container["env"]
                .as_vec()
                .map(|vars| {
                    vars.iter()
                        .filter_map(|v| {
                            Some((
                                v["name"].as_str()?.to_owned(),
                                v["value"].as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let grace = pod["terminationGracePeriodSeconds"]
                .as_i64()
                .unwrap_or_else(|| panic!("{file}: no terminationGracePeriodSeconds"))
                as f64;
            let budget = stop_budget(&service, &env);
            assert!(
                grace >= budget + STOP_MARGIN_S,
                "{file}: terminationGracePeriodSeconds={grace}, but {service} may take {budget}s to drain (+{STOP_MARGIN_S}s margin)"
            );
        }
    }
}
