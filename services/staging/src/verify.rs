//! Comparing a project's records with the tree (reads only; blocking).

use std::collections::{HashMap, HashSet};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;

use crate::dataset::split;
use crate::fs::{self, Tree, describe};
use crate::marker::Marker;
use crate::model::{Drift, DriftKind, EntryRecord, FileRecord, ItemRecord, ProjectRecord, join};
use crate::probe::{Probe, probe_project};

/// Every difference between a project's records and the tree.
pub fn verify(tree: &Tree, record: &ProjectRecord) -> Vec<Drift> {
    let mut drift = Vec::new();
    let mut add = |kind, path: &str, detail: String| {
        drift.push(Drift {
            kind,
            path: path.to_owned(),
            detail,
        })
    };
    let dir = &record.directory;
    let pfd = match probe_project(tree.root(), dir, record.id) {
        Ok(Probe::Found(fd, marker)) => {
            if marker != Some(Marker::Project(record.id)) {
                add(
                    DriftKind::WrongType,
                    dir,
                    format!(
                        "marker is {:?}, expected project {}",
                        marker.map(|m| m.to_string()),
                        record.id
                    ),
                );
            }
            check_mode(tree, fd.as_fd(), dir, &mut add);
            fd
        }
        Ok(Probe::Missing) => {
            add(
                DriftKind::Missing,
                dir,
                "the project directory is not there".into(),
            );
            return drift;
        }
        Ok(Probe::Foreign(why)) => {
            add(
                DriftKind::WrongType,
                dir,
                format!("expected project {}'s directory; it {why}", record.id),
            );
            return drift;
        }
        Err(e) => {
            add(DriftKind::Missing, dir, e);
            return drift;
        }
    };
    let names: HashSet<&str> = record
        .items
        .values()
        .map(|d| d.directory.as_str())
        .collect();
    foreign(pfd.as_fd(), dir, |name| names.contains(name), &mut add);
    for dataset in record.items.values() {
        verify_dataset(tree, pfd.as_fd(), dir, dataset, &mut add);
    }
    drift
}

fn verify_dataset(
    tree: &Tree,
    pfd: BorrowedFd<'_>,
    project: &str,
    d: &ItemRecord,
    add: &mut impl FnMut(DriftKind, &str, String),
) {
    let rel = join(&[project, &d.directory]);
    let Some(top) = open_checked(pfd, &d.directory, &rel, add) else {
        return;
    };
    match fs::read_marker(top.as_fd()) {
        Ok(Some(m)) if !matches!(m, Marker::Retired(_)) && m.item() == Some(d.item) => {}
        other => add(
            DriftKind::WrongType,
            &rel,
            format!(
                "marker is {:?}, expected {}",
                other.ok().flatten().map(|m| m.to_string()),
                d.item
            ),
        ),
    }
    check_mode(tree, top.as_fd(), &rel, add);
    let mut dirs: HashMap<String, Option<OwnedFd>> = HashMap::new();
    for (path, entry) in d.entries.iter() {
        let shown = join(&[&rel, path]);
        let (parent_rel, leaf) = split(path);
        let parent = if parent_rel.is_empty() {
            Some(top.as_fd())
        } else {
            match dirs.get(parent_rel) {
                Some(Some(fd)) => Some(fd.as_fd()),
                Some(None) => None,
                None => fs::open_rel(top.as_fd(), parent_rel).ok().and_then(|fd| {
                    dirs.insert(parent_rel.to_owned(), Some(fd));
                    dirs.get(parent_rel)
                        .and_then(|f| f.as_ref())
                        .map(|f| f.as_fd())
                }),
            }
        };
        // Entries under a directory already reported missing are not reported again.
        let Some(parent) = parent else { continue };
        match entry {
            EntryRecord::Dir => {
                let fd = open_checked(parent, leaf, &shown, add);
                if let Some(fd) = &fd {
                    check_mode(tree, fd.as_fd(), &shown, add);
                }
                dirs.insert(path.clone(), fd);
            }
            EntryRecord::File(f) => check_file(parent, leaf, &shown, f, add),
        }
    }
    let mut listed: Vec<(String, BorrowedFd<'_>)> = vec![(String::new(), top.as_fd())];
    listed.extend(
        dirs.iter()
            .filter_map(|(p, fd)| fd.as_ref().map(|fd| (p.clone(), fd.as_fd()))),
    );
    for (dir_rel, fd) in listed {
        let recorded = |name: &str| d.entries.contains_key(&join(&[&dir_rel, name]));
        foreign(fd, &join(&[&rel, &dir_rel]), recorded, add);
    }
}

fn open_checked(
    parent: BorrowedFd<'_>,
    name: &str,
    shown: &str,
    add: &mut impl FnMut(DriftKind, &str, String),
) -> Option<OwnedFd> {
    match fs::lstat_at(parent, name) {
        Err(Errno::NOENT) => add(
            DriftKind::Missing,
            shown,
            "the directory is not there".into(),
        ),
        Err(e) => add(DriftKind::Missing, shown, describe(e)),
        Ok(m) if m.kind != FileType::Directory => add(
            DriftKind::WrongType,
            shown,
            format!("expected a directory, found a {:?}", m.kind),
        ),
        Ok(_) => match fs::open_dir(parent, name) {
            Ok(fd) => return Some(fd),
            Err(e) => add(DriftKind::WrongType, shown, describe(e)),
        },
    }
    None
}

fn check_mode(
    tree: &Tree,
    fd: BorrowedFd<'_>,
    shown: &str,
    add: &mut impl FnMut(DriftKind, &str, String),
) {
    if let Ok(meta) = fs::fstat(fd)
        && meta.mode != tree.dir_mode()
    {
        add(
            DriftKind::WrongMode,
            shown,
            format!("mode {:04o}, expected {:04o}", meta.mode, tree.dir_mode()),
        );
    }
}

fn check_file(
    parent: BorrowedFd<'_>,
    name: &str,
    shown: &str,
    f: &FileRecord,
    add: &mut impl FnMut(DriftKind, &str, String),
) {
    let meta = match fs::lstat_at(parent, name) {
        Ok(meta) => meta,
        Err(Errno::NOENT) => {
            return add(
                DriftKind::Missing,
                shown,
                format!("the hard link to {} is not there", f.source),
            );
        }
        Err(e) => return add(DriftKind::Missing, shown, describe(e)),
    };
    if meta.kind == FileType::Symlink {
        return add(
            DriftKind::WrongType,
            shown,
            format!("is a symbolic link; expected a hard link to {}", f.source),
        );
    }
    if meta.kind != FileType::RegularFile {
        return add(
            DriftKind::WrongType,
            shown,
            format!("is a {:?}; expected a hard link to {}", meta.kind, f.source),
        );
    }
    if !meta.same_file(f.dev, f.ino) {
        return add(
            DriftKind::NotLinked,
            shown,
            format!(
                "inode {} is not the source {} (inode {})",
                meta.ino, f.source, f.ino
            ),
        );
    }
    match fs::lstat_path(&f.source) {
        Ok(src) if meta.same_file(src.dev, src.ino) => {}
        Ok(src) => add(
            DriftKind::NotLinked,
            shown,
            format!(
                "the source {} was replaced (now inode {}, staged inode {})",
                f.source, src.ino, meta.ino
            ),
        ),
        Err(e) => add(
            DriftKind::NotLinked,
            shown,
            format!("the source {} is gone ({})", f.source, describe(e)),
        ),
    }
}

fn foreign(
    fd: BorrowedFd<'_>,
    shown: &str,
    recorded: impl Fn(&str) -> bool,
    add: &mut impl FnMut(DriftKind, &str, String),
) {
    match fs::list(fd) {
        Ok(items) => {
            for item in items {
                let ours = item.utf8().is_some_and(&recorded);
                if !ours {
                    add(
                        DriftKind::Foreign,
                        &join(&[shown, &item.name.to_string_lossy()]),
                        "not staged by smrtshare (left untouched)".into(),
                    );
                }
            }
        }
        Err(e) => add(
            DriftKind::Missing,
            shown,
            format!("cannot list: {}", describe(e)),
        ),
    }
}
