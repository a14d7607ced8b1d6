//! The tree as the only truth that survives: records rebuilt after loss, the work area swept at
//! start, and planted symlinks never followed.

use std::os::unix::fs::MetadataExt as _;

use smrtshare_api::staging::v1 as pb;
use tonic::Code;

use crate::harness::*;

fn without_times(mut list: Vec<pb::ListProjectsResponse>) -> Vec<pb::ListProjectsResponse> {
    for item in &mut list {
        item.updated_at = None;
    }
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_records_are_rebuilt_from_the_tree() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 3);
    let b = env.plain("r1/1_B01", "Wheat-Cell1", 2);
    let c = env.plain("r1/1_C01", "Oat-Cell1", 2);
    let run = env.barcoded("r2/1_A01", "Pool");
    let requests = vec![
        request(
            2,
            "Project 2",
            vec![
                ds(&a),
                ds(&run.parent),
                ds(&run.children[0]),
                ds(&run.children[1]),
            ],
        ),
        request(3, "Project 3", vec![ds(&b)]),
        request(4, "Project 4", vec![ds(&c)]),
    ];
    for r in &requests {
        assert!(env.apply(r.clone()).await.complete);
    }
    // Someone's file in a dataset directory, and a removed project that left a directory behind.
    let c_dir = env
        .root
        .join("Project 4")
        .join(format!("Movie {} - Oat-Cell1", c.movie));
    std::fs::write(c_dir.join("notes.txt"), "mine").unwrap();
    let d = env.plain("r1/1_D01", "Rye-Cell1", 1);
    assert!(
        env.apply(request(5, "Project 5", vec![ds(&d)]))
            .await
            .complete
    );
    std::fs::write(env.root.join("Project 5").join("keep.txt"), "mine").unwrap();
    assert!(env.remove(5, false).await.removed);

    let listed = env.list().await;
    let mut projects = Vec::new();
    for id in [2, 3, 4] {
        let mut got = env.get(id, false).await;
        got.updated_at = None;
        projects.push(got);
    }

    // Leftovers of an interrupted operation in the work area: a dataset directory being built
    // (marked, holding a link to its source) is swept; a file nothing proves staged is kept.
    let work = env.root.join(".smrtshare/work");
    let leftover = work.join(format!("00000001-{}", a.uuid));
    std::fs::create_dir_all(&leftover).unwrap();
    mark(
        &leftover,
        &format!("dataset {} plain {}", a.uuid, a.xml_path.display()),
    );
    std::fs::hard_link(&a.files[0], leftover.join("link.bam")).unwrap();
    std::fs::write(work.join("00000002-someones.txt"), "data").unwrap();

    env.stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let path = env.database().with_extension(format!("sqlite3{suffix}"));
        if path.exists() {
            std::fs::remove_file(path).unwrap();
        }
    }
    env.restart(|_| {}).await;

    assert!(!leftover.exists(), "the work area is swept at start");
    assert!(
        work.join("00000002-someones.txt").exists(),
        "a single-link file is kept"
    );
    assert_eq!(
        without_times(env.list().await),
        without_times(listed),
        "no duplicate, no orphan, nothing lost"
    );
    for (id, expected) in [2, 3, 4].into_iter().zip(projects) {
        let mut got = env.get(id, false).await;
        got.updated_at = None;
        assert_eq!(got, expected);
    }
    assert_eq!(
        env.client
            .get_project(pb::GetProjectRequest {
                project_id: 5,
                verify: false
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let calls = env.handle.mutating_calls();
    for r in requests {
        let again = env.apply(r).await;
        assert!(
            again.complete && again.actions.is_empty(),
            "{:?}",
            kinds(&again.actions)
        );
    }
    assert_eq!(
        env.handle.mutating_calls(),
        calls,
        "the rebuilt records match the tree exactly"
    );
    assert_eq!(
        std::fs::read_to_string(c_dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_are_never_followed() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    let run = env.barcoded("r2/1_A01", "Pool");
    assert!(
        env.apply(request(2, "Project 2", vec![ds(&a), ds(&run.parent)]))
            .await
            .complete
    );
    let outside = smrtshare_testkit::tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    let project = env.root.join("Project 2");
    let dir_a = project.join(format!("Movie {} - Rice-Cell1", a.movie));
    let parent = project.join(format!(
        "Movie {} - Pool (2 barcoded samples)",
        run.parent.movie
    ));

    // A staged link replaced by a symlink; a supplemental directory replaced by a symlink; a
    // symlink where a new dataset's directory would go; a symlink where a project would go.
    let name0 = a.files[0].file_name().unwrap();
    std::fs::remove_file(dir_a.join(name0)).unwrap();
    std::os::unix::fs::symlink(&victim, dir_a.join(name0)).unwrap();
    let supplemental = parent.join("Supplemental Run Data");
    for entry in std::fs::read_dir(&supplemental).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::remove_dir(&supplemental).unwrap();
    std::os::unix::fs::symlink(outside.path(), &supplemental).unwrap();
    let c = env.plain("r1/1_C01", "Oat-Cell1", 1);
    std::os::unix::fs::symlink(
        outside.path(),
        project.join(format!("Movie {} - Oat-Cell1", c.movie)),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), env.root.join("Project 3")).unwrap();

    let drift = env.get(2, true).await.drift;
    assert!(
        drift
            .iter()
            .any(|d| d.kind == pb::DriftKind::WrongType as i32
                && d.path.ends_with(&*name0.to_string_lossy())),
        "{drift:#?}"
    );
    assert!(
        drift
            .iter()
            .any(|d| d.kind == pb::DriftKind::WrongType as i32
                && d.path.ends_with("Supplemental Run Data")),
        "{drift:#?}"
    );

    let answer = env
        .apply(request(
            2,
            "Project 2",
            vec![ds(&a), ds(&run.parent), ds(&c)],
        ))
        .await;
    assert!(!answer.complete);
    let errors: Vec<&str> = answer.datasets.iter().map(|d| d.error.as_str()).collect();
    assert!(
        errors[0].contains("a symbolic link smrtshare did not stage is in the way"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains(
            "Supplemental Run Data: a symbolic link smrtshare did not stage is in the way"
        ),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("the directory name is taken: it is a symbolic link"),
        "{errors:?}"
    );
    let status = env
        .client
        .apply_project(request(3, "Project 3", vec![ds(&c)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is a symbolic link"),
        "{}",
        status.message()
    );
    assert!(!victim.exists());
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing was written through a symlink"
    );

    // Removal leaves the symlinks (not smrtshare's) and touches nothing behind them.
    let removed = env.remove(2, false).await;
    assert!(removed.removed);
    assert!(
        std::fs::symlink_metadata(dir_a.join(name0))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        removed
            .foreign_paths
            .iter()
            .any(|p| p.ends_with(&*name0.to_string_lossy())),
        "{:?}",
        removed.foreign_paths
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(&a.files[1]).unwrap().nlink(),
        1,
        "the other staged link was removed"
    );
}
