//! Renewable copies of SMRT Link's projects, members and datasets. A stored truth is replaced
//! only by a read that started after it ([`rules::replaces`]), and a dataset belongs to the
//! project whose read of it is the most recent.

use std::collections::{BTreeMap, BTreeSet};

use super::queries::TargetStatusRow;
use super::rows::{KnownProject, ProjectHead};
use super::tx::Tx;
use super::{Result, Store};
use crate::model::{DatasetTruth, Desired, MemberTruth, ProjectTruth};
use crate::rules;

/// A project as stored, with what the coordinator knows of its targets.
#[derive(Clone, Debug)]
pub struct ProjectRow {
    /// Id.
    pub project_id: i64,
    /// Name.
    pub name: String,
    /// Directory name.
    pub directory: String,
    /// Gone from SMRT Link.
    pub deleted: bool,
    /// SMRT Link's updatedAt.
    pub updated_at: String,
    /// Last read (epoch ms).
    pub read_at: i64,
    /// Members.
    pub members: Vec<MemberTruth>,
    /// Datasets.
    pub datasets: Vec<DatasetTruth>,
    /// The latest task per target.
    pub targets: Vec<TargetStatusRow>,
    /// Its analysis jobs.
    pub jobs: Vec<super::rows::JobRow>,
}

/// What storing a truth did.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// The truth was stored (false: a read that started later is stored already).
    pub stored: bool,
    /// Projects that lost datasets to this one.
    pub took_from: Vec<i64>,
    /// Datasets left with a project whose read of them is more recent.
    pub yielded: Vec<String>,
    /// Datasets the project held and no longer does (moved to another project, or gone).
    pub lost: Vec<String>,
}

/// Stores what a read stamped `stamp` found about a project, unless a later read is stored
/// already. Datasets it holds are taken from other projects whose stored reads are older, and
/// left with those whose reads are newer. Only what differs from the stored rows is written.
pub(super) async fn store_truth(
    tx: &mut dyn Tx,
    truth: &ProjectTruth,
    directory: &str,
    stamp: i64,
    now: i64,
) -> Result<Stored> {
    let head = tx.project_head(truth.id).await?;
    if !rules::replaces(stamp, head.as_ref().map(|h| h.stamp)) {
        return Ok(Stored::default());
    }
    let row = ProjectHead {
        project_id: truth.id,
        name: truth.name.clone(),
        directory: directory.to_owned(),
        deleted: false,
        updated_at: truth.updated_at.clone(),
        read_at: now,
        stamp,
    };
    tx.put_project(&row, head.is_some()).await?;

    // SMRT Link's lists, one entry per key (the last wins).
    let members: BTreeMap<&str, &MemberTruth> = truth
        .members
        .iter()
        .map(|m| (m.login.as_str(), m))
        .collect();
    let mut datasets: BTreeMap<&str, &DatasetTruth> = truth
        .datasets
        .iter()
        .map(|d| (d.uuid.as_str(), d))
        .collect();

    // Datasets other projects hold: taken from older reads, left with newer ones.
    let uuids: Vec<&str> = datasets.keys().copied().collect();
    let mut taken: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut yielded = BTreeSet::new();
    for holder in tx.holders(&uuids, truth.id).await? {
        if rules::replaces(stamp, Some(holder.stamp)) {
            taken
                .entry(holder.project_id)
                .or_default()
                .push(holder.uuid);
        } else {
            yielded.insert(holder.uuid);
        }
    }
    for (other, uuids) in &taken {
        let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
        tx.delete_datasets(*other, &uuids).await?;
    }
    datasets.retain(|uuid, _| !yielded.contains(*uuid));

    let ids = [truth.id];
    let stored_members: BTreeMap<String, String> = tx
        .members(&ids)
        .await?
        .into_iter()
        .map(|(_, m)| (m.login, m.role))
        .collect();
    let gone: Vec<&str> = stored_members
        .keys()
        .map(String::as_str)
        .filter(|login| !members.contains_key(login))
        .collect();
    tx.delete_members(truth.id, &gone).await?;
    let changed: Vec<&MemberTruth> = members
        .values()
        .copied()
        .filter(|m| stored_members.get(&m.login) != Some(&m.role))
        .collect();
    tx.put_members(truth.id, &changed).await?;

    let stored_datasets: BTreeMap<String, DatasetTruth> = tx
        .datasets(&ids)
        .await?
        .into_iter()
        .map(|(_, d)| (d.uuid.clone(), d))
        .collect();
    let lost: Vec<&str> = stored_datasets
        .keys()
        .map(String::as_str)
        .filter(|uuid| !datasets.contains_key(uuid))
        .collect();
    tx.delete_datasets(truth.id, &lost).await?;
    let changed: Vec<&DatasetTruth> = datasets
        .values()
        .copied()
        .filter(|d| stored_datasets.get(&d.uuid) != Some(*d))
        .collect();
    tx.put_datasets(truth.id, &changed).await?;

    Ok(Stored {
        stored: true,
        took_from: taken.into_keys().filter(|id| *id != 1).collect(),
        yielded: yielded.into_iter().collect(),
        lost: lost.into_iter().map(str::to_owned).collect(),
    })
}

/// Marks a project gone from SMRT Link (creating its row if it was never known) and forgets its
/// members and datasets, unless a later read is stored already. True when marked.
pub(super) async fn mark_deleted(
    tx: &mut dyn Tx,
    project_id: i64,
    stamp: i64,
    now: i64,
) -> Result<bool> {
    let head = tx.project_head(project_id).await?;
    if !rules::replaces(stamp, head.as_ref().map(|h| h.stamp)) {
        return Ok(false);
    }
    let exists = head.is_some();
    // The name and directory stay, so the operator can still tell which project it was.
    let mut row = head.unwrap_or_else(|| ProjectHead {
        project_id,
        name: String::new(),
        directory: String::new(),
        deleted: true,
        updated_at: String::new(),
        read_at: now,
        stamp,
    });
    row.deleted = true;
    row.read_at = now;
    row.stamp = stamp;
    tx.put_project(&row, exists).await?;
    let ids = [project_id];
    let members: Vec<String> = tx
        .members(&ids)
        .await?
        .into_iter()
        .map(|(_, m)| m.login)
        .collect();
    tx.delete_members(
        project_id,
        &members.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    let datasets: Vec<String> = tx
        .datasets(&ids)
        .await?
        .into_iter()
        .map(|(_, d)| d.uuid)
        .collect();
    tx.delete_datasets(
        project_id,
        &datasets.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    Ok(true)
}

impl Store {
    /// The desired state of a project as its tasks send it, or `None` if it was never read.
    pub async fn desired(&self, project_id: i64) -> Result<Option<Desired>> {
        let mut tx = self.begin_read().await?;
        let desired = tx.desired(project_id).await?;
        tx.commit().await?;
        Ok(desired)
    }

    /// Every known project, with its deleted flag and stamp.
    pub async fn known_projects(&self) -> Result<Vec<KnownProject>> {
        let mut tx = self.begin_read().await?;
        let known = tx.known_projects().await?;
        tx.commit().await?;
        Ok(known)
    }

    /// Stores a project's truth outside any change (resync's rebuild), unless a read that
    /// started later is stored already. Returns whether it was stored.
    pub async fn store_project_truth(
        &self,
        truth: &ProjectTruth,
        directory: &str,
        stamp: i64,
    ) -> Result<bool> {
        let now = self.now();
        self.retrying("storing a project", || async move {
            let mut tx = self.begin().await?;
            let stored = store_truth(&mut *tx, truth, directory, stamp, now).await?;
            tx.commit().await?;
            Ok(stored.stored)
        })
        .await
    }

    /// Marks a project gone from SMRT Link outside any change (resync), unless a read that
    /// started later is stored already. Returns whether it was marked.
    pub async fn mark_project_deleted(&self, project_id: i64, stamp: i64) -> Result<bool> {
        let now = self.now();
        self.retrying("marking a project deleted", || async move {
            let mut tx = self.begin().await?;
            let marked = mark_deleted(&mut *tx, project_id, stamp, now).await?;
            tx.commit().await?;
            Ok(marked)
        })
        .await
    }

    /// One project with members, datasets and the latest task per target.
    pub async fn get_project(&self, project_id: i64) -> Result<Option<ProjectRow>> {
        Ok(self
            .list_projects(project_id - 1, 1, true)
            .await?
            .into_iter()
            .find(|p| p.project_id == project_id))
    }

    /// Projects with id greater than `after`, ordered by id (a constant number of statements
    /// per page).
    pub async fn list_projects(
        &self,
        after: i64,
        limit: i64,
        include_deleted: bool,
    ) -> Result<Vec<ProjectRow>> {
        let mut tx = self.begin_snapshot().await?;
        let heads = tx.projects(after, limit, include_deleted).await?;
        let ids: Vec<i64> = heads.iter().map(|h| h.project_id).collect();
        let mut members: BTreeMap<i64, Vec<MemberTruth>> = BTreeMap::new();
        for (id, m) in tx.members(&ids).await? {
            members.entry(id).or_default().push(m);
        }
        let mut datasets: BTreeMap<i64, Vec<DatasetTruth>> = BTreeMap::new();
        for (id, d) in tx.datasets(&ids).await? {
            datasets.entry(id).or_default().push(d);
        }
        let mut jobs: BTreeMap<i64, Vec<super::rows::JobRow>> = BTreeMap::new();
        for job in tx.jobs(Some(&ids)).await? {
            jobs.entry(job.project_id).or_default().push(job);
        }
        let mut targets: BTreeMap<i64, Vec<TargetStatusRow>> = BTreeMap::new();
        for t in tx.latest_tasks(Some(&ids)).await? {
            targets.entry(t.project_id).or_default().push(t.into());
        }
        tx.commit().await?;
        Ok(heads
            .into_iter()
            .map(|h| ProjectRow {
                members: members.remove(&h.project_id).unwrap_or_default(),
                datasets: datasets.remove(&h.project_id).unwrap_or_default(),
                targets: targets.remove(&h.project_id).unwrap_or_default(),
                jobs: jobs.remove(&h.project_id).unwrap_or_default(),
                project_id: h.project_id,
                name: h.name,
                directory: h.directory,
                deleted: h.deleted,
                updated_at: h.updated_at,
                read_at: h.read_at,
            })
            .collect())
    }
}
