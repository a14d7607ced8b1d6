//! Names on disk: control characters never reach it, datasets named alike get distinct
//! directories whatever their UUIDs share, and supplemental resources are files of the dataset.

use std::path::PathBuf;

use smrtshare_api::staging::v1 as pb;

use crate::harness::*;

/// A dataset of movie `movie` named `name` in `run`, with one data file and `supplemental`
/// report files; returns it for a request, and its data file.
fn written(
    env: &Env,
    run: &str,
    uuid: &str,
    name: &str,
    movie: &str,
    supplemental: &[&str],
) -> (pb::Dataset, PathBuf) {
    let dir = env.src.join(run);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let bam = dir.join("data").join(format!("{movie}.bam"));
    std::fs::write(&bam, uuid).unwrap();
    for file in supplemental {
        std::fs::write(dir.join("data").join(file), "{}").unwrap();
    }
    let ids: Vec<String> = supplemental.iter().map(|f| format!("data/{f}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let xml = dir.join(format!("{uuid}.consensusreadset.xml"));
    std::fs::write(
        &xml,
        dataset_xml_with(uuid, movie, &[&format!("data/{movie}.bam")], &ids),
    )
    .unwrap();
    let dataset = pb::Dataset {
        uuid: uuid.into(),
        name: name.into(),
        xml_path: xml.display().to_string(),
        parent_uuid: String::new(),
        num_children: 0,
    };
    (dataset, bam)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_on_disk_hold_no_control_characters_and_never_collide() {
    let mut env = Env::new().await;
    let (hostile, _) = written(
        &env,
        "r0",
        "00000000-0000-4000-8000-000000000001",
        "Rice\nCell\t1\u{1b}",
        "m0",
        &[],
    );
    // Same name, same movie, UUIDs sharing their first 8 hex digits (and more).
    let (first, first_bam) = written(
        &env,
        "r1",
        "aaaaaaaa-0000-4000-8000-000000000001",
        "Same",
        "m1",
        &[],
    );
    let (second, second_bam) = written(
        &env,
        "r2",
        "aaaaaaaa-0000-4000-8000-000000000002",
        "Same",
        "m1",
        &[],
    );
    let (third, third_bam) = written(
        &env,
        "r3",
        "aaaaaaaa-1111-4000-8000-000000000003",
        "Same",
        "m1",
        &[],
    );
    let answer = env
        .apply(request(2, "Project 2", vec![hostile, first, second, third]))
        .await;
    assert!(answer.complete, "{answer:#?}");
    let paths: Vec<&str> = answer.datasets.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "Project 2/Movie m0 - Rice_Cell_1_",
            "Project 2/Movie m1 - Same [aaaaaaaa-0000-4000-8000-000000000001]",
            "Project 2/Movie m1 - Same [aaaaaaaa-0000-4000-8000-000000000002]",
            "Project 2/Movie m1 - Same [aaaaaaaa-1]",
        ]
    );
    for (path, bam) in paths[1..].iter().zip([&first_bam, &second_bam, &third_bam]) {
        assert_linked(&env.root.join(path).join("m1.bam"), bam);
    }
    let on_disk: Vec<String> = snapshot(&env.root).into_keys().collect();
    assert!(
        on_disk.iter().all(|p| !p.chars().any(char::is_control)),
        "{on_disk:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_resources_of_a_plain_dataset_are_staged_with_its_files() {
    let mut env = Env::new().await;
    let uuid = "12345678-0000-4000-8000-000000000001";
    let (dataset, bam) = written(
        &env,
        "r1",
        uuid,
        "Rice",
        "m1",
        &["ccs.report.json", "summary.json"],
    );
    let answer = env.apply(request(2, "Project 2", vec![dataset])).await;
    assert!(answer.complete, "{answer:#?}");
    assert_eq!(answer.datasets[0].file_count, 3);
    let dir = env.root.join("Project 2/Movie m1 - Rice");
    assert_linked(&dir.join("m1.bam"), &bam);
    for file in ["ccs.report.json", "summary.json"] {
        assert_linked(&dir.join(file), &env.src.join("r1/data").join(file));
    }
    assert!(env.get(2, true).await.drift.is_empty());
}
