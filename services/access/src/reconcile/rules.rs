//! The rule primitives: one registry row moved through its states against Globus (create,
//! adopt or record as external, delete, renew). Identity rules (rule sharing) and a project
//! group's rule (group sharing) go through the same code.

use tokio::time::Instant;

use super::{Core, Failure, Held, LazyList, Step, find_rule};
use crate::clock::from_millis;
use crate::error::Error;
use crate::globus::transfer::NewRule;
use crate::globus::{AccessRule, ApiCode};
use crate::registry::NewIntent;
use crate::registry::{RowState, RuleRow};

/// Logs a registry row whose rule id Globus now uses for another rule (see
/// [`Registry::claim_access_id`]).
fn note_displaced(displaced: Option<RuleRow>, access_id: &str) {
    if let Some(stale) = displaced {
        tracing::warn!(
            project_id = stale.project_id,
            login = %stale.login,
            path = %stale.path,
            access_id,
            "globus gave a new rule an id smrtshare had recorded for another rule, which must be \
             gone (was globus reset?); that rule will be made again"
        );
    }
}

/// How [`Core::ensure_rule`] came to hold a rule.
#[derive(Clone, Debug)]
pub(crate) enum Ensured {
    /// Held already; nothing done.
    Kept(RuleRow),
    /// Someone else's rule gives the access (recorded, left alone).
    External(RuleRow),
    /// Held already; its expiry was pushed back.
    Renewed(RuleRow),
    /// Created now.
    Created(RuleRow),
    /// Found at Globus matching an open intent.
    Adopted(RuleRow),
}

impl Ensured {
    /// The row after the step.
    pub fn row(&self) -> &RuleRow {
        match self {
            Self::Kept(row)
            | Self::External(row)
            | Self::Renewed(row)
            | Self::Created(row)
            | Self::Adopted(row) => row,
        }
    }
}

impl From<Held> for Ensured {
    fn from(held: Held) -> Self {
        match held {
            Held::Created(row) => Self::Created(row),
            Held::Adopted(row) => Self::Adopted(row),
            Held::External(row) => Self::External(row),
        }
    }
}

impl Core {
    /// Makes sure the rule `intent` describes is held, given the row already on its path (if
    /// any): kept, renewed when due, an open intent settled, a row being deleted replaced, or a
    /// new one reserved within the caps and created (with `notify`, only then).
    pub(crate) async fn ensure_rule(
        &self,
        here: Option<&RuleRow>,
        intent: &NewIntent<'_>,
        list: &LazyList,
        notify: Option<(&str, &str)>,
    ) -> Step<Ensured> {
        if let Some(row) = here {
            match row.state {
                RowState::Active if self.renewal_due(row) => {
                    return Ok(self.renew(row).await?.map(Ensured::Renewed));
                }
                RowState::Active => return Ok(Ok(Ensured::Kept(row.clone()))),
                RowState::External => return Ok(Ok(Ensured::External(row.clone()))),
                RowState::Pending => {
                    let rules = match list.get(&self.globus).await {
                        Ok(rules) => rules,
                        Err(error) => return Ok(Err(Failure::from(&error))),
                    };
                    return Ok(self.settle_pending(row, &rules).await?.map(Ensured::from));
                }
                RowState::Deleting => {
                    if let Err(failure) = self.remove(row, list).await? {
                        return Ok(Err(failure));
                    }
                }
            }
        }
        let row = match self.reserve(intent).await? {
            Ok(row) => row,
            Err(refused) => return Ok(Err(refused)),
        };
        Ok(self.create(&row, notify).await?.map(Ensured::from))
    }

    pub(crate) async fn reread(&self, id: i64) -> Result<RuleRow, Error> {
        self.registry
            .row(id)
            .await?
            .ok_or(Error::Registry(sqlx::Error::RowNotFound))
    }

    /// Asks Globus for the rule of a pending row; `notify` (email, message) makes Globus email
    /// the member about it.
    pub(crate) async fn create(&self, row: &RuleRow, notify: Option<(&str, &str)>) -> Step<Held> {
        if let Some(until) = self.limit_blocked() {
            self.metrics.limit_exceeded();
            self.registry.forget(row.id).await?;
            let left = until.saturating_duration_since(Instant::now());
            tracing::error!(
                project_id = row.project_id,
                login = %row.login,
                path = %row.path,
                retry_in = ?left,
                "not creating a globus rule: the collection is at its rule limit"
            );
            return Ok(Err(Failure {
                code: "LimitExceeded".to_owned(),
                message: format!(
                    "not attempted: Globus answered LimitExceeded (the collection holds its \
                     maximum of rules); creates resume in {}s or once smrtshare frees a rule",
                    left.as_secs()
                ),
            }));
        }
        let expiry = row.expires_at.map(from_millis);
        let new = NewRule {
            principal_type: row.principal.as_str(),
            principal: &row.identity_id,
            path: &row.path,
            permissions: &row.permissions,
            notify,
        };
        match self.globus.create_rule(&new, expiry).await {
            Ok(access_id) => {
                let displaced = self
                    .registry
                    .activate(row.id, &access_id, row.expires_at)
                    .await?;
                note_displaced(displaced, &access_id);
                tracing::info!(project_id = row.project_id, login = %row.login, path = %row.path, access_id, "globus rule created");
                Ok(Ok(Held::Created(RuleRow {
                    access_id: Some(access_id),
                    state: RowState::Active,
                    ..row.clone()
                })))
            }
            Err(error) if error.is(&ApiCode::Exists) => self.resolve_exists(row).await,
            Err(error) if error.is(&ApiCode::LimitExceeded) => {
                self.note_limit();
                self.metrics.limit_exceeded();
                tracing::error!(
                    project_id = row.project_id,
                    login = %row.login,
                    path = %row.path,
                    %error,
                    "GLOBUS RULE LIMIT REACHED: the collection holds its maximum of access rules; \
                     member not granted (creates paused for the cool-off)"
                );
                if error.certainly_not_applied() {
                    self.registry.forget(row.id).await?;
                } else {
                    // An earlier attempt may have made the rule (and filled the last slot):
                    // the intent stays open, so the rule is adopted, never orphaned.
                    self.registry.set_error(row.id, &error.to_string()).await?;
                }
                Ok(Err(Failure::from(&error)))
            }
            Err(error) if error.certainly_not_applied() => {
                tracing::warn!(project_id = row.project_id, login = %row.login, %error, "globus refused the rule");
                self.registry.forget(row.id).await?;
                Ok(Err(Failure::from(&error)))
            }
            Err(error) => {
                // Globus may or may not have made it: the intent stays open for adoption.
                tracing::warn!(project_id = row.project_id, login = %row.login, %error, "globus create failed; intent kept open");
                self.registry.set_error(row.id, &error.to_string()).await?;
                Ok(Err(Failure::from(&error)))
            }
        }
    }

    /// After `Exists`: adopt the rule if it is ours, record it as external if not.
    async fn resolve_exists(&self, row: &RuleRow) -> Step<Held> {
        let rules = match self.globus.list_rules().await {
            Ok(rules) => rules,
            Err(error) => {
                self.registry.set_error(row.id, &error.to_string()).await?;
                return Ok(Err(Failure::from(&error)));
            }
        };
        match find_rule(&rules, row) {
            Some(rule) => self.settle_with(row, rule).await.map(Ok),
            None => {
                let message =
                    "globus answered Exists but lists no such rule; the intent stays open";
                self.registry.set_error(row.id, message).await?;
                Ok(Err(Failure {
                    code: "Exists".to_owned(),
                    message: message.to_owned(),
                }))
            }
        }
    }

    /// Records the rule Globus holds for a pending row: adopted if ours, external if not.
    async fn settle_with(&self, row: &RuleRow, rule: &AccessRule) -> Result<Held, Error> {
        let access_id = rule.id.clone().unwrap_or_default();
        let expires_at = rule.expiration_date.map(|e| e.timestamp_millis());
        if self.adoptable(rule, row) {
            let displaced = self
                .registry
                .activate(row.id, &access_id, expires_at)
                .await?;
            note_displaced(displaced, &access_id);
            tracing::info!(project_id = row.project_id, login = %row.login, access_id, "adopted a globus rule matching an open intent");
            Ok(Held::Adopted(RuleRow {
                access_id: Some(access_id),
                state: RowState::Active,
                expires_at,
                ..row.clone()
            }))
        } else {
            let displaced = self
                .registry
                .mark_external(row.id, &access_id, expires_at)
                .await?;
            note_displaced(displaced, &access_id);
            tracing::info!(project_id = row.project_id, login = %row.login, access_id, "the member's access comes from a rule smrtshare did not create; leaving it alone");
            Ok(Held::External(RuleRow {
                access_id: Some(access_id),
                state: RowState::External,
                expires_at,
                ..row.clone()
            }))
        }
    }

    /// Resolves a pending row against the access list: adopt, record as external, or create.
    pub(crate) async fn settle_pending(&self, row: &RuleRow, rules: &[AccessRule]) -> Step<Held> {
        if let Some(rule) = find_rule(rules, row) {
            return self.settle_with(row, rule).await.map(Ok);
        }
        self.registry.reopen(row.id, self.new_expiry_ms()).await?;
        let row = self.reread(row.id).await?;
        self.create(&row, None).await
    }

    /// Deletes an active or deleting row's rule (two-phase); external rows are only forgotten.
    /// Pending rows must be settled first ([`Self::remove`]).
    pub(crate) async fn delete(&self, row: &RuleRow) -> Step<()> {
        match row.state {
            RowState::External => {
                self.registry.forget(row.id).await?;
                return Ok(Ok(()));
            }
            RowState::Active => self.registry.mark_deleting(row.id).await?,
            RowState::Deleting | RowState::Pending => {}
        }
        let Some(access_id) = row.access_id.as_deref() else {
            self.registry.forget(row.id).await?;
            return Ok(Ok(()));
        };
        match self.globus.delete_rule(access_id).await {
            Ok(()) => {}
            Err(error) if error.is(&ApiCode::AccessRuleNotFound) => {
                tracing::debug!(access_id, "rule already gone at globus");
            }
            Err(error) => {
                tracing::warn!(project_id = row.project_id, login = %row.login, access_id, %error, "globus delete failed; the rule stays marked for deletion");
                self.registry.set_error(row.id, &error.to_string()).await?;
                return Ok(Err(Failure::from(&error)));
            }
        }
        self.registry.forget(row.id).await?;
        self.clear_limit();
        tracing::info!(project_id = row.project_id, login = %row.login, path = %row.path, access_id, "globus rule deleted");
        Ok(Ok(()))
    }

    /// Removes whatever a row holds, in any state. Answers whether a rule smrtshare did not
    /// create was left in place.
    pub(crate) async fn remove(&self, row: &RuleRow, list: &LazyList) -> Step<bool> {
        match row.state {
            RowState::External => {
                self.registry.forget(row.id).await?;
                Ok(Ok(true))
            }
            RowState::Active | RowState::Deleting => Ok(self.delete(row).await?.map(|()| false)),
            RowState::Pending => {
                let rules = match list.get(&self.globus).await {
                    Ok(rules) => rules,
                    Err(error) => return Ok(Err(Failure::from(&error))),
                };
                match find_rule(&rules, row) {
                    Some(rule) if self.adoptable(rule, row) => {
                        let access_id = rule.id.clone();
                        let row = RuleRow {
                            access_id,
                            state: RowState::Active,
                            ..row.clone()
                        };
                        Ok(self.delete(&row).await?.map(|()| false))
                    }
                    Some(_) => {
                        self.registry.forget(row.id).await?;
                        Ok(Ok(true))
                    }
                    None => {
                        self.registry.forget(row.id).await?;
                        Ok(Ok(false))
                    }
                }
            }
        }
    }

    /// Pushes an active rule's expiry back; a rule that vanished at Globus is created again.
    pub(crate) async fn renew(&self, row: &RuleRow) -> Step<RuleRow> {
        let Some(access_id) = row.access_id.as_deref() else {
            return Ok(Err(Failure {
                code: "NoRule".to_owned(),
                message: "no rule id recorded".to_owned(),
            }));
        };
        let expires_at = self.new_expiry_ms();
        match self
            .globus
            .update_rule(access_id, &row.permissions, expires_at.map(from_millis))
            .await
        {
            Ok(()) => {
                self.registry.set_expiry(row.id, expires_at).await?;
                self.metrics.rule_renewed();
                tracing::info!(project_id = row.project_id, login = %row.login, access_id, "globus rule renewed");
                Ok(Ok(RuleRow {
                    expires_at,
                    ..row.clone()
                }))
            }
            Err(error) if error.is(&ApiCode::AccessRuleNotFound) => {
                tracing::warn!(project_id = row.project_id, login = %row.login, access_id, "the rule vanished at globus (expired or deleted by hand); creating it again");
                self.registry.reopen(row.id, expires_at).await?;
                let row = self.reread(row.id).await?;
                Ok(self
                    .create(&row, None)
                    .await?
                    .map(|held| held.row().clone()))
            }
            Err(error) => {
                self.registry.set_error(row.id, &error.to_string()).await?;
                Ok(Err(Failure::from(&error)))
            }
        }
    }
}
