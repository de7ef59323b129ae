//! `task_outputs`: the output context of each completed task.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "task_outputs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_execution_id: Uuid,
    pub execution_id: Uuid,
    pub task_name: String,
    #[sea_orm(column_type = "Text")]
    pub context: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
