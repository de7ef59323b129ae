//! Assembles claimed tasks' input contexts from stored outputs.

use std::collections::{HashMap, HashSet};

use cloacina_core::ports::{ClaimedTask, StorageError};
use cloacina_core::step::PendingClaim;
use cloacina_core::{Context, ExecutionId};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{task_outputs, workflow_executions};
use crate::rows;

pub(crate) async fn resolve<B: SqlBackend, C: ConnectionTrait>(
    b: &B,
    conn: &C,
    pending: Vec<PendingClaim>,
) -> Result<Vec<ClaimedTask>, TxError> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let err = |e| b.classify(e);
    let mut execs: HashSet<uuid::Uuid> = HashSet::new();
    let mut names: HashSet<String> = HashSet::new();
    for p in &pending {
        for m in p.missing() {
            execs.insert(p.task.execution_id.0);
            names.insert(m.to_owned());
        }
    }
    let mut loaded: HashMap<(ExecutionId, String), Context> = HashMap::new();
    // Unreadable stored contexts fail only the claims that need them.
    let mut corrupt: HashMap<(ExecutionId, String), String> = HashMap::new();
    if !execs.is_empty() {
        let found = task_outputs::Entity::find()
            .filter(task_outputs::Column::ExecutionId.is_in(execs.iter().copied()))
            .filter(task_outputs::Column::TaskName.is_in(names.iter().cloned()))
            .all(conn)
            .await
            .map_err(err)?;
        for o in found {
            match rows::output_context(&o) {
                Ok(ctx) => {
                    loaded.insert((ExecutionId(o.execution_id), o.task_name), ctx);
                }
                Err(e) => {
                    corrupt.insert((ExecutionId(o.execution_id), o.task_name), e.to_string());
                }
            }
        }
    }
    let need_input: Vec<uuid::Uuid> = pending
        .iter()
        .filter(|p| {
            p.needs_execution_input(&loaded)
                && !p.sources.iter().any(|s| corrupt.contains_key(&(p.task.execution_id, s.clone())))
        })
        .map(|p| p.task.execution_id.0)
        .collect();
    let mut inputs: HashMap<ExecutionId, Context> = HashMap::new();
    let mut corrupt_inputs: HashMap<ExecutionId, String> = HashMap::new();
    if !need_input.is_empty() {
        let rows: Vec<(uuid::Uuid, String)> = workflow_executions::Entity::find()
            .select_only()
            .columns([workflow_executions::Column::Id, workflow_executions::Column::Input])
            .filter(workflow_executions::Column::Id.is_in(need_input))
            .into_tuple()
            .all(conn)
            .await
            .map_err(err)?;
        for (id, text) in rows {
            match Context::from_json(&text) {
                Ok(ctx) => {
                    inputs.insert(ExecutionId(id), ctx);
                }
                Err(e) => {
                    let problem = StorageError::CorruptRow {
                        table: "workflow_executions",
                        id: id.to_string(),
                        column: "input",
                        problem: e.to_string(),
                    };
                    corrupt_inputs.insert(ExecutionId(id), problem.to_string());
                }
            }
        }
    }
    Ok(pending
        .into_iter()
        .map(|p| {
            let exec = p.task.execution_id;
            let problem = p
                .sources
                .iter()
                .find_map(|s| corrupt.get(&(exec, s.clone())).cloned())
                .or_else(|| p.needs_execution_input(&loaded).then(|| corrupt_inputs.get(&exec).cloned()).flatten());
            let mut task = p.resolve(&loaded, &inputs);
            if let Some(problem) = problem {
                tracing::error!(task = %task.id, execution = %exec, "cannot assemble the input of a claimed task: {problem}");
                task.input_error = Some(problem);
            }
            task
        })
        .collect())
}
