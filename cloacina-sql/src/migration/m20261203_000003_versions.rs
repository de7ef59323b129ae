//! Workflow versions: an execution's version label, the versions each
//! runner serves (so executions nobody serves are found), and a claim
//! index that leads with the workflow key (claims skip the ready rows of
//! versions a runner does not serve).
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    WorkflowLabel,
    WorkflowName,
    WorkflowVersion,
    State,
}

#[derive(DeriveIden)]
enum Runners {
    Table,
    Serves,
}

#[derive(DeriveIden)]
enum TaskExecutions {
    Table,
    WorkflowKey,
    ReadyAt,
    Id,
    State,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(WorkflowExecutions::Table)
                .add_column(ColumnDef::new(WorkflowExecutions::WorkflowLabel).string())
                .to_owned(),
        )
        .await?;
        // JSON array of the `name@version` keys the runner serves.
        m.alter_table(
            Table::alter()
                .table(Runners::Table)
                .add_column(ColumnDef::new(Runners::Serves).text().not_null().default("[]"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_task_executions_ready_by_key")
                .table(TaskExecutions::Table)
                .col(TaskExecutions::WorkflowKey)
                .col(TaskExecutions::ReadyAt)
                .col(TaskExecutions::Id)
                .and_where(Expr::col(TaskExecutions::State).eq("ready"))
                .to_owned(),
        )
        .await?;
        m.drop_index(Index::drop().name("idx_task_executions_ready").table(TaskExecutions::Table).to_owned()).await?;
        // Finding unfinished executions by version (stranded ones).
        m.create_index(
            Index::create()
                .name("idx_workflow_executions_unfinished")
                .table(WorkflowExecutions::Table)
                .col(WorkflowExecutions::WorkflowName)
                .col(WorkflowExecutions::WorkflowVersion)
                .and_where(Expr::col(WorkflowExecutions::State).is_in(["pending", "running", "paused"]))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop().name("idx_workflow_executions_unfinished").table(WorkflowExecutions::Table).to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_task_executions_ready")
                .table(TaskExecutions::Table)
                .col(TaskExecutions::ReadyAt)
                .col(TaskExecutions::Id)
                .and_where(Expr::col(TaskExecutions::State).eq("ready"))
                .to_owned(),
        )
        .await?;
        m.drop_index(Index::drop().name("idx_task_executions_ready_by_key").table(TaskExecutions::Table).to_owned())
            .await?;
        m.alter_table(Table::alter().table(Runners::Table).drop_column(Runners::Serves).to_owned()).await?;
        m.alter_table(
            Table::alter().table(WorkflowExecutions::Table).drop_column(WorkflowExecutions::WorkflowLabel).to_owned(),
        )
        .await?;
        Ok(())
    }
}
