//! Executions: reads.

use super::*;

/// Executions: reads.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// One execution.
    async fn execution(&self, id: ExecutionId) -> StorageResult<Option<ExecutionRecord>>;

    /// The current state of several executions (missing ids are omitted).
    async fn execution_states(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, WorkflowState)>>;

    /// The task rows of an execution, in topological order of creation.
    async fn tasks(&self, id: ExecutionId) -> StorageResult<Vec<TaskRecord>>;

    /// Of the given executions, those whose rows cannot be read (the
    /// execution row or any of its task rows), each with the
    /// [`StorageError::CorruptRow`] naming the first bad row. Missing ids are
    /// omitted.
    async fn unreadable(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, StorageError)>>;

    /// Output contexts of completed tasks of an execution, by task id; only
    /// the named tasks (all completed ones when `names` is empty).
    async fn outputs(&self, id: ExecutionId, names: &[String]) -> StorageResult<HashMap<String, Context>>;

    /// Executions matching a filter, newest first. A row that cannot be
    /// read is left out (and logged, naming it).
    async fn list_executions(&self, filter: &ExecutionFilter) -> StorageResult<Vec<ExecutionRecord>>;

    /// An execution's events, oldest first.
    async fn events(&self, id: ExecutionId) -> StorageResult<Vec<ExecutionEvent>>;
}

/// What opening a storage did to its schema.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenReport {
    /// Whether the tenant's schema (PostgreSQL) or file (SQLite) was
    /// created by this opening.
    pub created: bool,
    /// Migrations applied by this opening (empty when the schema was
    /// already current: nothing is re-run).
    pub migrations_applied: Vec<String>,
}
