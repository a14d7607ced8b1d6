//! Removing dataset directories and projects (blocking). A dataset directory holding only what
//! smrtshare staged is renamed into the work area first and emptied there, so users never see it
//! half-removed; one holding entries others added is emptied of smrtshare's entries in place and
//! kept. A project directory goes when nothing else is left in it. Whatever is kept has its marker
//! retired, so it is not taken for a staged directory again (until an apply adopts it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;
use uuid::Uuid;

use crate::apply::Ctx;
use crate::dataset::{Entries, split};
use crate::fs::{self, Ops, Tree, describe};
use crate::marker::Marker;
use crate::model::{
    ActionKind, DatasetRecord, EntryRecord, ProjectId, ProjectRecord, RemoveReport, join,
};
use crate::probe::{Probe, probe_project};
use crate::report::{Act, Report};

/// Most foreign paths listed in an answer.
pub const MAX_FOREIGN_PATHS: usize = 1000;

/// A removal's result: the report and the records to store.
#[derive(Debug)]
pub struct Output {
    /// What was done.
    pub report: RemoveReport,
    /// New records (`None` inside: the project has no records any more); `None` when unchanged.
    pub change: Option<(ProjectId, Option<ProjectRecord>)>,
}

/// Removes what smrtshare staged for project `p`. Blocking.
pub fn remove_project(
    ctx: &Ctx<'_>,
    p: ProjectId,
    record: Option<Arc<ProjectRecord>>,
    dry: bool,
    now: i64,
) -> Result<Output, String> {
    let ops = Ops::new(ctx.tree);
    let mut report = Report::new(&ops, dry);
    let mut foreign = Vec::new();
    let Some(record) = record else {
        return Ok(Output {
            report: finish(p, dry, report, true, foreign),
            change: None,
        });
    };
    let root = ctx.tree.root();
    let pfd = match probe_project(root, &record.directory, p)? {
        Probe::Found(fd, _) => fd,
        Probe::Missing | Probe::Foreign(_) => {
            let change = (!dry).then_some((p, None));
            return Ok(Output {
                report: finish(p, dry, report, true, foreign),
                change,
            });
        }
    };
    let mut remaining: BTreeMap<uuid::Uuid, DatasetRecord> = BTreeMap::new();
    let mut emptied = Vec::new();
    for (uuid, d) in &record.datasets {
        let removal = remove_dataset(
            &mut report,
            ctx.tree,
            pfd.as_fd(),
            &record.directory,
            &d.directory,
            *uuid,
            &d.entries,
        );
        if removal.foreign.is_empty() && removal.error.is_none() {
            emptied.push(d.directory.clone());
        }
        foreign.extend(removal.foreign);
        if removal.error.is_some() {
            remaining.insert(
                *uuid,
                DatasetRecord {
                    entries: Arc::new(removal.remaining),
                    ..d.clone()
                },
            );
        }
    }
    if !remaining.is_empty() {
        let mut left = (*record).clone();
        left.datasets = remaining;
        left.updated_at = now;
        let change = (!dry).then_some((p, Some(left)));
        return Ok(Output {
            report: finish(p, dry, report, false, foreign),
            change,
        });
    }
    let dataset_dirs: Vec<&str> = record
        .datasets
        .values()
        .map(|d| d.directory.as_str())
        .collect();
    let left: Vec<fs::Item> = fs::list(pfd.as_fd())
        .map_err(|e| format!("{}: {}", record.directory, fs::describe(e)))?
        .into_iter()
        .filter(|item| !(dry && item.utf8().is_some_and(|n| emptied.iter().any(|e| e == n))))
        .collect();
    let removed = if left.is_empty() {
        let act = Act::new(ActionKind::RemoveDirectory, record.directory.clone());
        report
            .act(act, |ops| ops.rmdir(root, &record.directory))
            .is_ok()
    } else {
        for item in &left {
            let name = item.name.to_string_lossy();
            if !dataset_dirs.contains(&name.as_ref()) {
                foreign.push(join(&[&record.directory, &name]));
            }
        }
        let act = Act::new(ActionKind::KeepForeign, record.directory.clone());
        let retired = Marker::Project(p).retired();
        report
            .act(act, |ops| ops.set_marker(pfd.as_fd(), &retired))
            .is_ok()
    };
    let change = (!dry && removed).then_some((p, None));
    Ok(Output {
        report: finish(p, dry, report, removed, foreign),
        change,
    })
}

fn finish(
    project: ProjectId,
    dry_run: bool,
    report: Report<'_, '_>,
    removed: bool,
    mut foreign_paths: Vec<String>,
) -> RemoveReport {
    if foreign_paths.len() > MAX_FOREIGN_PATHS {
        tracing::info!(
            project = project.get(),
            foreign = foreign_paths.len(),
            "more foreign paths than listed in the answer"
        );
        foreign_paths.truncate(MAX_FOREIGN_PATHS);
    }
    let mutating_calls = report.ops().count();
    RemoveReport {
        project,
        dry_run,
        actions: report.finish(),
        removed,
        foreign_paths,
        mutating_calls,
    }
}

/// What removing a dataset directory found.
#[derive(Debug, Default)]
pub struct Removal {
    /// On failure, the entries still recorded (the dataset stays recorded with them). Without a
    /// failure the dataset's record goes.
    pub remaining: Entries,
    /// Paths of entries others added, left in place.
    pub foreign: Vec<String>,
    /// The failure, if any.
    pub error: Option<String>,
}

struct Scan {
    files: Vec<String>,
    dirs: Vec<String>,
    foreign: Vec<String>,
    subs: HashMap<String, OwnedFd>,
}

fn scan(top: BorrowedFd<'_>, recorded: &Entries) -> fs::Result<Scan> {
    fn walk(
        fd: BorrowedFd<'_>,
        prefix: &str,
        recorded: &Entries,
        out: &mut Scan,
    ) -> fs::Result<()> {
        for item in fs::list(fd)? {
            let Some(name) = item.utf8() else {
                out.foreign
                    .push(join(&[prefix, &item.name.to_string_lossy()]));
                continue;
            };
            let path = join(&[prefix, name]);
            match recorded.get(&path) {
                Some(EntryRecord::Dir) => match fs::open_dir(fd, name) {
                    Ok(sub) => {
                        walk(sub.as_fd(), &path, recorded, out)?;
                        out.subs.insert(path.clone(), sub);
                        out.dirs.push(path);
                    }
                    Err(_) => out.foreign.push(path),
                },
                Some(EntryRecord::File(r)) => match fs::lstat_at(fd, name) {
                    Ok(m) if m.kind == FileType::RegularFile && m.same_file(r.dev, r.ino) => {
                        out.files.push(path)
                    }
                    _ => out.foreign.push(path),
                },
                None => out.foreign.push(path),
            }
        }
        Ok(())
    }
    let mut out = Scan {
        files: Vec::new(),
        dirs: Vec::new(),
        foreign: Vec::new(),
        subs: HashMap::new(),
    };
    walk(top, "", recorded, &mut out)?;
    Ok(out)
}

/// Removes what smrtshare staged in dataset directory `name` of the project directory. A
/// directory holding only smrtshare's entries is renamed into the work area first and emptied
/// there (users never see it half-removed); one holding entries others added is emptied of
/// smrtshare's entries in place and kept, with its marker retired.
pub fn remove_dataset(
    report: &mut Report<'_, '_>,
    tree: &Tree,
    project: BorrowedFd<'_>,
    project_rel: &str,
    name: &str,
    uuid: Uuid,
    recorded: &Entries,
) -> Removal {
    let rel = join(&[project_rel, name]);
    let top = match fs::lstat_at(project, name) {
        Ok(meta) if meta.kind == FileType::Directory => match fs::open_dir(project, name) {
            Ok(fd) => fd,
            Err(e) => {
                return Removal {
                    remaining: recorded.clone(),
                    error: Some(format!("{rel}: {}", describe(e))),
                    ..Removal::default()
                };
            }
        },
        Ok(_) | Err(Errno::NOENT) => return Removal::default(),
        Err(e) => {
            return Removal {
                remaining: recorded.clone(),
                error: Some(format!("{rel}: {}", describe(e))),
                ..Removal::default()
            };
        }
    };
    match fs::read_marker(top.as_fd()) {
        Ok(Some(Marker::Dataset { uuid: u, .. })) if u == uuid => {}
        _ => return Removal::default(),
    }
    let mut found = match scan(top.as_fd(), recorded) {
        Ok(found) => found,
        Err(e) => {
            return Removal {
                remaining: recorded.clone(),
                error: Some(format!("{rel}: {}", describe(e))),
                ..Removal::default()
            };
        }
    };
    let mut removal = Removal {
        remaining: recorded.clone(),
        ..Removal::default()
    };
    let work_name = tree.work_name("remove");
    let renamed_out = found.foreign.is_empty()
        && !report.dry()
        && report
            .ops()
            .rename_noreplace(project, name, tree.work(), &work_name)
            .is_ok();
    let result = (|| {
        for path in &found.files {
            let (parent_rel, leaf) = split(path);
            let parent = if parent_rel.is_empty() {
                Some(top.as_fd())
            } else {
                found.subs.get(parent_rel).map(|fd| fd.as_fd())
            };
            report.act(
                Act::new(ActionKind::UnlinkFile, join(&[&rel, path])).dataset(uuid),
                |ops| ops.unlink(parent.ok_or(Errno::BADF)?, leaf),
            )?;
            removal.remaining.remove(path);
        }
        for path in &found.dirs {
            let (parent_rel, leaf) = split(path);
            let parent = if parent_rel.is_empty() {
                Some(top.as_fd())
            } else {
                found.subs.get(parent_rel).map(|fd| fd.as_fd())
            };
            let sub = found.subs.get(path).map(|fd| fd.as_fd());
            let inside = format!("{path}/");
            if !found.foreign.iter().any(|f| f.starts_with(&inside)) {
                report.act(
                    Act::new(ActionKind::RemoveDirectory, join(&[&rel, path])).dataset(uuid),
                    |ops| ops.rmdir(parent.ok_or(Errno::BADF)?, leaf),
                )?;
            } else {
                report.act(
                    Act::new(ActionKind::KeepForeign, join(&[&rel, path])).dataset(uuid),
                    |ops| ops.set_marker(sub.ok_or(Errno::BADF)?, &Marker::Part(uuid).retired()),
                )?;
            }
            removal.remaining.remove(path);
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = result {
        if renamed_out {
            // Out of sight already: what is left goes with the next start's sweep.
            tracing::warn!(
                path = rel,
                error = e,
                "removal failed after the directory left the tree; the sweep at the next start finishes it"
            );
            removal.remaining.clear();
        }
        removal.error = Some(e);
        return removal;
    }
    let act = Act::new(ActionKind::RemoveDirectory, rel.clone()).dataset(uuid);
    if renamed_out {
        match report.ops().rmdir(tree.work(), &work_name) {
            Ok(()) => report.note(act),
            Err(_) => {
                // Someone added a file in the instant before the rename: put the directory back.
                let back = put_back(report.ops(), tree, &work_name, project, name);
                if let Ok(Some(marker)) = fs::read_marker(top.as_fd()) {
                    let _ = report.ops().set_marker(top.as_fd(), &marker.retired());
                }
                found.foreign = fs::list(top.as_fd())
                    .map(|l| {
                        l.iter()
                            .map(|i| join(&[project_rel, &back, &i.name.to_string_lossy()]))
                            .collect()
                    })
                    .unwrap_or_default();
                report.note(
                    Act::new(ActionKind::KeepForeign, join(&[project_rel, &back])).dataset(uuid),
                );
            }
        }
    } else if found.foreign.is_empty() {
        report
            .act(act, |ops| ops.rmdir(project, name))
            .map(|_| ())
            .unwrap_or_else(|e| removal.error = Some(e));
    } else {
        let marker = fs::read_marker(top.as_fd())
            .ok()
            .flatten()
            .map(Marker::retired);
        let keep = Act::new(ActionKind::KeepForeign, rel.clone()).dataset(uuid);
        if let Err(e) = report.act(keep, |ops| match &marker {
            Some(m) => ops.set_marker(top.as_fd(), m),
            None => Ok(()),
        }) {
            removal.error = Some(e);
        }
        found.foreign = found.foreign.iter().map(|p| join(&[&rel, p])).collect();
    }
    removal.foreign = found.foreign;
    removal
}

/// Renames a work item back into the project directory, under its old name when free.
fn put_back(
    ops: &Ops<'_>,
    tree: &Tree,
    work_name: &str,
    project: BorrowedFd<'_>,
    name: &str,
) -> String {
    for attempt in 0..100 {
        let candidate = if attempt == 0 {
            name.to_owned()
        } else {
            format!("{name} (kept {attempt})")
        };
        match ops.rename_noreplace(tree.work(), work_name, project, &candidate) {
            Ok(()) => return candidate,
            Err(Errno::EXIST) => continue,
            Err(e) => {
                tracing::error!(work_item = work_name, error = %describe(e), "could not put a directory holding others' files back; it stays in the work area");
                return format!("{}/{work_name}", fs::HIDDEN_DIR);
            }
        }
    }
    format!("{}/{work_name}", fs::HIDDEN_DIR)
}
