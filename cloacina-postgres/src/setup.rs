//! Opening a tenant: its schema, its `cloacina_meta` table (the migration
//! lock and the notification channel's secret name), and its migrations —
//! with no lock that another tenant can take or compute.
//!
//! * The schema is created with `CREATE SCHEMA IF NOT EXISTS`; runners
//!   racing to create it each succeed (a concurrent creation's error means
//!   it exists).
//! * Migrations are checked without any lock (reading the migration
//!   record); only when some are pending is the migration lock taken: an
//!   `ACCESS EXCLUSIVE` lock on the tenant's own `cloacina_meta` table, which
//!   no other tenant's role can reach (no `USAGE` on the schema), waited
//!   for at most the connect timeout (`lock_timeout`), then a typed error.
//! * The `NOTIFY` channel is named after a random value stored in
//!   `cloacina_meta`, readable by the tenant's role only: another tenant
//!   can neither compute it nor read it, so it can neither forge
//!   notifications to it nor listen to it.

use std::time::Duration;

use cloacina_core::ports::{StorageError, StorageResult};
use rand::RngExt;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, TransactionTrait};
use sqlx::postgres::PgConnection;

use crate::PgBackend;

fn backend(message: String, e: sqlx::Error) -> StorageError {
    StorageError::Backend { message, source: Some(Box::new(e)) }
}

/// Whether `e` says a concurrent transaction created the same object
/// (unique violation in the catalogs, duplicate schema or table).
fn created_concurrently(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| matches!(c.as_ref(), "23505" | "42P06" | "42P07"))
}

/// Runs a `CREATE … IF NOT EXISTS` statement; a concurrent creation of the
/// same object counts as done.
async fn create_if_missing(c: &mut PgConnection, sql: String, what: &str) -> StorageResult<()> {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *c).await {
        Ok(_) => Ok(()),
        Err(e) if created_concurrently(&e) => Ok(()),
        Err(e) => Err(backend(format!("cannot create {what}"), e)),
    }
}

/// Creates the schema if it does not exist; returns whether it did not.
pub(crate) async fn ensure_schema(c: &mut PgConnection, schema: &str, quoted: &str) -> StorageResult<bool> {
    let existed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| backend("cannot look up the schema".into(), e))?;
    if !existed {
        create_if_missing(c, format!("CREATE SCHEMA IF NOT EXISTS {quoted}"), &format!("schema {quoted}")).await?;
    }
    Ok(!existed)
}

/// Creates `cloacina_meta` if needed and returns the tenant's notification
/// channel, named after a random value kept there.
pub(crate) async fn ensure_meta(c: &mut PgConnection, quoted: &str) -> StorageResult<String> {
    create_if_missing(
        c,
        format!("CREATE TABLE IF NOT EXISTS {quoted}.cloacina_meta (key text PRIMARY KEY, value text NOT NULL)"),
        &format!("{quoted}.cloacina_meta"),
    )
    .await?;
    let bytes: [u8; 16] = rand::rng().random();
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {quoted}.cloacina_meta (key, value) VALUES ('notify_channel', $1) ON CONFLICT (key) DO NOTHING"
    )))
    .bind(&fresh)
    .execute(&mut *c)
    .await
    .map_err(|e| backend("cannot record the notification channel".into(), e))?;
    let secret: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT value FROM {quoted}.cloacina_meta WHERE key = 'notify_channel'"
    )))
    .fetch_one(&mut *c)
    .await
    .map_err(|e| backend("cannot read the notification channel".into(), e))?;
    Ok(format!("cloacina_{secret}"))
}

/// Migrations not yet recorded in the schema, read without a lock.
async fn pending(c: &mut PgConnection, quoted: &str) -> StorageResult<Vec<String>> {
    let all = cloacina_sql::migration_names();
    let recorded: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{quoted}.seaql_migrations"))
        .fetch_one(&mut *c)
        .await
        .map_err(|e| backend("cannot look up the migration record".into(), e))?;
    if !recorded {
        return Ok(all);
    }
    let done: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT version FROM {quoted}.seaql_migrations")))
            .fetch_all(&mut *c)
            .await
            .map_err(|e| backend("cannot read the migration record".into(), e))?;
    Ok(all.into_iter().filter(|m| !done.contains(m)).collect())
}

/// Applies pending migrations under the tenant's migration lock, waited for
/// at most `lock_timeout`. Returns the migrations applied now.
pub(crate) async fn migrate(
    b: &PgBackend,
    setup: &mut PgConnection,
    quoted: &str,
    lock_timeout: Duration,
) -> StorageResult<Vec<String>> {
    if pending(setup, quoted).await?.is_empty() {
        return Ok(Vec::new());
    }
    let ms = lock_timeout.as_millis().clamp(1, i32::MAX as u128);
    let run = async {
        let txn = b.conn.begin().await?;
        txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {ms}")).await?;
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("LOCK TABLE {quoted}.cloacina_meta IN ACCESS EXCLUSIVE MODE"),
        ))
        .await?;
        let applied = cloacina_sql::migrate(&txn).await?;
        txn.commit().await?;
        Ok::<_, DbErr>(applied)
    };
    run.await.map_err(|e| {
        if crate::sqlstate(&e).as_deref() == Some("55P03") {
            return StorageError::Busy {
                message: format!(
                    "waited {lock_timeout:?} (connect_timeout) for the migration lock of {quoted} \
                     ({quoted}.cloacina_meta), which another session holds"
                ),
                source: Some(Box::new(e)),
            };
        }
        match cloacina_sql::SqlBackend::classify(b, e) {
            cloacina_sql::TxError::Storage(e) => e,
            cloacina_sql::TxError::Conflict(m) => {
                StorageError::Busy { message: format!("migrations: {m}"), source: None }
            }
        }
    })
}
