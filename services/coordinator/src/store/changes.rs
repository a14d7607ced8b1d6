//! Changes: recorded at intake (settling), read from SMRT Link by a reader, then followed
//! through their tasks.

use smrtshare_common::db::Backend;
use sqlx::{AnyConnection, Row as _};

use super::{Result, Store, StoreError, message, parse_col, skip_locked, tasks};
use crate::model::{
    AnalysisJobTruth, ChangeKind, ChangeReason, ChangeStatus, ProjectTruth, ReadState, Target,
};

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
}

/// A change claimed by a reader.
#[derive(Clone, Debug)]
pub struct ChangeClaim {
    /// Change id.
    pub change_id: i64,
    /// Project (0 for discovery/analysis).
    pub project_id: i64,
    /// Kind.
    pub kind: ChangeKind,
    /// Reason.
    pub reason: ChangeReason,
    /// Read attempts so far, this one included (the fencing token).
    pub read_attempts: i64,
}

/// What a reader found.
#[derive(Clone, Debug)]
pub enum ReadOutcome {
    /// A project read: `None` when SMRT Link no longer has it. `directory` is its directory name.
    Project {
        /// The truth, or `None` when the project is gone.
        truth: Option<ProjectTruth>,
        /// The project directory name (from the template).
        directory: String,
    },
    /// A listing found these project ids that were not known.
    Discovered {
        /// New project ids.
        new_ids: Vec<i64>,
        /// Projects listed in all.
        listed: usize,
    },
    /// Analysis jobs listed.
    Jobs {
        /// Every job SMRT Link listed.
        jobs: Vec<AnalysisJobTruth>,
    },
    /// SMRT Link could not be read.
    Failed {
        /// Why.
        message: String,
        /// Try again at this time, or give up when `None`.
        retry_at: Option<i64>,
    },
}

/// A change as stored.
#[derive(Clone, Debug)]
pub struct ChangeRow {
    /// Change id.
    pub change_id: i64,
    /// Project.
    pub project_id: i64,
    /// Reason.
    pub reason: ChangeReason,
    /// Kind.
    pub kind: ChangeKind,
    /// Status.
    pub status: ChangeStatus,
    /// Account of the change.
    pub message: String,
    /// Cause.
    pub caused_by: i64,
    /// Mirrored request.
    pub request: String,
    /// Read phase.
    pub read_state: ReadState,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Read (epoch ms, 0 if not yet).
    pub read_at: i64,
}

const CHANGE_COLUMNS: &str = "change_id, project_id, reason, kind, status, message, caused_by, request, read_state, created_at, read_at";

fn change_row(row: &sqlx::any::AnyRow) -> Result<ChangeRow> {
    Ok(ChangeRow {
        change_id: row.try_get("change_id")?,
        project_id: row.try_get("project_id")?,
        reason: parse_col(row, "reason", ChangeReason::parse)?,
        kind: parse_col(row, "kind", ChangeKind::parse)?,
        status: parse_col(row, "status", ChangeStatus::parse)?,
        message: row.try_get("message")?,
        caused_by: row.try_get("caused_by")?,
        request: row.try_get("request")?,
        read_state: parse_col(row, "read_state", ReadState::parse)?,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

/// Inserts a settling change, or finds the settling change of the same project and kind that
/// it merges into. Returns `(change_id, merged)`.
pub(super) async fn insert_change(
    tx: &mut AnyConnection,
    new: &NewChange,
    now: i64,
) -> Result<(i64, bool)> {
    let inserted = sqlx::query(
        "INSERT INTO changes (project_id, reason, kind, status, message, caused_by, request, read_state, settle_until, created_at)
         VALUES ($1, $2, $3, 'IN_PROGRESS', 'waiting for the settle delay before reading SMRT Link', $4, $5, 'SETTLING', $6, $7)
         ON CONFLICT (project_id, kind) WHERE read_state = 'SETTLING' DO NOTHING
         RETURNING change_id",
    )
    .bind(new.project_id)
    .bind(new.reason.as_str())
    .bind(new.kind.as_str())
    .bind(new.caused_by)
    .bind(message(&new.request))
    .bind(new.settle_until)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = inserted {
        return Ok((row.try_get("change_id")?, false));
    }
    let existing = sqlx::query("SELECT change_id FROM changes WHERE project_id = $1 AND kind = $2 AND read_state = 'SETTLING'")
        .bind(new.project_id)
        .bind(new.kind.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    match existing {
        Some(row) => Ok((row.try_get("change_id")?, true)),
        // The settling change was claimed between the two statements: a retry inserts anew.
        None => Err(StoreError::Database(sqlx::Error::Protocol(
            "settling change vanished; retry".into(),
        ))),
    }
}

/// Changes waiting to be recorded together (PostgreSQL; see [`Store::record_change`]): each
/// with the time it came, answered with `(change_id, merged)`, or `None` when the settling change
/// it would merge into was claimed by a reader as it was inserted (it is recorded again alone).
pub(super) type Intake = super::batch::Batcher<(NewChange, i64), Option<(i64, bool)>>;

/// Most changes one statement records.
pub(super) const MOST_INTAKEN: usize = 64;

/// PostgreSQL: the statement that inserts settling changes, given as a JSON array, as
/// [`insert_change`] does each: of several for the same project and kind the first is inserted
/// (unless a change of that project and kind already settles) and the rest merge into it.
/// `changes` is read as it was before the statement, so a settling change found there was not
/// inserted by it; one that a reader claimed while it ran is found in neither (`change_id` NULL).
const INSERT_CHANGES_PG: &str = "WITH v AS (SELECT * FROM jsonb_to_recordset(CAST($1 AS JSONB))
            AS v(i BIGINT, project_id BIGINT, reason TEXT, kind TEXT, caused_by BIGINT,
                 request TEXT, settle_until BIGINT, created_at BIGINT)),
      first AS (SELECT DISTINCT ON (project_id, kind) * FROM v ORDER BY project_id, kind, i),
      made AS (
          INSERT INTO changes (project_id, reason, kind, status, message, caused_by, request, read_state, settle_until, created_at)
          SELECT project_id, reason, kind, 'IN_PROGRESS', 'waiting for the settle delay before reading SMRT Link',
                 caused_by, request, 'SETTLING', settle_until, created_at
          FROM first ORDER BY i
          ON CONFLICT (project_id, kind) WHERE read_state = 'SETTLING' DO NOTHING
          RETURNING change_id, project_id, kind)
 SELECT v.i, COALESCE(m.change_id, s.change_id) AS change_id,
        CAST(CASE WHEN m.change_id IS NOT NULL AND f.i = v.i THEN 0 ELSE 1 END AS BIGINT) AS merged
 FROM v
 JOIN first f ON f.project_id = v.project_id AND f.kind = v.kind
 LEFT JOIN made m ON m.project_id = v.project_id AND m.kind = v.kind
 LEFT JOIN changes s ON m.change_id IS NULL AND s.project_id = v.project_id
                    AND s.kind = v.kind AND s.read_state = 'SETTLING'
 ORDER BY v.i";

/// Takes the oldest change whose settle delay has passed (or whose reader's lease lapsed).
async fn claim_read_in(
    tx: &mut AnyConnection,
    owner: &str,
    now: i64,
    lease_ms: i64,
) -> Result<Option<ChangeClaim>> {
    let row = sqlx::query(&claim_read_sql(skip_locked(tx), "$1", "$2", "$3", ""))
        .bind(now)
        .bind(owner)
        .bind(now + lease_ms)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(change_claim).transpose()
}

/// The statement that claims the oldest settled change, with the given placeholders for now,
/// the owner and the lease's expiry, and `also` added to the lookup of lapsed reads.
///
/// Settled changes and lapsed reads are looked up apart, each the first in order by its own
/// index (`changes_settled` for the first), so a burst of settling changes is not read and
/// sorted whole per claim.
pub(super) fn claim_read_sql(
    skip: &str,
    now: &str,
    owner: &str,
    expiry: &str,
    also: &str,
) -> String {
    format!(
        "UPDATE changes SET read_state = 'READING', read_owner = {owner}, read_lease_expires_at = {expiry},
                read_attempts = read_attempts + 1
         WHERE change_id = (
             SELECT due.change_id FROM (
                 SELECT s.change_id, s.settle_until FROM (
                     SELECT c.change_id, c.settle_until FROM changes c
                     WHERE c.read_state = 'SETTLING' AND c.settle_until <= {now}
                     ORDER BY c.settle_until, c.change_id LIMIT 1{skip}) s
                 UNION ALL
                 SELECT r.change_id, r.settle_until FROM (
                     SELECT c.change_id, c.settle_until FROM changes c
                     WHERE c.read_state = 'READING' AND c.read_lease_expires_at <= {now}{also}
                     ORDER BY c.settle_until, c.change_id LIMIT 1{skip}) r) due
             ORDER BY due.settle_until, due.change_id LIMIT 1)
         RETURNING change_id, project_id, kind, reason, read_attempts"
    )
}

/// The claim in a row whose claim columns are NULL when nothing was claimed (a `LEFT JOIN`).
pub(super) fn next_change_claim(row: &sqlx::any::AnyRow) -> Result<Option<ChangeClaim>> {
    match row.try_get::<Option<i64>, _>("change_id")? {
        Some(_) => change_claim(row).map(Some),
        None => Ok(None),
    }
}

fn change_claim(row: &sqlx::any::AnyRow) -> Result<ChangeClaim> {
    Ok(ChangeClaim {
        change_id: row.try_get("change_id")?,
        project_id: row.try_get("project_id")?,
        kind: parse_col(row, "kind", ChangeKind::parse)?,
        reason: parse_col(row, "reason", ChangeReason::parse)?,
        read_attempts: row.try_get("read_attempts")?,
    })
}

/// What marks a change read: the fenced UPDATE at the end of [`finish_read_in`].
pub(super) struct Mark<'a> {
    pub(super) read_state: ReadState,
    pub(super) text: &'a str,
    pub(super) status: ChangeStatus,
    pub(super) claim: &'a ChangeClaim,
    pub(super) owner: &'a str,
    pub(super) now: i64,
}

impl Mark<'_> {
    /// The fenced UPDATE, with the given placeholders for the read state, now, the message,
    /// the status, the change, the owner and the attempt.
    pub(super) fn sql(p: [&str; 7]) -> String {
        format!(
            "UPDATE changes SET read_state = {}, read_at = {}, message = {}, read_owner = '', status = {}
             WHERE change_id = {} AND read_state = 'READING' AND read_owner = {} AND read_attempts = {}",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6]
        )
    }
}

/// Records what a reader found, then, with `next_lease_ms`, claims the next settled change
/// for the same owner. The statement that marks the change read comes last and is fenced on
/// the reader's owner and attempt: when the claim was lost it changes nothing, and
/// `StoreError::Lost` rolls back everything before it. On PostgreSQL the next claim is made in
/// that same statement.
async fn finish_read_in(
    tx: &mut AnyConnection,
    claim: &ChangeClaim,
    owner: &str,
    outcome: ReadOutcome,
    now: i64,
    next_lease_ms: Option<i64>,
) -> Result<Option<ChangeClaim>> {
    // Tasks are linked to a change only here, so until now the change has none: its status
    // follows from the read alone, or is IN_PROGRESS when this read made or joined tasks (they
    // are READY: a pending task is READY or waits for its retry, and the latter is superseded
    // by a READY one). It need not be recomputed from the tables.
    // The project whose tasks this read makes or joins (for all targets).
    let (read_state, text, tasks_for) = match outcome {
        ReadOutcome::Project {
            truth: Some(truth),
            directory,
        } => {
            let effects = super::projects::store_truth(tx, &truth, &directory, now).await?;
            for other in &effects {
                let effect = NewChange {
                    project_id: *other,
                    reason: ChangeReason::Effect,
                    kind: ChangeKind::ProjectChanged,
                    request: String::new(),
                    caused_by: claim.change_id,
                    settle_until: now,
                };
                insert_change(tx, &effect, now).await?;
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
            if !effects.is_empty() {
                text.push_str(&format!(
                    "; took datasets from projects {effects:?}, which are re-read"
                ));
            }
            (ReadState::Read, text, Some(truth.id))
        }
        ReadOutcome::Project { truth: None, .. } => {
            super::projects::mark_deleted(tx, claim.project_id, now).await?;
            let text = format!(
                "project {} is gone from SMRT Link: removing it from staging and access",
                claim.project_id
            );
            (ReadState::Read, text, Some(claim.project_id))
        }
        ReadOutcome::Discovered { new_ids, listed } => {
            for id in &new_ids {
                let found = NewChange {
                    project_id: *id,
                    reason: ChangeReason::Effect,
                    kind: ChangeKind::ProjectChanged,
                    request: String::new(),
                    caused_by: claim.change_id,
                    settle_until: now,
                };
                insert_change(tx, &found, now).await?;
            }
            let text = if new_ids.is_empty() {
                format!("SMRT Link lists {listed} projects; none is new")
            } else {
                format!("SMRT Link lists {listed} projects; new: {new_ids:?}")
            };
            (ReadState::Read, text, None)
        }
        ReadOutcome::Jobs { jobs } => {
            let (new, projects) = super::projects::store_jobs(tx, &jobs, now).await?;
            let text = format!(
                "SMRT Link lists {} analysis jobs; {} new (projects {:?}); analysis outputs are recorded, not staged",
                jobs.len(),
                new,
                projects
            );
            (ReadState::Read, text, None)
        }
        ReadOutcome::Failed {
            message: why,
            retry_at: Some(at),
        } => {
            let requeued = sqlx::query(
                "UPDATE changes SET read_state = 'SETTLING', settle_until = $1, message = $2, read_owner = ''
                 WHERE change_id = $3 AND read_state = 'READING' AND read_owner = $6 AND read_attempts = $7
                   AND NOT EXISTS (SELECT 1 FROM changes o WHERE o.project_id = $4 AND o.kind = $5 AND o.read_state = 'SETTLING')",
            )
            .bind(at)
            .bind(message(&format!(
                "reading SMRT Link failed (attempt {}): {why}; retrying",
                claim.read_attempts
            )))
            .bind(claim.change_id)
            .bind(claim.project_id)
            .bind(claim.kind.as_str())
            .bind(owner)
            .bind(claim.read_attempts)
            .execute(&mut *tx)
            .await?;
            if requeued.rows_affected() == 1 {
                return match next_lease_ms {
                    Some(lease_ms) => claim_read_in(tx, owner, now, lease_ms).await,
                    None => Ok(None),
                };
            }
            // A newer change of the project settles and reads it again, or the claim was lost
            // (the fenced statement below tells).
            let text = format!(
                "reading SMRT Link failed: {why}; a newer change of the project reads it again"
            );
            (ReadState::Failed, text, None)
        }
        ReadOutcome::Failed {
            message: why,
            retry_at: None,
        } => (
            ReadState::Failed,
            format!("reading SMRT Link failed: {why}"),
            None,
        ),
    };
    let status = if tasks_for.is_some() {
        ChangeStatus::InProgress
    } else {
        change_status(read_state, &[])
    };
    let postgres = super::is_postgres(tx);
    if let Some(project_id) = tasks_for {
        if postgres {
            let text = message(&text);
            let mark = Mark {
                read_state,
                text: &text,
                status,
                claim,
                owner,
                now,
            };
            return tasks::ensure_tasks_and_mark(tx, project_id, &mark, next_lease_ms).await;
        }
        tasks::ensure_tasks(tx, project_id, &Target::ALL, claim.change_id, now).await?;
    }
    let mark = Mark::sql(["$1", "$2", "$3", "$4", "$5", "$6", "$7"]);
    let sql = match next_lease_ms {
        Some(_) if postgres => format!(
            "WITH marked AS ({mark} RETURNING change_id), next AS ({})
             SELECT CAST((SELECT COUNT(*) FROM marked) AS BIGINT) AS marked,
                    next.change_id, next.project_id, next.kind, next.reason, next.read_attempts
             FROM (SELECT 1 AS one) one LEFT JOIN next ON TRUE",
            // Not this change, should its own lease have lapsed: one statement may not
            // update a row twice.
            claim_read_sql(skip_locked(tx), "$2", "$6", "$8", " AND c.change_id <> $5")
        ),
        _ => mark,
    };
    let query = sqlx::query(&sql)
        .bind(read_state.as_str())
        .bind(now)
        .bind(message(&text))
        .bind(status.as_str())
        .bind(claim.change_id)
        .bind(owner)
        .bind(claim.read_attempts);
    if let (Some(lease_ms), true) = (next_lease_ms, postgres) {
        let row = query.bind(now + lease_ms).fetch_one(&mut *tx).await?;
        if row.try_get::<i64, _>("marked")? == 0 {
            return Err(StoreError::Lost);
        }
        return next_change_claim(&row);
    }
    if query.execute(&mut *tx).await?.rows_affected() == 0 {
        return Err(StoreError::Lost);
    }
    match next_lease_ms {
        Some(lease_ms) => claim_read_in(tx, owner, now, lease_ms).await,
        None => Ok(None),
    }
}

impl Store {
    /// Records a change (or merges it into the settling change of the same project and kind).
    /// Returns `(change_id, merged)`.
    ///
    /// On PostgreSQL changes that come at the same time are recorded together, in one statement
    /// (see `batch`): under a burst of mirrored requests a statement and a commit per change
    /// were a third of the database's commits.
    pub async fn record_change(&self, new: NewChange) -> Result<(i64, bool)> {
        let now = self.now();
        if self.backend() == Backend::Postgres {
            let recorded = self
                .batched(
                    |store| &store.intake,
                    (new.clone(), now),
                    || |_: &(NewChange, i64)| true,
                    |store, batch| Box::pin(async move { store.insert_changes_pg(batch).await }),
                )
                .await?;
            if let Some(recorded) = recorded {
                return Ok(recorded);
            }
            // The change it would merge into was claimed meanwhile: alone, below.
        }
        for _ in 0..5 {
            // One statement, or two when the change merges (the second only reads).
            let attempt = self
                .write_autocommit(|tx| {
                    let new = new.clone();
                    Box::pin(async move { insert_change(tx, &new, now).await })
                })
                .await;
            match attempt {
                Err(StoreError::Database(sqlx::Error::Protocol(_))) => continue,
                other => return other,
            }
        }
        Err(StoreError::Corrupt(
            "could not record a change after 5 tries".into(),
        ))
    }

    /// PostgreSQL: records `items` in one statement ([`INSERT_CHANGES_PG`]).
    async fn insert_changes_pg(
        &self,
        items: &[(NewChange, i64)],
    ) -> Result<Vec<Option<(i64, bool)>>> {
        let rows: Vec<serde_json::Value> = items
            .iter()
            .enumerate()
            .map(|(i, (new, now))| {
                serde_json::json!({
                    "i": i,
                    "project_id": new.project_id,
                    "reason": new.reason.as_str(),
                    "kind": new.kind.as_str(),
                    "caused_by": new.caused_by,
                    "request": message(&new.request),
                    "settle_until": new.settle_until,
                    "created_at": now,
                })
            })
            .collect();
        let rows = serde_json::Value::Array(rows).to_string();
        let found = self
            .write_autocommit(|conn| {
                let rows = rows.clone();
                Box::pin(async move {
                    Ok(sqlx::query(INSERT_CHANGES_PG)
                        .bind(rows)
                        .fetch_all(&mut *conn)
                        .await?)
                })
            })
            .await?;
        if found.len() != items.len() {
            return Err(StoreError::Corrupt(format!(
                "{} changes recorded as {} rows",
                items.len(),
                found.len()
            )));
        }
        found
            .iter()
            .map(|row| {
                row.try_get::<Option<i64>, _>("change_id")?
                    .map(|id| Ok((id, row.try_get::<i64, _>("merged")? == 1)))
                    .transpose()
            })
            .collect()
    }

    /// Claims the oldest change whose settle delay has passed (or whose reader's lease lapsed).
    pub async fn claim_settled_change(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<ChangeClaim>> {
        let now = self.now();
        // A read outside any transaction first: when nothing is due the transaction below would
        // find nothing, so it is not begun (on SQLite it would take the write lock for nothing).
        let mut conn = self.kept().await?;
        let due = sqlx::query(
            "SELECT change_id FROM changes WHERE read_state = 'SETTLING' AND settle_until <= $1
             UNION ALL
             SELECT change_id FROM changes WHERE read_state = 'READING' AND read_lease_expires_at <= $1
             LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut **conn)
        .await?;
        conn.keep();
        if due.is_none() {
            return Ok(None);
        }
        let owner = owner.to_owned();
        self.write(|tx| {
            let owner = owner.clone();
            Box::pin(async move { claim_read_in(tx, &owner, now, lease_ms).await })
        })
        .await
    }

    /// Records what the reader found, if it still holds the change (fencing on owner and
    /// attempt). Creates or merges tasks, effect changes for projects that lost datasets, and
    /// discovery changes. Returns false when the claim was lost (nothing written).
    pub async fn finish_read(
        &self,
        claim: &ChangeClaim,
        owner: &str,
        outcome: ReadOutcome,
    ) -> Result<bool> {
        Ok(self
            .finish_read_and_claim(claim, owner, outcome, None)
            .await?
            .0)
    }

    /// Records what the reader found as [`Store::finish_read`] does and, with `next_lease_ms`,
    /// claims the next settled change for the same owner in the same transaction (as
    /// [`Store::claim_settled_change`] would).
    pub async fn finish_read_and_claim(
        &self,
        claim: &ChangeClaim,
        owner: &str,
        outcome: ReadOutcome,
        next_lease_ms: Option<i64>,
    ) -> Result<(bool, Option<ChangeClaim>)> {
        let now = self.now();
        let owner = owner.to_owned();
        let written = self
            .write(|tx| {
                let (claim, owner, outcome) = (claim.clone(), owner.clone(), outcome.clone());
                Box::pin(async move {
                    finish_read_in(tx, &claim, &owner, outcome, now, next_lease_ms).await
                })
            })
            .await;
        match written {
            Ok(next) => Ok((true, next)),
            Err(StoreError::Lost) => Ok((false, None)),
            Err(error) => Err(error),
        }
    }

    /// The earliest time a settling change may be read, if any change is settling.
    pub async fn next_settle(&self) -> Result<Option<i64>> {
        let mut conn = self.kept().await?;
        let row = sqlx::query(
            "SELECT MIN(settle_until) AS due FROM changes WHERE read_state = 'SETTLING'",
        )
        .fetch_one(&mut **conn)
        .await?;
        conn.keep();
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// Records a change that needs no SMRT Link read (resync already read it): the change is
    /// READ at once and tasks are created (or merged) for `targets`.
    pub async fn record_read_change(
        &self,
        project_id: i64,
        reason: ChangeReason,
        targets: &[Target],
        text: &str,
    ) -> Result<i64> {
        let now = self.now();
        let targets = targets.to_vec();
        let text = message(text);
        self.write(|tx| {
            let targets = targets.clone();
            let text = text.clone();
            Box::pin(async move {
                let row = sqlx::query(
                    "INSERT INTO changes (project_id, reason, kind, status, message, read_state, settle_until, created_at, read_at)
                     VALUES ($1, $2, 'PROJECT_CHANGED', 'IN_PROGRESS', $3, 'READ', $4, $4, $4) RETURNING change_id",
                )
                .bind(project_id)
                .bind(reason.as_str())
                .bind(&text)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let change_id: i64 = row.try_get("change_id")?;
                tasks::ensure_tasks(tx, project_id, &targets, change_id, now).await?;
                recompute_statuses(tx, ChangesOf::Change(change_id)).await?;
                Ok(change_id)
            })
        })
        .await
    }

    /// The status the database's rule ([`status_sql`], by which the store writes statuses)
    /// gives a change in `read_state` whose tasks are in `states`. For tests: it must agree
    /// with [`change_status`] on both databases.
    pub async fn status_by_rule(
        &self,
        read_state: ReadState,
        states: &[crate::model::TaskState],
    ) -> Result<ChangeStatus> {
        let mut rows = vec![
            "SELECT CAST(1 AS BIGINT) AS change_id, CAST('' AS TEXT) AS state WHERE 1 = 0"
                .to_owned(),
        ];
        rows.extend(
            (0..states.len())
                .map(|i| format!("SELECT CAST(1 AS BIGINT), CAST(${} AS TEXT)", i + 2)),
        );
        let sql = format!(
            "SELECT {} AS status FROM (SELECT CAST(1 AS BIGINT) AS change_id, CAST($1 AS TEXT) AS read_state) c",
            status_sql("c", &rows.join(" UNION ALL "))
        );
        let mut query = sqlx::query(&sql).bind(read_state.as_str());
        for state in states {
            query = query.bind(state.as_str());
        }
        let row = query.fetch_one(&self.db.pool).await?;
        parse_col(&row, "status", ChangeStatus::parse)
    }

    /// One change.
    pub async fn get_change(&self, change_id: i64) -> Result<Option<ChangeRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM changes WHERE change_id = $1"
        ))
        .bind(change_id)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(change_row).transpose()
    }

    /// The effect changes caused by each of `change_ids`, oldest first, in one statement per 500
    /// changes; a change that caused none is absent.
    pub async fn effects_of_changes(
        &self,
        change_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<i64>>> {
        self.grouped(
            change_ids,
            |ids| format!("SELECT caused_by, change_id FROM changes WHERE caused_by IN ({ids}) AND caused_by <> 0 ORDER BY change_id"),
            "caused_by",
            |row| Ok(row.try_get("change_id")?),
        )
        .await
    }

    /// Changes caused by `change_id`.
    pub async fn effects_of(&self, change_id: i64) -> Result<Vec<i64>> {
        let rows =
            // `caused_by <> 0` lets the index of changes that have a cause serve the look-up.
            sqlx::query("SELECT change_id FROM changes WHERE caused_by = $1 AND caused_by <> 0 ORDER BY change_id")
                .bind(change_id)
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter()
            .map(|r| r.try_get("change_id").map_err(StoreError::from))
            .collect()
    }

    /// Changes newest first, older than `before` (0: from the newest), filtered.
    pub async fn list_changes(
        &self,
        project_id: i64,
        status: Option<ChangeStatus>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<ChangeRow>> {
        // Only the filters in use go into the statement, so each query can use its index
        // (changes_project, changes_status, the primary key) instead of scanning the history.
        let mut filters = Vec::new();
        if project_id != 0 {
            filters.push("project_id = $1");
        }
        if status.is_some() {
            filters.push("status = $2");
        }
        if before != 0 {
            filters.push("change_id < $3");
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        };
        // Unused arguments are bound all the same: placeholders are numbered, and the query text
        // names only those it needs. The limit is always there.
        let sql = format!(
            "SELECT {CHANGE_COLUMNS} FROM changes {filter} ORDER BY change_id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(project_id)
            .bind(status.map(ChangeStatus::as_str).unwrap_or(""))
            .bind(before)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter().map(change_row).collect()
    }
}

/// Which changes [`recompute_statuses`] recomputes.
#[derive(Clone, Copy, Debug)]
pub(super) enum ChangesOf {
    /// One change.
    Change(i64),
    /// Every change linked to a task.
    Task(i64),
}

impl ChangesOf {
    fn id(self) -> i64 {
        match self {
            Self::Change(id) | Self::Task(id) => id,
        }
    }

    /// PostgreSQL: the change ids, as the right-hand side of `change_id ...` with the id as
    /// `$1`. Written to go by index whatever the planner knows of the tables: with `IN
    /// (subquery)` and joins, a database whose tables were never analysed (autovacuum off) got
    /// hash joins over every change and every task.
    fn ids_pg(self) -> &'static str {
        match self {
            Self::Change(_) => "= $1",
            Self::Task(_) => {
                "= ANY (ARRAY(SELECT l.change_id FROM change_tasks l WHERE l.task_id = $1))"
            }
        }
    }
}

/// Recomputes the status of the given changes from their read state and their tasks, by the
/// rule of [`status_sql`]. A status that did not change is not written again.
///
/// On PostgreSQL the change rows are locked first ([`lock_changes`]), so two workers finishing
/// the two tasks of one change at once cannot both compute from the other's stale state; under
/// READ COMMITTED the statement after the lock sees what the other committed. (SQLite's
/// transaction holds the write lock.)
pub(super) async fn recompute_statuses(tx: &mut AnyConnection, of: ChangesOf) -> Result<()> {
    lock_changes(tx, of).await?;
    let ids = if super::is_postgres(tx) {
        of.ids_pg()
    } else {
        match of {
            ChangesOf::Change(_) => "= $1",
            ChangesOf::Task(_) => {
                "IN (SELECT l.change_id FROM change_tasks l WHERE l.task_id = $1)"
            }
        }
    };
    // The rule twice rather than a join with a subquery that computes it once: a join may be
    // planned as a hash join over the whole table (see `ChangesOf::ids_pg`).
    let status = status_sql("c", LINKED_STATES);
    sqlx::query(&format!(
        "UPDATE changes AS c SET status = {status} WHERE c.change_id {ids} AND c.status <> {status}"
    ))
    .bind(of.id())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The rows (change_id, state) of the tasks linked to changes, for [`status_sql`]; filtered by
/// change there, so each change's rows come by index.
const LINKED_STATES: &str = "SELECT ct.change_id, (SELECT t.state FROM tasks t WHERE t.task_id = ct.task_id) AS state FROM change_tasks ct";

/// SQL for the status of the change row `change` (an alias with `change_id` and `read_state`)
/// from the rows (change_id, state) of `states`: the rule of [`change_status`], in SQL both
/// databases run, so that a status is computed in the statement that writes it.
pub(super) fn status_sql(change: &str, states: &str) -> String {
    use crate::model::TaskState as T;
    format!(
        "CASE WHEN {change}.read_state IN ('{settling}', '{reading}') THEN '{in_progress}'
              WHEN {change}.read_state = '{read_failed}' THEN '{failed}'
              ELSE (SELECT CASE WHEN COUNT(CASE WHEN s.state IN ('{ready}', '{working}') THEN 1 END) > 0 THEN '{in_progress}'
                                WHEN COUNT(CASE WHEN s.state = '{task_failed}' THEN 1 END) = 0 THEN '{ok}'
                                WHEN COUNT(CASE WHEN s.state = '{task_ok}' THEN 1 END) = 0 THEN '{failed}'
                                ELSE '{partial}' END
                    FROM ({states}) s WHERE s.change_id = {change}.change_id) END",
        settling = ReadState::Settling.as_str(),
        reading = ReadState::Reading.as_str(),
        read_failed = ReadState::Failed.as_str(),
        in_progress = ChangeStatus::InProgress.as_str(),
        failed = ChangeStatus::Failed.as_str(),
        ok = ChangeStatus::Ok.as_str(),
        partial = ChangeStatus::Partial.as_str(),
        ready = T::Ready.as_str(),
        working = T::Working.as_str(),
        task_failed = T::Failed.as_str(),
        task_ok = T::Ok.as_str(),
    )
}

/// PostgreSQL: locks the given changes (`FOR NO KEY UPDATE`, in id order, so two lockers never
/// wait on each other crosswise; it does not block the key-share locks that inserting their
/// task links takes). Nothing on SQLite, whose transaction holds the write lock.
pub(super) async fn lock_changes(tx: &mut AnyConnection, of: ChangesOf) -> Result<()> {
    if !super::is_postgres(tx) {
        return Ok(());
    }
    sqlx::query(&lock_changes_sql(of, "$1"))
        .bind(of.id())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The statement of [`lock_changes`], with `id` for the change's or task's id.
pub(super) fn lock_changes_sql(of: ChangesOf, id: &str) -> String {
    format!(
        "SELECT c.change_id FROM changes c WHERE c.change_id {}
         ORDER BY c.change_id FOR NO KEY UPDATE OF c",
        of.ids_pg().replace("$1", id)
    )
}

/// A change's status: IN_PROGRESS until read and while any task waits or runs; then OK when
/// every task succeeded, FAILED when every task failed (or SMRT Link could not be read),
/// PARTIAL otherwise. Superseded tasks do not count: the task that replaced them is linked too.
pub fn change_status(read_state: ReadState, tasks: &[crate::model::TaskState]) -> ChangeStatus {
    use crate::model::TaskState as T;
    match read_state {
        ReadState::Settling | ReadState::Reading => return ChangeStatus::InProgress,
        ReadState::Failed => return ChangeStatus::Failed,
        ReadState::Read => {}
    }
    let live: Vec<T> = tasks
        .iter()
        .copied()
        .filter(|s| *s != T::Superseded)
        .collect();
    if live.iter().any(|s| matches!(s, T::Ready | T::Working)) {
        return ChangeStatus::InProgress;
    }
    let failed = live.iter().filter(|s| **s == T::Failed).count();
    let ok = live.iter().filter(|s| **s == T::Ok).count();
    match (ok, failed) {
        (_, 0) => ChangeStatus::Ok,
        (0, _) => ChangeStatus::Failed,
        _ => ChangeStatus::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskState as T;

    #[test]
    fn status_follows_read_state_and_tasks() {
        assert_eq!(
            change_status(ReadState::Settling, &[]),
            ChangeStatus::InProgress
        );
        assert_eq!(
            change_status(ReadState::Failed, &[T::Ok]),
            ChangeStatus::Failed
        );
        assert_eq!(change_status(ReadState::Read, &[]), ChangeStatus::Ok);
        assert_eq!(
            change_status(ReadState::Read, &[T::Ok, T::Working]),
            ChangeStatus::InProgress
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Ok, T::Ok]),
            ChangeStatus::Ok
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Ok, T::Failed]),
            ChangeStatus::Partial
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Failed, T::Failed]),
            ChangeStatus::Failed
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Superseded, T::Ok, T::Ok]),
            ChangeStatus::Ok
        );
    }
}
