//! Counters kept beside the states, so that a report reads only the rows
//! it can change: per task row, its dependencies not yet terminal; per
//! execution, its tasks not yet terminal. NULL (rows written before this
//! migration, or an execution whose counters a step could not keep) means
//! "unknown": such an execution is always read whole.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    Unfinished,
}

#[derive(DeriveIden)]
enum TaskExecutions {
    Table,
    WaitingOn,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(TaskExecutions::Table)
                .add_column(ColumnDef::new(TaskExecutions::WaitingOn).integer())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(WorkflowExecutions::Table)
                .add_column(ColumnDef::new(WorkflowExecutions::Unfinished).integer())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table(WorkflowExecutions::Table).drop_column(WorkflowExecutions::Unfinished).to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table(TaskExecutions::Table).drop_column(TaskExecutions::WaitingOn).to_owned())
            .await?;
        Ok(())
    }
}
