//! Changes: recorded at intake (settling; a later event of the same project and kind merges in),
//! claimed by a reader once settled, and marked read with what SMRT Link said.

use std::collections::BTreeSet;

use super::rows::{NewChangeRow, ReadClaim};
use super::tx::Tx;
use super::{Result, Store, StoreError, message, projects, tasks};
use crate::model::{ChangeKind, ChangeReason, ChangeStatus, ProjectTruth, ReadState, Target};
use crate::rules;

/// A change to record.
#[derive(Clone, Debug)]
pub struct NewChange {
    /// The project (0 for discovery and analysis changes).
    pub project_id: i64,
    /// Why.
    pub reason: ChangeReason,
    /// What about.
    pub kind: ChangeKind,
    /// The mirrored request ("PUT /smrt-link/projects/2"), if any.
    pub request: String,
    /// The change that caused this one, or 0.
    pub caused_by: i64,
    /// When SMRT Link may be read for it (epoch ms).
    pub settle_until: i64,
    /// How long after a settling change was first recorded a merge may still push its settle
    /// time (ms); see [`rules::merged_settle`].
    pub max_settle_ms: i64,
}

/// What a reader found for a change.
#[derive(Clone, Debug)]
pub enum Found {
    /// The project as SMRT Link has it.
    Project {
        /// The truth.
        truth: ProjectTruth,
        /// Its directory name (from the template).
        directory: String,
        /// The stamp taken when the read started.
        stamp: i64,
    },
    /// SMRT Link no longer has the project.
    Gone {
        /// The stamp taken when the read started.
        stamp: i64,
    },
    /// A listing of every project id (discovery).
    Listing {
        /// The ids listed.
        ids: Vec<i64>,
    },
    /// A complete listing of analysis jobs.
    Jobs {
        /// Every active job SMRT Link lists.
        jobs: Vec<crate::model::AnalysisJobTruth>,
        /// The stamp taken when the listing started.
        stamp: i64,
    },
    /// SMRT Link could not be read.
    Failed {
        /// Why.
        message: String,
        /// Try again at this time, or give up when `None`.
        retry_at: Option<i64>,
    },
}

/// What recording a read did besides the change itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadRecorded {
    /// Datasets the project no longer holds: the projects they moved to changed too, which only
    /// SMRT Link can tell (see the reader).
    pub lost: Vec<String>,
    /// Effect changes it recorded (projects that lost datasets to this one, new projects a
    /// listing found), not counting those merged into changes already settling.
    pub effects: usize,
}

/// The message a change starts with.
const SETTLING: &str = "waiting for the settle delay before reading SMRT Link";

impl Store {
    /// Records a change, or merges it into the settling change of the same project and kind
    /// (pushing that change's settle time, within its bound). Returns `(change_id, merged)`.
    pub async fn record_change(&self, new: &NewChange) -> Result<(i64, bool)> {
        let now = self.now();
        self.retrying("recording a change", || async move {
            let mut tx = self.begin().await?;
            let recorded = record_in(&mut *tx, new, now).await?;
            tx.commit().await?;
            Ok(recorded)
        })
        .await
    }

    /// The next read stamp: taken right before a read of SMRT Link starts.
    pub async fn next_stamp(&self) -> Result<i64> {
        self.retrying("taking a read stamp", || async move {
            let mut tx = self.begin_single_write().await?;
            let stamp = tx.next_stamp().await?;
            tx.commit().await?;
            Ok(stamp)
        })
        .await
    }

    /// Claims the change settled longest (or whose reader's lease lapsed) until now + `lease_ms`.
    pub async fn claim_read(&self, owner: &str, lease_ms: i64) -> Result<Option<ReadClaim>> {
        let now = self.now();
        self.retrying("claiming a change", || async move {
            let mut tx = self.begin().await?;
            let claim = tx.claim_read(owner, now, now + lease_ms).await?;
            tx.commit().await?;
            Ok(claim)
        })
        .await
    }

    /// Renews a read's lease; false when the claim no longer holds.
    pub async fn renew_read(&self, claim: &ReadClaim, owner: &str, lease_ms: i64) -> Result<bool> {
        let expires = self.now() + lease_ms;
        self.retrying("renewing a read", || async move {
            let mut tx = self.begin().await?;
            let held = tx.renew_read(claim, owner, expires).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// Hands a claimed read back at once (its lease ends now), so that any reader takes it
    /// without waiting for the lease to lapse.
    pub async fn release_read(&self, claim: &ReadClaim, owner: &str) -> Result<bool> {
        self.retrying("handing a read back", || async move {
            let mut tx = self.begin().await?;
            let held = tx.renew_read(claim, owner, 0).await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// Records what a reader found, if it still holds the change (fenced on owner and attempt):
    /// the truth (never over a newer one), effect changes for projects that lost datasets to
    /// this one, discovered projects, and the project's tasks. Answers `None` when the claim was
    /// lost (nothing written).
    pub async fn finish_read(
        &self,
        claim: &ReadClaim,
        owner: &str,
        found: &Found,
    ) -> Result<Option<ReadRecorded>> {
        let now = self.now();
        let written = self
            .retrying("recording a read", || async move {
                let mut tx = self.begin().await?;
                let recorded = finish_read_in(&mut *tx, claim, owner, found, now).await?;
                tx.commit().await?;
                Ok(recorded)
            })
            .await;
        match written {
            Ok(recorded) => Ok(Some(recorded)),
            Err(StoreError::Lost) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Records a change that needs no read (resync read SMRT Link already): READ at once, with
    /// tasks created (or joined) for `targets`.
    pub async fn record_read_change(
        &self,
        project_id: i64,
        reason: ChangeReason,
        targets: &[Target],
        text: &str,
    ) -> Result<i64> {
        let now = self.now();
        self.retrying("recording a resync change", || async move {
            let mut tx = self.begin().await?;
            let row = NewChangeRow {
                project_id,
                reason,
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
            tasks::ensure_tasks(&mut *tx, project_id, targets, change_id, now).await?;
            tasks::recompute(&mut *tx, &[change_id]).await?;
            tx.commit().await?;
            Ok(change_id)
        })
        .await
    }
}

/// Records a change in `tx` (see [`Store::record_change`]).
async fn record_in(tx: &mut dyn Tx, new: &NewChange, now: i64) -> Result<(i64, bool)> {
    let row = NewChangeRow {
        project_id: new.project_id,
        reason: new.reason,
        kind: new.kind,
        status: ChangeStatus::InProgress,
        message: SETTLING.into(),
        caused_by: new.caused_by,
        request: message(&new.request),
        read_state: ReadState::Settling,
        settle_until: new.settle_until,
        created_at: now,
        read_at: 0,
    };
    if let Some(change_id) = tx.insert_change(&row).await? {
        return Ok((change_id, false));
    }
    match tx.settling_change(new.project_id, new.kind).await? {
        Some((change_id, created_at, settle_until)) => {
            let until = rules::merged_settle(
                settle_until,
                created_at,
                new.settle_until,
                new.max_settle_ms,
            );
            if until != settle_until {
                tx.set_settle(change_id, until).await?;
            }
            Ok((change_id, true))
        }
        // Claimed by a reader between the two statements: the transaction is tried again.
        None => Err(StoreError::Conflict(
            "the settling change was claimed meanwhile".into(),
        )),
    }
}

/// An effect change: another project to read at once because this change touched it.
pub fn effect(project_id: i64, kind: ChangeKind, caused_by: i64, now: i64) -> NewChange {
    NewChange {
        project_id,
        reason: ChangeReason::Effect,
        kind,
        request: String::new(),
        caused_by,
        settle_until: now,
        max_settle_ms: 0,
    }
}

async fn finish_read_in(
    tx: &mut dyn Tx,
    claim: &ReadClaim,
    owner: &str,
    found: &Found,
    now: i64,
) -> Result<ReadRecorded> {
    let mut recorded = ReadRecorded::default();
    let (state, text) = match found {
        Found::Project {
            truth,
            directory,
            stamp,
        } => {
            let stored = projects::store_truth(tx, truth, directory, *stamp, now).await?;
            recorded.lost.clone_from(&stored.lost);
            let mut touched: BTreeSet<i64> = stored.took_from.iter().copied().collect();
            touched.retain(|id| *id > 1 && *id != truth.id);
            for other in &touched {
                let change = effect(*other, ChangeKind::ProjectChanged, claim.change_id, now);
                let (_, merged) = record_in(tx, &change, now).await?;
                recorded.effects += usize::from(!merged);
            }
            let shared = truth.members.iter().filter(|m| m.is_shared()).count();
            let mut text = format!(
                "read project {} {:?}: {} datasets, {} members ({} shared); directory {:?}",
                truth.id,
                truth.name,
                truth.datasets.len(),
                truth.members.len(),
                shared,
                directory
            );
            if !touched.is_empty() {
                text.push_str(&format!(
                    "; took datasets from projects {touched:?}, which are read again"
                ));
            }
            if !stored.lost.is_empty() {
                text.push_str(&format!(
                    "; {} datasets left it (the projects they moved to are read again)",
                    stored.lost.len()
                ));
            }
            if !stored.yielded.is_empty() {
                text.push_str(&format!(
                    "; {} datasets left with projects read more recently",
                    stored.yielded.len()
                ));
            }
            project_tasks(tx, claim, stored.stored, *stamp, text, now).await?
        }
        Found::Gone { stamp } => {
            let stored = projects::mark_deleted(tx, claim.project_id, *stamp, now).await?;
            let text = format!(
                "project {} is gone from SMRT Link: removing it from staging and access",
                claim.project_id
            );
            project_tasks(tx, claim, stored, *stamp, text, now).await?
        }
        Found::Listing { ids } => {
            // Compared with the projects alive now: a project marked deleted (a mirrored PUT
            // that came before the project existed, say) that is listed is new again.
            let alive: BTreeSet<i64> = tx
                .known_projects()
                .await?
                .into_iter()
                .filter(|p| !p.deleted)
                .map(|p| p.project_id)
                .collect();
            let new: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| *id > 1 && !alive.contains(id))
                .collect::<BTreeSet<i64>>()
                .into_iter()
                .collect();
            for id in &new {
                let change = effect(*id, ChangeKind::ProjectChanged, claim.change_id, now);
                let (_, merged) = record_in(tx, &change, now).await?;
                recorded.effects += usize::from(!merged);
            }
            let text = if new.is_empty() {
                format!("SMRT Link lists {} projects; none is new", ids.len())
            } else {
                format!("SMRT Link lists {} projects; new: {new:?}", ids.len())
            };
            (ReadState::Read, text)
        }
        Found::Jobs { jobs, stamp } => {
            let done = super::jobs::record_jobs_in(tx, jobs, *stamp, now).await?;
            (
                ReadState::Read,
                format!(
                    "SMRT Link lists {} analysis jobs: {} new (looked at now), {} gone; {} projects' staging changes",
                    jobs.len(),
                    done.new,
                    done.gone,
                    done.changes.len()
                ),
            )
        }
        Found::Failed {
            message: why,
            retry_at: Some(at),
        } => {
            let text = message(&format!(
                "reading SMRT Link failed (attempt {}): {why}; retrying",
                claim.read_attempts
            ));
            if tx.requeue_read(claim, owner, *at, &text).await? {
                return Ok(recorded);
            }
            // A newer change of the project settles and reads it again (or the claim was lost,
            // which the fenced mark below tells).
            (
                ReadState::Failed,
                format!(
                    "reading SMRT Link failed: {why}; a newer change of the project reads it again"
                ),
            )
        }
        Found::Failed {
            message: why,
            retry_at: None,
        } => (
            ReadState::Failed,
            format!("reading SMRT Link failed: {why}"),
        ),
    };
    if !tx
        .mark_read(claim, owner, state, &message(&text), now)
        .await?
    {
        return Err(StoreError::Lost);
    }
    tasks::recompute(tx, &[claim.change_id]).await?;
    Ok(recorded)
}

/// The tasks a project read leads to, and its message: when the read's truth was stored, the
/// project's tasks are made (or joined); when a newer read was stored already, the change only
/// joins the tasks that wait (they will run on the newer truth).
async fn project_tasks(
    tx: &mut dyn Tx,
    claim: &ReadClaim,
    stored: bool,
    stamp: i64,
    text: String,
    now: i64,
) -> Result<(ReadState, String)> {
    if stored {
        tasks::ensure_tasks(tx, claim.project_id, &Target::ALL, claim.change_id, now).await?;
        return Ok((ReadState::Read, text));
    }
    tracing::info!(
        change_id = claim.change_id,
        project_id = claim.project_id,
        stamp,
        "an older read of the project was dropped: a newer one is stored"
    );
    let joined = tasks::join_waiting(tx, claim.project_id, claim.change_id).await?;
    Ok((
        ReadState::Read,
        format!(
            "{text}; dropped: a read that started later is stored already{}",
            if joined {
                " (following the tasks that wait)"
            } else {
                ""
            }
        ),
    ))
}
