//! Reading projects, datasets and jobs from the seeded stand-in.

use std::collections::BTreeSet;
use std::path::Path;

use smrtshare_smrtlink::model::{JobPhase, JobState, Role};
use smrtshare_smrtlink::{Error, SmrtLinkClient};
use smrtshare_smrtlink_standin::{JobOutput, JobSeed};
use uuid::Uuid;

use crate::support::{PASSWORD, USER, child_20, child_21, fixture, general_dataset, parent};

#[tokio::test]
async fn lists_fixture_projects_without_members_or_datasets_in_no_fixed_order() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let mut orders = BTreeSet::new();
    for _ in 0..24 {
        let projects = client.list_projects().await.unwrap();
        let ids: Vec<i64> = projects.iter().map(|p| p.id).collect();
        orders.insert(ids);
        for p in &projects {
            assert!(p.is_active);
            assert!(
                !p.extra.contains_key("members"),
                "list items carry no members"
            );
            assert!(
                !p.extra.contains_key("datasets"),
                "list items carry no datasets"
            );
        }
        let names: BTreeSet<&str> = projects.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["General Project", "Tomato"]));
    }
    assert!(
        orders.contains(&vec![1, 2]) && orders.contains(&vec![2, 1]),
        "order never varied: {orders:?}"
    );
}

#[tokio::test]
async fn project_detail_has_members_roles_and_the_parent_dataset() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();

    let tomato = client.get_project(2).await.unwrap().unwrap();
    assert_eq!(tomato.name, "Tomato");
    assert_eq!(tomato.description, "");
    assert!(!tomato.is_general());
    let members: Vec<(&str, &Role)> = tomato
        .members
        .iter()
        .map(|m| (m.login.as_str(), &m.role))
        .collect();
    assert_eq!(
        members,
        [("admin", &Role::Owner), ("dnasc", &Role::CanView)]
    );
    let shared: Vec<&str> = tomato.shared_members().map(|m| m.login.as_str()).collect();
    assert_eq!(shared, ["dnasc"]);

    assert_eq!(tomato.datasets.len(), 1);
    let ds = &tomato.datasets[0];
    assert_eq!(ds.uuid, parent());
    assert_eq!(ds.id, 33);
    assert_eq!(ds.num_children, 2);
    assert!(ds.is_parent());
    assert_eq!(ds.project_id, 2);
    assert_eq!(ds.parent_uuid, None);
    // The path was rewritten to the temporary copy, and the XML is there.
    assert!(
        ds.path.starts_with(fx.tomatoes.to_str().unwrap()),
        "{}",
        ds.path
    );
    assert!(Path::new(&ds.path).is_file(), "{}", ds.path);
    // A project answer carries the common metadata only, as SMRT Link's does.
    assert_eq!(ds.dataset_type, None);
    assert_eq!(ds.extra["md5"], "528c8b7cb7b0fc8318049162f535618c");

    let general = client.get_project(1).await.unwrap().unwrap();
    assert!(general.is_general());
    assert_eq!(general.grant_role_to_all, Some(Role::CanView));
    assert_eq!(general.members.len(), 2);
    assert_eq!(general.members[1].login, "superawesomeuser");
    assert_eq!(
        general.datasets.len(),
        1,
        "children are recorded in project 1 but not listed"
    );
    assert_eq!(general.datasets[0].uuid, general_dataset());

    assert_eq!(client.get_project(99).await.unwrap(), None);
}

#[tokio::test]
async fn dataset_lookups_find_the_children_with_their_naming_fields() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();

    let child = client.get_dataset(child_20()).await.unwrap().unwrap();
    assert_eq!(child.id, 35);
    assert_eq!(child.parent_uuid, Some(parent()));
    assert_eq!(child.project_id, 1);
    assert_eq!(child.num_children, 0);
    assert_eq!(child.bio_sample_name.as_deref(), Some("Tomato 20"));
    assert_eq!(child.dna_barcode_name.as_deref(), Some("bc1047--bc1047"));
    assert_eq!(
        child.metadata_context_id.as_deref(),
        Some("m84100_240301_194028_s1")
    );
    assert!(Path::new(&child.path).is_file(), "{}", child.path);

    let other = client.get_dataset(child_21()).await.unwrap().unwrap();
    assert_eq!(other.bio_sample_name.as_deref(), Some("Tomato 21"));

    let p = client.get_dataset(parent()).await.unwrap().unwrap();
    assert_eq!(
        p.dataset_type.as_deref(),
        Some("PacBio.DataSet.ConsensusReadSet")
    );
    assert_eq!(
        p.well_sample_name.as_deref(),
        Some("Germany tomato 20 and 21")
    );
    assert_eq!(p.project_id, 2);

    assert_eq!(client.get_dataset(Uuid::new_v4()).await.unwrap(), None);
}

#[tokio::test]
async fn both_path_shapes_and_both_api_versions_answer_alike() {
    let Some(fx) = fixture().await else { return };
    let mut expected: Vec<i64> = fx
        .client()
        .list_projects()
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    expected.sort_unstable();
    for base in ["/SMRTLink/1.0.0", "", "/SMRTLink/13.0.0"] {
        let mut config = fx.standin.client_config(USER, PASSWORD);
        config.base_url = fx.standin.url().join(base).unwrap();
        let client = SmrtLinkClient::new(config).unwrap();
        let mut ids: Vec<i64> = client
            .list_projects()
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, expected, "base {base:?}");
        assert_eq!(client.get_project(2).await.unwrap().unwrap().name, "Tomato");
    }
    assert!(client_status_works(&fx.client()).await);
}

async fn client_status_works(client: &SmrtLinkClient) -> bool {
    let status = client.status().await.unwrap();
    status.extra["user"] == USER && !status.version.is_empty()
}

#[tokio::test]
async fn analysis_jobs_by_project_with_entry_points_datastore_and_typed_states() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let output = fx
        .tomatoes
        .join("statistics/m84100_240301_194028_s1.ccs_report.json");
    let id = fx
        .standin
        .add_analysis_job(JobSeed {
            entry_points: vec![parent()],
            outputs: vec![JobOutput::new(
                output.display().to_string(),
                "PacBio.FileTypes.JsonReport",
            )],
            ..JobSeed::new("Map tomatoes", 2, JobState::Running)
        })
        .unwrap();

    let jobs = client.list_analysis_jobs(Some(2)).await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    assert_eq!(jobs[0].state.phase(), JobPhase::Pending);
    assert!(client.list_analysis_jobs(Some(1)).await.unwrap().is_empty());
    assert_eq!(client.list_analysis_jobs(None).await.unwrap().len(), 1);

    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!((job.name.as_str(), job.project_id), ("Map tomatoes", 2));

    let inputs = client.analysis_job_entry_points(id).await.unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].dataset_uuid, parent());
    assert_eq!(inputs[0].dataset_type, "PacBio.DataSet.ConsensusReadSet");

    // A running job's report is not imported yet.
    assert!(client.analysis_job_datastore(id).await.unwrap().is_empty());

    fx.standin
        .set_job_state(id, JobState::Successful, None)
        .unwrap();
    assert_eq!(
        client
            .get_analysis_job(id)
            .await
            .unwrap()
            .unwrap()
            .state
            .phase(),
        JobPhase::Done
    );
    let files = client.analysis_job_datastore(id).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(Path::new(&files[0].path), output);
    assert_eq!(
        files[0].file_size,
        Some(std::fs::metadata(&output).unwrap().len())
    );
    assert_eq!(files[0].job_id, Some(id));
    fx.standin
        .set_job_state(id, JobState::Terminated, Some("stopped by admin"))
        .unwrap();
    let job = client.get_analysis_job(id).await.unwrap().unwrap();
    assert_eq!(job.state.phase(), JobPhase::Failed);
    assert_eq!(job.error_message.as_deref(), Some("stopped by admin"));

    assert_eq!(client.get_analysis_job(999).await.unwrap(), None);
    assert!(matches!(
        client.analysis_job_entry_points(999).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        client.analysis_job_datastore(999).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn analysis_jobs_are_seeded_from_a_file_with_paths_rewritten() {
    let Some(fixtures) =
        smrtshare_testkit::smrtlink_fixtures(Path::new(env!("CARGO_MANIFEST_DIR")))
    else {
        return;
    };
    let seed = smrtshare_testkit::tempfile::tempdir().unwrap();
    for file in ["projects.json", "datasets.json"] {
        std::fs::copy(fixtures.join(file), seed.path().join(file)).unwrap();
    }
    let jobs = serde_json::json!([{
        "id": 41, "uuid": "0b0e5b8e-1d5c-4a8e-9a43-3c7a2f1d9e10", "name": "Demux tomatoes",
        "state": "SUCCESSFUL", "projectId": 2, "jobTypeId": "analysis", "isActive": true,
        "path": "/home/dnasc/smrtlink-container/data/L9j.pacb/jobs/41",
        "entryPoints": [{"jobId": 41, "datasetUUID": parent().to_string(), "datasetType": "PacBio.DataSet.ConsensusReadSet"}],
        "datastore": [{
            "uuid": "5a9d7f0e-8a57-4a3c-b0d1-5ad0b1f0c001", "fileTypeId": "PacBio.FileTypes.JsonReport",
            "path": "/home/dnasc/smrtlink-container/data/L9j.pacb/statistics/m84100_240301_194028_s1.summary.json",
            "isActive": true, "jobId": 41
        }]
    }]);
    std::fs::write(seed.path().join("analysis_jobs.json"), jobs.to_string()).unwrap();
    let standin =
        smrtshare_smrtlink_standin::StandIn::start(smrtshare_smrtlink_standin::StandInOptions {
            seed: Some(
                smrtshare_smrtlink_standin::Seed::new(seed.path())
                    .rewrite(crate::support::FIXTURE_PREFIX, "/data/run/"),
            ),
            users: vec![(USER.into(), smrtshare_common::Secret::new(PASSWORD))],
            ..Default::default()
        })
        .await
        .unwrap();
    let client = SmrtLinkClient::new(standin.client_config(USER, PASSWORD)).unwrap();
    let job = client.get_analysis_job(41).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Successful);
    assert_eq!(job.path.as_deref(), Some("/data/run/jobs/41"));
    let files = client.analysis_job_datastore(41).await.unwrap();
    assert_eq!(
        files[0].path,
        "/data/run/statistics/m84100_240301_194028_s1.summary.json"
    );
    assert_eq!(
        client.analysis_job_entry_points(41).await.unwrap()[0].dataset_uuid,
        parent()
    );
    // Ids of new jobs continue after the seeded ones.
    let next = client
        .create_analysis_job(&smrtshare_smrtlink::model::AnalysisJobRequest {
            name: "Next".into(),
            pipeline_id: "cromwell.workflows.pb_align_ccs".into(),
            project_id: Some(2),
            entry_points: Vec::new(),
            task_options: Vec::new(),
            workflow_options: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(next.id, 42);
    let tomato = client.get_project(2).await.unwrap().unwrap();
    assert_eq!(
        tomato.datasets[0].path,
        "/data/run/pb_formats/m84100_240301_194028_s1.hifi_reads.consensusreadset.xml"
    );
}
