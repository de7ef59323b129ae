//! Claiming ready tasks: the backend's claim statement, then the shared
//! consequences (events, executions started, inputs assembled).

use std::collections::HashMap;

use cloacina_core::ports::{ClaimRequest, Effects};
use cloacina_core::step::{PendingClaim, Step};
use cloacina_core::{ExecutionId, Timestamp, Workflow, WorkflowSet, WorkflowState};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, ConnectionTrait};

use crate::backend::{SqlBackend, TxError};
use crate::entities::workflow_executions;
use crate::ops::writes;
use crate::rows;
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_claim(
        &self,
        req: &ClaimRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<Effects, TxError> {
        if req.limit == 0 || workflows.is_empty() {
            return Ok(Effects::default());
        }
        let by_key: HashMap<String, &Workflow> =
            workflows.iter().map(|w| (rows::workflow_key(&w.reference()), w)).collect();
        let keys: Vec<String> = by_key.keys().cloned().collect();
        let txn = self.begin().await?;
        let claimed = self.backend.claim_rows(&txn, req, &keys, now).await.map_err(|e| self.backend.classify(e))?;
        if claimed.is_empty() {
            txn.commit().await.map_err(|e| self.backend.classify(e))?;
            return Ok(Effects::default());
        }
        let mut step = Step::new(now, workflows, None);
        let mut pending = Vec::with_capacity(claimed.len());
        let mut execs: Vec<uuid::Uuid> = Vec::new();
        for m in &claimed {
            let row = rows::task_record(m)?;
            step.claimed(&row);
            execs.push(m.execution_id);
            if let Some(wf) = by_key.get(&m.workflow_key) {
                pending.push(PendingClaim::for_claimed_row(wf, &row));
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
        let started = txn.query_all(&stmt).await.map_err(|e| self.backend.classify(e))?;
        for r in started {
            let id: uuid::Uuid = r.try_get("", "id").map_err(|e| self.backend.classify(e))?;
            step.execution_started(ExecutionId(id));
        }
        let out = step.finish();
        writes::apply(&self.backend, &txn, &out.writes, now).await?;
        let tasks = crate::ops::inputs::resolve(&self.backend, &txn, pending).await?;
        txn.commit().await.map_err(|e| self.backend.classify(e))?;
        Ok(Effects { events: out.writes.events, claimed: tasks, ..Effects::default() })
    }
}
