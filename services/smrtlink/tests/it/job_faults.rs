//! The job endpoints under injected faults, and odd job answers: retries, time limits, broken
//! bodies, precise protocol errors.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smrtshare_smrtlink::model::JobState;
use smrtshare_smrtlink::{Error, SmrtLinkClient};
use smrtshare_smrtlink_standin::{Endpoint, JobOutput, JobSeed, ListingFailure};

use crate::support::{Fixture, PASSWORD, USER, fixture, raw_get};

fn finished_job(fx: &Fixture) -> i64 {
    let report = fx
        .tomatoes
        .join("statistics/m84100_240301_194028_s1.ccs_report.json");
    fx.standin
        .add_analysis_job(JobSeed {
            outputs: vec![JobOutput::new(
                report.display().to_string(),
                "PacBio.FileTypes.JsonReport",
            )],
            ..JobSeed::new("Report", 2, JobState::Successful)
        })
        .unwrap()
}

#[tokio::test]
async fn job_endpoints_retry_server_errors_and_give_up_unavailable() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    client.login().await.unwrap();
    let id = finished_job(&fx);

    for endpoint in [
        Endpoint::ListJobs,
        Endpoint::GetJob,
        Endpoint::JobDatastore,
        Endpoint::JobEntryPoints,
    ] {
        fx.standin.reset_counters();
        fx.standin.fail_next(2, 503, &[endpoint]);
        match endpoint {
            Endpoint::ListJobs => {
                assert_eq!(client.list_analysis_jobs(Some(2)).await.unwrap().len(), 1)
            }
            Endpoint::GetJob => assert!(client.get_analysis_job(id).await.unwrap().is_some()),
            Endpoint::JobDatastore => {
                assert_eq!(client.analysis_job_datastore(id).await.unwrap().len(), 1)
            }
            _ => assert!(
                client
                    .analysis_job_entry_points(id)
                    .await
                    .unwrap()
                    .is_empty()
            ),
        }
        let counters = fx.standin.counters();
        assert_eq!(counters.get(endpoint), 3, "{endpoint:?}");
        assert_eq!(counters.injected_errors, 2, "{endpoint:?}");
    }

    fx.standin
        .set_error_share(1.0, 502, &[Endpoint::JobDatastore]);
    match client.analysis_job_datastore(id).await.unwrap_err() {
        Error::Unavailable {
            endpoint,
            attempts,
            message,
        } => {
            assert_eq!(
                endpoint,
                format!("GET /smrt-link/job-manager/jobs/analysis/{id}/datastore")
            );
            assert_eq!(attempts, 3);
            assert!(message.contains("HTTP 502"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The other job endpoints are not hit.
    assert!(client.get_analysis_job(id).await.unwrap().is_some());
    fx.standin.clear_faults();

    // A 4xx is SMRT Link saying no: not retried.
    fx.standin.reset_counters();
    fx.standin.set_raw_answer(
        &format!("/smrt-link/job-manager/jobs/analysis/{id}"),
        403,
        r#"{"httpCode":403,"message":"no access to job"}"#,
    );
    assert!(matches!(
        client.get_analysis_job(id).await,
        Err(Error::Rejected { status: 403, .. })
    ));
    assert_eq!(fx.standin.count(Endpoint::GetJob), 1);
}

#[tokio::test]
async fn slow_job_answers_time_out_and_broken_bodies_are_never_short_lists() {
    let Some(fx) = fixture().await else { return };
    let id = finished_job(&fx);
    let mut config = fx.standin.client_config(USER, PASSWORD);
    config.request_timeout = Duration::from_millis(300);
    config.retry.max_attempts = 2;
    let client = SmrtLinkClient::new(config).unwrap();
    client.login().await.unwrap();

    fx.standin
        .set_delay(Duration::from_secs(3), &[Endpoint::GetJob]);
    let started = Instant::now();
    let error = client.get_analysis_job(id).await.unwrap_err();
    assert!(
        matches!(error, Error::Timeout { attempts: 2, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        client.list_analysis_jobs(None).await.unwrap().len(),
        1,
        "listings are not slowed"
    );
    fx.standin.clear_faults();

    // A job listing cut off mid-body is retried; a truncated one is a protocol error.
    for n in 0..20 {
        fx.standin
            .add_analysis_job(JobSeed::new(
                format!("Padding job {n}"),
                2,
                JobState::Running,
            ))
            .unwrap();
    }
    let client = fx.client();
    fx.standin.fail_answers(
        &[Endpoint::ListJobs],
        ListingFailure::CloseMidBody,
        u32::MAX,
    );
    let error = client.list_analysis_jobs(Some(2)).await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(
        client.list_projects().await.is_ok(),
        "project listings are not broken by a job-listing fault"
    );
    fx.standin
        .fail_answers(&[Endpoint::ListJobs], ListingFailure::CloseMidBody, 1);
    assert_eq!(client.list_analysis_jobs(Some(2)).await.unwrap().len(), 21);

    fx.standin
        .fail_answers(&[Endpoint::JobDatastore], ListingFailure::TruncatedJson, 1);
    match client.analysis_job_datastore(id).await.unwrap_err() {
        Error::Protocol { endpoint, message } => {
            assert!(endpoint.ends_with("/datastore"), "{endpoint}");
            assert!(message.contains("invalid JSON"), "{message}");
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    assert_eq!(fx.standin.counters().broken_listings, 5);
    assert_eq!(client.analysis_job_datastore(id).await.unwrap().len(), 1);
}

fn protocol_message(result: Result<impl std::fmt::Debug, Error>, endpoint: &str) -> String {
    match result {
        Err(Error::Protocol {
            endpoint: e,
            message,
        }) => {
            assert_eq!(e, endpoint);
            message
        }
        other => panic!("expected a protocol error at {endpoint}, got {other:?}"),
    }
}

#[tokio::test]
async fn odd_job_answers_are_precise_protocol_errors() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let id = finished_job(&fx);
    let job_path = format!("/smrt-link/job-manager/jobs/analysis/{id}");
    let (_, good) = raw_get(&fx.standin, &job_path).await;
    let bent = |change: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        change(&mut v);
        v.to_string()
    };
    for (body, expected) in [
        (
            bent(&|v| v["id"] = json!(id + 1)),
            format!("job.id: asked for job {id}, got job {}", id + 1),
        ),
        (
            bent(&|v| v["state"] = json!("PAUSED")),
            "job.state: unknown job state a string (\"PAUSED\")".into(),
        ),
        (
            bent(&|v| v["uuid"] = json!("nope")),
            "job.uuid: not a UUID".into(),
        ),
        (
            bent(&|v| v["jobUpdatedAt"] = json!("soon")),
            "job.jobUpdatedAt: not a timestamp".into(),
        ),
        (
            bent(&|v| v["projectId"] = json!("2")),
            "job.projectId: expected an integer".into(),
        ),
        ("{\"id\": 1,".into(), "invalid JSON".into()),
        (
            "[]".into(),
            "job: expected an object, found an array".into(),
        ),
    ] {
        fx.standin.set_raw_answer(&job_path, 200, &body);
        let message = protocol_message(
            client.get_analysis_job(id).await,
            &format!("GET {job_path}"),
        );
        assert!(
            message.contains(&expected),
            "expected {expected:?} in {message:?}"
        );
    }

    let list = "/smrt-link/job-manager/jobs/analysis";
    let item = |job_id: i64, project: i64| {
        let mut v = good.clone();
        v["id"] = json!(job_id);
        v["projectId"] = json!(project);
        v
    };
    for (body, expected) in [
        (
            json!([item(5, 2), item(5, 2)]),
            "jobs[1]: job 5 is listed twice",
        ),
        (
            json!([item(5, 2), item(6, 3)]),
            "jobs[1]: asked for the jobs of project 2, got job 6 of project 3",
        ),
        (
            json!({"jobs": []}),
            "jobs: expected an array, found an object",
        ),
        (json!([item(5, 2), {"id": 6}]), "jobs[1].state: missing"),
    ] {
        fx.standin.set_raw_answer(list, 200, &body.to_string());
        let message = protocol_message(
            client.list_analysis_jobs(Some(2)).await,
            &format!("GET {list}?projectId=2"),
        );
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }

    let datastore = format!("{job_path}/datastore");
    let (_, files) = raw_get(&fx.standin, &datastore).await;
    fx.standin.clear_raw_answers();
    let (_, files_now) = raw_get(&fx.standin, &datastore).await;
    assert_eq!(files, files_now);
    let file = files_now[0].clone();
    let bent_file = |change: &dyn Fn(&mut Value)| {
        let mut v = file.clone();
        change(&mut v);
        json!([v]).to_string()
    };
    for (body, expected) in [
        (
            bent_file(&|v| v["jobId"] = json!(id + 7)),
            format!(
                "datastore[0].jobId: asked for the files of job {id}, got a file of job {}",
                id + 7
            ),
        ),
        (
            bent_file(&|v| {
                v.as_object_mut().unwrap().remove("path");
            }),
            "datastore[0].path: missing".into(),
        ),
        (
            bent_file(&|v| v["fileSize"] = json!(-1)),
            "datastore[0].fileSize: expected a non-negative integer".into(),
        ),
        (
            bent_file(&|v| v["jobUUID"] = json!(12)),
            "datastore[0].jobUUID: expected a string".into(),
        ),
        (
            bent_file(&|v| v["isChunked"] = json!("no")),
            "datastore[0].isChunked: expected a boolean".into(),
        ),
        (
            bent_file(&|v| v["importedAt"] = json!("now")),
            "datastore[0].importedAt: not a timestamp".into(),
        ),
    ] {
        fx.standin.set_raw_answer(&datastore, 200, &body);
        let message = protocol_message(
            client.analysis_job_datastore(id).await,
            &format!("GET {datastore}"),
        );
        assert!(
            message.contains(&expected),
            "expected {expected:?} in {message:?}"
        );
    }
}
