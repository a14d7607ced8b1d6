//! Analysis jobs at the stand-in, read through the client: SMRT Link's shapes, listings by
//! project with soft-deleted jobs, schedules on the stand-in's clock, removal, project deletion.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use smrtshare_smrtlink::Error;
use smrtshare_smrtlink::model::{JobPhase, JobState};
use smrtshare_smrtlink_standin::{JobOutput, JobSeed, ScheduleStep};

use crate::support::{Fixture, fixture, parent, raw_get};

const BAM: &str = "hifi_reads/m84100_240301_194028_s1.hifi_reads.bc1047.bam";
const PBI: &str = "hifi_reads/m84100_240301_194028_s1.hifi_reads.bc1047.bam.pbi";
const REPORT: &str = "statistics/m84100_240301_194028_s1.ccs_report.json";
const LOG: &str = "metadata/m84100_240301_194028_s1.ccs.log";

/// A job in project 2 with four outputs (the fixture's files stand in for them).
fn mapping_job(fx: &Fixture, state: JobState, schedule: Vec<ScheduleStep>) -> i64 {
    let path = |rel: &str| fx.tomatoes.join(rel).display().to_string();
    fx.standin
        .add_analysis_job(JobSeed {
            pipeline: Some("cromwell.workflows.pb_align_ccs".into()),
            entry_points: vec![parent()],
            outputs: vec![
                JobOutput::new(path(BAM), "PacBio.FileTypes.bam"),
                JobOutput::new(path(PBI), "PacBio.Index.PacBioIndex"),
                JobOutput {
                    name: Some("CCS Report".into()),
                    source_id: Some("pbreports.tasks.ccs_report-out-0".into()),
                    ..JobOutput::new(path(REPORT), "PacBio.FileTypes.JsonReport")
                },
                JobOutput::new(path(LOG), "PacBio.FileTypes.log"),
            ],
            schedule,
            ..JobSeed::new("Map tomatoes", 2, state)
        })
        .unwrap()
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn file_names(files: &[smrtshare_smrtlink::model::DataStoreFile]) -> Vec<&str> {
    let mut names: Vec<&str> = files
        .iter()
        .map(|f| f.path.rsplit('/').next().unwrap())
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn job_records_and_datastore_files_have_smrt_links_shapes() {
    let Some(fx) = fixture().await else { return };
    let id = mapping_job(&fx, JobState::Successful, Vec::new());

    let (status, job) = raw_get(
        &fx.standin,
        &format!("/smrt-link/job-manager/jobs/analysis/{id}"),
    )
    .await;
    assert_eq!(status, 200);
    let job_keys = keys(&job);
    for key in [
        "id",
        "uuid",
        "name",
        "comment",
        "state",
        "projectId",
        "jobTypeId",
        "subJobTypeId",
        "path",
        "createdAt",
        "updatedAt",
        "jobUpdatedAt",
        "jobCompletedAt",
        "createdBy",
        "isActive",
        "isMultiJob",
        "tags",
        "jsonSettings",
        "smrtlinkVersion",
    ] {
        assert!(job_keys.contains(key), "job lacks {key}: {job_keys:?}");
    }
    assert_eq!(job["jobTypeId"], "analysis");
    assert_eq!(job["subJobTypeId"], "cromwell.workflows.pb_align_ccs");
    // SMRT Link's jobs_root layout: job 1589 lives in 0000/0000001/0000001589.
    assert_eq!(
        job["path"],
        format!("/opt/pacbio/smrtlink/userdata/jobs_root/0000/0000000/{id:010}")
    );
    let settings: Value = serde_json::from_str(job["jsonSettings"].as_str().unwrap()).unwrap();
    assert_eq!(settings["pipelineId"], "cromwell.workflows.pb_align_ccs");

    let (status, files) = raw_get(
        &fx.standin,
        &format!("/smrt-link/job-manager/jobs/analysis/{id}/datastore"),
    )
    .await;
    assert_eq!(status, 200);
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 4);
    let expected: BTreeSet<&str> = [
        "uuid",
        "fileTypeId",
        "sourceId",
        "fileSize",
        "createdAt",
        "modifiedAt",
        "importedAt",
        "path",
        "isChunked",
        "isActive",
        "name",
        "description",
        "jobId",
        "jobUUID",
    ]
    .into();
    for file in files {
        assert_eq!(keys(file), expected);
        assert_eq!(file["jobId"], id);
        assert_eq!(file["jobUUID"], job["uuid"]);
    }
    let report = files
        .iter()
        .find(|f| f["fileTypeId"] == "PacBio.FileTypes.JsonReport")
        .unwrap();
    assert_eq!(report["name"], "CCS Report");
    assert_eq!(report["sourceId"], "pbreports.tasks.ccs_report-out-0");

    // The client reads the same answers, typed.
    let client = fx.client();
    let typed = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(
        typed.sub_job_type_id.as_deref(),
        Some("cromwell.workflows.pb_align_ccs")
    );
    assert!(typed.job_updated_at.is_some());
    let typed_files = client.analysis_job_datastore(id).await.unwrap();
    let bam = typed_files
        .iter()
        .find(|f| f.file_type_id == "PacBio.FileTypes.bam")
        .unwrap();
    assert_eq!(bam.job_uuid, Some(typed.uuid));
    assert_eq!(
        bam.file_size,
        Some(std::fs::metadata(fx.tomatoes.join(BAM)).unwrap().len())
    );
    assert!(!bam.is_chunked && bam.is_active && bam.imported_at.is_some());
    // By UUID too, as SMRT Link answers.
    let (status, by_uuid) = raw_get(
        &fx.standin,
        &format!("/smrt-link/job-manager/jobs/analysis/{}", typed.uuid),
    )
    .await;
    assert_eq!((status, &by_uuid["id"]), (200, &Value::from(id)));
}

#[tokio::test]
async fn listings_filter_by_project_and_leave_soft_deleted_jobs_out_unless_show_all() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let a = mapping_job(&fx, JobState::Successful, Vec::new());
    let b = mapping_job(&fx, JobState::Running, Vec::new());
    let general = fx
        .standin
        .add_analysis_job(JobSeed::new("Loose job", 1, JobState::Failed))
        .unwrap();
    let ids = |jobs: Vec<smrtshare_smrtlink::model::AnalysisJob>| -> BTreeSet<i64> {
        jobs.iter().map(|j| j.id).collect()
    };
    assert_eq!(
        ids(client.list_analysis_jobs(Some(2)).await.unwrap()),
        [a, b].into()
    );
    assert_eq!(
        ids(client.list_analysis_jobs(Some(1)).await.unwrap()),
        [general].into()
    );
    assert_eq!(
        ids(client.list_analysis_jobs(None).await.unwrap()),
        [a, b, general].into()
    );
    assert!(
        client
            .list_analysis_jobs(Some(77))
            .await
            .unwrap()
            .is_empty()
    );

    // Soft-deleted: out of the default listing, in the showAll one, still answered by id.
    fx.standin.set_job_active(a, false).unwrap();
    assert_eq!(
        ids(client.list_analysis_jobs(Some(2)).await.unwrap()),
        [b].into()
    );
    let all = client.list_all_analysis_jobs(Some(2)).await.unwrap();
    assert_eq!(ids(all.clone()), [a, b].into());
    assert!(!all.iter().find(|j| j.id == a).unwrap().is_active);
    assert_eq!(
        ids(client.list_all_analysis_jobs(None).await.unwrap()).len(),
        3
    );
    let job = client.get_analysis_job(a).await.unwrap().unwrap();
    assert!(!job.is_active);
    assert_eq!(job.state, JobState::Successful);
    let files = client.analysis_job_datastore(a).await.unwrap();
    assert_eq!(files.len(), 4);
    assert!(
        files.iter().all(|f| !f.is_active),
        "the files of a deleted job are inactive"
    );
    fx.standin.set_job_active(a, true).unwrap();
    assert!(
        client
            .analysis_job_datastore(a)
            .await
            .unwrap()
            .iter()
            .all(|f| f.is_active)
    );

    // Removed altogether: 404 everywhere.
    fx.standin.delete_job(b).unwrap();
    assert_eq!(client.get_analysis_job(b).await.unwrap(), None);
    assert!(matches!(
        client.analysis_job_datastore(b).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        client.analysis_job_entry_points(b).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        ids(client.list_all_analysis_jobs(Some(2)).await.unwrap()),
        [a].into()
    );
    let (status, body) = raw_get(
        &fx.standin,
        "/smrt-link/job-manager/jobs/analysis/not-a-job",
    )
    .await;
    assert_eq!((status, &body["httpCode"]), (404, &Value::from(404)));
    let (status, body) = raw_get(
        &fx.standin,
        "/smrt-link/job-manager/jobs/analysis?projectId=two",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("projectId"),
        "{body}"
    );
}

#[tokio::test]
async fn moves_renames_and_project_deletion_are_seen_at_the_next_read() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let id = mapping_job(&fx, JobState::Successful, Vec::new());
    let before = client.get_analysis_job(id).await.unwrap().unwrap();

    fx.standin.advance_clock(Duration::from_secs(30)).unwrap();
    fx.standin.rename_job(id, "Map tomatoes again").unwrap();
    let project = fx
        .standin
        .create_project(smrtshare_smrtlink_standin::NewProject {
            name: "Tomato 2".into(),
            ..Default::default()
        })
        .unwrap();
    fx.standin.move_job(id, project).unwrap();
    let after = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(
        (after.name.as_str(), after.project_id),
        ("Map tomatoes again", project)
    );
    assert!(after.updated_at > before.updated_at);
    assert_eq!(
        after.job_updated_at, before.job_updated_at,
        "the job itself did not change"
    );
    assert!(client.list_analysis_jobs(Some(2)).await.unwrap().is_empty());
    assert_eq!(
        client.list_analysis_jobs(Some(project)).await.unwrap()[0].id,
        id
    );

    assert!(matches!(
        fx.standin.move_job(id, 404),
        Err(smrtshare_smrtlink_standin::StandInError::NotFound(_))
    ));
    assert!(fx.standin.rename_job(id, " ").is_err());
    assert!(fx.standin.move_job(999, 2).is_err());

    // A deleted project's jobs return to the General Project, as its datasets do.
    fx.standin.delete_project(project).unwrap();
    assert_eq!(
        client
            .get_analysis_job(id)
            .await
            .unwrap()
            .unwrap()
            .project_id,
        1
    );
}

#[tokio::test]
async fn schedules_move_jobs_on_the_stand_ins_clock_with_the_times_steps_were_due() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let id = mapping_job(
        &fx,
        JobState::Created,
        vec![
            ScheduleStep::after(Duration::from_secs(5), JobState::Running),
            ScheduleStep::after(Duration::from_secs(60), JobState::Successful),
        ],
    );
    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    let created = job.created_at.unwrap();
    assert_eq!(job.state, JobState::Created);
    assert!(client.analysis_job_datastore(id).await.unwrap().is_empty());

    fx.standin.advance_clock(Duration::from_secs(5)).unwrap();
    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(
        job.job_updated_at,
        Some(created + chrono::TimeDelta::seconds(5))
    );
    let started: chrono::DateTime<chrono::Utc> =
        job.extra["jobStartedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(Some(started), job.job_updated_at);
    // Running: SMRT Link has imported the job log, nothing else yet.
    let files = client.analysis_job_datastore(id).await.unwrap();
    assert_eq!(file_names(&files), ["m84100_240301_194028_s1.ccs.log"]);
    assert_eq!(
        client.list_analysis_jobs(Some(2)).await.unwrap()[0].state,
        JobState::Running
    );

    // Nobody looks for a while: the step is applied with the time it was due.
    fx.standin.advance_clock(Duration::from_secs(3600)).unwrap();
    let listed = client.list_analysis_jobs(Some(2)).await.unwrap();
    assert_eq!(listed[0].state, JobState::Successful);
    assert_eq!(listed[0].state.phase(), JobPhase::Done);
    let finished = created + chrono::TimeDelta::seconds(60);
    assert_eq!(listed[0].job_updated_at, Some(finished));
    assert_eq!(listed[0].updated_at, Some(finished));
    let files = client.analysis_job_datastore(id).await.unwrap();
    assert_eq!(files.len(), 4);
    for file in files
        .iter()
        .filter(|f| f.file_type_id != "PacBio.FileTypes.log")
    {
        assert_eq!(file.imported_at, Some(finished), "{}", file.path);
    }
    // Never in an answer: the schedule is the stand-in's own.
    let (_, raw) = raw_get(
        &fx.standin,
        &format!("/smrt-link/job-manager/jobs/analysis/{id}"),
    )
    .await;
    assert!(!raw.to_string().contains("chedule"), "{raw}");
}

#[tokio::test]
async fn a_failing_schedule_ends_failed_with_its_message_and_the_log_only() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let id = mapping_job(
        &fx,
        JobState::Submitted,
        vec![
            ScheduleStep::after(Duration::from_secs(1), JobState::Running),
            ScheduleStep::after(Duration::from_secs(2), JobState::Failed)
                .with_error("pbmm2 exited with status 137 (out of memory)"),
        ],
    );
    fx.standin.advance_clock(Duration::from_secs(2)).unwrap();
    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(job.state.phase(), JobPhase::Failed);
    assert_eq!(
        job.error_message.as_deref(),
        Some("pbmm2 exited with status 137 (out of memory)")
    );
    assert!(job.extra.contains_key("jobCompletedAt"));
    let files = client.analysis_job_datastore(id).await.unwrap();
    assert_eq!(file_names(&files), ["m84100_240301_194028_s1.ccs.log"]);

    // A finished job never changes again: a schedule for it is refused.
    let error = fx
        .standin
        .set_job_schedule(
            id,
            &[ScheduleStep::after(Duration::ZERO, JobState::Running)],
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a finished job never changes state"),
        "{error}"
    );
    // A state set by hand drops the rest of a schedule.
    let other = mapping_job(
        &fx,
        JobState::Running,
        vec![ScheduleStep::after(
            Duration::from_secs(10),
            JobState::Successful,
        )],
    );
    fx.standin
        .set_job_state(other, JobState::Aborted, Some("aborted by admin"))
        .unwrap();
    fx.standin.advance_clock(Duration::from_secs(20)).unwrap();
    let job = client.get_analysis_job(other).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Aborted);
    assert_eq!(job.error_message.as_deref(), Some("aborted by admin"));
}
