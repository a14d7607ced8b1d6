//! Analysis jobs' outputs staged as `Analysis {id}: {name}/` in the project directory: the right
//! files (dataset XMLs and internal files left out unless configured), names two outputs share
//! and names held by others failing alone, others' files surviving the job's and the project's
//! removal, renames, jobs moving between projects, records rebuilt from the tree, dry runs.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use smrtshare_api::staging::v1 as pb;

use crate::harness::*;

const FASTA: &str = "PacBio.FileTypes.Fasta";

/// Writes an output file of job `id` under the source root (as SMRT Link lays out jobs_root).
fn output(env: &Env, id: i64, rel: &str) -> PathBuf {
    let path = env
        .src
        .join("jobs_root/0000/0000001")
        .join(format!("{id:010}"))
        .join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("{rel} of job {id}")).unwrap();
    path
}

fn file(path: &Path, file_type: &str) -> pb::AnalysisFile {
    pb::AnalysisFile {
        path: path.display().to_string(),
        file_type_id: file_type.into(),
        source_id: "task::output".into(),
    }
}

fn job(id: i64, name: &str, files: Vec<pb::AnalysisFile>) -> pb::AnalysisJob {
    pb::AnalysisJob {
        job_id: id,
        name: name.into(),
        files,
    }
}

fn with_jobs(project: i64, directory: &str, jobs: Vec<pb::AnalysisJob>) -> pb::ApplyProjectRequest {
    pb::ApplyProjectRequest {
        analysis_jobs: jobs,
        ..request(project, directory, vec![])
    }
}

fn job_state(r: &pb::AnalysisResult) -> pb::DatasetState {
    pb::DatasetState::try_from(r.state).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn marker(dir: &Path) -> String {
    let mut buf = [0u8; 1024];
    let len = rustix::fs::getxattr(dir, "user.smrtshare", &mut buf[..]).unwrap();
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// A finished assembly job: two results, and a dataset XML, a log, the datastore and JSON job
/// metadata that the rules leave out.
fn assembly(env: &Env, id: i64) -> (pb::AnalysisJob, Vec<PathBuf>, Vec<PathBuf>) {
    let contigs = output(env, id, "outputs/contigs.fasta");
    let report = output(env, id, "outputs/assembly.report.json");
    let xml = output(env, id, "outputs/contigs.contigset.xml");
    let log = output(env, id, "logs/pbsmrtpipe.log");
    let datastore = output(env, id, "workflow/datastore.json");
    let workflow = output(env, id, "workflow/options-workflow.json");
    let spec = job(
        id,
        "Assembly",
        vec![
            file(&contigs, FASTA),
            file(&report, "PacBio.FileTypes.JsonReport"),
            file(&xml, "PacBio.DataSet.ContigSet"),
            file(&log, "PacBio.FileTypes.log"),
            file(&datastore, "PacBio.FileTypes.Datastore"),
            file(&workflow, "PacBio.FileTypes.json"),
        ],
    );
    (
        spec,
        vec![contigs, report],
        vec![xml, log, datastore, workflow],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_outputs_are_staged_without_its_dataset_xml_and_internal_files() {
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 1);
    let (spec, staged, left_out) = assembly(&env, 1589);
    let req = pb::ApplyProjectRequest {
        analysis_jobs: vec![spec.clone()],
        ..request(2, "Project 2: Rice", vec![ds(&a)])
    };
    let answer = env.apply(req.clone()).await;
    assert!(answer.complete, "{answer:#?}");
    let dir = "Project 2: Rice/Analysis 1589: Assembly";
    let result = &answer.analysis[0];
    assert_eq!(
        (
            job_state(result),
            result.path.as_str(),
            result.file_count,
            result.skipped
        ),
        (pb::DatasetState::Staged, dir, 2, 4)
    );
    assert_eq!(
        names(&env.root.join(dir)),
        vec!["assembly.report.json", "contigs.fasta"]
    );
    for source in &staged {
        assert_linked(
            &env.root.join(dir).join(source.file_name().unwrap()),
            source,
        );
    }
    for source in &left_out {
        assert_eq!(std::fs::metadata(source).unwrap().nlink(), 1, "{source:?}");
    }
    assert_eq!(marker(&env.root.join(dir)), "analysis 1589");
    let mode = std::fs::metadata(env.root.join(dir)).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o1775);
    let job_actions: Vec<_> = answer
        .actions
        .iter()
        .filter(|x| x.analysis_job_id == 1589)
        .map(|x| (x.kind, x.dataset_uuid.clone()))
        .collect();
    assert!(job_actions.len() >= 4, "{job_actions:?}");
    assert!(job_actions.iter().all(|(_, uuid)| uuid.is_empty()));

    // Again: nothing to do, nothing done.
    let calls = env.handle.mutating_calls();
    let again = env.apply(req).await;
    assert!(again.actions.is_empty(), "{:#?}", again.actions);
    assert_eq!(job_state(&again.analysis[0]), pb::DatasetState::Unchanged);
    assert_eq!(env.handle.mutating_calls(), calls);

    let listed = env.list().await;
    assert_eq!(listed[0].analysis_job_ids, vec![1589]);
    assert_eq!(listed[0].file_count, 3);
    let got = env.get(2, true).await;
    assert!(got.drift.is_empty(), "{:#?}", got.drift);
    assert_eq!(got.analysis_jobs.len(), 1);
    assert_eq!(got.analysis_jobs[0].path, dir);
    let files: Vec<&str> = got.analysis_jobs[0]
        .files
        .iter()
        .map(|f| f.source.as_str())
        .collect();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.contains("/jobs_root/")), "{files:?}");

    // Configured to stage them, the dataset XML and the internal files join the results.
    env.restart(|c| {
        c.job_rules.dataset_xml = true;
        c.job_rules.internal = true;
    })
    .await;
    let all = env
        .apply(pb::ApplyProjectRequest {
            analysis_jobs: vec![spec],
            ..request(2, "Project 2: Rice", vec![ds(&a)])
        })
        .await;
    assert!(all.complete, "{all:#?}");
    let result = &all.analysis[0];
    assert_eq!(
        (job_state(result), result.file_count, result.skipped),
        (pb::DatasetState::Updated, 6, 0)
    );
    for source in staged.iter().chain(&left_out) {
        assert_linked(
            &env.root.join(dir).join(source.file_name().unwrap()),
            source,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_two_outputs_share_or_others_hold_fails_that_file_and_the_rest_is_staged() {
    let mut env = Env::new().await;
    let good = output(&env, 7, "outputs/variants.vcf");
    let one = output(&env, 7, "a/summary.txt");
    let two = output(&env, 7, "b/summary.txt");
    let outside = smrtshare_testkit::tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let secret = outside.path().join("secret.txt");
    let files = vec![
        file(&good, "PacBio.FileTypes.vcf"),
        file(&one, "PacBio.FileTypes.txt"),
        file(&two, "PacBio.FileTypes.txt"),
        file(&secret, "PacBio.FileTypes.txt"),
        file(&env.src.join("gone.bam"), "PacBio.FileTypes.bam"),
    ];
    let answer = env
        .apply(with_jobs(
            2,
            "Project 2",
            vec![job(7, "Variants", files.clone())],
        ))
        .await;
    assert!(!answer.complete);
    let result = &answer.analysis[0];
    assert_eq!(job_state(result), pb::DatasetState::Failed);
    assert!(result.permanent, "no retry cures these: {}", result.error);
    assert_eq!(result.file_count, 1);
    for part in [
        "3 problems",
        "would be named \"summary.txt\"",
        &one.display().to_string(),
        &two.display().to_string(),
        "is outside the source roots",
        "gone.bam: file not found",
    ] {
        assert!(
            result.error.contains(part),
            "{:?} lacks {part:?}",
            result.error
        );
    }
    let dir = env.root.join("Project 2/Analysis 7: Variants");
    assert_eq!(names(&dir), vec!["variants.vcf"]);
    assert_linked(&dir.join("variants.vcf"), &good);
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);

    // A member's file holds the name of an output the job gains: that output fails alone.
    std::fs::write(dir.join("contigs.fasta"), "a member's own contigs").unwrap();
    let contigs = output(&env, 7, "outputs/contigs.fasta");
    let report = output(&env, 7, "outputs/report.json");
    let later = vec![
        file(&good, "PacBio.FileTypes.vcf"),
        file(&contigs, FASTA),
        file(&report, "PacBio.FileTypes.JsonReport"),
    ];
    let answer = env
        .apply(with_jobs(
            2,
            "Project 2",
            vec![job(7, "Variants", later.clone())],
        ))
        .await;
    let result = &answer.analysis[0];
    assert_eq!(job_state(result), pb::DatasetState::Failed);
    assert!(result.permanent);
    assert!(
        result
            .error
            .contains("contigs.fasta: a file smrtshare did not stage is in the way"),
        "{}",
        result.error
    );
    assert_eq!(result.file_count, 2);
    assert_eq!(
        std::fs::read_to_string(dir.join("contigs.fasta")).unwrap(),
        "a member's own contigs"
    );
    assert_linked(&dir.join("report.json"), &report);
    assert_eq!(std::fs::metadata(&contigs).unwrap().nlink(), 1);
    let got = env.get(2, false).await;
    assert_eq!(
        got.analysis_jobs[0].files.len(),
        2,
        "the member's file is not recorded"
    );

    // Once the member moves their file away, the output is staged.
    std::fs::remove_file(dir.join("contigs.fasta")).unwrap();
    let answer = env
        .apply(with_jobs(2, "Project 2", vec![job(7, "Variants", later)]))
        .await;
    assert!(answer.complete, "{answer:#?}");
    assert_linked(&dir.join("contigs.fasta"), &contigs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_files_survive_the_jobs_removal_and_the_projects() {
    let mut env = Env::new().await;
    let (first, first_files, _) = assembly(&env, 11);
    let (second, second_files, _) = assembly(&env, 12);
    let req = with_jobs(3, "Project 3", vec![first.clone(), second.clone()]);
    assert!(env.apply(req).await.complete);
    let dir11 = env.root.join("Project 3/Analysis 11: Assembly");
    let dir12 = env.root.join("Project 3/Analysis 12: Assembly");
    std::fs::write(dir11.join("notes.txt"), "what we found").unwrap();
    std::fs::write(dir12.join("notes.txt"), "more notes").unwrap();

    // Job 11 deleted in SMRT Link: its links go, the note stays in its kept directory.
    let answer = env.apply(with_jobs(3, "Project 3", vec![second])).await;
    assert!(answer.complete, "{answer:#?}");
    assert_eq!(names(&dir11), vec!["notes.txt"]);
    assert!(marker(&dir11).starts_with("retired analysis 11"));
    for source in &first_files {
        assert_eq!(std::fs::metadata(source).unwrap().nlink(), 1);
    }
    let kinds: Vec<(i32, i64)> = answer
        .actions
        .iter()
        .map(|x| (x.kind, x.analysis_job_id))
        .collect();
    assert!(
        kinds.contains(&(pb::ActionKind::UnlinkFile as i32, 11)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(pb::ActionKind::KeepForeign as i32, 11)),
        "{kinds:?}"
    );
    assert_eq!(env.list().await[0].analysis_job_ids, vec![12]);

    // The project removed: every staged link goes, both notes stay where they were put.
    let removed = env.remove(3, false).await;
    assert!(removed.removed, "{removed:#?}");
    assert_eq!(
        std::fs::read_to_string(dir11.join("notes.txt")).unwrap(),
        "what we found"
    );
    assert_eq!(names(&dir12), vec!["notes.txt"]);
    assert!(
        removed
            .foreign_paths
            .contains(&"Project 3/Analysis 12: Assembly/notes.txt".to_owned()),
        "{:?}",
        removed.foreign_paths
    );
    for source in &second_files {
        assert_eq!(std::fs::metadata(source).unwrap().nlink(), 1);
    }
    assert!(env.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_job_is_renamed_and_a_moved_job_takes_only_its_links() {
    let mut env = Env::new().await;
    let (spec, files, _) = assembly(&env, 21);
    assert!(
        env.apply(with_jobs(2, "Project 2", vec![spec.clone()]))
            .await
            .complete
    );
    let old = env.root.join("Project 2/Analysis 21: Assembly");
    let ino = std::fs::metadata(&old).unwrap().ino();

    let renamed = pb::AnalysisJob {
        name: "Tomato assembly".into(),
        ..spec
    };
    let answer = env
        .apply(with_jobs(2, "Project 2", vec![renamed.clone()]))
        .await;
    assert!(answer.complete, "{answer:#?}");
    let new = env.root.join("Project 2/Analysis 21: Tomato assembly");
    assert!(!old.exists());
    assert_eq!(
        std::fs::metadata(&new).unwrap().ino(),
        ino,
        "renamed, not rebuilt"
    );
    let rename = answer
        .actions
        .iter()
        .find(|x| x.kind == pb::ActionKind::RenameDatasetDirectory as i32)
        .unwrap();
    assert_eq!(rename.analysis_job_id, 21);
    assert_eq!(rename.from_path, "Project 2/Analysis 21: Assembly");
    assert_eq!(job_state(&answer.analysis[0]), pb::DatasetState::Updated);

    // The job moves to project 4: its links leave project 2, a member's note does not.
    std::fs::write(new.join("private.txt"), "project 2 only").unwrap();
    let moved = env.apply(with_jobs(4, "Project 4", vec![renamed])).await;
    assert!(moved.complete, "{moved:#?}");
    let there = env.root.join("Project 4/Analysis 21: Tomato assembly");
    for source in &files {
        assert_linked(&there.join(source.file_name().unwrap()), source);
        assert_eq!(std::fs::metadata(source).unwrap().nlink(), 2, "linked once");
    }
    assert!(!there.join("private.txt").exists());
    assert_eq!(names(&new), vec!["private.txt"]);
    let move_action = moved
        .actions
        .iter()
        .find(|x| x.kind == pb::ActionKind::MoveDatasetDirectory as i32)
        .unwrap();
    assert_eq!(
        (move_action.analysis_job_id, move_action.from_path.as_str()),
        (21, "Project 2/Analysis 21: Tomato assembly")
    );
    let listed = env.list().await;
    let jobs: Vec<(i64, Vec<i64>)> = listed
        .iter()
        .map(|p| (p.project_id, p.analysis_job_ids.clone()))
        .collect();
    assert_eq!(jobs, vec![(2, vec![]), (4, vec![21])]);
    assert!(env.get(4, true).await.drift.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_records_are_rebuilt_from_the_tree_and_a_dry_run_changes_nothing() {
    let mut env = Env::new().await;
    let (spec, files, _) = assembly(&env, 31);

    // A dry run plans the job's directory and touches nothing.
    let before = snapshot(&env.root);
    let plan = env
        .apply(pb::ApplyProjectRequest {
            dry_run: true,
            ..with_jobs(5, "Project 5", vec![spec.clone()])
        })
        .await;
    assert_eq!(snapshot(&env.root), before);
    assert_eq!(job_state(&plan.analysis[0]), pb::DatasetState::Staged);
    let planned: Vec<(i32, i64)> = plan
        .actions
        .iter()
        .filter(|x| x.outcome == pb::ActionOutcome::Planned as i32)
        .map(|x| (x.kind, x.analysis_job_id))
        .collect();
    assert!(
        planned.contains(&(pb::ActionKind::LinkFile as i32, 31)),
        "{planned:?}"
    );
    assert!(env.list().await.is_empty());

    let req = with_jobs(5, "Project 5", vec![spec]);
    assert!(env.apply(req.clone()).await.complete);
    env.stop().await;
    std::fs::remove_file(env.database()).unwrap();
    env.restart(|_| {}).await;
    let listed = env.list().await;
    assert_eq!(listed[0].analysis_job_ids, vec![31]);

    // The next request's file list proves the links staged: adopted, nothing changed on disk.
    let before = snapshot(&env.root);
    let calls = env.handle.mutating_calls();
    let again = env.apply(req).await;
    assert!(again.complete, "{again:#?}");
    assert_eq!(job_state(&again.analysis[0]), pb::DatasetState::Unchanged);
    assert_eq!(env.handle.mutating_calls(), calls);
    assert_eq!(snapshot(&env.root), before);
    assert_eq!(env.get(5, false).await.analysis_jobs[0].files.len(), 2);

    // And they are removed as staged links when the job goes.
    let gone = env.apply(with_jobs(5, "Project 5", vec![])).await;
    assert!(gone.complete, "{gone:#?}");
    for source in &files {
        assert_eq!(std::fs::metadata(source).unwrap().nlink(), 1);
    }
    assert_eq!(names(&env.root.join("Project 5")), Vec::<String>::new());
}
