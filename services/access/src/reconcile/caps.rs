//! The caps Globus sets (DESIGN.md section 4): at most 1,000 rules on a collection, and at most
//! 100 rules counted for one identity on it (Globus ignores the rest). smrtshare counts what it
//! holds (registry) plus others' rules (as of the last Verify) and refuses a new rule or group
//! membership that would go over a cap: no Globus call is made, and the member's outcome names
//! the cap and what to do. Nothing is retried in a loop: the outcome is permanent until
//! something changes.

use std::collections::HashMap;

use super::{Core, Failure, Step};
use crate::error::Error;
use crate::globus::AccessRule;
use crate::metrics::Cap;
use crate::model::{COLLECTION_RULE_CAP, CapUsage, HELD_BY_ANOTHER_PROJECT, IDENTITY_RULE_CAP};
use crate::registry::{Inserted, NewIntent, Principal, RuleRow};

/// The caps, configurable (Globus may raise them for a subscription).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Caps {
    /// Rules per collection (Globus: 1,000).
    pub collection: u32,
    /// Rules counted per identity (Globus: 100).
    pub identity: u32,
    /// Share of a cap at which Verify warns (0.9).
    pub warn_at: f64,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            collection: 1000,
            identity: 100,
            warn_at: 0.9,
        }
    }
}

/// Rules of others on the collection, from the last listing Verify made.
#[derive(Debug, Default)]
pub(crate) struct Foreign {
    pub total: i64,
    pub by_principal: HashMap<String, i64>,
}

impl Core {
    /// Remembers others' rules from a full listing (`ours`: ids in the registry, external
    /// records included, which count as others').
    pub(crate) fn observe_foreign(&self, rules: &[AccessRule], ours: &dyn Fn(&str) -> bool) {
        let mut foreign = Foreign::default();
        for rule in rules {
            if let Some(id) = &rule.id
                && !ours(id)
            {
                foreign.total += 1;
                *foreign
                    .by_principal
                    .entry(rule.principal.clone())
                    .or_default() += 1;
            }
        }
        *self.foreign.lock().unwrap_or_else(|e| e.into_inner()) = foreign;
    }

    fn foreign_total(&self) -> i64 {
        self.foreign.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    fn foreign_for(&self, principal: &str) -> i64 {
        self.foreign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_principal
            .get(principal)
            .copied()
            .unwrap_or(0)
    }

    /// How full the caps are now; also published as metrics.
    pub(crate) async fn cap_usage(&self) -> Result<CapUsage, Error> {
        let caps = self.policy.caps;
        let (busiest_identity, mut busiest_identity_rules) =
            match self.registry.busiest_identity().await? {
                Some((identity, n)) => (Some(identity), n),
                None => (None, 0),
            };
        if let Some(identity) = &busiest_identity {
            busiest_identity_rules += self.foreign_for(identity);
        }
        let usage = CapUsage {
            smrtshare_rules: self.registry.count_held_rules().await?,
            foreign_rules: self.foreign_total(),
            collection_cap: i64::from(caps.collection),
            busiest_identity,
            busiest_identity_rules,
            identity_cap: i64::from(caps.identity),
        };
        self.metrics.caps(&usage);
        Ok(usage)
    }

    /// A refusal at the collection cap, when the rules counted (the new intent included) exceed
    /// it.
    async fn collection_over(&self) -> Result<Option<Failure>, Error> {
        let cap = i64::from(self.policy.caps.collection);
        let ours = self.registry.count_held_rules().await?;
        let others = self.foreign_total();
        if ours + others <= cap {
            return Ok(None);
        }
        self.metrics.cap_refused(Cap::Collection);
        Ok(Some(Failure {
            code: COLLECTION_RULE_CAP.to_owned(),
            message: format!(
                "not granted: the collection would hold {} of its {cap} access rules ({ours} \
                 smrtshare's, {others} others'); no rule is made over the cap. Switch to group \
                 sharing (SMRTSHARE_ACCESS_SHARING=groups, then Verify), which needs one rule per \
                 project directory, or raise SMRTSHARE_ACCESS_COLLECTION_RULE_CAP if Globus \
                 raised the limit",
                ours + others
            ),
        }))
    }

    /// A refusal at the identity cap, when `identity` would count more than the cap with
    /// `extra` more rules.
    pub(crate) async fn identity_over(
        &self,
        identity: &str,
        extra: i64,
    ) -> Result<Option<Failure>, Error> {
        let cap = i64::from(self.policy.caps.identity);
        let held = self.registry.count_identity_rules(identity).await? + self.foreign_for(identity);
        if held + extra <= cap {
            return Ok(None);
        }
        self.metrics.cap_refused(Cap::Identity);
        Ok(Some(Failure {
            code: IDENTITY_RULE_CAP.to_owned(),
            message: format!(
                "not granted: this identity would have {} of the {cap} rules Globus counts for \
                 one identity on a collection (it ignores any beyond); remove the member from \
                 finished projects, or raise SMRTSHARE_ACCESS_IDENTITY_RULE_CAP if Globus raised \
                 the limit",
                held + extra
            ),
        }))
    }

    /// Writes an intent for a new rule, within the caps: the intent itself reserves the slot
    /// (writing and counting are done one grant at a time), and is dropped again when a cap
    /// would be exceeded. No Globus call is made either way.
    pub(crate) async fn reserve(&self, intent: &NewIntent<'_>) -> Step<RuleRow> {
        let _one_at_a_time = self.reserving.lock().await;
        let row = match self.registry.insert_intent(intent).await? {
            Inserted::Row(row) => row,
            Inserted::HeldBy(holder) => {
                return Ok(Err(Failure {
                    code: HELD_BY_ANOTHER_PROJECT.to_owned(),
                    message: format!(
                        "project {} already holds this identity's rule on {} (login {:?})",
                        holder.project_id, holder.path, holder.login
                    ),
                }));
            }
        };
        let mut refused = self.collection_over().await?;
        if refused.is_none() && intent.principal == Principal::Identity {
            refused = self.identity_over(intent.identity_id, 0).await?;
        }
        match refused {
            Some(refused) => {
                self.registry.forget(row.id).await?;
                Ok(Err(refused))
            }
            None => Ok(Ok(row)),
        }
    }
}
