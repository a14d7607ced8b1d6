//! Removing one dataset directory (blocking): only what smrtshare staged goes, and nothing anyone
//! else put there is lost, moved elsewhere or hidden.
//!
//! 1. Scan: every entry is ours (a recorded link that is still the recorded inode, a recorded
//!    sub-directory staging's user owns) or foreign.
//! 2. Nothing foreign seen: the directory is renamed into the work area, out of sight, and scanned
//!    again there; that second look is final (no user reaches the work area), so whatever arrived
//!    between the first scan and the rename is seen.
//! 3. Ours are unlinked and our sub-directories removed, deepest first; a sub-directory that
//!    holds anything foreign (or refuses `rmdir` because something just arrived) is kept with its
//!    marker retired.
//! 4. The directory itself goes when empty. Otherwise it stays, marker retired, and if it was in
//!    the work area it goes back under its name, or into the project's `smrtshare-recovered/`
//!    when that name was taken meanwhile ([`crate::recover`]).

use std::collections::HashMap;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::dataset::{Entries, split};
use crate::fault::Fault;
use crate::fs::{self, Tree, describe};
use crate::hooks::Point;
use crate::marker::Marker;
use crate::model::{ActionKind, EntryRecord, ItemId, ProjectId, join};
use crate::recover;
use crate::report::{Act, Report};

/// What removing a dataset directory found.
#[derive(Debug, Default)]
pub struct Removal {
    /// What is still recorded: empty when the dataset's record can go. After a failure, the
    /// entries not removed (the dataset stays recorded with them).
    pub remaining: Entries,
    /// Paths (relative to the root) of entries others added, left in place.
    pub foreign: Vec<String>,
    /// The failure, if any.
    pub error: Option<Fault>,
}

/// One look at a dataset directory.
struct Scan {
    /// Our links, by path.
    files: Vec<String>,
    /// Our sub-directories, deepest first.
    dirs: Vec<String>,
    /// Everything else.
    foreign: Vec<String>,
    /// Our sub-directories, opened.
    subs: HashMap<String, OwnedFd>,
}

impl Scan {
    fn parent<'a>(&'a self, top: BorrowedFd<'a>, path: &str) -> Option<BorrowedFd<'a>> {
        let (parent, _) = split(path);
        if parent.is_empty() {
            Some(top)
        } else {
            self.subs.get(parent).map(|fd| fd.as_fd())
        }
    }

    fn holds_foreign(&self, dir: &str) -> bool {
        let inside = format!("{dir}/");
        self.foreign.iter().any(|f| f.starts_with(&inside))
    }
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
                    Ok(sub) if fs::fstat(sub.as_fd()).is_ok_and(|m| m.ours()) => {
                        walk(sub.as_fd(), &path, recorded, out)?;
                        out.subs.insert(path.clone(), sub);
                        out.dirs.push(path);
                    }
                    _ => out.foreign.push(path),
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

/// Removes what smrtshare staged in the directory `name` of a dataset or analysis job (`item`) in
/// project `p`'s directory (`project`, at `project_rel`), which the records say holds `recorded`.
#[allow(clippy::too_many_arguments)]
pub fn remove_item(
    report: &mut Report<'_, '_>,
    tree: &Tree,
    p: ProjectId,
    project: BorrowedFd<'_>,
    project_rel: &str,
    name: &str,
    item: ItemId,
    recorded: &Entries,
) -> Removal {
    let rel = join(&[project_rel, name]);
    let failed = |e: Errno| Removal {
        remaining: recorded.clone(),
        error: Some(Fault::errno(e, format!("{rel}: {}", describe(e)))),
        ..Removal::default()
    };
    let top = match fs::lstat_at(project, name) {
        Ok(meta) if meta.kind == FileType::Directory => match fs::open_dir(project, name) {
            Ok(fd) => fd,
            Err(e) => return failed(e),
        },
        Ok(_) | Err(Errno::NOENT) => return Removal::default(),
        Err(e) => return failed(e),
    };
    match fs::read_marker(top.as_fd()) {
        Ok(Some(m)) if !matches!(m, Marker::Retired(_)) && m.item() == Some(item) => {}
        _ => return Removal::default(),
    }
    let mut found = match scan(top.as_fd(), recorded) {
        Ok(found) => found,
        Err(e) => return failed(e),
    };
    tree.hooks().at(Point::RemovalScanned, &rel);
    let mut out = None;
    if found.foreign.is_empty() && !report.dry() {
        let work_name = tree.work_name(&format!("p{p}-remove"));
        if report
            .ops()
            .rename_noreplace(project, name, tree.work(), &work_name)
            .is_ok()
        {
            out = Some(work_name);
            // Out of sight now: this look is final.
            match scan(top.as_fd(), recorded) {
                Ok(again) => found = again,
                Err(e) => found.foreign.push(format!("(unreadable: {})", describe(e))),
            }
        }
    }
    let mut removal = Removal {
        remaining: recorded.clone(),
        ..Removal::default()
    };
    removal.error = delete_ours(
        report,
        &rel,
        item,
        top.as_fd(),
        &found,
        &mut removal.remaining,
    )
    .err();
    if removal.error.is_none() && found.foreign.is_empty() {
        let act = Act::new(ActionKind::RemoveDirectory, rel.clone()).item(item);
        let gone = match &out {
            Some(work_name) => report.act_unless(act, Errno::NOTEMPTY, |ops| {
                ops.rmdir(tree.work(), work_name)
            }),
            None => report.act_unless(act, Errno::NOTEMPTY, |ops| ops.rmdir(project, name)),
        };
        match gone {
            Ok(Ok(_)) => return removal,
            Ok(Err(_)) => {} // something arrived after the last look: it stays
            Err(e) => removal.error = Some(e),
        }
    }
    // Something stays: others' entries (or ours, after a failure).
    let mut at = rel.clone();
    if let Some(work_name) = &out {
        match recover::put_back(report.ops(), work_name, project, project_rel, name) {
            Ok(back) => at = back,
            Err(e) => {
                tracing::error!(
                    work_item = work_name,
                    path = rel,
                    error = e,
                    "a dataset directory holding files smrtshare did not stage could not be put back; the sweep at the next start retries"
                );
                removal.error.get_or_insert(Fault::passing(format!(
                    "{rel}: it holds files smrtshare did not stage and could not be put back: {e}"
                )));
            }
        }
        if at != rel {
            tracing::warn!(
                path = rel,
                now = at,
                "its name was taken while it was being removed: what others put in it is kept in smrtshare-recovered"
            );
            if !removal.remaining.is_empty() {
                removal.error.get_or_insert(Fault::passing(format!(
                    "{rel}: moved to {at} with links not yet removed"
                )));
                removal.remaining.clear();
            }
        }
    }
    removal.foreign = if report.dry() {
        found.foreign.iter().map(|f| join(&[&at, f])).collect()
    } else {
        // What is left, looked at after the fact: exactly what was kept.
        scan(top.as_fd(), recorded)
            .map(|left| left.foreign.iter().map(|f| join(&[&at, f])).collect())
            .unwrap_or_default()
    };
    if !removal.foreign.is_empty() {
        let keep = Act::new(ActionKind::KeepForeign, at).item(item);
        let marker = fs::read_marker(top.as_fd())
            .ok()
            .flatten()
            .map(Marker::retired);
        if let Err(e) = report.act(keep, |ops| match &marker {
            Some(m) => ops.set_marker(top.as_fd(), m),
            None => Ok(()),
        }) {
            removal.error.get_or_insert(e);
        }
    }
    removal
}

/// Unlinks our links and removes our sub-directories (deepest first); a sub-directory holding
/// anything foreign, or that something entered since the scan, is kept with its marker retired.
fn delete_ours(
    report: &mut Report<'_, '_>,
    rel: &str,
    item: ItemId,
    top: BorrowedFd<'_>,
    found: &Scan,
    remaining: &mut Entries,
) -> Result<(), Fault> {
    for path in &found.files {
        let (parent, (_, leaf)) = (found.parent(top, path), split(path));
        report.act(
            Act::new(ActionKind::UnlinkFile, join(&[rel, path])).item(item),
            |ops| ops.unlink(parent.ok_or(Errno::BADF)?, leaf),
        )?;
        remaining.remove(path);
    }
    for path in &found.dirs {
        let (parent, (_, leaf)) = (found.parent(top, path), split(path));
        let sub = found.subs.get(path).map(|fd| fd.as_fd());
        let act = Act::new(ActionKind::RemoveDirectory, join(&[rel, path])).item(item);
        let kept = found.holds_foreign(path)
            || report
                .act_unless(act, Errno::NOTEMPTY, |ops| {
                    ops.rmdir(parent.ok_or(Errno::BADF)?, leaf)
                })?
                .is_err();
        if kept {
            report.act(
                Act::new(ActionKind::KeepForeign, join(&[rel, path])).item(item),
                |ops| {
                    let part = Marker::part_of(item).ok_or(Errno::INVAL)?;
                    ops.set_marker(sub.ok_or(Errno::BADF)?, &part.retired())
                },
            )?;
        }
        remaining.remove(path);
    }
    Ok(())
}
