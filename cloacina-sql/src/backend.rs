//! What differs between the SQL backends, as one trait.

use std::fmt;

use async_trait::async_trait;
use cloacina_core::Timestamp;
use cloacina_core::ports::{ClaimRequest, Notification, StorageError, StorageResult};
use cloacina_core::step::Writes;
use futures::stream::BoxStream;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, Statement};

use crate::entities::task_executions;
use crate::rows::ExecutionHead;

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

/// Rows returned by [`SqlBackend::lock_executions`].
#[derive(Debug, Default)]
pub struct LockedRows {
    /// The locked executions.
    pub heads: Vec<ExecutionHead>,
    /// Their task rows, in execution and position order.
    pub tasks: Vec<task_executions::Model>,
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

    /// See [`Storage::maintain`](cloacina_core::ports::Storage::maintain).
    async fn maintain(&self) -> StorageResult<()> {
        Ok(())
    }

    /// The connection for reads outside write transactions.
    fn reader(&self) -> &DatabaseConnection;

    /// Begins a write transaction that serializes with other writers as
    /// the backend requires (SQLite: `BEGIN IMMEDIATE`).
    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr>;

    /// Locks the given executions' rows until the transaction ends, and
    /// returns their heads and task rows as they are once the locks are held
    /// (PostgreSQL: `SELECT … FOR UPDATE` in id order, then the task rows in
    /// a later statement, whose snapshot is taken after the locks were
    /// granted; SQLite: nothing, the write transaction is already
    /// exclusive, and `None`: the caller reads the rows itself). Without
    /// `with_tasks`, only the heads are read (`tasks` is empty).
    async fn lock_executions(
        &self,
        txn: &DatabaseTransaction,
        ids: &[uuid::Uuid],
        with_tasks: bool,
    ) -> Result<Option<LockedRows>, DbErr>;

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

    /// Applies a step's writes in the transaction: every insert, and every
    /// guarded update, whose rows must all still be in the expected state
    /// (else [`TxError::Conflict`]). The default is
    /// [`writes::apply_portable`](crate::writes::apply_portable).
    ///
    /// `notes` are the notifications of the transaction; the default sends
    /// them with [`notify_in_txn`](Self::notify_in_txn) after the writes, a
    /// backend may send them with the writes.
    async fn apply_writes(
        &self,
        txn: &DatabaseTransaction,
        writes: &Writes,
        notes: &[Notification],
        now: Timestamp,
    ) -> Result<(), TxError>
    where
        Self: Sized,
    {
        crate::writes::apply_portable(self, txn, writes, now).await?;
        if !notes.is_empty() {
            self.notify_in_txn(txn, notes).await.map_err(|e| self.classify(e))?;
        }
        Ok(())
    }

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
