//! Resync: rebuild the project tables from SMRT Link, compare with what staging and access hold,
//! and create tasks only where they differ. Runs at start (startup renewal), periodically, and
//! on request; a named lease keeps replicas from running it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::TaskWake;
use futures::StreamExt as _;
use smrtshare_api::access::v1 as access;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{ChangeReason, Desired, Operation, ProjectTruth, Target};
use crate::naming::DirectoryNamer;
use crate::peers::Peers;
use crate::source::ProjectSource;
use crate::store::Store;

/// The lease that makes resync a singleton.
pub const LEASE: &str = "resync";

/// Resync settings.
#[derive(Clone, Debug)]
pub struct ResyncConfig {
    /// Time between periodic resyncs.
    pub interval: Duration,
    /// Largest share of known projects a resync may remove without `force` (0.0–1.0).
    pub max_removal_share: f64,
    /// Concurrent SMRT Link project reads.
    pub read_concurrency: usize,
    /// How long the resync lease is held (renewed by finishing; must outlast one resync).
    pub lease: Duration,
}

/// One difference found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Project.
    pub project_id: i64,
    /// Target.
    pub target: Target,
    /// Apply or remove.
    pub operation: Operation,
    /// What differs.
    pub reason: String,
    /// The change recorded (0 in a dry run).
    pub change_id: i64,
}

/// What a resync found and did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Dry run.
    pub dry_run: bool,
    /// Projects listed by SMRT Link (project 1 excluded).
    pub listed: usize,
    /// Listing and every project read completed.
    pub listing_complete: bool,
    /// Removals were refused.
    pub removals_refused: bool,
    /// Why.
    pub refused_reason: String,
    /// Differences.
    pub items: Vec<Item>,
    /// Projects already in sync.
    pub in_sync: usize,
    /// Problems met.
    pub warnings: Vec<String>,
}

/// Errors that stop a resync before it starts.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// Another replica (or request) holds the resync lease.
    #[error("another resync is running (lease held)")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Runs resyncs.
#[derive(Clone)]
pub struct Resync {
    store: Store,
    source: Arc<dyn ProjectSource>,
    peers: Peers,
    namer: DirectoryNamer,
    config: ResyncConfig,
    owner: String,
    wake_tasks: TaskWake,
    metrics: Metrics,
}

impl std::fmt::Debug for Resync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resync")
            .field("owner", &self.owner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What staging holds for a project: directory and dataset uuids.
type Staged = BTreeMap<i64, (String, BTreeSet<String>)>;

impl Resync {
    /// A resync runner.
    pub fn new(
        store: Store,
        source: Arc<dyn ProjectSource>,
        peers: Peers,
        namer: DirectoryNamer,
        config: ResyncConfig,
        owner: String,
        wake_tasks: TaskWake,
    ) -> Self {
        Self {
            store,
            source,
            peers,
            namer,
            config,
            owner,
            wake_tasks,
            metrics: Metrics::new(),
        }
    }

    /// Reports resync outcomes to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One resync under the singleton lease.
    pub async fn run(&self, dry_run: bool, force: bool) -> Result<Report, ResyncError> {
        let lease = crate::clock::millis(self.config.lease);
        if !self.store.try_lease(LEASE, &self.owner, lease).await? {
            self.metrics.resync_finished("busy", 0);
            return Err(ResyncError::Busy);
        }
        let result = self.run_locked(dry_run, force).await;
        if let Err(error) = self.store.release_lease(LEASE, &self.owner).await {
            tracing::warn!(%error, "releasing the resync lease failed; it lapses by itself");
        }
        match &result {
            Ok(report) if report.removals_refused => {
                self.metrics.resync_finished("refused", report.items.len())
            }
            Ok(report) if !report.listing_complete => self
                .metrics
                .resync_finished("incomplete", report.items.len()),
            Ok(report) => self.metrics.resync_finished("complete", report.items.len()),
            Err(_) => self.metrics.resync_finished("error", 0),
        }
        if let Ok(report) = &result {
            tracing::info!(
                dry_run,
                listed = report.listed,
                complete = report.listing_complete,
                differences = report.items.len(),
                in_sync = report.in_sync,
                removals_refused = report.removals_refused,
                warnings = report.warnings.len(),
                "resync finished"
            );
            if report.removals_refused {
                tracing::warn!(
                    reason = report.refused_reason,
                    "resync refused to remove projects"
                );
            }
        }
        result
    }

    async fn run_locked(&self, dry_run: bool, force: bool) -> Result<Report, ResyncError> {
        let mut report = Report {
            dry_run,
            ..Report::default()
        };

        // 1. SMRT Link: a complete listing, then every project.
        let listed: BTreeSet<i64> = match self.source.list_project_ids().await {
            Ok(ids) => {
                report.listing_complete = true;
                ids.into_iter().filter(|id| *id > 1).collect()
            }
            Err(error) => {
                report.warnings.push(format!(
                    "listing SMRT Link projects failed: {error}; nothing is removed"
                ));
                BTreeSet::new()
            }
        };
        report.listed = listed.len();
        let reads: Vec<(i64, _)> = futures::stream::iter(listed.iter().copied())
            .map(|id| async move { (id, self.source.get_project(id).await) })
            .buffer_unordered(self.config.read_concurrency.max(1))
            .collect()
            .await;
        let mut truths: BTreeMap<i64, ProjectTruth> = BTreeMap::new();
        let mut unreadable = BTreeSet::new();
        for (id, read) in reads {
            match read {
                Ok(Some(truth)) => {
                    truths.insert(id, truth);
                }
                Ok(None) => {} // listed, then gone: a removal candidate like any other
                Err(error) => {
                    report.listing_complete = false;
                    unreadable.insert(id);
                    report
                        .warnings
                        .push(format!("reading project {id} failed: {error}"));
                }
            }
        }

        // 2. What the coordinator and the services hold.
        let known: BTreeMap<i64, bool> = self.store.known_projects().await?.into_iter().collect();
        let staged: Option<Staged> = match self.peers.staged_projects().await {
            Ok(list) => Some(
                list.into_iter()
                    .map(|(id, dir, uuids)| (id, (dir, uuids.into_iter().collect())))
                    .collect(),
            ),
            Err(status) => {
                report.warnings.push(format!(
                    "listing staging failed ({:?}: {}); staging not compared",
                    status.code(),
                    status.message()
                ));
                None
            }
        };
        let rules: Option<BTreeMap<i64, Vec<access::Rule>>> = match self.peers.access_rules().await
        {
            Ok(list) => {
                let mut by_project: BTreeMap<i64, Vec<access::Rule>> = BTreeMap::new();
                for rule in list {
                    by_project.entry(rule.project_id).or_default().push(rule);
                }
                Some(by_project)
            }
            Err(status) => {
                report.warnings.push(format!(
                    "listing access rules failed ({:?}: {}); access not compared",
                    status.code(),
                    status.message()
                ));
                None
            }
        };

        // 3. Projects SMRT Link has: rebuild the tables and compare.
        let mut per_project: BTreeMap<i64, Vec<Item>> = BTreeMap::new();
        for (id, truth) in &truths {
            let directory = self.namer.name(*id, &truth.name);
            if !dry_run {
                self.store.store_project_truth(truth, &directory).await?;
            }
            let desired = Desired {
                project_id: *id,
                deleted: false,
                directory: directory.clone(),
                datasets: truth.datasets.clone(),
                shared_logins: {
                    let mut logins: Vec<String> = truth
                        .members
                        .iter()
                        .filter(|m| m.is_shared())
                        .map(|m| m.login.clone())
                        .collect();
                    logins.sort();
                    logins.dedup();
                    logins
                },
            };
            if let Some(staged) = &staged
                && let Some(reason) = staging_difference(&desired, staged.get(id))
            {
                per_project.entry(*id).or_default().push(item(
                    *id,
                    Target::Staging,
                    Operation::Apply,
                    reason,
                ));
            }
            if let Some(rules) = &rules
                && let Some(reason) = access_difference(
                    &desired,
                    rules.get(id).map(Vec::as_slice).unwrap_or_default(),
                )
            {
                per_project.entry(*id).or_default().push(item(
                    *id,
                    Target::Access,
                    Operation::Apply,
                    reason,
                ));
            }
        }
        report.in_sync = truths.len() - per_project.len();

        // 4. Projects SMRT Link no longer has: removal candidates, guarded.
        let mut holders: BTreeSet<i64> = known
            .iter()
            .filter(|(_, deleted)| !**deleted)
            .map(|(id, _)| *id)
            .collect();
        if let Some(staged) = &staged {
            holders.extend(staged.keys().copied());
        }
        if let Some(rules) = &rules {
            holders.extend(rules.keys().copied());
        }
        holders.remove(&1);
        let candidates: BTreeSet<i64> = holders
            .iter()
            .copied()
            .filter(|id| {
                !truths.contains_key(id)
                    && !unreadable.contains(id)
                    // Listed by a listing that failed half-way: it exists, though unread.
                    && (report.listing_complete || !listed.contains(id))
            })
            .collect();
        if !candidates.is_empty() {
            let total = holders.len();
            let share = candidates.len() as f64 / total.max(1) as f64;
            let refusal = if !report.listing_complete {
                Some(format!(
                    "SMRT Link's listing was incomplete; {} projects not removed",
                    candidates.len()
                ))
            } else if force {
                None
            } else if candidates.len() == total {
                Some(format!(
                    "the listing would remove all {total} known projects; pass force to allow it"
                ))
            } else if share > self.config.max_removal_share {
                Some(format!(
                    "the listing would remove {} of {total} known projects ({:.0}%), more than the allowed {:.0}%; pass force to allow it",
                    candidates.len(),
                    share * 100.0,
                    self.config.max_removal_share * 100.0
                ))
            } else {
                None
            };
            match refusal {
                Some(reason) => {
                    report.removals_refused = true;
                    report.refused_reason = reason;
                }
                None => {
                    for id in &candidates {
                        if !dry_run && known.get(id) == Some(&false) {
                            self.store.mark_project_deleted(*id).await?;
                        }
                        let mut items = Vec::new();
                        if staged.as_ref().is_some_and(|s| s.contains_key(id)) {
                            items.push(item(
                                *id,
                                Target::Staging,
                                Operation::Remove,
                                "gone from SMRT Link; still staged".into(),
                            ));
                        }
                        if rules.as_ref().is_some_and(|r| r.contains_key(id)) {
                            items.push(item(
                                *id,
                                Target::Access,
                                Operation::Remove,
                                "gone from SMRT Link; rules still held".into(),
                            ));
                        }
                        if !items.is_empty() {
                            per_project.insert(*id, items);
                        }
                    }
                }
            }
        }

        // 5. One change per project that differs.
        for (id, mut items) in per_project {
            if !dry_run {
                let targets: Vec<Target> = items.iter().map(|i| i.target).collect();
                let text = format!(
                    "resync: {}",
                    items
                        .iter()
                        .map(|i| format!("{} {}", i.target, i.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let change_id = self
                    .store
                    .record_read_change(id, ChangeReason::Resync, &targets, &text)
                    .await?;
                for i in &mut items {
                    i.change_id = change_id;
                }
            }
            report.items.extend(items);
        }
        if !dry_run && !report.items.is_empty() {
            self.wake_tasks.all();
        }
        Ok(report)
    }

    /// Runs at start and then every `interval` until `cancel` fires. A resync that fails (SMRT
    /// Link down, lease held elsewhere) is tried again sooner.
    pub fn spawn_periodic(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let resync = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match resync.run(false, false).await {
                    Ok(report) if report.listing_complete => resync.config.interval,
                    Ok(_) => resync.config.interval.min(Duration::from_secs(60)),
                    Err(ResyncError::Busy) => resync.config.interval,
                    Err(error) => {
                        tracing::warn!(%error, "resync failed");
                        resync.config.interval.min(Duration::from_secs(60))
                    }
                };
                tracing::info!(next_in = ?wait, "next resync scheduled");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

fn item(project_id: i64, target: Target, operation: Operation, reason: String) -> Item {
    Item {
        project_id,
        target,
        operation,
        reason,
        change_id: 0,
    }
}

/// Uuids staging keeps as directories of their own: children whose parent is in the same
/// project live inside the parent's directory.
fn top_level(datasets: &[crate::model::DatasetTruth]) -> BTreeSet<String> {
    let all: BTreeSet<&str> = datasets.iter().map(|d| d.uuid.as_str()).collect();
    datasets
        .iter()
        .filter(|d| d.parent_uuid.as_deref().is_none_or(|p| !all.contains(p)))
        .map(|d| d.uuid.clone())
        .collect()
}

fn staging_difference(
    desired: &Desired,
    staged: Option<&(String, BTreeSet<String>)>,
) -> Option<String> {
    let Some((directory, uuids)) = staged else {
        return Some("not staged".into());
    };
    if *directory != desired.directory {
        return Some(format!(
            "staged as {directory:?}, SMRT Link names it {:?}",
            desired.directory
        ));
    }
    let want = top_level(&desired.datasets);
    let all_desired: BTreeSet<&str> = desired.datasets.iter().map(|d| d.uuid.as_str()).collect();
    let have: BTreeSet<String> = uuids
        .iter()
        .filter(|u| !all_desired.contains(u.as_str()) || want.contains(*u))
        .cloned()
        .collect();
    if want != have {
        let missing = want.difference(&have).count();
        let extra = have.difference(&want).count();
        return Some(format!(
            "{missing} datasets not staged, {extra} staged datasets no longer in the project"
        ));
    }
    None
}

fn access_difference(desired: &Desired, rules: &[access::Rule]) -> Option<String> {
    let path = desired.globus_path();
    let want: BTreeSet<&str> = desired.shared_logins.iter().map(String::as_str).collect();
    let held: BTreeSet<&str> = rules
        .iter()
        .filter(|r| r.path == path && r.state != access::RuleState::Deleting as i32)
        .map(|r| r.login.as_str())
        .collect();
    let stale = rules
        .iter()
        .filter(|r| r.path != path || r.state == access::RuleState::Deleting as i32)
        .count();
    if want == held && stale == 0 {
        return None;
    }
    let missing = want.difference(&held).count();
    let extra = held.difference(&want).count();
    Some(format!(
        "{missing} members without a rule, {extra} rules of former members, {stale} rules on an old path or being deleted"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DatasetTruth;

    fn ds(uuid: &str, parent: Option<&str>) -> DatasetTruth {
        DatasetTruth {
            uuid: uuid.into(),
            name: uuid.into(),
            path: format!("/x/{uuid}.xml"),
            parent_uuid: parent.map(Into::into),
            num_children: 0,
        }
    }

    fn desired(datasets: Vec<DatasetTruth>, logins: &[&str]) -> Desired {
        Desired {
            project_id: 2,
            deleted: false,
            directory: "Project 2: Tomato".into(),
            datasets,
            shared_logins: logins.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn staging_comparison_ignores_children_inside_their_parent() {
        let d = desired(
            vec![
                ds("p", None),
                ds("c", Some("p")),
                ds("orphan", Some("elsewhere")),
            ],
            &[],
        );
        let staged = (
            "Project 2: Tomato".to_owned(),
            ["p", "orphan"].iter().map(|s| s.to_string()).collect(),
        );
        assert_eq!(staging_difference(&d, Some(&staged)), None);
        let staged_with_child = (
            "Project 2: Tomato".to_owned(),
            ["p", "c", "orphan"].iter().map(|s| s.to_string()).collect(),
        );
        assert_eq!(staging_difference(&d, Some(&staged_with_child)), None);
        let renamed = ("Project 2: Old".to_owned(), staged.1.clone());
        assert!(staging_difference(&d, Some(&renamed)).is_some());
        assert!(staging_difference(&d, None).is_some());
        let missing = (
            "Project 2: Tomato".to_owned(),
            ["p"].iter().map(|s| s.to_string()).collect(),
        );
        assert!(
            staging_difference(&d, Some(&missing))
                .unwrap()
                .contains("1 datasets not staged")
        );
    }

    #[test]
    fn access_comparison_counts_missing_extra_and_stale_rules() {
        let rule = |login: &str, path: &str, state: access::RuleState| access::Rule {
            project_id: 2,
            login: login.into(),
            path: path.into(),
            state: state as i32,
            ..Default::default()
        };
        let d = desired(vec![], &["alice", "bob"]);
        let good = [
            rule("alice", "/Project 2: Tomato/", access::RuleState::Active),
            rule("bob", "/Project 2: Tomato/", access::RuleState::Pending),
        ];
        assert_eq!(access_difference(&d, &good), None);
        assert!(
            access_difference(&d, &good[..1])
                .unwrap()
                .starts_with("1 members without a rule")
        );
        let moved = [
            rule("alice", "/Project 2: Old/", access::RuleState::Active),
            good[1].clone(),
        ];
        assert!(access_difference(&d, &moved).is_some());
        assert_eq!(access_difference(&desired(vec![], &[]), &[]), None);
    }
}
