//! Cron schedules and trigger firings.

use super::*;

/// One execution a schedule started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFiring {
    /// The schedule.
    pub schedule: String,
    /// The tick (scheduled time) it ran for.
    pub tick: Timestamp,
    /// The execution, created with the tick's record.
    pub execution: ExecutionId,
}

/// What [`Schedules::fire_schedules`] did.
#[derive(Debug, Clone, Default)]
pub struct ScheduleReport {
    /// Executions started, oldest tick first.
    pub fired: Vec<ScheduleFiring>,
    /// Missed ticks the catch-up policies dropped.
    pub skipped_ticks: usize,
    /// Due ticks that already had an execution (their record existed):
    /// nothing was started for them; the other schedules fired as usual.
    pub duplicate_ticks: Vec<DuplicateTick>,
    /// Schedules left alone because their workflow is not among those the
    /// caller knows (another runner may fire them).
    pub unknown_workflow: Vec<String>,
    /// Schedules whose stored row cannot be read (left alone), with why.
    pub unreadable: Vec<UnreadableSchedule>,
    /// What the new executions changed.
    pub effects: Effects,
}

/// A tick [`Schedules::fire_schedules`] found already recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateTick {
    /// The schedule.
    pub schedule: String,
    /// The tick.
    pub tick: Timestamp,
}

/// A stored schedule [`Schedules::fire_schedules`] could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableSchedule {
    /// The schedule's name.
    pub name: String,
    /// What is wrong with its row.
    pub problem: String,
}

/// A trigger's firing, to be recorded with its execution.
#[derive(Debug, Clone)]
pub struct TriggerFiring {
    /// The trigger's name.
    pub trigger: String,
    /// The deduplication key ([`firing_key`](crate::schedule::firing_key)).
    pub key: String,
    /// Whether an identical firing may start while one is unfinished.
    pub allow_concurrent: bool,
    /// The execution to create.
    pub execution: NewExecution,
}

/// What [`Schedules::fire_trigger`] did.
#[derive(Debug, Clone)]
pub enum TriggerOutcome {
    /// The execution was created with its firing record.
    Fired {
        /// Its id.
        execution: ExecutionId,
        /// What it changed.
        effects: Effects,
    },
    /// An identical firing's execution is still unfinished: nothing created.
    Suppressed {
        /// The unfinished execution.
        running: ExecutionId,
    },
}

/// Cron schedules and trigger firings.
///
/// Exactly-once per tick is a storage guarantee: the tick's record (unique
/// per schedule and tick) and its execution are written in one
/// transaction, which also advances the schedule only if no other runner
/// advanced it first.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Creates the schedule, or updates the one with this name (its paused
    /// flag and last processed tick are kept, so re-registering at every
    /// start-up neither duplicates it nor loses ticks missed while down).
    async fn upsert_schedule(&self, schedule: &CronSchedule, now: Timestamp) -> StorageResult<ScheduleRecord>;

    /// Every schedule, by name. A row that cannot be read is an error
    /// naming it.
    async fn schedules(&self) -> StorageResult<Vec<ScheduleRecord>>;

    /// Pauses or resumes a schedule ([`StorageError::NotFound`] if absent).
    /// Resuming restarts its ticks from `now`.
    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Timestamp) -> StorageResult<ScheduleRecord>;

    /// Deletes a schedule and its tick records ([`StorageError::NotFound`]
    /// if absent). Executions it started are kept.
    async fn delete_schedule(&self, name: &str) -> StorageResult<()>;

    /// Starts the executions of every due tick of the unpaused schedules
    /// whose workflow is in `workflows`, after each schedule's catch-up
    /// policy: each tick's record and execution in one transaction. A tick
    /// already recorded starts nothing and is reported in
    /// [`ScheduleReport::duplicate_ticks`]; it never stops the others.
    async fn fire_schedules(&self, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<ScheduleReport>;

    /// Records a trigger firing and creates its execution in one
    /// transaction, unless (without `allow_concurrent`) an execution of an
    /// identical earlier firing is still unfinished. Idempotent by the
    /// firing's execution id: a retry of a firing that was recorded (its
    /// commit's answer lost) is `Fired` again and creates nothing.
    async fn fire_trigger(
        &self,
        firing: TriggerFiring,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<TriggerOutcome>;
}
