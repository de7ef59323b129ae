//! Creating executions with all their task rows, in one transaction.

use cloacina_core::Timestamp;
use cloacina_core::WorkflowSet;
use cloacina_core::ports::{ClaimRequest, Effects, NewExecution};
use cloacina_core::step::Step;

use crate::backend::{SqlBackend, TxError};
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_create(
        &self,
        batch: Vec<NewExecution>,
        claim: Option<&ClaimRequest>,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<Effects, TxError> {
        let mut step = Step::new(now, workflows, claim);
        for n in batch {
            step.create(n);
        }
        let out = step.finish();
        let txn = self.begin().await?;
        self.commit_step(txn, out, now).await
    }
}
