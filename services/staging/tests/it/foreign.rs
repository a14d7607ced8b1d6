//! Files staging did not create are never moved to another project, stranded in the work area or
//! deleted: a file added at the worst instant of a removal (a hook between the scan and the
//! rename), a note in a dataset directory another project takes, a directory someone else owns
//! that carries a forged marker, and what a crash leaves in the work area.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use smrtshare_api::staging::v1 as pb;
use smrtshare_staging::hooks::{Hooks, Point};
use tonic::Code;

use crate::harness::*;

fn work_items(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join(".smrtshare/work"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn marker(dir: &Path) -> String {
    let mut buf = [0u8; 1024];
    let len = rustix::fs::getxattr(dir, "user.smrtshare", &mut buf[..]).unwrap();
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_added_between_the_scan_and_the_rename_stays_where_it_was_put() {
    // The hook adds a member's file inside a child directory of the dataset directory at the
    // instant after the removal's scan found nothing foreign.
    let armed: Arc<Mutex<Option<(String, PathBuf)>>> = Arc::default();
    let trigger = armed.clone();
    let mut env = Env::with(move |c| {
        c.hooks = Hooks::new(move |point, path| {
            let mut armed = trigger.lock().unwrap();
            if point == Point::RemovalScanned
                && armed.as_ref().is_some_and(|(at, _)| at == path)
                && let Some((_, file)) = armed.take()
            {
                std::fs::write(file, "a member's notes").unwrap();
            }
        })
    })
    .await;
    let run = env.barcoded("r2/1_A01", "Pool");
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    let req = request(
        6,
        "Shared",
        vec![
            ds(&run.parent),
            ds(&run.children[0]),
            ds(&run.children[1]),
            ds(&a),
        ],
    );
    assert!(env.apply(req.clone()).await.complete);
    let parent = format!(
        "Shared/Movie {} - Pool (2 barcoded samples)",
        run.parent.movie
    );
    let child = env.root.join(&parent).join("Sample A (bc2001--bc2001)");
    let notes = child.join("notes.txt");
    *armed.lock().unwrap() = Some((parent.clone(), notes.clone()));

    let removed = env.remove(6, false).await;
    assert!(armed.lock().unwrap().is_none(), "the hook ran");
    assert!(removed.removed, "{removed:#?}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "a member's notes",
        "the file is where its owner put it"
    );
    assert_eq!(
        removed.foreign_paths,
        vec![format!("{parent}/Sample A (bc2001--bc2001)/notes.txt")]
    );
    let kept: Vec<String> = std::fs::read_dir(env.root.join(&parent))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, vec!["Sample A (bc2001--bc2001)".to_owned()]);
    assert_eq!(
        std::fs::read_dir(&child).unwrap().count(),
        1,
        "the staged links around it are gone"
    );
    assert!(marker(&env.root.join(&parent)).starts_with("retired dataset "));
    assert!(marker(&child).starts_with("retired part "));
    for file in run.parent.files.iter().chain(&a.files) {
        assert_eq!(
            std::fs::metadata(file).unwrap().nlink(),
            1,
            "{}",
            file.display()
        );
    }
    assert!(work_items(&env.root).is_empty(), "nothing is stranded");

    // A restart's sweep finds nothing to take; staging the project again adopts what was kept.
    env.restart(|_| {}).await;
    assert!(notes.exists());
    let again = env.apply(req).await;
    assert!(again.complete, "{again:#?}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "a member's notes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_dataset_leaves_others_files_in_the_project_they_were_shared_with() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    let run = env.barcoded("r2/1_A01", "Pool");
    let datasets = vec![
        ds(&a),
        ds(&run.parent),
        ds(&run.children[0]),
        ds(&run.children[1]),
    ];
    assert!(
        env.apply(request(2, "Project 2", datasets.clone()))
            .await
            .complete
    );
    let from_a = env
        .root
        .join(format!("Project 2/Movie {} - Rice-Cell1", a.movie));
    let from_parent = env.root.join(format!(
        "Project 2/Movie {} - Pool (2 barcoded samples)",
        run.parent.movie
    ));
    std::fs::write(from_a.join("private.txt"), "project 2 only").unwrap();
    std::fs::write(
        from_parent
            .join("Sample B (bc2002--bc2002)")
            .join("private.txt"),
        "project 2 only",
    )
    .unwrap();

    let taken = env.apply(request(4, "Project 4", datasets)).await;
    assert!(taken.complete, "{taken:#?}");
    let moves: Vec<_> = taken
        .actions
        .iter()
        .filter(|x| x.kind == pb::ActionKind::MoveDatasetDirectory as i32)
        .map(|x| x.from_path.clone())
        .collect();
    assert_eq!(moves.len(), 2, "{moves:?}");
    let to_a = env
        .root
        .join(format!("Project 4/Movie {} - Rice-Cell1", a.movie));
    let to_parent = env.root.join(format!(
        "Project 4/Movie {} - Pool (2 barcoded samples)",
        run.parent.movie
    ));
    for file in &a.files {
        assert_linked(&to_a.join(file.file_name().unwrap()), file);
    }
    let in_project_4: Vec<String> = snapshot(&env.root.join("Project 4"))
        .into_keys()
        .filter(|p| p.ends_with("private.txt"))
        .collect();
    assert!(in_project_4.is_empty(), "{in_project_4:?}");
    assert!(to_parent.join("Sample B (bc2002--bc2002)").is_dir());
    // The notes stay in project 2, in kept directories holding nothing else.
    assert_eq!(
        std::fs::read_to_string(from_a.join("private.txt")).unwrap(),
        "project 2 only"
    );
    assert_eq!(std::fs::read_dir(&from_a).unwrap().count(), 1);
    assert!(
        from_parent
            .join("Sample B (bc2002--bc2002)/private.txt")
            .is_file()
    );
    assert_eq!(std::fs::read_dir(&from_parent).unwrap().count(), 1);
    for file in a.files.iter().chain(&run.parent.files) {
        assert_eq!(
            std::fs::metadata(file).unwrap().nlink(),
            2,
            "linked once, in project 4: {}",
            file.display()
        );
    }
    assert!(env.get(2, false).await.datasets.is_empty());
    assert!(env.get(4, true).await.drift.is_empty());
    assert!(work_items(&env.root).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_someone_else_owns_is_never_adopted_whatever_its_marker() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    assert!(env.apply(request(3, "Project 3", vec![])).await.complete);
    // A member's directory at the dataset's name, marked as the dataset's; one at a project's name.
    let member = 4242;
    let forged = env
        .root
        .join(format!("Project 3/Movie {} - Rice-Cell1", a.movie));
    std::fs::create_dir(&forged).unwrap();
    std::fs::write(forged.join("mine.txt"), "mine").unwrap();
    mark(
        &forged,
        &format!("dataset {} plain {}", a.uuid, a.xml_path.display()),
    );
    let project = env.root.join("Project 5");
    std::fs::create_dir(&project).unwrap();
    mark(&project, "project 5");
    for path in [&forged, &forged.join("mine.txt"), &project] {
        std::os::unix::fs::chown(path, Some(member), Some(member)).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
    }
    let before = snapshot(&env.root);

    let answer = env.apply(request(3, "Project 3", vec![ds(&a)])).await;
    assert_eq!(state(&answer.datasets[0]), pb::DatasetState::Failed);
    assert!(
        answer.datasets[0]
            .error
            .contains("the directory name is taken: it was not created by smrtshare"),
        "{}",
        answer.datasets[0].error
    );
    let status = env
        .client
        .apply_project(request(5, "Project 5", vec![ds(&a)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("was not created by smrtshare"));
    assert_eq!(snapshot(&env.root), before, "nothing of theirs was touched");
    assert_eq!(std::fs::metadata(&forged).unwrap().uid(), member);
    assert_eq!(
        env.remove(3, false).await.foreign_paths,
        vec![format!("Project 3/Movie {} - Rice-Cell1", a.movie)]
    );
    assert!(forged.join("mine.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_unlinks_only_what_it_proves_and_puts_the_rest_back() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 2);
    let run = env.barcoded("r2/1_A01", "Pool");
    let datasets = vec![
        ds(&a),
        ds(&run.parent),
        ds(&run.children[0]),
        ds(&run.children[1]),
    ];
    assert!(
        env.apply(request(2, "Project 2", datasets.clone()))
            .await
            .complete
    );
    env.stop().await;
    // What a crash in the middle of two removals leaves: each dataset directory out in the work
    // area with the staged links still in it and a file a member added. One's name was taken
    // since, by a member's directory.
    let project = env.root.join("Project 2");
    let work = env.root.join(".smrtshare/work");
    let a_name = format!("Movie {} - Rice-Cell1", a.movie);
    let parent_name = format!("Movie {} - Pool (2 barcoded samples)", run.parent.movie);
    std::fs::rename(project.join(&a_name), work.join("00000007-p2-remove")).unwrap();
    std::fs::rename(project.join(&parent_name), work.join("00000008-p2-remove")).unwrap();
    std::fs::write(work.join("00000007-p2-remove/notes.txt"), "mine").unwrap();
    // A member's own hard link: two links, but not a source of the dataset.
    let theirs = env.dir.path().join("theirs.txt");
    std::fs::write(&theirs, "theirs").unwrap();
    std::fs::hard_link(&theirs, work.join("00000007-p2-remove/theirs.txt")).unwrap();
    std::fs::write(
        work.join("00000008-p2-remove/Sample A (bc2001--bc2001)/notes.txt"),
        "mine",
    )
    .unwrap();
    std::fs::create_dir(project.join(&parent_name)).unwrap();

    env.restart(|_| {}).await;
    assert!(
        work_items(&env.root).is_empty(),
        "{:?}",
        work_items(&env.root)
    );
    let back = project.join(&a_name);
    let mut left: Vec<String> = std::fs::read_dir(&back)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["notes.txt", "theirs.txt"],
        "back under its name, ours unlinked"
    );
    assert_eq!(
        std::fs::metadata(&theirs).unwrap().nlink(),
        2,
        "theirs kept"
    );
    assert!(marker(&back).starts_with("retired dataset "));
    let recovered = project.join("smrtshare-recovered").join(&parent_name);
    assert_eq!(
        snapshot(&recovered).into_keys().collect::<Vec<_>>(),
        vec![
            "Sample A (bc2001--bc2001)".to_owned(),
            "Sample A (bc2001--bc2001)/notes.txt".to_owned()
        ]
    );
    assert!(
        std::fs::read_dir(project.join(&parent_name))
            .unwrap()
            .next()
            .is_none()
    );
    for file in a.files.iter().chain(&run.parent.files) {
        assert_eq!(
            std::fs::metadata(file).unwrap().nlink(),
            1,
            "{}",
            file.display()
        );
    }
    // The next apply stages the datasets again next to what was kept, and touches none of it.
    let again = env.apply(request(2, "Project 2", datasets)).await;
    assert_eq!(
        state(&again.datasets[0]),
        pb::DatasetState::Updated,
        "{again:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(
        recovered
            .join("Sample A (bc2001--bc2001)/notes.txt")
            .exists()
    );
}
