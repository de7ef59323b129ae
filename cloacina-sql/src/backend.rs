//! What differs between the SQL backends, as one trait.

use std::fmt;

use async_trait::async_trait;
use cloacina_core::Timestamp;
use cloacina_core::ports::{ClaimRequest, Notification, StorageError, StorageResult};
use futures::stream::BoxStream;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, Statement};

use crate::entities::task_executions;

/// An error inside a write transaction: either a real storage error, or a
/// conflict (a guarded write found its row changed, a deadlock, a
/// serialization failure) after which the whole transaction is retried.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Retry the transaction.
    #[error("conflicting concurrent change: {0}")]
    Conflict(String),
    /// Give up with this error.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The backend-specific half of a SQL storage: connections, the write
/// transaction, locks, the claim statement, wake-ups and error mapping.
/// Everything else is shared, in [`SqlStorage`](crate::SqlStorage).
#[async_trait]
pub trait SqlBackend: Send + Sync + fmt::Debug + 'static {
    /// Backend and tenant, for logs; never a password.
    fn describe(&self) -> String;

    /// What opening did to the schema.
    fn open_report(&self) -> cloacina_core::ports::OpenReport;

    /// The connection for reads outside write transactions.
    fn reader(&self) -> &DatabaseConnection;

    /// Begins a write transaction that serializes with other writers as
    /// the backend requires (SQLite: `BEGIN IMMEDIATE`).
    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr>;

    /// Locks the given executions' rows until the transaction ends
    /// (PostgreSQL: `SELECT … FOR UPDATE` in id order; SQLite: nothing, the
    /// write transaction is already exclusive).
    async fn lock_executions(&self, txn: &DatabaseTransaction, ids: &[uuid::Uuid]) -> Result<(), DbErr>;

    /// Claims up to `req.limit` ready rows of the given workflow keys, of
    /// executions that are pending or running, whose `ready_at` has passed:
    /// sets state `running`, the lease from `req.owner`, `started_at`, and
    /// increments the fencing token. Returns the claimed rows as updated.
    async fn claim_rows(
        &self,
        txn: &DatabaseTransaction,
        req: &ClaimRequest,
        workflow_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<task_executions::Model>, DbErr>;

    /// Executes write statements in order, in the transaction; returns the
    /// total of the rows they touched. The default runs them one by one; a
    /// backend may send them together (SQLite: one multi-statement call, a
    /// single hop to its worker thread).
    async fn execute_batch(&self, txn: &DatabaseTransaction, statements: Vec<Statement>) -> Result<u64, DbErr> {
        let mut total = 0;
        for s in statements {
            total += txn.execute_raw(s).await?.rows_affected();
        }
        Ok(total)
    }

    /// Sends notifications as part of the transaction (delivered at commit).
    async fn notify_in_txn(&self, txn: &DatabaseTransaction, notes: &[Notification]) -> Result<(), DbErr>;

    /// Delivers notifications after a commit (in-process channels).
    fn notify_after_commit(&self, notes: &[Notification]);

    /// A stream of notifications, if the backend has one.
    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>>;

    /// Maps a driver error: conflicts to [`TxError::Conflict`], the rest to
    /// the matching [`StorageError`].
    fn classify(&self, err: DbErr) -> TxError;

    /// Closes the pools.
    async fn close(&self);
}
