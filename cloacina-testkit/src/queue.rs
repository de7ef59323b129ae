//! Test conveniences over the write path: one call per kind of write,
//! each a [`TaskQueue::commit`] of one part. (The runner batches all of them
//! into one commit per round; tests and benchmarks often want one at a
//! time.)

use async_trait::async_trait;
use cloacina_core::ports::{
    ClaimRequest, Commit, CommitOutcome, Effects, NewExecution, StorageResult, TaskQueue, TaskReport,
};
use cloacina_core::{Timestamp, WorkflowSet};

/// [`TaskQueue::commit`] of one kind of write. Implemented for every
/// [`TaskQueue`].
#[async_trait]
pub trait QueueExt: TaskQueue {
    /// Creates executions with all their task rows, atomically; with
    /// `claim`, new ready tasks may be claimed for the caller.
    async fn create_executions(
        &self,
        batch: Vec<NewExecution>,
        claim: Option<&ClaimRequest>,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<Effects> {
        let c = Commit { creations: batch, claim: claim.cloned(), ..Commit::default() };
        Ok(self.commit(c, workflows, now).await?.effects)
    }

    /// Claims up to `req.limit` ready tasks.
    async fn claim(&self, req: &ClaimRequest, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<Effects> {
        let c = Commit { claim: Some(req.clone()), claim_waiting: true, ..Commit::default() };
        Ok(self.commit(c, workflows, now).await?.effects)
    }

    /// Applies reports; with `claim`, tasks they make ready may be claimed
    /// for the caller.
    async fn report(
        &self,
        reports: Vec<TaskReport>,
        claim: Option<&ClaimRequest>,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<CommitOutcome> {
        self.commit(Commit { reports, claim: claim.cloned(), ..Commit::default() }, workflows, now).await
    }
}

impl<T: TaskQueue + ?Sized> QueueExt for T {}
