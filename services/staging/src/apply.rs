//! Applying one project's desired state (blocking; run off the async runtime).
//!
//! 1. Resolve every dataset's XML into a layout (per-dataset failures are kept, the rest goes on).
//! 2. The project directory: adopt it, rename it when its name changed, or create it in the work
//!    area and publish it. A name held by another project or by a directory smrtshare did not
//!    create is refused before anything changes.
//! 3. Remove the dataset directories no longer wanted, rename the ones whose name changed, move
//!    the ones that come from another project.
//! 4. Bring each dataset directory up to date in place, or build it in the work area and publish it.
//! 5. Compute the new records; they are written only when they differ.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::analysis::JobRules;
use crate::budget::ParseBudget;
use crate::dataset::{self, Entries};
use crate::fault::Fault;
use crate::fs::{self, Ops, Tree};
use crate::hooks::Point;
use crate::marker::Marker;
use crate::model::{
    ActionKind, ApplyReport, ApplyRequest, DatasetState, EntryRecord, ItemId, ItemRecord,
    ItemResult, ProjectId, ProjectRecord, join,
};
use crate::names::Namer;
use crate::probe::{Probe, probe_project};
use crate::report::{Act, Report};
use crate::resolve::SourceRoots;
use crate::sourcecache::SourceCache;
use crate::targets::{self, Children, Existing, Target};
use crate::xml::Limits;

/// What the blocking work needs.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// The opened root.
    pub tree: &'a Tree,
    /// The source roots.
    pub roots: &'a SourceRoots,
    /// Naming.
    pub namer: &'a Namer,
    /// Which outputs of analysis jobs are staged.
    pub job_rules: JobRules,
    /// XML limits.
    pub limits: Limits,
    /// What was read from the source tree, kept between requests.
    pub cache: &'a SourceCache,
    /// Memory for parsing dataset XML, shared by every request.
    pub budget: &'a ParseBudget,
}

/// An apply's input: the request and the records of every project it may touch.
#[derive(Debug)]
pub struct Input {
    /// The request.
    pub request: ApplyRequest,
    /// The project's records, if staged.
    pub project: Option<Arc<ProjectRecord>>,
    /// Records of other projects holding requested datasets or jobs (they move here).
    pub others: Vec<Arc<ProjectRecord>>,
    /// Time of the apply (ms since the epoch).
    pub now: i64,
}

/// An apply's result: the report and the records to store (empty when nothing changed).
#[derive(Debug)]
pub struct Output {
    /// What was done.
    pub report: ApplyReport,
    /// New records per project (`None`: no records any more).
    pub changes: Vec<(ProjectId, Option<ProjectRecord>)>,
}

/// Why an apply was refused as a whole.
#[derive(Debug)]
pub enum Refusal {
    /// The directory name is taken (FAILED_PRECONDITION).
    Conflict(String),
    /// The root could not be read.
    Filesystem(String),
}

/// The project directory after step 2.
enum ProjectDir {
    /// Ready under `name`; `fd` is `None` only in a dry run of a new project.
    Ready { name: String, fd: Option<OwnedFd> },
    /// It could not be made ready; every dataset fails with `why`.
    Failed { name: String, why: Fault },
}

/// Applies the desired state. Blocking.
pub fn apply(ctx: &Ctx<'_>, input: Input) -> Result<Output, Refusal> {
    let Input {
        request,
        project: recorded,
        others,
        now,
    } = input;
    let ops = Ops::new(ctx.tree);
    let mut report = Report::new(&ops, request.dry_run);
    let (mut results, mut targets, children) = targets::resolve(ctx, &request);
    ctx.tree.hooks().at(Point::Resolved, &request.directory);

    let (project_name, project_fd) =
        match project_dir(ctx, &mut report, &request, recorded.as_deref())? {
            ProjectDir::Ready { name, fd } => (name, fd),
            ProjectDir::Failed { name, why } => {
                return Ok(project_failed(&request, report, results, &name, &why));
            }
        };
    let pfd = project_fd.as_ref().map(|fd| fd.as_fd());

    let mut items = remove_unwanted(
        ctx,
        &mut report,
        pfd,
        &project_name,
        recorded.as_deref(),
        &targets,
        &results,
    );
    let mut existing: Vec<Existing> = Vec::with_capacity(targets.len());
    for t in &targets {
        let place = targets::locate(ctx, pfd, &project_name, &recorded, &others, t, &mut results)
            .map_err(Refusal::Filesystem)?;
        existing.push(place);
    }
    let mut taken_out = targets::Taken::new();
    targets::rename_and_take(
        ctx,
        &mut report,
        request.project,
        pfd,
        &project_name,
        &mut targets,
        &mut existing,
        &mut results,
        &mut taken_out,
    );

    let outcomes = contents(
        ctx,
        &mut report,
        pfd,
        &project_name,
        &targets,
        existing,
        &mut results,
        &mut items,
    );
    place_children(children, &outcomes, &mut results);
    results.iter_mut().for_each(ItemResult::settle);

    let mut changes = Vec::new();
    if !request.dry_run {
        let p = request.project;
        let updated_at = recorded.as_ref().map(|r| r.updated_at).unwrap_or(now);
        let mut new = ProjectRecord {
            id: p,
            directory: project_name.clone(),
            updated_at,
            items,
        };
        if recorded.as_deref() != Some(&new) {
            new.updated_at = now;
            changes.push((p, Some(new)));
        }
        for other in &others {
            if let Some(gone) = taken_out.get(&other.id) {
                let mut changed = (**other).clone();
                for (item, remaining) in gone {
                    match (remaining, changed.items.get_mut(item)) {
                        (Some(entries), Some(d)) => d.entries = Arc::new(entries.clone()),
                        _ => {
                            changed.items.remove(item);
                        }
                    }
                }
                changed.updated_at = now;
                changes.push((other.id, Some(changed)));
            }
        }
    }
    let report = ApplyReport {
        project: request.project,
        directory: project_name,
        dry_run: request.dry_run,
        actions: report.finish(),
        results,
        mutating_calls: ops.count(),
    };
    Ok(Output { report, changes })
}

/// Step 2: finds, renames or creates the project directory, and corrects its marker and mode.
fn project_dir(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    request: &ApplyRequest,
    recorded: Option<&ProjectRecord>,
) -> Result<ProjectDir, Refusal> {
    let (p, root, want) = (request.project, ctx.tree.root(), &request.directory);
    let mut current: Option<(String, OwnedFd, Option<Marker>)> = None;
    if let Some(rec) = recorded
        && let Probe::Found(fd, marker) =
            probe_project(root, &rec.directory, p).map_err(Refusal::Filesystem)?
    {
        current = Some((rec.directory.clone(), fd, marker));
    }
    if current.as_ref().is_none_or(|(name, _, _)| name != want) {
        match probe_project(root, want, p).map_err(Refusal::Filesystem)? {
            Probe::Found(fd, marker) => {
                if let Some((old, _, _)) = &current {
                    return Err(Refusal::Conflict(format!(
                        "both {old:?} and {want:?} under the staging root are marked as project {p}'s directory; move one away"
                    )));
                }
                current = Some((want.clone(), fd, marker));
            }
            Probe::Missing => {}
            Probe::Foreign(why) => {
                return Err(Refusal::Conflict(format!(
                    "{want:?} already exists under the staging root and {why}; it was left untouched"
                )));
            }
        }
    }
    let marker = Marker::Project(p);
    let Some((name, fd, found)) = current else {
        return create_project_dir(ctx, report, p, want);
    };
    if name != *want {
        let act = Act::new(ActionKind::RenameProjectDirectory, want.clone()).from(name.clone());
        if let Err(why) = report.act(act, |ops| ops.rename_noreplace(root, &name, root, want)) {
            return Ok(ProjectDir::Failed { name, why });
        }
    }
    if found.as_ref() != Some(&marker) {
        let act = Act::new(ActionKind::MarkDirectory, want.clone());
        if let Err(why) = report.act(act, |ops| ops.set_marker(fd.as_fd(), &marker)) {
            return Ok(ProjectDir::Failed {
                name: want.clone(),
                why,
            });
        }
    }
    if fs::fstat(fd.as_fd()).map(|m| m.mode).unwrap_or(0) != ctx.tree.dir_mode() {
        let act = Act::new(ActionKind::SetMode, want.clone());
        if let Err(why) = report.act(act, |ops| ops.chmod(fd.as_fd(), ctx.tree.dir_mode())) {
            return Ok(ProjectDir::Failed {
                name: want.clone(),
                why,
            });
        }
    }
    Ok(ProjectDir::Ready {
        name: want.clone(),
        fd: Some(fd),
    })
}

/// A new project directory: made in the work area and published empty.
fn create_project_dir(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    p: ProjectId,
    want: &str,
) -> Result<ProjectDir, Refusal> {
    let work_name = ctx.tree.work_name(&format!("project-{p}"));
    let marker = Marker::Project(p);
    let made = match report.act(Act::new(ActionKind::CreateDirectory, want), |ops| {
        ops.mkdir(ctx.tree.work(), &work_name, &marker)
    }) {
        Ok(made) => made,
        Err(why) => {
            return Ok(ProjectDir::Failed {
                name: want.to_owned(),
                why,
            });
        }
    };
    let act = Act::new(ActionKind::PublishDirectory, want).from(Tree::work_rel(&work_name));
    match report.act(act, |ops| {
        ops.rename_noreplace(ctx.tree.work(), &work_name, ctx.tree.root(), want)
    }) {
        Ok(_) => Ok(ProjectDir::Ready {
            name: want.to_owned(),
            fd: made,
        }),
        Err(why) => {
            dataset::discard(report.ops(), ctx.tree.work(), &work_name);
            if fs::lstat_at(ctx.tree.root(), want).is_ok() {
                return Err(Refusal::Conflict(format!(
                    "{want:?} appeared under the staging root while the project directory was being made; it was left untouched"
                )));
            }
            Ok(ProjectDir::Failed {
                name: want.to_owned(),
                why,
            })
        }
    }
}

/// Step 3a: removes the recorded dataset directories no longer wanted. Datasets of the request
/// that failed to resolve keep their directories (and records) as they are. Returns the records
/// that stay.
fn remove_unwanted(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    pfd: Option<BorrowedFd<'_>>,
    project_name: &str,
    recorded: Option<&ProjectRecord>,
    targets: &[Target],
    results: &[ItemResult],
) -> BTreeMap<ItemId, ItemRecord> {
    let mut kept = BTreeMap::new();
    let Some(rec) = recorded else { return kept };
    let wanted: HashSet<ItemId> = targets.iter().map(|t| t.item).collect();
    let failed: HashSet<ItemId> = results
        .iter()
        .filter(|r| matches!(r.state, DatasetState::Failed(_)))
        .map(|r| r.item)
        .collect();
    for (item, d) in &rec.items {
        if wanted.contains(item) {
            continue;
        }
        if failed.contains(item) {
            kept.insert(*item, d.clone());
            continue;
        }
        let Some(pfd) = pfd else { continue };
        let removal = crate::removal::remove_item(
            report,
            ctx.tree,
            rec.id,
            pfd,
            project_name,
            &d.directory,
            *item,
            &d.entries,
        );
        if removal.error.is_some() {
            kept.insert(
                *item,
                ItemRecord {
                    entries: Arc::new(removal.remaining),
                    ..d.clone()
                },
            );
        }
    }
    kept
}

/// Step 4: each target's directory brought up to date or built. Returns, per target, its path or
/// its failure (for the children inside it).
#[allow(clippy::too_many_arguments)]
fn contents(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    pfd: Option<BorrowedFd<'_>>,
    project_name: &str,
    targets: &[Target],
    existing: Vec<Existing>,
    results: &mut [ItemResult],
    items: &mut BTreeMap<ItemId, ItemRecord>,
) -> HashMap<ItemId, Result<String, Fault>> {
    let mut outcomes = HashMap::new();
    for (t, place) in targets.iter().zip(existing) {
        let record = |name: &str, entries: Arc<Entries>| ItemRecord {
            item: t.item,
            directory: name.to_owned(),
            source: t.source.clone(),
            entries,
        };
        let result = &mut results[t.index];
        if let DatasetState::Failed(e) = &result.state {
            outcomes.insert(t.item, Err(e.clone()));
            if let Existing::Here { name, entries, .. } = place {
                items.insert(t.item, record(&name, entries));
            }
            continue;
        }
        let (name, done, entries) = match place {
            // Taken out of another project by now (or failed): built here.
            Existing::None | Existing::Elsewhere { .. } => match dataset::build(
                report,
                ctx.tree,
                pfd,
                project_name,
                &t.name,
                t.item,
                &t.marker,
                &t.layout,
            ) {
                Ok(entries) => (
                    t.name.clone(),
                    Ok(DatasetState::Staged),
                    Some(Arc::new(entries)),
                ),
                Err(e) => (t.name.clone(), Err(e), None),
            },
            Existing::Here {
                name,
                fd,
                entries,
                marker,
            } => {
                let rel = join(&[project_name, &name]);
                let dir = dataset::Existing {
                    top: fd.as_fd(),
                    rel: &rel,
                    found: marker.as_ref(),
                };
                let (entries, done, in_the_way) = dataset::reconcile(
                    report,
                    ctx.tree,
                    dir,
                    t.item,
                    &t.marker,
                    &t.layout,
                    &entries,
                    t.in_the_way,
                );
                result.file_faults.extend(in_the_way);
                let state = if report.touched(t.item) {
                    DatasetState::Updated
                } else {
                    DatasetState::Unchanged
                };
                (name, done.map(|()| state), Some(entries))
            }
        };
        result.path = join(&[project_name, &name]);
        if let Some(entries) = entries {
            let files = entries
                .values()
                .filter(|e| matches!(e, EntryRecord::File(_)))
                .count();
            result.file_count = u32::try_from(files).unwrap_or(u32::MAX);
            items.insert(t.item, record(&name, entries));
        }
        match done {
            Ok(state) => {
                result.state = state;
                outcomes.insert(t.item, Ok(result.path.clone()));
            }
            Err(e) => {
                outcomes.insert(t.item, Err(e.clone()));
                result.state = DatasetState::Failed(e);
            }
        }
    }
    outcomes
}

/// Children inside their parent's directory: placed there, or failed with their parent.
fn place_children(
    children: Children,
    outcomes: &HashMap<ItemId, Result<String, Fault>>,
    results: &mut [ItemResult],
) {
    for (index, parent, dir, files) in children {
        let result = &mut results[index];
        match outcomes.get(&ItemId::Dataset(parent)) {
            Some(Ok(parent_path)) => {
                result.path = join(&[parent_path, &dir]);
                result.file_count = files;
                result.state = DatasetState::InParent;
            }
            Some(Err(e)) => {
                result.state = DatasetState::Failed(e.clone().context(format_args!(
                    "its parent dataset {parent} could not be staged"
                )))
            }
            None => {
                result.state = DatasetState::Failed(Fault::passing(format!(
                    "its parent dataset {parent} could not be staged"
                )))
            }
        }
    }
}

/// The answer when the project directory itself could not be made ready: every dataset fails.
fn project_failed(
    request: &ApplyRequest,
    report: Report<'_, '_>,
    mut results: Vec<ItemResult>,
    directory: &str,
    why: &Fault,
) -> Output {
    for result in &mut results {
        if !matches!(result.state, DatasetState::Failed(_)) {
            result.state = DatasetState::Failed(
                why.clone()
                    .context("the project directory could not be made ready"),
            );
        }
        result.settle();
    }
    let mutating_calls = report.ops().count();
    let report = ApplyReport {
        project: request.project,
        directory: directory.to_owned(),
        dry_run: request.dry_run,
        actions: report.finish(),
        results,
        mutating_calls,
    };
    Output {
        report,
        changes: Vec::new(),
    }
}
