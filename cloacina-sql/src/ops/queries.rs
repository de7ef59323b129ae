//! Reads outside write transactions.

use std::collections::HashMap;

use cloacina_core::ports::{ExecutionEvent, ExecutionFilter, ExecutionRecord, StorageError, TaskRecord};
use cloacina_core::{Context, ExecutionId, WorkflowState};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{execution_events, task_executions, task_outputs, workflow_executions};
use crate::rows;
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, TxError> {
        let m = workflow_executions::Entity::find_by_id(id.0)
            .one(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        Ok(m.map(rows::execution_from_model).transpose()?)
    }

    pub(crate) async fn try_execution_states(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<(ExecutionId, WorkflowState)>, TxError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<(uuid::Uuid, String)> = workflow_executions::Entity::find()
            .select_only()
            .columns([workflow_executions::Column::Id, workflow_executions::Column::State])
            .filter(workflow_executions::Column::Id.is_in(ids.iter().map(|i| i.0)))
            .into_tuple()
            .all(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        found
            .into_iter()
            .map(|(id, s)| {
                let state = s.parse::<WorkflowState>().map_err(|e| StorageError::CorruptRow {
                    table: "workflow_executions",
                    id: id.to_string(),
                    column: "state",
                    problem: e.to_string(),
                })?;
                Ok((ExecutionId(id), state))
            })
            .collect()
    }

    pub(crate) async fn try_unreadable(
        &self,
        ids: &[ExecutionId],
    ) -> Result<Vec<(ExecutionId, StorageError)>, TxError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e| self.backend.classify(e);
        let reader = self.backend.reader();
        let heads =
            crate::ops::snapshot::load_heads(&self.backend, reader, &ids.iter().map(|i| i.0).collect::<Vec<_>>())
                .await?;
        let tasks = task_executions::Entity::find()
            .filter(task_executions::Column::ExecutionId.is_in(ids.iter().map(|i| i.0)))
            .all(reader)
            .await
            .map_err(err)?;
        let mut bad: HashMap<uuid::Uuid, StorageError> = HashMap::new();
        for h in &heads {
            if let Err(e) = rows::execution_record(h, None) {
                bad.insert(h.id, e);
            }
        }
        for m in &tasks {
            if let Err(e) = rows::task_record(m) {
                bad.entry(m.execution_id).or_insert(e);
            }
        }
        let mut out: Vec<(ExecutionId, StorageError)> = bad.into_iter().map(|(id, e)| (ExecutionId(id), e)).collect();
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    pub(crate) async fn try_tasks(&self, id: ExecutionId) -> Result<Vec<TaskRecord>, TxError> {
        let found = task_executions::Entity::find()
            .filter(task_executions::Column::ExecutionId.eq(id.0))
            .order_by_asc(task_executions::Column::Position)
            .all(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        Ok(found.iter().map(rows::task_record).collect::<Result<_, _>>()?)
    }

    pub(crate) async fn try_outputs(
        &self,
        id: ExecutionId,
        names: &[String],
    ) -> Result<HashMap<String, Context>, TxError> {
        let mut q = task_outputs::Entity::find().filter(task_outputs::Column::ExecutionId.eq(id.0));
        if !names.is_empty() {
            q = q.filter(task_outputs::Column::TaskName.is_in(names.iter().cloned()));
        }
        let found = q.all(self.backend.reader()).await.map_err(|e| self.backend.classify(e))?;
        let mut out = HashMap::new();
        for o in found {
            let ctx = rows::output_context(&o)?;
            out.insert(o.task_name, ctx);
        }
        Ok(out)
    }

    pub(crate) async fn try_list(&self, f: &ExecutionFilter) -> Result<Vec<ExecutionRecord>, TxError> {
        let mut q = workflow_executions::Entity::find();
        if let Some(w) = &f.workflow {
            q = q.filter(workflow_executions::Column::WorkflowName.eq(w.as_str()));
        }
        if !f.states.is_empty() {
            q = q.filter(workflow_executions::Column::State.is_in(f.states.iter().map(|s| s.as_str())));
        }
        if let Some(t) = f.created_after {
            q = q.filter(workflow_executions::Column::CreatedAt.gte(t.0));
        }
        if let Some(v) = &f.version {
            q = q.filter(
                Condition::any()
                    .add(workflow_executions::Column::WorkflowVersion.eq(v.as_str()))
                    .add(workflow_executions::Column::WorkflowLabel.eq(v.as_str())),
            );
        }
        if f.stranded {
            let groups = self.try_stranded(cloacina_core::Timestamp::now()).await?;
            if groups.is_empty() {
                return Ok(Vec::new());
            }
            let mut any = Condition::any();
            for g in &groups {
                any = any.add(
                    Condition::all()
                        .add(workflow_executions::Column::WorkflowName.eq(g.workflow.name.as_str()))
                        .add(workflow_executions::Column::WorkflowVersion.eq(g.workflow.version.as_str())),
                );
            }
            q = q.filter(any).filter(
                workflow_executions::Column::State.is_in(crate::ops::versions::UNFINISHED.iter().map(|s| s.as_str())),
            );
        }
        let found = q
            .order_by_desc(workflow_executions::Column::CreatedAt)
            .order_by_desc(workflow_executions::Column::Id)
            .limit(f.limit.unwrap_or(100) as u64)
            .all(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        // One unreadable row never breaks listing the others: it is left out
        // and named in the log (reading it by id names it to the caller).
        Ok(found
            .into_iter()
            .filter_map(|m| match rows::execution_from_model(m) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!("listing executions: leaving out a row that cannot be read: {e}");
                    None
                }
            })
            .collect())
    }

    pub(crate) async fn try_events(&self, id: ExecutionId) -> Result<Vec<ExecutionEvent>, TxError> {
        let found = execution_events::Entity::find()
            .filter(execution_events::Column::ExecutionId.eq(id.0))
            .order_by_asc(execution_events::Column::Id)
            .all(self.backend.reader())
            .await
            .map_err(|e| self.backend.classify(e))?;
        Ok(found.iter().map(rows::event_record).collect::<Result<_, _>>()?)
    }
}
