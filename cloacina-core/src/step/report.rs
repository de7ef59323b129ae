//! Reports of task outcomes, and their consequences.

use std::collections::BTreeMap;

use super::{ExecutionSnapshot, OutputWrite, Step, lost};
use crate::context::Context;
use crate::ids::ExecutionId;
use crate::plan::{self, ContextSource};
use crate::ports::{ReportOutcome, ReportRejection, TaskReport};
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
                    self.apply_report(snap, r)
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

    fn apply_report(&mut self, snap: &mut ExecutionSnapshot, report: TaskReport) -> Result<(), ReportRejection> {
        let idx = snap.index_of(report.task).ok_or(ReportRejection::NotFound)?;
        let before = snap.tasks[idx].clone();
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
                snap.outputs.insert(idx, output);
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
        snap.tasks[idx] = row;
        Ok(())
    }

    /// Evaluates dependents whose dependencies are all terminal (to Ready
    /// or Skipped; ready ones may be claimed for the caller) and finalizes
    /// the execution when every task is terminal.
    pub(super) fn settle(&mut self, snap: &mut ExecutionSnapshot, wf: &Workflow) {
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
            if p.to == TaskState::Ready {
                row.ready_at = self.now;
                self.task_event(&row, Some(p.from), None);
                let claim = if can_claim { self.claim_ready(wf, &mut row) } else { None };
                match claim {
                    Some(claim) => {
                        // Its input: the outputs of its completed
                        // dependencies, those in memory included.
                        claim.sources = plan::input_sources(wf, p.task, &states)
                            .iter()
                            .map(|&d| wf.tasks()[d].id().to_owned())
                            .collect();
                        claim.known = claim
                            .sources
                            .iter()
                            .filter_map(|s| {
                                wf.index_of(s).and_then(|i| snap.outputs.get(&i)).map(|c| (s.clone(), c.clone()))
                            })
                            .collect();
                        claim.execution_input = snap.input_loaded.then(|| snap.execution.input.clone());
                        if snap.execution.state == WorkflowState::Pending {
                            let _ = self.transition_execution(snap, WorkflowEvent::Start, None);
                        }
                    }
                    None => self.out.effects.newly_ready += 1,
                }
            } else {
                row.finished_at = Some(self.now);
                row.error = p.reason.clone();
                self.task_event(&row, Some(p.from), p.reason);
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
