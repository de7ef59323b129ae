//! # cloacina-sqlite
//!
//! Cloacina's embedded storage: SQLite through sea-orm, one file per
//! tenant.
//!
//! * **Files.** `sqlite://data/app.db` is the legacy single-tenant file;
//!   tenant `acme` lives in `data/app.acme.db` ([`tenant_path`]). The file
//!   is created if missing; its directory must exist. `sqlite::memory:` is
//!   a private in-memory database per opened storage.
//! * **Pragmas.** WAL journal, `synchronous = NORMAL` by default (a commit
//!   survives a process crash; after a power loss the last commits may be
//!   rolled back — choose [`Synchronous::Full`] to keep them too), a busy
//!   timeout, foreign keys on.
//! * **Writes** go through one connection in `BEGIN IMMEDIATE`
//!   transactions, so a claim or a report never races another process's
//!   write; `SQLITE_BUSY` is retried within a bound and then returned as
//!   an error. Reads use a pool of their own.
//! * **Migrations** run on open in one immediate transaction, so several
//!   processes opening a fresh file at once apply them exactly once.
//! * **Wake-ups** between runners of one process go through an in-process
//!   channel per file; other processes are reached by polling.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloacina_core::ports::StorageError> {
//! use cloacina_sqlite::SqliteOptions;
//! let storage = cloacina_sqlite::open(SqliteOptions::new("sqlite://data/app.db").tenant("acme")?).await?;
//! # Ok(()) }
//! ```

mod location;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cloacina_core::ports::{ClaimRequest, Notification, StorageError, StorageResult};
use cloacina_core::{TenantName, Timestamp};
use cloacina_sql::claim::{Params, claim_parts};
use cloacina_sql::entities::task_executions;
use cloacina_sql::{LockedRows, OpenReport, SqlBackend, SqlStorage, TxError};
use futures::stream::{self, BoxStream, StreamExt};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, FromQueryResult, RuntimeErr, SqlxSqliteConnector,
    Statement, TransactionOptions, TransactionTrait,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::broadcast;

/// Rows read per report by this process's commits (shared by both SQL backends).
pub use cloacina_sql::ReportStats;
pub use location::{Location, parse_url, tenant_path};

/// The storage ports on SQLite.
pub type SqliteStorage = SqlStorage<SqliteBackend>;

/// The SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Durable across process crashes; a power loss may roll back the
    /// latest commits. The default, with WAL.
    #[default]
    Normal,
    /// Durable across power loss; each commit waits for an fsync.
    Full,
}

/// How to open a SQLite storage. Every setting has a default.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    url: String,
    tenant: Option<TenantName>,
    read_pool_size: u32,
    busy_timeout: Duration,
    synchronous: Synchronous,
}

impl SqliteOptions {
    /// Options for the database at `url` (see [`parse_url`]).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tenant: None,
            read_pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
        }
    }
    /// Opens tenant `name`'s file instead of the base file. The name is
    /// checked against the tenant rule.
    pub fn tenant(self, name: &str) -> Result<Self, StorageError> {
        Ok(self.tenant_name(Some(TenantName::parse(name)?)))
    }
    /// Sets an already validated tenant (or none: the base file).
    pub fn tenant_name(mut self, name: Option<TenantName>) -> Self {
        self.tenant = name;
        self
    }
    /// Connections for reads. Default 4. Writes always use one connection.
    pub fn read_pool_size(mut self, n: u32) -> Self {
        self.read_pool_size = n.max(1);
        self
    }
    /// How long a write waits for another process's lock before
    /// `SQLITE_BUSY`. Default 5 s.
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }
    /// The `synchronous` pragma. Default [`Synchronous::Normal`].
    pub fn synchronous(mut self, s: Synchronous) -> Self {
        self.synchronous = s;
        self
    }
}

type Channel = broadcast::Sender<Notification>;

/// One channel per database file per process, so runners of one process
/// that share a file wake each other without polling.
static CHANNELS: LazyLock<Mutex<HashMap<PathBuf, Channel>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn channel_for(path: Option<&Path>) -> Channel {
    match path {
        Some(p) => {
            let mut map = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(p.to_path_buf()).or_insert_with(|| broadcast::channel(1024).0).clone()
        }
        None => broadcast::channel(1024).0,
    }
}

/// The SQLite half of [`SqliteStorage`].
#[derive(Debug)]
pub struct SqliteBackend {
    location: Location,
    tenant: Option<TenantName>,
    writer: DatabaseConnection,
    reader: DatabaseConnection,
    channel: Channel,
    open_report: OpenReport,
}

impl SqliteBackend {
    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(p) => Some(p),
            Location::Memory => None,
        }
    }
    /// The tenant, if any.
    pub fn tenant(&self) -> Option<&TenantName> {
        self.tenant.as_ref()
    }
    /// What opening did (file created? migrations applied?).
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }
    /// The write connection, for tests and tools that inspect the file.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.writer
    }
}

fn io_error(path: &Path, message: &str, source: Option<std::io::Error>) -> StorageError {
    StorageError::Io { path: path.to_path_buf(), message: message.to_owned(), source }
}

/// Opens (creating if needed) a SQLite storage and applies migrations.
pub async fn open(opts: SqliteOptions) -> StorageResult<SqliteStorage> {
    let base = parse_url(&opts.url)?;
    let location = match (&base, &opts.tenant) {
        (Location::File(p), Some(t)) => Location::File(tenant_path(p, t)),
        (l, _) => l.clone(),
    };
    let sync = match opts.synchronous {
        Synchronous::Normal => SqliteSynchronous::Normal,
        Synchronous::Full => SqliteSynchronous::Full,
    };
    let (writer, reader, created) = match &location {
        Location::Memory => {
            let o = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| StorageError::invalid_url(&opts.url, e.to_string()))?
                .foreign_keys(true)
                .synchronous(sync);
            // One connection that never closes: a private in-memory database
            // lives exactly as long as its connection.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(o)
                .await
                .map_err(|e| StorageError::Unavailable {
                    message: "cannot open in-memory SQLite".into(),
                    source: Some(Box::new(e)),
                })?;
            let conn = SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
            (conn.clone(), conn, true)
        }
        Location::File(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(io_error(&dir, "the database directory is not a directory", None)),
                Err(e) => {
                    return Err(io_error(&dir, "the database directory does not exist or cannot be read", Some(e)));
                }
            }
            let created = !path.exists();
            let o = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync)
                .busy_timeout(opts.busy_timeout)
                .foreign_keys(true);
            let connect = |max: u32| {
                let pool = SqlitePoolOptions::new()
                    .max_connections(max)
                    .min_connections(0)
                    .acquire_timeout(opts.busy_timeout + Duration::from_secs(5));
                connect_retrying_busy(pool, o.clone(), opts.busy_timeout)
            };
            let map_open = |e: sqlx::Error| {
                let msg = e.to_string();
                // SQLITE_CORRUPT (11) / SQLITE_NOTADB (26): retrying will not help.
                if sqlx_code(&e).is_some_and(|c| matches!(c & 0xff, 11 | 26)) {
                    return StorageError::Backend {
                        message: format!("{} is corrupt or not a SQLite database", path.display()),
                        source: Some(Box::new(e)),
                    };
                }
                if msg.contains("unable to open") || msg.contains("readonly") || msg.contains("read-only") {
                    io_error(path, &format!("cannot open the database file ({msg})"), None)
                } else {
                    StorageError::Unavailable {
                        message: format!("cannot open {}", path.display()),
                        source: Some(Box::new(e)),
                    }
                }
            };
            let writer = connect(1).await.map_err(map_open)?;
            let reader = connect(opts.read_pool_size).await.map_err(map_open)?;
            (
                SqlxSqliteConnector::from_sqlx_sqlite_pool(writer),
                SqlxSqliteConnector::from_sqlx_sqlite_pool(reader),
                created,
            )
        }
    };
    let canonical = match &location {
        Location::File(p) => Some(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        Location::Memory => None,
    };
    let mut backend = SqliteBackend {
        channel: channel_for(canonical.as_deref()),
        location,
        tenant: opts.tenant.clone(),
        writer,
        reader,
        open_report: OpenReport { created, migrations_applied: Vec::new() },
    };
    backend.open_report.migrations_applied = migrate(&backend).await?;
    tracing::debug!(storage = %backend.describe(), migrations = ?backend.open_report.migrations_applied, "SQLite storage open");
    Ok(SqlStorage::new(backend))
}

/// Connects, retrying while the file is busy, within `busy_timeout`.
///
/// A connection's set-up switches a fresh file to WAL, which needs a lock
/// that another process opening the same new file may hold for a moment;
/// SQLite then answers BUSY at once instead of calling the busy handler.
async fn connect_retrying_busy(
    pool: SqlitePoolOptions,
    o: SqliteConnectOptions,
    busy_timeout: Duration,
) -> Result<sqlx::SqlitePool, sqlx::Error> {
    let deadline = std::time::Instant::now() + busy_timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match pool.clone().connect_with(o.clone()).await {
            Err(e) if is_busy(&e) && std::time::Instant::now() + delay < deadline => {
                tracing::debug!(error = %e, "SQLite file busy while connecting; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED, extended codes included.
fn is_busy(e: &sqlx::Error) -> bool {
    sqlx_code(e).is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// The SQLite result code (extended) of a database error.
fn sqlx_code(e: &sqlx::Error) -> Option<i64> {
    e.as_database_error().and_then(|d| d.code()).and_then(|c| c.parse::<i64>().ok())
}

async fn migrate(b: &SqliteBackend) -> StorageResult<Vec<String>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let res = async {
            let txn = b.begin_write().await?;
            let applied = cloacina_sql::migrate(&txn).await?;
            txn.commit().await?;
            Ok::<_, DbErr>(applied)
        }
        .await;
        match res {
            Ok(v) => return Ok(v),
            Err(e) => match b.classify(e) {
                TxError::Conflict(_) if attempt < 10 => tokio::time::sleep(Duration::from_millis(50 * attempt)).await,
                TxError::Conflict(msg) => {
                    return Err(StorageError::Busy { message: format!("migrations: {msg}"), source: None });
                }
                TxError::Storage(e) => return Err(e),
            },
        }
    }
}

fn sqlite_code(err: &DbErr) -> Option<i64> {
    let rt = match err {
        DbErr::Exec(rt) | DbErr::Query(rt) | DbErr::Conn(rt) => rt,
        _ => return None,
    };
    let RuntimeErr::SqlxError(e) = rt else { return None };
    sqlx_code(e)
}

#[async_trait]
impl SqlBackend for SqliteBackend {
    fn describe(&self) -> String {
        match &self.location {
            Location::File(p) => format!("sqlite:{}", p.display()),
            Location::Memory => "sqlite::memory:".into(),
        }
    }

    fn open_report(&self) -> OpenReport {
        self.open_report.clone()
    }

    fn reader(&self) -> &DatabaseConnection {
        &self.reader
    }

    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    async fn lock_executions(
        &self,
        _txn: &DatabaseTransaction,
        _ids: &[uuid::Uuid],
        _with_tasks: bool,
    ) -> Result<Option<LockedRows>, DbErr> {
        // An immediate transaction already excludes every other writer.
        Ok(None)
    }

    async fn claim_rows(
        &self,
        txn: &DatabaseTransaction,
        req: &ClaimRequest,
        workflow_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<task_executions::Model>, DbErr> {
        use sea_orm::ConnectionTrait;
        if workflow_keys.is_empty() || req.limit == 0 {
            return Ok(Vec::new());
        }
        let mut p = Params::new(DbBackend::Sqlite);
        let (set, select) = claim_parts(&mut p, req, workflow_keys, now, "fencing_token");
        let sql = format!("UPDATE task_executions SET {set} WHERE id IN ({select}) RETURNING *");
        let values = p.into_values();
        let rows = txn.query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)).await?;
        rows.iter().map(|r| task_executions::Model::from_query_result(r, "")).collect()
    }

    async fn execute_batch(&self, txn: &DatabaseTransaction, statements: Vec<Statement>) -> Result<u64, DbErr> {
        use sea_orm::ConnectionTrait;
        // One call runs every statement: SQLite binds `?` parameters in
        // order across statements, and the worker thread is crossed once.
        let mut sql = String::new();
        let mut values = Vec::new();
        for s in statements {
            sql.push_str(&s.sql);
            sql.push_str(";\n");
            if let Some(v) = s.values {
                values.extend(v.0);
            }
        }
        Ok(txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)).await?.rows_affected())
    }

    async fn notify_in_txn(&self, _txn: &DatabaseTransaction, _notes: &[Notification]) -> Result<(), DbErr> {
        Ok(())
    }

    fn notify_after_commit(&self, notes: &[Notification]) {
        for n in notes {
            // No receiver is fine: nobody is waiting.
            let _ = self.channel.send(n.clone());
        }
    }

    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>> {
        let rx = self.channel.subscribe();
        let s = stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(n) => Some((n, rx)),
                // Missed some: whatever they were, work may be ready.
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Notification::TasksReady, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Some(s.boxed()))
    }

    fn classify(&self, err: DbErr) -> TxError {
        let describe = self.describe();
        let code = sqlite_code(&err);
        match code.map(|c| (c & 0xff, c)) {
            // BUSY / LOCKED (including BUSY_SNAPSHOT): retry the transaction.
            Some((5, _)) | Some((6, _)) => TxError::Conflict(format!("{describe} is locked by another writer: {err}")),
            Some((8, _)) => TxError::Storage(StorageError::WriteRefused {
                message: format!("{describe} is read-only"),
                source: Some(Box::new(err)),
            }),
            Some((13, _)) => TxError::Storage(StorageError::WriteRefused {
                message: format!("{describe}: the disk or database is full"),
                source: Some(Box::new(err)),
            }),
            Some((10, _)) => TxError::Storage(StorageError::WriteRefused {
                message: format!("{describe}: disk I/O error"),
                source: Some(Box::new(err)),
            }),
            Some((11, _)) | Some((26, _)) => TxError::Storage(StorageError::Backend {
                message: format!("{describe} is corrupt or not a SQLite database"),
                source: Some(Box::new(err)),
            }),
            Some((14, _)) => TxError::Storage(StorageError::Unavailable {
                message: format!("cannot open {describe}"),
                source: Some(Box::new(err)),
            }),
            _ => match err {
                DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
                    TxError::Storage(StorageError::Unavailable { message: describe, source: Some(Box::new(err)) })
                }
                other => TxError::Storage(StorageError::Backend {
                    message: format!("{describe}: {other}"),
                    source: Some(Box::new(other)),
                }),
            },
        }
    }

    async fn close(&self) {
        let _ = self.writer.clone().close().await;
        let _ = self.reader.clone().close().await;
    }
}
