//! Hand-made hostile dataset XML: each fails on its own with a message naming the file, the rest
//! of the project is staged, and nothing outside the root is touched.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use smrtshare_api::staging::v1 as pb;

use crate::harness::*;

struct Case {
    uuid: String,
    xml: PathBuf,
    expect: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dataset_xml_fails_alone_with_a_precise_reason() {
    let mut env = Env::with(|c| c.limits.max_bytes = 64 * 1024).await;
    let run = env.src.join("run");
    let pb_dir = run.join("pb_formats");
    let data = run.join("data");
    std::fs::create_dir_all(&pb_dir).unwrap();
    std::fs::create_dir_all(data.join("a")).unwrap();
    std::fs::create_dir_all(data.join("b")).unwrap();
    for f in ["good.bam", "a/same.bam", "b/same.bam", "target.bam"] {
        std::fs::write(data.join(f), f).unwrap();
    }
    std::os::unix::fs::symlink(data.join("target.bam"), data.join("link.bam")).unwrap();
    let outside = smrtshare_testkit::tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.bam"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), data.join("escape")).unwrap();

    let mut cases: Vec<Case> = Vec::new();
    let mut n = 0;
    let mut case = |body: String, file_name: Option<&str>, expect: &[&str]| {
        n += 1;
        let uuid = format!("00000000-0000-4000-8000-{n:012}");
        let xml = pb_dir.join(
            file_name
                .map(str::to_owned)
                .unwrap_or_else(|| format!("case{n}.consensusreadset.xml")),
        );
        if !body.is_empty() {
            std::fs::write(&xml, body.replace("UUID", &uuid)).unwrap();
        }
        let mut expect: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
        expect.push(xml.display().to_string());
        cases.push(Case { uuid, xml, expect });
    };
    let secret = outside.path().join("secret.bam");
    case(
        dataset_xml("UUID", &["../data/missing.bam"]),
        None,
        &[
            "missing.bam: file not found",
            "ResourceId \"../data/missing.bam\"",
        ],
    );
    case(
        dataset_xml("UUID", &["../../../../../../../../etc/hostname"]),
        None,
        &["\"../../../../../../../../etc/hostname\": /etc is outside the source roots"],
    );
    case(
        dataset_xml("UUID", &[&secret.display().to_string()]),
        None,
        &["is outside the source roots"],
    );
    case(
        dataset_xml("UUID", &["../data/escape/secret.bam"]),
        None,
        &["is outside the source roots"],
    );
    case(
        dataset_xml("UUID", &["../data/link.bam"]),
        None,
        &["link.bam: is a symbolic link; only regular files are staged"],
    );
    case(
        dataset_xml("UUID", &["../data/a/same.bam", "../data/b/same.bam"]),
        None,
        &["two different files would be named \"same.bam\""],
    );
    case(
        dataset_xml("UUID", &["../data/a"]),
        None,
        &["is a directory, not a regular file"],
    );
    case(
        "<pbds:ConsensusReadSet><ExternalResources>".into(),
        None,
        &["malformed XML"],
    );
    case(
        r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><DataSet>&e;</DataSet>"#.into(),
        None,
        &["malformed XML"],
    );
    case(
        "<html><body/></html>".into(),
        None,
        &["is not a PacBio dataset"],
    );
    let mut deep = String::from("<DataSet><ExternalResources>");
    for _ in 0..40 {
        deep.push_str(r#"<ExternalResource ResourceId="../data/good.bam"><ExternalResources>"#);
    }
    for _ in 0..40 {
        deep.push_str("</ExternalResources></ExternalResource>");
    }
    deep.push_str("</ExternalResources></DataSet>");
    case(deep, None, &["nested more than 8 deep"]);
    let huge = dataset_xml("UUID", &["../data/good.bam"]).replace(
        "<pbds:DataSetMetadata>",
        &format!("<!-- {} --><pbds:DataSetMetadata>", "x".repeat(100_000)),
    );
    case(huge, None, &["more than the limit of 65536 bytes"]);
    case(String::new(), Some("does-not-exist.xml"), &["not found"]);
    // Outside the source roots, in a directory that does not exist: the same words as one that does.
    case(
        dataset_xml("UUID", &["/nonexistent-smrtshare-dir/x.bam"]),
        None,
        &["/nonexistent-smrtshare-dir is outside the source roots ("],
    );
    // Inside the staging root: never staged.
    let lock = env.root.join(".smrtshare/staging.lock");
    case(
        dataset_xml("UUID", &[&lock.display().to_string()]),
        None,
        &["/root/.smrtshare is outside the source roots"],
    );
    // Every bad resource is named, not only the first.
    case(
        dataset_xml(
            "UUID",
            &[
                "../data/missing1.bam",
                "/nonexistent-smrtshare-dir/a.bam",
                "../data/good.bam",
                "../data/missing2.bam",
            ],
        ),
        None,
        &[
            "3 problems: ",
            "missing1.bam: file not found",
            "/nonexistent-smrtshare-dir is outside the source roots",
            "missing2.bam: file not found",
        ],
    );
    let many: Vec<String> = (0..15).map(|i| format!("../data/gone{i}.bam")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    case(
        dataset_xml("UUID", &many),
        None,
        &["15 problems: ", "gone9.bam: file not found; and 5 more"],
    );
    // The XML of another dataset than the request names.
    case(
        dataset_xml(
            "99999999-0000-4000-8000-000000000009",
            &["../data/good.bam"],
        ),
        None,
        &["its UniqueId is 99999999-0000-4000-8000-000000000009, not the requested dataset"],
    );
    case(
        dataset_xml("not a uuid", &["../data/good.bam"]),
        None,
        &["its UniqueId \"not a uuid\" is not a UUID"],
    );
    case(
        dataset_xml("UUID", &["file://elsewhere.example.edu/data/good.bam"]),
        None,
        &["not a local file URL"],
    );
    // A symlinked XML (pointing at a good one) is refused.
    let good_xml = pb_dir.join("good.consensusreadset.xml");
    // A file:// id, percent-encoded as pbcore writes it (a space, a '%' and a non-ASCII letter).
    std::fs::create_dir_all(data.join("run 1 %é")).unwrap();
    std::fs::write(data.join("run 1 %é/encoded.bam"), "e").unwrap();
    let encoded = format!("file://{}/run%201%20%25%C3%A9/encoded.bam", data.display());
    std::fs::write(
        &good_xml,
        dataset_xml(
            "11111111-0000-4000-8000-000000000001",
            &[
                "../data/good.bam",
                &data.join("target.bam").display().to_string(),
                &encoded,
            ],
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(&good_xml, pb_dir.join("symlinked.xml")).unwrap();
    case(
        String::new(),
        Some("symlinked.xml"),
        &["is a symbolic link"],
    );

    let mut datasets: Vec<pb::Dataset> = cases
        .iter()
        .map(|c| pb::Dataset {
            uuid: c.uuid.clone(),
            name: "hostile".into(),
            xml_path: c.xml.display().to_string(),
            parent_uuid: String::new(),
            num_children: 0,
        })
        .collect();
    // An XML outside the source roots.
    std::fs::write(
        outside.path().join("outside.xml"),
        dataset_xml("x", &["secret.bam"]),
    )
    .unwrap();
    datasets.push(pb::Dataset {
        uuid: "22222222-0000-4000-8000-000000000002".into(),
        name: "outside".into(),
        xml_path: outside.path().join("outside.xml").display().to_string(),
        parent_uuid: String::new(),
        num_children: 0,
    });
    datasets.push(pb::Dataset {
        uuid: "11111111-0000-4000-8000-000000000001".into(),
        name: "Good".into(),
        xml_path: good_xml.display().to_string(),
        parent_uuid: String::new(),
        num_children: 0,
    });

    let answer = env.apply(request(2, "Hostile", datasets)).await;
    assert!(!answer.complete);
    for (case, result) in cases.iter().zip(&answer.datasets) {
        assert_eq!(
            state(result),
            pb::DatasetState::Failed,
            "{}",
            case.xml.display()
        );
        for part in &case.expect {
            assert!(
                result.error.contains(part.as_str()),
                "{:?} lacks {part:?}",
                result.error
            );
        }
        assert!(
            result.permanent,
            "a broken or refused XML stays so: {}",
            result.error
        );
    }
    let outside_result = &answer.datasets[cases.len()];
    assert_eq!(state(outside_result), pb::DatasetState::Failed);
    assert!(outside_result.permanent);
    assert!(
        outside_result.error.contains("outside the source roots"),
        "{}",
        outside_result.error
    );
    let good = answer.datasets.last().unwrap();
    assert_eq!(state(good), pb::DatasetState::Staged, "{}", good.error);
    assert_eq!(
        good.file_count, 3,
        "relative, absolute and file:// ids inside the roots are all staged"
    );

    // Only the good dataset is in the project; the outside files are untouched.
    let entries: Vec<String> = std::fs::read_dir(env.root.join("Hostile"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        vec!["Movie m_11111111-0000-4000-8000-000000000001 - Good".to_owned()]
    );
    assert_linked(
        &env.root
            .join("Hostile")
            .join(&entries[0])
            .join("target.bam"),
        &data.join("target.bam"),
    );
    assert_linked(
        &env.root
            .join("Hostile")
            .join(&entries[0])
            .join("encoded.bam"),
        &data.join("run 1 %é/encoded.bam"),
    );
    assert_eq!(
        std::fs::metadata(&lock).unwrap().nlink(),
        1,
        "nothing inside the staging root is staged"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    assert_eq!(
        std::fs::metadata(&secret)
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            .unwrap(),
        1
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 2);
    assert_eq!(
        std::fs::read_dir(env.root.join(".smrtshare/work"))
            .unwrap()
            .count(),
        0
    );
    assert!(Path::new(&env.root).join("Hostile").is_dir());
}
