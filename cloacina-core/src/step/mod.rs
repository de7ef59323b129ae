//! The transaction logic every adapter shares.
//!
//! A storage adapter loads the rows a call touches (an
//! [`ExecutionSnapshot`] per execution, under whatever lock its database
//! needs), hands them to a [`Step`], and writes back the resulting
//! [`Writes`] in the same transaction. The rules — fencing, state-machine
//! checks, trigger evaluation, finalization, recovery decisions, events —
//! live here once, so SQLite and PostgreSQL cannot drift apart. Every
//! state change goes through [`TaskState::apply`] or
//! [`WorkflowState::apply`]; what a storage statement writes itself (a
//! batch claim, starting executions) takes its state names from
//! [`Transition`].
//!
//! One call per operation, each complete in itself: [`Step::create`],
//! [`Step::report`] (reports of one execution, then their consequences),
//! [`Step::recover`], [`Step::release`], [`Step::cancel`],
//! [`Step::pause`], [`Step::resume`]; then [`Step::finish`].
//!
//! Every [`TaskWrite`] and [`ExecutionWrite`] carries the state (and task
//! token) it expects to replace; an adapter applies it only if the row
//! still matches, and otherwise retries the whole transaction. Nothing
//! here names a table or a column.

mod counters;
mod create;
mod partial;
#[cfg(test)]
mod partial_tests;
mod recover;
mod report;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use snapshot::{
    CounterChange, ExecutionSnapshot, ExecutionWrite, Needed, NewCounters, OutputWrite, PartialSnapshot, PendingClaim,
    SnapshotError, StepOutput, TaskWrite, WaitingChange, Writes,
};

use crate::ids::{ExecutionId, FencingToken, TaskExecutionId, Timestamp};
use crate::ports::{ClaimOwner, ClaimRequest, ExecutionEvent, FinishedExecution, FinishedSnapshot, Lease, TaskRecord};
use crate::state::{TaskEvent, TaskState, Transition, TransitionError, WorkflowEvent, WorkflowState};
use crate::workflow::{Workflow, WorkflowRef, WorkflowSet};

/// Accumulates the consequences of one transaction. See the module docs.
#[derive(Debug)]
pub struct Step<'a> {
    now: Timestamp,
    workflows: &'a WorkflowSet,
    claim: Option<(ClaimOwner, usize)>,
    out: StepOutput,
    task_write_index: HashMap<TaskExecutionId, usize>,
    exec_write_index: HashMap<ExecutionId, usize>,
    /// The workflow of each execution whose rows the step changed, for the
    /// counters (see [`Step::finish`]).
    exec_refs: HashMap<ExecutionId, WorkflowRef>,
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
            exec_refs: HashMap::new(),
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
    /// returned, moved by [`Transition::claim`]): their events, and their
    /// claims against the budget.
    pub fn claimed_rows(&mut self, wf: &Workflow, row: &TaskRecord) {
        let detail = self.claim_detail(row);
        self.task_event(row, Some(Transition::claim().from), Some(detail));
        if let Some((_, n)) = &mut self.claim {
            *n = n.saturating_sub(1);
        }
        self.out.pending_claims.push(PendingClaim::for_claimed_row(wf, row));
    }

    /// Records that an execution was started ([`Transition::start`]) by an
    /// adapter's statement, because one of its tasks was claimed.
    pub fn execution_started(&mut self, id: ExecutionId) {
        let t = Transition::start();
        self.out.writes.events.push(ExecutionEvent::execution(id, Some(t.from), t.to, None, self.now));
    }

    /// Finishes the step: derives the counter changes of every task that
    /// became terminal (see [`PartialSnapshot`]) and returns what to write.
    pub fn finish(mut self) -> StepOutput {
        self.derive_counters();
        self.out
    }

    /// Remembers the workflow of an execution the step changes.
    fn note(&mut self, exec: &crate::ports::ExecutionRecord) {
        self.exec_refs.entry(exec.id).or_insert_with(|| exec.workflow.clone());
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
                    waiting_delta: 0,
                });
            }
        }
    }

    fn write_execution(&mut self, e: &crate::ports::ExecutionRecord, before: WorkflowState) {
        let w = ExecutionWrite {
            id: e.id,
            expect_state: before,
            state: e.state,
            error: e.error.clone(),
            finished_at: e.finished_at,
            unfinished: CounterChange::default(),
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

    /// Moves the execution of `snap` by `event`, with its event, its update
    /// and — when it becomes terminal — its effects.
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
        self.write_execution(&snap.execution, before);
        Ok(())
    }

    /// Starts a pending execution (one of its tasks was claimed).
    fn start_execution(&mut self, e: &mut crate::ports::ExecutionRecord) {
        let before = e.state;
        let Ok(to) = before.apply(WorkflowEvent::Start) else { return };
        e.state = to;
        e.updated_at = self.now;
        self.out.writes.events.push(ExecutionEvent::execution(e.id, Some(before), to, None, self.now));
        self.write_execution(e, before);
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

    /// Claims a Ready row for the step's claimer, if it has a slot left:
    /// `TaskEvent::Claim`, a new fencing token and a lease, and the claim's
    /// event. Returns the claim, whose input is then described by the
    /// caller (its sources default to all the task's dependencies).
    fn claim_ready(&mut self, wf: &Workflow, row: &mut TaskRecord) -> Option<&mut PendingClaim> {
        let (owner, _) = self.claim.as_ref()?;
        let to = row.state.apply(TaskEvent::Claim).ok()?;
        let lease = Lease {
            owner: owner.runner.clone(),
            incarnation: owner.incarnation.clone(),
            expires_at: self.now.plus(owner.lease_ttl),
        };
        if !self.take_claim_slot() {
            return None;
        }
        let from = row.state;
        row.state = to;
        row.fencing_token = FencingToken(row.fencing_token.0 + 1);
        row.lease = Some(lease);
        row.started_at = Some(self.now);
        let detail = self.claim_detail(row);
        self.task_event(row, Some(from), Some(detail));
        self.out.pending_claims.push(PendingClaim::for_claimed_row(wf, row));
        self.out.pending_claims.last_mut()
    }
}

fn lost(before: &TaskRecord) -> crate::ports::ReportRejection {
    crate::ports::ReportRejection::LeaseLost { state: before.state, current_token: before.fencing_token }
}
