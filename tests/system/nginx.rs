//! Real NGINX (Debian's package; `scripts/ensure-tools` installs it) with the shipped mirror
//! configuration (`deploy/nginx/render`) in front of the SMRT Link stand-in. A client acting as
//! the SMRT Link web UI creates, edits and deletes projects through NGINX only; NGINX mirrors
//! the writes, with the shared secret, to the coordinator's intake, and the staged tree and the
//! rules at the Globus stand-in follow. GETs through NGINX are not mirrored.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smrtshare_api::coordinator::v1 as cpb;
use smrtshare_common::Secret;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_smrtlink::{ClientConfig, SmrtLinkClient};
use smrtshare_tests::stack::SMRTLINK_USER;
use smrtshare_tests::{Stack, StackOptions, world};

const CONVERGE: Duration = Duration::from_secs(60);

/// NGINX in the foreground with its own prefix, killed on drop. It runs as one process
/// (`master_process off`): with a master and a worker, killing the master left the worker
/// running, still listening, after every test run.
pub(crate) struct Nginx {
    child: Child,
    /// Where it listens (`host:port`).
    pub(crate) address: String,
    error_log: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .expect("nginx is not installed: run scripts/ensure-tools (scripts/test does)")
}

fn free_address() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

/// Renders the shipped template for plain HTTP on a free port, wraps it in a minimal main
/// configuration, checks it with `nginx -t` and starts NGINX.
pub(crate) fn start_nginx(dir: &Path, upstream: &str, intake: &str, secret_file: &Path) -> Nginx {
    let address = free_address();
    let render = smrtshare_tests::workspace_root().join("deploy/nginx/render");
    let rendered = Command::new(&render)
        .env("SMRTSHARE_NGINX_LISTEN", &address)
        .env("SMRTSHARE_NGINX_TLS_CERT", "")
        .env("SMRTSHARE_SMRTLINK_UPSTREAM", upstream)
        .env("SMRTSHARE_INTAKE_ADDRESS", intake)
        .env("SMRTSHARE_MIRROR_SECRET_FILE", secret_file)
        .output()
        .expect("run deploy/nginx/render");
    assert!(
        rendered.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let server = String::from_utf8(rendered.stdout).unwrap();
    assert!(server.contains("mirror /_smrtshare_mirror;"), "{server}");
    let d = dir.display();
    let error_log = dir.join("error.log");
    let config = format!(
        "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let nginx = nginx_binary();
    let check = Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t refused the shipped configuration:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let started = Instant::now();
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not listen on {address}: {}",
            std::fs::read_to_string(&error_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        address,
        error_log,
    }
}

/// Every change the coordinator recorded, newest first.
async fn all_changes(stack: &Stack) -> Vec<cpb::Change> {
    let mut client = stack.coordinator().unwrap();
    let mut changes = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_changes(cpb::ListChangesRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        changes.extend(page.changes);
        if page.next_page_token.is_empty() {
            return changes;
        }
        token = page.next_page_token;
    }
}

fn mirrored(changes: &[cpb::Change]) -> usize {
    changes
        .iter()
        .filter(|c| c.reason == cpb::ChangeReason::Mirror as i32)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_writes_through_nginx_reach_the_tree_and_the_rules() {
    let scratch = smrtshare_testkit::tempfile::tempdir().unwrap();
    let secret = scratch.path().join("intake-secret");
    std::fs::write(&secret, "mirror-secret-7f3a9c\n").unwrap();
    let options = StackOptions {
        coordinator_args: vec!["--intake-secret-file".into(), secret.display().to_string()],
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await.expect("start the stack");
    let upstream = stack.addresses().smrtlink.clone();
    let nginx_dir = scratch.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = start_nginx(&nginx_dir, &upstream, &stack.addresses().intake, &secret);

    // The web UI talks to SMRT Link only through NGINX (token, reads and writes).
    let ui = SmrtLinkClient::new(ClientConfig::new(
        format!("http://{}/SMRTLink/2.0.0", nginx.address)
            .parse()
            .unwrap(),
        SMRTLINK_USER,
        Secret::new(stack.secrets().smrtlink_password.clone()),
    ))
    .unwrap();
    let before = all_changes(&stack).await;

    // Reads are proxied and never mirrored.
    let listed = ui.list_projects().await.expect("list through NGINX");
    assert!(listed.len() >= 3, "{listed:?}");
    let donor = listed
        .iter()
        .map(|p| p.id)
        .filter(|id| *id > 1)
        .max()
        .unwrap();
    let donor_project = ui.get_project(donor).await.unwrap().expect("donor project");
    let stolen = donor_project
        .datasets
        .first()
        .expect("the donor project has a dataset")
        .clone();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        all_changes(&stack).await.len(),
        before.len(),
        "a GET through NGINX was mirrored"
    );

    // Create: a new project taking a dataset from another one (both change).
    let created = ui
        .create_project(&ProjectRequest {
            name: Some("Barley via NGINX".into()),
            description: Some("made by the web UI".into()),
            members: Some(vec![
                Member::new(SMRTLINK_USER, Role::Owner),
                Member::new("alice", Role::CanView),
                Member::new("carol", Role::CanEdit),
            ]),
            datasets: Some(vec![stolen.id]),
        })
        .await
        .expect("create through NGINX");
    let state = world::wait_converged(&stack, &[], CONVERGE)
        .await
        .expect("converged after the create");
    let barley = state
        .get(&created.id)
        .expect("the new project is expected")
        .clone();
    assert!(
        stack.root().join(&barley.directory).is_dir(),
        "{} was not staged",
        barley.directory
    );
    let rules = stack.globus().rules().await.unwrap();
    let path = format!("/{}/", barley.directory);
    let mut readers: Vec<&str> = rules
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.username.as_str())
        .collect();
    readers.sort_unstable();
    assert_eq!(
        readers,
        ["alice@example.edu", "carol@example.edu"],
        "alice and carol are granted on {path}: {rules:?}"
    );

    // Edit: rename, and carol leaves.
    ui.update_project(
        created.id,
        &ProjectRequest {
            name: Some("Barley renamed via NGINX".into()),
            members: Some(vec![
                Member::new(SMRTLINK_USER, Role::Owner),
                Member::new("alice", Role::CanView),
            ]),
            ..ProjectRequest::default()
        },
    )
    .await
    .expect("update through NGINX");
    let state = world::wait_converged(&stack, &[], CONVERGE)
        .await
        .expect("converged after the edit");
    let renamed = state.get(&created.id).unwrap().clone();
    assert!(renamed.directory.contains("Barley renamed via NGINX"));
    assert!(!stack.root().join(&barley.directory).exists());
    let rules = stack.globus().rules().await.unwrap();
    let new_path = format!("/{}/", renamed.directory);
    assert_eq!(
        rules.iter().filter(|r| r.path == new_path).count(),
        1,
        "only alice on {new_path}: {rules:?}"
    );
    assert!(rules.iter().all(|r| r.path != path), "{rules:?}");

    // Delete.
    ui.delete_project(created.id)
        .await
        .expect("delete through NGINX");
    world::wait_converged(&stack, &[], CONVERGE)
        .await
        .expect("converged after the delete");
    assert!(!stack.root().join(&renamed.directory).exists());
    let rules = stack.globus().rules().await.unwrap();
    assert!(rules.iter().all(|r| r.path != new_path), "{rules:?}");

    // The three writes reached the intake through NGINX's mirror (with the secret: the intake
    // refuses mirrored requests without it), and nothing else did.
    let after = all_changes(&stack).await;
    assert!(
        mirrored(&after) >= mirrored(&before) + 3,
        "mirrored changes: {} before, {} after",
        mirrored(&before),
        mirrored(&after)
    );
    let refused = reqwest::Client::new()
        .put(format!(
            "http://{}/smrt-link/projects/2",
            stack.addresses().intake
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    let errors = std::fs::read_to_string(&nginx.error_log).unwrap_or_default();
    assert!(
        !errors.contains("[emerg]") && !errors.contains("[crit]"),
        "{errors}"
    );
}
