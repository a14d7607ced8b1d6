//! The real `smrtshare-staging` binary, driven with grpcurl as an operator would.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::assert_linked;
use crate::process::{BIN, Spawned};

const TOKEN: &str = "e2e-secret-token";

struct Server {
    spawned: Spawned,
    address: String,
    metrics: String,
}

/// A free loopback port for the metrics listener (the binary does not log a port-0 metrics
/// address in a parseable way).
fn free_address() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// `GET /metrics` over plain HTTP/1.0.
fn scrape(address: &str) -> String {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(address).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn start(root: &Path, src: &Path, state: &Path, token_file: &Path) -> Server {
    let metrics = free_address();
    let mut command = Command::new(BIN);
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--metrics-listen", &metrics])
        .arg("--root")
        .arg(root)
        .arg("--source-root")
        .arg(src)
        .arg("--database")
        .arg(state.join("staging.sqlite3"))
        .arg("--auth-token-file")
        .arg(token_file);
    let mut spawned = Spawned::start(command);
    spawned.wait_for("ready: health reports SERVING");
    Server {
        address: spawned.address.clone(),
        spawned,
        metrics,
    }
}

fn grpcurl(args: &[&str], stdin: Option<&str>) -> Output {
    let tool = smrtshare_testkit::grpcurl(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut command = Command::new(&tool);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run grpcurl at {} ({e}); scripts/test installs it",
            tool.display()
        )
    });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_binary_answers_grpcurl() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let (root, src, state) = (
        dir.path().join("root"),
        dir.path().join("src"),
        dir.path().join("state"),
    );
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let spec = smrtshare_demo::PlainSpec {
        run_dir: "r1/1_A01".into(),
        movie: "m84100_240322_081500_s3".into(),
        well_sample: "Rice IR64".into(),
        sample: "Rice IR64".into(),
        name: "Rice IR64-Cell1".into(),
        data_files: 2,
        bytes: 128,
    };
    let dataset =
        smrtshare_demo::write_plain_dataset(&src, &spec, &mut smrtshare_demo::Ids::starting_at(1))
            .unwrap();
    let server = start(&root, &src, &state, &token_file);
    let addr = server.address.as_str();
    let auth = format!("authorization: Bearer {TOKEN}");

    let list = grpcurl(&["-plaintext", addr, "list"], None);
    assert!(list.status.success(), "{}", text(&list));
    for service in ["smrtshare.staging.v1.Staging", "grpc.health.v1.Health"] {
        assert!(text(&list).contains(service), "{}", text(&list));
    }
    let describe = grpcurl(
        &[
            "-plaintext",
            addr,
            "describe",
            "smrtshare.staging.v1.ApplyProjectRequest",
        ],
        None,
    );
    assert!(describe.status.success(), "{}", text(&describe));
    assert!(
        text(&describe)
            .contains("Name of the project directory directly under the collection root"),
        "{}",
        text(&describe)
    );

    let health = grpcurl(
        &[
            "-plaintext",
            "-d",
            r#"{"service": "smrtshare.staging.v1.Staging"}"#,
            addr,
            "grpc.health.v1.Health/Check",
        ],
        None,
    );
    assert!(
        health.status.success() && text(&health).contains("SERVING"),
        "{}",
        text(&health)
    );

    let body = serde_json::json!({
        "projectId": 3,
        "directory": "Project 3: Rice",
        "datasets": [{
            "uuid": dataset.uuid,
            "name": dataset.name,
            "xmlPath": dataset.xml_path.display().to_string(),
        }],
    })
    .to_string();
    let applied = grpcurl(
        &[
            "-plaintext",
            "-H",
            &auth,
            "-d",
            "@",
            addr,
            "smrtshare.staging.v1.Staging/ApplyProject",
        ],
        Some(&body),
    );
    assert!(applied.status.success(), "{}", text(&applied));
    let answer: serde_json::Value = serde_json::from_slice(&applied.stdout).expect("JSON answer");
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(
        answer["datasets"][0]["state"], "DATASET_STATE_STAGED",
        "{answer}"
    );
    let staged: PathBuf = root
        .join("Project 3: Rice")
        .join("Movie m84100_240322_081500_s3 - Rice IR64-Cell1");
    for file in &dataset.files {
        assert_linked(&staged.join(file.file_name().unwrap()), file);
    }

    let refused = grpcurl(
        &[
            "-plaintext",
            "-d",
            r#"{"projectId": 3}"#,
            addr,
            "smrtshare.staging.v1.Staging/GetProject",
        ],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Unauthenticated"),
        "{}",
        text(&refused)
    );
    let wrong = grpcurl(
        &[
            "-plaintext",
            "-H",
            "authorization: Bearer nope",
            "-d",
            r#"{"projectId": 3}"#,
            addr,
            "smrtshare.staging.v1.Staging/GetProject",
        ],
        None,
    );
    assert!(text(&wrong).contains("Unauthenticated"), "{}", text(&wrong));
    let listed = grpcurl(
        &[
            "-plaintext",
            "-H",
            &auth,
            addr,
            "smrtshare.staging.v1.Staging/ListProjects",
        ],
        None,
    );
    assert!(
        listed.status.success() && text(&listed).contains("Project 3: Rice"),
        "{}",
        text(&listed)
    );

    // Metrics: the apply's links, the refused calls and the staged project are counted.
    let metrics = scrape(&server.metrics);
    assert!(
        metrics.starts_with("HTTP/1.0 200") || metrics.starts_with("HTTP/1.1 200"),
        "{metrics}"
    );
    for line in [
        r#"smrtshare_staging_actions_total{kind="link_file",outcome="done"}"#,
        r#"smrtshare_staging_requests_total{method="ApplyProject",code="Ok"} 1"#,
        "smrtshare_staging_projects 1",
        // The demo XMLs were just written: read and parsed, not taken from the cache.
        r#"smrtshare_staging_source_cache_lookups_total{kind="xml",result="miss"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    assert!(
        !metrics.contains(TOKEN),
        "the token must never appear in metrics"
    );

    // SIGTERM drains and exits cleanly.
    let status = server.spawned.terminate();
    assert!(status.success(), "{status}");
}
