//! The real Revio run in `shared/fixtures/smrtlink/tomatoes`: the XML walk, the names, and the
//! staged tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use smrtshare_api::staging::v1 as pb;
use smrtshare_staging::budget::ParseBudget;
use smrtshare_staging::model::DatasetSpec;
use smrtshare_staging::names::{Namer, Templates};
use smrtshare_staging::resolve::{Resolver, SourceRoots, Want};
use smrtshare_staging::sourcecache::SourceCache;
use smrtshare_staging::xml::Limits;
use smrtshare_testkit::{copy_tree, smrtlink_fixtures};

use crate::harness::*;

const SMRTLINK_PREFIX: &str = "/home/dnasc/smrtlink-container/data/L9j.pacb/";
const PARENT: &str = "48a71a3e-c97c-43ea-ba41-8c2b31dd32b2";
const CHILD_20: &str = "e950eeb9-b402-4776-84e1-9a9905aa781b";
const CHILD_21: &str = "7626fccc-b141-49f9-8d30-39302efe8d6a";
const MOVIE: &str = "m84100_240301_194028_s1";

/// Copies the run under `src/L9j.pacb` and returns the dataset records with paths rewritten.
fn tomatoes(src: &Path) -> Option<serde_json::Value> {
    let fixtures = smrtlink_fixtures(Path::new(env!("CARGO_MANIFEST_DIR")))?;
    copy_tree(&fixtures.join("tomatoes"), &src.join("L9j.pacb")).expect("copy fixtures");
    let text = std::fs::read_to_string(fixtures.join("datasets.json")).expect("datasets.json");
    let text = text.replace(SMRTLINK_PREFIX, &format!("{}/L9j.pacb/", src.display()));
    Some(serde_json::from_str(&text).expect("datasets.json parses"))
}

fn spec(record: &serde_json::Value) -> DatasetSpec {
    DatasetSpec {
        uuid: record["uuid"].as_str().unwrap().parse().unwrap(),
        name: record["name"].as_str().unwrap().into(),
        xml_path: PathBuf::from(record["path"].as_str().unwrap()),
        parent: record
            .get("parentUuid")
            .and_then(|p| p.as_str())
            .map(|p| p.parse().unwrap()),
        num_children: record["numChildren"].as_u64().unwrap() as u32,
    }
}

fn wire(record: &serde_json::Value) -> pb::Dataset {
    let s = spec(record);
    pb::Dataset {
        uuid: s.uuid.to_string(),
        name: s.name,
        xml_path: s.xml_path.to_string_lossy().into_owned(),
        parent_uuid: s.parent.map(|p| p.to_string()).unwrap_or_default(),
        num_children: s.num_children,
    }
}

fn expected_parent_entries() -> BTreeSet<String> {
    let m = MOVIE;
    let supplemental = [
        format!("{m}.barcodes.fasta"),
        format!("{m}.hifi_reads.lima_counts.txt"),
        format!("{m}.hifi_reads.lima_report.txt"),
        format!("{m}.hifi_reads.lima_summary.txt"),
        format!("{m}.hifi_reads.lima.log"),
        format!("{m}.zmw_metrics.json.gz"),
        format!("{m}.ccs_report.json"),
        format!("{m}.ccs.log"),
        format!("{m}.ccs_report.txt"),
        format!("{m}.zmw_metrics.csv.gz"),
        format!("{m}.sts.xml"),
        format!("{m}.hifi_reads.5mc_report.json"),
        format!("{m}.hifi_reads.jasmine.log"),
        format!("{m}.sequencing_control.subreads.bam"),
        format!("{m}.sequencing_control.subreads.bam.pbi"),
        format!("{m}.hifi_reads.unassigned.bam"),
        format!("{m}.hifi_reads.unassigned.bam.pbi"),
        format!("{m}.reports.zip"),
    ];
    let mut out: BTreeSet<String> = supplemental
        .iter()
        .map(|f| format!("Supplemental Run Data/{f}"))
        .collect();
    out.insert("Supplemental Run Data".into());
    for (dir, bc) in [
        ("Tomato 20 (bc1047--bc1047)", "bc1047"),
        ("Tomato 21 (bc1048--bc1048)", "bc1048"),
    ] {
        out.insert(dir.into());
        out.insert(format!("{dir}/{m}.hifi_reads.{bc}.bam"));
        out.insert(format!("{dir}/{m}.hifi_reads.{bc}.bam.pbi"));
    }
    out
}

#[test]
fn the_tomato_run_resolves_into_barcoded_children_and_supplemental_run_data() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let Some(records) = tomatoes(dir.path()) else {
        return;
    };
    let roots = SourceRoots::open(&[dir.path().to_path_buf()]).unwrap();
    let namer = Namer::new(Templates::default()).unwrap();
    let cache = SourceCache::default();
    let budget = ParseBudget::default();
    let mut resolver = Resolver::new(&roots, Limits::default(), &namer, &cache, &budget);

    let parent = resolver
        .parent(&spec(&records[PARENT]))
        .expect("the parent resolves");
    assert_eq!(
        parent.name,
        format!("Movie {MOVIE} - Germany tomato 20 and 21 (2 barcoded samples)")
    );
    assert_eq!(
        parent.entries.keys().cloned().collect::<BTreeSet<_>>(),
        expected_parent_entries()
    );
    let children: Vec<(String, String, u32)> = parent
        .children
        .iter()
        .map(|c| (c.uuid.unwrap().to_string(), c.dir.clone(), c.files))
        .collect();
    assert_eq!(
        children,
        vec![
            (CHILD_20.into(), "Tomato 20 (bc1047--bc1047)".into(), 2),
            (CHILD_21.into(), "Tomato 21 (bc1048--bc1048)".into(), 2)
        ]
    );
    let canonical = std::fs::canonicalize(dir.path()).unwrap().join("L9j.pacb");
    for (path, want) in parent.entries.iter() {
        if let Want::File(source) = want {
            let folder = if path.contains("bc104") || path.contains("unassigned.bam") {
                "hifi_reads"
            } else {
                ""
            };
            let expected = if folder.is_empty() {
                ["metadata", "statistics"]
                    .iter()
                    .map(|d| canonical.join(d).join(source.name()))
                    .find(|p| p.exists())
                    .unwrap()
            } else {
                canonical.join(folder).join(source.name())
            };
            assert_eq!(Path::new(&source.path), expected, "{path}");
        }
    }

    // A child whose parent is not in the project is an ordinary dataset named after its sample.
    let orphan = resolver
        .plain(&spec(&records[CHILD_20]), true)
        .expect("the child resolves");
    assert_eq!(orphan.name, format!("Movie {MOVIE} - Tomato 20"));
    assert_eq!(
        orphan.entries.keys().cloned().collect::<Vec<_>>(),
        vec![
            format!("{MOVIE}.hifi_reads.bc1047.bam"),
            format!("{MOVIE}.hifi_reads.bc1047.bam.pbi")
        ]
    );
    let plain = resolver.plain(&spec(&records[CHILD_21]), false).unwrap();
    assert_eq!(
        plain.name,
        format!("Movie {MOVIE} - Germany tomato 20 and 21-Cell1 (Tomato 21)")
    );

    // Windows-safe names keep these (nothing to replace) and templates are honoured.
    let custom = Namer::new(Templates {
        child: "{barcode} - {sample}".into(),
        windows_safe: true,
        ..Templates::default()
    })
    .unwrap();
    let cache = SourceCache::default();
    let budget = ParseBudget::default();
    let mut resolver = Resolver::new(&roots, Limits::default(), &custom, &cache, &budget);
    let parent = resolver.parent(&spec(&records[PARENT])).unwrap();
    assert!(
        parent.entries.contains_key("bc1047--bc1047 - Tomato 20"),
        "{:?}",
        parent.entries.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tomato_project_is_staged_as_hard_links() {
    let mut env = Env::new().await;
    let Some(records) = tomatoes(&env.src) else {
        return;
    };
    let datasets = vec![
        wire(&records[PARENT]),
        wire(&records[CHILD_20]),
        wire(&records[CHILD_21]),
    ];
    let answer = env.apply(request(2, "Project 2: Tomato", datasets)).await;
    assert!(answer.complete, "{answer:#?}");
    let parent_dir =
        format!("Project 2: Tomato/Movie {MOVIE} - Germany tomato 20 and 21 (2 barcoded samples)");
    let results: Vec<(pb::DatasetState, String, u32)> = answer
        .datasets
        .iter()
        .map(|d| (state(d), d.path.clone(), d.file_count))
        .collect();
    assert_eq!(
        results,
        vec![
            (pb::DatasetState::Staged, parent_dir.clone(), 22),
            (
                pb::DatasetState::InParent,
                format!("{parent_dir}/Tomato 20 (bc1047--bc1047)"),
                2
            ),
            (
                pb::DatasetState::InParent,
                format!("{parent_dir}/Tomato 21 (bc1048--bc1048)"),
                2
            ),
        ]
    );
    let on_disk: BTreeSet<String> = snapshot(&env.root).into_keys().collect();
    let mut expected: BTreeSet<String> = expected_parent_entries()
        .into_iter()
        .map(|e| format!("{parent_dir}/{e}"))
        .collect();
    expected.insert("Project 2: Tomato".into());
    expected.insert(parent_dir.clone());
    assert_eq!(on_disk, expected);
    let run = env.src.join("L9j.pacb");
    assert_linked(
        &env.root
            .join(&parent_dir)
            .join("Tomato 20 (bc1047--bc1047)")
            .join(format!("{MOVIE}.hifi_reads.bc1047.bam")),
        &run.join("hifi_reads")
            .join(format!("{MOVIE}.hifi_reads.bc1047.bam")),
    );
    assert_linked(
        &env.root
            .join(&parent_dir)
            .join("Supplemental Run Data")
            .join(format!("{MOVIE}.hifi_reads.unassigned.bam")),
        &run.join("hifi_reads")
            .join(format!("{MOVIE}.hifi_reads.unassigned.bam")),
    );
    let listed = env.list().await;
    assert_eq!(listed[0].dataset_uuids, vec![PARENT.to_owned()]);
    assert_eq!(listed[0].file_count, 22);
}
