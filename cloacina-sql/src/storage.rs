//! [`SqlStorage`]: the storage ports implemented once over a [`SqlBackend`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use cloacina_core::ports::*;
use cloacina_core::schedule::CronSchedule;
use cloacina_core::step::StepOutput;
use cloacina_core::{Context, ExecutionId, FencingToken, TaskExecutionId, Timestamp, WorkflowSet, WorkflowState};
use futures::stream::BoxStream;
use sea_orm::DatabaseTransaction;

use crate::backend::{SqlBackend, TxError};
use crate::ops;

/// Runs a transaction body (an expression evaluated afresh on each
/// attempt), retrying it after conflicts with a short, growing pause up to
/// a bound. A conflict that persists is returned as
/// [`StorageError::Busy`]; nothing is dropped silently.
macro_rules! retrying {
    ($what:expr, $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match $body.await {
                Ok(v) => break Ok(v),
                Err(TxError::Storage(e)) => break Err(e),
                Err(TxError::Conflict(msg)) if attempt < MAX_TX_ATTEMPTS => {
                    tracing::debug!(operation = $what, attempt, "retrying after conflict: {msg}");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt * attempt))).await;
                }
                Err(TxError::Conflict(msg)) => {
                    break Err(StorageError::Busy {
                        message: format!("{}: gave up after {attempt} conflicting attempts: {msg}", $what),
                        source: None,
                    });
                }
            }
        }
    }};
}

/// How often a transaction is retried after a conflict before the error is
/// returned to the caller.
const MAX_TX_ATTEMPTS: u32 = 12;

/// The storage ports over a SQL backend. Construct it through a backend
/// crate (`cloacina-sqlite`, `cloacina-postgres`).
#[derive(Debug)]
pub struct SqlStorage<B: SqlBackend> {
    pub(crate) backend: B,
}

impl<B: SqlBackend> SqlStorage<B> {
    /// Wraps an opened backend.
    pub fn new(backend: B) -> Self {
        Self { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) async fn begin(&self) -> Result<DatabaseTransaction, TxError> {
        self.backend.begin_write().await.map_err(|e| self.backend.classify(e))
    }

    /// Applies a step's writes, resolves its claims, sends notifications
    /// and commits.
    pub(crate) async fn commit_step(
        &self,
        txn: DatabaseTransaction,
        out: StepOutput,
        now: Timestamp,
    ) -> Result<Effects, TxError> {
        let notes = notifications(&out.effects);
        self.backend.apply_writes(&txn, &out.writes, &notes, now).await?;
        self.finish_commit(txn, out, notes).await
    }

    /// Resolves the claims of written steps, commits, and delivers
    /// in-process notifications (`notes` were sent with the writes).
    pub(crate) async fn finish_commit(
        &self,
        txn: DatabaseTransaction,
        out: StepOutput,
        notes: Vec<Notification>,
    ) -> Result<Effects, TxError> {
        let claimed = ops::inputs::resolve(&self.backend, &txn, out.pending_claims).await?;
        let mut effects = out.effects;
        effects.events = out.writes.events;
        effects.claimed = claimed;
        txn.commit().await.map_err(|e| self.backend.classify(e))?;
        if !notes.is_empty() {
            self.backend.notify_after_commit(&notes);
        }
        Ok(effects)
    }
}

/// The notifications a call's effects call for.
pub(crate) fn notifications(effects: &Effects) -> Vec<Notification> {
    let mut notes = Vec::new();
    if effects.newly_ready > 0 {
        notes.push(Notification::TasksReady);
    }
    for f in &effects.finished {
        if f.state == WorkflowState::Cancelled {
            notes.push(Notification::ExecutionCancelled(Some(f.id)));
        }
        notes.push(Notification::ExecutionFinished(Some(f.id)));
    }
    notes
}

#[async_trait]
impl<B: SqlBackend> ExecutionStore for SqlStorage<B> {
    async fn execution(&self, id: ExecutionId) -> StorageResult<Option<ExecutionRecord>> {
        retrying!("read execution", self.try_execution(id))
    }

    async fn execution_states(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, WorkflowState)>> {
        retrying!("read execution states", self.try_execution_states(ids))
    }

    async fn tasks(&self, id: ExecutionId) -> StorageResult<Vec<TaskRecord>> {
        retrying!("read tasks", self.try_tasks(id))
    }

    async fn unreadable(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, StorageError)>> {
        retrying!("check execution rows", self.try_unreadable(ids))
    }

    async fn outputs(&self, id: ExecutionId, names: &[String]) -> StorageResult<HashMap<String, Context>> {
        retrying!("read outputs", self.try_outputs(id, names))
    }

    async fn list_executions(&self, filter: &ExecutionFilter) -> StorageResult<Vec<ExecutionRecord>> {
        retrying!("list executions", self.try_list(filter))
    }

    async fn events(&self, id: ExecutionId) -> StorageResult<Vec<ExecutionEvent>> {
        retrying!("read events", self.try_events(id))
    }
}

#[async_trait]
impl<B: SqlBackend> TaskQueue for SqlStorage<B> {
    async fn commit(&self, batch: Commit, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<CommitOutcome> {
        retrying!("commit", self.try_commit(batch.clone(), workflows, now))
    }

    async fn lost_leases(&self, held: &[(TaskExecutionId, FencingToken)]) -> StorageResult<Vec<TaskExecutionId>> {
        retrying!("check leases", self.try_lost_leases(held))
    }
}

#[async_trait]
impl<B: SqlBackend> Liveness for SqlStorage<B> {
    async fn register_runner(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<()> {
        retrying!("register runner", self.try_register(reg, now))
    }

    async fn heartbeat(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<Heartbeat> {
        retrying!("heartbeat", self.try_heartbeat(reg, now))
    }

    async fn recover(
        &self,
        req: &RecoveryRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<RecoveryReport> {
        retrying!("recover", self.try_recover(req, workflows, now))
    }

    async fn release_strays(
        &self,
        reg: &RunnerRegistration,
        held: &[TaskExecutionId],
        now: Timestamp,
    ) -> StorageResult<Effects> {
        retrying!("release lost claims", self.try_release_strays(reg, held, now))
    }

    async fn release_runner(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<Effects> {
        retrying!("release runner", self.try_release(reg, now))
    }
}

#[async_trait]
impl<B: SqlBackend> Control for SqlStorage<B> {
    async fn cancel(&self, id: ExecutionId, reason: &str, now: Timestamp) -> StorageResult<Effects> {
        retrying!("cancel", self.try_control(id, now, ops::control::Op::Cancel(reason)))
    }
    async fn pause(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects> {
        retrying!("pause", self.try_control(id, now, ops::control::Op::Pause))
    }
    async fn resume(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects> {
        retrying!("resume", self.try_control(id, now, ops::control::Op::Resume))
    }
}

#[async_trait]
impl<B: SqlBackend> Notifications for SqlStorage<B> {
    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>> {
        self.backend.subscribe().await
    }
}

#[async_trait]
impl<B: SqlBackend> Schedules for SqlStorage<B> {
    async fn upsert_schedule(&self, schedule: &CronSchedule, now: Timestamp) -> StorageResult<ScheduleRecord> {
        retrying!("register schedule", self.try_upsert_schedule(schedule, now))
    }
    async fn schedules(&self) -> StorageResult<Vec<ScheduleRecord>> {
        retrying!("list schedules", self.try_schedules())
    }
    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Timestamp) -> StorageResult<ScheduleRecord> {
        retrying!("pause or resume schedule", self.try_set_paused(name, paused, now))
    }
    async fn delete_schedule(&self, name: &str) -> StorageResult<()> {
        retrying!("delete schedule", self.try_delete_schedule(name))
    }
    async fn fire_schedules(&self, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<ScheduleReport> {
        retrying!("fire schedules", self.try_fire_schedules(workflows, now))
    }
    async fn fire_trigger(
        &self,
        firing: TriggerFiring,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<TriggerOutcome> {
        retrying!("fire trigger", self.try_fire_trigger(firing.clone(), workflows, now))
    }
}

#[async_trait]
impl<B: SqlBackend> Versions for SqlStorage<B> {
    async fn stranded(&self, now: Timestamp) -> StorageResult<Vec<StrandedVersion>> {
        retrying!("stranded", self.try_stranded(now))
    }
    async fn record_stranded(
        &self,
        version: &cloacina_core::WorkflowRef,
        now: Timestamp,
    ) -> StorageResult<Vec<cloacina_core::ports::ExecutionEvent>> {
        retrying!("record_stranded", self.try_record_stranded(version, now))
    }
    async fn migrate_executions(
        &self,
        from: &cloacina_core::WorkflowRef,
        to: &cloacina_core::Workflow,
        mapping: &cloacina_core::migrate::TaskMapping,
        now: Timestamp,
    ) -> StorageResult<MigrationReport> {
        retrying!("migrate_executions", self.try_migrate(from, to, mapping, now))
    }
}

#[async_trait]
impl<B: SqlBackend> Storage for SqlStorage<B> {
    fn describe(&self) -> String {
        self.backend.describe()
    }
    fn open_report(&self) -> OpenReport {
        self.backend.open_report()
    }
    async fn maintain(&self) -> StorageResult<()> {
        self.backend.maintain().await
    }
    async fn close(&self) {
        self.backend.close().await;
    }
}
