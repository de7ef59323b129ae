//! Stored rows as the domain sees them.

use super::*;

/// A lease held on a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The runner that holds it.
    pub owner: RunnerId,
    /// The owner's process incarnation.
    pub incarnation: String,
    /// When it expires if the owner's liveness is not renewed.
    pub expires_at: Timestamp,
}

/// A task row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Row id.
    pub id: TaskExecutionId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Task id within the workflow.
    pub name: String,
    /// State.
    pub state: TaskState,
    /// Attempt number (1-based; recoveries do not count).
    pub attempt: u32,
    /// Not claimable before this time (retry backoff).
    pub ready_at: Timestamp,
    /// The current lease, while Running.
    pub lease: Option<Lease>,
    /// Changes on every claim.
    pub fencing_token: FencingToken,
    /// How often the task lost its runner.
    pub recovery_count: u32,
    /// Last error (failures, skips, abandonment).
    pub error: Option<String>,
    /// When the current or last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

/// An execution row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// Id.
    pub id: ExecutionId,
    /// Workflow name and version.
    pub workflow: WorkflowRef,
    /// The workflow's version label when the execution was created (or
    /// migrated), if it had one.
    pub label: Option<String>,
    /// State.
    pub state: WorkflowState,
    /// Input context.
    pub input: Context,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Where it came from.
    pub origin: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

/// A task handed to a runner by a claim.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    /// Row id.
    pub id: TaskExecutionId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Workflow name and version.
    pub workflow: WorkflowRef,
    /// Task id within the workflow.
    pub name: String,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// The token every write-back must carry.
    pub fencing_token: FencingToken,
    /// How often the task lost its runner before.
    pub recovery_count: u32,
    /// The input context (see [`crate::context`]).
    pub input: Context,
    /// Set when the stored contexts the input is made of cannot be read
    /// (corrupted rows): the runner fails the task with this problem
    /// instead of running it.
    pub input_error: Option<String>,
}

/// A filter for [`ExecutionStore::list_executions`].
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// Only this workflow name.
    pub workflow: Option<String>,
    /// Only these states (any, when empty).
    pub states: Vec<WorkflowState>,
    /// Only executions created at or after this time.
    pub created_after: Option<Timestamp>,
    /// At most this many (newest first). `None` means 100.
    pub limit: Option<usize>,
    /// Only executions of this version: a shape fingerprint
    /// ([`Workflow::version`](crate::Workflow::version)) or a version label.
    pub version: Option<String>,
    /// Only unfinished executions whose version no live runner serves
    /// (see [`Versions::stranded`]).
    pub stranded: bool,
}
