//! The task row's columns as the write paths see them: one list, from which
//! the portable statements (multi-row `INSERT`, `UPDATE … FROM (VALUES …)`)
//! and PostgreSQL's single JSON statement are both derived. Adding a column
//! means adding it here (and to the entity and a migration).

use cloacina_core::ports::TaskRecord;
use serde_json::Value as Json;

use crate::rows::storable;

/// A column's SQL type (PostgreSQL's name; SQLite takes values as bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// `uuid`.
    Uuid,
    /// `text`.
    Text,
    /// `integer`.
    Int,
    /// `bigint`.
    BigInt,
}

impl SqlType {
    /// PostgreSQL's name of the type.
    pub fn pg(self) -> &'static str {
        match self {
            SqlType::Uuid => "uuid",
            SqlType::Text => "text",
            SqlType::Int => "integer",
            SqlType::BigInt => "bigint",
        }
    }
}

/// One value of a task row, before it is bound or encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A uuid.
    Uuid(uuid::Uuid),
    /// Text, maybe NULL.
    Text(Option<String>),
    /// A 32-bit integer.
    Int(i32),
    /// A 32-bit integer, maybe NULL.
    OptInt(Option<i32>),
    /// A 64-bit integer, maybe NULL.
    BigInt(Option<i64>),
}

impl Cell {
    /// As a bound parameter.
    pub fn value(&self) -> sea_orm::Value {
        match self {
            Cell::Uuid(u) => (*u).into(),
            Cell::Text(t) => t.clone().into(),
            Cell::Int(i) => (*i).into(),
            Cell::OptInt(i) => (*i).into(),
            Cell::BigInt(i) => (*i).into(),
        }
    }
    /// As a JSON value (for `json_to_recordset`).
    pub fn json(&self) -> Json {
        match self {
            Cell::Uuid(u) => Json::String(u.to_string()),
            Cell::Text(t) => t.clone().map_or(Json::Null, Json::String),
            Cell::Int(i) => Json::from(*i),
            Cell::OptInt(i) => i.map_or(Json::Null, Json::from),
            Cell::BigInt(i) => i.map_or(Json::Null, Json::from),
        }
    }
}

/// A task row to write: the record, and where it stands (for inserts).
#[derive(Debug, Clone, Copy)]
pub struct TaskRow<'a> {
    /// The record.
    pub record: &'a TaskRecord,
    /// `workflow@version` of its execution.
    pub key: &'a str,
    /// Its position in the workflow's topological order.
    pub position: i32,
    /// Its count of dependencies not yet terminal, when known (inserts only;
    /// updates change it by [`TaskWrite::waiting_delta`](cloacina_core::step::TaskWrite)).
    pub waiting_on: Option<i32>,
}

/// A column of `task_executions`: its name, type, whether updates write it
/// (the others are set once, at insert), and how to read it from a row.
#[derive(Debug, Clone, Copy)]
pub struct TaskColumn {
    /// The column's name.
    pub name: &'static str,
    /// Its type.
    pub ty: SqlType,
    /// Whether guarded updates write it.
    pub mutable: bool,
    /// Its value for a row.
    pub cell: fn(&TaskRow<'_>) -> Cell,
}

fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Every column the write paths set from a row (`updated_at` is the
/// statement's time), in table order.
pub const TASK_COLUMNS: &[TaskColumn] = &[
    TaskColumn { name: "id", ty: SqlType::Uuid, mutable: false, cell: |r| Cell::Uuid(r.record.id.0) },
    TaskColumn {
        name: "execution_id",
        ty: SqlType::Uuid,
        mutable: false,
        cell: |r| Cell::Uuid(r.record.execution_id.0),
    },
    TaskColumn {
        name: "workflow_key",
        ty: SqlType::Text,
        mutable: false,
        cell: |r| Cell::Text(Some(r.key.to_owned())),
    },
    TaskColumn {
        name: "task_name",
        ty: SqlType::Text,
        mutable: false,
        cell: |r| Cell::Text(Some(r.record.name.clone())),
    },
    TaskColumn { name: "position", ty: SqlType::Int, mutable: false, cell: |r| Cell::Int(r.position) },
    TaskColumn {
        name: "state",
        ty: SqlType::Text,
        mutable: true,
        cell: |r| Cell::Text(Some(r.record.state.as_str().to_owned())),
    },
    TaskColumn { name: "attempt", ty: SqlType::Int, mutable: true, cell: |r| Cell::Int(int(r.record.attempt)) },
    TaskColumn {
        name: "ready_at",
        ty: SqlType::BigInt,
        mutable: true,
        cell: |r| Cell::BigInt(Some(r.record.ready_at.0)),
    },
    TaskColumn {
        name: "lease_owner",
        ty: SqlType::Text,
        mutable: true,
        cell: |r| Cell::Text(r.record.lease.as_ref().map(|l| l.owner.to_string())),
    },
    TaskColumn {
        name: "lease_incarnation",
        ty: SqlType::Text,
        mutable: true,
        cell: |r| Cell::Text(r.record.lease.as_ref().map(|l| l.incarnation.clone())),
    },
    TaskColumn {
        name: "lease_expires_at",
        ty: SqlType::BigInt,
        mutable: true,
        cell: |r| Cell::BigInt(r.record.lease.as_ref().map(|l| l.expires_at.0)),
    },
    TaskColumn {
        name: "fencing_token",
        ty: SqlType::BigInt,
        mutable: true,
        cell: |r| Cell::BigInt(Some(r.record.fencing_token.0)),
    },
    TaskColumn {
        name: "recovery_count",
        ty: SqlType::Int,
        mutable: true,
        cell: |r| Cell::Int(int(r.record.recovery_count)),
    },
    TaskColumn {
        name: "error",
        ty: SqlType::Text,
        mutable: true,
        cell: |r| Cell::Text(storable(r.record.error.as_ref())),
    },
    TaskColumn {
        name: "started_at",
        ty: SqlType::BigInt,
        mutable: true,
        cell: |r| Cell::BigInt(r.record.started_at.map(|t| t.0)),
    },
    TaskColumn {
        name: "finished_at",
        ty: SqlType::BigInt,
        mutable: true,
        cell: |r| Cell::BigInt(r.record.finished_at.map(|t| t.0)),
    },
    TaskColumn { name: "waiting_on", ty: SqlType::Int, mutable: false, cell: |r| Cell::OptInt(r.waiting_on) },
];

/// The columns a guarded update writes.
pub fn mutable() -> impl Iterator<Item = &'static TaskColumn> {
    TASK_COLUMNS.iter().filter(|c| c.mutable)
}

/// `a = v.a, b = v.b, …` over the mutable columns, reading from alias `v`.
pub fn set_from(alias: &str) -> String {
    mutable().map(|c| format!("{0} = {alias}.{0}", c.name)).collect::<Vec<_>>().join(", ")
}

/// A row's cells as a JSON object (every column, or only the mutable ones).
pub fn json_object(row: &TaskRow<'_>, only_mutable: bool) -> serde_json::Map<String, Json> {
    TASK_COLUMNS
        .iter()
        .filter(|c| c.mutable || !only_mutable)
        .map(|c| (c.name.to_owned(), (c.cell)(row).json()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    /// The list names every column of the entity but `updated_at`, which
    /// each statement sets to its own time.
    #[test]
    fn the_list_covers_the_table() {
        use sea_orm::IdenStatic;
        let entity: Vec<String> = crate::entities::task_executions::Column::iter()
            .map(|c| c.as_str().to_owned())
            .filter(|c| c != "updated_at")
            .collect();
        let listed: Vec<String> = TASK_COLUMNS.iter().map(|c| c.name.to_owned()).collect();
        assert_eq!(listed, entity);
    }
}
