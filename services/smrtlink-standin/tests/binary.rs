//! The `smrtshare-smrtlink-standin` binary, started for real on demo data.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smrtshare_common::Secret;
use smrtshare_smrtlink::model::Role;
use smrtshare_smrtlink::{ClientConfig, Error, SmrtLinkClient};

/// Kills the child if the test fails before it stops it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_demo_data_and_stops_on_sigterm() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let demo = smrtshare_demo::generate_demo(dir.path()).unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_smrtshare-smrtlink-standin"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--token-ttl",
                "2m",
            ])
            .arg("--seed-dir")
            .arg(&demo.smrtlink_dir)
            .env(
                "SMRTSHARE_SMRTLINK_STANDIN_USERS",
                "tester:pw-19f3,other:pw-2",
            )
            .env_remove("SMRTSHARE_SMRTLINK_STANDIN_TLS_CERT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // The first log line names the address it bound.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let api = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the stand-in logged no address");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(api) = value["api"].as_str() {
            break api.to_owned();
        }
    };
    assert!(
        api.starts_with("http://127.0.0.1:") && api.ends_with("/SMRTLink/2.0.0"),
        "{api}"
    );

    let client = SmrtLinkClient::new(ClientConfig::new(
        api.parse().unwrap(),
        "tester",
        Secret::new("pw-19f3"),
    ))
    .unwrap();
    let mut ids: Vec<i64> = client
        .list_projects()
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3, 4]);
    let tomato = client.get_project(2).await.unwrap().unwrap();
    assert_eq!(tomato.name, "Tomato");
    let shared: Vec<(&str, &Role)> = tomato
        .shared_members()
        .map(|m| (m.login.as_str(), &m.role))
        .collect();
    assert_eq!(shared, [("alice", &Role::CanView), ("bob", &Role::CanEdit)]);
    let parent = &tomato.datasets[0];
    assert!(parent.is_parent());
    assert!(
        Path::new(&parent.path).starts_with(&demo.data_root),
        "{}",
        parent.path
    );
    assert!(Path::new(&parent.path).is_file());

    // Users come from the environment; the default admin:admin is not there.
    let admin = SmrtLinkClient::new(ClientConfig::new(
        api.parse().unwrap(),
        "admin",
        Secret::new("admin"),
    ))
    .unwrap();
    assert!(matches!(
        admin.list_projects().await,
        Err(Error::Auth { .. })
    ));

    // The admin API answers over HTTP.
    let state_url = api.replace("/SMRTLink/2.0.0", "/admin/state");
    let state: serde_json::Value = reqwest::get(&state_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["projects"].as_array().unwrap().len(), 4);

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
