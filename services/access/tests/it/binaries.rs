//! The real binaries, driven as an operator would: `smrtshare-globus-standin` as Globus and
//! `smrtshare-access` in front of it, with grpcurl.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use smrtshare_globus_standin::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ENDPOINT};

const ACCESS: &str = env!("CARGO_BIN_EXE_smrtshare-access");
const TOKEN: &str = "access-e2e-token";

/// A child process killed when dropped.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stand-in binary: beside the access binary (built with it by `cargo build --workspace`
/// or `-p smrtshare-globus-standin`); built here when missing.
fn standin_binary() -> PathBuf {
    let path = Path::new(ACCESS).with_file_name("smrtshare-globus-standin");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "smrtshare-globus-standin",
                "--bin",
                "smrtshare-globus-standin",
            ])
            .current_dir(smrtshare_testkit::workspace_root(Path::new(env!(
                "CARGO_MANIFEST_DIR"
            ))))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the stand-in binary failed");
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// Starts a binary logging JSON to stderr and waits for a log line starting with each of
/// `messages`, answering the `address` field of each (empty when the line has none).
fn spawn(mut command: Command, messages: &[&str]) -> (Process, Vec<String>) {
    let mut child = command
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    let wanted: Vec<String> = messages.iter().map(|m| (*m).to_owned()).collect();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!("{line}");
                continue;
            };
            let message = event["message"].as_str().unwrap_or_default();
            if let Some(index) = wanted.iter().position(|w| message.starts_with(w.as_str())) {
                let address = event["address"].as_str().unwrap_or_default().to_owned();
                let _ = tx.send((index, address));
            }
            if event["level"] == "ERROR" || event["level"] == "WARN" {
                eprintln!("{line}");
            }
        }
    });
    let mut found = vec![None; messages.len()];
    while found.iter().any(Option::is_none) {
        let (index, address) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the binary did not log all of {messages:?}: {found:?}"));
        found[index].get_or_insert(address);
    }
    let process = Process { child };
    (process, found.into_iter().flatten().collect())
}

fn grpcurl(args: &[&str]) -> Output {
    let tool = smrtshare_testkit::grpcurl(Path::new(env!("CARGO_MANIFEST_DIR")));
    Command::new(&tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run grpcurl at {} ({e}); scripts/test installs it",
            tool.display()
        )
    })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn grpcurl_lists_describes_and_applies_against_the_real_binaries() {
    let dir = smrtshare_testkit::tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("globus-secret");
    std::fs::write(&secret_file, format!("{DEFAULT_CLIENT_SECRET}\n")).expect("secret");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");

    let mut standin = Command::new(standin_binary());
    standin.args([
        "--listen",
        "127.0.0.1:0",
        "--identity",
        "alice@example.edu",
        "--identity",
        "bob@example.edu",
    ]);
    let (_globus, addresses) = spawn(standin, &["globus stand-in listening"]);
    let globus_url = format!("http://{}", addresses[0]);

    let mut access = Command::new(ACCESS);
    access
        .args(["--listen", "127.0.0.1:0"])
        .arg("--auth-token-file")
        .arg(&token_file)
        .args(["--globus-auth-url", &globus_url])
        .args(["--globus-transfer-url", &format!("{globus_url}/v0.10")])
        .args(["--globus-client-id", DEFAULT_CLIENT_ID])
        .arg("--globus-client-secret-file")
        .arg(&secret_file)
        .args(["--globus-collection-id", DEFAULT_ENDPOINT])
        .args(["--globus-username-domain", "example.edu"])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("access.db").display()
        ))
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let (_server, addresses) = spawn(
        access,
        &[
            "grpc server listening",
            "metrics listening",
            "ready: health reports SERVING",
        ],
    );
    let addr = addresses[0].as_str();
    let metrics_url = format!("http://{}/metrics", addresses[1]);
    let auth = format!("authorization: Bearer {TOKEN}");

    // Reflection and health need no token.
    let list = grpcurl(&["-plaintext", addr, "list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        text(&list).contains("smrtshare.access.v1.Access"),
        "{}",
        text(&list)
    );
    assert!(text(&list).contains("grpc.health.v1.Health"));

    let describe = grpcurl(&["-plaintext", addr, "describe", "smrtshare.access.v1.Access"]);
    assert!(describe.status.success(), "{}", text(&describe));
    for rpc in [
        "ApplyProjectAccess",
        "RevokeProjectAccess",
        "GetProjectAccess",
        "ListRules",
        "Verify",
    ] {
        assert!(
            text(&describe).contains(rpc),
            "{rpc} missing: {}",
            text(&describe)
        );
    }
    let rule = grpcurl(&["-plaintext", addr, "describe", "smrtshare.access.v1.Rule"]);
    assert!(
        text(&rule).contains("The Globus username the login mapped to"),
        "comments reach describe: {}",
        text(&rule)
    );

    let health = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"smrtshare.access.v1.Access"}"#,
        addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.status.success(), "{}", text(&health));
    assert!(text(&health).contains("SERVING"), "{}", text(&health));

    // Without the token, the API refuses.
    let refused = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"project_id":2}"#,
        addr,
        "smrtshare.access.v1.Access/GetProjectAccess",
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Unauthenticated"),
        "{}",
        text(&refused)
    );

    // Apply, as the coordinator would.
    let request =
        r#"{"project_id":2,"path":"/Project 2: Tomato/","logins":["alice","bob","nobody"]}"#;
    let applied = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        request,
        addr,
        "smrtshare.access.v1.Access/ApplyProjectAccess",
    ]);
    assert!(applied.status.success(), "{}", text(&applied));
    let answer: serde_json::Value = serde_json::from_slice(&applied.stdout).expect("json answer");
    let kinds: Vec<(&str, &str)> = answer["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["login"].as_str().unwrap_or(""),
                m["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("alice", "MEMBER_OUTCOME_KIND_GRANTED"),
            ("bob", "MEMBER_OUTCOME_KIND_GRANTED"),
            ("nobody", "MEMBER_OUTCOME_KIND_UNKNOWN_IDENTITY"),
        ]
    );

    // The rules are at the stand-in (its admin API), made by smrtshare's client.
    let rules: serde_json::Value = serde_json::from_str(&http_get(&format!(
        "{globus_url}/admin/endpoints/{DEFAULT_ENDPOINT}/rules"
    )))
    .expect("json rules");
    let ours: Vec<&serde_json::Value> = rules
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["made_by"]["client_id"] == DEFAULT_CLIENT_ID)
        .collect();
    assert_eq!(ours.len(), 2, "{rules}");
    assert!(
        ours.iter()
            .all(|r| r["path"] == "/Project 2: Tomato/" && r["permissions"] == "r")
    );

    // Bad input names the field.
    let bad = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"project_id":1,"path":"/x/"}"#,
        addr,
        "smrtshare.access.v1.Access/ApplyProjectAccess",
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("InvalidArgument") && text(&bad).contains("project_id"),
        "{}",
        text(&bad)
    );

    // Metrics: the Globus calls made and the renewal task's next run.
    let metrics = http_get(&metrics_url);
    assert!(
        metrics
            .contains("smrtshare_access_globus_requests_total{call=\"Create\",status=\"201\"} 2"),
        "{metrics}"
    );
    let next_run = metrics
        .lines()
        .find(|l| l.starts_with("smrtshare_access_renewal_next_run_timestamp_seconds "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("next run missing: {metrics}"));
    assert!(next_run > 1_700_000_000, "{next_run}");

    let got = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"project_id":2}"#,
        addr,
        "smrtshare.access.v1.Access/GetProjectAccess",
    ]);
    assert!(got.status.success(), "{}", text(&got));
    assert!(text(&got).contains("RULE_STATE_ACTIVE"), "{}", text(&got));
}

/// A GET with a tiny HTTP/1.1 client over std (the test is synchronous); answers the body.
fn http_get(url: &str) -> String {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    body.to_owned()
}
