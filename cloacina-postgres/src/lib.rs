//! # cloacina-postgres
//!
//! Cloacina's storage for services and fleets: PostgreSQL through sea-orm,
//! one schema per tenant. Any number of runner processes on any machines
//! share a tenant's work through it; PostgreSQL is the only coordinator.
//!
//! * **Tenancy.** A tenant name becomes a schema (`CREATE SCHEMA IF NOT
//!   EXISTS`, quoted); migrations run inside it, and every pooled
//!   connection starts with its `search_path` set to that schema, verified
//!   after connecting (a connection that cannot be scoped is refused). No
//!   tenant means `public`, the legacy single-tenant layout, which works
//!   beside tenant schemas in one database.
//! * **Migrations** run in one transaction under an advisory lock per
//!   schema, so runners starting together on a fresh tenant apply them
//!   once.
//! * **Claims** are one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)`
//!   statement; reports lock their executions' rows in id order.
//! * **Wake-ups** use `LISTEN/NOTIFY` on a channel per schema; one
//!   listening connection per subscriber.
//! * [`TenantAdmin`] creates tenants with their own login role, lists and
//!   removes them.
//!
//! Passwords never appear in errors, logs or `Debug` output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloacina_core::ports::StorageError> {
//! use cloacina_postgres::PgOptions;
//! let storage = cloacina_postgres::open(PgOptions::new("postgres://app:secret@db:5432/app").tenant("acme")?).await?;
//! # Ok(()) }
//! ```

mod admin;
mod setup;
mod url;
mod writes;

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloacina_core::ports::{ClaimRequest, Notification, StorageError, StorageResult};
use cloacina_core::step::Writes;
use cloacina_core::{TenantName, Timestamp};
use cloacina_sql::LockedRows;
use cloacina_sql::claim::{Params, claim_parts};
use cloacina_sql::entities::task_executions;
use cloacina_sql::rows::ExecutionHead;
use cloacina_sql::{OpenReport, SqlBackend, SqlStorage, TxError};
use futures::stream::{self, BoxStream, StreamExt};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, FromQueryResult, RuntimeErr,
    SqlxPostgresConnector, Statement, TransactionTrait,
};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

pub use admin::{TenantAdmin, TenantCredentials, TenantOptions};
/// Rows read per report by this process's commits (shared by both SQL backends).
pub use cloacina_sql::ReportStats;
pub use url::{is_postgres_scheme, redact_url};

/// The storage ports on PostgreSQL.
pub type PgStorage = SqlStorage<PgBackend>;

/// How to open a PostgreSQL storage. Every setting has a default.
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    tenant: Option<TenantName>,
    pool_size: u32,
    connect_timeout: Duration,
    acquire_timeout: Duration,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_url(&self.url))
            .field("tenant", &self.tenant)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PgOptions {
    /// Options for the database at `url` (`postgres://` or
    /// `postgresql://`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tenant: None,
            pool_size: 10,
            connect_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(30),
        }
    }
    /// Opens tenant `name` (its own schema) instead of `public`. The name
    /// is checked against the tenant rule before any SQL is built.
    pub fn tenant(self, name: &str) -> Result<Self, StorageError> {
        Ok(self.tenant_name(Some(TenantName::parse(name)?)))
    }
    /// The former name of [`tenant`](Self::tenant).
    #[deprecated(since = "0.2.0", note = "a tenant is one word across the API: use `PgOptions::tenant`")]
    pub fn schema(self, name: &str) -> Result<Self, StorageError> {
        self.tenant(name)
    }
    /// Sets an already validated tenant (or none: `public`).
    pub fn tenant_name(mut self, name: Option<TenantName>) -> Self {
        self.tenant = name;
        self
    }
    /// Pool size. Default 10.
    pub fn pool_size(mut self, n: u32) -> Self {
        self.pool_size = n.max(1);
        self
    }
    /// How long opening keeps retrying an unreachable server before it
    /// fails. Default 30 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// How long an operation waits for a pooled connection. Default 30 s.
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }
}

/// The schema a tenant maps to (`public` without one), quoted.
fn quoted_schema(t: Option<&TenantName>) -> String {
    t.map(TenantName::quoted).unwrap_or_else(|| "\"public\"".into())
}

fn schema_name(t: Option<&TenantName>) -> String {
    t.map(|t| t.as_str().to_owned()).unwrap_or_else(|| "public".into())
}

/// NOTIFY payloads, each once: `ready`, `finished`, `cancelled`. They
/// carry no ids: a notification only says where to look, and a receiver
/// reads what changed from its own schema (so a payload is of no use to
/// anyone who could read it, and a forged one changes nothing).
fn payloads(notes: &[Notification]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in notes {
        let p = match n {
            Notification::TasksReady => "ready".to_owned(),
            Notification::ExecutionFinished(_) => "finished".to_owned(),
            Notification::ExecutionCancelled(_) => "cancelled".to_owned(),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The PostgreSQL half of [`PgStorage`].
pub struct PgBackend {
    options: PgConnectOptions,
    tenant: Option<TenantName>,
    pool: PgPool,
    conn: DatabaseConnection,
    channel: String,
    open_report: OpenReport,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("database", &url::describe(&self.options))
            .field("schema", &self.schema_name())
            .finish()
    }
}

impl PgBackend {
    fn classify_plain(&self, e: DbErr) -> StorageError {
        match self.classify(e) {
            TxError::Storage(e) => e,
            TxError::Conflict(m) => StorageError::Busy { message: m, source: None },
        }
    }

    /// The schema in use (`public` without a tenant).
    pub fn schema_name(&self) -> String {
        schema_name(self.tenant.as_ref())
    }
    /// What opening did (schema created? migrations applied?).
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }
    /// The pooled connection (scoped to the schema), for tests and tools.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }
}

fn unavailable(what: String, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::Unavailable { message: what, source: Some(Box::new(e)) }
}

/// Connects once, retrying with backoff until `timeout` passes.
pub(crate) async fn connect_with_retry(o: &PgConnectOptions, timeout: Duration) -> StorageResult<PgConnection> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let remaining = timeout.saturating_sub(start.elapsed());
        let attempt =
            tokio::time::timeout(remaining.max(Duration::from_millis(1)), PgConnection::connect_with(o)).await;
        let err = match attempt {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => e,
            Err(_) => sqlx::Error::PoolTimedOut,
        };
        // Authentication and bad-database errors will not go away.
        if let Some(db) = err.as_database_error()
            && matches!(db.code().as_deref(), Some("28P01") | Some("28000") | Some("3D000"))
        {
            return Err(unavailable(format!("PostgreSQL at {} refused the connection", url::describe(o)), err));
        }
        if start.elapsed() + delay >= timeout {
            return Err(unavailable(
                format!("could not reach PostgreSQL at {} within {:?} (connect_timeout)", url::describe(o), timeout),
                err,
            ));
        }
        tracing::debug!(database = %url::describe(o), "PostgreSQL not reachable yet, retrying in {delay:?}: {err}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Opens a PostgreSQL storage: creates the tenant's schema if needed and
/// applies migrations in it, then opens a pool scoped to it.
pub async fn open(opts: PgOptions) -> StorageResult<PgStorage> {
    let base = url::parse(&opts.url)?;
    let schema = schema_name(opts.tenant.as_ref());
    let quoted = quoted_schema(opts.tenant.as_ref());
    let base = base.application_name("cloacina");

    // The schema and its meta table, on one connection; no lock that
    // another tenant could take (see `setup`).
    let mut setup = connect_with_retry(&base, opts.connect_timeout).await?;
    let lock_ms = opts.connect_timeout.as_millis().clamp(1, i32::MAX as u128);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET lock_timeout = {lock_ms}")))
        .execute(&mut setup)
        .await
        .map_err(|e| unavailable("cannot configure the setup connection".into(), e))?;
    let created = setup::ensure_schema(&mut setup, &schema, &quoted).await?;
    let channel = setup::ensure_meta(&mut setup, &quoted).await?;
    let open_report = OpenReport { created, migrations_applied: Vec::new() };

    let scoped = base.clone().options([("search_path", quoted.as_str())]);
    let expected = schema.clone();
    let pool = PgPoolOptions::new()
        .max_connections(opts.pool_size)
        .acquire_timeout(opts.acquire_timeout)
        .test_before_acquire(true)
        .after_connect(move |conn, _meta| {
            let expected = expected.clone();
            Box::pin(async move {
                let current: Option<String> =
                    sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut *conn).await?;
                // No current schema: the tenant's schema is gone (dropped under
                // a running runner). Such a connection resolves no table at
                // all, so every statement fails at once, naming what is
                // missing — better than the pool retrying the connection until
                // its acquire timeout. Any *other* schema is refused.
                if current.is_some() && current.as_deref() != Some(expected.as_str()) {
                    return Err(sqlx::Error::Configuration(
                        format!("connection is scoped to schema {current:?}, not {expected:?}; refusing it").into(),
                    ));
                }
                Ok(())
            })
        })
        .connect_lazy_with(scoped);
    let conn = SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone());
    let mut backend = PgBackend { options: base, tenant: opts.tenant.clone(), pool, conn, channel, open_report };
    backend.open_report.migrations_applied =
        setup::migrate(&backend, &mut setup, &quoted, opts.connect_timeout).await?;
    drop(setup);
    tracing::debug!(storage = %backend.describe(), report = ?backend.open_report, "PostgreSQL storage open");
    Ok(SqlStorage::new(backend))
}

pub(crate) fn sqlstate(err: &DbErr) -> Option<String> {
    let rt = match err {
        DbErr::Exec(rt) | DbErr::Query(rt) | DbErr::Conn(rt) => rt,
        _ => return None,
    };
    let RuntimeErr::SqlxError(e) = rt else { return None };
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

fn is_connection_error(err: &DbErr) -> bool {
    let rt = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Exec(rt) | DbErr::Query(rt) | DbErr::Conn(rt) => rt,
        _ => return false,
    };
    match rt {
        RuntimeErr::SqlxError(e) => matches!(
            e.as_ref(),
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        ),
        RuntimeErr::Internal(_) => false,
    }
}

#[async_trait]
impl SqlBackend for PgBackend {
    fn describe(&self) -> String {
        format!("{} schema {}", url::describe(&self.options), self.schema_name())
    }

    fn open_report(&self) -> OpenReport {
        self.open_report.clone()
    }

    async fn maintain(&self) -> StorageResult<()> {
        // The claim's plan depends on the statistics of the task table; a
        // burst of new tasks before autovacuum's next analyze would make it
        // sort every ready row. Analyze once a tenth of it changed.
        let stale = "SELECT EXISTS (SELECT 1 FROM pg_stat_user_tables \
                     WHERE schemaname = current_schema() AND relname = 'task_executions' \
                     AND n_mod_since_analyze > GREATEST(1000, n_live_tup / 10))";
        let row = self
            .conn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, stale))
            .await
            .map_err(|e| self.classify_plain(e))?;
        let needed = row.and_then(|r| r.try_get_by_index::<bool>(0).ok()).unwrap_or(false);
        if needed {
            tracing::debug!(storage = %self.describe(), "analyzing task_executions");
            self.conn.execute_unprepared("ANALYZE task_executions").await.map_err(|e| self.classify_plain(e))?;
        }
        Ok(())
    }

    fn reader(&self) -> &DatabaseConnection {
        &self.conn
    }

    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.conn.begin().await
    }

    async fn lock_executions(
        &self,
        txn: &DatabaseTransaction,
        ids: &[uuid::Uuid],
        with_tasks: bool,
    ) -> Result<Option<LockedRows>, DbErr> {
        if ids.is_empty() {
            return Ok(Some(LockedRows::default()));
        }
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let params = (1..=sorted.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let values = || sorted.iter().copied().map(sea_orm::Value::from);
        // Rows are locked in id order, so concurrent lockers never deadlock.
        let lock = format!(
            "SELECT id, workflow_name, workflow_version, state, error, origin, created_at, updated_at, finished_at, \
             workflow_label, unfinished \
             FROM workflow_executions WHERE id IN ({params}) ORDER BY id FOR UPDATE"
        );
        let heads = txn.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, lock, values())).await?;
        let mut locked = LockedRows::default();
        for r in &heads {
            locked.heads.push(ExecutionHead::from_query_result(r, "")?);
        }
        if !with_tasks {
            return Ok(Some(locked));
        }
        // The task rows are read by a second statement, after the locks were
        // granted: under READ COMMITTED a statement that waited for a lock
        // still reads other rows from the snapshot it started with, so
        // reading them in the locking statement could miss a sibling task
        // that a concurrent report completed (and a join would never be
        // promoted).
        let tasks =
            format!("SELECT * FROM task_executions WHERE execution_id IN ({params}) ORDER BY execution_id, position");
        let tasks = txn.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, tasks, values())).await?;
        for r in &tasks {
            locked.tasks.push(task_executions::Model::from_query_result(r, "")?);
        }
        Ok(Some(locked))
    }

    async fn claim_rows(
        &self,
        txn: &DatabaseTransaction,
        req: &ClaimRequest,
        workflow_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<task_executions::Model>, DbErr> {
        if workflow_keys.is_empty() || req.limit == 0 {
            return Ok(Vec::new());
        }
        let mut p = Params::new(DbBackend::Postgres);
        let (set, select) = claim_parts(&mut p, req, workflow_keys, now, "u.fencing_token");
        // Rows another claimer holds are skipped, not waited for.
        let sql = format!(
            "UPDATE task_executions AS u SET {set} FROM ({select} FOR UPDATE OF t SKIP LOCKED) AS c \
             WHERE u.id = c.id RETURNING u.*"
        );
        let values = p.into_values();
        let rows = txn.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
        rows.iter().map(|r| task_executions::Model::from_query_result(r, "")).collect()
    }

    async fn apply_writes(
        &self,
        txn: &DatabaseTransaction,
        w: &Writes,
        notes: &[Notification],
        now: Timestamp,
    ) -> Result<(), TxError> {
        writes::apply(self, txn, w, notes, now).await
    }

    async fn notify_in_txn(&self, txn: &DatabaseTransaction, notes: &[Notification]) -> Result<(), DbErr> {
        let payloads = payloads(notes);
        if payloads.is_empty() {
            return Ok(());
        }
        // One statement for every notification of the transaction.
        let rows = (0..payloads.len()).map(|i| format!("(${})", i + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT pg_notify($1, p) FROM (VALUES {rows}) AS t(p)");
        let mut values: Vec<sea_orm::Value> = vec![self.channel.as_str().into()];
        values.extend(payloads.into_iter().map(sea_orm::Value::from));
        txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
        Ok(())
    }

    fn notify_after_commit(&self, _notes: &[Notification]) {}

    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|e| unavailable(format!("cannot open a LISTEN connection to {}", self.describe()), e))?;
        listener
            .listen(&self.channel)
            .await
            .map_err(|e| unavailable(format!("cannot LISTEN on {}", self.channel), e))?;
        let s = stream::unfold(listener, |mut l| async move {
            let note = match l.try_recv().await {
                // Whatever the payload says, it is only a hint of where to
                // look; unknown payloads mean "look for work".
                Ok(Some(n)) => match n.payload() {
                    "finished" => Notification::ExecutionFinished(None),
                    "cancelled" => Notification::ExecutionCancelled(None),
                    _ => Notification::TasksReady,
                },
                // The connection was lost (it reconnects on the next call):
                // notifications may have been missed, so wake up.
                Ok(None) => Notification::TasksReady,
                Err(e) => {
                    tracing::warn!("LISTEN connection failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Notification::TasksReady
                }
            };
            Some((note, l))
        });
        Ok(Some(s.boxed()))
    }

    fn classify(&self, err: DbErr) -> TxError {
        let describe = self.describe();
        match sqlstate(&err).as_deref() {
            Some("40001") | Some("40P01") => TxError::Conflict(format!("{describe}: {err}")),
            Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                TxError::Storage(StorageError::Unavailable { message: describe, source: Some(Box::new(err)) })
            }
            Some("42P01") | Some("3F000") => TxError::Storage(StorageError::Backend {
                message: format!("{describe}: the tenant's tables or schema are missing (dropped?): {err}"),
                source: Some(Box::new(err)),
            }),
            Some("25006") | Some("53100") => {
                TxError::Storage(StorageError::WriteRefused { message: describe, source: Some(Box::new(err)) })
            }
            _ if is_connection_error(&err) => {
                TxError::Storage(StorageError::Unavailable { message: describe, source: Some(Box::new(err)) })
            }
            _ => TxError::Storage(StorageError::Backend {
                message: format!("{describe}: {err}"),
                source: Some(Box::new(err)),
            }),
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloacina_core::ExecutionId;

    #[test]
    fn payloads_carry_no_ids_and_are_sent_once() {
        let id = ExecutionId::new();
        let notes = [
            Notification::TasksReady,
            Notification::ExecutionFinished(Some(id)),
            Notification::ExecutionCancelled(Some(id)),
            Notification::ExecutionFinished(Some(ExecutionId::new())),
            Notification::TasksReady,
        ];
        assert_eq!(payloads(&notes), ["ready", "finished", "cancelled"]);
    }

    #[test]
    fn options_debug_hides_the_password() {
        let o = PgOptions::new("postgres://app:topsecret@db:5432/app");
        let text = format!("{o:?}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("postgres://app:***@db:5432/app"), "the URL is shown, redacted: {text}");
    }
}
