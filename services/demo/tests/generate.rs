//! The generated XML parses, names only files that exist, and carries the naming metadata.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn resource_ids(xml: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(xml).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.tag_name().name() == "ExternalResource" || n.tag_name().name() == "FileIndex")
        .filter_map(|n| n.attribute("ResourceId").map(str::to_owned))
        .collect()
}

#[test]
fn demo_tree_is_complete_and_consistent() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let demo = smrtshare_demo::generate_demo(dir.path()).unwrap();
    let projects: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo.smrtlink_dir.join("projects.json")).unwrap(),
    )
    .unwrap();
    let datasets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo.smrtlink_dir.join("datasets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(projects.as_array().unwrap().len(), 4);
    for project in projects.as_array().unwrap() {
        for ds in project["datasets"].as_array().unwrap() {
            let uuid = ds["uuid"].as_str().unwrap();
            assert!(
                datasets.get(uuid).is_some(),
                "{uuid} missing from datasets.json"
            );
            let xml = Path::new(ds["path"].as_str().unwrap());
            assert!(xml.is_absolute() && xml.is_file(), "{}", xml.display());
            for id in resource_ids(xml) {
                let resolved = xml.parent().unwrap().join(&id);
                assert!(
                    resolved.is_file(),
                    "{} names missing {}",
                    xml.display(),
                    resolved.display()
                );
            }
        }
    }
    let tomato = &demo.projects[1];
    assert_eq!(tomato.datasets[0].num_children, 2);
    let text = std::fs::read_to_string(&tomato.datasets[0].xml_path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let context = doc
        .descendants()
        .find(|n| n.tag_name().name() == "CollectionMetadata")
        .unwrap();
    assert_eq!(
        context.attribute("Context"),
        Some("m84100_240301_194028_s1")
    );
    assert!(
        doc.descendants()
            .any(|n| n.tag_name().name() == "SupplementalResources")
    );
}

#[test]
fn synthetic_tree_has_the_requested_shape() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let specs = smrtshare_demo::generate_synthetic(dir.path(), 3, 2, 25, 16).unwrap();
    assert_eq!(specs.len(), 3);
    for p in &specs {
        assert_eq!(p.datasets.len(), 2);
        for d in &p.datasets {
            assert_eq!(d.files.len(), 25);
            assert_eq!(resource_ids(&d.xml_path).len(), 25);
            assert!(d.files.iter().all(|f| f.is_file()));
        }
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn demo_analysis_jobs_have_real_outputs_under_the_data_root() {
    use smrtshare_demo::jobs::file_types;

    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let now: chrono::DateTime<chrono::Utc> = "2025-06-02T10:00:00Z".parse().unwrap();
    let demo = smrtshare_demo::generate_demo_with(
        dir.path(),
        &smrtshare_demo::DemoOptions {
            now,
            analysis_jobs: true,
        },
    )
    .unwrap();
    assert!(demo.jobs_root.starts_with(&demo.data_root));
    let jobs = read_json(&demo.smrtlink_dir.join("analysis_jobs.json"));
    let datasets = read_json(&demo.smrtlink_dir.join("datasets.json"));
    let projects = read_json(&demo.smrtlink_dir.join("projects.json"));
    let jobs = jobs.as_array().unwrap();
    let summary: Vec<(i64, i64, &str)> = jobs
        .iter()
        .map(|j| {
            (
                j["id"].as_i64().unwrap(),
                j["projectId"].as_i64().unwrap(),
                j["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(41, 2, "SUCCESSFUL"), (42, 3, "CREATED"), (43, 4, "FAILED")]
    );

    for job in jobs {
        let id = job["id"].as_i64().unwrap();
        let project = job["projectId"].as_i64().unwrap();
        assert!(
            projects
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == project),
            "job {id}: project {project} is in projects.json"
        );
        // SMRT Link's jobs_root layout.
        let path = Path::new(job["path"].as_str().unwrap());
        assert_eq!(
            path,
            demo.jobs_root.join(format!("0000/0000000/{id:010}")),
            "job {id}"
        );
        assert!(path.is_dir());
        for ep in job["entryPoints"].as_array().unwrap() {
            assert_eq!(ep["jobId"], id);
            let uuid = ep["datasetUUID"].as_str().unwrap();
            assert!(datasets.get(uuid).is_some(), "job {id}: input {uuid}");
        }
        for file in job["datastore"].as_array().unwrap() {
            let path = Path::new(file["path"].as_str().unwrap());
            assert!(
                path.is_absolute() && path.starts_with(&demo.data_root),
                "{} is under the source root",
                path.display()
            );
            assert!(path.is_file(), "{} exists", path.display());
            assert_eq!(
                file["fileSize"].as_u64().unwrap(),
                std::fs::metadata(path).unwrap().len()
            );
            assert_eq!(
                (&file["jobId"], &file["jobUUID"]),
                (&job["id"], &job["uuid"])
            );
            for key in [
                "uuid",
                "fileTypeId",
                "sourceId",
                "createdAt",
                "modifiedAt",
                "importedAt",
                "isChunked",
                "isActive",
                "name",
                "description",
            ] {
                assert!(
                    file.get(key).is_some(),
                    "job {id}: datastore file lacks {key}"
                );
            }
        }
    }

    // Job 41: a finished mapping with a BAM and its index, the dataset XML naming them, a
    // report and the job log.
    let types = |job: &serde_json::Value| -> Vec<String> {
        let mut t: Vec<String> = job["datastore"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fileTypeId"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    let mut expected = vec![
        file_types::CONSENSUS_ALIGNMENT_SET,
        file_types::BAM,
        file_types::BAM_BAI,
        file_types::JSON_REPORT,
        file_types::LOG,
    ];
    expected.sort_unstable();
    assert_eq!(types(&jobs[0]), expected);
    assert_eq!(types(&jobs[1]), expected);
    assert_eq!(types(&jobs[2]), [file_types::LOG]);
    let file_of = |job: &serde_json::Value, file_type: &str| -> std::path::PathBuf {
        job["datastore"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["fileTypeId"] == file_type)
            .map(|f| f["path"].as_str().unwrap().into())
            .unwrap()
    };
    let xml = file_of(&jobs[0], file_types::CONSENSUS_ALIGNMENT_SET);
    let named: Vec<std::path::PathBuf> = resource_ids(&xml)
        .iter()
        .map(|id| xml.parent().unwrap().join(id))
        .collect();
    assert_eq!(
        named,
        [
            file_of(&jobs[0], file_types::BAM),
            file_of(&jobs[0], file_types::BAM_BAI)
        ]
    );
    let report = read_json(&file_of(&jobs[0], file_types::JSON_REPORT));
    assert_eq!(report["id"], "mapping_stats");
    assert_eq!(jobs[0]["jobCompletedAt"], "2025-06-01T10:00:00.000Z");
    assert!(jobs[0].get("standinSchedule").is_none());

    // Job 42: created now, running after 10 s, successful after 90 s (absolute steps).
    assert_eq!(jobs[1]["createdAt"], "2025-06-02T10:00:00.000Z");
    assert_eq!(
        jobs[1]["standinSchedule"],
        serde_json::json!([
            {"at": "2025-06-02T10:00:10.000Z", "state": "RUNNING"},
            {"at": "2025-06-02T10:01:30.000Z", "state": "SUCCESSFUL"}
        ])
    );
    assert!(jobs[1].get("jobCompletedAt").is_none());

    // Job 43: failed, with why.
    // Without them: no jobs file, no jobs_root, the same projects.
    let bare = smrtshare_testkit::tempfile::tempdir().unwrap();
    let demo = smrtshare_demo::generate_demo_with(
        bare.path(),
        &smrtshare_demo::DemoOptions {
            now,
            analysis_jobs: false,
        },
    )
    .unwrap();
    assert!(demo.jobs.is_empty() && !demo.jobs_root.exists());
    assert!(!demo.smrtlink_dir.join("analysis_jobs.json").exists());
    assert_eq!(demo.projects.len(), 4);

    assert!(
        jobs[2]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("out of memory")
    );
    assert_eq!(
        jobs[2]["subJobTypeId"],
        "cromwell.workflows.pb_variant_calling"
    );
}
