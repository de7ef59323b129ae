//! Creating an execution with all its task rows.

use super::Step;
use crate::ids::FencingToken;
use crate::plan::NewExecution;
use crate::ports::{ExecutionEvent, ExecutionRecord, FinishedExecution, TaskRecord};
use crate::state::{TaskState, WorkflowEvent, WorkflowState};

impl Step<'_> {
    /// Creates an execution (rows and events); claims ready roots for the
    /// caller if the step claims, which starts the execution.
    pub fn create(&mut self, new: NewExecution) {
        let now = self.now;
        let state = new.finished.unwrap_or(WorkflowState::Pending);
        let mut exec = ExecutionRecord {
            id: new.id,
            workflow: new.workflow,
            label: new.label,
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
        let mut claimed_any = false;
        if let Some(wf) = self.workflows.get(&exec.workflow).cloned() {
            if let Some(c) = super::counters::initial(&wf, &rows) {
                self.out.writes.new_counters.insert(exec.id, c);
            }
            for row in rows.iter_mut().filter(|r| r.state == TaskState::Ready) {
                let Some(claim) = self.claim_ready(&wf, row) else { break };
                // A root's input is the execution's input.
                claim.sources.clear();
                claim.execution_input = Some(exec.input.clone());
                claimed_any = true;
            }
        }
        self.out.effects.newly_ready += rows.iter().filter(|r| r.state == TaskState::Ready).count();
        if claimed_any && let Ok(started) = exec.state.apply(WorkflowEvent::Start) {
            // A new row: the insert carries the state, the event records it.
            self.out.writes.events.push(ExecutionEvent::execution(exec.id, Some(exec.state), started, None, now));
            exec.state = started;
        }
        self.out.writes.execution_inserts.push(exec);
        self.out.writes.task_inserts.extend(rows);
    }
}
