//! `task_executions`: one row per task of an execution, with its lease.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "task_executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub execution_id: Uuid,
    /// `workflow@version`, what claims filter on.
    pub workflow_key: String,
    pub task_name: String,
    /// Position in the workflow's topological order.
    pub position: i32,
    pub state: String,
    pub attempt: i32,
    pub ready_at: i64,
    pub lease_owner: Option<String>,
    pub lease_incarnation: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub fencing_token: i64,
    pub recovery_count: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    /// Dependencies not yet terminal (NULL: unknown, see the migration).
    pub waiting_on: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
