//! Cron schedules, their tick records, and trigger firings.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Name,
    WorkflowName,
    Expression,
    Timezone,
    CatchUp,
    MisfireMs,
    Input,
    Paused,
    LastTickAt,
    NextTickAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScheduleTicks {
    Table,
    ScheduleName,
    TickAt,
    ExecutionId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Triggers {
    Table,
    Name,
    LastFiredAt,
}

#[derive(DeriveIden)]
enum TriggerFirings {
    Table,
    ExecutionId,
    TriggerName,
    DedupKey,
    FiredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Schedules::Table)
                .col(ColumnDef::new(Schedules::Name).string().not_null().primary_key())
                .col(ColumnDef::new(Schedules::WorkflowName).string().not_null())
                .col(ColumnDef::new(Schedules::Expression).string().not_null())
                .col(ColumnDef::new(Schedules::Timezone).string().not_null())
                .col(ColumnDef::new(Schedules::CatchUp).string().not_null())
                .col(ColumnDef::new(Schedules::MisfireMs).big_integer().not_null())
                .col(ColumnDef::new(Schedules::Input).text().not_null())
                .col(ColumnDef::new(Schedules::Paused).boolean().not_null())
                .col(ColumnDef::new(Schedules::LastTickAt).big_integer().not_null())
                .col(ColumnDef::new(Schedules::NextTickAt).big_integer())
                .col(ColumnDef::new(Schedules::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(Schedules::UpdatedAt).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_schedules_next_tick")
                .table(Schedules::Table)
                .col(Schedules::NextTickAt)
                .and_where(Expr::col(Schedules::Paused).eq(false))
                .to_owned(),
        )
        .await?;

        // One row per processed tick: the primary key is what makes a tick
        // start at most one execution, whatever the number of runners.
        m.create_table(
            Table::create()
                .table(ScheduleTicks::Table)
                .col(ColumnDef::new(ScheduleTicks::ScheduleName).string().not_null())
                .col(ColumnDef::new(ScheduleTicks::TickAt).big_integer().not_null())
                .col(ColumnDef::new(ScheduleTicks::ExecutionId).uuid().not_null())
                .col(ColumnDef::new(ScheduleTicks::CreatedAt).big_integer().not_null())
                .primary_key(Index::create().col(ScheduleTicks::ScheduleName).col(ScheduleTicks::TickAt))
                .to_owned(),
        )
        .await?;

        // A row per trigger that has fired: firings of one trigger lock it,
        // so the duplicate check and the insert cannot interleave.
        m.create_table(
            Table::create()
                .table(Triggers::Table)
                .col(ColumnDef::new(Triggers::Name).string().not_null().primary_key())
                .col(ColumnDef::new(Triggers::LastFiredAt).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(TriggerFirings::Table)
                .col(ColumnDef::new(TriggerFirings::ExecutionId).uuid().not_null().primary_key())
                .col(ColumnDef::new(TriggerFirings::TriggerName).string().not_null())
                .col(ColumnDef::new(TriggerFirings::DedupKey).string().not_null())
                .col(ColumnDef::new(TriggerFirings::FiredAt).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_trigger_firings_key")
                .table(TriggerFirings::Table)
                .col(TriggerFirings::TriggerName)
                .col(TriggerFirings::DedupKey)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(TriggerFirings::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Triggers::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(ScheduleTicks::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Schedules::Table).to_owned()).await?;
        Ok(())
    }
}
