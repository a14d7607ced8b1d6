//! ApplyProjectAccess: one project's rules brought to the desired state.
//!
//! The in-sync check reads the registry only: members whose rule is recorded active on the path
//! and not near expiry cost no Globus call, and identities are looked up only for members with
//! no row. Revocations run first (they may free slots under the rule limit), then grants and
//! moves, several members at a time.

use std::collections::HashMap;

use futures::StreamExt as _;

use super::{Core, Held, LazyList, READ_ONLY};
use crate::error::Error;
use crate::model::{
    ApplyReport, ApplyRequest, HELD_BY_ANOTHER_PROJECT, INVALID_LOGIN, MemberOutcome, OutcomeKind,
};
use crate::registry::{Inserted, NewIntent, RowState, RuleRow};

/// One wanted Globus username (one or more logins mapping to it).
#[derive(Debug)]
struct Member {
    /// The username as mapped.
    username: String,
    /// Index of the first login mapping to it.
    first: usize,
    /// Indices of further logins mapping to the same username.
    also: Vec<usize>,
    /// The project's rows for this username (any path, any state).
    rows: Vec<RuleRow>,
    /// The identity, from a row or a look-up.
    identity: Option<String>,
}

/// Per-apply context shared by the member tasks.
struct Ctx<'a> {
    request: &'a ApplyRequest,
    list: LazyList,
}

impl Core {
    /// Brings one project's rules to the desired state (or plans it, with `dry_run`).
    pub async fn apply(&self, request: ApplyRequest) -> Result<ApplyReport, Error> {
        let _turn = self.locks.lock(request.project_id).await;
        let rows = self.registry.project_rows(request.project_id).await?;
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

        let unknown: Vec<String> = members
            .iter()
            .filter(|m| m.rows.is_empty())
            .map(|m| m.username.clone())
            .collect();
        let found = if unknown.is_empty() {
            HashMap::new()
        } else {
            self.identities.resolve(&unknown).await?
        };
        for member in &mut members {
            member.identity = match member.rows.first() {
                Some(row) => Some(row.identity_id.clone()),
                None => found
                    .get(&member.username.to_lowercase())
                    .cloned()
                    .flatten()
                    .map(|identity| identity.id),
            };
        }

        let ctx = Ctx {
            request: &request,
            list: LazyList::default(),
        };
        let concurrency = self.policy.member_concurrency.max(1);

        let revoked: Vec<Result<MemberOutcome, Error>> = futures::stream::iter(leaving)
            .map(|row| self.revoke_row(&ctx.list, row, request.dry_run))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut revoked = revoked.into_iter().collect::<Result<Vec<_>, _>>()?;
        revoked.sort_by(|a, b| a.login.cmp(&b.login));

        let granted: Vec<Result<(Member, MemberOutcome, bool), Error>> =
            futures::stream::iter(members)
                .map(|member| self.apply_member(&ctx, member))
                .buffer_unordered(concurrency)
                .collect()
                .await;
        let mut cleanup_ok = true;
        for result in granted {
            let (member, outcome, cleaned) = result?;
            cleanup_ok &= cleaned;
            for &index in &member.also {
                let mut shared = outcome.clone();
                shared.login.clone_from(&request.logins[index]);
                if outcome.kind.is_done() {
                    shared.kind = OutcomeKind::AlreadyGranted;
                    let first = &request.logins[member.first];
                    shared.message = if *first == request.logins[index] {
                        format!("listed twice (as logins[{}])", member.first)
                    } else {
                        format!("same Globus identity as login {first:?}: one rule serves both")
                    };
                }
                outcomes[index] = Some(shared);
            }
            outcomes[member.first] = Some(outcome);
        }

        let mut members: Vec<MemberOutcome> = outcomes.into_iter().flatten().collect();
        let complete = cleanup_ok
            && members.iter().all(|m| m.kind.is_done())
            && revoked.iter().all(|m| m.kind.is_done());
        members.extend(revoked);
        Ok(ApplyReport {
            project_id: request.project_id,
            path: request.path.clone(),
            dry_run: request.dry_run,
            members,
            complete,
        })
    }

    /// One member: grant (or keep, renew, adopt, move). Answers the outcome and whether every
    /// old rule of a move was removed.
    async fn apply_member(
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
            match here {
                Some(row) => self.keep_member(ctx, row, base).await?,
                None => {
                    self.grant(
                        request.project_id,
                        login,
                        &member.username,
                        &identity,
                        &request.path,
                        base,
                    )
                    .await?
                }
            }
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

    /// A member with a row on the path.
    async fn keep_member(
        &self,
        ctx: &Ctx<'_>,
        row: &RuleRow,
        base: MemberOutcome,
    ) -> Result<MemberOutcome, Error> {
        let request = ctx.request;
        Ok(match row.state {
            RowState::Active if self.renewal_due(row) => match self.renew(row).await? {
                Ok(renewed) => MemberOutcome {
                    kind: OutcomeKind::Renewed,
                    access_id: renewed.access_id,
                    ..base
                },
                Err(failure) => base.failed(&failure.code, failure.message),
            },
            RowState::Active => MemberOutcome {
                kind: OutcomeKind::AlreadyGranted,
                ..base
            },
            RowState::External => MemberOutcome {
                kind: OutcomeKind::AlreadyGranted,
                ..base
            }
            .with_message(
                "access comes from a rule smrtshare did not create; smrtshare leaves it alone",
            ),
            RowState::Pending => {
                let rules = match ctx.list.get(&self.globus).await {
                    Ok(rules) => rules,
                    Err(error) => return Ok(base.failed(error.code(), error.to_string())),
                };
                held_outcome(self.settle_pending(row, &rules).await?, base)
            }
            RowState::Deleting => match self.remove(row, &ctx.list).await? {
                Ok(_) => {
                    self.grant(
                        request.project_id,
                        &base.login.clone(),
                        &row.username,
                        &row.identity_id,
                        &request.path,
                        base,
                    )
                    .await?
                }
                Err(failure) => base.failed(&failure.code, failure.message),
            },
        })
    }

    /// Writes an intent and creates the rule.
    async fn grant(
        &self,
        project_id: i64,
        login: &str,
        username: &str,
        identity_id: &str,
        path: &str,
        base: MemberOutcome,
    ) -> Result<MemberOutcome, Error> {
        let intent = NewIntent {
            project_id,
            login,
            username,
            identity_id,
            path,
            permissions: READ_ONLY,
            expires_at: self.new_expiry_ms(),
        };
        match self.registry.insert_intent(&intent).await? {
            Inserted::Row(row) => Ok(held_outcome(self.create(&row).await?, base)),
            Inserted::HeldBy(holder) => Ok(base.failed(
                HELD_BY_ANOTHER_PROJECT,
                format!(
                    "project {} already holds this identity's rule on {} (login {:?})",
                    holder.project_id, holder.path, holder.login
                ),
            )),
        }
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

/// The outcome of a create, adoption or external record.
fn held_outcome(step: Result<Held, super::Failure>, base: MemberOutcome) -> MemberOutcome {
    match step {
        Ok(Held::Created(row)) => MemberOutcome {
            kind: OutcomeKind::Granted,
            access_id: row.access_id,
            ..base
        },
        Ok(Held::Adopted(row)) => MemberOutcome {
            kind: OutcomeKind::Granted,
            access_id: row.access_id,
            ..base
        }
        .with_message("adopted the rule an interrupted create had made"),
        Ok(Held::External(row)) => MemberOutcome {
            kind: OutcomeKind::AlreadyGranted,
            access_id: row.access_id,
            ..base
        }
        .with_message(
            "access comes from a rule smrtshare did not create; smrtshare leaves it alone",
        ),
        Err(failure) => base.failed(&failure.code, failure.message),
    }
}
