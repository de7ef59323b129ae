//! The recovery sweep: running tasks whose owner is gone go back to Ready
//! (or are abandoned), with their consequences.

use cloacina_core::ports::{RecoveryReport, RecoveryRequest};
use cloacina_core::step::Step;
use cloacina_core::{
    ExecutionId, FencingToken, OwnerStatus, RecoveryDecision, RunnerId, TaskExecutionId, TaskState, Timestamp,
    WorkflowSet,
};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};
use sea_orm::{ConnectionTrait, Order};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{runners, task_executions};
use crate::ops::snapshot::{self, Detail};
use crate::rows;
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_recover(
        &self,
        req: &RecoveryRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<RecoveryReport, TxError> {
        let err = |e| self.backend.classify(e);
        let mut report = RecoveryReport::default();
        let keys: Vec<String> = workflows.refs().iter().map(rows::workflow_key).collect();
        let txn = self.begin().await?;

        // Runners whose liveness expired are dead: their next heartbeat
        // fails, so they learn they lost their leases.
        let dead = Query::update()
            .table(runners::Entity)
            .value(runners::Column::Status, "dead")
            .and_where(Expr::col(runners::Column::Status).eq("alive"))
            .and_where(Expr::col(runners::Column::ExpiresAt).lt(now.0))
            .returning_col(runners::Column::Id)
            .to_owned();
        for r in txn.query_all(&dead).await.map_err(err)? {
            let id: String = r.try_get("", "id").map_err(err)?;
            if let Ok(id) = RunnerId::parse(&id) {
                report.dead_runners.push(id);
            }
        }

        // Running tasks without a live owner (same id, same incarnation,
        // alive, not expired), of every workflow: requeueing needs no
        // workflow code. A task due to be abandoned is taken only when its
        // workflow is known here (abandoning settles its execution), so rows
        // left for another runner never crowd out the others.
        let t = Alias::new("t");
        let r = Alias::new("r");
        let max = i32::try_from(req.policy.max_recoveries()).unwrap_or(i32::MAX);
        let mut takeable = Expr::col((t.clone(), task_executions::Column::RecoveryCount)).lt(max);
        if !keys.is_empty() {
            takeable = takeable.or(Expr::col((t.clone(), task_executions::Column::WorkflowKey)).is_in(keys));
        }
        let orphans = Query::select()
            .column((t.clone(), task_executions::Column::Id))
            .column((t.clone(), task_executions::Column::ExecutionId))
            .column((t.clone(), task_executions::Column::RecoveryCount))
            .column((t.clone(), task_executions::Column::FencingToken))
            .from_as(task_executions::Entity, t.clone())
            .join_as(
                JoinType::LeftJoin,
                runners::Entity,
                r.clone(),
                Expr::col((r.clone(), runners::Column::Id))
                    .equals((t.clone(), task_executions::Column::LeaseOwner))
                    .and(
                        Expr::col((r.clone(), runners::Column::Incarnation))
                            .equals((t.clone(), task_executions::Column::LeaseIncarnation)),
                    )
                    .and(Expr::col((r.clone(), runners::Column::Status)).eq("alive"))
                    .and(Expr::col((r.clone(), runners::Column::ExpiresAt)).gte(now.0)),
            )
            .and_where(Expr::col((t.clone(), task_executions::Column::State)).eq(TaskState::Running.as_str()))
            .and_where(takeable)
            .and_where(Expr::col((r.clone(), runners::Column::Id)).is_null())
            .order_by((t.clone(), task_executions::Column::ExecutionId), Order::Asc)
            .limit(req.limit as u64)
            .to_owned();
        let mut found: Vec<(ExecutionId, TaskExecutionId, u32, FencingToken)> = Vec::new();
        for row in txn.query_all(&orphans).await.map_err(err)? {
            let id: uuid::Uuid = row.try_get("", "id").map_err(err)?;
            let exec: uuid::Uuid = row.try_get("", "execution_id").map_err(err)?;
            let count: i32 = row.try_get("", "recovery_count").map_err(err)?;
            let token: i64 = row.try_get("", "fencing_token").map_err(err)?;
            found.push((
                ExecutionId(exec),
                TaskExecutionId(id),
                u32::try_from(count).unwrap_or(0),
                FencingToken(token),
            ));
        }
        if found.is_empty() {
            txn.commit().await.map_err(err)?;
            return Ok(report);
        }
        let mut ids: Vec<uuid::Uuid> = found.iter().map(|(e, ..)| e.0).collect();
        ids.dedup();
        // The orphans were found before any lock: each is recovered only if,
        // read again under its execution's lock, it still runs under the
        // claim that was found dead (compare-and-set on the fencing token).
        let mut snaps = snapshot::load(&self.backend, &txn, &ids, workflows, Detail::PlannedOrRaw).await?;
        let mut step = Step::new(now, workflows, None);
        for (exec, task, count, token) in found {
            // An execution whose rows cannot be read was logged by the
            // loader; the sweep goes on with the others.
            let Some(Ok(snap)) = snaps.get_mut(&exec) else { continue };
            let wf = workflows.get(&snap.execution.workflow);
            let decision = req.policy.decide(count, OwnerStatus::Gone, now);
            match step.recover(snap, wf, task, token, decision, &req.policy) {
                Some(RecoveryDecision::Requeue { recovery_count }) => report.requeued.push((task, recovery_count)),
                Some(RecoveryDecision::Abandon { .. }) => report.abandoned.push(task),
                _ => {}
            }
        }
        report.effects = self.commit_step(txn, step.finish(), now).await?;
        Ok(report)
    }
}
