//! Analysis jobs driven over the admin HTTP API (as the binary is driven), and schedules seeded
//! from `analysis_jobs.json`.

use std::path::Path;

use serde_json::{Value, json};
use smrtshare_common::Secret;
use smrtshare_smrtlink::SmrtLinkClient;
use smrtshare_smrtlink::model::JobState;
use smrtshare_smrtlink_standin::{Seed, StandIn, StandInOptions};

use crate::support::{PASSWORD, USER, fixture, parent, raw_get};

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_api_adds_schedules_moves_renames_deactivates_and_removes_jobs() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}admin/{path}", fx.standin.url());
    let bam = fx
        .tomatoes
        .join("hifi_reads/m84100_240301_194028_s1.hifi_reads.bc1047.bam");

    let (status, created) = send(http.post(admin("jobs")).json(&json!({
        "name": "Map tomatoes",
        "project_id": 2,
        "state": "CREATED",
        "pipeline": "cromwell.workflows.pb_align_ccs",
        "entry_points": [parent().to_string()],
        "outputs": [
            {"path": bam.display().to_string(), "file_type_id": "PacBio.FileTypes.bam", "name": "Mapped BAM"},
            {"path": "/data/jobs/x.log", "file_type_id": "PacBio.FileTypes.log"}
        ],
        "schedule": [
            {"after_seconds": 10, "state": "RUNNING"},
            {"afterSeconds": 20.5, "state": "SUCCESSFUL"}
        ]
    })))
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(created["uuid"], job.uuid.to_string());
    assert_eq!(job.state, JobState::Created);

    // The admin state shows the steps still to come; SMRT Link's answers never do.
    let (_, state) = send(http.get(admin("state"))).await;
    let entry = state["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"]["id"] == id)
        .unwrap();
    assert_eq!(entry["schedule"].as_array().unwrap().len(), 2);
    assert_eq!(entry["schedule"][1]["state"], "SUCCESSFUL");

    // The clock, over HTTP.
    let (status, clock) = send(
        http.post(admin("clock/advance"))
            .json(&json!({"seconds": 15})),
    )
    .await;
    assert_eq!(
        (status, clock["offset_seconds"].as_f64()),
        (200, Some(15.0))
    );
    assert_eq!(
        client.get_analysis_job(id).await.unwrap().unwrap().state,
        JobState::Running
    );
    let (_, clock) = send(http.get(admin("clock"))).await;
    assert!(clock["now"].as_str().unwrap().ends_with('Z'), "{clock}");
    let (status, refused) = send(
        http.post(admin("clock/advance"))
            .json(&json!({"seconds": -1})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");

    // A new schedule replaces the old one, counting from now.
    let (status, _) = send(
        http.put(admin(&format!("jobs/{id}/schedule")))
            .json(&json!({"schedule": [{"afterSeconds": 100, "state": "TERMINATED", "errorMessage": "stopped"}]})),
    )
    .await;
    assert_eq!(status, 204);
    send(
        http.post(admin("clock/advance"))
            .json(&json!({"seconds": 50})),
    )
    .await;
    assert_eq!(
        client.get_analysis_job(id).await.unwrap().unwrap().state,
        JobState::Running
    );
    send(
        http.post(admin("clock/advance"))
            .json(&json!({"seconds": 50})),
    )
    .await;
    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.error_message.as_deref()),
        (JobState::Terminated, Some("stopped"))
    );

    // Set by hand.
    let (status, _) = send(
        http.put(admin(&format!("jobs/{id}/state")))
            .json(&json!({"state": "SUCCESSFUL"})),
    )
    .await;
    assert_eq!(status, 204);
    let files = client.analysis_job_datastore(id).await.unwrap();
    assert_eq!(files.len(), 2);
    assert!(
        files
            .iter()
            .any(|f| f.name.as_deref() == Some("Mapped BAM"))
    );

    // Rename, move, soft-delete in one PATCH: the answer is the job as SMRT Link serves it.
    let (status, patched) = send(
        http.patch(admin(&format!("jobs/{id}")))
            .json(&json!({"name": "Map tomatoes (v2)", "project_id": 1, "is_active": false})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            &patched["name"],
            &patched["projectId"],
            &patched["isActive"]
        ),
        (&json!("Map tomatoes (v2)"), &json!(1), &json!(false))
    );
    assert!(client.list_analysis_jobs(None).await.unwrap().is_empty());
    assert_eq!(
        client.list_all_analysis_jobs(Some(1)).await.unwrap()[0].id,
        id
    );

    // Refusals name what is wrong.
    for (body, status, needle) in [
        (json!({"project_id": 99}), 404, "Unable to find project 99"),
        (json!({"name": ""}), 400, "name"),
    ] {
        let (got, answer) = send(http.patch(admin(&format!("jobs/{id}"))).json(&body)).await;
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{answer}"
        );
    }
    let (got, answer) = send(http.patch(admin("jobs/999")).json(&json!({"name": "x"}))).await;
    assert_eq!(got, 404, "{answer}");
    let (got, answer) = send(
        http.put(admin(&format!("jobs/{id}/state")))
            .json(&json!({"state": "PAUSED"})),
    )
    .await;
    assert_eq!(got, 400);
    assert!(
        answer["message"].as_str().unwrap().contains("PAUSED"),
        "{answer}"
    );

    // Removed: 404 from then on, and removing it again is 404 too.
    let (status, _) = send(http.delete(admin(&format!("jobs/{id}")))).await;
    assert_eq!(status, 204);
    assert_eq!(client.get_analysis_job(id).await.unwrap(), None);
    let (status, _) = send(http.delete(admin(&format!("jobs/{id}")))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_step() {
    let Some(fx) = fixture().await else { return };
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}admin/{path}", fx.standin.url());
    let cases = [
        (
            json!([{"afterSeconds": 1, "at": "2024-01-01T00:00:00Z", "state": "RUNNING"}]),
            "schedule[0]: give afterSeconds or at, not both",
        ),
        (
            json!([{"state": "RUNNING"}]),
            "schedule[0]: afterSeconds or at is required",
        ),
        (
            json!([{"afterSeconds": -3, "state": "RUNNING"}]),
            "schedule[0].afterSeconds: expected a number of seconds",
        ),
        (
            json!([{"afterSeconds": "5", "state": "RUNNING"}]),
            "schedule[0].afterSeconds",
        ),
        (
            json!([{"at": "yesterday", "state": "RUNNING"}]),
            "schedule[0].at: expected an RFC 3339 time",
        ),
        (
            json!([{"afterSeconds": 1, "state": "PAUSED"}]),
            "schedule[0].state: unknown job state \"PAUSED\"",
        ),
        (json!([{"afterSeconds": 1}]), "schedule[0].state: missing"),
        (
            json!([{"afterSeconds": 1, "state": "FAILED", "errorMessage": 7}]),
            "schedule[0].errorMessage: expected a string",
        ),
        (
            json!([{"afterSeconds": 5, "state": "RUNNING"}, {"afterSeconds": 2, "state": "SUCCESSFUL"}]),
            "schedule[1]: due before step 0",
        ),
        (
            json!([{"afterSeconds": 5, "state": "SUCCESSFUL"}, {"afterSeconds": 6, "state": "FAILED"}]),
            "schedule[1]: the job is SUCCESSFUL by then",
        ),
        (
            json!({"afterSeconds": 5}),
            "schedule: expected a list of steps",
        ),
    ];
    for (schedule, expected) in cases {
        let (status, answer) = send(http.post(admin("jobs")).json(&json!({
            "name": "Bad", "project_id": 2, "state": "CREATED", "schedule": schedule
        })))
        .await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
    assert!(
        fx.client()
            .list_analysis_jobs(None)
            .await
            .unwrap()
            .is_empty(),
        "a refused job leaves nothing behind"
    );
}

fn seed_dir_with_jobs(fixtures: &Path, jobs: &Value) -> smrtshare_testkit::tempfile::TempDir {
    let seed = smrtshare_testkit::tempfile::tempdir().unwrap();
    for file in ["projects.json", "datasets.json"] {
        std::fs::copy(fixtures.join(file), seed.path().join(file)).unwrap();
    }
    std::fs::write(seed.path().join("analysis_jobs.json"), jobs.to_string()).unwrap();
    seed
}

async fn start(seed: &Path) -> anyhow::Result<StandIn> {
    StandIn::start(StandInOptions {
        seed: Some(Seed::new(seed)),
        users: vec![(USER.into(), Secret::new(PASSWORD))],
        ..StandInOptions::default()
    })
    .await
}

#[tokio::test]
async fn seeded_schedules_run_from_the_start_and_absolute_steps_in_the_past_are_applied_at_once() {
    let Some(fixtures) =
        smrtshare_testkit::smrtlink_fixtures(Path::new(env!("CARGO_MANIFEST_DIR")))
    else {
        return;
    };
    let job = |id: i64, state: &str, schedule: Value| {
        json!({
            "id": id, "uuid": uuid::Uuid::new_v4(), "name": format!("Job {id}"), "state": state,
            "projectId": 2, "jobTypeId": "analysis", "isActive": true,
            "createdAt": "2024-03-11T20:16:38.435Z", "updatedAt": "2024-03-11T20:16:38.435Z",
            "standinSchedule": schedule,
            "datastore": [{
                "uuid": uuid::Uuid::new_v4(), "fileTypeId": "PacBio.FileTypes.JsonReport",
                "path": "/data/jobs/report.json", "isActive": true, "jobId": id
            }]
        })
    };
    let seed = seed_dir_with_jobs(
        &fixtures,
        &json!([
            job(
                10,
                "RUNNING",
                json!([{"at": "2024-03-11T21:00:00Z", "state": "SUCCESSFUL"}])
            ),
            job(
                11,
                "CREATED",
                json!([{"afterSeconds": 30, "state": "RUNNING"}, {"afterSeconds": 90, "state": "SUCCESSFUL"}])
            ),
        ]),
    );
    let standin = start(seed.path()).await.unwrap();
    let client = SmrtLinkClient::new(standin.client_config(USER, PASSWORD)).unwrap();

    // SMRT Link went on while nobody watched: an absolute step in the past already happened.
    let done = client.get_analysis_job(10).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Successful);
    assert_eq!(
        done.job_updated_at,
        Some("2024-03-11T21:00:00Z".parse().unwrap())
    );
    assert_eq!(client.analysis_job_datastore(10).await.unwrap().len(), 1);

    assert_eq!(
        client.get_analysis_job(11).await.unwrap().unwrap().state,
        JobState::Created
    );
    assert!(client.analysis_job_datastore(11).await.unwrap().is_empty());
    standin
        .advance_clock(std::time::Duration::from_secs(31))
        .unwrap();
    assert_eq!(
        client.get_analysis_job(11).await.unwrap().unwrap().state,
        JobState::Running
    );
    standin
        .advance_clock(std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        client.get_analysis_job(11).await.unwrap().unwrap().state,
        JobState::Successful
    );
    assert_eq!(client.analysis_job_datastore(11).await.unwrap().len(), 1);
    let (_, raw) = raw_get(&standin, "/smrt-link/job-manager/jobs/analysis").await;
    assert!(!raw.to_string().contains("standinSchedule"), "{raw}");

    // A bad seed schedule stops the stand-in from starting, naming the job and the step.
    let bad = seed_dir_with_jobs(
        &fixtures,
        &json!([job(
            12,
            "SUCCESSFUL",
            json!([{"afterSeconds": 1, "state": "RUNNING"}])
        )]),
    );
    let error = format!("{:#}", start(bad.path()).await.unwrap_err());
    assert!(
        error.contains("analysis_jobs.json: jobs[0]")
            && error.contains("standinSchedule[0]: the job is SUCCESSFUL by then"),
        "{error}"
    );
    let unknown_state = seed_dir_with_jobs(
        &fixtures,
        &json!([job(
            13,
            "PAUSED",
            json!([{"afterSeconds": 1, "state": "RUNNING"}])
        )]),
    );
    let error = format!("{:#}", start(unknown_state.path()).await.unwrap_err());
    assert!(error.contains("needs a known state"), "{error}");
}

#[tokio::test]
async fn the_demo_seed_serves_a_finished_a_running_and_a_failed_job() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let demo = smrtshare_demo::generate_demo(dir.path()).unwrap();
    let standin = start(&demo.smrtlink_dir).await.unwrap();
    let client = SmrtLinkClient::new(standin.client_config(USER, PASSWORD)).unwrap();
    let states = || async {
        let mut jobs: Vec<(i64, i64, JobState)> = client
            .list_analysis_jobs(None)
            .await
            .unwrap()
            .iter()
            .map(|j| (j.id, j.project_id, j.state))
            .collect();
        jobs.sort_unstable_by_key(|j| j.0);
        jobs
    };
    assert_eq!(
        states().await,
        [
            (41, 2, JobState::Successful),
            (42, 3, JobState::Created),
            (43, 4, JobState::Failed)
        ]
    );
    let outputs = |files: &[smrtshare_smrtlink::model::DataStoreFile]| -> Vec<String> {
        let mut types: Vec<String> = files.iter().map(|f| f.file_type_id.clone()).collect();
        types.sort();
        types
    };
    let finished = client.analysis_job_datastore(41).await.unwrap();
    assert_eq!(
        outputs(&finished),
        [
            "PacBio.DataSet.ConsensusAlignmentSet",
            "PacBio.FileTypes.JsonReport",
            "PacBio.FileTypes.bam",
            "PacBio.FileTypes.bam_bai",
            "PacBio.FileTypes.log"
        ]
    );
    for file in &finished {
        assert!(
            Path::new(&file.path).starts_with(&demo.jobs_root),
            "{}",
            file.path
        );
        assert_eq!(
            std::fs::metadata(&file.path).unwrap().len(),
            file.file_size.unwrap()
        );
    }
    assert!(client.analysis_job_datastore(42).await.unwrap().is_empty());
    let failed = client.get_analysis_job(43).await.unwrap().unwrap();
    assert!(failed.error_message.unwrap().contains("out of memory"));
    assert_eq!(
        outputs(&client.analysis_job_datastore(43).await.unwrap()),
        ["PacBio.FileTypes.log"]
    );

    // Job 42 runs, then finishes, by the demo's clock.
    standin
        .advance_clock(smrtshare_demo::RUNNING_JOB_STARTS_AFTER)
        .unwrap();
    assert_eq!(states().await[1].2, JobState::Running);
    assert_eq!(
        outputs(&client.analysis_job_datastore(42).await.unwrap()),
        ["PacBio.FileTypes.log"]
    );
    standin
        .advance_clock(smrtshare_demo::RUNNING_JOB_FINISHES_AFTER)
        .unwrap();
    assert_eq!(states().await[1].2, JobState::Successful);
    let files = client.analysis_job_datastore(42).await.unwrap();
    assert_eq!(files.len(), 5);
    assert!(files.iter().all(|f| Path::new(&f.path).is_file()));
}
