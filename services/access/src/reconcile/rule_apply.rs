//! Rule sharing, one member at a time: keep, renew, adopt, grant (with an invitation when on)
//! or move a member's rule, and revoke the rule of a member who left.

use super::apply::{Ctx, Member};
use super::rules::Ensured;
use super::{Core, LazyList, READ_ONLY};
use crate::error::Error;
use crate::model::{MemberOutcome, OutcomeKind};
use crate::registry::{NewIntent, Principal, RowState, RuleRow};

impl Core {
    /// One member: grant (or keep, renew, adopt, move). Answers the outcome and whether every
    /// old rule of a move was removed.
    pub(super) async fn apply_member(
        &self,
        ctx: &Ctx<'_>,
        member: Member,
    ) -> Result<(Member, MemberOutcome, bool), Error> {
        let request = ctx.request;
        let login = &request.logins[member.first];
        let Some(identity) = member.identity.clone() else {
            let outcome = MemberOutcome::new(login, OutcomeKind::UnknownIdentity).with_message(
                format!("no Globus identity has the username {:?}", member.username),
            );
            return Ok((member, outcome, true));
        };
        let (here, elsewhere): (Vec<&RuleRow>, Vec<&RuleRow>) =
            member.rows.iter().partition(|r| r.path == request.path);
        let here = here.first().copied();
        let base = MemberOutcome {
            identity_id: Some(identity.clone()),
            access_id: here.and_then(|r| r.access_id.clone()),
            ..MemberOutcome::new(login, OutcomeKind::Granted)
        };

        let mut outcome = if request.dry_run {
            self.plan_member(here, base)
        } else {
            self.hold_member(ctx, here, login, &member.username, &identity, base)
                .await?
        };

        let mut cleaned = true;
        if outcome.kind.is_done() && !elsewhere.is_empty() {
            let mut problems = Vec::new();
            for old in &elsewhere {
                if request.dry_run {
                    continue;
                }
                if let Err(failure) = self.remove(old, &ctx.list).await? {
                    problems.push(format!(
                        "the old rule on {} is not deleted yet ({}: {})",
                        old.path, failure.code, failure.message
                    ));
                }
            }
            outcome.kind = OutcomeKind::Moved;
            let from: Vec<&str> = elsewhere.iter().map(|r| r.path.as_str()).collect();
            outcome.message = if problems.is_empty() {
                format!("moved from {}", from.join(", "))
            } else {
                cleaned = false;
                problems.join("; ")
            };
        }
        Ok((member, outcome, cleaned))
    }

    /// A dry run's answer for a member with (or without) a row on the path.
    fn plan_member(&self, here: Option<&RuleRow>, base: MemberOutcome) -> MemberOutcome {
        match here.map(|r| (r.state, r)) {
            Some((RowState::Active, row)) if self.renewal_due(row) => MemberOutcome {
                kind: OutcomeKind::Renewed,
                ..base
            },
            Some((RowState::Active, _)) => MemberOutcome {
                kind: OutcomeKind::AlreadyGranted,
                ..base
            },
            Some((RowState::External, _)) => MemberOutcome {
                kind: OutcomeKind::AlreadyGranted,
                ..base
            }
            .with_message("access comes from a rule smrtshare did not create"),
            Some((RowState::Pending, _)) => base.with_message(
                "an intent is open: the rule found at Globus would be adopted, or created",
            ),
            Some((RowState::Deleting, _)) | None => base,
        }
    }

    /// A member's own rule on the path: kept, renewed, settled or made (with an invitation
    /// when it is new and invitations are on).
    async fn hold_member(
        &self,
        ctx: &Ctx<'_>,
        here: Option<&RuleRow>,
        login: &str,
        username: &str,
        identity_id: &str,
        base: MemberOutcome,
    ) -> Result<MemberOutcome, Error> {
        let request = ctx.request;
        let intent = NewIntent {
            project_id: request.project_id,
            principal: Principal::Identity,
            login,
            username,
            identity_id,
            path: &request.path,
            permissions: READ_ONLY,
            expires_at: self.new_expiry_ms(),
        };
        let new_rule = here.is_none_or(|r| r.state == RowState::Deleting);
        let invitation = if new_rule {
            self.invitation(ctx, login, username).await?
        } else {
            None
        };
        let notify = invitation
            .as_ref()
            .map(|(email, message)| (email.as_str(), message.as_str()));
        let ensured = self.ensure_rule(here, &intent, &ctx.list, notify).await?;
        let mut outcome = ensured_outcome(&ensured, base);
        if let (Some((email, _)), Ok(Ensured::Created(_))) = (&invitation, &ensured) {
            self.registry
                .record_invitation(request.project_id, login, email)
                .await?;
            self.metrics.invitation_sent();
            outcome.invited = true;
        }
        Ok(outcome)
    }

    /// The invitation (email, message) a member's new rule carries, if any: invitations on, an
    /// email known (the login table's third column) and none sent for this project yet.
    async fn invitation(
        &self,
        ctx: &Ctx<'_>,
        login: &str,
        username: &str,
    ) -> Result<Option<(String, String)>, Error> {
        let Some(invitations) = &self.policy.invitations else {
            return Ok(None);
        };
        let request = ctx.request;
        let Some(email) = self.identities.mapping().email(login) else {
            return Ok(None);
        };
        if self.registry.invited(request.project_id, login).await? {
            return Ok(None);
        }
        let message = invitations.render(
            login,
            username,
            request.project_id,
            &request.path,
            self.globus.collection_id(),
        );
        Ok(Some((email.to_owned(), message)))
    }

    /// One member no longer listed.
    pub(crate) async fn revoke_row(
        &self,
        list: &LazyList,
        row: RuleRow,
        dry_run: bool,
    ) -> Result<MemberOutcome, Error> {
        let outcome = MemberOutcome::for_row(&row, OutcomeKind::Revoked);
        let external_note =
            "the access came from a rule smrtshare did not create: left in place, record dropped";
        if dry_run {
            return Ok(if row.state == RowState::External {
                outcome.with_message(external_note)
            } else {
                outcome
            });
        }
        Ok(match self.remove(&row, list).await? {
            Ok(true) => outcome.with_message(external_note),
            Ok(false) => outcome,
            Err(failure) => outcome.failed(&failure.code, failure.message),
        })
    }
}

/// A member's outcome from how their rule is held.
pub(super) fn ensured_outcome(
    ensured: &Result<Ensured, super::Failure>,
    base: MemberOutcome,
) -> MemberOutcome {
    let with = |kind: OutcomeKind, row: &RuleRow| MemberOutcome {
        kind,
        access_id: row.access_id.clone(),
        ..base.clone()
    };
    match ensured {
        Ok(Ensured::Kept(row)) => with(OutcomeKind::AlreadyGranted, row),
        Ok(Ensured::Renewed(row)) => with(OutcomeKind::Renewed, row),
        Ok(Ensured::Created(row)) => with(OutcomeKind::Granted, row),
        Ok(Ensured::Adopted(row)) => with(OutcomeKind::Granted, row)
            .with_message("adopted the rule an interrupted create had made"),
        Ok(Ensured::External(row)) => with(OutcomeKind::AlreadyGranted, row).with_message(
            "access comes from a rule smrtshare did not create; smrtshare leaves it alone",
        ),
        Err(failure) => base.failed(&failure.code, failure.message.clone()),
    }
}
