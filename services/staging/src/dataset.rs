//! Work on one dataset directory: build a new one in the work area and publish it, or bring an
//! existing one up to date in place (removal is in [`crate::remove`]).
//!
//! An existing directory is first inspected completely (reads only); when anything in the way was
//! not staged by smrtshare (a file others added under a wanted name, a planted symlink), the
//! dataset fails with the reason and nothing in it is touched. Only then are the changes made, in
//! an order that never leaves a wanted file missing: stale links are replaced by a rename over
//! them, new sub-directories arrive complete from the work area.
//!
//! The inspection reads each directory once (`getdents`: names, types, inode numbers) and looks
//! closer (`lstat`) only at what the listing does not settle: an entry in place costs no system
//! call of its own.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::fault::{Fault, Faults};
use crate::fs::{self, Meta, Ops, Tree, describe};
use crate::marker::Marker;
use crate::model::{ActionKind, EntryRecord, FileRecord, ItemId, join};
use crate::mounts;
use crate::report::{Act, Failure, Report};
use crate::resolve::{Layout, Source, Want};

/// Entries of a dataset directory, as recorded.
pub type Entries = BTreeMap<String, EntryRecord>;

/// Splits a relative path into its directory and its last component.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The record of a file linked to `source`, of `size` bytes.
pub fn file_record(source: &Source, size: u64) -> EntryRecord {
    EntryRecord::File(FileRecord {
        source: source.path.clone(),
        dev: source.dev,
        ino: source.ino,
        size,
    })
}

/// True when `recorded` already says that `path` is a link to `source`.
fn recorded_as(recorded: Option<&EntryRecord>, source: &Source) -> bool {
    matches!(recorded, Some(EntryRecord::File(r)) if r.dev == source.dev && r.ino == source.ino && r.source == source.path)
}

/// Looks keys up in a map sorted by path, the keys coming in the map's order (or in reverse):
/// one comparison per step of a walk through the map instead of a search per key. The layout
/// and the records are both sorted by path, and an unchanged re-apply looks up every file.
struct Cursor<I: Iterator> {
    iter: std::iter::Peekable<I>,
    /// How a key the walk has not reached yet compares with the keys still to come.
    passed: Ordering,
}

impl<'a, V: 'a, I: Iterator<Item = (&'a String, &'a V)>> Cursor<I> {
    fn new(iter: I, passed: Ordering) -> Self {
        Self {
            iter: iter.peekable(),
            passed,
        }
    }

    /// The value under `key`; each key asked must come after the one asked before.
    fn get(&mut self, key: &str) -> Option<&'a V> {
        while let Some((k, v)) = self.iter.peek() {
            match k.as_str().cmp(key) {
                Ordering::Equal => return Some(*v),
                o if o == self.passed => {
                    self.iter.next();
                }
                _ => return None,
            }
        }
        None
    }
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Unknown => "entry",
    }
}

/// Links `source` as `name` in `dir` and checks that the new link is the very file that was
/// checked (a source swapped for a symlink or another file in between is unlinked again).
/// Returns what the new link is; a link refused with `EXDEV` says which mounts are apart.
pub fn link_checked(
    ops: &Ops<'_>,
    layout: &Layout,
    source: &Source,
    dir: BorrowedFd<'_>,
    name: &str,
) -> Result<Meta, Failure> {
    let from = layout.dir_of(source).ok_or(Errno::BADF)?;
    if let Err(errno) = ops.link(from, source.name(), dir, name) {
        let detail = match (errno, mounts::place(from), mounts::place(dir)) {
            (Errno::XDEV, Ok(from), Ok(to)) => mounts::apart(from, to),
            _ => None,
        };
        return Err(Failure { errno, detail });
    }
    match fs::lstat_at(dir, name) {
        Ok(meta)
            if meta.kind == FileType::RegularFile && meta.same_file(source.dev, source.ino) =>
        {
            Ok(meta)
        }
        _ => {
            let _ = ops.unlink(dir, name);
            Err(Errno::STALE.into())
        }
    }
}

fn link_act(path: String, source: &Source, item: ItemId) -> Act {
    Act::new(ActionKind::LinkFile, path)
        .source(source.path.clone())
        .item(item)
}

/// The size recorded for a new link: what the link is, or (dry run) what the source was.
fn linked_size(meta: Option<Meta>, source: &Source) -> u64 {
    meta.map(|m| m.size).or(source.size).unwrap_or(0)
}

/// The marker of a sub-directory of `item`'s directory; `EINVAL` for an analysis job, whose
/// outputs lie flat in its directory.
fn part(item: ItemId) -> Result<Marker, Errno> {
    Marker::part_of(item).ok_or(Errno::INVAL)
}

/// Removes a directory tree this operation made in the work area.
pub fn discard(ops: &Ops<'_>, parent: BorrowedFd<'_>, name: &str) {
    fn inner(ops: &Ops<'_>, parent: BorrowedFd<'_>, name: &str, depth: usize) -> fs::Result<()> {
        let fd = fs::open_dir(parent, name)?;
        for item in fs::list(fd.as_fd())? {
            let Some(child) = item.utf8() else { continue };
            if depth < 8
                && fs::lstat_at(fd.as_fd(), child).map(|m| m.kind) == Ok(FileType::Directory)
            {
                inner(ops, fd.as_fd(), child, depth + 1)?;
            } else {
                ops.unlink(fd.as_fd(), child)?;
            }
        }
        ops.rmdir(parent, name)
    }
    if let Err(e) = inner(ops, parent, name, 0) {
        tracing::warn!(work_item = name, error = %describe(e), "could not discard a work item; it is swept at the next start");
    }
}

/// Builds a new dataset directory in the work area and publishes it as `name` in the project
/// directory (`None` only in a dry run of a project that does not exist yet). Returns the entries
/// made; on failure nothing is left visible.
#[allow(clippy::too_many_arguments)]
pub fn build(
    report: &mut Report<'_, '_>,
    tree: &Tree,
    project: Option<BorrowedFd<'_>>,
    project_rel: &str,
    name: &str,
    item: ItemId,
    marker: &Marker,
    layout: &Layout,
) -> Result<Entries, Fault> {
    let rel = join(&[project_rel, name]);
    let work_name = tree.work_name(&item.work_tag());
    let act = Act::new(ActionKind::CreateDirectory, rel.clone()).item(item);
    let root = report.act(act, |ops| ops.mkdir(tree.work(), &work_name, marker))?;
    let mut dirs: HashMap<String, OwnedFd> = HashMap::new();
    let mut entries = Entries::new();
    let result = (|| {
        for (path, want) in layout.entries.iter() {
            let (parent_rel, leaf) = split(path);
            let parent = if parent_rel.is_empty() {
                root.as_ref().map(|fd| fd.as_fd())
            } else {
                dirs.get(parent_rel).map(|fd| fd.as_fd())
            };
            let target = join(&[&rel, path]);
            match want {
                Want::Dir => {
                    let act = Act::new(ActionKind::CreateDirectory, target).item(item);
                    if let Some(fd) = report.act(act, |ops| {
                        ops.mkdir(parent.ok_or(Errno::BADF)?, leaf, &part(item)?)
                    })? {
                        dirs.insert(path.clone(), fd);
                    }
                    entries.insert(path.clone(), EntryRecord::Dir);
                }
                Want::File(source) => {
                    let meta = report.act(link_act(target, source, item), |ops| {
                        link_checked(ops, layout, source, parent.ok_or(Errno::BADF)?, leaf)
                    })?;
                    entries.insert(path.clone(), file_record(source, linked_size(meta, source)));
                }
            }
        }
        let act = Act::new(ActionKind::PublishDirectory, rel.clone())
            .from(Tree::work_rel(&work_name))
            .item(item);
        report.act(act, |ops| {
            ops.rename_noreplace(tree.work(), &work_name, project.ok_or(Errno::BADF)?, name)
        })?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(entries),
        Err(e) => {
            if !report.dry() {
                discard(report.ops(), tree.work(), &work_name);
            }
            Err(e)
        }
    }
}

/// What an existing dataset directory needs.
#[derive(Debug, Default)]
struct Needs {
    /// Wanted paths held by something smrtshare did not make, and why.
    conflicts: Vec<(String, Fault)>,
    unlinks: Vec<String>,
    rmdirs: Vec<String>,
    mkdirs: Vec<String>,
    links: Vec<(String, Arc<Source>)>,
    replaces: Vec<(String, Arc<Source>)>,
    modes: Vec<String>,
    marks: Vec<(String, Marker)>,
    /// Entries already right on disk whose record is missing or differs.
    adopt: Vec<(String, EntryRecord)>,
}

impl Needs {
    fn nothing(&self) -> bool {
        self.unlinks.is_empty()
            && self.rmdirs.is_empty()
            && self.mkdirs.is_empty()
            && self.links.is_empty()
            && self.replaces.is_empty()
            && self.modes.is_empty()
            && self.marks.is_empty()
            && self.adopt.is_empty()
    }
}

/// What a directory listing says about a name.
type Listing = HashMap<String, (FileType, u64)>;

/// Opened directories of one dataset directory, by relative path ("" is the dataset directory),
/// and their listings.
struct Dirs<'d> {
    top: BorrowedFd<'d>,
    subs: HashMap<String, OwnedFd>,
    listings: HashMap<String, Option<Listing>>,
}

impl<'d> Dirs<'d> {
    fn get(&self, rel: &str) -> Option<BorrowedFd<'_>> {
        if rel.is_empty() {
            Some(self.top)
        } else {
            self.subs.get(rel).map(|fd| fd.as_fd())
        }
    }

    /// Opens (and keeps) a recorded sub-directory; `None` when it is not there as a directory.
    fn open(&mut self, rel: &str) -> Option<BorrowedFd<'_>> {
        if !rel.is_empty() && !self.subs.contains_key(rel) {
            let fd = fs::open_rel(self.top, rel).ok()?;
            self.subs.insert(rel.to_owned(), fd);
        }
        self.get(rel)
    }

    /// What the listing of directory `rel` says about `name`: `Some(None)` when it is not listed,
    /// `None` when the listing cannot settle it (no listing, or an unknown type).
    fn listed(&mut self, rel: &str, name: &str) -> Option<Option<(FileType, u64)>> {
        if !self.listings.contains_key(rel) {
            // Each directory is listed once, right after it was opened (its offset is 0).
            let listing = self
                .get(rel)
                .and_then(|fd| fs::list_once(fd).ok())
                .map(|items| items.into_iter().map(|(n, k, i)| (n, (k, i))).collect());
            self.listings.insert(rel.to_owned(), listing);
        }
        let listing = self.listings.get(rel)?.as_ref()?;
        match listing.get(name) {
            None => Some(None),
            Some((FileType::Unknown, _)) => None,
            Some(found) => Some(Some(*found)),
        }
    }
}

fn is_ours(recorded: Option<&EntryRecord>, meta: &Meta) -> bool {
    matches!(recorded, Some(EntryRecord::File(r)) if meta.kind == FileType::RegularFile && meta.same_file(r.dev, r.ino))
}

/// An existing dataset directory, opened, with the marker found on it.
#[derive(Debug, Clone, Copy)]
pub struct Existing<'a> {
    /// The directory.
    pub top: BorrowedFd<'a>,
    /// Its path relative to the root.
    pub rel: &'a str,
    /// The marker it carries now.
    pub found: Option<&'a Marker>,
}

/// What is in the way of single files of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InTheWay {
    /// Fails the whole item, and nothing in its directory is touched (a dataset: its files are
    /// staged together or not at all).
    FailsItem,
    /// Fails that file only; the rest is brought up to date (an analysis job's outputs).
    FailsFile,
}

/// Brings an existing dataset (or job) directory to `layout`. Returns the entries it now holds
/// (the very recorded map when nothing changed), the failure if any (then the entries say how far
/// it got), and with [`InTheWay::FailsFile`] the files left out because something smrtshare did
/// not make holds their names.
#[allow(clippy::too_many_arguments)]
pub fn reconcile(
    report: &mut Report<'_, '_>,
    tree: &Tree,
    dir: Existing<'_>,
    item: ItemId,
    marker: &Marker,
    layout: &Layout,
    recorded: &Arc<Entries>,
    in_the_way: InTheWay,
) -> (Arc<Entries>, Result<(), Fault>, Vec<Fault>) {
    let mut dirs = Dirs {
        top: dir.top,
        subs: HashMap::new(),
        listings: HashMap::new(),
    };
    let mut needs = match inspect(tree, &mut dirs, dir, item, marker, layout, recorded) {
        Ok(needs) => needs,
        Err(e) => return (recorded.clone(), Err(e), Vec::new()),
    };
    let conflicts = std::mem::take(&mut needs.conflicts);
    if in_the_way == InTheWay::FailsItem && !conflicts.is_empty() {
        let mut all = Faults::default();
        for (_, conflict) in conflicts {
            all.push(conflict);
        }
        return (recorded.clone(), all.result(), Vec::new());
    }
    // A file left out is not staged here, whatever the records said.
    let stale = conflicts
        .iter()
        .any(|(path, _)| recorded.contains_key(path));
    let faults = conflicts.iter().map(|(_, f)| f.clone()).collect();
    if needs.nothing() && !stale {
        return (recorded.clone(), Ok(()), faults);
    }
    let mut entries: Entries = (**recorded).clone();
    for (path, _) in &conflicts {
        entries.remove(path);
    }
    entries.extend(needs.adopt.iter().cloned());
    let result = carry_out(
        report,
        tree,
        &mut dirs,
        dir.rel,
        item,
        layout,
        needs,
        &mut entries,
    );
    (Arc::new(entries), result, faults)
}

fn inspect(
    tree: &Tree,
    dirs: &mut Dirs<'_>,
    dir: Existing<'_>,
    item: ItemId,
    marker: &Marker,
    layout: &Layout,
    recorded: &Entries,
) -> Result<Needs, Fault> {
    let rel = dir.rel;
    let mut needs = Needs::default();
    let shown = |path: &str| join(&[rel, path]);
    let failed =
        |path: &str, e: Errno| Fault::errno(e, format!("{}: {}", join(&[rel, path]), describe(e)));
    let top = fs::fstat(dirs.top).map_err(|e| failed("", e))?;
    if top.mode != tree.dir_mode() {
        needs.modes.push(String::new());
    }
    if dir.found != Some(marker) {
        needs.marks.push((String::new(), marker.clone()));
    }
    let part = Marker::part_of(item);
    let mut records = Cursor::new(recorded.iter(), Ordering::Less);
    for (path, want) in layout.entries.iter() {
        let record = records.get(path);
        let (parent_rel, leaf) = split(path);
        if dirs.get(parent_rel).is_none() {
            // The parent is to be created: everything below it is too.
            match want {
                Want::Dir => needs.mkdirs.push(path.clone()),
                Want::File(source) => needs.links.push((path.clone(), source.clone())),
            }
            continue;
        }
        // What the listing settles: a file not there, or the very link wanted.
        if let Want::File(source) = want {
            match dirs.listed(parent_rel, leaf) {
                Some(None) => {
                    needs.links.push((path.clone(), source.clone()));
                    continue;
                }
                Some(Some((FileType::RegularFile, ino)))
                    if ino == source.ino
                        && top.dev == source.dev
                        && recorded_as(record, source) =>
                {
                    continue;
                }
                _ => {}
            }
        }
        let Some(parent) = dirs.get(parent_rel) else {
            continue;
        };
        let found = match fs::lstat_at(parent, leaf) {
            Ok(meta) => meta,
            Err(Errno::NOENT) => {
                match want {
                    Want::Dir => needs.mkdirs.push(path.clone()),
                    Want::File(source) => needs.links.push((path.clone(), source.clone())),
                }
                continue;
            }
            Err(e) => return Err(failed(path, e)),
        };
        match want {
            Want::Dir if found.kind == FileType::Directory => {
                let fd = fs::open_dir(parent, leaf).map_err(|e| failed(path, e))?;
                let has = fs::read_marker(fd.as_fd()).map_err(|e| failed(path, e))?;
                let was_recorded = record == Some(&EntryRecord::Dir);
                let Some(part) = &part else {
                    return Err(failed(path, Errno::INVAL));
                };
                let ours = has.as_ref() == Some(part)
                    || has.as_ref() == Some(&part.clone().retired())
                    || (was_recorded && found.ours());
                if !ours {
                    needs.conflicts.push((
                        path.clone(),
                        Fault::permanent(format!(
                            "{}: a directory smrtshare did not create is in the way (left untouched)",
                            shown(path)
                        )),
                    ));
                    continue;
                }
                if has.as_ref() != Some(part) {
                    needs.marks.push((path.clone(), part.clone()));
                }
                if fs::fstat(fd.as_fd()).map(|m| m.mode).unwrap_or(0) != tree.dir_mode() {
                    needs.modes.push(path.clone());
                }
                if !was_recorded {
                    needs.adopt.push((path.clone(), EntryRecord::Dir));
                }
                dirs.subs.insert(path.clone(), fd);
            }
            Want::Dir if is_ours(record, &found) => {
                needs.unlinks.push(path.clone());
                needs.mkdirs.push(path.clone());
            }
            Want::File(source)
                if found.kind == FileType::RegularFile
                    && found.same_file(source.dev, source.ino) =>
            {
                if !recorded_as(record, source) {
                    needs
                        .adopt
                        .push((path.clone(), file_record(source, found.size)));
                }
            }
            Want::File(source) if is_ours(record, &found) => {
                needs.replaces.push((path.clone(), source.clone()))
            }
            _ => needs.conflicts.push((
                path.clone(),
                Fault::permanent(format!(
                    "{}: a {} smrtshare did not stage is in the way (left untouched)",
                    shown(path),
                    kind_name(found.kind)
                )),
            )),
        }
    }
    // Recorded entries no longer wanted, deepest first.
    let mut wants = Cursor::new(layout.entries.iter().rev(), Ordering::Greater);
    for (path, entry) in recorded.iter().rev() {
        let wanted = wants.get(path);
        match entry {
            EntryRecord::File(r) => {
                if wanted.is_some() || needs.unlinks.contains(path) {
                    continue;
                }
                let (parent_rel, leaf) = split(path);
                let Some(parent) = dirs.open(parent_rel) else {
                    continue;
                };
                if let Ok(meta) = fs::lstat_at(parent, leaf)
                    && meta.kind == FileType::RegularFile
                    && meta.same_file(r.dev, r.ino)
                {
                    needs.unlinks.push(path.clone());
                }
            }
            EntryRecord::Dir => {
                if wanted.is_none() && dirs.open(path).is_some() {
                    needs.rmdirs.push(path.clone());
                }
            }
        }
    }
    Ok(needs)
}

#[allow(clippy::too_many_arguments)]
fn carry_out(
    report: &mut Report<'_, '_>,
    tree: &Tree,
    dirs: &mut Dirs<'_>,
    rel: &str,
    item: ItemId,
    layout: &Layout,
    needs: Needs,
    entries: &mut Entries,
) -> Result<(), Fault> {
    let shown = |path: &str| join(&[rel, path]);
    for path in &needs.unlinks {
        let (parent_rel, leaf) = split(path);
        let parent = dirs.open(parent_rel);
        report.act(
            Act::new(ActionKind::UnlinkFile, shown(path)).item(item),
            |ops| ops.unlink(parent.ok_or(Errno::BADF)?, leaf),
        )?;
        entries.remove(path);
    }
    for path in &needs.rmdirs {
        let (parent_rel, leaf) = split(path);
        let holds_others = dirs
            .get(path)
            .map(|fd| fs::list(fd).map(|l| !l.is_empty()).unwrap_or(true))
            .unwrap_or(false);
        if holds_others && !report.dry() {
            let fd = dirs.get(path);
            report.act(
                Act::new(ActionKind::KeepForeign, shown(path)).item(item),
                |ops| ops.set_marker(fd.ok_or(Errno::BADF)?, &part(item)?.retired()),
            )?;
        } else {
            let parent = dirs.get(parent_rel);
            report.act(
                Act::new(ActionKind::RemoveDirectory, shown(path)).item(item),
                |ops| ops.rmdir(parent.ok_or(Errno::BADF)?, leaf),
            )?;
        }
        entries.remove(path);
    }
    for path in &needs.mkdirs {
        let (parent_rel, leaf) = split(path);
        let parent = dirs.get(parent_rel);
        let work_name = tree.work_name(&item.work_tag());
        let act = Act::new(ActionKind::CreateDirectory, shown(path)).item(item);
        let made = report.act(act, |ops| {
            let parent = parent.ok_or(Errno::BADF)?;
            let fd = ops.mkdir(tree.work(), &work_name, &part(item)?)?;
            if let Err(e) = ops.rename_noreplace(tree.work(), &work_name, parent, leaf) {
                let _ = ops.rmdir(tree.work(), &work_name);
                return Err(e);
            }
            Ok(fd)
        })?;
        if let Some(fd) = made {
            dirs.subs.insert(path.clone(), fd);
        }
        entries.insert(path.clone(), EntryRecord::Dir);
    }
    for (path, source) in &needs.links {
        let (parent_rel, leaf) = split(path);
        let parent = dirs.get(parent_rel);
        let meta = report.act(link_act(shown(path), source, item), |ops| {
            link_checked(ops, layout, source, parent.ok_or(Errno::BADF)?, leaf)
        })?;
        entries.insert(path.clone(), file_record(source, linked_size(meta, source)));
    }
    for (path, source) in &needs.replaces {
        let (parent_rel, leaf) = split(path);
        let parent = dirs.get(parent_rel);
        let work_name = tree.work_name("relink");
        let meta = report.act(link_act(shown(path), source, item), |ops| {
            let meta = link_checked(ops, layout, source, tree.work(), &work_name)?;
            ops.rename_over(tree.work(), &work_name, parent.ok_or(Errno::BADF)?, leaf)
                .inspect_err(|_| {
                    let _ = ops.unlink(tree.work(), &work_name);
                })?;
            Ok::<_, Failure>(meta)
        })?;
        entries.insert(path.clone(), file_record(source, linked_size(meta, source)));
    }
    for path in &needs.modes {
        let fd = dirs.get(path);
        report.act(
            Act::new(ActionKind::SetMode, shown(path)).item(item),
            |ops| ops.chmod(fd.ok_or(Errno::BADF)?, tree.dir_mode()),
        )?;
    }
    for (path, marker) in &needs.marks {
        let fd = dirs.get(path);
        report.act(
            Act::new(ActionKind::MarkDirectory, shown(path)).item(item),
            |ops| ops.set_marker(fd.ok_or(Errno::BADF)?, marker),
        )?;
    }
    Ok(())
}
