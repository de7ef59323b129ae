//! Cron schedules and event triggers: what runs when.
//!
//! # Cron schedules
//!
//! A [`CronSchedule`] names a workflow, a cron expression (5 fields, or 6
//! with seconds first), a time zone and a [`CatchUp`] policy. Expressions
//! are parsed by the `croner` crate (POSIX/Vixie semantics with the usual
//! extensions: `L`, `#`, `W`, `@hourly`…).
//!
//! **Time zones and daylight saving time.** Ticks are computed in the
//! schedule's time zone (an IANA name such as `Europe/Berlin`, default
//! `UTC`):
//! * a fixed-time tick that falls in the hour skipped when clocks go
//!   forward runs **once, at the first instant after the gap** (`30 2 * * *`
//!   runs at 03:00 on that day);
//! * a fixed-time tick in the hour repeated when clocks go back runs
//!   **once, at its first occurrence**;
//! * interval patterns (`*/15 * * * *`) follow real time: the repeated
//!   hour's instants each run.
//!
//! **Late and missed ticks.** Every tick after the schedule's last
//! processed one is considered. A tick at most the *misfire threshold*
//! late (default 60 s, as in Quartz) is on time and always runs: a busy
//! runner that polls a little late loses nothing. A tick later than that
//! was *missed* — typically no runner was up — and the [`CatchUp`] policy
//! decides: `Skip` (the default) turns an outage into at most one run (the
//! latest missed tick runs if no tick is on time, otherwise none of them);
//! `RunAll { cap }` runs the missed ticks, at most the `cap` most recent
//! (default 100), oldest first.
//!
//! # Event triggers
//!
//! An [`EventTrigger`] is polled on an interval and answers [`EventPoll::Skip`]
//! or [`EventPoll::Fire`] with an input context. Identical firings (same
//! trigger, same context) are suppressed while an execution they started is
//! still unfinished, unless the trigger allows concurrent runs.
//!
//! (A *trigger rule*, [`TriggerRule`](crate::TriggerRule), is something
//! else: whether a task runs once its dependencies are done.)

use std::time::Duration;

mod cron;
mod event;
mod record;
#[cfg(test)]
mod tests;

pub use cron::{CatchUp, CronSchedule, DEFAULT_MISFIRE_THRESHOLD, DueTicks, FiringPlan, plan_firing, rfc3339};
#[allow(deprecated)]
pub use event::{EventPoll, EventTrigger, EventTriggerSpec, Trigger, TriggerPoll, TriggerSpec, firing_key};
pub use record::ScheduleRecord;

/// A schedule or trigger that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A name outside the id rule.
    #[error(
        "invalid schedule or trigger name `{name}`: names are 1-128 characters of ASCII letters, digits, `_`, `-` and `.`"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A cron expression `croner` cannot parse.
    #[error(
        "invalid cron expression `{expression}`: {reason} (5 fields: minute hour day-of-month month day-of-week, or 6 with seconds first)"
    )]
    InvalidExpression {
        /// The expression.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// A time zone that is not an IANA name.
    #[error("unknown time zone `{timezone}`: use an IANA name such as `UTC` or `Europe/Berlin`")]
    UnknownTimezone {
        /// The name given.
        timezone: String,
    },
    /// A catch-up policy that makes no sense or cannot be parsed.
    #[error("invalid catch-up policy `{policy}`: expected `skip` or `run_all(<cap ≥ 1>)`")]
    InvalidCatchUp {
        /// The policy given.
        policy: String,
    },
    /// A misfire threshold over the limit.
    #[error("misfire threshold {given:?} is too long: at most 1 hour")]
    InvalidMisfireThreshold {
        /// The threshold given.
        given: Duration,
    },
    /// A poll interval of zero.
    #[error("the poll interval of trigger `{name}` must be positive")]
    ZeroPollInterval {
        /// The trigger.
        name: String,
    },
}

fn valid_name(name: &str) -> Result<(), ScheduleError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(ScheduleError::InvalidName { name: name.to_owned() }) }
}
