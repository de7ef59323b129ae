//! # cloacina-sql
//!
//! The part of Cloacina's SQL storage that is the same on SQLite and
//! PostgreSQL, written once against sea-orm:
//!
//! * [`entities`] and [`migration`] — the tables and their migrations;
//! * [`rows`] — conversions between rows and domain records (a value the
//!   domain refuses is a `CorruptRow` error naming the row);
//! * [`SqlStorage`] — every storage port of `cloacina-core`, as
//!   transactions that load rows, run the shared
//!   [`Step`](cloacina_core::step::Step) logic, and write the result back
//!   with guarded updates (retried as a whole on conflict).
//!
//! What differs between the backends — connection setup, tenancy, the
//! write-transaction mode, row locks, the claim statement, wake-ups and
//! error classification — is the [`SqlBackend`] trait, implemented by
//! `cloacina-sqlite` and `cloacina-postgres`. This crate spawns nothing and
//! holds no runner logic.

pub mod backend;
pub mod claim;
pub mod columns;
pub mod entities;
pub mod migration;
mod ops;
pub mod rows;
mod storage;
pub mod writes;

pub use backend::{LockedRows, SqlBackend, TxError};
pub use cloacina_core::ports::OpenReport;
pub use migration::Migrator;
pub use ops::report::ReportStats;
pub use storage::SqlStorage;

/// The names of every migration of the schema, oldest first.
pub fn migration_names() -> Vec<String> {
    use sea_orm_migration::MigratorTrait;
    Migrator::migrations().iter().map(|m| m.name().to_owned()).collect()
}

/// Applies pending migrations on `conn` (a transaction the backend holds
/// exclusively). Returns the names of the migrations applied now.
pub async fn migrate<C>(conn: &C) -> Result<Vec<String>, sea_orm::DbErr>
where
    C: sea_orm::ConnectionTrait,
    for<'c> &'c C: sea_orm_migration::IntoSchemaManagerConnection<'c>,
{
    use sea_orm_migration::MigratorTrait;
    let pending: Vec<String> = Migrator::get_pending_migrations(conn)
        .await
        .map(|v| v.iter().map(|m| m.name().to_owned()).collect())
        .unwrap_or_default();
    Migrator::up(conn, None).await?;
    Ok(pending)
}
