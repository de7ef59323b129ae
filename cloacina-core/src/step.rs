//! The transaction logic every adapter shares.
//!
//! A storage adapter loads the rows a call touches (an
//! [`ExecutionSnapshot`] per execution, under whatever lock its database
//! needs), hands them to a [`Step`], and writes back the resulting
//! [`Writes`] in the same transaction. The rules — fencing, state-machine
//! checks, trigger evaluation, finalization, recovery decisions, events —
//! live here once, so the in-memory fake, SQLite and PostgreSQL cannot
//! drift apart.
//!
//! Every [`TaskWrite`] and [`ExecutionWrite`] carries the state (and task
//! token) it expects to replace; an adapter applies it only if the row
//! still matches, and otherwise retries the whole transaction.

use std::collections::HashMap;

use crate::context::Context;
use crate::ids::{ExecutionId, FencingToken, TaskExecutionId, Timestamp};
use crate::plan::{self, ContextSource};
use crate::ports::FinishedSnapshot;
use crate::ports::{
    ClaimOwner, ClaimRequest, ClaimedTask, Effects, ExecutionEvent, ExecutionRecord, FinishedExecution, Lease,
    NewExecution, ReportOutcome, ReportRejection, StorageError, TaskRecord, TaskReport,
};
use crate::recovery::{RecoveryDecision, RecoveryPolicy};
use crate::state::{TaskEvent, TaskState, TransitionError, WorkflowEvent, WorkflowState};
use crate::workflow::{Workflow, WorkflowSet};

/// The rows of one execution, as loaded inside a transaction.
#[derive(Debug, Clone)]
pub struct ExecutionSnapshot {
    /// The execution row. Its `input` may be empty when the adapter did not
    /// load it (see [`ExecutionSnapshot::input_loaded`]).
    pub execution: ExecutionRecord,
    /// Whether `execution.input` holds the real input.
    pub input_loaded: bool,
    /// Task rows, by workflow task index.
    pub tasks: Vec<TaskRecord>,
    /// Known outputs of completed tasks, by task index.
    pub outputs: HashMap<usize, Context>,
}

impl ExecutionSnapshot {
    /// Orders `rows` by the workflow's task index. A row whose task id the
    /// workflow does not have, or a task without a row, is reported as a
    /// corrupted row.
    pub fn new(
        wf: &Workflow,
        execution: ExecutionRecord,
        input_loaded: bool,
        rows: Vec<TaskRecord>,
    ) -> Result<Self, StorageError> {
        let mut slots: Vec<Option<TaskRecord>> = vec![None; wf.len()];
        for row in rows {
            let Some(i) = wf.index_of(&row.name) else {
                return Err(StorageError::CorruptRow {
                    table: "task_executions",
                    id: row.id.to_string(),
                    column: "task_name",
                    problem: format!("workflow `{}` has no task `{}`", wf.reference(), row.name),
                });
            };
            slots[i] = Some(row);
        }
        let mut tasks = Vec::with_capacity(wf.len());
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(r) => tasks.push(r),
                None => {
                    return Err(StorageError::CorruptRow {
                        table: "workflow_executions",
                        id: execution.id.to_string(),
                        column: "id",
                        problem: format!("task `{}` has no row", wf.tasks()[i].id()),
                    });
                }
            }
        }
        Ok(Self { execution, input_loaded, tasks, outputs: HashMap::new() })
    }

    fn states(&self) -> Vec<TaskState> {
        self.tasks.iter().map(|t| t.state).collect()
    }

    fn index_of(&self, id: TaskExecutionId) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }
}

/// A task row update, applied only if the row still has `expect_state` and
/// `expect_token`.
#[derive(Debug, Clone)]
pub struct TaskWrite {
    /// Expected current state.
    pub expect_state: TaskState,
    /// Expected current token.
    pub expect_token: FencingToken,
    /// The row's new values.
    pub row: TaskRecord,
}

/// An execution row update, applied only if the row still has
/// `expect_state`.
#[derive(Debug, Clone)]
pub struct ExecutionWrite {
    /// Id.
    pub id: ExecutionId,
    /// Expected current state.
    pub expect_state: WorkflowState,
    /// New state.
    pub state: WorkflowState,
    /// New error.
    pub error: Option<String>,
    /// New finish time.
    pub finished_at: Option<Timestamp>,
}

/// An output to store.
#[derive(Debug, Clone)]
pub struct OutputWrite {
    /// Task row.
    pub task: TaskExecutionId,
    /// Its execution.
    pub execution: ExecutionId,
    /// Task id.
    pub name: String,
    /// The context.
    pub context: Context,
}

/// Everything a step wants written, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// New executions.
    pub execution_inserts: Vec<ExecutionRecord>,
    /// New task rows.
    pub task_inserts: Vec<TaskRecord>,
    /// Task updates.
    pub tasks: Vec<TaskWrite>,
    /// Execution updates.
    pub executions: Vec<ExecutionWrite>,
    /// Outputs.
    pub outputs: Vec<OutputWrite>,
    /// Events, in order.
    pub events: Vec<ExecutionEvent>,
}

/// A claim whose input context still has to be assembled from stored
/// outputs.
#[derive(Debug, Clone)]
pub struct PendingClaim {
    /// The claimed task, input still empty.
    pub task: ClaimedTask,
    /// The dependencies whose outputs make up the input, in topological
    /// order (the ones with an output are the completed ones).
    pub sources: Vec<String>,
    /// Outputs already in memory, by task id.
    pub known: HashMap<String, Context>,
    /// The execution input, when it is known.
    pub execution_input: Option<Context>,
}

impl PendingClaim {
    /// Builds a pending claim for a row just claimed by a claim statement.
    pub fn for_claimed_row(wf: &Workflow, row: &TaskRecord) -> Self {
        let sources = wf
            .index_of(&row.name)
            .map(|i| wf.dependency_indices(i).iter().map(|&d| wf.tasks()[d].id().to_owned()).collect())
            .unwrap_or_default();
        Self { task: claimed_task(wf, row), sources, known: HashMap::new(), execution_input: None }
    }

    /// Source outputs not in memory.
    pub fn missing(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter(|s| !self.known.contains_key(*s)).map(String::as_str)
    }

    /// Whether the input is the execution input, given loaded outputs.
    pub fn needs_execution_input(&self, loaded: &HashMap<(ExecutionId, String), Context>) -> bool {
        self.execution_input.is_none()
            && !self
                .sources
                .iter()
                .any(|s| self.known.contains_key(s) || loaded.contains_key(&(self.task.execution_id, s.clone())))
    }

    /// Assembles the input and returns the claim. `loaded` holds outputs
    /// read by the adapter, `inputs` execution inputs.
    pub fn resolve(
        mut self,
        loaded: &HashMap<(ExecutionId, String), Context>,
        inputs: &HashMap<ExecutionId, Context>,
    ) -> ClaimedTask {
        let exec = self.task.execution_id;
        let outs: Vec<&Context> =
            self.sources.iter().filter_map(|s| self.known.get(s).or_else(|| loaded.get(&(exec, s.clone())))).collect();
        self.task.input = if outs.is_empty() {
            self.execution_input.take().or_else(|| inputs.get(&exec).cloned()).unwrap_or_default()
        } else {
            Context::merge_outputs(outs)
        };
        self.task
    }
}

fn claimed_task(wf: &Workflow, row: &TaskRecord) -> ClaimedTask {
    ClaimedTask {
        id: row.id,
        execution_id: row.execution_id,
        workflow: wf.reference(),
        name: row.name.clone(),
        attempt: row.attempt,
        fencing_token: row.fencing_token,
        recovery_count: row.recovery_count,
        input: Context::new(),
        input_error: None,
    }
}

/// What a [`Step`] produced.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Rows to write.
    pub writes: Writes,
    /// Effects to return (claims are in `pending_claims` until resolved).
    pub effects: Effects,
    /// Claims made in this step.
    pub pending_claims: Vec<PendingClaim>,
}

/// Accumulates the consequences of one transaction. See the module docs.
#[derive(Debug)]
pub struct Step<'a> {
    now: Timestamp,
    workflows: &'a WorkflowSet,
    claim: Option<(ClaimOwner, usize)>,
    out: StepOutput,
    task_write_index: HashMap<TaskExecutionId, usize>,
    exec_write_index: HashMap<ExecutionId, usize>,
}

impl<'a> Step<'a> {
    /// A step at time `now`. With `claim`, tasks that become ready may be
    /// claimed for the caller, up to `claim.limit`.
    pub fn new(now: Timestamp, workflows: &'a WorkflowSet, claim: Option<&ClaimRequest>) -> Self {
        Self {
            now,
            workflows,
            claim: claim.filter(|c| c.limit > 0).map(|c| (c.owner.clone(), c.limit)),
            out: StepOutput::default(),
            task_write_index: HashMap::new(),
            exec_write_index: HashMap::new(),
        }
    }

    /// The time of the step.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Claims the step may still make, and for whom.
    pub fn remaining_claims(&self) -> Option<ClaimRequest> {
        self.claim.as_ref().filter(|(_, n)| *n > 0).map(|(owner, n)| ClaimRequest { owner: owner.clone(), limit: *n })
    }

    /// Records tasks claimed by an adapter's claim statement (rows as
    /// returned, already Running): their events, and their claims against
    /// the budget.
    pub fn claimed_rows(&mut self, wf: &Workflow, row: &TaskRecord) {
        self.claimed(row);
        if let Some((_, n)) = &mut self.claim {
            *n = n.saturating_sub(1);
        }
        self.out.pending_claims.push(PendingClaim::for_claimed_row(wf, row));
    }

    /// Finishes the step.
    pub fn finish(self) -> StepOutput {
        self.out
    }

    fn write_task(&mut self, before: &TaskRecord, after: TaskRecord) {
        match self.task_write_index.get(&after.id) {
            Some(&i) => self.out.writes.tasks[i].row = after,
            None => {
                self.task_write_index.insert(after.id, self.out.writes.tasks.len());
                self.out.writes.tasks.push(TaskWrite {
                    expect_state: before.state,
                    expect_token: before.fencing_token,
                    row: after,
                });
            }
        }
    }

    fn write_execution(&mut self, snap: &ExecutionSnapshot, before: WorkflowState) {
        let e = &snap.execution;
        let w = ExecutionWrite {
            id: e.id,
            expect_state: before,
            state: e.state,
            error: e.error.clone(),
            finished_at: e.finished_at,
        };
        match self.exec_write_index.get(&e.id) {
            Some(&i) => {
                let expect = self.out.writes.executions[i].expect_state;
                self.out.writes.executions[i] = ExecutionWrite { expect_state: expect, ..w };
            }
            None => {
                self.exec_write_index.insert(e.id, self.out.writes.executions.len());
                self.out.writes.executions.push(w);
            }
        }
    }

    fn task_event(&mut self, row: &TaskRecord, from: Option<TaskState>, detail: Option<String>) {
        self.out.writes.events.push(ExecutionEvent::task(
            row.execution_id,
            &row.name,
            row.id,
            from,
            row.state,
            detail,
            self.now,
        ));
    }

    fn transition_execution(
        &mut self,
        snap: &mut ExecutionSnapshot,
        event: WorkflowEvent,
        detail: Option<String>,
    ) -> Result<(), TransitionError> {
        let before = snap.execution.state;
        let to = before.apply(event)?;
        snap.execution.state = to;
        snap.execution.updated_at = self.now;
        if to.is_terminal() {
            snap.execution.finished_at = Some(self.now);
            if detail.is_some() || to != WorkflowState::Completed {
                snap.execution.error = detail.clone();
            }
            self.out.effects.finished.push(FinishedExecution { id: snap.execution.id, state: to });
            let outputs = snap
                .outputs
                .iter()
                .filter_map(|(i, c)| snap.tasks.get(*i).map(|t| (t.name.clone(), c.clone())))
                .collect();
            self.out.effects.snapshots.push(std::sync::Arc::new(FinishedSnapshot {
                execution: snap.execution.clone(),
                input_loaded: snap.input_loaded,
                tasks: snap.tasks.clone(),
                outputs,
            }));
        }
        self.out.writes.events.push(ExecutionEvent::execution(snap.execution.id, Some(before), to, detail, self.now));
        self.write_execution(snap, before);
        Ok(())
    }

    /// Creates an execution (rows and events); claims ready roots for the
    /// caller if the step claims.
    pub fn create(&mut self, new: NewExecution) {
        let now = self.now;
        let state = new.finished.unwrap_or(WorkflowState::Pending);
        let exec = ExecutionRecord {
            id: new.id,
            workflow: new.workflow.clone(),
            state,
            input: new.input,
            error: None,
            origin: new.origin,
            created_at: new.created_at,
            updated_at: now,
            finished_at: state.is_terminal().then_some(now),
        };
        self.out.writes.events.push(ExecutionEvent::execution(
            exec.id,
            None,
            state,
            Some(format!("origin: {}", exec.origin)),
            now,
        ));
        if state.is_terminal() {
            self.out.effects.finished.push(FinishedExecution { id: exec.id, state });
        }
        let wf = self.workflows.get(&exec.workflow).cloned();
        let mut rows = Vec::with_capacity(new.tasks.len());
        for t in new.tasks {
            let row = TaskRecord {
                id: t.id,
                execution_id: exec.id,
                name: t.name,
                state: t.state,
                attempt: 1,
                ready_at: now,
                lease: None,
                fencing_token: FencingToken(0),
                recovery_count: 0,
                error: t.reason.clone(),
                started_at: None,
                finished_at: t.state.is_terminal().then_some(now),
            };
            self.out
                .writes
                .events
                .push(ExecutionEvent::task(exec.id, &row.name, row.id, None, row.state, t.reason, now));
            rows.push(row);
        }
        let mut exec = exec;
        let mut claimed_any = false;
        if let Some(wf) = wf {
            for row in rows.iter_mut().filter(|r| r.state == TaskState::Ready) {
                if !self.take_claim_slot() {
                    break;
                }
                let from = row.state;
                self.claim_row(row);
                self.task_event(&row.clone(), Some(from), Some(self.claim_detail(row)));
                let mut pending = PendingClaim::for_claimed_row(&wf, row);
                pending.sources.clear();
                pending.execution_input = Some(exec.input.clone());
                self.out.pending_claims.push(pending);
                claimed_any = true;
            }
        }
        let ready = rows.iter().filter(|r| r.state == TaskState::Ready).count();
        self.out.effects.newly_ready += ready;
        if claimed_any {
            exec.state = WorkflowState::Running;
            self.out.writes.events.push(ExecutionEvent::execution(
                exec.id,
                Some(WorkflowState::Pending),
                WorkflowState::Running,
                None,
                now,
            ));
        }
        self.out.writes.execution_inserts.push(exec);
        self.out.writes.task_inserts.extend(rows);
    }

    fn take_claim_slot(&mut self) -> bool {
        match &mut self.claim {
            Some((_, n)) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn claim_detail(&self, row: &TaskRecord) -> String {
        let owner = row.lease.as_ref().map(|l| l.owner.as_str()).unwrap_or("?");
        format!("claimed by {owner}, attempt {}, token {}", row.attempt, row.fencing_token)
    }

    /// Turns a Ready row into a Running one leased to the claim owner.
    fn claim_row(&mut self, row: &mut TaskRecord) {
        let Some((owner, _)) = &self.claim else {
            return;
        };
        row.state = TaskState::Running;
        row.fencing_token = FencingToken(row.fencing_token.0 + 1);
        row.lease = Some(Lease {
            owner: owner.runner.clone(),
            incarnation: owner.incarnation.clone(),
            expires_at: self.now.plus(owner.lease_ttl),
        });
        row.started_at = Some(self.now);
    }

    /// Records the events of tasks claimed by an adapter's claim statement
    /// (rows as returned, already Running).
    pub fn claimed(&mut self, row: &TaskRecord) {
        let detail = self.claim_detail(row);
        self.task_event(row, Some(TaskState::Ready), Some(detail));
    }

    /// Records that an execution moved from Pending to Running because one
    /// of its tasks was claimed by an adapter's claim statement.
    pub fn execution_started(&mut self, id: ExecutionId) {
        self.out.writes.events.push(ExecutionEvent::execution(
            id,
            Some(WorkflowState::Pending),
            WorkflowState::Running,
            None,
            self.now,
        ));
    }

    /// Applies one report to its execution's snapshot (fenced). Call
    /// [`settle`](Self::settle) once all reports of that snapshot are in.
    pub fn report(&mut self, snap: &mut ExecutionSnapshot, report: TaskReport) -> Result<(), ReportRejection> {
        let idx = snap.index_of(report.task).ok_or(ReportRejection::NotFound)?;
        let before = snap.tasks[idx].clone();
        if before.state != TaskState::Running || before.fencing_token != report.fencing_token {
            return Err(ReportRejection::LeaseLost { state: before.state, current_token: before.fencing_token });
        }
        let mut row = before.clone();
        row.lease = None;
        let detail = match report.outcome {
            ReportOutcome::Succeeded { output } => {
                row.state = TaskState::Running.apply(TaskEvent::Succeed).map_err(|_| lost(&before))?;
                row.finished_at = Some(self.now);
                row.error = None;
                self.out.writes.outputs.push(OutputWrite {
                    task: row.id,
                    execution: row.execution_id,
                    name: row.name.clone(),
                    context: output.clone(),
                });
                snap.outputs.insert(idx, output);
                format!("attempt {} succeeded", row.attempt)
            }
            ReportOutcome::Retry { error, retry_at } => {
                row.state = TaskState::Running.apply(TaskEvent::RetryScheduled).map_err(|_| lost(&before))?;
                let detail = format!("attempt {} failed: {error}; retry at {retry_at}", row.attempt);
                row.attempt += 1;
                row.ready_at = retry_at;
                row.error = Some(error);
                self.out.effects.newly_ready += 1;
                detail
            }
            ReportOutcome::Failed { error } => {
                row.state = TaskState::Running.apply(TaskEvent::Fail).map_err(|_| lost(&before))?;
                row.finished_at = Some(self.now);
                let detail = format!("attempt {} failed, no retry left: {error}", row.attempt);
                row.error = Some(error);
                detail
            }
        };
        self.task_event(&row, Some(before.state), Some(detail));
        self.write_task(&before, row.clone());
        snap.tasks[idx] = row;
        Ok(())
    }

    /// Evaluates dependents whose dependencies are all terminal (to Ready
    /// or Skipped; ready ones may be claimed for the caller) and finalizes
    /// the execution when every task is terminal.
    pub fn settle(&mut self, snap: &mut ExecutionSnapshot, wf: &Workflow) {
        if snap.execution.state.is_terminal() {
            return;
        }
        let mut states = snap.states();
        let empty = Context::new();
        let source = ContextSource {
            input: if snap.input_loaded { &snap.execution.input } else { &empty },
            outputs: &snap.outputs,
        };
        let planned = plan::advance(wf, &mut states, wf.needs_context().then_some(source));
        let can_claim = matches!(snap.execution.state, WorkflowState::Pending | WorkflowState::Running);
        for p in planned {
            let before = snap.tasks[p.task].clone();
            let mut row = before.clone();
            row.state = p.to;
            match p.to {
                TaskState::Ready => {
                    row.ready_at = self.now;
                    self.task_event(&row, Some(p.from), None);
                    if can_claim && self.take_claim_slot() {
                        self.claim_row(&mut row);
                        self.task_event(&row, Some(TaskState::Ready), Some(self.claim_detail(&row)));
                        let sources: Vec<String> = plan::input_sources(wf, p.task, &states)
                            .iter()
                            .map(|&d| wf.tasks()[d].id().to_owned())
                            .collect();
                        let known = sources
                            .iter()
                            .filter_map(|s| {
                                wf.index_of(s).and_then(|i| snap.outputs.get(&i)).map(|c| (s.clone(), c.clone()))
                            })
                            .collect();
                        let execution_input = snap.input_loaded.then(|| snap.execution.input.clone());
                        self.out.pending_claims.push(PendingClaim {
                            task: claimed_task(wf, &row),
                            sources,
                            known,
                            execution_input,
                        });
                        if snap.execution.state == WorkflowState::Pending {
                            let _ = self.transition_execution(snap, WorkflowEvent::Start, None);
                        }
                    } else {
                        self.out.effects.newly_ready += 1;
                    }
                }
                _ => {
                    row.finished_at = Some(self.now);
                    row.error = p.reason.clone();
                    self.task_event(&row, Some(p.from), p.reason);
                }
            }
            self.write_task(&before, row.clone());
            snap.tasks[p.task] = row;
        }
        if let Some(final_state) = plan::outcome(&snap.states()) {
            let (event, detail) = match final_state {
                WorkflowState::Completed => (WorkflowEvent::Complete, None),
                _ => (WorkflowEvent::Fail, Some(failure_summary(snap))),
            };
            // The execution is not terminal (checked above), so Complete
            // and Fail are both legal.
            let _ = self.transition_execution(snap, event, detail);
        }
    }

    /// Applies a recovery decision to a task of `snap` (by row id) that was
    /// found orphaned while it was running under the claim `found_token`.
    /// Compare-and-set: nothing happens unless the row, as read under the
    /// execution's lock, is still running under that same claim (a task
    /// requeued and claimed again by a live runner since it was found is
    /// left alone). An abandoned task's execution is settled, which needs
    /// its workflow: without `wf`, an abandonment is left for a runner that
    /// knows the workflow (requeueing needs no workflow code).
    pub fn recover(
        &mut self,
        snap: &mut ExecutionSnapshot,
        wf: Option<&Workflow>,
        task: TaskExecutionId,
        found_token: FencingToken,
        decision: RecoveryDecision,
        policy: &RecoveryPolicy,
    ) -> Option<RecoveryDecision> {
        let idx = snap.index_of(task)?;
        let before = snap.tasks[idx].clone();
        if before.state != TaskState::Running || before.fencing_token != found_token {
            return None;
        }
        if matches!(decision, RecoveryDecision::Abandon { .. }) && wf.is_none() {
            return None;
        }
        let owner = before.lease.as_ref().map(|l| l.owner.to_string()).unwrap_or_else(|| "?".into());
        let mut row = before.clone();
        row.lease = None;
        match decision {
            RecoveryDecision::Keep => return None,
            RecoveryDecision::Requeue { recovery_count } => {
                row.state = TaskState::Running.apply(TaskEvent::Requeue).ok()?;
                row.recovery_count = recovery_count;
                row.ready_at = self.now;
                self.out.effects.newly_ready += 1;
                let detail = format!(
                    "recovered: runner {owner} is gone; recovery {recovery_count} of at most {}",
                    policy.max_recoveries()
                );
                self.task_event(&row, Some(before.state), Some(detail));
            }
            RecoveryDecision::Abandon { recovery_count } => {
                row.state = TaskState::Running.apply(TaskEvent::Abandon).ok()?;
                row.finished_at = Some(self.now);
                let msg = format!(
                    "abandoned: its runner ({owner}) disappeared while running it after {recovery_count} recoveries \
                     (max_recoveries = {})",
                    policy.max_recoveries()
                );
                row.error = Some(msg.clone());
                self.task_event(&row, Some(before.state), Some(msg));
            }
        }
        self.write_task(&before, row.clone());
        snap.tasks[idx] = row;
        if let (RecoveryDecision::Abandon { .. }, Some(wf)) = (decision, wf) {
            self.settle(snap, wf);
        }
        Some(decision)
    }

    /// Puts a running task back to Ready because its runner gave it back
    /// (`why`: shut down gracefully, or lost track of a claim). The
    /// recovery count is unchanged.
    pub fn release(&mut self, snap: &mut ExecutionSnapshot, task: TaskExecutionId, why: &str) -> bool {
        let Some(idx) = snap.index_of(task) else {
            return false;
        };
        let before = snap.tasks[idx].clone();
        if before.state != TaskState::Running {
            return false;
        }
        let owner = before.lease.as_ref().map(|l| l.owner.to_string()).unwrap_or_default();
        let mut row = before.clone();
        row.state = match TaskState::Running.apply(TaskEvent::Requeue) {
            Ok(s) => s,
            Err(_) => return false,
        };
        row.lease = None;
        row.ready_at = self.now;
        self.out.effects.newly_ready += 1;
        self.task_event(&row, Some(before.state), Some(format!("released by runner {owner}: {why}")));
        self.write_task(&before, row.clone());
        snap.tasks[idx] = row;
        true
    }

    /// Cancels the execution and every non-terminal task.
    pub fn cancel(&mut self, snap: &mut ExecutionSnapshot, reason: &str) -> Result<(), TransitionError> {
        snap.execution.state.apply(WorkflowEvent::Cancel)?;
        for idx in 0..snap.tasks.len() {
            let before = snap.tasks[idx].clone();
            if let Ok(to) = before.state.apply(TaskEvent::Cancel) {
                let mut row = before.clone();
                row.state = to;
                row.lease = None;
                row.finished_at = Some(self.now);
                row.error = Some(reason.to_owned());
                self.task_event(&row, Some(before.state), Some(reason.to_owned()));
                self.write_task(&before, row.clone());
                snap.tasks[idx] = row;
            }
        }
        self.transition_execution(snap, WorkflowEvent::Cancel, Some(reason.to_owned()))
    }

    /// Pauses the execution.
    pub fn pause(&mut self, snap: &mut ExecutionSnapshot) -> Result<(), TransitionError> {
        self.transition_execution(snap, WorkflowEvent::Pause, None)
    }

    /// Resumes the execution; its ready tasks count as newly ready.
    pub fn resume(&mut self, snap: &mut ExecutionSnapshot) -> Result<(), TransitionError> {
        self.transition_execution(snap, WorkflowEvent::Resume, None)?;
        self.out.effects.newly_ready += snap.tasks.iter().filter(|t| t.state == TaskState::Ready).count();
        Ok(())
    }
}

fn lost(before: &TaskRecord) -> ReportRejection {
    ReportRejection::LeaseLost { state: before.state, current_token: before.fencing_token }
}

fn failure_summary(snap: &ExecutionSnapshot) -> String {
    let failed: Vec<String> = snap
        .tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Failed | TaskState::Abandoned))
        .map(|t| format!("task `{}` {}: {}", t.name, t.state, t.error.as_deref().unwrap_or("no error recorded")))
        .collect();
    failed.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RunnerId;
    use crate::ports::{ClaimOwner, NewExecution};
    use crate::task::{TaskError, task_fn};
    use crate::workflow::TaskSpec;
    use std::time::Duration;

    fn wf() -> Workflow {
        let t = |id: &str| TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) }));
        Workflow::builder("chain").task(t("a")).task(t("b").depends_on(["a"])).build().unwrap()
    }

    fn owner() -> ClaimRequest {
        ClaimRequest {
            owner: ClaimOwner {
                runner: RunnerId::parse("r1").unwrap(),
                incarnation: "i1".into(),
                lease_ttl: Duration::from_secs(10),
            },
            limit: 10,
        }
    }

    fn snapshot_from(out: &StepOutput, wf: &Workflow) -> ExecutionSnapshot {
        ExecutionSnapshot::new(wf, out.writes.execution_inserts[0].clone(), true, out.writes.task_inserts.clone())
            .unwrap()
    }

    #[test]
    fn create_with_claim_leases_roots() {
        let w = wf();
        let set: WorkflowSet = [w.clone()].into_iter().collect();
        let req = owner();
        let mut step = Step::new(Timestamp(1000), &set, Some(&req));
        let mut input = Context::new();
        input.set("x", 1).unwrap();
        step.create(NewExecution::plan(&w, input.clone(), "api", Timestamp(1000)));
        let out = step.finish();
        assert_eq!(out.pending_claims.len(), 1);
        let row = &out.writes.task_inserts[0];
        assert_eq!(row.state, TaskState::Running);
        assert_eq!(row.fencing_token, FencingToken(1));
        assert_eq!(row.lease.as_ref().unwrap().expires_at, Timestamp(11_000));
        assert_eq!(out.writes.execution_inserts[0].state, WorkflowState::Running);
        let claimed = out.pending_claims[0].clone().resolve(&HashMap::new(), &HashMap::new());
        assert_eq!(claimed.input, input);
    }

    #[test]
    fn stale_report_is_rejected_and_fresh_one_carries_consequences() {
        let w = wf();
        let set: WorkflowSet = [w.clone()].into_iter().collect();
        let req = owner();
        let mut step = Step::new(Timestamp(1000), &set, Some(&req));
        step.create(NewExecution::plan(&w, Context::new(), "api", Timestamp(1000)));
        let out = step.finish();
        let mut snap = snapshot_from(&out, &w);
        let task = &snap.tasks[0];
        let report = |token| TaskReport {
            task: task.id,
            execution: task.execution_id,
            fencing_token: FencingToken(token),
            outcome: ReportOutcome::Succeeded { output: Context::new() },
        };
        let (stale, fresh) = (report(0), report(1));
        let mut step = Step::new(Timestamp(2000), &set, None);
        assert_eq!(
            step.report(&mut snap, stale),
            Err(ReportRejection::LeaseLost { state: TaskState::Running, current_token: FencingToken(1) })
        );
        step.report(&mut snap, fresh).unwrap();
        step.settle(&mut snap, &w);
        let out = step.finish();
        assert_eq!(out.writes.tasks.len(), 2, "a completed, b ready");
        assert_eq!(out.writes.tasks[1].row.state, TaskState::Ready);
        assert_eq!(out.effects.newly_ready, 1);
        assert!(out.effects.finished.is_empty());
    }

    #[test]
    fn coalesced_writes_keep_the_first_expectation() {
        let w = wf();
        let set: WorkflowSet = [w.clone()].into_iter().collect();
        let req = owner();
        let mut step = Step::new(Timestamp(1000), &set, Some(&req));
        step.create(NewExecution::plan(&w, Context::new(), "api", Timestamp(1000)));
        let mut snap = snapshot_from(&step.finish(), &w);
        let t = snap.tasks[0].clone();
        let mut step = Step::new(Timestamp(2000), &set, Some(&req));
        step.report(
            &mut snap,
            TaskReport {
                task: t.id,
                execution: t.execution_id,
                fencing_token: t.fencing_token,
                outcome: ReportOutcome::Succeeded { output: Context::new() },
            },
        )
        .unwrap();
        step.settle(&mut snap, &w);
        let out = step.finish();
        let b = out.writes.tasks.iter().find(|w| w.row.name == "b").unwrap();
        assert_eq!(b.expect_state, TaskState::NotStarted);
        assert_eq!(b.row.state, TaskState::Running, "claimed directly");
        assert_eq!(out.pending_claims.len(), 1);
        assert_eq!(out.pending_claims[0].known.len(), 1, "a's output is in memory");
    }
}
