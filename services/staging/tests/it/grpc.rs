//! The service over gRPC against real trees: links, idempotence, renames, moves, removal with
//! foreign files, dry runs, drift, and the request errors.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use smrtshare_api::staging::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_files_are_hard_links_and_a_second_apply_changes_nothing() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 4);
    let b = env.plain("r1/1_B01", "Wheat-Cell1", 3);
    let run = env.barcoded("r2/1_A01", "Pool 7");
    let req = request(
        2,
        "Project 2: Grains",
        vec![
            ds(&a),
            ds(&b),
            ds(&run.parent),
            ds(&run.children[0]),
            ds(&run.children[1]),
        ],
    );
    let first = env.apply(req.clone()).await;
    assert!(first.complete, "{first:#?}");
    let states: Vec<_> = first.datasets.iter().map(state).collect();
    use pb::DatasetState::*;
    assert_eq!(states, vec![Staged, Staged, Staged, InParent, InParent]);

    let project = env.root.join("Project 2: Grains");
    let dir_a = project.join(format!("Movie {} - Rice-Cell1", a.movie));
    for file in &a.files {
        assert_linked(&dir_a.join(file.file_name().unwrap()), file);
    }
    let parent = project.join(format!(
        "Movie {} - Pool 7 (2 barcoded samples)",
        run.parent.movie
    ));
    assert_eq!(
        first.datasets[2].path,
        format!(
            "Project 2: Grains/Movie {} - Pool 7 (2 barcoded samples)",
            run.parent.movie
        )
    );
    assert_eq!(
        first.datasets[3].path,
        format!("{}/Sample A (bc2001--bc2001)", first.datasets[2].path)
    );
    for (child, dir) in run
        .children
        .iter()
        .zip(["Sample A (bc2001--bc2001)", "Sample B (bc2002--bc2002)"])
    {
        for file in &child.files {
            assert_linked(&parent.join(dir).join(file.file_name().unwrap()), file);
        }
    }
    for file in &run.supplemental {
        assert_linked(
            &parent
                .join("Supplemental Run Data")
                .join(file.file_name().unwrap()),
            file,
        );
    }
    assert!(
        !parent
            .join("Supplemental Run Data")
            .join(format!(
                "{}.hifi_reads.unassigned.consensusreadset.xml",
                run.parent.movie
            ))
            .exists()
    );
    let files_of_parent =
        run.children.iter().map(|c| c.files.len()).sum::<usize>() + run.supplemental.len();
    assert_eq!(first.datasets[2].file_count as usize, files_of_parent);
    for dir in [
        &project,
        &dir_a,
        &parent,
        &parent.join("Supplemental Run Data"),
    ] {
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777,
            0o1775,
            "{}",
            dir.display()
        );
    }

    let before = snapshot(&env.root);
    let calls = env.handle.mutating_calls();
    let db_path = env.database();
    let database = |suffix: &str| {
        let path = db_path.with_extension(format!("sqlite3{suffix}"));
        std::fs::metadata(&path)
            .map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
            .ok()
    };
    let db_before = (database(""), database("-wal"));
    let second = env.apply(req.clone()).await;
    assert!(second.complete);
    assert!(second.actions.is_empty(), "{:?}", kinds(&second.actions));
    assert_eq!(
        second.datasets.iter().map(state).collect::<Vec<_>>(),
        vec![Unchanged, Unchanged, Unchanged, InParent, InParent]
    );
    assert_eq!(
        env.handle.mutating_calls(),
        calls,
        "a second identical apply makes no mutating system call"
    );
    assert_eq!(
        snapshot(&env.root),
        before,
        "no entry's ctime, mtime, inode or mode changed"
    );
    assert_eq!(
        (database(""), database("-wal")),
        db_before,
        "the records were not rewritten"
    );

    let got = env.get(2, true).await;
    assert!(got.verified && got.drift.is_empty(), "{:?}", got.drift);
    assert_eq!(
        got.datasets.iter().map(|d| d.files.len()).sum::<usize>(),
        4 + 3 + files_of_parent
    );
    let listed = env.list().await;
    assert_eq!(listed.len(), 1);
    let mut uuids = vec![a.uuid.clone(), b.uuid.clone(), run.parent.uuid.clone()];
    uuids.sort();
    assert_eq!(listed[0].dataset_uuids, uuids);
    assert_eq!(listed[0].file_count as usize, 7 + files_of_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_removals_and_changed_sources_are_followed() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 4);
    let b = env.plain("r1/1_B01", "Wheat-Cell1", 2);
    let first = env
        .apply(request(3, "Old name", vec![ds(&a), ds(&b)]))
        .await;
    assert!(first.complete);
    let old_a = env
        .root
        .join("Old name")
        .join(format!("Movie {} - Rice-Cell1", a.movie));
    let a_ino = std::fs::metadata(&old_a).unwrap().ino();

    // The XML of a changes: one index is dropped, a new file appears. A source is rewritten.
    let xml = std::fs::read_to_string(&a.xml_path).unwrap();
    let dropped = a.files[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let extra = a.files[0].parent().unwrap().join("extra.txt");
    std::fs::write(&extra, "extra").unwrap();
    std::fs::write(
        &a.xml_path,
        xml.replace(
            &format!("../hifi_reads/{dropped}\""),
            "../hifi_reads/extra.txt\"",
        ),
    )
    .unwrap();
    let rewritten = &a.files[2];
    std::fs::remove_file(rewritten).unwrap();
    std::fs::write(rewritten, "new content").unwrap();
    let c = env.plain("r1/1_C01", "Maize-Cell1", 1);

    let mut renamed_a = ds(&a);
    renamed_a.name = "Rice renamed".into();
    let second = env
        .apply(request(3, "New name", vec![renamed_a, ds(&c)]))
        .await;
    assert!(second.complete, "{second:#?}");
    let actions = kinds(&second.actions);
    use pb::ActionKind::*;
    let new_a = env
        .root
        .join("New name")
        .join(format!("Movie {} - Rice renamed", a.movie));
    assert_eq!(actions[0], (RenameProjectDirectory, "New name".to_owned()));
    assert_eq!(second.actions[0].from_path, "Old name");
    assert!(actions.contains(&(
        RenameDatasetDirectory,
        format!("New name/Movie {} - Rice renamed", a.movie)
    )));
    assert!(actions.contains(&(
        UnlinkFile,
        format!("New name/Movie {} - Rice renamed/{dropped}", a.movie)
    )));
    assert!(actions.contains(&(
        LinkFile,
        format!("New name/Movie {} - Rice renamed/extra.txt", a.movie)
    )));
    assert!(actions.contains(&(
        RemoveDirectory,
        format!("New name/Movie {} - Wheat-Cell1", b.movie)
    )));
    assert!(actions.contains(&(
        PublishDirectory,
        format!("New name/Movie {} - Maize-Cell1", c.movie)
    )));
    assert_eq!(
        second.datasets.iter().map(state).collect::<Vec<_>>(),
        vec![pb::DatasetState::Updated, pb::DatasetState::Staged]
    );

    assert!(!env.root.join("Old name").exists());
    assert_eq!(
        std::fs::metadata(&new_a).unwrap().ino(),
        a_ino,
        "the dataset directory was renamed, not rebuilt"
    );
    assert!(!new_a.join(&dropped).exists());
    assert_linked(&new_a.join("extra.txt"), &extra);
    assert_linked(&new_a.join(rewritten.file_name().unwrap()), rewritten);
    assert_eq!(
        std::fs::read_to_string(new_a.join(rewritten.file_name().unwrap())).unwrap(),
        "new content"
    );
    assert!(
        !env.root
            .join("New name")
            .join(format!("Movie {} - Wheat-Cell1", b.movie))
            .exists()
    );
    for file in &b.files {
        assert_eq!(
            std::fs::metadata(file).unwrap().nlink(),
            1,
            "b's sources are untouched and no longer linked"
        );
    }
    assert_linked(
        &env.root
            .join("New name")
            .join(format!("Movie {} - Maize-Cell1", c.movie))
            .join(c.files[0].file_name().unwrap()),
        &c.files[0],
    );
    let got = env.get(3, true).await;
    assert_eq!(got.directory, "New name");
    assert!(got.drift.is_empty(), "{:?}", got.drift);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_moves_between_projects() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    let b = env.plain("r1/1_B01", "Wheat-Cell1", 2);
    assert!(
        env.apply(request(4, "Project 4", vec![ds(&a), ds(&b)]))
            .await
            .complete
    );
    let from = env
        .root
        .join("Project 4")
        .join(format!("Movie {} - Wheat-Cell1", b.movie));

    let moved = env.apply(request(5, "Project 5", vec![ds(&b)])).await;
    assert!(moved.complete, "{moved:#?}");
    let to = env
        .root
        .join("Project 5")
        .join(format!("Movie {} - Wheat-Cell1", b.movie));
    let action = moved
        .actions
        .iter()
        .find(|a| a.kind == pb::ActionKind::MoveDatasetDirectory as i32)
        .expect("a move");
    assert_eq!(
        action.from_path,
        format!("Project 4/Movie {} - Wheat-Cell1", b.movie)
    );
    assert_eq!(
        action.path,
        format!("Project 5/Movie {} - Wheat-Cell1", b.movie)
    );
    assert!(!from.exists());
    assert!(to.is_dir());
    for file in &b.files {
        assert_linked(&to.join(file.file_name().unwrap()), file);
    }
    let p4 = env.get(4, true).await;
    assert_eq!(
        p4.datasets
            .iter()
            .map(|d| d.uuid.clone())
            .collect::<Vec<_>>(),
        vec![a.uuid.clone()]
    );
    assert!(p4.drift.is_empty(), "{:?}", p4.drift);
    assert!(env.get(5, true).await.drift.is_empty());
    // Project 4's own apply no longer lists b: nothing to do.
    let again = env.apply(request(4, "Project 4", vec![ds(&a)])).await;
    assert!(again.actions.is_empty(), "{:?}", kinds(&again.actions));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_project_keeps_files_others_added() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 3);
    let run = env.barcoded("r2/1_A01", "Pool");
    let req = request(6, "Shared", vec![ds(&a), ds(&run.parent)]);
    assert!(env.apply(req.clone()).await.complete);
    let project = env.root.join("Shared");
    let dir_a = project.join(format!("Movie {} - Rice-Cell1", a.movie));
    let parent_dir = project.join(format!(
        "Movie {} - Pool (2 barcoded samples)",
        run.parent.movie
    ));
    std::fs::write(project.join("notes.txt"), "mine").unwrap();
    std::fs::write(dir_a.join("analysis.txt"), "also mine").unwrap();

    let dry = env.remove(6, true).await;
    assert!(
        dry.actions
            .iter()
            .all(|a| a.outcome == pb::ActionOutcome::Planned as i32)
    );
    assert!(
        dir_a.join(a.files[0].file_name().unwrap()).exists(),
        "a dry run removes nothing"
    );

    let removed = env.remove(6, false).await;
    assert!(removed.removed, "{removed:#?}");
    let mut foreign = removed.foreign_paths.clone();
    foreign.sort();
    assert_eq!(
        foreign,
        vec![
            format!("Shared/Movie {} - Rice-Cell1/analysis.txt", a.movie),
            "Shared/notes.txt".to_owned()
        ]
    );
    let keep: Vec<_> = removed
        .actions
        .iter()
        .filter(|x| x.kind == pb::ActionKind::KeepForeign as i32)
        .map(|x| x.path.clone())
        .collect();
    assert_eq!(
        keep,
        vec![
            format!("Shared/Movie {} - Rice-Cell1", a.movie),
            "Shared".to_owned()
        ]
    );
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(dir_a.join("analysis.txt")).unwrap(),
        "also mine"
    );
    for file in &a.files {
        assert!(!dir_a.join(file.file_name().unwrap()).exists());
        assert!(file.exists(), "sources stay");
    }
    assert!(
        !parent_dir.exists(),
        "a directory holding only staged files is removed"
    );
    assert!(env.list().await.is_empty());
    let status = env
        .client
        .get_project(pb::GetProjectRequest {
            project_id: 6,
            verify: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // Removing again is not an error.
    assert!(env.remove(6, false).await.removed);

    // Staging the project again adopts the kept directories.
    let again = env.apply(req).await;
    assert!(again.complete, "{again:#?}");
    assert!(kinds(&again.actions).contains(&(pb::ActionKind::MarkDirectory, "Shared".to_owned())));
    assert_linked(&dir_a.join(a.files[0].file_name().unwrap()), &a.files[0]);
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt")).unwrap(),
        "mine"
    );
    let drift = env.get(6, true).await.drift;
    let foreign: Vec<_> = drift
        .iter()
        .filter(|d| d.kind == pb::DriftKind::Foreign as i32)
        .map(|d| d.path.clone())
        .collect();
    assert_eq!(foreign.len(), 2, "{drift:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 3);
    let mut req = request(7, "Dry", vec![ds(&a)]);
    req.dry_run = true;
    let plan = env.apply(req.clone()).await;
    assert!(plan.dry_run && plan.complete);
    assert!(
        plan.actions
            .iter()
            .all(|x| x.outcome == pb::ActionOutcome::Planned as i32)
    );
    let planned = kinds(&plan.actions);
    use pb::ActionKind::*;
    assert_eq!(planned.first(), Some(&(CreateDirectory, "Dry".to_owned())));
    assert_eq!(planned.iter().filter(|(k, _)| *k == LinkFile).count(), 3);
    assert_eq!(planned.last().map(|(k, _)| *k), Some(PublishDirectory));
    assert!(snapshot(&env.root).is_empty());
    assert_eq!(env.handle.mutating_calls(), 0);
    assert!(env.list().await.is_empty());

    req.dry_run = false;
    assert!(env.apply(req.clone()).await.complete);
    let before = snapshot(&env.root);
    let calls = env.handle.mutating_calls();
    let mut renamed = req.clone();
    renamed.directory = "Dry renamed".into();
    renamed.dry_run = true;
    renamed.datasets.clear();
    let plan = env.apply(renamed).await;
    assert_eq!(
        kinds(&plan.actions)[0],
        (RenameProjectDirectory, "Dry renamed".to_owned())
    );
    assert!(kinds(&plan.actions).iter().any(|(k, _)| *k == UnlinkFile));
    let plan = env.remove(7, true).await;
    assert!(!plan.actions.is_empty());
    assert_eq!(snapshot(&env.root), before);
    assert_eq!(env.handle.mutating_calls(), calls);
    assert_eq!(env.get(7, false).await.directory, "Dry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_repaired() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 4);
    let req = request(8, "Drifting", vec![ds(&a)]);
    assert!(env.apply(req.clone()).await.complete);
    let dir = env
        .root
        .join("Drifting")
        .join(format!("Movie {} - Rice-Cell1", a.movie));
    let name = |i: usize| a.files[i].file_name().unwrap().to_owned();
    std::fs::remove_file(dir.join(name(0))).unwrap();
    std::fs::remove_file(dir.join(name(1))).unwrap();
    std::fs::write(dir.join(name(1)), "a copy, not a link").unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("foreign.txt"), "x").unwrap();
    let drift = env.get(8, true).await.drift;
    let found: Vec<(i32, String)> = drift
        .iter()
        .map(|d| (d.kind, d.path.rsplit('/').next().unwrap().to_owned()))
        .collect();
    use pb::DriftKind::*;
    let dir_name = format!("Movie {} - Rice-Cell1", a.movie);
    for expected in [
        (Missing as i32, name(0).to_string_lossy().into_owned()),
        (NotLinked as i32, name(1).to_string_lossy().into_owned()),
        (WrongMode as i32, dir_name),
        (Foreign as i32, "foreign.txt".to_owned()),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in {drift:#?}");
    }
    // An apply repairs what is smrtshare's and refuses to overwrite the copy someone put there.
    let repaired = env.apply(req).await;
    assert!(!repaired.complete);
    assert!(
        repaired.datasets[0]
            .error
            .contains("a file smrtshare did not stage is in the way"),
        "{}",
        repaired.datasets[0].error
    );
    assert!(
        repaired.datasets[0].permanent,
        "a name taken by a file staging did not make stays taken"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(name(1))).unwrap(),
        "a copy, not a link"
    );
    std::fs::remove_file(dir.join(name(1))).unwrap();
    let repaired = env.apply(request(8, "Drifting", vec![ds(&a)])).await;
    assert!(repaired.complete, "{repaired:#?}");
    assert!(kinds(&repaired.actions).contains(&(
        pb::ActionKind::SetMode,
        format!("Drifting/Movie {} - Rice-Cell1", a.movie)
    )));
    assert_linked(&dir.join(name(0)), &a.files[0]);
    assert_linked(&dir.join(name(1)), &a.files[1]);
    let left: Vec<i32> = env
        .get(8, true)
        .await
        .drift
        .iter()
        .map(|d| d.kind)
        .collect();
    assert_eq!(left, vec![Foreign as i32]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_taken_names_are_refused() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 1);
    let b = env.plain("r1/1_B01", "Wheat-Cell1", 1);
    let refuse = |r: Result<tonic::Response<pb::ApplyProjectResponse>, tonic::Status>| {
        r.expect_err("refused")
    };

    let status = refuse(
        env.client
            .apply_project(request(1, "General", vec![ds(&a)]))
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("project_id: project 1"),
        "{}",
        status.message()
    );
    let mut bad = ds(&b);
    bad.uuid = "not-a-uuid".into();
    let status = refuse(
        env.client
            .apply_project(request(2, "P", vec![ds(&a), ds(&b), bad]))
            .await,
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("datasets[2].uuid: "),
        "{}",
        status.message()
    );
    let status = refuse(
        env.client
            .apply_project(request(2, "P", vec![ds(&a), ds(&a)]))
            .await,
    );
    assert!(
        status.message().starts_with("datasets[1].uuid: ")
            && status.message().contains("datasets[0]"),
        "{}",
        status.message()
    );
    for directory in [
        "",
        ".",
        "..",
        "a/b",
        ".smrtshare",
        ".smrtshare-x",
        "Project 2:\nTomato",
        "tab\there",
        "esc\u{1b}[31m",
    ] {
        let status = refuse(
            env.client
                .apply_project(request(2, directory, vec![]))
                .await,
        );
        assert_eq!(status.code(), Code::InvalidArgument, "{directory:?}");
        assert!(
            status.message().starts_with("directory: "),
            "{}",
            status.message()
        );
        assert!(
            !directory.chars().any(char::is_control)
                || status.message().contains("control character U+00"),
            "{}",
            status.message()
        );
    }
    assert_eq!(
        std::fs::read_dir(&env.root).unwrap().count(),
        1,
        "only the hidden area: no refused name was created"
    );

    assert!(env.apply(request(2, "Taken", vec![ds(&a)])).await.complete);
    let status = refuse(
        env.client
            .apply_project(request(3, "Taken", vec![ds(&b)]))
            .await,
    );
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("project 2"),
        "{}",
        status.message()
    );
    std::fs::create_dir(env.root.join("Somebody's")).unwrap();
    let status = refuse(
        env.client
            .apply_project(request(3, "Somebody's", vec![ds(&b)]))
            .await,
    );
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("was not created by smrtshare"),
        "{}",
        status.message()
    );
    assert_eq!(
        std::fs::read_dir(env.root.join("Somebody's"))
            .unwrap()
            .count(),
        0
    );

    let status = env
        .client
        .get_project(pb::GetProjectRequest {
            project_id: 9,
            verify: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = env
        .client
        .remove_project(pb::RemoveProjectRequest {
            project_id: 0,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
