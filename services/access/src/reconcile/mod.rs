//! The core: bringing rules (and, with group sharing, groups) to the desired state, with the
//! registry as the record of what smrtshare holds and Globus as the truth.
//!
//! The rule primitives ([`rules`]) move one registry row through its states:
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
//!
//! Sharing modes ([`SharingMode`]): one rule per member and project directory, or one Globus
//! group per project with one rule per project directory for it ([`groups`], [`group_apply`]).
//! An apply brings its project to the configured mode; Verify does it for every project
//! ([`migrate`]), granting the new form before revoking the old.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::Error;
use crate::globus::identities::IdentityResolver;
use crate::globus::{AccessRule, Globus, GlobusError};
use crate::locks::ProjectLocks;
use crate::metrics::Metrics;
use crate::registry::{Principal, Registry, RowState, RuleRow};

mod apply;
mod caps;
mod group_apply;
mod groups;
mod migrate;
pub mod renewal;
mod revoke;
mod rule_apply;
mod rules;
mod verify;

pub use caps::Caps;

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
    /// One rule per member, or one group per project.
    pub sharing: SharingMode,
    /// The caps rules are counted against.
    pub caps: Caps,
    /// Invitations with new rules (rule sharing), when on.
    pub invitations: Option<Invitations>,
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
            sharing: SharingMode::Rules,
            caps: Caps::default(),
            invitations: None,
        }
    }
}

/// How members are given access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SharingMode {
    /// One read rule per member and project directory (the default: no Groups API needed,
    /// invitations per member; at most about 1000 members in all projects).
    #[default]
    Rules,
    /// One Globus group per project with one read rule per project directory for it:
    /// membership changes are group adds and removes; up to about 1000 projects.
    Groups,
}

/// Invitations: the message a new rule's `notify_email` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitations {
    /// The message, with `{login}`, `{username}`, `{project_id}`, `{path}`, `{collection_id}`
    /// and `{sharer}` filled in.
    pub message: String,
    /// Who shares (`{sharer}`), e.g. "the Sequencing Core".
    pub sharer: String,
}

/// The default invitation message.
pub const DEFAULT_INVITATION: &str = "{sharer} shared SMRT Link project {project_id} with you \
    ({login}). The data is in the folder {path} of the Globus collection {collection_id}. Log in \
    at https://app.globus.org with your {username} identity and open the collection to \
    download it.";

impl Invitations {
    /// The message for one member.
    pub fn render(
        &self,
        login: &str,
        username: &str,
        project_id: i64,
        path: &str,
        collection_id: &str,
    ) -> String {
        let message = self
            .message
            .replace("{sharer}", &self.sharer)
            .replace("{login}", login)
            .replace("{username}", username)
            .replace("{project_id}", &project_id.to_string())
            .replace("{path}", path)
            .replace("{collection_id}", collection_id);
        message.chars().take(MAX_INVITATION_CHARS).collect()
    }
}

/// The longest invitation message sent (Globus accepts 2048 characters).
pub const MAX_INVITATION_CHARS: usize = 2000;

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

/// The rule for a row's principal on its path, among rules with an id.
pub(crate) fn find_rule<'a>(rules: &'a [AccessRule], row: &RuleRow) -> Option<&'a AccessRule> {
    rules.iter().find(|r| {
        r.id.is_some()
            && r.principal_type == row.principal.as_str()
            && r.principal == row.identity_id
            && r.path == row.path
    })
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
    /// Rules of others on the collection (and per identity), as of the last Verify.
    foreign: Mutex<caps::Foreign>,
    /// Held while an intent is written and counted against the caps, so concurrent grants at
    /// the cap neither both fit nor both fail.
    reserving: tokio::sync::Mutex<()>,
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
            foreign: Mutex::new(caps::Foreign::default()),
            reserving: tokio::sync::Mutex::new(()),
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

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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
            || rule.principal_type != row.principal.as_str()
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

    /// True for a rule of the project's group (as opposed to a member's rule).
    pub(crate) fn is_group_rule(row: &RuleRow) -> bool {
        row.principal == Principal::Group
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
}
