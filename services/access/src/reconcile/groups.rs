//! Group primitives: the project's Globus group made (an intent first), found again after a
//! crash, deleted with its rules; members added and removed in one batch.
//!
//! Ownership is as strict as for rules. A group intent carries a random nonce that smrtshare
//! writes into the group's description; a group found at Globus is adopted only when the client
//! administers it and its description holds that nonce, which nobody else has. Groups someone
//! else made (even ones naming smrtshare's client as an admin) never match, so they are never
//! changed or deleted. A create is never repeated blindly (group names are not unique): after a
//! failure that may have been applied, the client's groups are listed and the nonce looked for.

use std::collections::HashMap;

use super::{Core, Failure, LazyList, Step};
use crate::error::Error;
use crate::globus::groups::BatchOutcome;
use crate::globus::{ApiCode, GlobusError};
use crate::registry::{GroupRow, GroupState, MemberRow, MemberState, RuleRow};

/// What smrtshare writes into its groups' descriptions, before the nonce.
const NONCE_MARK: &str = "smrtshare-intent:";
/// Longest group name (Globus allows 255 characters).
const MAX_NAME_CHARS: usize = 200;

/// What became of one identity in a membership batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Now a member (added, or already one).
    Added,
    /// No longer a member (removed, or never was).
    Removed,
    /// Globus refused or failed; the row keeps its state (or is dropped when nothing happened).
    Failed(Failure),
}

/// A membership batch's result.
pub(crate) enum Batch {
    /// Per identity.
    Done(HashMap<String, Change>),
    /// The group is gone at Globus (deleted by hand): it must be made again.
    GroupGone,
}

impl Core {
    /// The group's name: the project directory's, as members see it in their Globus groups.
    pub(crate) fn group_name(path: &str) -> String {
        let dir = path
            .trim_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let name = format!("{dir} (shared by smrtshare)");
        name.chars().take(MAX_NAME_CHARS).collect()
    }

    fn group_description(&self, project_id: i64, nonce: &str) -> String {
        format!(
            "Members of SMRT Link project {project_id} who may read its directory on Globus \
             collection {}. Kept by smrtshare: do not change. {NONCE_MARK}{nonce}",
            self.globus.collection_id()
        )
    }

    /// The project's group, made when there is none: active when it exists at Globus.
    pub(crate) async fn ensure_group(&self, project_id: i64, path: &str) -> Step<GroupRow> {
        let (row, fresh) = match self.registry.group(project_id).await? {
            Some(row) => (row, false),
            None => {
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let row = self
                    .registry
                    .insert_group_intent(project_id, &Self::group_name(path), &nonce)
                    .await?;
                (row, true)
            }
        };
        match row.state {
            GroupState::Active => Ok(Ok(row)),
            GroupState::Deleting => {
                self.registry.reactivate_group(row.id).await?;
                Ok(Ok(GroupRow {
                    state: GroupState::Active,
                    ..row
                }))
            }
            GroupState::Pending => self.settle_group(&row, !fresh).await,
        }
    }

    /// A pending group: found at Globus by its nonce (after an interrupted create) and adopted,
    /// or created.
    async fn settle_group(&self, row: &GroupRow, look_first: bool) -> Step<GroupRow> {
        if look_first {
            match self.find_own_group(row).await {
                Ok(Some(group_id)) => return self.group_active(row, &group_id, "adopted").await,
                Ok(None) => {}
                Err(error) => return self.group_failed(row, &error).await,
            }
        }
        let description = self.group_description(row.project_id, &row.nonce);
        match self.globus.create_group(&row.name, &description).await {
            Ok(group) => self.group_active(row, &group.id, "created").await,
            Err(error) if error.certainly_not_applied() => {
                tracing::warn!(project_id = row.project_id, %error, "globus refused the group");
                self.registry.forget_group(row.id, row.project_id).await?;
                Ok(Err(Failure::from(&error)))
            }
            Err(error) if error.may_have_applied() => match self.find_own_group(row).await {
                Ok(Some(group_id)) => self.group_active(row, &group_id, "adopted").await,
                Ok(None) | Err(_) => self.group_failed(row, &error).await,
            },
            Err(error) => self.group_failed(row, &error).await,
        }
    }

    async fn group_active(&self, row: &GroupRow, group_id: &str, how: &str) -> Step<GroupRow> {
        self.registry.activate_group(row.id, group_id).await?;
        tracing::info!(
            project_id = row.project_id,
            group_id,
            how,
            "globus group recorded"
        );
        Ok(Ok(GroupRow {
            group_id: Some(group_id.to_owned()),
            state: GroupState::Active,
            ..row.clone()
        }))
    }

    async fn group_failed(&self, row: &GroupRow, error: &GlobusError) -> Step<GroupRow> {
        tracing::warn!(project_id = row.project_id, %error, "globus group create failed; intent kept open");
        self.registry
            .set_group_error(row.id, &error.to_string())
            .await?;
        Ok(Err(Failure::from(error)))
    }

    /// The id of the group an intent made, if the client's groups hold one: administered by
    /// the client, with the intent's nonce in its description. Further groups with the nonce
    /// (a create repeated by someone's retry) are provably smrtshare's and are deleted.
    async fn find_own_group(&self, row: &GroupRow) -> Result<Option<String>, GlobusError> {
        let mark = format!("{NONCE_MARK}{}", row.nonce);
        let mut ours = self.globus.my_groups().await?.into_iter().filter(|g| {
            g.administered() && g.description.as_deref().is_some_and(|d| d.contains(&mark))
        });
        let Some(first) = ours.next() else {
            return Ok(None);
        };
        for extra in ours {
            tracing::warn!(project_id = row.project_id, group_id = %extra.id, "deleting a second group made by one intent");
            if let Err(error) = self.globus.delete_group(&extra.id).await {
                tracing::warn!(%error, group_id = %extra.id, "cannot delete the extra group");
            }
        }
        Ok(Some(first.id))
    }

    /// Deletes the project's group: its rules first, then the group; then forgets it and its
    /// member rows.
    pub(crate) async fn remove_group(
        &self,
        group: &GroupRow,
        rules: &[RuleRow],
        list: &LazyList,
    ) -> Step<()> {
        if group.state == GroupState::Active {
            self.registry.mark_group_deleting(group.id).await?;
        }
        for rule in rules {
            if let Err(failure) = self.remove(rule, list).await? {
                self.registry
                    .set_group_error(group.id, &failure.message)
                    .await?;
                return Ok(Err(failure));
            }
        }
        if let Some(group_id) = &group.group_id {
            match self.globus.delete_group(group_id).await {
                Ok(()) => {}
                Err(error) if error.is(&ApiCode::NotFound) => {}
                Err(error) => {
                    self.registry
                        .set_group_error(group.id, &error.to_string())
                        .await?;
                    return Ok(Err(Failure::from(&error)));
                }
            }
        }
        self.registry
            .forget_group(group.id, group.project_id)
            .await?;
        tracing::info!(project_id = group.project_id, group_id = ?group.group_id, "globus group deleted");
        Ok(Ok(()))
    }

    /// The group is gone at Globus: a fresh intent is opened so it is made again, and its
    /// members are to be added again (rows back to `pending`). Its rules stay until the new
    /// group's rule is held (they name a group that no longer exists, so they grant nothing;
    /// they are deleted as stale then), keeping the project's path known meanwhile.
    pub(crate) async fn group_gone(&self, group: &GroupRow) -> Result<(), Error> {
        tracing::warn!(project_id = group.project_id, group_id = ?group.group_id, "the project's globus group is gone (deleted by hand?); making it again");
        let members = self.registry.members(group.project_id).await?;
        let (removing, others): (Vec<_>, Vec<_>) = members
            .iter()
            .partition(|m| m.state == MemberState::Removing);
        let gone: Vec<i64> = removing.iter().map(|m| m.id).collect();
        let again: Vec<i64> = others.iter().map(|m| m.id).collect();
        self.registry.forget_members(&gone).await?;
        self.registry
            .set_members(&again, MemberState::Pending, None)
            .await?;
        self.registry.reopen_group(group.id).await?;
        Ok(())
    }

    /// Adds and removes members of an active group in one batch (rows already written:
    /// `pending` for adds, `removing` for removes), and records what Globus did.
    pub(crate) async fn change_members(
        &self,
        group: &GroupRow,
        adds: &[MemberRow],
        removes: &[MemberRow],
    ) -> Result<Batch, Error> {
        let mut changes = HashMap::new();
        if adds.is_empty() && removes.is_empty() {
            return Ok(Batch::Done(changes));
        }
        let Some(group_id) = group.group_id.as_deref() else {
            return Ok(Batch::GroupGone);
        };
        let add: Vec<String> = adds.iter().map(|m| m.identity_id.clone()).collect();
        let remove: Vec<String> = removes.iter().map(|m| m.identity_id.clone()).collect();
        let batch = match self.globus.change_members(group_id, &add, &remove).await {
            Ok(batch) => batch,
            Err(error) if error.is(&ApiCode::NotFound) => return Ok(Batch::GroupGone),
            Err(error) => {
                let failure = Failure::from(&error);
                let ids: Vec<i64> = adds.iter().chain(removes).map(|m| m.id).collect();
                for row in adds.iter().chain(removes) {
                    changes.insert(row.identity_id.clone(), Change::Failed(failure.clone()));
                }
                // The rows keep their state: adds and removes are sent again next time.
                self.registry
                    .set_members_error(&ids, &error.to_string())
                    .await?;
                return Ok(Batch::Done(changes));
            }
        };
        self.record_batch(adds, removes, &batch, &mut changes)
            .await?;
        Ok(Batch::Done(changes))
    }

    async fn record_batch(
        &self,
        adds: &[MemberRow],
        removes: &[MemberRow],
        batch: &BatchOutcome,
        changes: &mut HashMap<String, Change>,
    ) -> Result<(), Error> {
        let (mut active, mut gone, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        for row in adds {
            let error = batch
                .add_errors
                .iter()
                .find(|e| e.identity_id == row.identity_id);
            let change = match error {
                None if batch.added.contains(&row.identity_id) => Change::Added,
                Some(e) if e.code == "ALREADY_ACTIVE" => Change::Added,
                None => Change::Failed(Failure {
                    code: "NoAnswer".to_owned(),
                    message: "globus did not say whether the member was added".to_owned(),
                }),
                Some(e) => {
                    // Refused for this identity: nothing was added.
                    dropped.push(row.id);
                    Change::Failed(Failure {
                        code: e.code.clone(),
                        message: format!("globus did not add the member: {}", e.detail),
                    })
                }
            };
            if change == Change::Added {
                active.push(row.id);
            }
            changes.insert(row.identity_id.clone(), change);
        }
        for row in removes {
            let error = batch
                .remove_errors
                .iter()
                .find(|e| e.identity_id == row.identity_id);
            let change = match error {
                None if batch.removed.contains(&row.identity_id) => Change::Removed,
                Some(e) if e.code == "NO_MEMBERSHIP" => Change::Removed,
                None => Change::Failed(Failure {
                    code: "NoAnswer".to_owned(),
                    message: "globus did not say whether the member was removed".to_owned(),
                }),
                Some(e) => Change::Failed(Failure {
                    code: e.code.clone(),
                    message: format!("globus did not remove the member: {}", e.detail),
                }),
            };
            if change == Change::Removed {
                gone.push(row.id);
            }
            changes.insert(row.identity_id.clone(), change);
        }
        self.registry
            .set_members(&active, MemberState::Active, None)
            .await?;
        self.registry.forget_members(&gone).await?;
        self.registry.forget_members(&dropped).await?;
        Ok(())
    }
}
