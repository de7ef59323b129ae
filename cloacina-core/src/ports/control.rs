//! User control of executions: cancel, pause, resume.

use super::*;

/// User control of executions.
#[async_trait]
pub trait Control: Send + Sync {
    /// Cancels: the execution and every non-terminal task become Cancelled
    /// (running tasks' late results are then rejected).
    async fn cancel(&self, id: ExecutionId, reason: &str, now: Timestamp) -> StorageResult<Effects>;
    /// Pauses: no task of the execution is claimed until resumed.
    async fn pause(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects>;
    /// Resumes a paused execution.
    async fn resume(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects>;
}
