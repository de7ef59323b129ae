//! Loads [`ExecutionSnapshot`]s inside a transaction.

use std::collections::{BTreeMap, HashMap};

use cloacina_core::ports::{StorageError, TaskRecord};
use cloacina_core::step::ExecutionSnapshot;
use cloacina_core::{ExecutionId, WorkflowSet};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::backend::{SqlBackend, TxError};
use crate::entities::{task_executions, task_outputs, workflow_executions};
use crate::rows::{self, ExecutionHead};

/// What a snapshot needs beyond the task rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Order rows by the workflow; load input and outputs when its trigger
    /// rules read the context.
    Planned,
    /// Rows in stored order, no workflow needed (cancel, pause, release).
    Raw,
    /// `Planned` for executions whose workflow is known, `Raw` for the
    /// others (recovery: requeueing needs no workflow code).
    PlannedOrRaw,
}

pub(crate) async fn load_heads<B: SqlBackend, C: ConnectionTrait>(
    b: &B,
    conn: &C,
    ids: &[uuid::Uuid],
) -> Result<Vec<ExecutionHead>, TxError> {
    use workflow_executions::Column as E;
    workflow_executions::Entity::find()
        .select_only()
        .columns([
            E::Id,
            E::WorkflowName,
            E::WorkflowVersion,
            E::State,
            E::Error,
            E::Origin,
            E::CreatedAt,
            E::UpdatedAt,
            E::FinishedAt,
            E::WorkflowLabel,
            E::Unfinished,
        ])
        .filter(E::Id.is_in(ids.iter().copied()))
        .into_model::<ExecutionHead>()
        .all(conn)
        .await
        .map_err(|e| b.classify(e))
}

/// Locks the given executions (see [`SqlBackend::lock_executions`]) and
/// returns their heads, and their task rows when the lock brought them.
pub(crate) async fn lock_rows<B: SqlBackend>(
    b: &B,
    txn: &sea_orm::DatabaseTransaction,
    ids: &[uuid::Uuid],
) -> Result<(Vec<ExecutionHead>, Option<Vec<task_executions::Model>>), TxError> {
    if ids.is_empty() {
        return Ok((Vec::new(), Some(Vec::new())));
    }
    match b.lock_executions(txn, ids, true).await.map_err(|e| b.classify(e))? {
        Some(locked) => Ok((locked.heads, Some(locked.tasks))),
        None => Ok((load_heads(b, txn, ids).await?, None)),
    }
}

/// A snapshot, or why its rows could not be read. One corrupted execution
/// never hides the others.
pub(crate) type Loaded = Result<ExecutionSnapshot, StorageError>;

/// Locks the given executions and loads snapshots of those that exist
/// (and, for `Planned`, whose workflow is in `workflows`). An execution
/// whose rows cannot be read gets its [`StorageError::CorruptRow`].
pub(crate) async fn load<B: SqlBackend>(
    b: &B,
    conn: &sea_orm::DatabaseTransaction,
    ids: &[uuid::Uuid],
    workflows: &WorkflowSet,
    detail: Detail,
) -> Result<BTreeMap<ExecutionId, Loaded>, TxError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (heads, tasks) = lock_rows(b, conn, ids).await?;
    load_with_heads(b, conn, heads, tasks, workflows, detail).await
}

/// [`load`], for executions already locked: their heads, and their task
/// rows if the lock brought them (else they are read here, after the lock).
pub(crate) async fn load_with_heads<B: SqlBackend>(
    b: &B,
    conn: &sea_orm::DatabaseTransaction,
    heads: Vec<ExecutionHead>,
    tasks: Option<Vec<task_executions::Model>>,
    workflows: &WorkflowSet,
    detail: Detail,
) -> Result<BTreeMap<ExecutionId, Loaded>, TxError> {
    let err = |e| b.classify(e);
    let ids: Vec<uuid::Uuid> = heads.iter().map(|h| h.id).collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let task_rows = match tasks {
        Some(t) => t,
        None => task_executions::Entity::find()
            .filter(task_executions::Column::ExecutionId.is_in(ids.iter().copied()))
            .order_by_asc(task_executions::Column::ExecutionId)
            .order_by_asc(task_executions::Column::Position)
            .all(conn)
            .await
            .map_err(err)?,
    };
    let mut by_exec: HashMap<uuid::Uuid, Result<Vec<TaskRecord>, StorageError>> = HashMap::new();
    for m in &task_rows {
        let entry = by_exec.entry(m.execution_id).or_insert_with(|| Ok(Vec::new()));
        if let Ok(list) = entry {
            match rows::task_record(m) {
                Ok(t) => list.push(t),
                Err(e) => *entry = Err(e),
            }
        }
    }
    let mut context_needed = Vec::new();
    let mut out: BTreeMap<ExecutionId, Loaded> = BTreeMap::new();
    for h in heads {
        let snap = (|| {
            let exec = rows::execution_record(&h, None)?;
            let tasks = by_exec.remove(&h.id).unwrap_or_else(|| Ok(Vec::new()))?;
            Ok(match detail {
                Detail::Raw => Some(ExecutionSnapshot::unordered(exec, tasks)),
                Detail::Planned | Detail::PlannedOrRaw => match workflows.get(&exec.workflow) {
                    None if detail == Detail::PlannedOrRaw => {
                        Some(ExecutionSnapshot { execution: exec, input_loaded: false, tasks, outputs: HashMap::new() })
                    }
                    None => None,
                    Some(wf) => {
                        if wf.needs_context() {
                            context_needed.push(h.id);
                        }
                        Some(ExecutionSnapshot::new(wf, exec, false, tasks).map_err(rows::snapshot_error)?)
                    }
                },
            })
        })();
        match snap {
            Ok(Some(s)) => {
                out.insert(ExecutionId(h.id), Ok(s));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(execution = %h.id, "cannot read execution rows: {e}");
                out.insert(ExecutionId(h.id), Err(e));
            }
        }
    }
    if !context_needed.is_empty() {
        let inputs: Vec<(uuid::Uuid, String)> = workflow_executions::Entity::find()
            .select_only()
            .columns([workflow_executions::Column::Id, workflow_executions::Column::Input])
            .filter(workflow_executions::Column::Id.is_in(context_needed.iter().copied()))
            .into_tuple()
            .all(conn)
            .await
            .map_err(err)?;
        for (id, text) in inputs {
            let Some(slot) = out.get_mut(&ExecutionId(id)) else { continue };
            let Ok(s) = slot else { continue };
            match cloacina_core::Context::from_json(&text) {
                Ok(input) => {
                    s.execution.input = input;
                    s.input_loaded = true;
                }
                Err(e) => {
                    *slot = Err(StorageError::CorruptRow {
                        table: "workflow_executions",
                        id: id.to_string(),
                        column: "input",
                        problem: e.to_string(),
                    });
                }
            }
        }
        let outputs = task_outputs::Entity::find()
            .filter(task_outputs::Column::ExecutionId.is_in(context_needed.iter().copied()))
            .all(conn)
            .await
            .map_err(err)?;
        for o in outputs {
            let Some(slot) = out.get_mut(&ExecutionId(o.execution_id)) else { continue };
            let Ok(s) = slot else { continue };
            let Some(i) = workflows.get(&s.execution.workflow).and_then(|wf| wf.index_of(&o.task_name)) else {
                continue;
            };
            match rows::output_context(&o) {
                Ok(c) => {
                    s.outputs.insert(i, c);
                }
                Err(e) => *slot = Err(e),
            }
        }
    }
    Ok(out)
}
