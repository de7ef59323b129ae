//! A commit: creations, reports and claims of one runner, in one
//! transaction.

use std::collections::HashMap;

use cloacina_core::ports::{ClaimRequest, Commit, CommitOutcome, ReportRejection};
use cloacina_core::step::{Step, StepOutput};
use cloacina_core::{ExecutionId, Timestamp, Workflow, WorkflowSet, WorkflowState};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction};

use crate::backend::{SqlBackend, TxError};
use crate::entities::workflow_executions;
use crate::ops::snapshot::{self, Detail};
use crate::ops::writes;
use crate::rows;
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_commit(
        &self,
        batch: Commit,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<CommitOutcome, TxError> {
        let mut ids: Vec<uuid::Uuid> = batch.reports.iter().map(|r| r.execution.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let txn = self.begin().await?;
        let mut step = Step::new(now, workflows, batch.claim.as_ref());
        for n in batch.creations {
            step.create(n);
        }
        let mut results = Vec::with_capacity(batch.reports.len());
        if !batch.reports.is_empty() {
            self.backend.lock_executions(&txn, &ids).await.map_err(|e| self.backend.classify(e))?;
            let mut snaps = snapshot::load(&self.backend, &txn, &ids, workflows, Detail::Planned).await?;
            for r in batch.reports {
                results.push(match snaps.get_mut(&r.execution) {
                    Some(snap) => step.report(snap, r),
                    None => Err(ReportRejection::NotFound),
                });
            }
            for snap in snaps.values_mut() {
                if let Some(wf) = workflows.get(&snap.execution.workflow) {
                    step.settle(snap, wf);
                }
            }
        }
        let remaining = if batch.claim_waiting { step.remaining_claims() } else { None };
        let mut out = step.finish();
        writes::apply(&self.backend, &txn, &out.writes, now).await?;
        if let Some(req) = remaining {
            let extra = self.claim_waiting(&txn, &req, workflows, now).await?;
            writes::apply(&self.backend, &txn, &extra.writes, now).await?;
            out.writes.events.extend(extra.writes.events);
            out.pending_claims.extend(extra.pending_claims);
        }
        let effects = self.finish_commit(txn, out).await?;
        Ok(CommitOutcome { results, effects })
    }

    /// Claims stored ready tasks with the backend's claim statement, and
    /// records the consequences (events, executions started).
    async fn claim_waiting(
        &self,
        txn: &DatabaseTransaction,
        req: &ClaimRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<StepOutput, TxError> {
        let by_key: HashMap<String, &Workflow> =
            workflows.iter().map(|w| (rows::workflow_key(&w.reference()), w)).collect();
        let keys: Vec<String> = by_key.keys().cloned().collect();
        let mut step = Step::new(now, workflows, Some(req));
        if keys.is_empty() {
            return Ok(step.finish());
        }
        let claimed = self.backend.claim_rows(txn, req, &keys, now).await.map_err(|e| self.backend.classify(e))?;
        if claimed.is_empty() {
            return Ok(step.finish());
        }
        let mut execs: Vec<uuid::Uuid> = Vec::with_capacity(claimed.len());
        for m in &claimed {
            let row = rows::task_record(m)?;
            execs.push(m.execution_id);
            if let Some(wf) = by_key.get(&m.workflow_key) {
                step.claimed_rows(wf, &row);
            }
        }
        execs.sort_unstable();
        execs.dedup();
        let stmt = Query::update()
            .table(workflow_executions::Entity)
            .values([
                (workflow_executions::Column::State, WorkflowState::Running.as_str().into()),
                (workflow_executions::Column::UpdatedAt, now.0.into()),
            ])
            .and_where(workflow_executions::Column::Id.is_in(execs))
            .and_where(workflow_executions::Column::State.eq(WorkflowState::Pending.as_str()))
            .returning_col(workflow_executions::Column::Id)
            .to_owned();
        for r in txn.query_all(&stmt).await.map_err(|e| self.backend.classify(e))? {
            let id: uuid::Uuid = r.try_get("", "id").map_err(|e| self.backend.classify(e))?;
            step.execution_started(ExecutionId(id));
        }
        Ok(step.finish())
    }
}
