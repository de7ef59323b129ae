//! `trigger_firings`: the execution each trigger firing created, with the
//! firing's deduplication key.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "trigger_firings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub execution_id: Uuid,
    pub trigger_name: String,
    pub dedup_key: String,
    pub fired_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
