//! Cron schedules: parsing, ticks in a time zone, catch-up, and what a
//! firing comes to.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::TimeZone;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use super::{ScheduleError, ScheduleRecord, valid_name};
use crate::context::Context;
use crate::ids::Timestamp;
use crate::plan::NewExecution;
use crate::workflow::WorkflowSet;

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

/// A recurring execution of a workflow. See the [module docs](crate::schedule).
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
    pub fn new(
        name: impl AsRef<str>,
        workflow: impl AsRef<str>,
        expression: impl AsRef<str>,
    ) -> Result<Self, ScheduleError> {
        let (name, workflow, expression) = (name.as_ref(), workflow.as_ref(), expression.as_ref());
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
