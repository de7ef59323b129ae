//! `schedules`: one row per cron schedule.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "schedules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub workflow_name: String,
    pub expression: String,
    /// IANA time zone name.
    pub timezone: String,
    /// `skip` or `run_all(<cap>)`.
    pub catch_up: String,
    /// The misfire threshold, in milliseconds.
    pub misfire_ms: i64,
    #[sea_orm(column_type = "Text")]
    pub input: String,
    pub paused: bool,
    /// Ticks at or before this time are processed.
    pub last_tick_at: i64,
    pub next_tick_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
