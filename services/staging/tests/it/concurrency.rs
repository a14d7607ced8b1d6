//! Fifty applies and removes at once over projects that share source files: every call succeeds
//! and the tree ends exactly as the last operation of each project says.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use futures::future::join_all;
use smrtshare_api::staging::v1 as pb;
use smrtshare_demo::DatasetRecord;

use crate::harness::*;

/// A copy of `record`'s XML with another UUID (same data files), as a dataset of its own.
fn alias(record: &DatasetRecord, tag: &str, n: usize) -> (pb::Dataset, Vec<PathBuf>) {
    let uuid = format!("{:08x}-0000-4000-8000-{n:012}", 0xc0c0_0000u32 + n as u32);
    let xml = std::fs::read_to_string(&record.xml_path)
        .unwrap()
        .replace(&record.uuid, &uuid);
    let path = record
        .xml_path
        .with_file_name(format!("{tag}-{n}.consensusreadset.xml"));
    std::fs::write(&path, xml).unwrap();
    let dataset = pb::Dataset {
        uuid,
        name: format!("{tag} {n}"),
        xml_path: path.display().to_string(),
        parent_uuid: String::new(),
        num_children: 0,
    };
    (dataset, record.files.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_applies_and_removes_end_in_the_expected_tree() {
    let env = Env::new().await;
    let pool: Vec<DatasetRecord> = (0..4)
        .map(|i| env.plain(&format!("r{i}/1_A01"), &format!("Pool{i}"), 5))
        .collect();
    let projects: Vec<i64> = (2..12).collect();
    // Per project: desired state A (two datasets), then B (renamed directory, one of A's datasets
    // renamed, one new). Datasets of different projects share the same source files.
    let mut plans = Vec::new();
    let mut n = 0;
    for &p in &projects {
        let mut next = |tag: &str, k: usize| {
            n += 1;
            alias(&pool[(p as usize + k) % pool.len()], tag, n)
        };
        let (a1, _) = next("first", 0);
        let (a2, _) = next("second", 1);
        let (b_new, b_files) = next("third", 2);
        let mut a1_renamed = a1.clone();
        a1_renamed.name = format!("renamed {p}");
        let a1_files = pool[p as usize % pool.len()].files.clone();
        let a = request(p, &format!("Project {p} A"), vec![a1.clone(), a2]);
        let b = request(
            p,
            &format!("Project {p} B"),
            vec![a1_renamed.clone(), b_new.clone()],
        );
        plans.push((p, a, b, vec![(a1_renamed, a1_files), (b_new, b_files)]));
    }
    let calls = plans.iter().map(|(p, a, b, _)| {
        let mut client = env.client.clone();
        let (p, a, b) = (*p, a.clone(), b.clone());
        async move {
            let mut outcomes = Vec::new();
            // Two identical applies at once, then B twice at once, then (even projects) a removal,
            // with a dry run of B racing it.
            let mut other = client.clone();
            let (x, y) = tokio::join!(client.apply_project(a.clone()), other.apply_project(a));
            outcomes.push(x.map(|r| r.into_inner().complete));
            outcomes.push(y.map(|r| r.into_inner().complete));
            let (x, y) = tokio::join!(
                client.apply_project(b.clone()),
                other.apply_project(b.clone())
            );
            outcomes.push(x.map(|r| r.into_inner().complete));
            outcomes.push(y.map(|r| r.into_inner().complete));
            if p % 2 == 0 {
                let mut dry = b.clone();
                dry.dry_run = true;
                let (x, y) = tokio::join!(
                    client.remove_project(pb::RemoveProjectRequest {
                        project_id: p,
                        dry_run: false
                    }),
                    other.apply_project(dry)
                );
                outcomes.push(x.map(|r| r.into_inner().removed));
                outcomes.push(y.map(|r| r.into_inner().complete));
            } else {
                outcomes.push(
                    client
                        .apply_project(b)
                        .await
                        .map(|r| r.into_inner().actions.is_empty()),
                );
            }
            (p, outcomes)
        }
    });
    let results = join_all(calls).await;
    let total: usize = results.iter().map(|(_, o)| o.len()).sum();
    assert_eq!(total, 55);
    for (p, outcomes) in results {
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(true) => {}
                Ok(false) => panic!("project {p} call {i}: incomplete or not idle"),
                Err(status) => panic!("project {p} call {i}: {status}"),
            }
        }
    }

    // The expected tree: odd projects as B, even projects gone.
    let mut expected = BTreeSet::new();
    let mut env = env;
    for (p, _, _, datasets) in &plans {
        if p % 2 == 0 {
            continue;
        }
        let dir = format!("Project {p} B");
        expected.insert(dir.clone());
        for (dataset, files) in datasets {
            let movie = std::fs::read_to_string(&dataset.xml_path).unwrap();
            let movie = movie
                .split("Context=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            let ds_dir = format!("{dir}/Movie {movie} - {}", dataset.name);
            expected.insert(ds_dir.clone());
            for file in files {
                let staged = format!("{ds_dir}/{}", file.file_name().unwrap().to_string_lossy());
                assert_linked(&env.root.join(&staged), file);
                expected.insert(staged);
            }
        }
        assert!(env.get(*p, true).await.drift.is_empty());
    }
    let found: BTreeSet<String> = snapshot(&env.root).into_keys().collect();
    assert_eq!(found, expected);
    let listed: Vec<i64> = env.list().await.iter().map(|l| l.project_id).collect();
    assert_eq!(
        listed,
        projects
            .iter()
            .copied()
            .filter(|p| p % 2 == 1)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::read_dir(env.root.join(".smrtshare/work"))
            .unwrap()
            .count(),
        0,
        "nothing stranded in the work area"
    );
    // Each pool file is linked once per staged dataset that uses it, and nowhere else.
    let linked: u64 = pool
        .iter()
        .flat_map(|d| d.files.iter())
        .map(|f| std::fs::metadata(f).unwrap().nlink() - 1)
        .sum();
    assert_eq!(
        linked as usize,
        found.iter().filter(|p| p.matches('/').count() == 2).count()
    );
}
