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
//! # Triggers
//!
//! A [`Trigger`] is polled on an interval and answers [`TriggerPoll::Skip`]
//! or [`TriggerPoll::Fire`] with an input context. Identical firings (same
//! trigger, same context) are suppressed while an execution they started is
//! still unfinished, unless the trigger allows concurrent runs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeZone;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::ids::Timestamp;
use crate::plan::NewExecution;
use crate::task::TaskError;
use crate::workflow::WorkflowSet;

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

/// The default [`CronSchedule::misfire_threshold`]: 60 s.
pub const DEFAULT_MISFIRE_THRESHOLD: Duration = Duration::from_secs(60);
const MAX_MISFIRE_THRESHOLD: Duration = Duration::from_secs(3600);

/// What happens to ticks *missed* — more than the misfire threshold late,
/// typically because no runner was up. Ticks that are merely late (within
/// the threshold) always run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// The default: an outage yields at most one run. The latest missed
    /// tick runs if no tick is on time; otherwise none of the missed ticks
    /// run.
    #[default]
    Skip,
    /// Run the missed ticks, at most the `cap` most recent, oldest first.
    RunAll {
        /// The most ticks run after one outage (≥ 1).
        cap: usize,
    },
}

impl CatchUp {
    /// `RunAll` with the default cap of 100.
    pub fn run_all() -> Self {
        CatchUp::RunAll { cap: 100 }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatchUp::Skip => f.write_str("skip"),
            CatchUp::RunAll { cap } => write!(f, "run_all({cap})"),
        }
    }
}

impl FromStr for CatchUp {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::InvalidCatchUp { policy: s.to_owned() };
        match s.trim() {
            "skip" => Ok(CatchUp::Skip),
            "run_all" => Ok(CatchUp::run_all()),
            other => {
                let cap = other.strip_prefix("run_all(").and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
                let cap: usize = cap.trim().parse().map_err(|_| bad())?;
                if cap == 0 {
                    return Err(bad());
                }
                Ok(CatchUp::RunAll { cap })
            }
        }
    }
}

/// A recurring execution of a workflow. See the [module docs](self).
///
/// ```
/// use cloacina_core::schedule::{CatchUp, CronSchedule};
/// use cloacina_core::Timestamp;
/// let s = CronSchedule::new("nightly_etl", "etl", "0 2 * * *")?
///     .timezone("Europe/Berlin")?
///     .catch_up(CatchUp::Skip)?;
/// // 2026-07-01T00:00:00Z is 02:00 in Berlin (summer time).
/// let midnight_utc = Timestamp(1_782_864_000_000);
/// assert_eq!(s.next_after(Timestamp(midnight_utc.0 - 1)), Some(midnight_utc));
/// # Ok::<(), cloacina_core::schedule::ScheduleError>(())
/// ```
#[derive(Clone)]
pub struct CronSchedule {
    name: String,
    workflow: String,
    expression: String,
    cron: Cron,
    timezone: chrono_tz::Tz,
    catch_up: CatchUp,
    misfire: Duration,
    input: Context,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("name", &self.name)
            .field("workflow", &self.workflow)
            .field("expression", &self.expression)
            .field("timezone", &self.timezone.name())
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}

/// Ticks due at a point in time, after the catch-up policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTicks {
    /// The ticks to run, oldest first.
    pub run: Vec<Timestamp>,
    /// How many missed ticks the policy dropped.
    pub skipped: usize,
}

impl CronSchedule {
    /// A schedule named `name` running `workflow` on `expression`, in UTC,
    /// with the default catch-up policy and an empty input.
    pub fn new(name: &str, workflow: &str, expression: &str) -> Result<Self, ScheduleError> {
        valid_name(name)?;
        let cron = CronParser::builder().seconds(Seconds::Optional).build().parse(expression).map_err(|e| {
            ScheduleError::InvalidExpression { expression: expression.to_owned(), reason: e.to_string() }
        })?;
        Ok(Self {
            name: name.to_owned(),
            workflow: workflow.to_owned(),
            expression: expression.to_owned(),
            cron,
            timezone: chrono_tz::UTC,
            catch_up: CatchUp::default(),
            misfire: DEFAULT_MISFIRE_THRESHOLD,
            input: Context::new(),
        })
    }

    /// The time zone the expression is read in (an IANA name).
    pub fn timezone(mut self, name: &str) -> Result<Self, ScheduleError> {
        self.timezone = name.parse().map_err(|_| ScheduleError::UnknownTimezone { timezone: name.to_owned() })?;
        Ok(self)
    }

    /// The catch-up policy (a `RunAll` cap of 0 is an error).
    pub fn catch_up(mut self, policy: CatchUp) -> Result<Self, ScheduleError> {
        if policy == (CatchUp::RunAll { cap: 0 }) {
            return Err(ScheduleError::InvalidCatchUp { policy: policy.to_string() });
        }
        self.catch_up = policy;
        Ok(self)
    }

    /// How late a tick may run and still count as on time (default 60 s,
    /// at most 1 hour); later ticks are *missed* and follow the catch-up
    /// policy.
    pub fn misfire_threshold(mut self, d: Duration) -> Result<Self, ScheduleError> {
        if d > MAX_MISFIRE_THRESHOLD {
            return Err(ScheduleError::InvalidMisfireThreshold { given: d });
        }
        self.misfire = d;
        Ok(self)
    }

    /// The input context of every execution it starts.
    pub fn input(mut self, ctx: Context) -> Self {
        self.input = ctx;
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The workflow it runs.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }
    /// The cron expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }
    /// The time zone's IANA name.
    pub fn timezone_name(&self) -> &str {
        self.timezone.name()
    }
    /// The catch-up policy.
    pub fn catch_up_policy(&self) -> CatchUp {
        self.catch_up
    }
    /// The misfire threshold.
    pub fn misfire(&self) -> Duration {
        self.misfire
    }
    /// The input context.
    pub fn input_context(&self) -> &Context {
        &self.input
    }

    fn at(&self, t: Timestamp) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        self.timezone.timestamp_millis_opt(t.0).single()
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let from = self.at(t)?;
        self.cron.find_next_occurrence(&from, false).ok().map(|d| Timestamp(d.timestamp_millis()))
    }

    /// The ticks in `(after, now]` to run, after the catch-up policy (see
    /// [`CatchUp`]). Walks back from `now`, so a long outage costs at most
    /// a few steps more than the ticks it returns.
    pub fn due(&self, after: Timestamp, now: Timestamp) -> DueTicks {
        let Some(from) = self.at(now) else { return DueTicks { run: Vec::new(), skipped: 0 } };
        let on_time_from = now.0.saturating_sub(i64::try_from(self.misfire.as_millis()).unwrap_or(i64::MAX));
        let mut on_time: Vec<Timestamp> = Vec::new();
        let mut missed: Vec<Timestamp> = Vec::new();
        let mut cursor = from;
        let mut inclusive = true;
        while let Ok(tick) = self.cron.find_previous_occurrence(&cursor, inclusive) {
            let ms = tick.timestamp_millis();
            if ms <= after.0 {
                break;
            }
            if ms >= on_time_from {
                on_time.push(Timestamp(ms));
            } else {
                let budget = match self.catch_up {
                    CatchUp::Skip if on_time.is_empty() => 1,
                    CatchUp::Skip => 0,
                    CatchUp::RunAll { cap } => cap,
                };
                if missed.len() == budget {
                    // The rest are dropped: count them (bounded).
                    let skipped = self.count_between(after, Timestamp(ms));
                    return DueTicks { run: oldest_first(missed, on_time), skipped };
                }
                missed.push(Timestamp(ms));
            }
            cursor = tick;
            inclusive = false;
        }
        DueTicks { run: oldest_first(missed, on_time), skipped: 0 }
    }

    /// Ticks in `(after, upto]`, counted up to a bound of 10,000.
    fn count_between(&self, after: Timestamp, upto: Timestamp) -> usize {
        let Some(start) = self.at(after) else { return 0 };
        self.cron.iter_after(start).take_while(|d| d.timestamp_millis() <= upto.0).take(10_000).count()
    }
}

/// What firing one stored schedule at a point in time comes to: the
/// executions of its due ticks and how the schedule advances. Computed the
/// same way by every storage adapter, inside its transaction.
#[derive(Debug, Clone)]
pub struct FiringPlan {
    /// The due ticks and their executions, oldest first.
    pub runs: Vec<(Timestamp, NewExecution)>,
    /// Missed ticks the catch-up policy dropped.
    pub skipped: usize,
    /// The schedule's new last processed tick.
    pub last_tick: Timestamp,
    /// Its new next tick.
    pub next_tick: Option<Timestamp>,
}

/// Plans the firing of `record` at `now`, or `None` when it is paused, not
/// due, or runs a workflow `workflows` does not hold. Executions' origin
/// is `cron:<schedule>@<tick, RFC 3339 UTC>`.
pub fn plan_firing(record: &ScheduleRecord, workflows: &WorkflowSet, now: Timestamp) -> Option<FiringPlan> {
    if record.paused || record.next_tick.is_none_or(|t| t > now) {
        return None;
    }
    let s = &record.schedule;
    let wf = workflows.by_name(s.workflow())?;
    let due = s.due(record.last_tick, now);
    let last_tick = due.run.last().copied().unwrap_or(record.last_tick).max(record.last_tick);
    let runs = due
        .run
        .into_iter()
        .map(|tick| {
            let origin = format!("cron:{}@{}", s.name(), rfc3339(tick));
            (tick, NewExecution::plan(wf, s.input_context().clone(), origin, now))
        })
        .collect();
    Some(FiringPlan { runs, skipped: due.skipped, last_tick, next_tick: s.next_after(last_tick.max(now)) })
}

/// A timestamp as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: Timestamp) -> String {
    match chrono::Utc.timestamp_millis_opt(t.0).single() {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{}ms", t.0),
    }
}

/// Newest-first missed and on-time ticks as one oldest-first list.
fn oldest_first(missed: Vec<Timestamp>, on_time: Vec<Timestamp>) -> Vec<Timestamp> {
    let mut run: Vec<Timestamp> = missed.into_iter().chain(on_time).collect();
    run.sort_unstable();
    run
}

/// What a trigger's poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerPoll {
    /// Nothing to do.
    Skip,
    /// Start the workflow with this input.
    Fire(Context),
}

/// A user-defined poller that starts a workflow when something happens
/// (a file appears, a queue has messages…).
#[async_trait]
pub trait Trigger: Send + Sync + 'static {
    /// Looks once. An error is logged and the trigger polled again later.
    async fn poll(&self) -> Result<TriggerPoll, TaskError>;
}

/// A trigger and how it is run.
#[derive(Clone)]
pub struct TriggerSpec {
    name: String,
    workflow: String,
    poll_interval: Duration,
    allow_concurrent: bool,
    trigger: Arc<dyn Trigger>,
}

impl fmt::Debug for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerSpec")
            .field("name", &self.name)
            .field("workflow", &self.workflow)
            .field("poll_interval", &self.poll_interval)
            .field("allow_concurrent", &self.allow_concurrent)
            .finish_non_exhaustive()
    }
}

impl TriggerSpec {
    /// A trigger named `name` starting `workflow`, polled every 5 s, with
    /// identical firings suppressed while one is unfinished.
    pub fn new(name: &str, workflow: &str, trigger: Arc<dyn Trigger>) -> Result<Self, ScheduleError> {
        valid_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            workflow: workflow.to_owned(),
            poll_interval: Duration::from_secs(5),
            allow_concurrent: false,
            trigger,
        })
    }
    /// How often to poll (positive).
    pub fn poll_interval(mut self, d: Duration) -> Result<Self, ScheduleError> {
        if d.is_zero() {
            return Err(ScheduleError::ZeroPollInterval { name: self.name });
        }
        self.poll_interval = d;
        Ok(self)
    }
    /// Whether identical firings may run at the same time (default false).
    pub fn allow_concurrent(mut self, yes: bool) -> Self {
        self.allow_concurrent = yes;
        self
    }
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The workflow.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }
    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.poll_interval
    }
    /// Whether concurrent identical firings are allowed.
    pub fn concurrent(&self) -> bool {
        self.allow_concurrent
    }
    /// The poller.
    pub fn trigger(&self) -> &Arc<dyn Trigger> {
        &self.trigger
    }
}

/// The key identical firings share: the trigger's name and its context.
pub fn firing_key(trigger: &str, ctx: &Context) -> String {
    let mut h = Sha256::new();
    h.update(trigger.as_bytes());
    h.update([0u8]);
    h.update(ctx.to_json().as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    /// The definition.
    pub schedule: CronSchedule,
    /// Paused schedules start nothing.
    pub paused: bool,
    /// Ticks at or before this time are processed (run or skipped). A new
    /// schedule starts at its registration time; a resumed one at its
    /// resumption (ticks missed while paused are not caught up).
    pub last_tick: Timestamp,
    /// The next tick to process (`None`: the expression has no more).
    pub next_tick: Option<Timestamp>,
    /// When it was first registered.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl ScheduleRecord {
    /// The record of `schedule` registered at `now`: new, or replacing the
    /// definition of a stored one whose paused flag, last processed tick
    /// and creation time (`previous`) are kept.
    pub fn registered(schedule: &CronSchedule, previous: Option<(bool, Timestamp, Timestamp)>, now: Timestamp) -> Self {
        let (paused, last_tick, created_at) = previous.unwrap_or((false, now, now));
        Self {
            schedule: schedule.clone(),
            paused,
            last_tick,
            next_tick: schedule.next_after(last_tick),
            created_at,
            updated_at: now,
        }
    }

    /// Whether the schedule is *stalled* at `now`: unpaused, with a tick
    /// that is due by more than its misfire threshold — no runner has
    /// been firing it (none that registers its workflow is running).
    pub fn is_stalled(&self, now: Timestamp) -> bool {
        !self.paused && self.next_tick.is_some_and(|t| now.since(t) > self.schedule.misfire())
    }

    /// Pauses or resumes at `now`; a resumed schedule continues from `now`.
    /// Returns whether anything changed.
    pub fn set_paused(&mut self, paused: bool, now: Timestamp) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        self.updated_at = now;
        if !paused {
            self.last_tick = now;
            self.next_tick = self.schedule.next_after(now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        Timestamp(chrono::Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap().timestamp_millis())
    }

    struct Never;
    #[async_trait::async_trait]
    impl Trigger for Never {
        async fn poll(&self) -> Result<TriggerPoll, TaskError> {
            Ok(TriggerPoll::Skip)
        }
    }

    #[test]
    fn invalid_trigger_specs_are_clear_errors() {
        assert!(matches!(
            TriggerSpec::new("bad name", "wf", Arc::new(Never)),
            Err(ScheduleError::InvalidName { name }) if name == "bad name"
        ));
        assert!(matches!(
            TriggerSpec::new("t", "wf", Arc::new(Never)).unwrap().poll_interval(Duration::ZERO),
            Err(ScheduleError::ZeroPollInterval { name }) if name == "t"
        ));
        assert!(TriggerSpec::new("t", "wf", Arc::new(Never)).unwrap().poll_interval(Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn invalid_input_is_a_clear_error() {
        assert!(matches!(CronSchedule::new("bad name", "wf", "* * * * *"), Err(ScheduleError::InvalidName { .. })));
        assert!(matches!(
            CronSchedule::new("s", "wf", "* * * * *").unwrap().misfire_threshold(Duration::from_secs(2 * 3600)),
            Err(ScheduleError::InvalidMisfireThreshold { .. })
        ));
        let e = CronSchedule::new("s", "wf", "61 * * * *").unwrap_err();
        assert!(matches!(e, ScheduleError::InvalidExpression { .. }), "{e:?}");
        assert!(matches!(CronSchedule::new("s", "wf", "not cron"), Err(ScheduleError::InvalidExpression { .. })));
        assert_eq!(
            CronSchedule::new("s", "wf", "* * * * *").unwrap().timezone("Mars/Olympus").unwrap_err(),
            ScheduleError::UnknownTimezone { timezone: "Mars/Olympus".into() }
        );
        assert!(CronSchedule::new("s", "wf", "* * * * *").unwrap().catch_up(CatchUp::RunAll { cap: 0 }).is_err());
        assert!("run_all(0)".parse::<CatchUp>().is_err());
        assert!("sometimes".parse::<CatchUp>().is_err());
        assert_eq!("run_all(7)".parse::<CatchUp>().unwrap(), CatchUp::RunAll { cap: 7 });
        assert_eq!(CatchUp::run_all().to_string().parse::<CatchUp>().unwrap(), CatchUp::RunAll { cap: 100 });
    }

    #[test]
    fn seconds_are_optional() {
        let every_second = CronSchedule::new("s", "wf", "* * * * * *").unwrap();
        let t = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(every_second.next_after(t), Some(Timestamp(t.0 + 1000)));
        let every_minute = CronSchedule::new("m", "wf", "* * * * *").unwrap();
        assert_eq!(every_minute.next_after(t), Some(Timestamp(t.0 + 60_000)));
    }

    #[test]
    fn late_ticks_within_the_threshold_all_run() {
        let s = CronSchedule::new("s", "wf", "* * * * * *").unwrap();
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        // A poll 2.5 s after the last: both ticks are late, neither missed.
        let due = s.due(t0, Timestamp(t0.0 + 2_500));
        assert_eq!(due.run, vec![Timestamp(t0.0 + 1_000), Timestamp(t0.0 + 2_000)]);
        assert_eq!(due.skipped, 0);
        assert!(s.due(t0, t0).run.is_empty(), "nothing after the last processed tick");
        let strict = s.clone().misfire_threshold(Duration::from_millis(1200)).unwrap();
        assert_eq!(strict.due(t0, Timestamp(t0.0 + 2_500)).run, vec![Timestamp(t0.0 + 2_000)]);
        assert!(s.misfire_threshold(Duration::from_secs(7200)).is_err());
    }

    #[test]
    fn catch_up_policies() {
        let min = 60_000;
        let s = CronSchedule::new("s", "wf", "* * * * *").unwrap();
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let at = |m: i64| Timestamp(t0.0 + m * min);
        // Down from just after t0 until 30 s after the fifth tick: ticks 1-4
        // are missed, tick 5 is on time.
        let now = Timestamp(at(5).0 + 30_000);
        let skip = s.due(t0, now);
        assert_eq!(skip.run, vec![at(5)]);
        assert_eq!(skip.skipped, 4);
        let all = s.clone().catch_up(CatchUp::run_all()).unwrap().due(t0, now);
        assert_eq!(all.run, (1..=5).map(at).collect::<Vec<_>>());
        assert_eq!(all.skipped, 0);
        let capped = s.clone().catch_up(CatchUp::RunAll { cap: 2 }).unwrap().due(t0, now);
        assert_eq!(capped.run, vec![at(3), at(4), at(5)], "two missed plus the on-time one");
        assert_eq!(capped.skipped, 2);
        // Every tick missed (a 10 s threshold): skip runs the latest.
        let strict = s.clone().misfire_threshold(Duration::from_secs(10)).unwrap();
        let skip = strict.due(t0, now);
        assert_eq!(skip.run, vec![at(5)]);
        assert_eq!(skip.skipped, 4);
        // A year of missed seconds costs a few steps under `skip`.
        let every_second = CronSchedule::new("e", "wf", "* * * * * *").unwrap();
        let year_later = Timestamp(t0.0 + 365 * 24 * 3600 * 1000);
        let due = every_second.due(t0, year_later);
        assert_eq!(due.run.len(), 61, "the on-time minute");
        assert_eq!(due.skipped, 10_000, "counted up to the bound");
    }

    #[test]
    fn daylight_saving_time_skipped_hour_runs_once_after_the_gap() {
        // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let s = CronSchedule::new("s", "wf", "30 2 * * *").unwrap().timezone("Europe/Berlin").unwrap();
        let day_before = utc(2026, 3, 28, 1, 30, 0); // 02:30 CET
        let gap_day = s.next_after(day_before).unwrap();
        assert_eq!(gap_day, utc(2026, 3, 29, 1, 0, 0), "03:00 CEST, the first instant after the gap");
        let day_after = s.next_after(gap_day).unwrap();
        assert_eq!(day_after, utc(2026, 3, 30, 0, 30, 0), "02:30 CEST");
        // Exactly one run for the gap day.
        let due = s.clone().catch_up(CatchUp::run_all()).unwrap().due(day_before, Timestamp(day_after.0 - 1));
        assert_eq!(due.run, vec![gap_day]);
    }

    #[test]
    fn daylight_saving_time_repeated_hour_runs_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET.
        let s = CronSchedule::new("s", "wf", "30 2 * * *").unwrap().timezone("Europe/Berlin").unwrap();
        let day_before = utc(2026, 10, 24, 0, 30, 0); // 02:30 CEST
        let fold_day = s.next_after(day_before).unwrap();
        assert_eq!(fold_day, utc(2026, 10, 25, 0, 30, 0), "the first 02:30 (CEST)");
        let next = s.next_after(fold_day).unwrap();
        assert_eq!(next, utc(2026, 10, 26, 1, 30, 0), "not the second 02:30 (CET): tomorrow's");
        let due = s.clone().catch_up(CatchUp::run_all()).unwrap().due(day_before, Timestamp(next.0 - 1));
        assert_eq!(due.run, vec![fold_day]);
        // An interval pattern runs on both real instants of the repeated hour.
        let quarter = CronSchedule::new("q", "wf", "0 */30 * * * *").unwrap().timezone("Europe/Berlin").unwrap();
        let ticks = quarter
            .clone()
            .catch_up(CatchUp::run_all())
            .unwrap()
            .due(utc(2026, 10, 24, 23, 59, 0), utc(2026, 10, 25, 2, 0, 0))
            .run;
        assert_eq!(ticks.len(), 5, "00:00, 00:30, 01:00, 01:30, 02:00 UTC: every real half hour");
    }

    #[test]
    fn firing_keys_tell_contexts_apart() {
        let mut a = Context::new();
        a.set("file", "a.csv").unwrap();
        let mut b = Context::new();
        b.set("file", "b.csv").unwrap();
        assert_ne!(firing_key("t", &a), firing_key("t", &b));
        assert_ne!(firing_key("t", &a), firing_key("u", &a));
    }

    #[test]
    fn equal_contexts_have_equal_firing_keys_whatever_the_insertion_order() {
        // Two equal contexts built independently: top-level keys and nested
        // object keys inserted in different orders.
        let mut nested_one = serde_json::Map::new();
        nested_one.insert("bucket".into(), "inbox".into());
        nested_one.insert("size".into(), 3.into());
        nested_one.insert("tags".into(), serde_json::json!({"z": 1, "a": [1, 2]}));
        let mut one = Context::new();
        one.set("file", "orders.csv").unwrap();
        one.set("meta", serde_json::Value::Object(nested_one)).unwrap();
        one.set("attempt", 1).unwrap();

        let mut tags = serde_json::Map::new();
        tags.insert("a".into(), serde_json::json!([1, 2]));
        tags.insert("z".into(), 1.into());
        let mut nested_two = serde_json::Map::new();
        nested_two.insert("tags".into(), serde_json::Value::Object(tags));
        nested_two.insert("size".into(), 3.into());
        nested_two.insert("bucket".into(), "inbox".into());
        let mut two = Context::new();
        two.set("attempt", 1).unwrap();
        two.set("meta", serde_json::Value::Object(nested_two)).unwrap();
        two.set("file", "orders.csv").unwrap();

        assert_eq!(one, two);
        assert_eq!(firing_key("inbox", &one), firing_key("inbox", &two));
        // Pinned: the key is stored with each firing, so it must not change
        // between releases. Computed independently (Python's hashlib): the
        // first 16 bytes of SHA-256(`inbox` NUL
        // `{"attempt":1,"file":"orders.csv","meta":{"bucket":"inbox","size":3,"tags":{"a":[1,2],"z":1}}}`).
        assert_eq!(firing_key("inbox", &one), "deac1d8c2989a60fd4b5c5dc5e6544f0");
        // The nested values take part in the key.
        let mut other = one.clone();
        other.set("meta", serde_json::json!({"bucket": "inbox", "size": 4, "tags": {"a": [1, 2], "z": 1}})).unwrap();
        assert_ne!(firing_key("inbox", &one), firing_key("inbox", &other));
    }
}
