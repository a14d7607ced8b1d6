//! Analysis jobs: found by the mirrored submission or by resync, followed until final on a
//! schedule kept in the database, and, once finished, their outputs sent to staging with the
//! project; failed jobs stage nothing and say why; moved, renamed and deleted jobs follow.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use smrtshare_api::coordinator::v1 as pb;
use smrtshare_common::db::Backend;
use smrtshare_coordinator::clock::Clock;

use crate::harness::{
    FakePeers, MemorySource, Running, eventually, settings, status, store, wait_change,
};
use smrtshare_testkit::both_backends;

const LONG: Duration = Duration::from_secs(30);

both_backends!(
    a_job_finishing_after_its_submission_is_staged,
    a_job_finished_while_the_coordinator_was_down_is_staged_by_resync,
    a_failed_job_stages_nothing_and_says_why,
    moved_renamed_and_deleted_jobs_follow_their_projects,
);

fn staged_jobs(peers: &FakePeers, project: i64) -> Vec<(i64, Vec<String>)> {
    peers
        .staging
        .analysis
        .lock()
        .unwrap()
        .get(&project)
        .map(|jobs| {
            jobs.iter()
                .map(|(id, files)| (*id, files.clone()))
                .collect()
        })
        .unwrap_or_default()
}

async fn project(client: &mut crate::harness::Client, id: i64) -> pb::Project {
    client
        .get_project(pb::GetProjectRequest { project_id: id })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap()
}

async fn start(
    backend: Backend,
) -> (
    Running,
    Arc<MemorySource>,
    FakePeers,
    smrtshare_testkit::TestDatabase,
) {
    let (store, db) = store(backend, Clock::system()).await;
    let source = Arc::new(MemorySource::default());
    source.put(2, "Tomato", &["alice"], &["d1"]);
    source.put(3, "Rice", &["bob"], &["d3"]);
    let peers = FakePeers::start().await;
    let running = Running::start(
        store,
        source.clone(),
        peers.peers(),
        settings("solo", Duration::ZERO),
    )
    .await;
    let mut client = running.client();
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    for item in &report.items {
        wait_change(&mut client, item.change_id, LONG, |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
    (running, source, peers, db)
}

async fn a_job_finishing_after_its_submission_is_staged(backend: Backend) {
    let (running, source, peers, _db) = start(backend).await;
    let mut client = running.client();
    source.put_job(
        7,
        2,
        "Align to tomato",
        "RUNNING",
        &["aligned.bam", "aligned.bam.bai"],
    );

    // The web UI's POST …/job-manager/jobs/analysis, mirrored.
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{}/SMRTLink/2.0.0/smrt-link/job-manager/jobs/analysis",
            running.intake
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    eventually(LONG, "the job to be followed", || {
        source.job_reads.load(Ordering::SeqCst) >= 2
    })
    .await;
    let followed = project(&mut client, 2).await;
    assert_eq!(followed.analysis_jobs.len(), 1, "{followed:#?}");
    assert_eq!(followed.analysis_jobs[0].state, "RUNNING");
    assert!(
        followed.analysis_jobs[0].next_check_at.is_some(),
        "followed on a schedule"
    );
    assert!(
        staged_jobs(&peers, 2).is_empty(),
        "nothing staged while it runs"
    );

    source.put_job(
        7,
        2,
        "Align to tomato",
        "SUCCESSFUL",
        &["aligned.bam", "aligned.bam.bai"],
    );
    eventually(LONG, "the outputs to be staged", || {
        !staged_jobs(&peers, 2).is_empty()
    })
    .await;
    assert_eq!(
        staged_jobs(&peers, 2),
        vec![(
            7,
            vec![
                "/jobs_root/7/aligned.bam".to_owned(),
                "/jobs_root/7/aligned.bam.bai".to_owned()
            ]
        )]
    );
    let done = project(&mut client, 2).await;
    let job = &done.analysis_jobs[0];
    assert_eq!(
        (job.state.as_str(), job.outputs, job.next_check_at.is_none()),
        ("SUCCESSFUL", 2, true)
    );
    let changes = client
        .list_changes(pb::ListChangesRequest {
            project_id: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    let analysis = changes
        .iter()
        .find(|c| c.reason == pb::ChangeReason::Analysis as i32)
        .expect("an analysis change");
    assert!(
        analysis.message.contains("finished: 2 outputs"),
        "{}",
        analysis.message
    );
    assert_eq!(analysis.tasks.len(), 1, "staging only: {analysis:#?}");
    running.stop().await;
}

async fn a_job_finished_while_the_coordinator_was_down_is_staged_by_resync(backend: Backend) {
    let (running, source, peers, _db) = start(backend).await;
    let mut client = running.client();
    // Nobody told the coordinator: the job ran and finished meanwhile.
    source.put_job(8, 3, "Variants", "SUCCESSFUL", &["variants.vcf"]);
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(report.listing_complete, "{report:#?}");
    eventually(LONG, "the outputs to be staged", || {
        !staged_jobs(&peers, 3).is_empty()
    })
    .await;
    assert_eq!(
        staged_jobs(&peers, 3),
        vec![(8, vec!["/jobs_root/8/variants.vcf".to_owned()])]
    );
    // In step afterwards: the next resync finds nothing to do.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(again.items.is_empty(), "{again:#?}");
    running.stop().await;
}

async fn a_failed_job_stages_nothing_and_says_why(backend: Backend) {
    let (running, source, peers, _db) = start(backend).await;
    let mut client = running.client();
    source.put_job(9, 2, "Assembly", "FAILED", &["contigs.fasta"]);
    client.resync(pb::ResyncRequest::default()).await.unwrap();
    eventually(LONG, "the job to be read", || {
        source.job_reads.load(Ordering::SeqCst) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = project(&mut client, 2).await;
    let job = &p.analysis_jobs[0];
    assert_eq!(job.state, "FAILED");
    assert!(job.message.contains("ran out of memory"), "{job:#?}");
    assert!(job.next_check_at.is_none(), "no longer followed");
    assert!(staged_jobs(&peers, 2).is_empty());
    running.stop().await;
}

async fn moved_renamed_and_deleted_jobs_follow_their_projects(backend: Backend) {
    let (running, source, peers, _db) = start(backend).await;
    let mut client = running.client();
    source.put_job(10, 2, "Align", "SUCCESSFUL", &["a.bam"]);
    client.resync(pb::ResyncRequest::default()).await.unwrap();
    eventually(LONG, "the outputs to be staged", || {
        !staged_jobs(&peers, 2).is_empty()
    })
    .await;

    // Moved to project 3 at SMRT Link: it leaves project 2 and is staged in project 3.
    source.put_job(10, 3, "Align", "SUCCESSFUL", &["a.bam"]);
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    for item in &report.items {
        wait_change(&mut client, item.change_id, LONG, |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
    assert!(staged_jobs(&peers, 2).is_empty(), "{report:#?}");
    assert_eq!(staged_jobs(&peers, 3).len(), 1);

    // Renamed: staging is sent the new name.
    source.put_job(10, 3, "Align (final)", "SUCCESSFUL", &["a.bam"]);
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!report.items.is_empty(), "{report:#?}");
    for item in &report.items {
        wait_change(&mut client, item.change_id, LONG, |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
    assert_eq!(
        project(&mut client, 3).await.analysis_jobs[0].name,
        "Align (final)"
    );

    // Deleted at SMRT Link: its outputs leave project 3.
    source.jobs.lock().unwrap().remove(&10);
    let report = client
        .resync(pb::ResyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    for item in &report.items {
        wait_change(&mut client, item.change_id, LONG, |c| {
            status(c) == pb::ChangeStatus::Ok
        })
        .await;
    }
    assert!(staged_jobs(&peers, 3).is_empty(), "{report:#?}");
    assert!(project(&mut client, 3).await.analysis_jobs.is_empty());
    running.stop().await;
}
