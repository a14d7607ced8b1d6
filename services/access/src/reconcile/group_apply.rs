//! Group sharing for one project: the project's group (made when needed), one read rule for it on
//! the project directory (made before members are added, moved on a rename), and one batch of
//! member adds and removes. No rule churn for membership changes. Members who still hold a rule
//! of their own (from rule sharing) keep it until their group membership and the group's rule are
//! in place: the new form is granted before the old is revoked.
//!
//! [`Core::retire_group`] is the way back: under rule sharing, a project's group loses the members
//! who left at once, and is deleted (rules first) once every member holds a rule of their own.

use std::collections::{HashMap, HashSet};

use super::apply::{Ctx, Member, Pass};
use super::groups::{Batch, Change};
use super::rule_apply::ensured_outcome;
use super::rules::Ensured;
use super::{Core, Failure, READ_ONLY};
use crate::error::Error;
use crate::model::{MemberOutcome, OutcomeKind};
use crate::registry::{GroupRow, MemberRow, MemberState, NewIntent, Principal, RowState, RuleRow};

/// The code of members whose group was found gone at Globus (made again on the next apply).
const GROUP_GONE: &str = "GroupGone";

impl Core {
    /// Group sharing for the members of one apply (see the module documentation).
    pub(super) async fn apply_groups(
        &self,
        ctx: &Ctx<'_>,
        members: Vec<Member>,
        group_rules: Vec<RuleRow>,
        leaving: Vec<MemberRow>,
    ) -> Result<Pass, Error> {
        let request = ctx.request;
        let group = self.registry.group(request.project_id).await?;
        if request.dry_run {
            return Ok(self.plan_groups(ctx, members, group.as_ref(), &group_rules, leaving));
        }
        if group.is_none() && !members.iter().any(|m| m.identity.is_some()) {
            // Nobody to share with and no group yet: nothing to make.
            let members = members
                .into_iter()
                .map(|m| {
                    let outcome = unknown_outcome(ctx, &m);
                    (m, outcome, true)
                })
                .collect();
            return Ok(Pass {
                members,
                revoked: Vec::new(),
                complete: true,
            });
        }
        let group = match self.ensure_group(request.project_id, &request.path).await? {
            Ok(group) => group,
            Err(failure) => return Ok(failed_pass(ctx, members, leaving, &failure)),
        };
        let group_id = group.group_id.clone().unwrap_or_default();
        let (here, stale): (Vec<RuleRow>, Vec<RuleRow>) = group_rules
            .into_iter()
            .partition(|r| r.path == request.path && r.identity_id == group_id);
        let intent = NewIntent {
            project_id: request.project_id,
            principal: Principal::Group,
            login: "",
            username: &group.name,
            identity_id: &group_id,
            path: &request.path,
            permissions: READ_ONLY,
            expires_at: self.new_expiry_ms(),
        };
        let rule = self
            .ensure_rule(here.first(), &intent, &ctx.list, None)
            .await?;

        let (changes, refused) = match self.sync_group(ctx, &group, &members, &leaving).await? {
            Some(done) => done,
            None => {
                self.group_gone(&group).await?;
                let failure = Failure {
                    code: GROUP_GONE.to_owned(),
                    message: "the project's group was gone at Globus (deleted by hand?); it is \
                              made again on the next apply"
                        .to_owned(),
                };
                return Ok(failed_pass(ctx, members, Vec::new(), &failure));
            }
        };

        let rule_held = rule.is_ok();
        let mut complete = true;
        if rule_held {
            for old in &stale {
                if let Err(failure) = self.remove(old, &ctx.list).await? {
                    tracing::warn!(project_id = request.project_id, path = %old.path, code = %failure.code, "the group's old rule is not deleted yet");
                    complete = false;
                }
            }
        }
        let mut out = Vec::new();
        for member in members {
            let (outcome, cleaned) = self
                .group_member_outcome(ctx, &member, &rule, !stale.is_empty(), &changes, &refused)
                .await?;
            out.push((member, outcome, cleaned));
        }
        let revoked = leaving
            .iter()
            .map(|row| leaving_outcome(row, changes.get(&row.identity_id), rule.as_ref().ok()))
            .collect();
        Ok(Pass {
            members: out,
            revoked,
            complete,
        })
    }

    /// Writes the member rows and sends one batch: wanted members not yet active are added
    /// (within the identity cap), members who left are removed. `None` when the group is gone.
    #[allow(clippy::type_complexity)]
    async fn sync_group(
        &self,
        ctx: &Ctx<'_>,
        group: &GroupRow,
        members: &[Member],
        leaving: &[MemberRow],
    ) -> Result<Option<(HashMap<String, Change>, HashMap<String, Failure>)>, Error> {
        let request = ctx.request;
        let mut refused = HashMap::new();
        let mut new = Vec::new();
        let mut wanted = HashSet::new();
        // Counted and written one grant at a time, as rules are (see `Core::reserve`).
        let reserving = self.reserving.lock().await;
        for member in members {
            let Some(identity) = &member.identity else {
                continue;
            };
            if member.membership.is_none() {
                // A member whose own rule on the path is replaced adds no effective rule.
                let replacing = member.rows.iter().any(|r| r.path == request.path);
                let extra = if replacing { 0 } else { 1 };
                if let Some(failure) = self.identity_over(identity, extra).await? {
                    refused.insert(identity.clone(), failure);
                    continue;
                }
                new.push((
                    request.logins[member.first].as_str(),
                    member.username.as_str(),
                    identity.as_str(),
                ));
            }
            wanted.insert(identity.clone());
        }
        let rows = self
            .registry
            .insert_members(request.project_id, &new)
            .await?;
        drop(reserving);
        let adds: Vec<MemberRow> = rows
            .into_iter()
            .filter(|r| wanted.contains(&r.identity_id) && r.state != MemberState::Active)
            .collect();
        let removing: Vec<i64> = leaving.iter().map(|r| r.id).collect();
        self.registry
            .set_members(&removing, MemberState::Removing, None)
            .await?;
        match self.change_members(group, &adds, leaving).await? {
            Batch::Done(changes) => Ok(Some((changes, refused))),
            Batch::GroupGone => Ok(None),
        }
    }

    /// A member's outcome under group sharing; once the member is in the group and the group's
    /// rule is held, the member's own rules (from rule sharing) are revoked. Answers whether
    /// that cleanup finished.
    async fn group_member_outcome(
        &self,
        ctx: &Ctx<'_>,
        member: &Member,
        rule: &Result<Ensured, Failure>,
        moved: bool,
        changes: &HashMap<String, Change>,
        refused: &HashMap<String, Failure>,
    ) -> Result<(MemberOutcome, bool), Error> {
        let login = &ctx.request.logins[member.first];
        let Some(identity) = &member.identity else {
            return Ok((unknown_outcome(ctx, member), true));
        };
        let base = MemberOutcome {
            identity_id: Some(identity.clone()),
            ..MemberOutcome::new(login, OutcomeKind::Granted)
        };
        if let Some(failure) = refused.get(identity) {
            return Ok((base.failed(&failure.code, failure.message.clone()), true));
        }
        let was_member = member
            .membership
            .as_ref()
            .is_some_and(|m| m.state == MemberState::Active);
        let in_group = match changes.get(identity) {
            Some(Change::Failed(failure)) => {
                return Ok((base.failed(&failure.code, failure.message.clone()), true));
            }
            Some(Change::Added) => true,
            Some(Change::Removed) | None => was_member,
        };
        let mut outcome = ensured_outcome(rule, base);
        if !outcome.kind.is_done() || !in_group {
            if outcome.kind.is_done() {
                outcome = outcome.failed("NotInGroup", "the member is not in the project's group");
            }
            return Ok((outcome, true));
        }
        outcome.kind = match (was_member, moved, &outcome.kind) {
            (false, _, _) => OutcomeKind::Granted,
            (true, true, _) => OutcomeKind::Moved,
            (true, false, OutcomeKind::Renewed) => OutcomeKind::Renewed,
            (true, false, _) => OutcomeKind::AlreadyGranted,
        };
        outcome.message = if was_member {
            String::new()
        } else {
            "added to the project's group, which holds the read rule".to_owned()
        };
        // The member's own rules are no longer needed: revoked now (granted before revoked).
        let mut cleaned = true;
        for old in &member.rows {
            if let Err(failure) = self.remove(old, &ctx.list).await? {
                cleaned = false;
                outcome.message = format!(
                    "the member's own rule on {} is not deleted yet ({}: {})",
                    old.path, failure.code, failure.message
                );
            } else if outcome.message.is_empty() || !was_member {
                outcome.message = "now through the project's group; the member's own rule is \
                                   revoked"
                    .to_owned();
            }
        }
        Ok((outcome, cleaned))
    }

    /// A dry run under group sharing: what would be made, added, removed (no Globus call).
    fn plan_groups(
        &self,
        ctx: &Ctx<'_>,
        members: Vec<Member>,
        group: Option<&GroupRow>,
        group_rules: &[RuleRow],
        leaving: Vec<MemberRow>,
    ) -> Pass {
        let request = ctx.request;
        let group_id = group.and_then(|g| g.group_id.clone());
        let rule = group_rules.iter().find(|r| {
            r.path == request.path
                && Some(&r.identity_id) == group_id.as_ref()
                && r.state == RowState::Active
        });
        let moved = rule.is_none() && !group_rules.is_empty();
        let members = members
            .into_iter()
            .map(|member| {
                let login = &request.logins[member.first];
                let outcome = match &member.identity {
                    None => unknown_outcome(ctx, &member),
                    Some(identity) => {
                        let active = member
                            .membership
                            .as_ref()
                            .is_some_and(|m| m.state == MemberState::Active);
                        let kind = match (active, rule.is_some(), moved) {
                            (true, true, _) => OutcomeKind::AlreadyGranted,
                            (true, false, true) => OutcomeKind::Moved,
                            _ => OutcomeKind::Granted,
                        };
                        let mut outcome = MemberOutcome {
                            identity_id: Some(identity.clone()),
                            access_id: rule.and_then(|r| r.access_id.clone()),
                            ..MemberOutcome::new(login, kind)
                        };
                        if group.is_none() {
                            outcome.message = "the project's group would be made".to_owned();
                        }
                        outcome
                    }
                };
                (member, outcome, true)
            })
            .collect();
        let revoked = leaving
            .iter()
            .map(|row| member_outcome(row, OutcomeKind::Revoked))
            .collect();
        Pass {
            members,
            revoked,
            complete: true,
        }
    }

    /// Under rule sharing: a project's group (from group sharing) loses the members who left
    /// (at once: they must lose access) and is deleted, its rules first, once every wanted
    /// member holds a rule of their own; members whose rule could not be made keep the group.
    pub(super) async fn retire_group(
        &self,
        ctx: &Ctx<'_>,
        members: &[(Member, MemberOutcome, bool)],
        group_rules: Vec<RuleRow>,
        leaving: Vec<MemberRow>,
    ) -> Result<(Vec<MemberOutcome>, bool), Error> {
        let request = ctx.request;
        let Some(group) = self.registry.group(request.project_id).await? else {
            return Ok((Vec::new(), true));
        };
        if request.dry_run {
            let revoked = leaving
                .iter()
                .map(|row| member_outcome(row, OutcomeKind::Revoked))
                .collect();
            return Ok((revoked, true));
        }
        let removing: Vec<i64> = leaving.iter().map(|r| r.id).collect();
        self.registry
            .set_members(&removing, MemberState::Removing, None)
            .await?;
        let changes = match self.change_members(&group, &[], &leaving).await? {
            Batch::Done(changes) => changes,
            Batch::GroupGone => {
                self.registry
                    .forget_group(group.id, group.project_id)
                    .await?;
                for rule in &group_rules {
                    let _ = self.remove(rule, &ctx.list).await?;
                }
                HashMap::new()
            }
        };
        let revoked: Vec<MemberOutcome> = leaving
            .iter()
            .map(|row| {
                leaving_outcome(
                    row,
                    changes.get(&row.identity_id).or(Some(&Change::Removed)),
                    None,
                )
            })
            .collect();
        let covered = members.iter().all(|(member, outcome, _)| {
            member.membership.is_none() || (outcome.kind.is_done() && member.identity.is_some())
        });
        let mut complete = revoked.iter().all(|o| o.kind.is_done());
        if covered
            && self.registry.group(request.project_id).await?.is_some()
            && let Err(failure) = self.remove_group(&group, &group_rules, &ctx.list).await?
        {
            tracing::warn!(project_id = request.project_id, code = %failure.code, "the project's group is not deleted yet");
            complete = false;
        }
        Ok((revoked, complete))
    }
}

/// The outcome of a member with no identity.
fn unknown_outcome(ctx: &Ctx<'_>, member: &Member) -> MemberOutcome {
    MemberOutcome::new(
        &ctx.request.logins[member.first],
        OutcomeKind::UnknownIdentity,
    )
    .with_message(format!(
        "no Globus identity has the username {:?}",
        member.username
    ))
}

/// An outcome about a member row.
fn member_outcome(row: &MemberRow, kind: OutcomeKind) -> MemberOutcome {
    MemberOutcome {
        identity_id: Some(row.identity_id.clone()),
        ..MemberOutcome::new(&row.login, kind)
    }
}

/// The outcome of a member removed from the group.
fn leaving_outcome(
    row: &MemberRow,
    change: Option<&Change>,
    rule: Option<&Ensured>,
) -> MemberOutcome {
    let outcome = MemberOutcome {
        access_id: rule.and_then(|r| r.row().access_id.clone()),
        ..member_outcome(row, OutcomeKind::Revoked)
    };
    match change {
        Some(Change::Removed) => outcome.with_message("removed from the project's group"),
        Some(Change::Failed(failure)) => outcome.failed(&failure.code, failure.message.clone()),
        Some(Change::Added) | None => outcome.failed(
            "NoAnswer",
            "globus did not say whether the member was removed",
        ),
    }
}

/// Every member failed with `failure` (the group could not be made or was gone).
fn failed_pass(
    ctx: &Ctx<'_>,
    members: Vec<Member>,
    leaving: Vec<MemberRow>,
    failure: &Failure,
) -> Pass {
    let members = members
        .into_iter()
        .map(|member| {
            let outcome = match &member.identity {
                None => unknown_outcome(ctx, &member),
                Some(identity) => MemberOutcome {
                    identity_id: Some(identity.clone()),
                    ..MemberOutcome::new(&ctx.request.logins[member.first], OutcomeKind::Failed)
                }
                .failed(&failure.code, failure.message.clone()),
            };
            (member, outcome, true)
        })
        .collect();
    let revoked = leaving
        .iter()
        .map(|row| {
            member_outcome(row, OutcomeKind::Revoked).failed(&failure.code, failure.message.clone())
        })
        .collect();
    Pass {
        members,
        revoked,
        complete: false,
    }
}
