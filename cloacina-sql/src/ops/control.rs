//! Cancel, pause and resume.

use cloacina_core::ports::{Effects, StorageError};
use cloacina_core::step::Step;
use cloacina_core::{ExecutionId, Timestamp, WorkflowSet};

use crate::backend::{SqlBackend, TxError};
use crate::ops::snapshot::{self, Detail};
use crate::storage::SqlStorage;

/// Which control operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    Cancel(&'a str),
    Pause,
    Resume,
}

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_control(&self, id: ExecutionId, now: Timestamp, op: Op<'_>) -> Result<Effects, TxError> {
        let txn = self.begin().await?;
        let empty = WorkflowSet::new();
        let mut snaps = snapshot::load(&self.backend, &txn, &[id.0], &empty, Detail::Raw).await?;
        let snap = match snaps.get_mut(&id) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                return Err(TxError::Storage(std::mem::replace(
                    e,
                    StorageError::NotFound { what: "execution", id: id.to_string() },
                )));
            }
            None => return Err(TxError::Storage(StorageError::NotFound { what: "execution", id: id.to_string() })),
        };
        let mut step = Step::new(now, &empty, None);
        let res = match op {
            Op::Cancel(reason) => step.cancel(snap, reason),
            Op::Pause => step.pause(snap),
            Op::Resume => step.resume(snap),
        };
        res.map_err(StorageError::from)?;
        self.commit_step(txn, step.finish(), now).await
    }
}
