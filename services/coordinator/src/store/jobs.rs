//! Analysis jobs: recorded from SMRT Link's listings, followed one by one until their state is
//! final (a follower claims a job due for a look, as a reader claims a change), and, once
//! finished, their outputs staged through the project's staging task. A job's stored state is
//! replaced only by a later read, as a project's is.

use std::collections::{BTreeMap, BTreeSet};

use super::rows::{JobClaim, JobRow, NewChangeRow};
use super::tx::Tx;
use super::{Result, Store, StoreError, message, tasks};
use crate::model::{
    AnalysisJobTruth, AnalysisOutputs, ChangeKind, ChangeReason, ChangeStatus, JobOutput,
    ReadState, Target,
};
use crate::rules::{self, CheckSchedule, JobPhase};

/// What a follower found when it looked at a job.
#[derive(Clone, Debug)]
pub enum JobFound {
    /// The job as SMRT Link has it, with its outputs when it is finished (SUCCESSFUL).
    Job {
        /// The job.
        job: AnalysisJobTruth,
        /// Its active output files (empty unless the job is SUCCESSFUL).
        outputs: Vec<JobOutput>,
    },
    /// SMRT Link no longer has the job (404, or soft-deleted).
    Gone,
    /// SMRT Link could not be read; the job is looked at again later.
    Unreadable(String),
}

/// What recording a listing of jobs did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobsRecorded {
    /// Jobs seen for the first time (they are looked at at once).
    pub new: usize,
    /// Jobs gone from SMRT Link (or from every shared project).
    pub gone: usize,
    /// Changes recorded for projects whose staged analysis outputs change.
    pub changes: Vec<i64>,
}

impl Store {
    /// Records a complete listing of SMRT Link's analysis jobs, read from stamp `stamp`: new jobs
    /// of shared projects are looked at at once, jobs whose state changed are looked at again,
    /// finished jobs that moved or were renamed, and jobs gone, change their projects' staging.
    pub async fn record_jobs(&self, jobs: &[AnalysisJobTruth], stamp: i64) -> Result<JobsRecorded> {
        let now = self.now();
        self.retrying("recording analysis jobs", || async move {
            let mut tx = self.begin().await?;
            let recorded = record_jobs_in(&mut *tx, jobs, stamp, now).await?;
            tx.commit().await?;
            Ok(recorded)
        })
        .await
    }

    /// Claims the job due for a look longest until now + `lease_ms`.
    pub async fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<JobClaim>> {
        let now = self.now();
        self.retrying("claiming a job", || async move {
            let mut tx = self.begin().await?;
            let claim = tx.claim_job(owner, now, now + lease_ms).await?;
            tx.commit().await?;
            Ok(claim)
        })
        .await
    }

    /// Renews a job claim (0: hands it back at once); false when it no longer holds.
    pub async fn renew_job(&self, claim: &JobClaim, owner: &str, lease_ms: i64) -> Result<bool> {
        let expires = if lease_ms == 0 {
            0
        } else {
            self.now() + lease_ms
        };
        self.retrying("renewing a job claim", || async move {
            let mut tx = self.begin().await?;
            let held = tx.renew_job(claim, owner, expires).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// Records what a follower found, read from stamp `stamp`, if it still holds the claim:
    /// the job's state (never over a later read), its outputs, and the next look (none once its
    /// state is final). Answers the changes recorded for projects whose staging changes, or
    /// `None` when the claim was lost (nothing written).
    pub async fn finish_job(
        &self,
        claim: &JobClaim,
        owner: &str,
        found: &JobFound,
        stamp: i64,
        schedule: &CheckSchedule,
    ) -> Result<Option<Vec<i64>>> {
        let now = self.now();
        let written = self
            .retrying("recording a job", || async move {
                let mut tx = self.begin().await?;
                let changes =
                    finish_job_in(&mut *tx, claim, owner, found, stamp, schedule, now).await?;
                tx.commit().await?;
                Ok(changes)
            })
            .await;
        match written {
            Ok(changes) => Ok(Some(changes)),
            Err(StoreError::Lost) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The jobs of projects (of every project with `None`).
    pub async fn jobs_of(&self, project_ids: Option<&[i64]>) -> Result<Vec<JobRow>> {
        let mut tx = self.begin_read().await?;
        let jobs = tx.jobs(project_ids).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// The finished jobs of every project with their outputs, by project.
    pub async fn analysis_of_projects(&self) -> Result<BTreeMap<i64, Vec<AnalysisOutputs>>> {
        let mut tx = self.begin_read().await?;
        let rows = tx.analysis(None).await?;
        tx.commit().await?;
        let mut out: BTreeMap<i64, Vec<AnalysisOutputs>> = BTreeMap::new();
        for (project_id, job) in rows {
            out.entry(project_id).or_default().push(job);
        }
        Ok(out)
    }

    /// The earliest time a job is due for a look, if any is followed.
    pub async fn next_job_check(&self) -> Result<Option<i64>> {
        let mut tx = self.begin_read().await?;
        let due = tx.next_job_check().await?;
        tx.commit().await?;
        Ok(due)
    }
}

/// A job row from what SMRT Link says of it.
fn job_row(job: &AnalysisJobTruth, before: Option<&JobRow>, stamp: i64, now: i64) -> JobRow {
    JobRow {
        job_id: job.id,
        project_id: job.project_id,
        name: job.name.clone(),
        state: job.state.clone(),
        message: job.error.clone(),
        checks: before.map_or(0, |b| b.checks),
        next_check_at: before.map_or(now, |b| b.next_check_at),
        stamp,
        checked_at: now,
        outputs: before.map_or(0, |b| b.outputs),
    }
}

/// True when a stored job's outputs are staged in its project.
fn staged(job: &JobRow) -> bool {
    rules::job_phase(&job.state) == JobPhase::Done
}

pub(super) async fn record_jobs_in(
    tx: &mut dyn Tx,
    jobs: &[AnalysisJobTruth],
    stamp: i64,
    now: i64,
) -> Result<JobsRecorded> {
    // Jobs of the General Project (where SMRT Link puts every job by default) are never shared:
    // they are not followed, and one that moves there leaves its project.
    let listed: BTreeMap<i64, &AnalysisJobTruth> = jobs
        .iter()
        .filter(|j| j.project_id > 1)
        .map(|j| (j.id, j))
        .collect();
    let mut recorded = JobsRecorded::default();
    let mut touched = BTreeSet::new();
    for (id, job) in &listed {
        let before = tx.job(*id).await?;
        match &before {
            None => {
                tx.put_job(&job_row(job, None, stamp, now), false).await?;
                recorded.new += 1;
            }
            Some(b) if rules::replaces(stamp, Some(b.stamp)) => {
                let moved = b.project_id != job.project_id || b.name != job.name;
                if !moved && b.state == job.state {
                    continue;
                }
                let mut row = job_row(job, Some(b), stamp, now);
                if b.state != job.state {
                    // The follower reads the new state (and a finished job's outputs) at once.
                    row.state.clone_from(&b.state);
                    row.next_check_at = now;
                }
                if moved && staged(b) {
                    touched.extend([b.project_id, job.project_id]);
                }
                tx.put_job(&row, true).await?;
            }
            Some(_) => {} // read after this listing started: that read stands
        }
    }
    for known in tx.jobs(None).await? {
        if listed.contains_key(&known.job_id) || known.stamp > stamp {
            continue;
        }
        tx.delete_job(known.job_id).await?;
        recorded.gone += 1;
        if staged(&known) {
            touched.insert(known.project_id);
        }
    }
    recorded.changes = analysis_changes(
        tx,
        &touched,
        "analysis jobs moved, renamed or gone at SMRT Link",
        now,
    )
    .await?;
    Ok(recorded)
}

async fn finish_job_in(
    tx: &mut dyn Tx,
    claim: &JobClaim,
    owner: &str,
    found: &JobFound,
    stamp: i64,
    schedule: &CheckSchedule,
    now: i64,
) -> Result<Vec<i64>> {
    if !tx.end_job_claim(claim, owner).await? {
        return Err(StoreError::Lost);
    }
    let Some(before) = tx.job(claim.job_id).await? else {
        return Ok(Vec::new());
    };
    if !rules::replaces(stamp, Some(before.stamp)) {
        return Ok(Vec::new());
    }
    let checks = before.checks + 1;
    let mut touched = BTreeSet::new();
    let text = match found {
        JobFound::Gone => {
            tx.delete_job(claim.job_id).await?;
            if staged(&before) {
                touched.insert(before.project_id);
            }
            format!("analysis job {} is gone from SMRT Link", claim.job_id)
        }
        JobFound::Unreadable(why) => {
            let row = JobRow {
                message: format!("reading the job failed: {why}"),
                checks,
                next_check_at: schedule.next(checks, now),
                ..before.clone()
            };
            tx.put_job(&row, true).await?;
            return Ok(Vec::new());
        }
        JobFound::Job { job, outputs } => {
            let mut row = job_row(job, Some(&before), stamp, now);
            row.checks = checks;
            let phase = rules::job_phase(&job.state);
            row.next_check_at = match phase {
                JobPhase::Pending => schedule.next(checks, now),
                JobPhase::Done | JobPhase::Failed => 0,
            };
            if phase == JobPhase::Done {
                tx.put_outputs(job.id, outputs).await?;
                touched.insert(job.project_id);
            }
            if staged(&before)
                && (before.project_id != job.project_id
                    || phase != JobPhase::Done
                    || before.name != job.name)
            {
                touched.insert(before.project_id);
            }
            if job.project_id <= 1 {
                // Moved to the General Project: no longer shared.
                tx.delete_job(job.id).await?;
            } else {
                tx.put_job(&row, true).await?;
            }
            match phase {
                JobPhase::Done => format!(
                    "analysis job {} {:?} finished: {} outputs",
                    job.id,
                    job.name,
                    outputs.len()
                ),
                JobPhase::Failed => format!(
                    "analysis job {} {:?} ended {}: nothing to stage",
                    job.id, job.name, job.state
                ),
                JobPhase::Pending => {
                    format!("analysis job {} {:?} is {}", job.id, job.name, job.state)
                }
            }
        }
    };
    analysis_changes(tx, &touched, &text, now).await
}

/// One change per project (shared, alive) whose analysis outputs changed: READ at once, with a
/// staging task.
async fn analysis_changes(
    tx: &mut dyn Tx,
    projects: &BTreeSet<i64>,
    text: &str,
    now: i64,
) -> Result<Vec<i64>> {
    let mut changes = Vec::new();
    for &project_id in projects.iter().filter(|id| **id > 1) {
        match tx.project_head(project_id).await? {
            Some(head) if !head.deleted => {}
            // Never read, or gone: its own change stages (or removes) everything.
            _ => continue,
        }
        let row = NewChangeRow {
            project_id,
            reason: ChangeReason::Analysis,
            kind: ChangeKind::ProjectChanged,
            status: ChangeStatus::InProgress,
            message: message(text),
            caused_by: 0,
            request: String::new(),
            read_state: ReadState::Read,
            settle_until: now,
            created_at: now,
            read_at: now,
        };
        let change_id = tx
            .insert_change(&row)
            .await?
            .ok_or_else(|| StoreError::Internal("a read change was not inserted".into()))?;
        tasks::ensure_tasks(tx, project_id, &[Target::Staging], change_id, now).await?;
        tasks::recompute(tx, &[change_id]).await?;
        changes.push(change_id);
    }
    Ok(changes)
}
