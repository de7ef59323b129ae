//! Cron schedules and triggers on [`DefaultRunner`].

use std::sync::atomic::Ordering;

use cloacina_core::ports::{ScheduleRecord, StorageError};
use cloacina_core::schedule::{CronSchedule, EventTriggerSpec};

use crate::engine;
use crate::error::{Result, RunnerError};
use crate::runner::DefaultRunner;

fn schedule_not_found(e: StorageError, name: &str) -> RunnerError {
    match e {
        StorageError::NotFound { what: "schedule", .. } => RunnerError::ScheduleNotFound { name: name.to_owned() },
        other => other.into(),
    }
}

impl DefaultRunner {
    /// Registers a cron schedule in this tenant, or updates the one with
    /// the same name (never a duplicate). Its paused flag and progress are
    /// kept across updates, so registering at every start-up is the
    /// intended use: ticks missed while no runner was up then follow the
    /// schedule's catch-up policy.
    ///
    /// Every runner of the tenant that knows the workflow fires due ticks;
    /// each tick starts exactly one execution, whose origin is
    /// `cron:<name>@<tick>`. Invalid expressions, time zones and policies
    /// are refused when the [`CronSchedule`] is built; an unknown workflow
    /// here.
    ///
    /// ```no_run
    /// # async fn demo(runner: cloacina_runner::DefaultRunner) -> Result<(), Box<dyn std::error::Error>> {
    /// use cloacina_runner::{CatchUp, Context, CronSchedule};
    /// let mut input = Context::new();
    /// input.insert("report", "daily")?;
    /// runner.register_cron(
    ///     CronSchedule::new("daily_report", "report", "0 30 6 * * Mon-Fri")?
    ///         .timezone("Europe/Berlin")?
    ///         .catch_up(CatchUp::Skip)?
    ///         .input(input),
    /// ).await?;
    /// # Ok(()) }
    /// ```
    pub async fn register_cron(&self, schedule: CronSchedule) -> Result<ScheduleRecord> {
        self.lookup(schedule.workflow())?;
        let rec = self.inner.storage.upsert_schedule(&schedule, self.inner.now()).await?;
        tracing::info!(
            schedule = schedule.name(),
            workflow = schedule.workflow(),
            expression = schedule.expression(),
            timezone = schedule.timezone_name(),
            catch_up = %schedule.catch_up_policy(),
            "schedule registered"
        );
        Ok(rec)
    }

    /// The schedules of this tenant, by name.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        Ok(self.inner.storage.schedules().await?)
    }

    /// Pauses a schedule: no tick starts anything until it is resumed.
    pub async fn pause_schedule(&self, name: impl AsRef<str>) -> Result<ScheduleRecord> {
        self.set_schedule_paused(name.as_ref(), true).await
    }

    /// Resumes a paused schedule. Ticks that passed while it was paused are
    /// not run: it continues with the next tick.
    pub async fn resume_schedule(&self, name: impl AsRef<str>) -> Result<ScheduleRecord> {
        self.set_schedule_paused(name.as_ref(), false).await
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        let now = self.inner.now();
        self.inner.storage.set_schedule_paused(name, paused, now).await.map_err(|e| schedule_not_found(e, name))
    }

    /// Deletes a schedule and its tick records. The executions it started
    /// are kept.
    pub async fn delete_schedule(&self, name: impl AsRef<str>) -> Result<()> {
        let name = name.as_ref();
        self.inner.storage.delete_schedule(name).await.map_err(|e| schedule_not_found(e, name))
    }

    /// Starts polling an [`EventTrigger`](crate::EventTrigger) on this runner. Each
    /// `Fire(context)` starts the trigger's workflow with that context,
    /// recorded with the trigger (origin `trigger:<name>`), unless an
    /// identical firing (same trigger, same context) has an unfinished
    /// execution and the trigger does not allow concurrent runs — across
    /// all runners of the tenant. Poll errors and panics are logged and the
    /// trigger is polled again on its interval. Polling stops at shutdown.
    ///
    /// ```no_run
    /// # async fn demo(runner: cloacina_runner::DefaultRunner) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cloacina_runner::{Context, TaskError, EventTrigger, EventPoll, EventTriggerSpec};
    ///
    /// struct InboxFile;
    /// #[cloacina_runner::async_trait]
    /// impl EventTrigger for InboxFile {
    ///     async fn poll(&self) -> Result<EventPoll, TaskError> {
    ///         if std::path::Path::new("inbox/orders.csv").exists() {
    ///             let mut ctx = Context::new();
    ///             ctx.insert("file", "inbox/orders.csv")?;
    ///             return Ok(EventPoll::Fire(ctx));
    ///         }
    ///         Ok(EventPoll::Skip)
    ///     }
    /// }
    /// runner.register_trigger(
    ///     EventTriggerSpec::new("orders_inbox", "import_orders", Arc::new(InboxFile))?
    ///         .poll_interval(Duration::from_secs(10))?,
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn register_trigger(&self, spec: EventTriggerSpec) -> Result<()> {
        self.lookup(spec.workflow())?;
        if !self.inner.life.accepting.load(Ordering::SeqCst) {
            return Err(self.inner.stopped_error());
        }
        if !self.inner.trigger_names().insert(spec.name().to_owned()) {
            return Err(RunnerError::DuplicateTrigger { name: spec.name().to_owned() });
        }
        engine::schedule::spawn_trigger(&self.inner, spec);
        Ok(())
    }
}
