//! Jobs that change state over time, and the stand-in's clock.
//!
//! A schedule is a list of steps, each a state the job enters at a time: `afterSeconds` after the
//! job was seeded or added (seeds: when the stand-in loaded them), or `at` an absolute RFC 3339
//! time. Steps are evaluated lazily: every read of a job first applies the steps that are due
//! by the stand-in's clock (no background task). A step's timestamps (`updatedAt`,
//! `jobUpdatedAt`, `jobStartedAt`, `jobCompletedAt`) are the time it was due, not the time it was
//! seen. The schedule is internal: it never appears in SMRT Link's answers.
//!
//! The format is one list, the same in `analysis_jobs.json` (a job record's `standinSchedule`)
//! and in the admin API (`schedule`):
//!
//! ```json
//! [{"afterSeconds": 5, "state": "RUNNING"},
//!  {"afterSeconds": 90, "state": "FAILED", "errorMessage": "pbmm2 exited with status 137"}]
//! ```

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::StandInError;
use smrtshare_smrtlink::model::read::{describe, parse_time};
use smrtshare_smrtlink::model::{JobPhase, JobState};

/// The longest `afterSeconds` accepted (ten years).
const MAX_AFTER_SECONDS: f64 = 10.0 * 366.0 * 24.0 * 3600.0;

/// When a step is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepTime {
    /// This long after the job was seeded or added (or the schedule was set).
    After(std::time::Duration),
    /// At this time (of the stand-in's clock).
    At(DateTime<Utc>),
}

/// One step of a schedule, as given.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleStep {
    /// When the job enters `state`.
    pub when: StepTime,
    /// The state it enters.
    pub state: JobState,
    /// The `errorMessage` it gets (failed states), if any.
    pub error_message: Option<String>,
}

impl ScheduleStep {
    /// A step `after` the job was added.
    pub fn after(after: std::time::Duration, state: JobState) -> Self {
        Self {
            when: StepTime::After(after),
            state,
            error_message: None,
        }
    }

    /// The same step with an error message.
    pub fn with_error(mut self, message: impl Into<String>) -> Self {
        self.error_message = Some(message.into());
        self
    }
}

/// A step with its time resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    pub(crate) at: DateTime<Utc>,
    pub(crate) state: JobState,
    pub(crate) error_message: Option<String>,
}

fn field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Option<&'a Value> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

/// Reads a schedule (`path` names it in errors: `analysis_jobs.json: jobs[2].standinSchedule`).
pub(crate) fn parse(value: &Value, path: &str) -> Result<Vec<ScheduleStep>, StandInError> {
    let invalid = |at: String, problem: String| StandInError::Invalid(format!("{at}: {problem}"));
    let Value::Array(items) = value else {
        return Err(invalid(
            path.to_owned(),
            format!("expected a list of steps, found {}", describe(value)),
        ));
    };
    let mut steps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Value::Object(obj) = item else {
            return Err(invalid(
                at,
                format!("expected an object, found {}", describe(item)),
            ));
        };
        let when = match (
            field(obj, "afterSeconds", "after_seconds"),
            field(obj, "at", "at"),
        ) {
            (Some(after), None) => {
                let seconds = after.as_f64().filter(|s| s.is_finite() && *s >= 0.0);
                let seconds = seconds.filter(|s| *s <= MAX_AFTER_SECONDS).ok_or_else(|| {
                    invalid(
                        format!("{at}.afterSeconds"),
                        format!(
                            "expected a number of seconds from 0 to {MAX_AFTER_SECONDS}, found {}",
                            describe(after)
                        ),
                    )
                })?;
                StepTime::After(std::time::Duration::from_secs_f64(seconds))
            }
            (None, Some(time)) => {
                let parsed = time.as_str().and_then(parse_time).ok_or_else(|| {
                    invalid(
                        format!("{at}.at"),
                        format!("expected an RFC 3339 time, found {}", describe(time)),
                    )
                })?;
                StepTime::At(parsed)
            }
            (Some(_), Some(_)) => {
                return Err(invalid(at, "give afterSeconds or at, not both".into()));
            }
            (None, None) => return Err(invalid(at, "afterSeconds or at is required".into())),
        };
        let state = match field(obj, "state", "state") {
            Some(Value::String(text)) => JobState::parse(text).ok_or_else(|| {
                invalid(format!("{at}.state"), format!("unknown job state {text:?}"))
            })?,
            Some(other) => {
                return Err(invalid(
                    format!("{at}.state"),
                    format!("expected a string, found {}", describe(other)),
                ));
            }
            None => return Err(invalid(format!("{at}.state"), "missing".into())),
        };
        let error_message = match field(obj, "errorMessage", "error_message") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(invalid(
                    format!("{at}.errorMessage"),
                    format!("expected a string, found {}", describe(other)),
                ));
            }
        };
        steps.push(ScheduleStep {
            when,
            state,
            error_message,
        });
    }
    Ok(steps)
}

/// Resolves a schedule for a job now in `current`, relative to `anchor`. Times must not go
/// backwards, and nothing may follow a final state (a finished job never changes again).
pub(crate) fn resolve(
    steps: &[ScheduleStep],
    current: JobState,
    anchor: DateTime<Utc>,
    path: &str,
) -> Result<Vec<Step>, StandInError> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    let mut state = current;
    for (i, step) in steps.iter().enumerate() {
        if state.phase() != JobPhase::Pending {
            return Err(StandInError::Invalid(format!(
                "{path}[{i}]: the job is {state} by then, and a finished job never changes state"
            )));
        }
        let at = match step.when {
            StepTime::After(after) => TimeDelta::from_std(after)
                .ok()
                .and_then(|after| anchor.checked_add_signed(after))
                .ok_or_else(|| {
                    StandInError::Invalid(format!("{path}[{i}].afterSeconds: too far ahead"))
                })?,
            StepTime::At(at) => at,
        };
        if let Some(previous) = out.last()
            && at < previous.at
        {
            return Err(StandInError::Invalid(format!(
                "{path}[{i}]: due before step {} (steps must be in time order)",
                i - 1
            )));
        }
        state = step.state;
        out.push(Step {
            at,
            state: step.state,
            error_message: step.error_message.clone(),
        });
    }
    Ok(out)
}

/// The stand-in's clock: the wall clock plus an offset tests and operators advance.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset: TimeDelta,
}

impl Clock {
    /// Now, by this clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let wall = Utc::now();
        wall.checked_add_signed(self.offset).unwrap_or(wall)
    }

    /// Moves the clock forward; refuses a step beyond ten years.
    pub(crate) fn advance(&mut self, by: std::time::Duration) -> Result<(), StandInError> {
        let too_far = || {
            StandInError::Invalid(format!(
                "the clock moves forward by at most {MAX_AFTER_SECONDS} seconds at a time"
            ))
        };
        if by.as_secs_f64() > MAX_AFTER_SECONDS {
            return Err(too_far());
        }
        let by = TimeDelta::from_std(by).map_err(|_| too_far())?;
        let offset = self.offset.checked_add(&by).ok_or_else(too_far)?;
        Utc::now().checked_add_signed(offset).ok_or_else(too_far)?;
        self.offset = offset;
        Ok(())
    }

    /// How far it has been advanced.
    pub(crate) fn offset(&self) -> TimeDelta {
        self.offset
    }
}
