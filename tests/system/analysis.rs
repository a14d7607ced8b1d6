//! A finished analysis job's outputs reach its project's directory through the whole system: the
//! SMRT Link stand-in serves the demo's finished job, the coordinator sends it with its project,
//! and staging hard-links its results (not its dataset XML or its log) under
//! `Project N: …/Analysis {id}: {name}/`. The demo's failed job stages nothing.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use smrtshare_api::staging::v1 as pb;
use smrtshare_tests::{Stack, StackOptions};

/// The demo's finished mapping job, and its failed one.
const FINISHED: i64 = 41;
const FAILED: i64 = 43;

/// The directory of job `id` in any project directory under `root`.
fn job_dir(root: &Path, id: i64) -> Option<PathBuf> {
    let prefix = format!("Analysis {id}: ");
    std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|p| !p.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|p| std::fs::read_dir(p.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_outputs_appear_in_its_project_directory() {
    // The harness's convergence check (at start) covers jobs too: the finished job's directory
    // holds its BAM and only links to its outputs, the failed and the running job have none.
    let stack = Stack::start(StackOptions {
        analysis_jobs: true,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let outputs = stack
        .data_root()
        .join("jobs_root/0000/0000000")
        .join(format!("{FINISHED:010}"))
        .join("outputs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dir = loop {
        if let Some(dir) = job_dir(stack.root(), FINISHED)
            && dir.join("mapped.bam").exists()
        {
            break dir;
        }
        assert!(
            Instant::now() < deadline,
            "job {FINISHED}'s outputs were not staged within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let project_dir = dir.parent().unwrap().to_path_buf();
    let mut staged: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    staged.sort();
    assert_eq!(
        staged,
        vec!["mapped.bam", "mapped.bam.bai", "mapping_stats.report.json"],
        "results only: the dataset XML and the log are left out"
    );
    for name in &staged {
        let (a, b) = (
            std::fs::metadata(dir.join(name)).unwrap(),
            std::fs::metadata(outputs.join(name)).unwrap(),
        );
        assert_eq!(
            (a.dev(), a.ino()),
            (b.dev(), b.ino()),
            "{name} is a hard link"
        );
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().mode() & 0o7777,
        0o1775,
        "{}",
        dir.display()
    );
    assert!(
        job_dir(stack.root(), FAILED).is_none(),
        "a failed job stages nothing"
    );

    // Staging reports the job with its project.
    let mut staging = stack.staging().unwrap();
    let mut listed = staging
        .list_projects(pb::ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut holder = None;
    while let Some(p) = listed.message().await.unwrap() {
        if p.analysis_job_ids.contains(&FINISHED) {
            holder = Some(p);
        }
    }
    let holder = holder.expect("a project lists the finished job");
    assert_eq!(
        stack.root().join(&holder.directory),
        project_dir,
        "{holder:?}"
    );
    assert!(!holder.analysis_job_ids.contains(&FAILED));
    let got = staging
        .get_project(pb::GetProjectRequest {
            project_id: holder.project_id,
            verify: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.analysis_jobs.len(), 1, "{got:#?}");
    assert_eq!(got.analysis_jobs[0].files.len(), 3);
    assert!(got.drift.is_empty(), "{:#?}", got.drift);
}
