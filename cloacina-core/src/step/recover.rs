//! Recovery, release at shutdown, and user control (cancel, pause, resume).

use super::{ExecutionSnapshot, Step};
use crate::ids::{FencingToken, TaskExecutionId};
use crate::recovery::{RecoveryDecision, RecoveryPolicy};
use crate::state::{TaskEvent, TaskState, TransitionError, WorkflowEvent};
use crate::workflow::Workflow;

impl Step<'_> {
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
