//! Wake-ups.

use super::*;

/// A wake-up from storage: a hint of where to look, never a fact to act
/// on — a receiver reads what changed from its own tenant's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Tasks became ready somewhere.
    TasksReady,
    /// An execution reached a terminal state: this one, or — from a
    /// channel that carries no ids (PostgreSQL) — some execution.
    ExecutionFinished(Option<ExecutionId>),
    /// An execution was cancelled (its running tasks should stop): this
    /// one, or some execution.
    ExecutionCancelled(Option<ExecutionId>),
}

/// Wake-ups.
#[async_trait]
pub trait Notifications: Send + Sync {
    /// A stream of notifications from other runners (and this one), or
    /// `None` if the backend has no such channel (the runner then polls).
    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>>;
}
