//! Applies a step's [`Writes`]: inserts in multi-row statements, updates
//! in bulk `UPDATE … FROM (VALUES …)` statements guarded by each row's
//! expected state (and token). All statements go to the backend as one batch
//! ([`SqlBackend::execute_batch`]); the rows they touch must add up to the
//! rows expected, otherwise some guarded row changed concurrently: a
//! conflict, and the transaction is retried from the start.

use std::collections::HashMap;

use cloacina_core::ExecutionId;
use cloacina_core::Timestamp;
use cloacina_core::step::{CounterChange, ExecutionWrite, TaskWrite, WaitingChange, Writes};
use sea_orm::ActiveValue::Set;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryTrait, Statement, Value};

use crate::backend::{SqlBackend, TxError};
use crate::claim::Params;
use crate::columns::{self, SqlType as Ty, TASK_COLUMNS, TaskRow};

use crate::entities::{execution_events, task_outputs, workflow_executions};
use crate::rows;

/// Rows per multi-row insert: well under both backends' parameter limits.
const CHUNK: usize = 500;

/// Rows per bulk update (each row adds 14 parameters).
const UPDATE_CHUNK: usize = 100;

/// Task rows per insert (each adds 17 parameters).
const TASK_INSERT_CHUNK: usize = 200;

/// Builds a `WITH v(cols) AS (VALUES …) UPDATE … FROM v` statement: one
/// statement for any number of rows, linear to prepare, on both backends
/// (SQLite ≥ 3.33 and PostgreSQL). PostgreSQL needs the parameters typed;
/// SQLite takes values as bound (uuids are blobs, casting would convert).
struct BulkUpdate {
    backend: DbBackend,
    rows: Vec<String>,
    values: Vec<Value>,
}

impl BulkUpdate {
    fn new(backend: DbBackend) -> Self {
        Self { backend, rows: Vec::new(), values: Vec::new() }
    }

    fn row(&mut self, cells: Vec<(Value, Ty)>) {
        let mut parts = Vec::with_capacity(cells.len());
        for (v, ty) in cells {
            self.values.push(v);
            let n = self.values.len();
            parts.push(match self.backend {
                DbBackend::Postgres => {
                    format!("CAST(${n} AS {})", ty.pg())
                }
                _ => "?".to_owned(),
            });
        }
        self.rows.push(format!("({})", parts.join(", ")));
    }

    /// The statement; `{now}` in `update` (if it is there) becomes `now`.
    fn finish(mut self, columns: &str, update: &str, now: i64) -> Statement {
        let sql = format!("WITH v({columns}) AS (VALUES {}) {update}", self.rows.join(", "));
        if !sql.contains("{now}") {
            return Statement::from_sql_and_values(self.backend, sql, self.values);
        }
        let ph = match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len() + 1),
            _ => "?".to_owned(),
        };
        self.values.push(now.into());
        Statement::from_sql_and_values(self.backend, sql.replace("{now}", &ph), self.values)
    }
}

/// One guarded statement for a chunk of task writes: every row must still
/// have the state and token the write expects. Its columns are
/// [`columns::TASK_COLUMNS`]' mutable ones.
fn update_tasks(backend: DbBackend, chunk: &[TaskWrite], now: Timestamp) -> Statement {
    let mut b = BulkUpdate::new(backend);
    for w in chunk {
        let row = TaskRow { record: &w.row, key: "", position: 0, waiting_on: None };
        let mut cells: Vec<(Value, Ty)> = vec![(w.row.id.0.into(), Ty::Uuid)];
        cells.extend(columns::mutable().map(|c| ((c.cell)(&row).value(), c.ty)));
        cells.push((w.expect_state.as_str().into(), Ty::Text));
        cells.push((w.expect_token.0.into(), Ty::BigInt));
        cells.push((w.waiting_delta.into(), Ty::Int));
        b.row(cells);
    }
    let names: Vec<&str> = columns::mutable().map(|c| c.name).collect();
    b.finish(
        &format!("id, {}, expect_state, expect_token, waiting_delta", names.join(", ")),
        &format!(
            "UPDATE task_executions SET {}, waiting_on = task_executions.waiting_on + v.waiting_delta, \
             updated_at = {{now}} FROM v WHERE task_executions.id = v.id \
             AND task_executions.state = v.expect_state AND task_executions.fencing_token = v.expect_token",
            columns::set_from("v")
        ),
        now.0,
    )
}

/// One multi-row insert of new task rows, every column of
/// [`columns::TASK_COLUMNS`] and `updated_at`.
fn insert_tasks(backend: DbBackend, rows: &[TaskRow<'_>], now: Timestamp) -> Statement {
    let mut p = Params::new(backend);
    let tuples: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = TASK_COLUMNS.iter().map(|c| p.bind((c.cell)(r).value())).collect();
            cells.push(p.bind(now.0));
            format!("({})", cells.join(", "))
        })
        .collect();
    let names: Vec<&str> = TASK_COLUMNS.iter().map(|c| c.name).collect();
    let sql = format!("INSERT INTO task_executions ({}, updated_at) VALUES {}", names.join(", "), tuples.join(", "));
    Statement::from_sql_and_values(backend, sql, p.into_values())
}

/// One guarded statement for a chunk of execution writes.
fn update_executions(backend: DbBackend, chunk: &[ExecutionWrite], now: Timestamp) -> Statement {
    let mut b = BulkUpdate::new(backend);
    for w in chunk {
        b.row(vec![
            (w.id.0.into(), Ty::Uuid),
            (w.state.as_str().into(), Ty::Text),
            (rows::storable(w.error.as_ref()).into(), Ty::Text),
            (w.finished_at.map(|t| t.0).into(), Ty::BigInt),
            (w.expect_state.as_str().into(), Ty::Text),
            (forget(w.unfinished).into(), Ty::Int),
            (delta(w.unfinished).into(), Ty::Int),
        ]);
    }
    b.finish(
        "id, state, error, finished_at, expect_state, forget, delta",
        &format!(
            "UPDATE workflow_executions SET state = v.state, error = v.error, finished_at = v.finished_at, \
             unfinished = {UNFINISHED}, updated_at = {{now}} FROM v \
             WHERE workflow_executions.id = v.id AND workflow_executions.state = v.expect_state"
        ),
        now.0,
    )
}

/// The new value of `workflow_executions.unfinished` from `v.forget` and
/// `v.delta` (NULL stays NULL: unknown).
const UNFINISHED: &str = "CASE WHEN v.forget = 1 THEN NULL ELSE workflow_executions.unfinished + v.delta END";

/// 1 when the change forgets the counter.
pub fn forget(c: CounterChange) -> i32 {
    i32::from(c == CounterChange::Forget)
}

/// The amount a change adds (0 for a forget).
pub fn delta(c: CounterChange) -> i32 {
    match c {
        CounterChange::Add(n) => n,
        CounterChange::Forget => 0,
    }
}

/// One statement for counter changes of task rows the step does not
/// otherwise update, by execution and position.
fn update_waiting(backend: DbBackend, chunk: &[WaitingChange], now: Timestamp) -> Statement {
    let mut b = BulkUpdate::new(backend);
    for c in chunk {
        b.row(vec![
            (c.execution.0.into(), Ty::Uuid),
            (i32::try_from(c.position).unwrap_or(i32::MAX).into(), Ty::Int),
            (c.delta.into(), Ty::Int),
        ]);
    }
    b.finish(
        "execution_id, position, delta",
        "UPDATE task_executions SET waiting_on = task_executions.waiting_on + v.delta FROM v \
         WHERE task_executions.execution_id = v.execution_id AND task_executions.position = v.position",
        now.0,
    )
}

/// One statement for counter changes of executions the step does not
/// otherwise update.
fn update_unfinished(backend: DbBackend, chunk: &[(ExecutionId, CounterChange)], now: Timestamp) -> Statement {
    let mut b = BulkUpdate::new(backend);
    for (id, c) in chunk {
        b.row(vec![(id.0.into(), Ty::Uuid), (forget(*c).into(), Ty::Int), (delta(*c).into(), Ty::Int)]);
    }
    b.finish(
        "id, forget, delta",
        &format!(
            "UPDATE workflow_executions SET unfinished = {UNFINISHED} FROM v \
             WHERE workflow_executions.id = v.id"
        ),
        now.0,
    )
}

/// The counter a new task row starts with, if the step knew it.
pub fn initial_waiting(w: &Writes, execution: ExecutionId, position: i32) -> Option<i32> {
    let c = w.new_counters.get(&execution)?;
    let n = *c.waiting.get(usize::try_from(position).ok()?)?;
    i32::try_from(n).ok()
}

/// The counter a new execution starts with, if the step knew it.
pub fn initial_unfinished(w: &Writes, execution: ExecutionId) -> Option<i32> {
    w.new_counters.get(&execution).and_then(|c| i32::try_from(c.unfinished).ok())
}

/// For each new task row, in order: its workflow key and its position in
/// its execution (the workflow's topological order).
pub fn task_placement(w: &Writes) -> Result<Vec<(String, i32)>, TxError> {
    let keys: HashMap<ExecutionId, String> =
        w.execution_inserts.iter().map(|e| (e.id, rows::workflow_key(&e.workflow))).collect();
    let mut position: HashMap<ExecutionId, i32> = HashMap::new();
    let mut out = Vec::with_capacity(w.task_inserts.len());
    for t in &w.task_inserts {
        let key = keys.get(&t.execution_id).ok_or_else(|| TxError::Conflict("task without execution".into()))?;
        let p = position.entry(t.execution_id).or_insert(0);
        out.push((key.clone(), *p));
        *p += 1;
    }
    Ok(out)
}

/// The statements of a step's writes, and how many rows they must touch.
fn statements(txn: &DatabaseTransaction, w: &Writes, now: Timestamp) -> Result<(Vec<Statement>, u64), TxError> {
    let backend = txn.get_database_backend();
    let mut out = Vec::new();
    let mut expected = 0u64;
    for chunk in w.execution_inserts.chunks(CHUNK) {
        let models = chunk.iter().map(|e| rows::execution_insert(e, initial_unfinished(w, e.id)));
        out.push(workflow_executions::Entity::insert_many(models).build(backend));
        expected += chunk.len() as u64;
    }
    if !w.task_inserts.is_empty() {
        let placement = task_placement(w)?;
        let rows: Vec<TaskRow<'_>> = w
            .task_inserts
            .iter()
            .zip(&placement)
            .map(|(t, (key, pos))| TaskRow {
                record: t,
                key,
                position: *pos,
                waiting_on: initial_waiting(w, t.execution_id, *pos),
            })
            .collect();
        for chunk in rows.chunks(TASK_INSERT_CHUNK) {
            out.push(insert_tasks(backend, chunk, now));
            expected += chunk.len() as u64;
        }
    }
    for chunk in w.tasks.chunks(UPDATE_CHUNK) {
        out.push(update_tasks(backend, chunk, now));
        expected += chunk.len() as u64;
    }
    for chunk in w.executions.chunks(UPDATE_CHUNK) {
        out.push(update_executions(backend, chunk, now));
        expected += chunk.len() as u64;
    }
    for chunk in w.waiting.chunks(UPDATE_CHUNK) {
        out.push(update_waiting(backend, chunk, now));
        expected += chunk.len() as u64;
    }
    for chunk in w.unfinished.chunks(UPDATE_CHUNK) {
        out.push(update_unfinished(backend, chunk, now));
        expected += chunk.len() as u64;
    }
    for chunk in w.outputs.chunks(CHUNK) {
        let models = chunk.iter().map(|o| task_outputs::ActiveModel {
            task_execution_id: Set(o.task.0),
            execution_id: Set(o.execution.0),
            task_name: Set(o.name.clone()),
            context: Set(o.context.to_json()),
            created_at: Set(now.0),
        });
        out.push(task_outputs::Entity::insert_many(models).build(backend));
        expected += chunk.len() as u64;
    }
    for chunk in w.events.chunks(CHUNK) {
        out.push(execution_events::Entity::insert_many(chunk.iter().map(rows::event_insert)).build(backend));
        expected += chunk.len() as u64;
    }
    Ok((out, expected))
}

/// The portable way to apply writes: sea-query statements, sent through
/// [`SqlBackend::execute_batch`]. The default of
/// [`SqlBackend::apply_writes`].
pub async fn apply_portable<B: SqlBackend>(
    b: &B,
    txn: &DatabaseTransaction,
    w: &Writes,
    now: Timestamp,
) -> Result<(), TxError> {
    let (stmts, expected) = statements(txn, w, now)?;
    if stmts.is_empty() {
        return Ok(());
    }
    let touched = b.execute_batch(txn, stmts).await.map_err(|e| b.classify(e))?;
    if touched != expected {
        return Err(TxError::Conflict(format!(
            "{} of {expected} rows did not match their expected state: changed concurrently",
            expected.saturating_sub(touched)
        )));
    }
    Ok(())
}
