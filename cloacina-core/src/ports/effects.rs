//! What a storage call changed: events, finished executions, claims.

use super::*;

/// Terminal state reached by an execution during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedExecution {
    /// Id.
    pub id: ExecutionId,
    /// Terminal state.
    pub state: WorkflowState,
}

/// The rows of an execution as a call finished it, so a local waiter can
/// build its result without reading them back.
#[derive(Debug, Clone)]
pub struct FinishedSnapshot {
    /// The execution row (its `input` is real only if `input_loaded`).
    pub execution: ExecutionRecord,
    /// Whether `execution.input` was loaded.
    pub input_loaded: bool,
    /// Its task rows.
    pub tasks: Vec<TaskRecord>,
    /// Outputs the call had in memory, by task id (possibly not all).
    pub outputs: HashMap<String, Context>,
}

/// What a call changed: the events it recorded, executions it finished,
/// how many tasks it made ready, and what it claimed for the caller.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Events recorded, in order.
    pub events: Vec<ExecutionEvent>,
    /// Executions that reached a terminal state.
    pub finished: Vec<FinishedExecution>,
    /// The rows of finished executions, where the call had them.
    pub snapshots: Vec<std::sync::Arc<FinishedSnapshot>>,
    /// Tasks that became Ready (claimable now or at their retry time) and
    /// were not claimed by this call.
    pub newly_ready: usize,
    /// Tasks claimed for the caller within the same transaction.
    pub claimed: Vec<ClaimedTask>,
}

impl Effects {
    /// Appends another call's effects.
    pub fn absorb(&mut self, other: Effects) {
        self.events.extend(other.events);
        self.finished.extend(other.finished);
        self.snapshots.extend(other.snapshots);
        self.newly_ready += other.newly_ready;
        self.claimed.extend(other.claimed);
    }
}

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An execution changed state (or was created: `from` is `None`).
    Execution,
    /// A task changed state (or was created: `from` is `None`).
    Task,
}

impl EventKind {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Execution => "execution",
            EventKind::Task => "task",
        }
    }
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "execution" => Some(EventKind::Execution),
            "task" => Some(EventKind::Task),
            _ => None,
        }
    }
}

/// One state change, appended in the transaction that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionEvent {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Execution or task change.
    pub kind: EventKind,
    /// The task id within the workflow (task events).
    pub task: Option<String>,
    /// The task row (task events).
    pub task_execution_id: Option<TaskExecutionId>,
    /// State before (`None` at creation).
    pub from: Option<String>,
    /// State after.
    pub to: String,
    /// Extra detail: error, skip reason, runner, attempt.
    pub detail: Option<String>,
    /// When.
    pub at: Timestamp,
}

impl ExecutionEvent {
    /// An execution state change.
    pub fn execution(
        id: ExecutionId,
        from: Option<WorkflowState>,
        to: WorkflowState,
        detail: Option<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            execution_id: id,
            kind: EventKind::Execution,
            task: None,
            task_execution_id: None,
            from: from.map(|s| s.to_string()),
            to: to.to_string(),
            detail,
            at,
        }
    }

    /// A task state change.
    #[allow(clippy::too_many_arguments)]
    pub fn task(
        execution: ExecutionId,
        task: &str,
        task_id: TaskExecutionId,
        from: Option<TaskState>,
        to: TaskState,
        detail: Option<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            execution_id: execution,
            kind: EventKind::Task,
            task: Some(task.to_owned()),
            task_execution_id: Some(task_id),
            from: from.map(|s| s.to_string()),
            to: to.to_string(),
            detail,
            at,
        }
    }
}
