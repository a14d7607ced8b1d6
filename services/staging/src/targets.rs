//! The datasets of a request as directories: which get a directory of their own (targets) and
//! which live inside their parent's, where each target's directory is now, and the renames and
//! moves that bring it to its name in this project.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use uuid::Uuid;

use crate::analysis;
use crate::apply::Ctx;
use crate::dataset::{Entries, InTheWay};
use crate::fault::Fault;
use crate::fs;
use crate::marker::Marker;
use crate::model::{
    ActionKind, ApplyRequest, DatasetState, ItemId, ItemResult, ItemSource, ProjectId,
    ProjectRecord, join,
};
use crate::names;
use crate::probe::{Probe, probe_item, probe_project};
use crate::report::{Act, Report};
use crate::resolve::{Layout, Resolver};

/// A dataset or an analysis job that gets a directory of its own.
#[derive(Debug)]
pub struct Target {
    /// Its index in the results (datasets in request order, then analysis jobs).
    pub index: usize,
    /// The dataset or job.
    pub item: ItemId,
    /// The marker its directory carries.
    pub marker: Marker,
    /// What its directory should hold.
    pub layout: Layout,
    /// Its directory name (unique in the project).
    pub name: String,
    /// Where its files come from (recorded with it).
    pub source: ItemSource,
    /// What something in the way of one of its files fails.
    pub in_the_way: InTheWay,
}

/// Where a target's directory is now.
#[derive(Debug)]
pub enum Existing {
    /// Nowhere: it is built.
    None,
    /// In this project's directory, as `name` (opened), recorded with `entries`.
    Here {
        /// Its current name.
        name: String,
        /// The directory, opened.
        fd: OwnedFd,
        /// What the records say it holds.
        entries: Arc<Entries>,
        /// The marker it carries now.
        marker: Option<Marker>,
    },
    /// In another project's directory: its links leave that directory, and it is built here.
    Elsewhere {
        /// That project.
        from: ProjectId,
        /// That project's directory name.
        project_dir: String,
        /// That project's directory, opened.
        parent: OwnedFd,
        /// Its name there.
        name: String,
        /// What the records say it holds.
        entries: Arc<Entries>,
    },
}

/// Datasets and jobs taken from other projects, per project: `None` when their records go, or
/// the entries still recorded there when taking them out failed half-way.
pub type Taken = HashMap<ProjectId, Vec<(ItemId, Option<Entries>)>>;

/// Children staged inside their parent's directory: (result index, parent, sub-directory, files).
pub type Children = Vec<(usize, Uuid, String, u32)>;

/// Resolves every dataset and analysis job: targets (own directory), children inside a parent,
/// failures. Results hold the datasets in request order, then the jobs.
pub fn resolve(ctx: &Ctx<'_>, request: &ApplyRequest) -> (Vec<ItemResult>, Vec<Target>, Children) {
    let mut resolver = Resolver::new(ctx.roots, ctx.limits, ctx.namer, ctx.cache, ctx.budget);
    let in_request: HashSet<Uuid> = request.datasets.iter().map(|d| d.uuid).collect();
    let mut results: Vec<ItemResult> = request
        .datasets
        .iter()
        .map(|d| ItemResult::new(ItemId::Dataset(d.uuid)))
        .chain(
            request
                .jobs
                .iter()
                .map(|j| ItemResult::new(ItemId::Job(j.id))),
        )
        .collect();
    let mut targets = Vec::new();
    let mut failed: HashMap<Uuid, Fault> = HashMap::new();
    let parent_in_request = |i: usize| {
        request.datasets[i]
            .parent
            .filter(|p| in_request.contains(p) && *p != request.datasets[i].uuid)
    };
    for (index, spec) in request.datasets.iter().enumerate() {
        if parent_in_request(index).is_none() {
            let layout = if spec.num_children > 0 {
                resolver.parent(spec)
            } else {
                resolver.plain(spec, spec.parent.is_some())
            };
            add_target(
                request,
                index,
                layout,
                &mut results,
                &mut targets,
                &mut failed,
            );
        }
    }
    let mut children = Vec::new();
    for (index, spec) in request.datasets.iter().enumerate() {
        let Some(parent) = parent_in_request(index) else {
            continue;
        };
        let found = targets
            .iter()
            .find(|t| t.item == ItemId::Dataset(parent))
            .map(|t| t.layout.children.iter().find(|c| c.uuid == Some(spec.uuid)));
        match found {
            Some(Some(child)) => children.push((index, parent, child.dir.clone(), child.files)),
            _ if failed.contains_key(&parent) => {
                let why = failed[&parent].clone().context(format_args!(
                    "its parent dataset {parent} could not be staged"
                ));
                results[index].state = DatasetState::Failed(why);
            }
            // Not among the parent's children (or the parent is itself a child): stage it on its own.
            _ => {
                let layout = resolver.plain(spec, true);
                add_target(
                    request,
                    index,
                    layout,
                    &mut results,
                    &mut targets,
                    &mut failed,
                );
            }
        }
    }
    for (j, job) in request.jobs.iter().enumerate() {
        let index = request.datasets.len() + j;
        let resolved = analysis::layout(&mut resolver, ctx.namer, ctx.job_rules, job);
        results[index].skipped = resolved.skipped;
        results[index].file_faults = resolved.faults;
        targets.push(Target {
            index,
            item: ItemId::Job(job.id),
            marker: Marker::Job(job.id),
            name: resolved.layout.name.clone(),
            layout: resolved.layout,
            source: ItemSource::Job,
            in_the_way: InTheWay::FailsFile,
        });
    }
    let mut names: Vec<(String, String)> = targets
        .iter()
        .map(|t| (t.item.key(), t.name.clone()))
        .collect();
    names::disambiguate(&mut names);
    for (t, (_, name)) in targets.iter_mut().zip(names) {
        t.name = name;
    }
    (results, targets, children)
}

fn add_target(
    request: &ApplyRequest,
    index: usize,
    layout: Result<Layout, Fault>,
    results: &mut [ItemResult],
    targets: &mut Vec<Target>,
    failed: &mut HashMap<Uuid, Fault>,
) {
    let spec = &request.datasets[index];
    match layout {
        Ok(layout) => {
            let xml = spec.xml_path.to_string_lossy().into_owned();
            targets.push(Target {
                index,
                item: ItemId::Dataset(spec.uuid),
                marker: Marker::Dataset {
                    uuid: spec.uuid,
                    kind: layout.kind,
                    xml: xml.clone(),
                },
                name: layout.name.clone(),
                source: ItemSource::Dataset {
                    xml_path: xml,
                    kind: layout.kind,
                },
                in_the_way: InTheWay::FailsItem,
                layout,
            })
        }
        Err(e) => {
            failed.insert(spec.uuid, e.clone());
            results[index].state = DatasetState::Failed(e);
        }
    }
}

/// Finds where a target's directory is now: recorded in this project, recorded in another one
/// (it moves here), or already at its name (adopted). A name taken by something else fails it.
pub fn locate(
    ctx: &Ctx<'_>,
    pfd: Option<BorrowedFd<'_>>,
    project_name: &str,
    recorded: &Option<Arc<ProjectRecord>>,
    others: &[Arc<ProjectRecord>],
    t: &Target,
    results: &mut [ItemResult],
) -> Result<Existing, String> {
    if let (Some(pfd), Some(d)) = (pfd, recorded.as_ref().and_then(|r| r.items.get(&t.item)))
        && let Probe::Found(fd, marker) = probe_item(pfd, &d.directory, t.item)?
    {
        return Ok(Existing::Here {
            name: d.directory.clone(),
            fd,
            entries: d.entries.clone(),
            marker,
        });
    }
    for other in others {
        let Some(d) = other.items.get(&t.item) else {
            continue;
        };
        if let Probe::Found(parent, _) = probe_project(ctx.tree.root(), &other.directory, other.id)?
            && let Probe::Found(..) = probe_item(parent.as_fd(), &d.directory, t.item)?
        {
            return Ok(Existing::Elsewhere {
                from: other.id,
                project_dir: other.directory.clone(),
                parent,
                name: d.directory.clone(),
                entries: d.entries.clone(),
            });
        }
    }
    let Some(pfd) = pfd else {
        return Ok(Existing::None);
    };
    match probe_item(pfd, &t.name, t.item)? {
        Probe::Found(fd, marker) => Ok(Existing::Here {
            name: t.name.clone(),
            fd,
            entries: Arc::new(Entries::new()),
            marker,
        }),
        Probe::Missing => Ok(Existing::None),
        Probe::Foreign(why) => {
            results[t.index].state = DatasetState::Failed(Fault::permanent(format!(
                "{}: the directory name is taken: it {why} (left untouched)",
                join(&[project_name, &t.name])
            )));
            Ok(Existing::None)
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// Renames dataset directories whose name changed (through the work area when names are
/// exchanged), then takes the ones another project holds out of that project.
pub fn rename_and_take(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    p: ProjectId,
    pfd: Option<BorrowedFd<'_>>,
    project_name: &str,
    targets: &mut [Target],
    existing: &mut [Existing],
    results: &mut [ItemResult],
    taken_out: &mut Taken,
) {
    if let Some(pfd) = pfd {
        rename(
            ctx,
            report,
            p,
            pfd,
            project_name,
            targets,
            existing,
            results,
        );
    }
    take(
        ctx,
        report,
        pfd,
        project_name,
        targets,
        existing,
        results,
        taken_out,
    );
}

/// Renames dataset directories whose name changed, through the work area when names are exchanged.
#[allow(clippy::too_many_arguments)]
fn rename(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    p: ProjectId,
    pfd: BorrowedFd<'_>,
    project_name: &str,
    targets: &mut [Target],
    existing: &mut [Existing],
    results: &mut [ItemResult],
) {
    let froms: HashSet<String> = existing
        .iter()
        .filter_map(|e| {
            if let Existing::Here { name, .. } = e {
                Some(name.clone())
            } else {
                None
            }
        })
        .collect();
    let taken = |name: &str| !froms.contains(name) && fs::lstat_at(pfd, name).is_ok();
    // Renames inside the project; through the work area when names are exchanged.
    let mut renames: Vec<usize> = (0..targets.len())
        .filter(
            |i| matches!(&existing[*i], Existing::Here { name, .. } if *name != targets[*i].name),
        )
        .filter(|i| !matches!(results[targets[*i].index].state, DatasetState::Failed(_)))
        .collect();
    renames.retain(|&i| {
        let t = &targets[i];
        if taken(&t.name) {
            results[t.index].state =
                DatasetState::Failed(Fault::permanent(format!("{}: the directory name is taken by something smrtshare did not stage (left untouched)", join(&[project_name, &t.name]))));
        }
        !taken(&t.name)
    });
    let exchange = renames.iter().any(|i| froms.contains(&targets[*i].name));
    let mut parked: HashMap<usize, String> = HashMap::new();
    if exchange && !report.dry() {
        for &i in &renames {
            if let Existing::Here { name, .. } = &existing[i] {
                let work_name = ctx.tree.work_name(&format!("p{p}-rename"));
                if report
                    .ops()
                    .rename_noreplace(pfd, name, ctx.tree.work(), &work_name)
                    .is_ok()
                {
                    parked.insert(i, work_name);
                }
            }
        }
    }
    for &i in &renames {
        let t = &targets[i];
        let Existing::Here { name, .. } = &mut existing[i] else {
            continue;
        };
        let act = Act::new(
            ActionKind::RenameDatasetDirectory,
            join(&[project_name, &t.name]),
        )
        .from(join(&[project_name, name]))
        .item(t.item);
        let outcome = match parked.get(&i) {
            Some(work_name) => report.act(act, |ops| {
                ops.rename_noreplace(ctx.tree.work(), work_name, pfd, &t.name)
            }),
            None => report.act(act, |ops| ops.rename_noreplace(pfd, name, pfd, &t.name)),
        };
        match outcome {
            Ok(_) => *name = t.name.clone(),
            Err(e) => {
                if let Some(work_name) = parked.get(&i) {
                    let _ = report
                        .ops()
                        .rename_noreplace(ctx.tree.work(), work_name, pfd, name);
                }
                results[t.index].state = DatasetState::Failed(e);
            }
        }
    }
}

/// Datasets another project holds ("dataset stealing"): only their links leave that project's
/// directory; whatever others put in it stays there, in a kept directory, and never follows the
/// dataset to the members of this project. The directory here is then built anew (the same
/// hard links, made fresh). A name taken here fails the dataset before anything is touched.
#[allow(clippy::too_many_arguments)]
fn take(
    ctx: &Ctx<'_>,
    report: &mut Report<'_, '_>,
    pfd: Option<BorrowedFd<'_>>,
    project_name: &str,
    targets: &[Target],
    existing: &mut [Existing],
    results: &mut [ItemResult],
    taken_out: &mut Taken,
) {
    for (t, place) in targets.iter().zip(existing.iter_mut()) {
        if matches!(results[t.index].state, DatasetState::Failed(_))
            || !matches!(place, Existing::Elsewhere { .. })
        {
            continue;
        }
        let Existing::Elsewhere {
            from,
            project_dir,
            parent,
            name,
            entries,
        } = std::mem::replace(place, Existing::None)
        else {
            continue;
        };
        let here = join(&[project_name, &t.name]);
        let from_rel = join(&[&project_dir, &name]);
        if pfd.is_some_and(|pfd| fs::lstat_at(pfd, &t.name).is_ok()) {
            results[t.index].state = DatasetState::Failed(Fault::permanent(format!(
                "{here}: the directory name is taken by something smrtshare did not stage (left untouched; the {} stays in {from_rel})",
                kind_of(t.item)
            )));
            continue;
        }
        report.note(
            Act::new(ActionKind::MoveDatasetDirectory, here.clone())
                .from(from_rel.clone())
                .item(t.item),
        );
        let removal = crate::removal::remove_item(
            report,
            ctx.tree,
            from,
            parent.as_fd(),
            &project_dir,
            &name,
            t.item,
            &entries,
        );
        match removal.error {
            None => taken_out.entry(from).or_default().push((t.item, None)),
            Some(e) => {
                taken_out
                    .entry(from)
                    .or_default()
                    .push((t.item, Some(removal.remaining)));
                results[t.index].state = DatasetState::Failed(e.context(format_args!(
                    "{here}: it could not be taken out of project {from}'s directory"
                )));
            }
        }
    }
}

/// What an item is, in messages.
fn kind_of(item: ItemId) -> &'static str {
    match item {
        ItemId::Dataset(_) => "dataset",
        ItemId::Job(_) => "analysis job's directory",
    }
}
