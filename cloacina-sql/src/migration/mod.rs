//! The schema, as sea-orm-migration migrations shared by both backends.
//!
//! Migrations run when a storage is opened, inside one transaction that the
//! backend serializes across processes (PostgreSQL: a lock on the tenant's
//! own `cloacina_meta` table; SQLite: an immediate write transaction), so
//! concurrent first openings of a fresh tenant apply them exactly once.

use sea_orm_migration::prelude::*;

mod m20261127_000001_initial;
mod m20261127_000002_schedules;
mod m20261203_000003_versions;
mod m20261204_000004_counters;

/// The migrator of Cloacina's tables.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_initial::Migration),
            Box::new(m20261127_000002_schedules::Migration),
            Box::new(m20261203_000003_versions::Migration),
            Box::new(m20261204_000004_counters::Migration),
        ]
    }
}
