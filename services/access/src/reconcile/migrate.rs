//! The Verify-driven migration between sharing modes, and the repairs of group sharing.
//!
//! After the mode changes (`SMRTSHARE_ACCESS_SHARING`), every project still held in the other
//! form is brought over by Verify with the members the registry holds (no SMRT Link read, no
//! identity look-up): the new form is granted first and the old one revoked only for members
//! who hold the new one, so nobody loses access for a moment. A dry run lists the plan. The same
//! pass finishes group sharing's loose ends: a group deleted by hand is made again with its
//! members and rule, a member removed from a group by hand is added again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{Core, SharingMode};
use crate::error::Error;
use crate::model::{ApplyRequest, OutcomeKind, Repair, RepairKind};
use crate::registry::{GroupState, MemberState, RowState};

impl Core {
    /// Group sharing's checks against Globus: groups gone (made again) and members missing from
    /// their group (added again). One call for the client's groups, one per group for its
    /// members. Answers the repairs (planned, with `dry_run`).
    pub(crate) async fn verify_groups(&self, dry_run: bool) -> Result<Vec<Repair>, Error> {
        let groups = self.registry.groups().await?;
        if !groups.iter().any(|g| g.state == GroupState::Active) {
            return Ok(Vec::new());
        }
        let listed: HashSet<String> = self
            .globus
            .my_groups()
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect();
        let mut repairs = Vec::new();
        for stale in groups {
            let _turn = self.locks.lock(stale.project_id).await;
            let Some(group) = self.registry.group(stale.project_id).await? else {
                continue;
            };
            let Some(group_id) = group.group_id.clone() else {
                continue;
            };
            if group.state != GroupState::Active {
                continue;
            }
            let repair = |kind, detail: String| Repair {
                kind,
                project_id: group.project_id,
                rule: None,
                detail,
                done: false,
                error: None,
            };
            if !listed.contains(&group_id) {
                let mut repair = repair(
                    RepairKind::GroupRecreated,
                    format!(
                        "group {group_id} is gone at Globus: made again with its members and rule"
                    ),
                );
                if !dry_run {
                    self.group_gone(&group).await?;
                    repair.done = true;
                }
                repairs.push(repair);
                continue;
            }
            let present: HashSet<String> = self
                .globus
                .group(&group_id)
                .await?
                .memberships
                .into_iter()
                .filter(|m| m.status == "active")
                .map(|m| m.identity_id)
                .collect();
            let missing: Vec<_> = self
                .registry
                .members(group.project_id)
                .await?
                .into_iter()
                .filter(|m| m.state == MemberState::Active && !present.contains(&m.identity_id))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let logins: Vec<&str> = missing.iter().map(|m| m.login.as_str()).collect();
            let mut repair = repair(
                RepairKind::MemberAdded,
                format!(
                    "missing from group {group_id}, added again: {}",
                    logins.join(", ")
                ),
            );
            if !dry_run {
                let ids: Vec<i64> = missing.iter().map(|m| m.id).collect();
                // Pending again: the project's convergence below sends the adds.
                self.registry
                    .set_members(&ids, MemberState::Pending, None)
                    .await?;
                repair.done = true;
            }
            repairs.push(repair);
        }
        Ok(repairs)
    }

    /// Brings every project held (partly) in the other form, or with group sharing's work left
    /// open, to the configured mode with the registry's members. Answers one repair per project.
    pub(crate) async fn converge_projects(&self, dry_run: bool) -> Result<Vec<Repair>, Error> {
        let mut repairs = Vec::new();
        for project_id in self.registry.project_ids().await? {
            let _turn = self.locks.lock(project_id).await;
            let Some(request) = self.registry_request(project_id, dry_run).await? else {
                continue;
            };
            let path = request.path.clone();
            let report = self.apply_locked(request, false).await?;
            let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
            let mut failures = Vec::new();
            for member in &report.members {
                *counts.entry(kind_label(member.kind)).or_default() += 1;
                if !member.kind.is_done() {
                    failures.push(format!(
                        "{}: {} {}",
                        member.login,
                        member.globus_code.as_deref().unwrap_or(""),
                        member.message
                    ));
                }
            }
            let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let mode = match self.policy.sharing {
                SharingMode::Rules => "one rule per member",
                SharingMode::Groups => "the project's group",
            };
            repairs.push(Repair {
                kind: RepairKind::Migrated,
                project_id,
                rule: None,
                detail: format!("{path}: to {mode}: {}", summary.join(", ")),
                done: !dry_run && report.complete,
                error: (!failures.is_empty()).then(|| failures.join("; ")),
            });
        }
        Ok(repairs)
    }

    /// The request that brings a project to the configured mode with the members the registry
    /// holds; `None` when the project is already there.
    async fn registry_request(
        &self,
        project_id: i64,
        dry_run: bool,
    ) -> Result<Option<ApplyRequest>, Error> {
        let rows = self.registry.project_rows(project_id).await?;
        let group = self.registry.group(project_id).await?;
        let members = self.registry.members(project_id).await?;
        let (group_rules, own): (Vec<_>, Vec<_>) =
            rows.iter().partition(|r| Core::is_group_rule(r));
        let needed = match self.policy.sharing {
            SharingMode::Rules => group.is_some(),
            SharingMode::Groups => {
                !own.is_empty()
                    || group
                        .as_ref()
                        .is_some_and(|g| g.state != GroupState::Active)
                    || members.iter().any(|m| m.state != MemberState::Active)
                    || !group_rules.iter().any(|r| r.state == RowState::Active)
            }
        };
        if !needed {
            return Ok(None);
        }
        // The project's path: its group's rule's, else the one most of its rules are on.
        let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
        for row in own.iter().filter(|r| r.state != RowState::Deleting) {
            *paths.entry(row.path.as_str()).or_default() += 1;
        }
        let path = group_rules
            .iter()
            .find(|r| r.state != RowState::Deleting)
            .map(|r| r.path.as_str())
            .or_else(|| paths.iter().max_by_key(|(_, n)| **n).map(|(p, _)| *p));
        let Some(path) = path else {
            return Ok(None);
        };
        let logins: BTreeSet<String> = own
            .iter()
            .filter(|r| r.state != RowState::Deleting)
            .map(|r| r.login.clone())
            .chain(
                members
                    .iter()
                    .filter(|m| m.state != MemberState::Removing)
                    .map(|m| m.login.clone()),
            )
            .collect();
        Ok(Some(ApplyRequest::new(
            project_id,
            path.to_owned(),
            logins.into_iter().collect(),
            dry_run,
        )?))
    }
}

fn kind_label(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Granted => "granted",
        OutcomeKind::AlreadyGranted => "already granted",
        OutcomeKind::Revoked => "revoked",
        OutcomeKind::UnknownIdentity => "unknown identity",
        OutcomeKind::Failed => "failed",
        OutcomeKind::Moved => "moved",
        OutcomeKind::Renewed => "renewed",
    }
}
