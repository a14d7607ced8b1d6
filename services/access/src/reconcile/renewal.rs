//! The expiry renewal task: rules are renewed before they lapse while the member stays (a rule
//! exists in the registry only while its member is listed), and deletions Globus refused earlier
//! are tried again. Each pass logs when the next one runs and publishes it in metrics and in a
//! watch channel.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{Core, LazyList};
use crate::error::Error;
use crate::registry::{RowState, RuleRow};

/// What the renewal task has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewalStatus {
    /// Passes finished.
    pub passes: u64,
    /// Rules renewed in all passes.
    pub renewed: u64,
    /// Renewals or deletions that failed in all passes (tried again next pass).
    pub failed: u64,
    /// When the next pass runs.
    pub next_run: Option<DateTime<Utc>>,
}

/// Counts of one pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rules renewed.
    pub renewed: u64,
    /// Pending deletions completed.
    pub deleted: u64,
    /// Failures.
    pub failed: u64,
}

impl Core {
    /// One renewal pass: every active rule expiring within the renewal window is renewed, every
    /// rule marked for deletion is deleted.
    pub async fn renewal_pass(&self) -> Result<PassReport, Error> {
        let window = i64::try_from(self.policy.renew_before.as_millis()).unwrap_or(i64::MAX);
        let horizon = self.clock.now_millis().saturating_add(window);
        let mut work: BTreeMap<i64, Vec<RuleRow>> = BTreeMap::new();
        for row in self.registry.due_for_renewal(horizon).await? {
            work.entry(row.project_id).or_default().push(row);
        }
        for row in self.registry.rows_in_state(RowState::Deleting).await? {
            work.entry(row.project_id).or_default().push(row);
        }
        let mut report = PassReport::default();
        for (project_id, rows) in work {
            let _turn = self.locks.lock(project_id).await;
            let list = LazyList::default();
            for stale in rows {
                // Read again under the lock: an apply may have changed it meanwhile.
                let Some(row) = self.registry.row(stale.id).await? else {
                    continue;
                };
                match row.state {
                    RowState::Active if self.renewal_due(&row) => match self.renew(&row).await? {
                        Ok(_) => report.renewed += 1,
                        Err(failure) => {
                            report.failed += 1;
                            tracing::warn!(project_id, login = %row.login, code = %failure.code, message = %failure.message, "renewal failed; tried again next pass");
                        }
                    },
                    RowState::Deleting => match self.remove(&row, &list).await? {
                        Ok(_) => report.deleted += 1,
                        Err(failure) => {
                            report.failed += 1;
                            tracing::warn!(project_id, login = %row.login, code = %failure.code, "pending deletion failed again");
                        }
                    },
                    _ => {}
                }
            }
        }
        self.count_rules_for_metrics().await;
        Ok(report)
    }

    /// Publishes the registry's rules by state (after each pass, and once at start).
    async fn count_rules_for_metrics(&self) {
        match self.registry.counts_by_state().await {
            Ok(counts) => self.metrics.rule_counts(&counts),
            Err(error) => tracing::warn!(%error, "cannot count rules for metrics"),
        }
    }
}

/// Runs renewal passes until `stop` turns true: the first after `renewal_first_delay`, then
/// every `renewal_interval`.
pub async fn run(
    core: Arc<Core>,
    status: watch::Sender<RenewalStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let policy = core.policy.clone();
    let mut delay = policy.renewal_first_delay.min(policy.renewal_interval);
    core.count_rules_for_metrics().await;
    loop {
        let next = core.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
        status.send_modify(|s| s.next_run = Some(next));
        core.metrics.renewal_scheduled(next.timestamp());
        tracing::info!(next_run = %next.to_rfc3339(), in_ = ?delay, "expiry renewal: next run scheduled");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let pass = tokio::select! {
            pass = core.renewal_pass() => pass,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match pass {
            Ok(report) => {
                tracing::info!(
                    renewed = report.renewed,
                    deleted = report.deleted,
                    failed = report.failed,
                    "expiry renewal pass done"
                );
                core.metrics.renewal_finished(core.clock.now().timestamp());
                status.send_modify(|s| {
                    s.passes += 1;
                    s.renewed += report.renewed;
                    s.failed += report.failed;
                });
            }
            Err(error) => {
                tracing::error!(%error, "expiry renewal pass failed; trying again next run");
                status.send_modify(|s| {
                    s.passes += 1;
                    s.failed += 1;
                });
            }
        }
        delay = policy.renewal_interval;
    }
}
