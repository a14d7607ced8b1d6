//! The trees as a deployment mounts them. `linkat` refuses links across mounts even of one
//! filesystem, which is what systemd's `ReadWritePaths=` or two Kubernetes `hostPath` volumes make
//! of the collection and SMRT Link's data. Each case runs the real binary in a mount namespace of
//! its own (`unshare`), with bind mounts of one temporary filesystem: two mounts are refused at
//! start (health NOT_SERVING, the reason logged and in every answer); one mount holding both (their
//! common parent) serves, and a link that still meets a mount inside a tree names both mounts.
//! Trees inside one another are refused at start as well.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use smrtshare_api::staging::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::*;
use crate::process::{BIN, Spawned};

/// The `unshare` arguments that give a private mount namespace here: as root `-m`, otherwise a
/// user namespace too (`-rm`). `None` when the machine allows neither.
fn namespace() -> Option<&'static [&'static str]> {
    for args in [&["-m"][..], &["-r", "-m"][..]] {
        let works = Command::new("unshare")
            .args(args)
            .args(["--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Some(args);
        }
    }
    None
}

/// Skips (loudly) where mount namespaces are refused; fails under CI, which must run it.
fn namespace_or_skip(test: &str) -> Option<&'static [&'static str]> {
    let found = namespace();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: `unshare -m` and `unshare -rm` are both refused here; this test needs a mount namespace"
        );
        eprintln!(
            "NOTICE: {test} NOT RUN: this machine refuses mount namespaces (`unshare -m`, `unshare -rm`), so \
             the bind-mount layout could not be reproduced"
        );
    }
    found
}

/// A temporary tree: `real/{collection,data}` (the filesystem as it is), a view to bind-mount
/// onto, the records' directory and the token file.
struct Trees {
    dir: smrtshare_testkit::tempfile::TempDir,
}

impl Trees {
    fn new() -> Self {
        let trees = Self {
            dir: smrtshare_testkit::tempfile::tempdir().unwrap(),
        };
        for sub in ["real/collection", "real/data", "view", "state"] {
            std::fs::create_dir_all(trees.path(sub)).unwrap();
        }
        std::fs::write(trees.path("token"), TOKEN).unwrap();
        trees
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A plain dataset written under `real/data/<run>`.
    fn dataset(&self, run: &str, name: &str) -> smrtshare_demo::DatasetRecord {
        let spec = smrtshare_demo::PlainSpec {
            run_dir: run.into(),
            movie: format!("m_{}", run.replace('/', "_")),
            well_sample: name.into(),
            sample: name.into(),
            name: name.into(),
            data_files: 2,
            bytes: 32,
        };
        smrtshare_demo::write_plain_dataset(
            &self.path("real/data"),
            &spec,
            &mut smrtshare_demo::Ids::starting_at(1),
        )
        .unwrap()
    }

    /// The staging binary on `root` and `source`, inside a namespace (`prefix`) where each
    /// `(from, onto)` is bind-mounted first; `None` runs it as it is.
    fn start(
        &self,
        prefix: Option<&[&str]>,
        binds: &[(PathBuf, PathBuf)],
        root: &Path,
        source: &Path,
    ) -> Spawned {
        let mut command = match prefix {
            Some(args) => {
                let mut c = Command::new("unshare");
                c.args(args).args(["--propagation", "private", "sh", "-c"]);
                c.arg(
                    r#"set -e
                    while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done
                    shift; exec "$@""#,
                );
                c.arg("sh");
                for (from, onto) in binds {
                    c.arg(from).arg(onto);
                }
                c.arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--root")
            .arg(root)
            .arg("--source-root")
            .arg(source)
            .arg("--database")
            .arg(self.path("state/staging.sqlite3"))
            .arg("--auth-token-file")
            .arg(self.path("token"));
        Spawned::start(command)
    }
}

/// Waits for the refusal and checks that it is what health, the log and an answer say.
async fn refused(server: &mut Spawned, expect: &[&str]) -> String {
    let event = server.wait_for(
        "staging refuses to serve: health stays NOT_SERVING until the configuration is fixed",
    );
    assert_eq!(event["level"], "ERROR", "{event}");
    let reason = event["reason"].as_str().unwrap().to_owned();
    for part in expect {
        assert!(reason.contains(part), "{reason:?} lacks {part:?}");
    }
    let url = server.url();
    for service in ["", "smrtshare.staging.v1.Staging"] {
        assert_eq!(
            health(&url, service).await,
            ServingStatus::NotServing as i32,
            "health of {service:?}"
        );
    }
    let status = client(&url)
        .list_projects(pb::ListProjectsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("staging refuses to serve") && status.message().contains(&reason),
        "{}",
        status.message()
    );
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bind_mounts_of_one_filesystem_are_refused_at_start() {
    let Some(prefix) = namespace_or_skip("two_bind_mounts_of_one_filesystem_are_refused_at_start")
    else {
        return;
    };
    let trees = Trees::new();
    trees.dataset("r1/1_A01", "Rice");
    let (collection, data) = (trees.path("view/collection"), trees.path("view/data"));
    for dir in [&collection, &data] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // What ReadWritePaths=/srv/globus/collection plus ReadOnlyPaths=/srv/smrtlink/data make.
    let binds = [
        (trees.path("real/collection"), collection.clone()),
        (trees.path("real/data"), data.clone()),
    ];
    let mut server = trees.start(Some(prefix), &binds, &collection, &data);
    let reason = refused(
        &mut server,
        &[
            "different mounts of one filesystem",
            &format!("at {}", collection.display()),
            &format!("at {}", data.display()),
            "EXDEV",
            "one mount that holds both trees",
        ],
    )
    .await;
    assert!(!reason.contains("different filesystems"), "{reason}");
    assert_eq!(
        std::fs::read_dir(trees.path("real/collection"))
            .unwrap()
            .count(),
        0,
        "nothing is created in a collection staging refuses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mount_holding_both_trees_serves_and_a_mount_inside_names_both() {
    let Some(prefix) =
        namespace_or_skip("one_mount_holding_both_trees_serves_and_a_mount_inside_names_both")
    else {
        return;
    };
    let trees = Trees::new();
    let near = trees.dataset("r1/1_A01", "Near");
    let far = trees.dataset("r2/1_A01", "Far");
    // The common parent as one mount (the shipped deployment), and under the data a run directory
    // that is a mount of its own (an operator's bind mount, an automounted volume).
    let view = trees.path("view");
    let binds = [
        (trees.path("real"), view.clone()),
        (trees.path("real/data/r2"), view.join("data/r2")),
    ];
    let mut server = trees.start(
        Some(prefix),
        &binds,
        &view.join("collection"),
        &view.join("data"),
    );
    server.wait_for("ready: health reports SERVING");
    let seen = |record: &smrtshare_demo::DatasetRecord| {
        let mut d = ds(record);
        d.xml_path = d.xml_path.replace(
            &*trees.path("real").to_string_lossy(),
            &view.to_string_lossy(),
        );
        d
    };
    let answer = client(&server.url())
        .apply_project(request(2, "Project 2", vec![seen(&near), seen(&far)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&answer.datasets[0]),
        pb::DatasetState::Staged,
        "{answer:#?}"
    );
    let staged = trees
        .path("real/collection/Project 2")
        .join(format!("Movie {} - Near", near.movie));
    for file in &near.files {
        assert_linked(&staged.join(file.file_name().unwrap()), file);
    }
    assert_eq!(state(&answer.datasets[1]), pb::DatasetState::Failed);
    assert!(answer.datasets[1].permanent, "no retry links across mounts");
    let link = answer
        .actions
        .iter()
        .find(|a| a.outcome == pb::ActionOutcome::Failed as i32)
        .unwrap();
    assert!(link.permanent && link.error.contains("EXDEV"), "{link:?}");
    let error = &answer.datasets[1].error;
    for part in [
        "EXDEV",
        "different mounts of one filesystem",
        &format!("at {}/data/r2", view.display()),
        &format!("at {} ", view.display()),
        "never copies",
    ] {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
    for file in &far.files {
        assert_eq!(std::fs::metadata(file).unwrap().nlink(), 1, "never copied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_inside_one_another_are_refused_at_start() {
    let trees = Trees::new();
    let collection = trees.path("real/collection");
    // The data's root holding the collection: the records database would be stageable.
    let mut server = trees.start(None, &[], &collection, &trees.path("real"));
    refused(
        &mut server,
        &["contains the staging root", "records database"],
    )
    .await;
    drop(server);
    std::fs::create_dir_all(collection.join("inner")).unwrap();
    let mut server = trees.start(None, &[], &collection, &collection.join("inner"));
    refused(&mut server, &["lies inside the staging root"]).await;
    assert_eq!(
        std::fs::read_dir(&collection).unwrap().count(),
        1,
        "nothing but the operator's directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_root_on_another_filesystem_is_refused_at_start() {
    let shm = Path::new("/dev/shm");
    let trees = Trees::new();
    let collection = trees.path("real/collection");
    if !shm.is_dir()
        || std::fs::metadata(shm).unwrap().dev() == std::fs::metadata(&collection).unwrap().dev()
    {
        eprintln!(
            "NOTICE: a_source_root_on_another_filesystem_is_refused_at_start NOT RUN: no second filesystem at /dev/shm"
        );
        return;
    }
    let other = smrtshare_testkit::tempfile::tempdir_in(shm).unwrap();
    let mut server = trees.start(None, &[], &collection, other.path());
    refused(
        &mut server,
        &["on different filesystems", "EXDEV", "never copies"],
    )
    .await;
}
