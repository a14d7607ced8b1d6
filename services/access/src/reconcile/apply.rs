//! ApplyProjectAccess: one project brought to the desired state in the configured sharing mode.
//!
//! The in-sync check reads the registry only: members whose access is recorded (an active rule
//! on the path, or an active group membership with the group's rule on the path) and not near
//! expiry cost no Globus call, and identities are looked up only for members with no record.
//! Revocations run first (they may free slots under the rule cap), then grants and moves,
//! several members at a time. A project still held in the other form (after the mode changed)
//! is moved over: the new form is granted first, the old one revoked after.

use std::collections::HashMap;

use futures::StreamExt as _;

use super::{Core, LazyList, SharingMode};
use crate::error::Error;
use crate::model::{ApplyReport, ApplyRequest, INVALID_LOGIN, MemberOutcome, OutcomeKind};
use crate::registry::{MemberRow, RuleRow};

/// One wanted Globus username (one or more logins mapping to it).
#[derive(Debug)]
pub(super) struct Member {
    /// The username as mapped.
    pub username: String,
    /// Index of the first login mapping to it.
    pub first: usize,
    /// Indices of further logins mapping to the same username.
    pub also: Vec<usize>,
    /// The project's rules for this username (any path, any state).
    pub rows: Vec<RuleRow>,
    /// The member's row in the project's group, if any.
    pub membership: Option<MemberRow>,
    /// The identity, from a record or a look-up.
    pub identity: Option<String>,
}

/// Per-apply context shared by the member tasks.
pub(super) struct Ctx<'a> {
    pub request: &'a ApplyRequest,
    pub list: LazyList,
}

/// What one mode's pass answers: every member with its outcome (and whether its cleanup of old
/// rules finished), and the outcomes of members who left.
pub(super) struct Pass {
    pub members: Vec<(Member, MemberOutcome, bool)>,
    pub revoked: Vec<MemberOutcome>,
    pub complete: bool,
}

impl Core {
    /// Brings one project to the desired state (or plans it, with `dry_run`).
    pub async fn apply(&self, request: ApplyRequest) -> Result<ApplyReport, Error> {
        let _turn = self.locks.lock(request.project_id).await;
        self.apply_locked(request, true).await
    }

    /// [`Self::apply`] with the project's lock held; `from_request`: the member list is SMRT
    /// Link's (so members without an identity are recorded as unresolved), not the registry's
    /// (Verify's migration).
    pub(super) async fn apply_locked(
        &self,
        request: ApplyRequest,
        from_request: bool,
    ) -> Result<ApplyReport, Error> {
        let project_id = request.project_id;
        let (group_rules, rows): (Vec<RuleRow>, Vec<RuleRow>) = self
            .registry
            .project_rows(project_id)
            .await?
            .into_iter()
            .partition(Core::is_group_rule);
        let memberships = self.registry.members(project_id).await?;
        let mapping = self.identities.mapping();

        let mut outcomes: Vec<Option<MemberOutcome>> = vec![None; request.logins.len()];
        let mut members: Vec<Member> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for (index, login) in request.logins.iter().enumerate() {
            if let Some(reason) = request.invalid.get(&index) {
                outcomes[index] = Some(
                    MemberOutcome::new(login, OutcomeKind::Failed)
                        .failed(INVALID_LOGIN, reason.clone()),
                );
                continue;
            }
            let Some(username) = mapping.username(login) else {
                outcomes[index] = Some(
                    MemberOutcome::new(login, OutcomeKind::UnknownIdentity)
                        .with_message(mapping.why_unmapped()),
                );
                continue;
            };
            match by_key.get(&username.to_lowercase()) {
                Some(&m) => members[m].also.push(index),
                None => {
                    by_key.insert(username.to_lowercase(), members.len());
                    members.push(Member {
                        username,
                        first: index,
                        also: Vec::new(),
                        rows: Vec::new(),
                        membership: None,
                        identity: None,
                    });
                }
            }
        }
        let mut leaving = Vec::new();
        for row in rows {
            match by_key.get(&row.username.to_lowercase()) {
                Some(&m) => members[m].rows.push(row),
                None => leaving.push(row),
            }
        }
        let mut leaving_members = Vec::new();
        for row in memberships {
            match by_key.get(&row.username.to_lowercase()) {
                Some(&m) => members[m].membership = Some(row),
                None => leaving_members.push(row),
            }
        }
        self.identify(&mut members).await?;

        let ctx = Ctx {
            request: &request,
            list: LazyList::default(),
        };
        let revoked: Vec<Result<MemberOutcome, Error>> = futures::stream::iter(leaving)
            .map(|row| self.revoke_row(&ctx.list, row, request.dry_run))
            .buffer_unordered(self.policy.member_concurrency.max(1))
            .collect()
            .await;
        let mut revoked = revoked.into_iter().collect::<Result<Vec<_>, _>>()?;

        let pass = match self.policy.sharing {
            SharingMode::Rules => {
                self.apply_rules(&ctx, members, group_rules, leaving_members)
                    .await?
            }
            SharingMode::Groups => {
                self.apply_groups(&ctx, members, group_rules, leaving_members)
                    .await?
            }
        };
        for outcome in pass.revoked {
            if !revoked.iter().any(|r| r.login == outcome.login) {
                revoked.push(outcome);
            }
        }
        revoked.sort_by(|a, b| a.login.cmp(&b.login));
        for (member, outcome, _) in &pass.members {
            for &index in &member.also {
                let mut shared = outcome.clone();
                shared.login.clone_from(&request.logins[index]);
                shared.invited = false;
                if outcome.kind.is_done() {
                    shared.kind = OutcomeKind::AlreadyGranted;
                    let first = &request.logins[member.first];
                    shared.message = if *first == request.logins[index] {
                        format!("listed twice (as logins[{}])", member.first)
                    } else {
                        format!("same Globus identity as login {first:?}: one grant serves both")
                    };
                }
                outcomes[index] = Some(shared);
            }
            outcomes[member.first] = Some(outcome.clone());
        }

        let mut members: Vec<MemberOutcome> = outcomes.into_iter().flatten().collect();
        let complete = pass.complete
            && pass.members.iter().all(|(_, _, cleaned)| *cleaned)
            && members.iter().all(|m| m.kind.is_done())
            && revoked.iter().all(|m| m.kind.is_done());
        if !request.dry_run {
            if from_request {
                self.note_unresolved(project_id, &members).await?;
            }
            self.cap_usage().await?;
        }
        members.extend(revoked);
        Ok(ApplyReport {
            project_id,
            path: request.path.clone(),
            dry_run: request.dry_run,
            members,
            complete,
        })
    }

    /// Fills in each member's identity: from a record (a rule or a group membership), else one
    /// batched look-up for the rest.
    async fn identify(&self, members: &mut [Member]) -> Result<(), Error> {
        for member in members.iter_mut() {
            member.identity = member
                .rows
                .first()
                .map(|r| r.identity_id.clone())
                .or_else(|| member.membership.as_ref().map(|m| m.identity_id.clone()));
        }
        let unknown: Vec<String> = members
            .iter()
            .filter(|m| m.identity.is_none())
            .map(|m| m.username.clone())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let found = self.identities.resolve(&unknown).await?;
        for member in members.iter_mut().filter(|m| m.identity.is_none()) {
            member.identity = found
                .get(&member.username.to_lowercase())
                .cloned()
                .flatten()
                .map(|identity| identity.id);
        }
        Ok(())
    }

    /// Rule sharing: each member through their own rule; then the project's group (from group
    /// sharing) is retired as far as the members no longer need it.
    async fn apply_rules(
        &self,
        ctx: &Ctx<'_>,
        members: Vec<Member>,
        group_rules: Vec<RuleRow>,
        leaving_members: Vec<MemberRow>,
    ) -> Result<Pass, Error> {
        let results: Vec<Result<(Member, MemberOutcome, bool), Error>> =
            futures::stream::iter(members)
                .map(|member| self.apply_member(ctx, member))
                .buffer_unordered(self.policy.member_concurrency.max(1))
                .collect()
                .await;
        let members = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let (revoked, complete) = self
            .retire_group(ctx, &members, group_rules, leaving_members)
            .await?;
        Ok(Pass {
            members,
            revoked,
            complete,
        })
    }

    /// Records the project's members with no identity (or a login that is not valid), and
    /// publishes the count of all projects'.
    async fn note_unresolved(
        &self,
        project_id: i64,
        outcomes: &[MemberOutcome],
    ) -> Result<(), Error> {
        let mapping = self.identities.mapping();
        let unresolved: Vec<(String, String, String)> = outcomes
            .iter()
            .filter(|o| {
                o.kind == OutcomeKind::UnknownIdentity
                    || o.globus_code.as_deref() == Some(INVALID_LOGIN)
            })
            .map(|o| {
                let username = match o.kind {
                    OutcomeKind::UnknownIdentity => mapping.username(&o.login).unwrap_or_default(),
                    _ => String::new(),
                };
                let reason = if o.message.is_empty() {
                    "no Globus identity".to_owned()
                } else {
                    o.message.clone()
                };
                (o.login.clone(), username, reason)
            })
            .collect();
        self.registry
            .set_unresolved(project_id, &unresolved)
            .await?;
        self.metrics
            .unresolved(self.registry.count_unresolved().await?);
        Ok(())
    }
}
