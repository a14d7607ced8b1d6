//! Verify: the registry compared with Globus, drift repaired.
//!
//! First group sharing's groups (see [`super::migrate`]); then the rules, with one
//! `access_list` call: each project is checked under its lock with its rows read afresh; rows
//! changed after the list was taken are skipped (an apply got there first, and the list cannot
//! speak for them). Rules smrtshare did not create are never touched and are counted as
//! `foreign` (and against the collection cap). Then every project still held in the other
//! sharing mode is migrated, and the caps are reported, with a warning from 90%.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Core, Failure, Held, find_rule};
use crate::error::Error;
use crate::globus::AccessRule;
use crate::model::{Repair, RepairKind, VerifyReport};
use crate::registry::{RowState, RuleRow};

impl Core {
    /// Compares and repairs (or plans repairs, with `dry_run`).
    pub async fn verify(&self, dry_run: bool) -> Result<VerifyReport, Error> {
        let mut repairs = self.verify_groups(dry_run).await?;
        let listed_at = self.clock.now_millis();
        let rules = self.globus.list_rules().await?;
        let by_id: HashMap<&str, &AccessRule> = rules
            .iter()
            .filter_map(|r| r.id.as_deref().map(|id| (id, r)))
            .collect();
        let projects: BTreeSet<i64> = self
            .registry
            .all_rows()
            .await?
            .iter()
            .map(|r| r.project_id)
            .collect();

        let mut ours: HashSet<String> = HashSet::new();
        let mut checked = 0u32;
        for project_id in projects {
            let _turn = self.locks.lock(project_id).await;
            for row in self.registry.project_rows(project_id).await? {
                checked += 1;
                if row.state != RowState::External
                    && let Some(rule) = listed_rule(&row, &by_id)
                    && let Some(id) = &rule.id
                {
                    ours.insert(id.clone());
                }
                if row.updated_at > listed_at {
                    continue;
                }
                if let Some(repair) = self
                    .verify_row(&row, &rules, &by_id, dry_run, &mut ours)
                    .await?
                {
                    repairs.push(repair);
                }
            }
        }
        let foreign = by_id.keys().filter(|id| !ours.contains(**id)).count();
        self.observe_foreign(&rules, &|id| ours.contains(id));
        repairs.extend(self.converge_projects(dry_run).await?);
        let caps = self.cap_usage().await?;
        let warnings = caps.warnings(self.policy.caps.warn_at);
        for warning in &warnings {
            tracing::warn!(%warning, "globus cap nearly reached");
        }
        tracing::info!(
            checked,
            foreign,
            repairs = repairs.len(),
            dry_run,
            "verify compared the registry with the collection"
        );
        Ok(VerifyReport {
            dry_run,
            checked,
            foreign: u32::try_from(foreign).unwrap_or(u32::MAX),
            repairs,
            caps,
            warnings,
        })
    }

    async fn verify_row(
        &self,
        row: &RuleRow,
        rules: &[AccessRule],
        by_id: &HashMap<&str, &AccessRule>,
        dry_run: bool,
        ours: &mut HashSet<String>,
    ) -> Result<Option<Repair>, Error> {
        let listed = listed_rule(row, by_id);
        let now = self.clock.now_millis();
        let plan = |kind: RepairKind| Repair {
            kind,
            project_id: row.project_id,
            rule: Some(row.clone()),
            detail: String::new(),
            done: false,
            error: None,
        };
        match row.state {
            RowState::Active => match listed {
                Some(rule) => {
                    let held_expiry = rule.expiration_date.map(|e| e.timestamp_millis());
                    let row = if held_expiry == row.expires_at {
                        row.clone()
                    } else {
                        // Changed by hand at Globus: the registry follows (no call).
                        if !dry_run {
                            self.registry.set_expiry(row.id, held_expiry).await?;
                        }
                        RuleRow {
                            expires_at: held_expiry,
                            ..row.clone()
                        }
                    };
                    if !(self.renewal_due(&row) || rule.permissions != row.permissions) {
                        return Ok(None);
                    }
                    if dry_run {
                        return Ok(Some(Repair {
                            rule: Some(row),
                            ..plan(RepairKind::Renewed)
                        }));
                    }
                    let renewed = self.renew(&row).await?;
                    Ok(Some(finish(RepairKind::Renewed, &row, renewed, ours)))
                }
                None => {
                    let expired = row.expires_at.is_some_and(|e| e <= now);
                    let kind = if expired {
                        RepairKind::Renewed
                    } else {
                        RepairKind::Recreated
                    };
                    if dry_run {
                        return Ok(Some(plan(kind)));
                    }
                    tracing::warn!(project_id = row.project_id, login = %row.login, access_id = ?row.access_id, expired, "a rule smrtshare holds is gone at globus; creating it again");
                    let created = self.recreate(row).await?;
                    Ok(Some(finish(kind, row, created, ours)))
                }
            },
            RowState::Pending => {
                let found = find_rule(rules, row);
                let kind = match found {
                    Some(rule) if self.adoptable(rule, row) => RepairKind::Adopted,
                    Some(_) => RepairKind::External,
                    None => RepairKind::Created,
                };
                if dry_run {
                    if let (RepairKind::Adopted, Some(id)) =
                        (kind, found.and_then(|r| r.id.clone()))
                    {
                        ours.insert(id);
                    }
                    return Ok(Some(plan(kind)));
                }
                let held = self.settle_pending(row, rules).await?;
                let kind = match &held {
                    Ok(Held::Adopted(_)) => RepairKind::Adopted,
                    Ok(Held::External(_)) => RepairKind::External,
                    Ok(Held::Created(_)) | Err(_) => kind,
                };
                Ok(Some(finish(kind, row, held.map(|h| h.row().clone()), ours)))
            }
            RowState::Deleting => {
                if dry_run {
                    return Ok(Some(plan(RepairKind::Deleted)));
                }
                let target = if listed.is_some() {
                    row.clone()
                } else {
                    // Already gone at Globus: only the record remains.
                    RuleRow {
                        access_id: None,
                        ..row.clone()
                    }
                };
                let deleted = self.delete(&target).await?.map(|()| row.clone());
                Ok(Some(finish(RepairKind::Deleted, row, deleted, ours)))
            }
            RowState::External => {
                if listed.is_some() {
                    return Ok(None);
                }
                if dry_run {
                    return Ok(Some(plan(RepairKind::Recreated)));
                }
                tracing::info!(project_id = row.project_id, login = %row.login, "the rule that gave this member access is gone; smrtshare creates its own");
                let created = self.recreate(row).await?;
                Ok(Some(finish(RepairKind::Recreated, row, created, ours)))
            }
        }
    }

    /// Opens a fresh intent on a row and creates its rule.
    async fn recreate(&self, row: &RuleRow) -> Result<Result<RuleRow, Failure>, Error> {
        self.registry.reopen(row.id, self.new_expiry_ms()).await?;
        let row = self.reread(row.id).await?;
        Ok(self
            .create(&row, None)
            .await?
            .map(|held| held.row().clone()))
    }
}

/// The listed rule with the row's id, when it is the row's rule (same principal and path). A
/// rule with that id for someone else means the row's rule is gone and Globus reused its id.
fn listed_rule<'a>(row: &RuleRow, by_id: &HashMap<&str, &'a AccessRule>) -> Option<&'a AccessRule> {
    row.access_id
        .as_deref()
        .and_then(|id| by_id.get(id).copied())
        .filter(|rule| {
            rule.principal_type == row.principal.as_str()
                && rule.principal == row.identity_id
                && rule.path == row.path
        })
}

/// A repair from a step's result; rules smrtshare now holds join `ours`.
fn finish(
    kind: RepairKind,
    before: &RuleRow,
    result: Result<RuleRow, Failure>,
    ours: &mut HashSet<String>,
) -> Repair {
    match result {
        Ok(rule) => {
            if rule.state == RowState::Active
                && let Some(id) = &rule.access_id
            {
                ours.insert(id.clone());
            }
            Repair {
                kind,
                project_id: rule.project_id,
                rule: Some(rule),
                detail: String::new(),
                done: true,
                error: None,
            }
        }
        Err(failure) => Repair {
            kind,
            project_id: before.project_id,
            rule: Some(before.clone()),
            detail: String::new(),
            done: false,
            error: Some(format!("{}: {}", failure.code, failure.message)),
        },
    }
}
