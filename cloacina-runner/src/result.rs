//! What the runner hands back: results, handles, event streams.

use std::time::Duration;

use cloacina_core::ports::ExecutionEvent;
use cloacina_core::{Context, ExecutionId, TaskState, Timestamp, WorkflowState};
use tokio::sync::broadcast;

use crate::error::Result;
use crate::runner::DefaultRunner;

/// How one task of an execution ended (or stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task id.
    pub task: String,
    /// Its state.
    pub state: TaskState,
    /// The number of its latest attempt (0 if it never started).
    pub attempts: u32,
    /// How often it lost its runner.
    pub recoveries: u32,
    /// Its last error, skip reason or abandonment reason.
    pub error: Option<String>,
}

/// An execution's state, context and per-task outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionResult {
    /// The execution.
    pub id: ExecutionId,
    /// The workflow name.
    pub workflow: String,
    /// The workflow version it ran.
    pub workflow_version: String,
    /// Its state (terminal once [`wait`](ExecutionHandle::wait) returned).
    pub status: WorkflowState,
    /// The final context: the merge, in topological order, of the outputs
    /// of the completed tasks that have no completed dependent (so keys
    /// removed downstream stay removed); the input context when no task
    /// completed.
    pub context: Context,
    /// Every task, in topological order.
    pub tasks: Vec<TaskOutcome>,
    /// Why the execution failed or was cancelled.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

impl ExecutionResult {
    /// Whether it completed.
    pub fn is_success(&self) -> bool {
        self.status == WorkflowState::Completed
    }
    /// The outcome of one task.
    pub fn task(&self, id: &str) -> Option<&TaskOutcome> {
        self.tasks.iter().find(|t| t.task == id)
    }
}

/// A started execution.
#[derive(Debug, Clone)]
pub struct ExecutionHandle {
    pub(crate) id: ExecutionId,
    pub(crate) runner: DefaultRunner,
}

impl ExecutionHandle {
    /// The execution id.
    pub fn id(&self) -> ExecutionId {
        self.id
    }
    /// Its current state.
    pub async fn status(&self) -> Result<WorkflowState> {
        self.runner.status(self.id).await
    }
    /// Waits for a terminal state, then returns the result.
    pub async fn wait(&self) -> Result<ExecutionResult> {
        self.runner.wait_for(self.id, None).await
    }
    /// Like [`wait`](Self::wait), giving up with
    /// [`RunnerError::WaitTimeout`](crate::RunnerError::WaitTimeout) after `d` (the execution goes on).
    pub async fn wait_timeout(&self, d: Duration) -> Result<ExecutionResult> {
        self.runner.wait_for(self.id, Some(d)).await
    }
    /// Cancels it.
    pub async fn cancel(&self) -> Result<()> {
        self.runner.cancel(self.id).await
    }
    /// Its result so far.
    pub async fn result(&self) -> Result<ExecutionResult> {
        self.runner.result(self.id).await
    }
}

/// A stream of the state changes a runner makes.
#[derive(Debug)]
pub struct EventStream {
    rx: broadcast::Receiver<ExecutionEvent>,
    missed: u64,
}

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<ExecutionEvent>) -> Self {
        Self { rx, missed: 0 }
    }
    /// The next event; `None` once the runner is gone. A subscriber that
    /// falls more than 4096 events behind skips the oldest (counted in
    /// [`missed`](Self::missed)); the history in storage is complete.
    pub async fn next(&mut self) -> Option<ExecutionEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
    /// Events skipped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}
