//! What only SQLite has: files per tenant, pragmas, opening errors, rows
//! corrupted behind the adapter's back.

use cloacina_core::ports::{ClaimOwner, ClaimRequest, ExecutionStore, NewExecution, Storage, StorageError};
use cloacina_core::{Context, RunnerId, TenantNameError, Timestamp, WorkflowSet};
use cloacina_sqlite::SqliteOptions;
use cloacina_testkit::QueueExt;
use cloacina_testkit::contract::{T0, single};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("app.db").display())
}

async fn scalar(s: &cloacina_sqlite::SqliteStorage, sql: &str) -> String {
    let row = s
        .backend()
        .connection()
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await
        .unwrap()
        .expect("a row");
    row.try_get_by_index::<String>(0).or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string())).unwrap()
}

#[tokio::test]
async fn pragmas_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let s = cloacina_sqlite::open(SqliteOptions::new(url(&dir))).await.unwrap();
    assert_eq!(scalar(&s, "PRAGMA journal_mode").await, "wal");
    assert_eq!(scalar(&s, "PRAGMA foreign_keys").await, "1");
    assert_eq!(scalar(&s, "PRAGMA synchronous").await, "1", "NORMAL");
    assert_eq!(scalar(&s, "PRAGMA busy_timeout").await, "5000");
}

#[tokio::test]
async fn missing_directory_is_a_clear_error_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no").join("such").join("dir");
    let err =
        cloacina_sqlite::open(SqliteOptions::new(format!("sqlite://{}/app.db", missing.display()))).await.unwrap_err();
    match err {
        StorageError::Io { path, message, .. } => {
            assert_eq!(path, missing);
            assert!(message.contains("does not exist"), "{message}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let file = dir.path().join("plain_file");
    std::fs::write(&file, b"x").unwrap();
    let err =
        cloacina_sqlite::open(SqliteOptions::new(format!("sqlite://{}/app.db", file.display()))).await.unwrap_err();
    assert!(matches!(err, StorageError::Io { ref path, .. } if *path == file), "{err:?}");
}

#[tokio::test]
async fn invalid_tenant_names_are_refused_before_any_file_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["../escape", "a/b", "..", "x.y", "tenant-1", ""] {
        let err = SqliteOptions::new(url(&dir)).tenant(bad).unwrap_err();
        assert!(matches!(err, StorageError::InvalidTenant(_)), "{bad}: {err:?}");
    }
    assert!(matches!(
        SqliteOptions::new(url(&dir)).tenant("../etc/passwd"),
        Err(StorageError::InvalidTenant(TenantNameError::InvalidCharacter { found: '.', position: 0, .. }))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn invalid_urls_are_refused() {
    for bad in ["postgres://localhost/db", "sqlite://", "sqlite://x.db?mode=ro", "file.db"] {
        let err = cloacina_sqlite::open(SqliteOptions::new(bad)).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidUrl { .. }), "{bad}: {err:?}");
    }
}

#[tokio::test]
async fn tenant_files_are_derived_from_the_base_file() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = cloacina_sqlite::open(SqliteOptions::new(url(&dir))).await.unwrap();
    let acme = cloacina_sqlite::open(SqliteOptions::new(url(&dir)).tenant("acme").unwrap()).await.unwrap();
    assert_eq!(legacy.backend().path().unwrap(), dir.path().join("app.db"));
    assert_eq!(acme.backend().path().unwrap(), dir.path().join("app.acme.db"));
    assert!(dir.path().join("app.acme.db").exists());
}

#[tokio::test]
async fn memory_databases_are_private() {
    let a = cloacina_sqlite::open(SqliteOptions::new("sqlite::memory:")).await.unwrap();
    let b = cloacina_sqlite::open(SqliteOptions::new("sqlite::memory:")).await.unwrap();
    let wf = single();
    let wfs: WorkflowSet = [wf.clone()].into_iter().collect();
    let new = NewExecution::plan(&wf, Context::new(), "test", T0);
    let id = new.id;
    a.create_executions(vec![new], None, &wfs, T0).await.unwrap();
    assert!(a.execution(id).await.unwrap().is_some());
    assert!(b.execution(id).await.unwrap().is_none());
}

/// Several openers race on a file that does not exist yet (the switch to
/// WAL and the migrations both need the file's lock): every opening
/// succeeds and exactly one applies the migrations. Repeated on fresh
/// files, because the race is a narrow window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_openings_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(&dir);
    let all = cloacina_sql::migration_names().len();
    for round in 0..20 {
        let tenant = format!("fresh_{round}");
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let (u, t) = (u.clone(), tenant.clone());
                tokio::spawn(async move { cloacina_sqlite::open(SqliteOptions::new(u).tenant(&t).unwrap()).await })
            })
            .collect();
        let mut applied = 0;
        for h in opens {
            let s = h.await.unwrap().unwrap_or_else(|e| panic!("round {round}: an opening failed: {e:?}"));
            applied += s.backend().open_report().migrations_applied.len();
            s.close().await;
        }
        assert_eq!(applied, all, "round {round}: exactly one opening applied the migrations");
        let s = cloacina_sqlite::open(SqliteOptions::new(u.clone()).tenant(&tenant).unwrap()).await.unwrap();
        assert_eq!(scalar(&s, "SELECT COUNT(*) FROM seaql_migrations").await, all.to_string());
        s.close().await;
    }
}

#[tokio::test]
async fn corrupted_rows_are_reported_with_the_row_and_the_rest_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let s = cloacina_sqlite::open(SqliteOptions::new(url(&dir))).await.unwrap();
    let wf = single();
    let wfs: WorkflowSet = [wf.clone()].into_iter().collect();
    let bad = NewExecution::plan(&wf, Context::new(), "test", T0);
    let good = NewExecution::plan(&wf, Context::new(), "test", T0);
    let (bad_id, bad_task, good_id) = (bad.id, bad.tasks[0].id, good.id);
    s.create_executions(vec![bad, good], None, &wfs, T0).await.unwrap();
    let conn = s.backend().connection();
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "UPDATE task_executions SET state = 'exploded' WHERE id = ?",
        [bad_task.0.into()],
    ))
    .await
    .unwrap();
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "UPDATE workflow_executions SET input = '{not json' WHERE id = ?",
        [bad_id.0.into()],
    ))
    .await
    .unwrap();
    match s.tasks(bad_id).await.unwrap_err() {
        StorageError::CorruptRow { table, id, column, problem } => {
            assert_eq!((table, column), ("task_executions", "state"));
            assert_eq!(id, bad_task.to_string());
            assert!(problem.contains("exploded"), "{problem}");
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    match s.execution(bad_id).await.unwrap_err() {
        StorageError::CorruptRow { table, id, column, .. } => {
            assert_eq!((table, column), ("workflow_executions", "input"));
            assert_eq!(id, bad_id.to_string());
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    // The rest of the tenant keeps working.
    assert!(s.execution(good_id).await.unwrap().is_some());
    let owner = ClaimOwner {
        runner: RunnerId::parse("r").unwrap(),
        incarnation: "i".into(),
        lease_ttl: std::time::Duration::from_secs(5),
    };
    let claimed = s.claim(&ClaimRequest { owner, limit: 10 }, &wfs, Timestamp(T0.0 + 1)).await.unwrap().claimed;
    assert_eq!(claimed.iter().map(|c| c.execution_id).collect::<Vec<_>>(), vec![good_id]);

    // NULL where the domain needs a value: a running task without a lease.
    let running = claimed[0].id;
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "UPDATE task_executions SET lease_owner = NULL WHERE id = ?",
        [running.0.into()],
    ))
    .await
    .unwrap();
    match s.tasks(good_id).await.unwrap_err() {
        StorageError::CorruptRow { table, id, column, problem } => {
            assert_eq!((table, column), ("task_executions", "lease_owner"));
            assert_eq!(id, running.to_string());
            assert!(problem.contains("NULL lease"), "{problem}");
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
}

/// A file written by an earlier version (only the first migration) is
/// upgraded in place when opened: the new migrations run once, the old
/// executions are kept.
#[tokio::test]
async fn a_file_from_an_earlier_version_is_upgraded_in_place() {
    use cloacina_core::ports::{Schedules, Storage};
    use sea_orm_migration::MigratorTrait;
    let dir = tempfile::tempdir().unwrap();
    let u = url(&dir);
    let path = dir.path().join("app.db");
    {
        let old = sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
        cloacina_sql::Migrator::up(&old, Some(1)).await.unwrap();
        old.execute_unprepared(
            "INSERT INTO workflow_executions (id, workflow_name, workflow_version, state, input, origin, created_at, updated_at) \
             VALUES (X'0123456789abcdef0123456789abcdef', 'single', 'v1', 'completed', '{}', 'api', 1, 1)",
        )
        .await
        .unwrap();
        old.close().await.unwrap();
    }
    let s = cloacina_sqlite::open(SqliteOptions::new(&u)).await.unwrap();
    let report = s.backend().open_report().clone();
    assert!(!report.created, "the file existed");
    assert_eq!(report.migrations_applied, cloacina_sql::migration_names()[1..].to_vec());
    assert!(s.schedules().await.unwrap().is_empty(), "the new tables exist");
    let id = cloacina_core::ExecutionId(uuid::Uuid::parse_str("0123456789abcdef0123456789abcdef").unwrap());
    assert!(s.execution(id).await.unwrap().is_some(), "old executions are kept");
    s.close().await;
    let again = cloacina_sqlite::open(SqliteOptions::new(&u)).await.unwrap();
    assert!(again.backend().open_report().migrations_applied.is_empty(), "nothing runs twice");
}
