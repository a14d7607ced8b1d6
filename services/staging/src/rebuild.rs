//! Start-up (blocking, before health turns SERVING): bring the records back in line with the
//! tree (the work area is swept afterwards, by [`crate::sweep`], with the records at hand).
//!
//! The rebuild reads the markers: a project directory whose project has no records (the database
//! was lost or is older than the tree) is recorded again, and so is a marked dataset or analysis
//! job directory its project's records do not list. A dataset's files are re-resolved from its
//! XML, and a file counts as staged only when it is the very inode of the source the XML names. An
//! analysis job's directory is recorded without files: the job's outputs are known from the next
//! request, whose apply adopts every link that is the very inode of an output it names.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::FileType;
use uuid::Uuid;

use crate::apply::Ctx;
use crate::dataset::{Entries, file_record};
use crate::fault::Fault;
use crate::fs::{self, HIDDEN_PREFIX, describe};
use crate::marker::Marker;
use crate::model::{
    DatasetSpec, EntryRecord, ItemId, ItemRecord, ItemSource, Kind, ProjectId, ProjectRecord, join,
};
use crate::probe::{Probe, probe_project};
use crate::resolve::{Resolver, Source, Want};

/// Deepest directory level swept or walked.
const MAX_DEPTH: usize = 16;

/// Records to store so that every marked directory under the root is recorded.
pub fn rebuild(
    ctx: &Ctx<'_>,
    records: &[Arc<ProjectRecord>],
    now: i64,
) -> Vec<(ProjectId, Option<ProjectRecord>)> {
    let root = ctx.tree.root();
    let by_id: HashMap<ProjectId, &Arc<ProjectRecord>> =
        records.iter().map(|r| (r.id, r)).collect();
    let mut seen: HashSet<ItemId> = records
        .iter()
        .flat_map(|r| r.items.keys().copied())
        .collect();
    let mut resolver = Resolver::new(ctx.roots, ctx.limits, ctx.namer, ctx.cache, ctx.budget);
    let mut changes = Vec::new();
    let items = match fs::list(root) {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %describe(e), "cannot list the staging root; records not checked against the tree");
            return changes;
        }
    };
    for item in items {
        let Some(name) = item.utf8() else { continue };
        if name.starts_with(HIDDEN_PREFIX)
            || fs::lstat_at(root, name).map(|m| m.kind) != Ok(FileType::Directory)
        {
            continue;
        }
        let Ok(fd) = fs::open_dir(root, name) else {
            continue;
        };
        let Ok(Some(Marker::Project(p))) = fs::read_marker(fd.as_fd()) else {
            continue;
        };
        let mut record = match by_id.get(&p) {
            Some(rec) if rec.directory == name => (***rec).clone(),
            Some(rec) => {
                if matches!(probe_project(root, &rec.directory, p), Ok(Probe::Found(..))) {
                    tracing::warn!(
                        project = p.get(),
                        recorded = rec.directory,
                        found = name,
                        "two directories are marked as the same project; the recorded one is kept"
                    );
                    continue;
                }
                tracing::info!(
                    project = p.get(),
                    from = rec.directory,
                    to = name,
                    "project directory found under another name; records follow the tree"
                );
                let mut moved = (***rec).clone();
                moved.directory = name.to_owned();
                moved
            }
            None => {
                tracing::info!(
                    project = p.get(),
                    directory = name,
                    "project directory without records; rebuilding them from the tree"
                );
                ProjectRecord {
                    id: p,
                    directory: name.to_owned(),
                    updated_at: now,
                    items: Default::default(),
                }
            }
        };
        let before = record.clone();
        for dataset in fs::list(fd.as_fd()).unwrap_or_default() {
            let Some(dir) = dataset.utf8() else { continue };
            if record.items.values().any(|d| d.directory == dir)
                || fs::lstat_at(fd.as_fd(), dir).map(|m| m.kind) != Ok(FileType::Directory)
            {
                continue;
            }
            let Ok(dfd) = fs::open_dir(fd.as_fd(), dir) else {
                continue;
            };
            let (item, source, entries) = match fs::read_marker(dfd.as_fd()) {
                Ok(Some(Marker::Dataset { uuid, kind, xml })) => {
                    let entries = rebuild_entries(
                        &mut resolver,
                        dfd.as_fd(),
                        uuid,
                        kind,
                        &xml,
                        &join(&[name, dir]),
                    );
                    let source = ItemSource::Dataset {
                        xml_path: xml,
                        kind,
                    };
                    (ItemId::Dataset(uuid), source, entries)
                }
                // Which of its files are staged is proven by the job's file list, which only a
                // request carries: the next apply adopts each link that is the very inode of an
                // output it names; until then nothing in the directory counts as staged.
                Ok(Some(Marker::Job(id))) => (ItemId::Job(id), ItemSource::Job, Entries::new()),
                _ => continue,
            };
            if !seen.insert(item) {
                tracing::warn!(project = p.get(), directory = dir, %item, "directory marked with a dataset or analysis job recorded elsewhere; left unrecorded");
                continue;
            }
            tracing::info!(project = p.get(), directory = dir, %item, entries = entries.len(), "dataset or analysis job directory recorded from the tree");
            record.items.insert(
                item,
                ItemRecord {
                    item,
                    directory: dir.to_owned(),
                    source,
                    entries: Arc::new(entries),
                },
            );
        }
        if by_id.get(&p).is_none_or(|rec| ***rec != before) || record != before {
            record.updated_at = now;
            changes.push((p, Some(record)));
        }
    }
    changes
}

/// The source files a dataset's XML names, by device and inode: what a file must be to count as
/// staged for it.
pub fn sources(
    resolver: &mut Resolver<'_>,
    uuid: Uuid,
    kind: Kind,
    xml: &str,
) -> Result<HashMap<(u64, u64), Arc<Source>>, Fault> {
    let spec = DatasetSpec {
        uuid,
        name: String::new(),
        xml_path: PathBuf::from(xml),
        parent: None,
        num_children: u32::from(kind == Kind::Parent),
    };
    let layout = match kind {
        Kind::Parent => resolver.parent(&spec),
        Kind::Plain => resolver.plain(&spec, false),
    }?;
    Ok(layout
        .entries
        .values()
        .filter_map(|want| match want {
            Want::File(source) => Some(((source.dev, source.ino), source.clone())),
            Want::Dir => None,
        })
        .collect())
}

/// The entries of a marked dataset directory that smrtshare staged: sub-directories marked for
/// the dataset, and files that are the very inode of a source its XML names.
fn rebuild_entries(
    resolver: &mut Resolver<'_>,
    top: BorrowedFd<'_>,
    uuid: Uuid,
    kind: Kind,
    xml: &str,
    shown: &str,
) -> Entries {
    let sources = sources(resolver, uuid, kind, xml).unwrap_or_else(|e| {
        tracing::warn!(
            path = shown,
            error = %e,
            "cannot resolve the dataset XML; its files are not recognised as staged and stay untouched until it resolves again"
        );
        HashMap::new()
    });
    let mut entries = Entries::new();
    walk(top, "", uuid, &sources, &mut entries, 0);
    entries
}

fn walk(
    fd: BorrowedFd<'_>,
    prefix: &str,
    uuid: Uuid,
    sources: &HashMap<(u64, u64), Arc<Source>>,
    entries: &mut Entries,
    depth: usize,
) {
    for item in fs::list(fd).unwrap_or_default() {
        let Some(name) = item.utf8() else { continue };
        let Ok(meta) = fs::lstat_at(fd, name) else {
            continue;
        };
        let path = join(&[prefix, name]);
        match meta.kind {
            FileType::Directory if depth < MAX_DEPTH => {
                let Ok(sub) = fs::open_dir(fd, name) else {
                    continue;
                };
                if fs::read_marker(sub.as_fd()).ok().flatten() == Some(Marker::Part(uuid)) {
                    entries.insert(path.clone(), EntryRecord::Dir);
                    walk(sub.as_fd(), &path, uuid, sources, entries, depth + 1);
                }
            }
            FileType::RegularFile => {
                if let Some(source) = sources.get(&(meta.dev, meta.ino)) {
                    entries.insert(path, file_record(source, meta.size));
                }
            }
            _ => {}
        }
    }
}
