//! `schedule_ticks`: one row per processed tick, unique per schedule and
//! tick, written with the tick's execution.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "schedule_ticks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub schedule_name: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub tick_at: i64,
    pub execution_id: Uuid,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
