//! PostgreSQL's way to apply a step's writes: one statement, whose text
//! never changes, for all of them.
//!
//! Each kind of row travels as one JSON array parameter, unpacked by
//! `json_to_recordset`; every insert and guarded update is a
//! data-modifying CTE of the same statement, and the final `SELECT` counts
//! what each touched; the transaction's notifications go with it. One
//! round trip instead of one per table, and one prepared statement reused
//! for every batch size.

use cloacina_core::Timestamp;
use cloacina_core::ports::Notification;
use cloacina_core::step::Writes;
use std::sync::LazyLock;

use cloacina_sql::columns::{self, TASK_COLUMNS, TaskRow};
use cloacina_sql::rows::{storable, storable_text};
use cloacina_sql::writes::{delta, forget, initial_unfinished, initial_waiting, task_placement};
use cloacina_sql::{SqlBackend, TxError};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use serde_json::{Value as J, json};

use crate::PgBackend;

/// The statement, built once: the task parts derived from
/// [`TASK_COLUMNS`], so they cannot drift from the portable path.
static SQL: LazyLock<String> = LazyLock::new(|| {
    let all: Vec<&str> = TASK_COLUMNS.iter().map(|c| c.name).collect();
    let all_typed: Vec<String> = TASK_COLUMNS.iter().map(|c| format!("{} {}", c.name, c.ty.pg())).collect();
    let mutable_typed: Vec<String> = columns::mutable().map(|c| format!("{} {}", c.name, c.ty.pg())).collect();
    format!(
        "\
WITH ie AS (
  INSERT INTO workflow_executions (id, workflow_name, workflow_version, workflow_label, state, input, error, origin,
       created_at, updated_at, finished_at, unfinished)
  SELECT id, workflow_name, workflow_version, workflow_label, state, input, error, origin, created_at, updated_at,
       finished_at, unfinished
  FROM json_to_recordset($1::json) AS v(id uuid, workflow_name text, workflow_version text, workflow_label text,
       state text, input text, error text, origin text, created_at bigint, updated_at bigint, finished_at bigint,
       unfinished integer)
  RETURNING 1),
it AS (
  INSERT INTO task_executions ({all}, updated_at)
  SELECT {all}, $7
  FROM json_to_recordset($2::json) AS v({all_typed})
  RETURNING 1),
ut AS (
  UPDATE task_executions AS t SET {set}, waiting_on = t.waiting_on + v.waiting_delta, updated_at = $7
  FROM json_to_recordset($3::json) AS v(id uuid, {mutable_typed}, expect_state text, expect_token bigint,
       waiting_delta integer)
  WHERE t.id = ANY($10) AND t.id = v.id AND t.state = v.expect_state AND t.fencing_token = v.expect_token
  RETURNING 1),
ux AS (
  UPDATE workflow_executions AS x SET state = v.state, error = v.error, finished_at = v.finished_at,
       unfinished = CASE WHEN v.forget = 1 THEN NULL ELSE x.unfinished + v.delta END, updated_at = $7
  FROM json_to_recordset($4::json) AS v(id uuid, state text, error text, finished_at bigint, expect_state text,
       forget integer, delta integer)
  WHERE x.id = ANY($11) AND x.id = v.id AND x.state = v.expect_state
  RETURNING 1),
uw AS (
  UPDATE task_executions AS t SET waiting_on = t.waiting_on + v.delta
  FROM json_to_recordset($12::json) AS v(execution_id uuid, position integer, delta integer)
  WHERE t.execution_id = ANY($13) AND t.execution_id = v.execution_id AND t.position = v.position
  RETURNING 1),
uu AS (
  UPDATE workflow_executions AS x SET unfinished = CASE WHEN v.forget = 1 THEN NULL ELSE x.unfinished + v.delta END
  FROM json_to_recordset($14::json) AS v(id uuid, forget integer, delta integer)
  WHERE x.id = ANY($15) AND x.id = v.id
  RETURNING 1),
io AS (
  INSERT INTO task_outputs (task_execution_id, execution_id, task_name, context, created_at)
  SELECT task_execution_id, execution_id, task_name, context, $7
  FROM json_to_recordset($5::json) AS v(task_execution_id uuid, execution_id uuid, task_name text, context text)
  RETURNING 1),
iv AS (
  INSERT INTO execution_events (execution_id, kind, task_name, task_execution_id, from_state, to_state, detail, at)
  SELECT execution_id, kind, task_name, task_execution_id, from_state, to_state, detail, at
  FROM json_to_recordset($6::json) AS v(execution_id uuid, kind text, task_name text, task_execution_id uuid,
       from_state text, to_state text, detail text, at bigint)
  RETURNING 1),
nt AS (
  SELECT pg_notify($8, p) FROM json_array_elements_text($9::json) AS p)
SELECT (SELECT count(*) FROM ie) + (SELECT count(*) FROM it) + (SELECT count(*) FROM ut)
     + (SELECT count(*) FROM ux) + (SELECT count(*) FROM io) + (SELECT count(*) FROM iv)
     + (SELECT count(*) FROM uw) + (SELECT count(*) FROM uu),
       (SELECT count(*) FROM nt)",
        all = all.join(", "),
        all_typed = all_typed.join(", "),
        mutable_typed = mutable_typed.join(", "),
        set = columns::set_from("v"),
    )
});

fn uuids(ids: impl Iterator<Item = uuid::Uuid>) -> sea_orm::Value {
    let v: Vec<sea_orm::Value> = ids.map(|id| sea_orm::Value::Uuid(Some(id))).collect();
    sea_orm::Value::Array(sea_orm::sea_query::ArrayType::Uuid, Some(Box::new(v)))
}

fn array(rows: Vec<J>) -> sea_orm::Value {
    J::Array(rows).to_string().into()
}

/// Applies `w` with one statement; a guarded row that no longer matches
/// makes the counts fall short: a conflict.
pub(crate) async fn apply(
    b: &PgBackend,
    txn: &DatabaseTransaction,
    w: &Writes,
    notes: &[Notification],
    now: Timestamp,
) -> Result<(), TxError> {
    let expected = w.rows() as i64;
    let payloads = crate::payloads(notes);
    if expected == 0 && payloads.is_empty() {
        return Ok(());
    }
    let executions = w
        .execution_inserts
        .iter()
        .map(|e| {
            json!({
                "id": e.id.0, "workflow_name": e.workflow.name, "workflow_version": e.workflow.version,
                "workflow_label": e.label,
                "state": e.state.as_str(), "input": e.input.to_json(), "error": storable(e.error.as_ref()),
                "origin": storable_text(&e.origin),
                "created_at": e.created_at.0, "updated_at": e.updated_at.0, "finished_at": e.finished_at.map(|t| t.0),
                "unfinished": initial_unfinished(w, e.id),
            })
        })
        .collect();
    let placement = task_placement(w)?;
    let new_tasks = w
        .task_inserts
        .iter()
        .zip(&placement)
        .map(|(t, (key, position))| {
            let waiting_on = initial_waiting(w, t.execution_id, *position);
            J::Object(columns::json_object(&TaskRow { record: t, key, position: *position, waiting_on }, false))
        })
        .collect();
    let task_updates = w
        .tasks
        .iter()
        .map(|tw| {
            let mut o =
                columns::json_object(&TaskRow { record: &tw.row, key: "", position: 0, waiting_on: None }, true);
            o.insert("id".into(), json!(tw.row.id.0));
            o.insert("waiting_delta".into(), json!(tw.waiting_delta));
            o.insert("expect_state".into(), json!(tw.expect_state.as_str()));
            o.insert("expect_token".into(), json!(tw.expect_token.0));
            J::Object(o)
        })
        .collect();
    let execution_updates = w
        .executions
        .iter()
        .map(|x| {
            json!({
                "id": x.id.0, "state": x.state.as_str(), "error": storable(x.error.as_ref()),
                "finished_at": x.finished_at.map(|t| t.0), "expect_state": x.expect_state.as_str(),
                "forget": forget(x.unfinished), "delta": delta(x.unfinished),
            })
        })
        .collect();
    let outputs = w
        .outputs
        .iter()
        .map(|o| json!({"task_execution_id": o.task.0, "execution_id": o.execution.0, "task_name": o.name, "context": o.context.to_json()}))
        .collect();
    let events = w
        .events
        .iter()
        .map(|e| {
            json!({
                "execution_id": e.execution_id.0, "kind": e.kind.as_str(), "task_name": e.task,
                "task_execution_id": e.task_execution_id.map(|t| t.0), "from_state": e.from, "to_state": e.to,
                "detail": storable(e.detail.as_ref()), "at": e.at.0,
            })
        })
        .collect();
    let values = vec![
        array(executions),
        array(new_tasks),
        array(task_updates),
        array(execution_updates),
        array(outputs),
        array(events),
        now.0.into(),
        b.channel.as_str().into(),
        J::Array(payloads.into_iter().map(J::String).collect()).to_string().into(),
        // The updates also filter on an id array: the planner then looks the
        // rows up by primary key, whatever the tables' size, instead of
        // hashing a scan of them against the JSON rows (of unknown count).
        uuids(w.tasks.iter().map(|t| t.row.id.0)),
        uuids(w.executions.iter().map(|x| x.id.0)),
        array(
            w.waiting
                .iter()
                .map(|c| json!({"execution_id": c.execution.0, "position": c.position, "delta": c.delta}))
                .collect(),
        ),
        uuids(w.waiting.iter().map(|c| c.execution.0)),
        array(
            w.unfinished.iter().map(|(id, c)| json!({"id": id.0, "forget": forget(*c), "delta": delta(*c)})).collect(),
        ),
        uuids(w.unfinished.iter().map(|(id, _)| id.0)),
    ];
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, SQL.as_str(), values))
        .await
        .map_err(|e| b.classify(e))?;
    let touched: i64 = row.map(|r| r.try_get_by_index::<i64>(0)).transpose().map_err(|e| b.classify(e))?.unwrap_or(0);
    if touched != expected {
        return Err(TxError::Conflict(format!(
            "{} of {expected} rows did not match their expected state: changed concurrently",
            expected - touched
        )));
    }
    Ok(())
}
