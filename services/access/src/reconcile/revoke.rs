//! RevokeProjectAccess: every rule smrtshare holds for a project, deleted.

use futures::StreamExt as _;

use super::{Core, LazyList};
use crate::error::Error;
use crate::model::{MemberOutcome, RevokeReport};

impl Core {
    /// Revokes every rule of a project (or plans it, with `dry_run`). A project with no rules
    /// is not an error. Rules smrtshare did not create are left in place.
    pub async fn revoke(&self, project_id: i64, dry_run: bool) -> Result<RevokeReport, Error> {
        let _turn = self.locks.lock(project_id).await;
        let rows = self.registry.project_rows(project_id).await?;
        let list = LazyList::default();
        let results: Vec<Result<MemberOutcome, Error>> = futures::stream::iter(rows)
            .map(|row| self.revoke_row(&list, row, dry_run))
            .buffer_unordered(self.policy.member_concurrency.max(1))
            .collect()
            .await;
        let mut members = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        members.sort_by(|a, b| a.login.cmp(&b.login));
        let complete = if dry_run {
            members.is_empty()
        } else {
            self.registry.project_rows(project_id).await?.is_empty()
        };
        Ok(RevokeReport {
            project_id,
            dry_run,
            members,
            complete,
        })
    }
}
