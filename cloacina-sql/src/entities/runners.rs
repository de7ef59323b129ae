//! `runners`: one liveness row per runner id.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "runners")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub incarnation: String,
    /// `alive`, `dead` (found expired by a sweep) or `stopped` (shut down).
    pub status: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub expires_at: i64,
    /// JSON array of the `name@version` keys the runner serves.
    #[sea_orm(column_type = "Text")]
    pub serves: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
