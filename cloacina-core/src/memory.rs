//! An in-memory implementation of the storage ports.
//!
//! It is the reference behaviour for the adapter contract suite and the
//! storage behind runner unit tests. It keeps everything in one mutex; each
//! call is one "transaction". It uses the same [`Step`]
//! logic as the SQL adapters, so it differs from them only in where rows
//! live. Nothing is persisted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};

use crate::context::Context;
use crate::ids::{ExecutionId, FencingToken, RunnerId, TaskExecutionId, Timestamp};
use crate::ports::*;
use crate::recovery::OwnerStatus;
use crate::schedule::CronSchedule;
use crate::state::{TaskState, WorkflowState};
use crate::step::{ExecutionSnapshot, PendingClaim, Step, StepOutput};
use crate::workflow::WorkflowSet;

#[derive(Debug, Clone)]
struct RunnerRow {
    incarnation: String,
    alive: bool,
    expires_at: Timestamp,
}

#[derive(Debug, Default)]
struct Db {
    executions: BTreeMap<ExecutionId, ExecutionRecord>,
    tasks: HashMap<TaskExecutionId, TaskRecord>,
    exec_tasks: HashMap<ExecutionId, Vec<TaskExecutionId>>,
    outputs: HashMap<(ExecutionId, String), Context>,
    events: HashMap<ExecutionId, Vec<ExecutionEvent>>,
    runners: HashMap<RunnerId, RunnerRow>,
    schedules: BTreeMap<String, ScheduleRecord>,
    /// (schedule, tick) → execution: the uniqueness record of each tick.
    ticks: BTreeMap<(String, i64), ExecutionId>,
    /// (trigger, key, execution) per firing.
    firings: Vec<(String, String, ExecutionId)>,
}

impl Db {
    fn snapshot(&self, id: ExecutionId, workflows: &WorkflowSet) -> StorageResult<Option<ExecutionSnapshot>> {
        let Some(exec) = self.executions.get(&id) else {
            return Ok(None);
        };
        let Some(wf) = workflows.get(&exec.workflow) else {
            return Ok(None);
        };
        let rows = self
            .exec_tasks
            .get(&id)
            .map(|ids| ids.iter().filter_map(|t| self.tasks.get(t).cloned()).collect())
            .unwrap_or_default();
        let mut snap = ExecutionSnapshot::new(wf, exec.clone(), true, rows)?;
        for (i, t) in wf.tasks().iter().enumerate() {
            if let Some(c) = self.outputs.get(&(id, t.id().to_owned())) {
                snap.outputs.insert(i, c.clone());
            }
        }
        Ok(Some(snap))
    }

    /// Applies a step's writes after checking every expectation.
    fn apply(&mut self, out: &StepOutput, now: Timestamp) -> StorageResult<()> {
        for w in &out.writes.tasks {
            let cur = self.tasks.get(&w.row.id).ok_or_else(|| not_found("task", w.row.id))?;
            if cur.state != w.expect_state || cur.fencing_token != w.expect_token {
                return Err(StorageError::Backend {
                    message: format!("concurrent change of task {}", w.row.id),
                    source: None,
                });
            }
        }
        for w in &out.writes.executions {
            let cur = self.executions.get(&w.id).ok_or_else(|| not_found("execution", w.id))?;
            if cur.state != w.expect_state {
                return Err(StorageError::Backend {
                    message: format!("concurrent change of execution {}", w.id),
                    source: None,
                });
            }
        }
        for e in &out.writes.execution_inserts {
            self.executions.insert(e.id, e.clone());
        }
        for t in &out.writes.task_inserts {
            self.exec_tasks.entry(t.execution_id).or_default().push(t.id);
            self.tasks.insert(t.id, t.clone());
        }
        for w in &out.writes.tasks {
            self.tasks.insert(w.row.id, w.row.clone());
        }
        for w in &out.writes.executions {
            if let Some(e) = self.executions.get_mut(&w.id) {
                e.state = w.state;
                e.error = w.error.clone();
                e.finished_at = w.finished_at;
                e.updated_at = now;
            }
        }
        for o in &out.writes.outputs {
            self.outputs.insert((o.execution, o.name.clone()), o.context.clone());
        }
        for ev in &out.writes.events {
            self.events.entry(ev.execution_id).or_default().push(ev.clone());
        }
        Ok(())
    }

    fn resolve(&self, pending: Vec<PendingClaim>) -> Vec<ClaimedTask> {
        let inputs: HashMap<ExecutionId, Context> = pending
            .iter()
            .filter_map(|p| self.executions.get(&p.task.execution_id).map(|e| (e.id, e.input.clone())))
            .collect();
        pending.into_iter().map(|p| p.resolve(&self.outputs, &inputs)).collect()
    }
}

fn not_found(what: &'static str, id: impl ToString) -> StorageError {
    StorageError::NotFound { what, id: id.to_string() }
}

/// The in-memory storage. Each instance is its own tenant.
///
/// ```
/// use cloacina_core::memory::MemoryStorage;
/// use cloacina_core::ports::{ExecutionStore, ExecutionFilter};
/// # futures::executor::block_on(async {
/// let storage = MemoryStorage::new();
/// assert!(storage.list_executions(&ExecutionFilter::default()).await?.is_empty());
/// # Ok::<(), cloacina_core::ports::StorageError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryStorage {
    db: Mutex<Db>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Notification>>>,
    closed: AtomicBool,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn db(&self) -> StorageResult<std::sync::MutexGuard<'_, Db>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable { message: "storage is closed".into(), source: None });
        }
        Ok(self.db.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn notify(&self, effects: &Effects) {
        let mut notes = Vec::new();
        if effects.newly_ready > 0 {
            notes.push(Notification::TasksReady);
        }
        for f in &effects.finished {
            if f.state == WorkflowState::Cancelled {
                notes.push(Notification::ExecutionCancelled(f.id));
            }
            notes.push(Notification::ExecutionFinished(f.id));
        }
        if notes.is_empty() {
            return;
        }
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| notes.iter().all(|n| s.unbounded_send(n.clone()).is_ok()));
    }

    fn finish(&self, db: &mut Db, out: StepOutput, now: Timestamp) -> StorageResult<Effects> {
        db.apply(&out, now)?;
        let mut effects = out.effects;
        effects.events = out.writes.events;
        effects.claimed = db.resolve(out.pending_claims);
        self.notify(&effects);
        Ok(effects)
    }
}

#[async_trait]
impl ExecutionStore for MemoryStorage {
    async fn execution(&self, id: ExecutionId) -> StorageResult<Option<ExecutionRecord>> {
        Ok(self.db()?.executions.get(&id).cloned())
    }

    async fn execution_states(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, WorkflowState)>> {
        let db = self.db()?;
        Ok(ids.iter().filter_map(|id| db.executions.get(id).map(|e| (*id, e.state))).collect())
    }

    async fn tasks(&self, id: ExecutionId) -> StorageResult<Vec<TaskRecord>> {
        let db = self.db()?;
        Ok(db
            .exec_tasks
            .get(&id)
            .map(|ids| ids.iter().filter_map(|t| db.tasks.get(t).cloned()).collect())
            .unwrap_or_default())
    }

    async fn outputs(&self, id: ExecutionId, names: &[String]) -> StorageResult<HashMap<String, Context>> {
        let db = self.db()?;
        Ok(db
            .outputs
            .iter()
            .filter(|((e, n), _)| *e == id && (names.is_empty() || names.contains(n)))
            .map(|((_, n), c)| (n.clone(), c.clone()))
            .collect())
    }

    async fn list_executions(&self, filter: &ExecutionFilter) -> StorageResult<Vec<ExecutionRecord>> {
        let db = self.db()?;
        let mut v: Vec<ExecutionRecord> = db
            .executions
            .values()
            .filter(|e| filter.workflow.as_ref().is_none_or(|w| &e.workflow.name == w))
            .filter(|e| filter.states.is_empty() || filter.states.contains(&e.state))
            .filter(|e| filter.created_after.is_none_or(|t| e.created_at >= t))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        v.truncate(filter.limit.unwrap_or(100));
        Ok(v)
    }

    async fn events(&self, id: ExecutionId) -> StorageResult<Vec<ExecutionEvent>> {
        Ok(self.db()?.events.get(&id).cloned().unwrap_or_default())
    }
}

#[async_trait]
impl TaskQueue for MemoryStorage {
    async fn commit(&self, batch: Commit, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<CommitOutcome> {
        let mut db = self.db()?;
        let mut step = Step::new(now, workflows, batch.claim.as_ref());
        for n in batch.creations {
            step.create(n);
        }
        let mut snaps: BTreeMap<ExecutionId, ExecutionSnapshot> = BTreeMap::new();
        let mut results = Vec::with_capacity(batch.reports.len());
        for r in batch.reports {
            if let std::collections::btree_map::Entry::Vacant(e) = snaps.entry(r.execution) {
                match db.snapshot(r.execution, workflows)? {
                    Some(s) => {
                        e.insert(s);
                    }
                    None => {
                        results.push(Err(ReportRejection::NotFound));
                        continue;
                    }
                }
            }
            let snap = snaps
                .get_mut(&r.execution)
                .ok_or(StorageError::Backend { message: "snapshot".into(), source: None })?;
            results.push(step.report(snap, r));
        }
        for snap in snaps.values_mut() {
            if let Some(wf) = workflows.get(&snap.execution.workflow) {
                step.settle(snap, wf);
            }
        }
        let out = step.finish();
        db.apply(&out, now)?;
        let mut step = Step::new(now, workflows, None);
        if let (true, Some(req)) = (batch.claim_waiting, out_remaining(&out, batch.claim.as_ref())) {
            claim_waiting(&mut db, &mut step, &req, workflows, now)?;
        }
        let extra = step.finish();
        for ev in &extra.writes.events {
            db.events.entry(ev.execution_id).or_default().push(ev.clone());
        }
        let mut effects = out.effects;
        effects.events = out.writes.events;
        effects.events.extend(extra.writes.events);
        let mut pending = out.pending_claims;
        pending.extend(extra.pending_claims);
        effects.claimed = db.resolve(pending);
        self.notify(&effects);
        Ok(CommitOutcome { results, effects })
    }

    async fn lost_leases(&self, held: &[(TaskExecutionId, FencingToken)]) -> StorageResult<Vec<TaskExecutionId>> {
        let db = self.db()?;
        Ok(held
            .iter()
            .filter(|(id, tok)| {
                !db.tasks.get(id).is_some_and(|t| t.state == TaskState::Running && t.fencing_token == *tok)
            })
            .map(|(id, _)| *id)
            .collect())
    }
}

#[async_trait]
impl Liveness for MemoryStorage {
    async fn register_runner(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<()> {
        let mut db = self.db()?;
        db.runners.insert(
            reg.id.clone(),
            RunnerRow { incarnation: reg.incarnation.clone(), alive: true, expires_at: now.plus(reg.lease_ttl) },
        );
        Ok(())
    }

    async fn heartbeat(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<Heartbeat> {
        let mut db = self.db()?;
        match db.runners.get_mut(&reg.id) {
            Some(r) if r.alive && r.incarnation == reg.incarnation => {
                r.expires_at = now.plus(reg.lease_ttl);
                Ok(Heartbeat::Alive)
            }
            _ => Ok(Heartbeat::Lost),
        }
    }

    async fn recover(
        &self,
        req: &RecoveryRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<RecoveryReport> {
        let mut db = self.db()?;
        let mut report = RecoveryReport::default();
        for (id, r) in db.runners.iter_mut() {
            if r.alive && r.expires_at < now {
                r.alive = false;
                report.dead_runners.push(id.clone());
            }
        }
        let owner_status = |db: &Db, lease: &Lease| match db.runners.get(&lease.owner) {
            Some(r) if r.alive && r.incarnation == lease.incarnation => OwnerStatus::Alive { expires_at: r.expires_at },
            _ => OwnerStatus::Gone,
        };
        let mut orphans: Vec<(ExecutionId, TaskExecutionId, u32)> = db
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .filter(|t| db.executions.get(&t.execution_id).is_some_and(|e| workflows.get(&e.workflow).is_some()))
            .filter(|t| {
                t.lease.as_ref().is_none_or(
                    |l| !matches!(owner_status(&db, l), OwnerStatus::Alive { expires_at } if expires_at >= now),
                )
            })
            .map(|t| (t.execution_id, t.id, t.recovery_count))
            .collect();
        orphans.sort();
        orphans.truncate(req.limit);
        let mut step = Step::new(now, workflows, None);
        let mut snaps: BTreeMap<ExecutionId, ExecutionSnapshot> = BTreeMap::new();
        for (exec, task, count) in orphans {
            if !snaps.contains_key(&exec)
                && let Some(s) = db.snapshot(exec, workflows)?
            {
                snaps.insert(exec, s);
            }
            let Some(snap) = snaps.get_mut(&exec) else {
                continue;
            };
            let Some(wf) = workflows.get(&snap.execution.workflow) else {
                continue;
            };
            let decision = req.policy.decide(count, OwnerStatus::Gone, now);
            match step.recover(snap, wf, task, decision, &req.policy) {
                Some(crate::recovery::RecoveryDecision::Requeue { recovery_count }) => {
                    report.requeued.push((task, recovery_count))
                }
                Some(crate::recovery::RecoveryDecision::Abandon { .. }) => report.abandoned.push(task),
                _ => {}
            }
        }
        let out = step.finish();
        report.effects = self.finish(&mut db, out, now)?;
        Ok(report)
    }

    async fn release_strays(
        &self,
        reg: &RunnerRegistration,
        held: &[TaskExecutionId],
        now: Timestamp,
    ) -> StorageResult<Effects> {
        let mut db = self.db()?;
        self.release_mine(&mut db, reg, held, "its claim was lost to a failed commit", now)
    }

    async fn release_runner(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<Effects> {
        let mut db = self.db()?;
        if let Some(r) = db.runners.get_mut(&reg.id)
            && r.incarnation == reg.incarnation
        {
            r.alive = false;
        }
        self.release_mine(&mut db, reg, &[], "shut down", now)
    }
}

impl MemoryStorage {
    fn release_mine(
        &self,
        db: &mut Db,
        reg: &RunnerRegistration,
        held: &[TaskExecutionId],
        why: &str,
        now: Timestamp,
    ) -> StorageResult<Effects> {
        let mine: Vec<(ExecutionId, TaskExecutionId)> = db
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .filter(|t| t.lease.as_ref().is_some_and(|l| l.owner == reg.id && l.incarnation == reg.incarnation))
            .filter(|t| !held.contains(&t.id))
            .map(|t| (t.execution_id, t.id))
            .collect();
        let mut step = Step::new(now, &EMPTY_SET, None);
        for (exec, task) in mine {
            // Release needs no workflow: build the snapshot from raw rows.
            let Some(e) = db.executions.get(&exec).cloned() else {
                continue;
            };
            let rows: Vec<TaskRecord> = db.tasks.get(&task).cloned().into_iter().collect();
            let mut snap =
                ExecutionSnapshot { execution: e, input_loaded: false, tasks: rows, outputs: HashMap::new() };
            step.release(&mut snap, task, why);
        }
        let out = step.finish();
        self.finish(db, out, now)
    }
}

/// The claim budget a commit has left after its direct claims.
fn out_remaining(out: &StepOutput, claim: Option<&ClaimRequest>) -> Option<ClaimRequest> {
    let req = claim?;
    let left = req.limit.saturating_sub(out.pending_claims.len());
    (left > 0).then(|| ClaimRequest { owner: req.owner.clone(), limit: left })
}

/// Claims stored ready tasks, oldest first.
fn claim_waiting(
    db: &mut Db,
    step: &mut Step<'_>,
    req: &ClaimRequest,
    workflows: &WorkflowSet,
    now: Timestamp,
) -> StorageResult<()> {
    let mut ready: Vec<(Timestamp, TaskExecutionId)> = db
        .tasks
        .values()
        .filter(|t| t.state == TaskState::Ready && t.ready_at <= now)
        .filter(|t| {
            db.executions.get(&t.execution_id).is_some_and(|e| {
                matches!(e.state, WorkflowState::Pending | WorkflowState::Running)
                    && workflows.get(&e.workflow).is_some()
            })
        })
        .map(|t| (t.ready_at, t.id))
        .collect();
    ready.sort();
    ready.truncate(req.limit);
    for (_, id) in ready {
        let Some(row) = db.tasks.get_mut(&id) else { continue };
        row.state = TaskState::Running;
        row.fencing_token = FencingToken(row.fencing_token.0 + 1);
        row.lease = Some(Lease {
            owner: req.owner.runner.clone(),
            incarnation: req.owner.incarnation.clone(),
            expires_at: now.plus(req.owner.lease_ttl),
        });
        row.started_at = Some(now);
        let row = row.clone();
        let exec = db.executions.get_mut(&row.execution_id).ok_or_else(|| not_found("execution", row.execution_id))?;
        let Some(wf) = workflows.get(&exec.workflow) else { continue };
        step.claimed_rows(wf, &row);
        if exec.state == WorkflowState::Pending {
            exec.state = WorkflowState::Running;
            exec.updated_at = now;
            step.execution_started(exec.id);
        }
    }
    Ok(())
}

static EMPTY_SET: std::sync::LazyLock<WorkflowSet> = std::sync::LazyLock::new(WorkflowSet::new);

impl MemoryStorage {
    fn control(
        &self,
        id: ExecutionId,
        now: Timestamp,
        f: impl FnOnce(&mut Step<'_>, &mut ExecutionSnapshot) -> Result<(), crate::state::TransitionError>,
    ) -> StorageResult<Effects> {
        let mut db = self.db()?;
        let exec = db.executions.get(&id).cloned().ok_or_else(|| not_found("execution", id))?;
        let rows = db
            .exec_tasks
            .get(&id)
            .map(|ids| ids.iter().filter_map(|t| db.tasks.get(t).cloned()).collect())
            .unwrap_or_default();
        let mut snap = ExecutionSnapshot { execution: exec, input_loaded: false, tasks: rows, outputs: HashMap::new() };
        let mut step = Step::new(now, &EMPTY_SET, None);
        f(&mut step, &mut snap)?;
        let out = step.finish();
        self.finish(&mut db, out, now)
    }
}

#[async_trait]
impl Control for MemoryStorage {
    async fn cancel(&self, id: ExecutionId, reason: &str, now: Timestamp) -> StorageResult<Effects> {
        self.control(id, now, |step, snap| step.cancel(snap, reason))
    }
    async fn pause(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects> {
        self.control(id, now, |step, snap| step.pause(snap))
    }
    async fn resume(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects> {
        self.control(id, now, |step, snap| step.resume(snap))
    }
}

#[async_trait]
impl Notifications for MemoryStorage {
    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        Ok(Some(rx.boxed()))
    }
}

#[async_trait]
impl Schedules for MemoryStorage {
    async fn upsert_schedule(&self, schedule: &CronSchedule, now: Timestamp) -> StorageResult<ScheduleRecord> {
        let mut db = self.db()?;
        let previous = db.schedules.get(schedule.name()).map(|o| (o.paused, o.last_tick, o.created_at));
        let rec = ScheduleRecord::registered(schedule, previous, now);
        db.schedules.insert(schedule.name().to_owned(), rec.clone());
        Ok(rec)
    }

    async fn schedules(&self) -> StorageResult<Vec<ScheduleRecord>> {
        Ok(self.db()?.schedules.values().cloned().collect())
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Timestamp) -> StorageResult<ScheduleRecord> {
        let mut db = self.db()?;
        let rec = db.schedules.get_mut(name).ok_or_else(|| not_found("schedule", name))?;
        rec.set_paused(paused, now);
        Ok(rec.clone())
    }

    async fn delete_schedule(&self, name: &str) -> StorageResult<()> {
        let mut db = self.db()?;
        db.schedules.remove(name).ok_or_else(|| not_found("schedule", name))?;
        db.ticks.retain(|(s, _), _| s != name);
        Ok(())
    }

    async fn fire_schedules(&self, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<ScheduleReport> {
        let mut db = self.db()?;
        let mut report = ScheduleReport::default();
        let mut step = Step::new(now, workflows, None);
        let names: Vec<String> = db.schedules.keys().cloned().collect();
        for name in names {
            let Some(rec) = db.schedules.get(&name).cloned() else { continue };
            let Some(plan) = crate::schedule::plan_firing(&rec, workflows, now) else {
                if !rec.paused
                    && rec.next_tick.is_some_and(|t| t <= now)
                    && workflows.by_name(rec.schedule.workflow()).is_none()
                {
                    report.unknown_workflow.push(name);
                }
                continue;
            };
            for (tick, exec) in plan.runs {
                let key = (name.clone(), tick.0);
                if db.ticks.contains_key(&key) {
                    continue;
                }
                db.ticks.insert(key, exec.id);
                report.fired.push(ScheduleFiring { schedule: name.clone(), tick, execution: exec.id });
                step.create(exec);
            }
            report.skipped_ticks += plan.skipped;
            if let Some(r) = db.schedules.get_mut(&name) {
                r.last_tick = plan.last_tick;
                r.next_tick = plan.next_tick;
                r.updated_at = now;
            }
        }
        let out = step.finish();
        report.effects = self.finish(&mut db, out, now)?;
        Ok(report)
    }

    async fn fire_trigger(
        &self,
        firing: TriggerFiring,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<TriggerOutcome> {
        let mut db = self.db()?;
        if !firing.allow_concurrent {
            let running = db.firings.iter().find(|(t, k, e)| {
                t == &firing.trigger && k == &firing.key && db.executions.get(e).is_some_and(|x| !x.state.is_terminal())
            });
            if let Some((_, _, e)) = running {
                return Ok(TriggerOutcome::Suppressed { running: *e });
            }
        }
        let id = firing.execution.id;
        db.firings.push((firing.trigger, firing.key, id));
        let mut step = Step::new(now, workflows, None);
        step.create(firing.execution);
        let out = step.finish();
        let effects = self.finish(&mut db, out, now)?;
        Ok(TriggerOutcome::Fired { execution: id, effects })
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn open_report(&self) -> OpenReport {
        OpenReport::default()
    }
    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
