//! RevokeProjectAccess: every rule smrtshare holds for a project deleted, and the project's
//! group (group sharing) deleted after its rules.

use futures::StreamExt as _;

use super::{Core, LazyList};
use crate::error::Error;
use crate::model::{MemberOutcome, OutcomeKind, RevokeReport};

impl Core {
    /// Revokes every rule of a project and deletes its group (or plans it, with `dry_run`). A
    /// project with nothing held is not an error. Rules smrtshare did not create are left in
    /// place.
    pub async fn revoke(&self, project_id: i64, dry_run: bool) -> Result<RevokeReport, Error> {
        let _turn = self.locks.lock(project_id).await;
        let (group_rules, rows): (Vec<_>, Vec<_>) = self
            .registry
            .project_rows(project_id)
            .await?
            .into_iter()
            .partition(Core::is_group_rule);
        let list = LazyList::default();
        let results: Vec<Result<MemberOutcome, Error>> = futures::stream::iter(rows)
            .map(|row| self.revoke_row(&list, row, dry_run))
            .buffer_unordered(self.policy.member_concurrency.max(1))
            .collect()
            .await;
        let mut members = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        if let Some(group) = self.registry.group(project_id).await? {
            let memberships = self.registry.members(project_id).await?;
            let removed = if dry_run {
                Ok(())
            } else {
                self.remove_group(&group, &group_rules, &list).await?
            };
            for row in memberships {
                if members.iter().any(|m| m.login == row.login) {
                    continue;
                }
                let outcome = MemberOutcome {
                    identity_id: Some(row.identity_id.clone()),
                    ..MemberOutcome::new(&row.login, OutcomeKind::Revoked)
                };
                members.push(match &removed {
                    Ok(()) => outcome.with_message("the project's group is deleted"),
                    Err(failure) => outcome.failed(&failure.code, failure.message.clone()),
                });
            }
        }
        members.sort_by(|a, b| a.login.cmp(&b.login));
        let complete = if dry_run {
            members.is_empty()
        } else {
            self.registry.set_unresolved(project_id, &[]).await?;
            self.metrics
                .unresolved(self.registry.count_unresolved().await?);
            self.registry.project_rows(project_id).await?.is_empty()
                && self.registry.group(project_id).await?.is_none()
        };
        Ok(RevokeReport {
            project_id,
            dry_run,
            members,
            complete,
        })
    }
}
