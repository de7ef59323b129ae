//! The initial schema.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    Id,
    WorkflowName,
    WorkflowVersion,
    State,
    Input,
    Error,
    Origin,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum TaskExecutions {
    Table,
    Id,
    ExecutionId,
    WorkflowKey,
    TaskName,
    Position,
    State,
    Attempt,
    ReadyAt,
    LeaseOwner,
    LeaseIncarnation,
    LeaseExpiresAt,
    FencingToken,
    RecoveryCount,
    Error,
    StartedAt,
    FinishedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TaskOutputs {
    Table,
    TaskExecutionId,
    ExecutionId,
    TaskName,
    Context,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ExecutionEvents {
    Table,
    Id,
    ExecutionId,
    Kind,
    TaskName,
    TaskExecutionId,
    FromState,
    ToState,
    Detail,
    At,
}

#[derive(DeriveIden)]
enum Runners {
    Table,
    Id,
    Name,
    Incarnation,
    Status,
    StartedAt,
    HeartbeatAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WorkflowExecutions::Table)
                .col(ColumnDef::new(WorkflowExecutions::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(WorkflowExecutions::WorkflowName).string().not_null())
                .col(ColumnDef::new(WorkflowExecutions::WorkflowVersion).string().not_null())
                .col(ColumnDef::new(WorkflowExecutions::State).string().not_null())
                .col(ColumnDef::new(WorkflowExecutions::Input).text().not_null())
                .col(ColumnDef::new(WorkflowExecutions::Error).text())
                .col(ColumnDef::new(WorkflowExecutions::Origin).string().not_null())
                .col(ColumnDef::new(WorkflowExecutions::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(WorkflowExecutions::UpdatedAt).big_integer().not_null())
                .col(ColumnDef::new(WorkflowExecutions::FinishedAt).big_integer())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_workflow_executions_created")
                .table(WorkflowExecutions::Table)
                .col(WorkflowExecutions::CreatedAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_workflow_executions_name_created")
                .table(WorkflowExecutions::Table)
                .col(WorkflowExecutions::WorkflowName)
                .col(WorkflowExecutions::CreatedAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(TaskExecutions::Table)
                .col(ColumnDef::new(TaskExecutions::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(TaskExecutions::ExecutionId).uuid().not_null())
                .col(ColumnDef::new(TaskExecutions::WorkflowKey).string().not_null())
                .col(ColumnDef::new(TaskExecutions::TaskName).string().not_null())
                .col(ColumnDef::new(TaskExecutions::Position).integer().not_null())
                .col(ColumnDef::new(TaskExecutions::State).string().not_null())
                .col(ColumnDef::new(TaskExecutions::Attempt).integer().not_null())
                .col(ColumnDef::new(TaskExecutions::ReadyAt).big_integer().not_null())
                .col(ColumnDef::new(TaskExecutions::LeaseOwner).string())
                .col(ColumnDef::new(TaskExecutions::LeaseIncarnation).string())
                .col(ColumnDef::new(TaskExecutions::LeaseExpiresAt).big_integer())
                .col(ColumnDef::new(TaskExecutions::FencingToken).big_integer().not_null())
                .col(ColumnDef::new(TaskExecutions::RecoveryCount).integer().not_null())
                .col(ColumnDef::new(TaskExecutions::Error).text())
                .col(ColumnDef::new(TaskExecutions::StartedAt).big_integer())
                .col(ColumnDef::new(TaskExecutions::FinishedAt).big_integer())
                .col(ColumnDef::new(TaskExecutions::UpdatedAt).big_integer().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_task_executions_execution")
                        .from(TaskExecutions::Table, TaskExecutions::ExecutionId)
                        .to(WorkflowExecutions::Table, WorkflowExecutions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_task_executions_execution")
                .table(TaskExecutions::Table)
                .col(TaskExecutions::ExecutionId)
                .col(TaskExecutions::Position)
                .to_owned(),
        )
        .await?;
        // The claim path reads only ready rows; a partial index keeps it
        // small however many finished rows the table holds.
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
        // Task rows churn (ready -> running -> done): let autovacuum keep
        // their dead tuples and statistics fresh sooner than the default.
        if m.get_database_backend() == sea_orm::DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(
                    "ALTER TABLE task_executions SET (autovacuum_vacuum_scale_factor = 0.02, \
                     autovacuum_analyze_scale_factor = 0.02)",
                )
                .await?;
        }
        // The recovery sweep reads only running rows.
        m.create_index(
            Index::create()
                .name("idx_task_executions_running")
                .table(TaskExecutions::Table)
                .col(TaskExecutions::LeaseOwner)
                .and_where(Expr::col(TaskExecutions::State).eq("running"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(TaskOutputs::Table)
                .col(ColumnDef::new(TaskOutputs::TaskExecutionId).uuid().not_null().primary_key())
                .col(ColumnDef::new(TaskOutputs::ExecutionId).uuid().not_null())
                .col(ColumnDef::new(TaskOutputs::TaskName).string().not_null())
                .col(ColumnDef::new(TaskOutputs::Context).text().not_null())
                .col(ColumnDef::new(TaskOutputs::CreatedAt).big_integer().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_task_outputs_execution")
                        .from(TaskOutputs::Table, TaskOutputs::ExecutionId)
                        .to(WorkflowExecutions::Table, WorkflowExecutions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_task_outputs_execution")
                .table(TaskOutputs::Table)
                .col(TaskOutputs::ExecutionId)
                .col(TaskOutputs::TaskName)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ExecutionEvents::Table)
                .col(ColumnDef::new(ExecutionEvents::Id).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(ExecutionEvents::ExecutionId).uuid().not_null())
                .col(ColumnDef::new(ExecutionEvents::Kind).string().not_null())
                .col(ColumnDef::new(ExecutionEvents::TaskName).string())
                .col(ColumnDef::new(ExecutionEvents::TaskExecutionId).uuid())
                .col(ColumnDef::new(ExecutionEvents::FromState).string())
                .col(ColumnDef::new(ExecutionEvents::ToState).string().not_null())
                .col(ColumnDef::new(ExecutionEvents::Detail).text())
                .col(ColumnDef::new(ExecutionEvents::At).big_integer().not_null())
                // No foreign key: an event insert would share-lock its
                // execution row, and claims record events for executions
                // they have not locked; the log is append-only.
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_execution_events_execution")
                .table(ExecutionEvents::Table)
                .col(ExecutionEvents::ExecutionId)
                .col(ExecutionEvents::Id)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Runners::Table)
                .col(ColumnDef::new(Runners::Id).string().not_null().primary_key())
                .col(ColumnDef::new(Runners::Name).string().not_null())
                .col(ColumnDef::new(Runners::Incarnation).string().not_null())
                .col(ColumnDef::new(Runners::Status).string().not_null())
                .col(ColumnDef::new(Runners::StartedAt).big_integer().not_null())
                .col(ColumnDef::new(Runners::HeartbeatAt).big_integer().not_null())
                .col(ColumnDef::new(Runners::ExpiresAt).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Runners::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(ExecutionEvents::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(TaskOutputs::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(TaskExecutions::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(WorkflowExecutions::Table).to_owned()).await?;
        Ok(())
    }
}
