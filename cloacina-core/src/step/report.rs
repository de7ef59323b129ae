//! Reports of task outcomes, and their consequences.

use std::collections::{BTreeMap, HashMap};

use super::{ExecutionSnapshot, OutputWrite, Step, lost};
use crate::context::Context;
use crate::ids::ExecutionId;
use crate::plan::{self, ContextSource, PlannedTransition};
use crate::ports::{ExecutionRecord, ReportOutcome, ReportRejection, TaskRecord, TaskReport};
use crate::state::{TaskEvent, TaskState, WorkflowEvent, WorkflowState};
use crate::workflow::Workflow;

impl Step<'_> {
    /// Applies reports (each fenced by its token) to their executions'
    /// snapshots, then settles every execution that took one: dependents
    /// whose dependencies are all terminal become Ready (and may be claimed
    /// for the caller) or Skipped, and the execution is finalized when
    /// every task is terminal. One result per report, in order.
    ///
    /// `snaps` holds, per execution, its snapshot or why its rows cannot be
    /// read (`Unreadable`); a report of an execution that is not there is
    /// `NotFound`.
    pub fn report<E: std::fmt::Display>(
        &mut self,
        snaps: &mut BTreeMap<ExecutionId, Result<ExecutionSnapshot, E>>,
        reports: Vec<TaskReport>,
    ) -> Vec<Result<(), ReportRejection>> {
        let mut touched: Vec<ExecutionId> = Vec::new();
        let results = reports
            .into_iter()
            .map(|r| match snaps.get_mut(&r.execution) {
                Some(Ok(snap)) => {
                    if !touched.contains(&r.execution) {
                        touched.push(r.execution);
                    }
                    self.note(&snap.execution);
                    match snap.index_of(r.task) {
                        Some(idx) => self.apply_report(&mut snap.tasks[idx], idx, &mut snap.outputs, r),
                        None => Err(ReportRejection::NotFound),
                    }
                }
                Some(Err(e)) => Err(ReportRejection::Unreadable { problem: e.to_string() }),
                None => Err(ReportRejection::NotFound),
            })
            .collect();
        for id in touched {
            if let Some(Ok(snap)) = snaps.get_mut(&id)
                && let Some(wf) = self.workflows.get(&snap.execution.workflow).cloned()
            {
                self.settle(snap, &wf);
            }
        }
        results
    }

    /// Applies one report to its task's row (`slot`, task index `idx`),
    /// fenced by its token; a success's output goes to `outputs`.
    pub(super) fn apply_report(
        &mut self,
        slot: &mut TaskRecord,
        idx: usize,
        outputs: &mut HashMap<usize, Context>,
        report: TaskReport,
    ) -> Result<(), ReportRejection> {
        let before = slot.clone();
        if before.state != TaskState::Running || before.fencing_token != report.fencing_token {
            return Err(lost(&before));
        }
        let mut row = before.clone();
        row.lease = None;
        let detail = match report.outcome {
            ReportOutcome::Succeeded { output } => {
                row.state = before.state.apply(TaskEvent::Succeed).map_err(|_| lost(&before))?;
                row.finished_at = Some(self.now);
                row.error = None;
                self.out.writes.outputs.push(OutputWrite {
                    task: row.id,
                    execution: row.execution_id,
                    name: row.name.clone(),
                    context: output.clone(),
                });
                outputs.insert(idx, output);
                format!("attempt {} succeeded", row.attempt)
            }
            ReportOutcome::Retry { error, retry_at } => {
                row.state = before.state.apply(TaskEvent::RetryScheduled).map_err(|_| lost(&before))?;
                let detail = format!("attempt {} failed: {error}; retry at {retry_at}", row.attempt);
                row.attempt += 1;
                row.ready_at = retry_at;
                row.error = Some(error);
                self.out.effects.newly_ready += 1;
                detail
            }
            ReportOutcome::Failed { error } => {
                row.state = before.state.apply(TaskEvent::Fail).map_err(|_| lost(&before))?;
                row.finished_at = Some(self.now);
                let detail = format!("attempt {} failed, no retry left: {error}", row.attempt);
                row.error = Some(error);
                detail
            }
        };
        self.task_event(&row, Some(before.state), Some(detail));
        self.write_task(&before, row.clone());
        *slot = row;
        Ok(())
    }

    /// Evaluates dependents whose dependencies are all terminal (to Ready
    /// or Skipped; ready ones may be claimed for the caller) and finalizes
    /// the execution when every task is terminal.
    pub(super) fn settle(&mut self, snap: &mut ExecutionSnapshot, wf: &Workflow) {
        if snap.execution.state.is_terminal() {
            return;
        }
        self.note(&snap.execution);
        let mut states = snap.states();
        let empty = Context::new();
        let source = ContextSource {
            input: if snap.input_loaded { &snap.execution.input } else { &empty },
            outputs: &snap.outputs,
        };
        let planned = plan::advance(wf, &mut states, wf.needs_context().then_some(source));
        // The input is moved out while the execution row may change.
        let input = snap.input_loaded.then(|| std::mem::take(&mut snap.execution.input));
        for p in planned {
            let task = p.task;
            let mut row = snap.tasks[task].clone();
            let known = Known { state_of: &|d| states[d], outputs: &snap.outputs, input: input.as_ref() };
            self.apply_planned(wf, &mut snap.execution, &mut row, p, &known);
            snap.tasks[task] = row;
        }
        if let Some(input) = input {
            snap.execution.input = input;
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

    /// Writes a planned transition of `row` (its task's index is
    /// `p.task`): a task made Ready may be claimed for the caller (which
    /// starts a pending execution), a skipped one is finished.
    pub(super) fn apply_planned(
        &mut self,
        wf: &Workflow,
        exec: &mut ExecutionRecord,
        row: &mut TaskRecord,
        p: PlannedTransition,
        known: &Known<'_>,
    ) {
        let before = row.clone();
        row.state = p.to;
        if p.to == TaskState::Ready {
            row.ready_at = self.now;
            self.task_event(row, Some(p.from), None);
            let can_claim = matches!(exec.state, WorkflowState::Pending | WorkflowState::Running);
            let claim = if can_claim { self.claim_ready(wf, row) } else { None };
            match claim {
                Some(claim) => {
                    // Its input: the outputs of its completed dependencies,
                    // those in memory included.
                    claim.sources = plan::sources_of(wf, p.task, known.state_of)
                        .iter()
                        .map(|&d| wf.tasks()[d].id().to_owned())
                        .collect();
                    claim.known = claim
                        .sources
                        .iter()
                        .filter_map(|s| {
                            wf.index_of(s).and_then(|i| known.outputs.get(&i)).map(|c| (s.clone(), c.clone()))
                        })
                        .collect();
                    claim.execution_input = known.input.cloned();
                    if exec.state == WorkflowState::Pending {
                        self.start_execution(exec);
                    }
                }
                None => self.out.effects.newly_ready += 1,
            }
        } else {
            row.finished_at = Some(self.now);
            row.error = p.reason.clone();
            self.task_event(row, Some(p.from), p.reason);
        }
        self.write_task(&before, row.clone());
    }
}

/// What deciding and claiming a task may read: states (of its
/// dependencies), outputs in memory, and the execution input if loaded.
pub(super) struct Known<'a> {
    pub(super) state_of: &'a dyn Fn(usize) -> TaskState,
    pub(super) outputs: &'a HashMap<usize, Context>,
    pub(super) input: Option<&'a Context>,
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
