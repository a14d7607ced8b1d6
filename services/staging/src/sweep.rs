//! The work area swept at start (blocking, before health turns SERVING), after an interrupted
//! operation left something there. Only what the sweep proves smrtshare staged is unlinked: a
//! file in a directory staging's user owns and marked for a dataset or an analysis job (or a work
//! file named after one), that is the very inode of a source the dataset's XML names now, or the
//! link its records hold at that path (for a job, whose outputs only requests name, only that). Our emptied directories are removed. Anything else goes back where it came
//! from: into its project directory under its old name, or that project's `smrtshare-recovered/`
//! when the name is taken ([`crate::recover`]), logged as a warning. What has no known project
//! stays in the work area, logged as an error.
//!
//! Where an item came from: the project whose records hold its dataset, else the project in its
//! work name (`<seq>-p<id>-remove`, `<seq>-p<id>-rename`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::FileType;
use uuid::Uuid;

use crate::apply::Ctx;
use crate::fs::{self, Ops, Tree, describe};
use crate::marker::Marker;
use crate::model::{EntryRecord, ItemId, ItemSource, Kind, ProjectId, ProjectRecord, join};
use crate::probe::{Probe, probe_project};
use crate::rebuild;
use crate::recover;
use crate::resolve::Resolver;

/// Deepest directory level swept.
const MAX_DEPTH: usize = 16;

/// What proves a file staged for one dataset.
#[derive(Default)]
struct Proof {
    /// Sources its XML names now, by device and inode.
    sources: HashSet<(u64, u64)>,
    /// Links its records hold, by path in the dataset directory.
    recorded: HashMap<String, (u64, u64)>,
}

impl Proof {
    fn holds(&self, path: Option<&str>, dev: u64, ino: u64) -> bool {
        self.sources.contains(&(dev, ino))
            || path.is_some_and(|p| self.recorded.get(p) == Some(&(dev, ino)))
    }
}

struct Sweep<'a> {
    ops: Ops<'a>,
    resolver: Resolver<'a>,
    records: &'a [Arc<ProjectRecord>],
    proofs: HashMap<ItemId, Arc<Proof>>,
    kept: Vec<String>,
}

/// Empties the work area; returns what stays there (paths relative to the root), each logged.
pub fn sweep(ctx: &Ctx<'_>, records: &[Arc<ProjectRecord>]) -> Vec<String> {
    let mut sweep = Sweep {
        ops: Ops::new(ctx.tree),
        resolver: Resolver::new(ctx.roots, ctx.limits, ctx.namer, ctx.cache, ctx.budget),
        records,
        proofs: HashMap::new(),
        kept: Vec::new(),
    };
    let work = ctx.tree.work();
    match fs::list(work) {
        Ok(items) => {
            for item in items {
                match item.utf8() {
                    Some(name) => sweep.item(work, name),
                    None => sweep.keep(
                        &Tree::work_rel(&item.name.to_string_lossy()),
                        "its name is not UTF-8",
                    ),
                }
            }
        }
        Err(e) => tracing::error!(error = %describe(e), "cannot list the work area"),
    }
    sweep.kept
}

/// What a marked directory in the work area is.
enum Marked {
    /// A dataset's or a job's own directory (its paths are its records' paths), with the
    /// dataset's kind and XML.
    Top(ItemId, Option<(Kind, String)>),
    /// A sub-directory of a dataset's directory (its path there is not known).
    Part(ItemId),
    /// Not a dataset's or a job's.
    Other,
}

/// What a marker says a directory is (retired or not).
fn marked(marker: Option<&Marker>) -> Marked {
    match marker {
        Some(Marker::Dataset { uuid, kind, xml }) => {
            Marked::Top(ItemId::Dataset(*uuid), Some((*kind, xml.clone())))
        }
        Some(Marker::Job(id)) => Marked::Top(ItemId::Job(*id), None),
        Some(Marker::Part(uuid)) => Marked::Part(ItemId::Dataset(*uuid)),
        Some(Marker::Retired(inner)) => marked(Some(inner)),
        _ => Marked::Other,
    }
}

/// The dataset a work file is for (`<seq>-relink-<uuid>`).
fn dataset_in(name: &str) -> Option<Uuid> {
    name.rsplit_once("-relink-")
        .and_then(|(_, u)| Uuid::parse_str(u).ok())
}

/// The project a work item was taken from (`<seq>-p<id>-<what>`).
fn project_in(name: &str) -> Option<ProjectId> {
    let rest = name.split_once("-p")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..].starts_with('-').then_some(())?;
    ProjectId::new(digits.parse().ok()?).ok()
}

impl Sweep<'_> {
    fn keep(&mut self, shown: &str, why: &str) {
        tracing::error!(
            path = shown,
            why,
            "kept in the work area: it may be someone's data and has no known place; move it by hand"
        );
        self.kept.push(shown.to_owned());
    }

    fn proof(&mut self, item: ItemId, xml: Option<(Kind, String)>) -> Arc<Proof> {
        if let Some(found) = self.proofs.get(&item) {
            return found.clone();
        }
        let mut proof = Proof::default();
        let recorded = self.records.iter().find_map(|r| r.items.get(&item));
        if let Some(d) = recorded {
            for (path, entry) in d.entries.iter() {
                if let EntryRecord::File(f) = entry {
                    proof.recorded.insert(path.clone(), (f.dev, f.ino));
                }
            }
        }
        let recorded_xml = recorded.and_then(|d| match &d.source {
            ItemSource::Dataset { xml_path, kind } => Some((*kind, xml_path.clone())),
            ItemSource::Job => None,
        });
        // An analysis job's outputs are known from requests only: its recorded links count.
        if let (Some(uuid), Some((kind, xml))) = (item.uuid(), xml.or(recorded_xml)) {
            match rebuild::sources(&mut self.resolver, uuid, kind, &xml) {
                Ok(sources) => proof.sources = sources.into_keys().collect(),
                Err(e) => {
                    tracing::warn!(dataset = %uuid, error = %e, "cannot resolve the dataset XML while sweeping; only its recorded links count as staged")
                }
            }
        }
        let proof = Arc::new(proof);
        self.proofs.insert(item, proof.clone());
        proof
    }

    fn item(&mut self, work: BorrowedFd<'_>, name: &str) {
        let shown = Tree::work_rel(name);
        let meta = match fs::lstat_at(work, name) {
            Ok(meta) => meta,
            Err(e) => return self.keep(&shown, &describe(e)),
        };
        let mut item = dataset_in(name).map(ItemId::Dataset);
        if meta.kind == FileType::Directory {
            let Ok(fd) = fs::open_dir(work, name) else {
                return self.keep(&shown, "cannot be opened");
            };
            let marker = fs::read_marker(fd.as_fd()).ok().flatten();
            let left = match (marked(marker.as_ref()), &marker) {
                // A dataset's or job's directory's own paths are its records' paths.
                (Marked::Top(of, xml), _) => {
                    item = Some(of);
                    let proof = self.proof(of, xml);
                    self.empty(fd.as_fd(), of, &proof, Some(""), 0)
                }
                // A part's paths are not known.
                (Marked::Part(of), _) => {
                    item = Some(of);
                    let proof = self.proof(of, None);
                    self.empty(fd.as_fd(), of, &proof, None, 0)
                }
                // A project directory being made is empty; anything else is not ours.
                (Marked::Other, Some(Marker::Project(_))) => {
                    item = None;
                    fs::list(fd.as_fd()).map(|l| !l.is_empty()).unwrap_or(true)
                }
                (Marked::Other, _) => {
                    item = None;
                    true
                }
            };
            if !left && self.ops.rmdir(work, name).is_ok() {
                return;
            }
            if let Some(marker) = marker.filter(|m| !matches!(m, Marker::Retired(_))) {
                let _ = self.ops.set_marker(fd.as_fd(), &marker.retired());
            }
        } else if meta.kind == FileType::RegularFile
            && let Some(of) = item
            && self.proof(of, None).holds(None, meta.dev, meta.ino)
            && self.ops.unlink(work, name).is_ok()
        {
            return;
        }
        self.place(name, item, &shown);
    }

    /// Unlinks proven links under `fd` and removes our emptied sub-directories (retiring the
    /// markers of those kept); `path` is `fd`'s path in the dataset directory when known. True
    /// when anything is left.
    fn empty(
        &mut self,
        fd: BorrowedFd<'_>,
        item: ItemId,
        proof: &Proof,
        path: Option<&str>,
        depth: usize,
    ) -> bool {
        let mut left = false;
        for entry in fs::list(fd).unwrap_or_default() {
            let Some(child) = entry.utf8() else {
                left = true;
                continue;
            };
            let Ok(meta) = fs::lstat_at(fd, child) else {
                left = true;
                continue;
            };
            let child_path = path.map(|p| join(&[p, child]));
            match meta.kind {
                FileType::RegularFile if proof.holds(child_path.as_deref(), meta.dev, meta.ino) => {
                    if self.ops.unlink(fd, child).is_err() {
                        left = true;
                    }
                }
                FileType::Directory if depth < MAX_DEPTH => {
                    let Ok(sub) = fs::open_dir(fd, child) else {
                        left = true;
                        continue;
                    };
                    let marker = fs::read_marker(sub.as_fd()).ok().flatten();
                    let (Marked::Part(of), Some(part)) =
                        (marked(marker.as_ref()), Marker::part_of(item))
                    else {
                        left = true;
                        continue;
                    };
                    if of != item {
                        left = true;
                        continue;
                    }
                    if !self.empty(sub.as_fd(), item, proof, child_path.as_deref(), depth + 1)
                        && self.ops.rmdir(fd, child).is_ok()
                    {
                        continue;
                    }
                    let _ = self.ops.set_marker(sub.as_fd(), &part.retired());
                    left = true;
                }
                _ => left = true,
            }
        }
        left
    }

    /// Puts a work item back into the project it came from.
    fn place(&mut self, name: &str, item: Option<ItemId>, shown: &str) {
        let by_item = item.and_then(|i| {
            self.records
                .iter()
                .find_map(|r| r.items.get(&i).map(|d| (r.clone(), d.directory.clone())))
        });
        let origin = by_item.or_else(|| {
            let p = project_in(name)?;
            let r = self.records.iter().find(|r| r.id == p)?;
            let fallback = item.map_or_else(|| name.to_owned(), |i| i.to_string());
            Some((r.clone(), fallback))
        });
        let Some((project, dir_name)) = origin else {
            return self.keep(shown, "no project is known for it");
        };
        let root = self.ops.tree().root();
        let pfd = match probe_project(root, &project.directory, project.id) {
            Ok(Probe::Found(fd, _)) => fd,
            _ => {
                let why = format!("its project directory {:?} is not there", project.directory);
                return self.keep(shown, &why);
            }
        };
        match recover::put_back(&self.ops, name, pfd.as_fd(), &project.directory, &dir_name) {
            Ok(at) => tracing::warn!(
                from = shown,
                to = at,
                project = project.id.get(),
                "put back from the work area: it holds files smrtshare did not stage"
            ),
            Err(e) => self.keep(shown, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_names_tell_the_project_and_the_dataset() {
        assert_eq!(
            project_in("00000012-p42-remove").map(ProjectId::get),
            Some(42)
        );
        assert_eq!(project_in("00000012-p42x-remove"), None);
        assert_eq!(project_in("00000012-project-3"), None);
        let u = Uuid::new_v4();
        assert_eq!(dataset_in(&format!("00000003-relink-{u}")), Some(u));
        assert_eq!(dataset_in("00000003-relink"), None);
    }
}
