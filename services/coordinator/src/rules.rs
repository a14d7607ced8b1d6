//! The coordinator's rules, each written here and nowhere else: how a change merges into one that
//! settles, how a new change meets the task waiting for its project, how an attempt's result
//! becomes a task state, what a change's status is, how retries back off, and which of two reads
//! of a project wins. Plain functions over plain values, with no SQL and no gRPC: the store
//! reads what they need inside its transactions and writes what they decide.

use crate::model::{ChangeStatus, Operation, ReadState, TaskState};

pub use smrtshare_common::retry::Backoff;

/// How often, and how far apart, failed work is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Attempts before the work is given up as failed (at least 1).
    pub max_attempts: i64,
}

impl RetryPolicy {
    /// When to try again after attempt number `attempts` failed, or `None` when that was the last.
    pub fn next_try(&self, attempts: i64, now: i64) -> Option<i64> {
        let failures = u32::try_from(attempts.max(1)).unwrap_or(u32::MAX);
        (attempts < self.max_attempts).then(|| {
            now + i64::try_from(self.backoff.delay(failures).as_millis()).unwrap_or(i64::MAX)
        })
    }
}

/// The settle time of a change that a new event of the same project and kind merges into: pushed
/// to the new event's own settle time (SMRT Link may not have finished the newer request either),
/// but never beyond `max_settle_ms` after the change was first recorded, so a stream of edits
/// cannot keep a project from being read.
pub fn merged_settle(
    settling_until: i64,
    created_at: i64,
    wanted_until: i64,
    max_settle_ms: i64,
) -> i64 {
    settling_until.max(wanted_until.min(created_at.saturating_add(max_settle_ms)))
}

/// The task waiting to run for a project and target (at most one exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Its id.
    pub task_id: i64,
    /// Attempts made so far (0: it never ran).
    pub attempts: i64,
}

/// What a new change does about the task waiting for its project and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meet {
    /// None waits: a new task, due now.
    New,
    /// One waits that never ran: the change joins it (both read the same stored truth when it
    /// runs).
    Join(i64),
    /// One waits for a retry: it is superseded by a new task, due now, with attempts of its own.
    /// A new change never inherits an earlier task's backoff.
    Supersede(i64),
}

/// How a new change meets the waiting task.
pub fn meet(waiting: Option<Waiting>) -> Meet {
    match waiting {
        None => Meet::New,
        Some(w) if w.attempts == 0 => Meet::Join(w.task_id),
        Some(w) => Meet::Supersede(w.task_id),
    }
}

/// How an attempt ended, as the service answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskResult {
    /// The service did everything asked.
    Ok {
        /// What was done.
        operation: Operation,
        /// Summary.
        message: String,
        /// Encoded `TaskReport`.
        report: Option<Vec<u8>>,
    },
    /// Failed in a way a later attempt may cure.
    Retry {
        /// What was attempted.
        operation: Operation,
        /// Why.
        message: String,
        /// Encoded `TaskReport`, when the service answered.
        report: Option<Vec<u8>>,
    },
    /// Failed in a way no retry of the same request cures: a refused request, or items (members,
    /// datasets) the service reported as failing for good. Looked at again only when something
    /// changes.
    Permanent {
        /// What was attempted.
        operation: Operation,
        /// Why.
        message: String,
        /// Encoded `TaskReport`, when the service answered.
        report: Option<Vec<u8>>,
        /// The items that failed for good (`login:alice`, `dataset:<uuid>`), which resync expects
        /// to find missing while the project stays as it was.
        residue: Vec<String>,
    },
}

impl TaskResult {
    /// The operation attempted.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Ok { operation, .. }
            | Self::Retry { operation, .. }
            | Self::Permanent { operation, .. } => *operation,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Ok { message, .. }
            | Self::Retry { message, .. }
            | Self::Permanent { message, .. } => message,
        }
    }
}

/// What an attempt's result writes to its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The task's new state: OK or FAILED (final), READY (a retry is scheduled) or SUPERSEDED.
    pub state: TaskState,
    /// When it runs again (READY only; 0 otherwise).
    pub next_run_at: i64,
    /// What was attempted (`None`: not known, as when a worker vanished; the stored one stays).
    pub operation: Option<Operation>,
    /// The task's message.
    pub text: String,
    /// Encoded `TaskReport`.
    pub report: Option<Vec<u8>>,
    /// Items that failed for good (see [`TaskResult::Permanent`]).
    pub residue: Vec<String>,
}

impl Outcome {
    /// True when the task will run again.
    pub fn pending(&self) -> bool {
        self.state == TaskState::Ready
    }
}

/// The task state an attempt's result leads to. `attempts` counts this attempt; `newer_waits`
/// says a newer task of the same project and target already waits (it carries the latest state,
/// so a retry of this one is dropped in its favour).
pub fn outcome(
    result: TaskResult,
    attempts: i64,
    policy: &RetryPolicy,
    newer_waits: bool,
    now: i64,
) -> Outcome {
    let finished = |state, operation, text, report, residue| Outcome {
        state,
        next_run_at: 0,
        operation,
        text,
        report,
        residue,
    };
    match result {
        TaskResult::Ok {
            operation,
            message,
            report,
        } => finished(TaskState::Ok, Some(operation), message, report, Vec::new()),
        TaskResult::Permanent {
            operation,
            message,
            report,
            residue,
        } => finished(TaskState::Failed, Some(operation), message, report, residue),
        TaskResult::Retry {
            operation,
            message,
            report,
        } => {
            if newer_waits {
                let text = format!("{message}; not retried: a newer task carries the project");
                return finished(
                    TaskState::Superseded,
                    Some(operation),
                    text,
                    report,
                    Vec::new(),
                );
            }
            match policy.next_try(attempts, now) {
                Some(at) => Outcome {
                    state: TaskState::Ready,
                    next_run_at: at,
                    operation: Some(operation),
                    text: format!(
                        "{message} (attempt {attempts} of {}; next in {:.1}s)",
                        policy.max_attempts,
                        (at - now) as f64 / 1000.0
                    ),
                    report,
                    residue: Vec::new(),
                },
                None => {
                    let text = format!("{message} (gave up after {attempts} attempts)");
                    finished(TaskState::Failed, Some(operation), text, report, Vec::new())
                }
            }
        }
    }
}

/// The state of a task whose worker stopped answering for it (its lease lapsed, or its replica
/// restarted): run again at once, since the lapse says nothing about the service, unless its
/// attempts are spent or a newer task already waits.
pub fn lapsed(
    why: &str,
    attempts: i64,
    policy: &RetryPolicy,
    newer_waits: bool,
    now: i64,
) -> Outcome {
    let mut outcome = outcome(
        TaskResult::Retry {
            operation: Operation::Apply,
            message: why.to_owned(),
            report: None,
        },
        attempts,
        policy,
        newer_waits,
        now,
    );
    outcome.operation = None;
    if outcome.pending() {
        outcome.next_run_at = now;
        outcome.text = format!(
            "{why}; running it again (attempt {attempts} of {})",
            policy.max_attempts
        );
    }
    outcome
}

/// A change's status: IN_PROGRESS until SMRT Link is read and while any task waits (for its first
/// run or a retry) or runs; then OK when every task succeeded, FAILED when every task failed (or
/// SMRT Link could not be read), PARTIAL otherwise. Superseded tasks do not count: the task that
/// replaced them is linked to the change too.
pub fn change_status(read_state: ReadState, tasks: &[TaskState]) -> ChangeStatus {
    match read_state {
        ReadState::Settling | ReadState::Reading => return ChangeStatus::InProgress,
        ReadState::Failed => return ChangeStatus::Failed,
        ReadState::Read => {}
    }
    let live = || tasks.iter().filter(|s| **s != TaskState::Superseded);
    if live().any(|s| matches!(s, TaskState::Ready | TaskState::Working)) {
        return ChangeStatus::InProgress;
    }
    let failed = live().filter(|s| **s == TaskState::Failed).count();
    let ok = live().filter(|s| **s == TaskState::Ok).count();
    match (ok, failed) {
        (_, 0) => ChangeStatus::Ok,
        (0, _) => ChangeStatus::Failed,
        _ => ChangeStatus::Partial,
    }
}

/// True when nothing more happens to a change without a new event.
pub fn is_final(status: ChangeStatus) -> bool {
    status != ChangeStatus::InProgress
}

/// Whether a read stamped `stamp` replaces the stored truth, stamped `stored` (`None`: nothing
/// is stored). Stamps are taken when a read starts, from one increasing sequence, so a stored
/// truth is never replaced by a read that started before it.
pub fn replaces(stamp: i64, stored: Option<i64>) -> bool {
    stored.is_none_or(|stored| stamp > stored)
}

/// Whether `owner` may take a named singleton lease held by `holder` until `expires_at`: when it
/// is free, lapsed, or already its own (a replica restarted under its name takes its lease back).
pub fn lease_free(holder: &str, expires_at: i64, owner: &str, now: i64) -> bool {
    holder.is_empty() || holder == owner || expires_at <= now
}

/// What an analysis job's state means to smrtshare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    /// Not finished (CREATED, SUBMITTED, RUNNING, or a state SMRT Link may add): followed.
    Pending,
    /// Finished with outputs (SUCCESSFUL): staged.
    Done,
    /// Finished without usable outputs (FAILED, TERMINATED, ABORTED): nothing staged.
    Failed,
}

/// The phase of SMRT Link's job state text.
pub fn job_phase(state: &str) -> JobPhase {
    match state {
        "SUCCESSFUL" => JobPhase::Done,
        "FAILED" | "TERMINATED" | "ABORTED" => JobPhase::Failed,
        _ => JobPhase::Pending,
    }
}

/// When a pending analysis job is looked at again: `first_ms` after the first look, doubling
/// with every look, at most `most_ms` apart. It is followed until its state is final, however
/// long it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckSchedule {
    /// Delay after the first look.
    pub first_ms: i64,
    /// Longest delay.
    pub most_ms: i64,
}

impl CheckSchedule {
    /// The time of the next look after `checks` looks.
    pub fn next(&self, checks: i64, now: i64) -> i64 {
        let exp = u32::try_from((checks - 1).clamp(0, 30)).unwrap_or(30);
        now + self
            .first_ms
            .saturating_mul(1i64 << exp)
            .min(self.most_ms)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState as T;

    const POLICY: RetryPolicy = RetryPolicy {
        backoff: Backoff::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_millis(1000),
        ),
        max_attempts: 3,
    };

    fn retry() -> TaskResult {
        TaskResult::Retry {
            operation: Operation::Apply,
            message: "down".into(),
            report: None,
        }
    }

    #[test]
    fn merging_pushes_settle_within_the_bound() {
        // Created at 0 with a 2 s settle; the bound is 30 s.
        assert_eq!(merged_settle(2_000, 0, 3_900, 30_000), 3_900);
        assert_eq!(merged_settle(2_000, 0, 40_000, 30_000), 30_000);
        // Never earlier than already set.
        assert_eq!(merged_settle(5_000, 0, 3_000, 30_000), 5_000);
    }

    #[test]
    fn a_new_change_never_inherits_a_backoff() {
        assert_eq!(meet(None), Meet::New);
        let fresh = Waiting {
            task_id: 7,
            attempts: 0,
        };
        assert_eq!(meet(Some(fresh)), Meet::Join(7));
        let retrying = Waiting {
            task_id: 8,
            attempts: 2,
        };
        assert_eq!(meet(Some(retrying)), Meet::Supersede(8));
    }

    #[test]
    fn every_result_ends_or_retries_within_the_budget() {
        let ok = outcome(
            TaskResult::Ok {
                operation: Operation::Apply,
                message: "done".into(),
                report: None,
            },
            1,
            &POLICY,
            false,
            0,
        );
        assert_eq!((ok.state, ok.pending()), (T::Ok, false));

        let permanent = outcome(
            TaskResult::Permanent {
                operation: Operation::Apply,
                message: "no identity".into(),
                report: None,
                residue: vec!["login:bob".into()],
            },
            1,
            &POLICY,
            false,
            0,
        );
        assert_eq!(permanent.state, T::Failed);
        assert_eq!(permanent.residue, vec!["login:bob".to_owned()]);

        let again = outcome(retry(), 1, &POLICY, false, 1_000);
        assert_eq!(again.state, T::Ready);
        assert!((1_000..=1_100).contains(&again.next_run_at), "{again:?}");
        assert!(again.text.contains("attempt 1 of 3"), "{}", again.text);

        let spent = outcome(retry(), 3, &POLICY, false, 0);
        assert_eq!(spent.state, T::Failed);
        assert!(
            spent.text.contains("gave up after 3 attempts"),
            "{}",
            spent.text
        );

        let dropped = outcome(retry(), 1, &POLICY, true, 0);
        assert_eq!(dropped.state, T::Superseded);
    }

    #[test]
    fn a_lapsed_lease_runs_again_at_once() {
        let again = lapsed("the lease lapsed", 1, &POLICY, false, 5_000);
        assert_eq!((again.state, again.next_run_at), (T::Ready, 5_000));
        let spent = lapsed("the lease lapsed", 3, &POLICY, false, 5_000);
        assert_eq!(spent.state, T::Failed);
    }

    #[test]
    fn status_follows_read_state_and_tasks() {
        use ChangeStatus as S;
        assert_eq!(change_status(ReadState::Settling, &[]), S::InProgress);
        assert_eq!(change_status(ReadState::Failed, &[T::Ok]), S::Failed);
        assert_eq!(change_status(ReadState::Read, &[]), S::Ok);
        assert_eq!(
            change_status(ReadState::Read, &[T::Ok, T::Working]),
            S::InProgress
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Ok, T::Ready]),
            S::InProgress
        );
        assert_eq!(change_status(ReadState::Read, &[T::Ok, T::Ok]), S::Ok);
        assert_eq!(
            change_status(ReadState::Read, &[T::Ok, T::Failed]),
            S::Partial
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Failed, T::Failed]),
            S::Failed
        );
        assert_eq!(
            change_status(ReadState::Read, &[T::Superseded, T::Ok, T::Ok]),
            S::Ok
        );
        assert!(!is_final(S::InProgress) && is_final(S::Partial));
    }

    #[test]
    fn a_lease_is_taken_when_free_lapsed_or_own() {
        assert!(lease_free("", 0, "a", 10));
        assert!(lease_free("a", 100, "a", 10));
        assert!(lease_free("b", 10, "a", 10));
        assert!(!lease_free("b", 11, "a", 10));
    }

    #[test]
    fn jobs_are_followed_until_final_on_a_schedule_that_backs_off() {
        assert_eq!(job_phase("RUNNING"), JobPhase::Pending);
        assert_eq!(job_phase("SOMETHING NEW"), JobPhase::Pending);
        assert_eq!(job_phase("SUCCESSFUL"), JobPhase::Done);
        assert_eq!(job_phase("ABORTED"), JobPhase::Failed);
        let every = CheckSchedule {
            first_ms: 60_000,
            most_ms: 1_800_000,
        };
        assert_eq!(every.next(1, 0), 60_000);
        assert_eq!(every.next(2, 0), 120_000);
        assert_eq!(every.next(6, 0), 1_800_000);
        assert_eq!(every.next(60, 0), 1_800_000);
    }

    #[test]
    fn only_a_later_read_replaces_a_stored_truth() {
        assert!(replaces(5, None));
        assert!(replaces(5, Some(4)));
        assert!(!replaces(5, Some(5)));
        assert!(!replaces(4, Some(5)));
    }
}
