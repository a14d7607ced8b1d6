//! The core: bringing rules to the desired state, with the registry as the record of what
//! smrtshare holds and Globus as the truth.
//!
//! The primitives here move one registry row through its states:
//! - create: an intent row is written first (by the caller), then Globus is asked; the id is
//!   recorded. `Exists` means the rule is already there: one `access_list` call tells whether it
//!   is ours (an earlier attempt whose answer was lost: adopted) or someone else's (recorded as
//!   external, never touched). `LimitExceeded` is logged loudly, the intent dropped, and creates
//!   are not attempted again until a cool-off passes or smrtshare frees a slot.
//! - delete: marked `deleting`, deleted at Globus (`AccessRuleNotFound` counts as done), then
//!   forgotten. External rows are only forgotten.
//! - renew: the expiry is pushed back; a rule that vanished is created again.
//!
//! A transient failure of a create keeps the intent open: the next apply or verify adopts the
//! rule if Globus made it, or creates it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::clock::{Clock, from_millis};
use crate::error::Error;
use crate::globus::identities::IdentityResolver;
use crate::globus::{AccessRule, ApiCode, Globus, GlobusError};
use crate::locks::ProjectLocks;
use crate::metrics::Metrics;
use crate::registry::{Registry, RowState, RuleRow};

mod apply;
pub mod renewal;
mod revoke;
mod verify;

/// The permissions every rule grants.
pub const READ_ONLY: &str = "r";

/// How rules are kept.
#[derive(Clone, Debug)]
pub struct RulePolicy {
    /// Rules expire this long after they are made or renewed. Never zero: the exact expiry a
    /// create asked for is how a rule found after a crash is proven smrtshare's (a person at
    /// the web interface cannot guess it to the second); without one, a rule a person made
    /// while an intent was open could be adopted and later deleted.
    pub expiry: Duration,
    /// A rule is renewed when it would expire within this.
    pub renew_before: Duration,
    /// How often the renewal task runs.
    pub renewal_interval: Duration,
    /// The first renewal pass runs this long after start.
    pub renewal_first_delay: Duration,
    /// Clock difference allowed between smrtshare and Globus when deciding whether a rule at
    /// Globus was made after an intent (and so may be adopted).
    pub adoption_skew: Duration,
    /// After `LimitExceeded`, creates are not attempted for this long (unless smrtshare frees a
    /// slot first).
    pub limit_cooloff: Duration,
    /// Members of one project worked on at once.
    pub member_concurrency: usize,
}

impl Default for RulePolicy {
    fn default() -> Self {
        Self {
            expiry: Duration::from_secs(90 * 86_400),
            renew_before: Duration::from_secs(14 * 86_400),
            renewal_interval: Duration::from_secs(6 * 3600),
            renewal_first_delay: Duration::from_secs(60),
            adoption_skew: Duration::from_secs(300),
            limit_cooloff: Duration::from_secs(300),
            member_concurrency: 8,
        }
    }
}

/// A member-level failure: Globus' code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: String,
    pub message: String,
}

impl From<&GlobusError> for Failure {
    fn from(error: &GlobusError) -> Self {
        Self {
            code: error.code().to_owned(),
            message: error.to_string(),
        }
    }
}

/// How a member came to hold a rule.
#[derive(Clone, Debug)]
pub(crate) enum Held {
    /// Created now.
    Created(RuleRow),
    /// Found at Globus matching an open intent.
    Adopted(RuleRow),
    /// Someone else's rule gives the access.
    External(RuleRow),
}

impl Held {
    pub fn row(&self) -> &RuleRow {
        match self {
            Self::Created(row) | Self::Adopted(row) | Self::External(row) => row,
        }
    }
}

/// A step's result: `Err` aborts the RPC (registry failure), `Ok(Err)` is a member's failure.
pub(crate) type Step<T> = Result<Result<T, Failure>, Error>;

/// The collection's access list, fetched at most once per operation when needed.
#[derive(Debug, Default)]
pub(crate) struct LazyList {
    rules: OnceCell<Arc<Vec<AccessRule>>>,
}

impl LazyList {
    pub async fn get(&self, globus: &Globus) -> Result<Arc<Vec<AccessRule>>, GlobusError> {
        self.rules
            .get_or_try_init(|| async { globus.list_rules().await.map(Arc::new) })
            .await
            .cloned()
    }
}

/// The rule for an identity on a path, among rules with an id.
pub(crate) fn find_rule<'a>(
    rules: &'a [AccessRule],
    identity_id: &str,
    path: &str,
) -> Option<&'a AccessRule> {
    rules.iter().find(|r| {
        r.id.is_some()
            && r.principal_type == "identity"
            && r.principal == identity_id
            && r.path == path
    })
}

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

/// Everything the operations share.
#[derive(Debug)]
pub struct Core {
    pub(crate) registry: Registry,
    pub(crate) globus: Arc<Globus>,
    pub(crate) identities: IdentityResolver,
    pub(crate) locks: ProjectLocks,
    pub(crate) policy: RulePolicy,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
    limit_until: Mutex<Option<Instant>>,
}

impl Core {
    /// Assembles the core.
    pub fn new(
        registry: Registry,
        globus: Arc<Globus>,
        identities: IdentityResolver,
        policy: RulePolicy,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        Self {
            registry,
            globus,
            identities,
            locks: ProjectLocks::default(),
            policy,
            clock,
            metrics,
            limit_until: Mutex::new(None),
        }
    }

    /// The registry (read-only use by the API).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Globus client.
    pub fn globus(&self) -> &Arc<Globus> {
        &self.globus
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The expiry a rule made or renewed now gets, in whole seconds (ms).
    pub(crate) fn new_expiry_ms(&self) -> Option<i64> {
        let at = self.now() + chrono::Duration::from_std(self.policy.expiry).ok()?;
        Some(at.timestamp() * 1000)
    }

    /// True when an active rule expires within the renewal window.
    pub(crate) fn renewal_due(&self, row: &RuleRow) -> bool {
        let window = i64::try_from(self.policy.renew_before.as_millis()).unwrap_or(i64::MAX);
        row.state == RowState::Active
            && row
                .expires_at
                .is_some_and(|e| e < self.clock.now_millis().saturating_add(window))
    }

    /// True when a rule at Globus may be the one an open intent asked for: same identity, path
    /// and permissions, the expiry the intent asked for (to the second; a rule without expiry
    /// is never smrtshare's), and made after the intent was written (within the allowed clock
    /// skew).
    pub(crate) fn adoptable(&self, rule: &AccessRule, row: &RuleRow) -> bool {
        if rule.id.is_none()
            || rule.principal_type != "identity"
            || rule.principal != row.identity_id
            || rule.path != row.path
            || rule.permissions != row.permissions
        {
            return false;
        }
        let same_expiry = match (row.expires_at, rule.expiration_date) {
            (Some(wanted), Some(held)) => wanted / 1000 == held.timestamp(),
            _ => false,
        };
        if !same_expiry {
            return false;
        }
        let skew = i64::try_from(self.policy.adoption_skew.as_millis()).unwrap_or(i64::MAX);
        match rule.create_time {
            Some(created) => created.timestamp_millis() >= row.intent_at.saturating_sub(skew),
            // No creation time to compare: the exact expiry is the fingerprint.
            None => true,
        }
    }

    fn limit_blocked(&self) -> Option<Instant> {
        let until = *self.limit_until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|u| *u > Instant::now())
    }

    fn note_limit(&self) {
        *self.limit_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + self.policy.limit_cooloff);
    }

    fn clear_limit(&self) {
        *self.limit_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn reread(&self, id: i64) -> Result<RuleRow, Error> {
        self.registry
            .row(id)
            .await?
            .ok_or(Error::Registry(sqlx::Error::RowNotFound))
    }

    /// Asks Globus for the rule of a pending row.
    pub(crate) async fn create(&self, row: &RuleRow) -> Step<Held> {
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
        match self
            .globus
            .create_rule(&row.identity_id, &row.path, &row.permissions, expiry)
            .await
        {
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
        match find_rule(&rules, &row.identity_id, &row.path) {
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
        if let Some(rule) = find_rule(rules, &row.identity_id, &row.path) {
            return self.settle_with(row, rule).await.map(Ok);
        }
        self.registry.reopen(row.id, self.new_expiry_ms()).await?;
        let row = self.reread(row.id).await?;
        self.create(&row).await
    }

    /// Deletes an active or deleting row's rule (two-phase); external rows are only forgotten.
    /// Pending rows must be settled first ([`Self::remove`]).
    async fn delete(&self, row: &RuleRow) -> Step<()> {
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
                match find_rule(&rules, &row.identity_id, &row.path) {
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
                Ok(self.create(&row).await?.map(|held| held.row().clone()))
            }
            Err(error) => {
                self.registry.set_error(row.id, &error.to_string()).await?;
                Ok(Err(Failure::from(&error)))
            }
        }
    }
}
