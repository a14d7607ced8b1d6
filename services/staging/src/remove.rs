//! Removing a project (blocking): each dataset and analysis job directory as [`crate::removal`]
//! says, then the
//! project directory when nothing else is left in it. Whatever is kept has its marker retired, so
//! it is not taken for a staged directory again (until an apply adopts it).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustix::fd::AsFd;

use crate::apply::Ctx;
use crate::fs::{self, Ops};
use crate::marker::Marker;
use crate::model::{ActionKind, ItemId, ItemRecord, ProjectId, ProjectRecord, RemoveReport, join};
use crate::probe::{Probe, probe_project};
use crate::removal::remove_item;
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
    let mut remaining: BTreeMap<ItemId, ItemRecord> = BTreeMap::new();
    let mut emptied = Vec::new();
    for (item, d) in &record.items {
        let removal = remove_item(
            &mut report,
            ctx.tree,
            p,
            pfd.as_fd(),
            &record.directory,
            &d.directory,
            *item,
            &d.entries,
        );
        if removal.foreign.is_empty() && removal.error.is_none() {
            emptied.push(d.directory.clone());
        }
        foreign.extend(removal.foreign);
        if removal.error.is_some() {
            remaining.insert(
                *item,
                ItemRecord {
                    entries: Arc::new(removal.remaining),
                    ..d.clone()
                },
            );
        }
    }
    if !remaining.is_empty() {
        let mut left = (*record).clone();
        left.items = remaining;
        left.updated_at = now;
        let change = (!dry).then_some((p, Some(left)));
        return Ok(Output {
            report: finish(p, dry, report, false, foreign),
            change,
        });
    }
    let item_dirs: Vec<&str> = record
        .items
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
            if !item_dirs.contains(&name.as_ref()) {
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
    let foreign_total = foreign_paths.len() as u64;
    foreign_paths.truncate(MAX_FOREIGN_PATHS);
    let mutating_calls = report.ops().count();
    RemoveReport {
        project,
        dry_run,
        actions: report.finish(),
        removed,
        foreign_paths,
        foreign_total,
        mutating_calls,
    }
}
