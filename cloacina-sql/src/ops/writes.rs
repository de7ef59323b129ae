//! Applies a step's [`Writes`]: inserts in multi-row statements, guarded
//! updates one row each. A guarded update that matches no row is a
//! conflict: the transaction is retried from the start.

use std::collections::HashMap;

use cloacina_core::ExecutionId;
use cloacina_core::Timestamp;
use cloacina_core::step::Writes;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{execution_events, task_executions, task_outputs, workflow_executions};
use crate::rows;

/// Rows per multi-row insert: well under both backends' parameter limits.
const CHUNK: usize = 500;

pub(crate) async fn apply<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    w: &Writes,
    now: Timestamp,
) -> Result<(), TxError> {
    let err = |e| b.classify(e);
    for chunk in w.execution_inserts.chunks(CHUNK) {
        workflow_executions::Entity::insert_many(chunk.iter().map(rows::execution_insert))
            .exec_without_returning(txn)
            .await
            .map_err(err)?;
    }
    if !w.task_inserts.is_empty() {
        let keys: HashMap<ExecutionId, String> =
            w.execution_inserts.iter().map(|e| (e.id, rows::workflow_key(&e.workflow))).collect();
        let mut position: HashMap<ExecutionId, i32> = HashMap::new();
        let mut models = Vec::with_capacity(w.task_inserts.len());
        for t in &w.task_inserts {
            let key = keys.get(&t.execution_id).ok_or_else(|| TxError::Conflict("task without execution".into()))?;
            let p = position.entry(t.execution_id).or_insert(0);
            models.push(rows::task_insert(t, key, *p, now));
            *p += 1;
        }
        for chunk in models.chunks(CHUNK) {
            task_executions::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await.map_err(err)?;
        }
    }
    for tw in &w.tasks {
        let res = task_executions::Entity::update_many()
            .set(rows::task_update(&tw.row, now))
            .filter(task_executions::Column::Id.eq(tw.row.id.0))
            .filter(task_executions::Column::State.eq(tw.expect_state.as_str()))
            .filter(task_executions::Column::FencingToken.eq(tw.expect_token.0))
            .exec(txn)
            .await
            .map_err(err)?;
        if res.rows_affected != 1 {
            return Err(TxError::Conflict(format!("task {} changed concurrently", tw.row.id)));
        }
    }
    for ew in &w.executions {
        let res = workflow_executions::Entity::update_many()
            .set(workflow_executions::ActiveModel {
                state: Set(ew.state.as_str().to_owned()),
                error: Set(ew.error.clone()),
                finished_at: Set(ew.finished_at.map(|t| t.0)),
                updated_at: Set(now.0),
                ..Default::default()
            })
            .filter(workflow_executions::Column::Id.eq(ew.id.0))
            .filter(workflow_executions::Column::State.eq(ew.expect_state.as_str()))
            .exec(txn)
            .await
            .map_err(err)?;
        if res.rows_affected != 1 {
            return Err(TxError::Conflict(format!("execution {} changed concurrently", ew.id)));
        }
    }
    for chunk in w.outputs.chunks(CHUNK) {
        task_outputs::Entity::insert_many(chunk.iter().map(|o| task_outputs::ActiveModel {
            task_execution_id: Set(o.task.0),
            execution_id: Set(o.execution.0),
            task_name: Set(o.name.clone()),
            context: Set(o.context.to_json()),
            created_at: Set(now.0),
        }))
        .exec_without_returning(txn)
        .await
        .map_err(err)?;
    }
    for chunk in w.events.chunks(CHUNK) {
        execution_events::Entity::insert_many(chunk.iter().map(rows::event_insert))
            .exec_without_returning(txn)
            .await
            .map_err(err)?;
    }
    Ok(())
}
