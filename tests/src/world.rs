//! What the world should look like, read from SMRT Link, and the check that staging's tree, the
//! Globus rules and the coordinator's changes agree with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use smrtshare_api::coordinator::v1 as pb;

use crate::stack::{GLOBUS_CLIENT_ID, Stack, USERNAME_DOMAIN};

/// One project as SMRT Link has it, and what smrtshare should make of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedProject {
    /// SMRT Link id.
    pub id: i64,
    /// SMRT Link name.
    pub name: String,
    /// The staged directory's name (`Project {id}: {name}`).
    pub directory: String,
    /// Logins that should hold a rule (every member but owners).
    pub readers: BTreeSet<String>,
    /// Dataset XML paths SMRT Link lists in the project.
    pub dataset_xmls: BTreeSet<PathBuf>,
    /// The project's analysis jobs, by id.
    pub jobs: BTreeMap<i64, ExpectedJob>,
}

/// One analysis job of a project as SMRT Link has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedJob {
    /// SMRT Link's state (`SUCCESSFUL`, `RUNNING`, `FAILED`, ...).
    pub state: String,
    /// Every file of its datastore: a staged file of the job links one of these.
    pub outputs: BTreeSet<PathBuf>,
    /// The datastore's BAM files (`PacBio.FileTypes.bam`): what a user downloads, so each must
    /// be hard-linked into the job's directory once the job is SUCCESSFUL.
    pub bams: BTreeSet<PathBuf>,
}

impl ExpectedJob {
    /// Staged once SUCCESSFUL; no other state stages anything.
    pub fn staged(&self) -> bool {
        self.state == "SUCCESSFUL"
    }
}

/// The directory prefix of job `id` inside its project's directory (`Analysis {id}: {name}`).
fn job_prefix(id: i64) -> String {
    format!("Analysis {id}: ")
}

/// Every project but the General Project, by id.
pub type Expected = BTreeMap<i64, ExpectedProject>;

/// Reads SMRT Link's state through the stand-in's admin API.
pub async fn expected(stack: &Stack) -> anyhow::Result<Expected> {
    let state = stack.smrtlink_admin().state().await?;
    let mut jobs: BTreeMap<i64, BTreeMap<i64, ExpectedJob>> = BTreeMap::new();
    for entry in state["jobs"].as_array().into_iter().flatten() {
        let job = &entry["job"];
        let (Some(id), Some(project)) = (job["id"].as_i64(), job["projectId"].as_i64()) else {
            bail!("a job without id or projectId in the stand-in's state: {job}");
        };
        let files = entry["datastore"].as_array().into_iter().flatten();
        let mut outputs = BTreeSet::new();
        let mut bams = BTreeSet::new();
        for file in files {
            let Some(path) = file["path"].as_str().map(PathBuf::from) else {
                continue;
            };
            if file["fileTypeId"] == "PacBio.FileTypes.bam" {
                bams.insert(path.clone());
            }
            outputs.insert(path);
        }
        jobs.entry(project).or_default().insert(
            id,
            ExpectedJob {
                state: job["state"].as_str().unwrap_or_default().to_owned(),
                outputs,
                bams,
            },
        );
    }
    let mut out = Expected::new();
    for project in state["projects"]
        .as_array()
        .context("no projects in the stand-in's state")?
    {
        let id = project["id"].as_i64().context("project without id")?;
        if id == 1 || project["isActive"] == Value::Bool(false) {
            continue;
        }
        let name = project["name"].as_str().unwrap_or_default().to_owned();
        let readers = project["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] != "OWNER")
            .filter_map(|m| m["login"].as_str().map(str::to_owned))
            .collect();
        let dataset_xmls = project["datasets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["path"].as_str().map(PathBuf::from))
            .collect();
        out.insert(
            id,
            ExpectedProject {
                id,
                directory: format!("Project {id}: {name}"),
                name,
                readers,
                dataset_xmls,
                jobs: jobs.remove(&id).unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// The BAM files a dataset XML names (`ResourceId="…bam"`, relative to the XML's directory):
/// what a user downloads, so each must be hard-linked into the project's directory.
pub fn bam_files(xml: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(xml).unwrap_or_default();
    let base = xml.parent().unwrap_or(Path::new("/"));
    text.split("ResourceId=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|id| id.ends_with(".bam"))
        .map(|id| base.join(id))
        .collect()
}

/// Regular files under `dir` (recursively), with their metadata.
fn files_under(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                out.push((entry.path(), meta));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The "well" directory a dataset XML belongs to (`…/<run>/<well>/pb_formats/x.xml` → `…/<well>`):
/// every file staged for the dataset is a hard link to a file below it.
fn well_dir(xml: &Path) -> PathBuf {
    xml.parent()
        .and_then(Path::parent)
        .map_or_else(|| xml.to_path_buf(), Path::to_path_buf)
}

/// Everything that differs between the expectation and the world, as readable lines: the
/// directories under the staging root, the hard links inside them, the rules smrtshare's
/// Globus client holds, and changes still in progress. `foreign` lists files people put into
/// the tree: they must still be there and are not counted as staged.
pub async fn differences(
    stack: &Stack,
    expected: &Expected,
    foreign: &[PathBuf],
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let root = stack.root();

    // Source files by inode.
    let sources: HashMap<(u64, u64), PathBuf> = files_under(stack.data_root())
        .into_iter()
        .map(|(path, meta)| ((meta.dev(), meta.ino()), path))
        .collect();

    // Project directories.
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            present.insert(name);
        }
    }
    let wanted: BTreeSet<String> = expected.values().map(|p| p.directory.clone()).collect();
    for name in present.difference(&wanted) {
        // A removed project's directory may stay only to hold files people put there.
        let stray: Vec<PathBuf> = files_under(&root.join(name))
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !foreign.contains(p))
            .collect();
        if !stray.is_empty() || !foreign.iter().any(|f| f.starts_with(root.join(name))) {
            problems.push(format!(
                "unexpected directory {name:?} under the staging root (files: {stray:?})"
            ));
        }
    }
    for name in wanted.difference(&present) {
        problems.push(format!("missing project directory {name:?}"));
    }

    // Hard links inside each expected project directory.
    for project in expected.values() {
        let dir = root.join(&project.directory);
        if !dir.is_dir() {
            continue;
        }
        let mut staged = files_under(&dir);
        // Each job's directory: only a SUCCESSFUL job has one, holding its BAMs and nothing but
        // links to its own outputs.
        let job_dirs: BTreeMap<String, PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(name, path)| name.starts_with("Analysis ") && path.is_dir())
            .collect();
        for (id, job) in &project.jobs {
            let prefix = job_prefix(*id);
            let found: Vec<&PathBuf> = job_dirs
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(_, path)| path)
                .collect();
            let [job_dir] = found.as_slice() else {
                if job.staged() || found.len() > 1 {
                    problems.push(format!(
                        "project {}: job {id} ({}) has {} directories, wants {}",
                        project.id,
                        job.state,
                        found.len(),
                        u8::from(job.staged())
                    ));
                }
                continue;
            };
            if !job.staged() {
                // A job that is not (yet) final stages nothing; a failed one never does.
                problems.push(format!(
                    "project {}: job {id} is {} but has {}",
                    project.id,
                    job.state,
                    job_dir.display()
                ));
                continue;
            }
            let linked = files_under(job_dir);
            let inodes: BTreeSet<(u64, u64)> =
                linked.iter().map(|(_, m)| (m.dev(), m.ino())).collect();
            for bam in &job.bams {
                match std::fs::metadata(bam) {
                    Ok(meta) if inodes.contains(&(meta.dev(), meta.ino())) => {}
                    Ok(_) => problems.push(format!(
                        "project {}: {} (of job {id}) is not hard-linked into {}",
                        project.id,
                        bam.display(),
                        job_dir.display()
                    )),
                    Err(e) => problems.push(format!("cannot stat {}: {e}", bam.display())),
                }
            }
            for (path, meta) in &linked {
                if foreign.contains(path) {
                    continue;
                }
                let source = sources.get(&(meta.dev(), meta.ino()));
                if !source.is_some_and(|s| job.outputs.contains(s)) {
                    problems.push(format!(
                        "project {}: {} is not a hard link to an output of job {id} (links {source:?})",
                        project.id,
                        path.display()
                    ));
                }
            }
            staged.retain(|(path, _)| !path.starts_with(job_dir));
        }
        let inodes: BTreeSet<(u64, u64)> = staged.iter().map(|(_, m)| (m.dev(), m.ino())).collect();
        for xml in &project.dataset_xmls {
            for bam in bam_files(xml) {
                match std::fs::metadata(&bam) {
                    Ok(meta) if inodes.contains(&(meta.dev(), meta.ino())) => {}
                    Ok(_) => problems.push(format!(
                        "project {}: {} (of {}) is not hard-linked into {:?}",
                        project.id,
                        bam.display(),
                        xml.display(),
                        project.directory
                    )),
                    Err(e) => problems.push(format!("cannot stat {}: {e}", bam.display())),
                }
            }
        }
        let wells: Vec<PathBuf> = project.dataset_xmls.iter().map(|x| well_dir(x)).collect();
        for (path, meta) in &staged {
            if foreign.contains(path) {
                continue;
            }
            match sources.get(&(meta.dev(), meta.ino())) {
                None => problems.push(format!(
                    "project {}: {} is not a hard link to a dataset file",
                    project.id,
                    path.display()
                )),
                Some(source) if !wells.iter().any(|w| source.starts_with(w)) => {
                    problems.push(format!(
                        "project {}: {} links {}, which belongs to none of its datasets",
                        project.id,
                        path.display(),
                        source.display()
                    ));
                }
                Some(_) => {}
            }
        }
    }

    // Files people put into the tree survive.
    for file in foreign {
        if !file.is_file() {
            problems.push(format!("the user's file {} is gone", file.display()));
        }
    }

    // Rules smrtshare made at Globus.
    let ours = format!("client:{GLOBUS_CLIENT_ID}");
    let held_list: Vec<(String, String)> = stack
        .globus()
        .rules()
        .await?
        .into_iter()
        .filter(|r| r.made_by == ours)
        .map(|r| (r.username, r.path))
        .collect();
    let held: BTreeSet<(String, String)> = held_list.iter().cloned().collect();
    if held.len() != held_list.len() {
        let mut seen = BTreeSet::new();
        let twice: Vec<&(String, String)> = held_list.iter().filter(|r| !seen.insert(*r)).collect();
        problems.push(format!("duplicate rules at Globus: {twice:?}"));
    }
    let granted: BTreeSet<(String, String)> = expected
        .values()
        .flat_map(|p| {
            p.readers.iter().map(move |login| {
                (
                    format!("{login}@{USERNAME_DOMAIN}"),
                    format!("/{}/", p.directory),
                )
            })
        })
        .collect();
    for (user, path) in held.difference(&granted) {
        problems.push(format!("unexpected rule at Globus: {user} on {path:?}"));
    }
    for (user, path) in granted.difference(&held) {
        problems.push(format!("missing rule at Globus: {user} on {path:?}"));
    }

    // Changes still in progress.
    let in_progress = changes(stack, pb::ChangeStatus::InProgress).await?;
    if !in_progress.is_empty() {
        let ids: Vec<i64> = in_progress.iter().map(|c| c.change_id).collect();
        problems.push(format!("changes still in progress: {ids:?}"));
    }
    Ok(problems)
}

/// Every change in `status` (every change for `Unspecified`), paging through ListChanges.
pub async fn changes(stack: &Stack, status: pb::ChangeStatus) -> anyhow::Result<Vec<pb::Change>> {
    let mut client = stack.coordinator()?;
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_changes(pb::ListChangesRequest {
                project_id: 0,
                status: status as i32,
                page_size: 500,
                page_token: token,
            })
            .await?
            .into_inner();
        out.extend(page.changes);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Waits until SMRT Link's state (read afresh each round) is what the tree, the rules and the
/// coordinator show; answers that state. Fails with the remaining differences after `timeout`.
pub async fn wait_converged(
    stack: &Stack,
    foreign: &[PathBuf],
    timeout: Duration,
) -> anyhow::Result<Expected> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let expected = expected(stack).await?;
        let problems = match differences(stack, &expected, foreign).await {
            Ok(problems) => problems,
            Err(error) => vec![format!("cannot read the world: {error:#}")],
        };
        if problems.is_empty() {
            return Ok(expected);
        }
        if reported.elapsed() > Duration::from_secs(5) {
            reported = Instant::now();
            eprintln!(
                "not converged yet after {:?}: {}",
                started.elapsed(),
                problems.join("; ")
            );
        }
        if started.elapsed() > timeout {
            bail!(
                "not converged after {timeout:?}:\n  {}",
                problems.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// True for OK, PARTIAL and FAILED.
pub fn is_final(change: &pb::Change) -> bool {
    change.status != pb::ChangeStatus::InProgress as i32
        && change.status != pb::ChangeStatus::Unspecified as i32
}

/// Polls GetChange until the change is final; answers it.
pub async fn wait_change_final(
    stack: &Stack,
    change_id: i64,
    timeout: Duration,
) -> anyhow::Result<pb::Change> {
    let mut client = stack.coordinator()?;
    let started = Instant::now();
    loop {
        let change = client
            .get_change(pb::GetChangeRequest { change_id })
            .await?
            .into_inner()
            .change
            .context("GetChange answered no change")?;
        if is_final(&change) {
            return Ok(change);
        }
        if started.elapsed() > timeout {
            bail!("change {change_id} is not final after {timeout:?}: {change:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
