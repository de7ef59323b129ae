//! Faults and bad input at the runner's surface: unreachable databases,
//! bad URLs, a read-only or full disk under SQLite, corrupted rows.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use cloacina_runner::core::ports::{NewExecution, Storage};
use cloacina_runner::{
    Context, DefaultRunner, RetryPolicy, RunnerError, StorageError, TaskError, TaskSpec, Timestamp, Workflow,
    WorkflowState, task_fn,
};
use cloacina_testkit::QueueExt;
use common::TestDb;

fn hello() -> Workflow {
    Workflow::builder("hello")
        .task(
            TaskSpec::new(
                "hi",
                task_fn(|mut ctx: Context| async move {
                    ctx.set("hi", true)?;
                    Ok::<_, TaskError>(ctx)
                }),
            )
            .retry(RetryPolicy::none()),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_database_fails_build_within_the_connect_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let err = DefaultRunner::builder()
        .database_url(format!("postgres://app:pw@127.0.0.1:{port}/app"))
        .connect_timeout(Duration::from_millis(700))
        .build()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "no hang: {:?}", started.elapsed());
    match err {
        RunnerError::Storage(StorageError::Unavailable { message, .. }) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "names the server: {message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_and_schemes_are_typed_errors() {
    for (url, check) in [
        ("mysql://localhost/db", "UnsupportedUrl"),
        ("http://example.com", "UnsupportedUrl"),
        ("", "UnsupportedUrl"),
        ("sqlite://", "InvalidUrl"),
        ("sqlite://x.db?mode=ro", "InvalidUrl"),
        ("postgres://u:pw@h:notaport/db", "InvalidUrl"),
    ] {
        let err = DefaultRunner::new(url).await.unwrap_err();
        let ok = matches!(
            (&err, check),
            (RunnerError::UnsupportedUrl { .. }, "UnsupportedUrl")
                | (RunnerError::Storage(StorageError::InvalidUrl { .. }), "InvalidUrl")
        );
        assert!(ok, "{url:?}: expected {check}, got {err:?}");
        assert!(!format!("{err} {err:?}").contains(":pw@"), "password in {err:?}");
    }
}

#[tokio::test]
async fn invalid_tenant_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    for bad in ["../escape", "tenant-1", "a\"; DROP TABLE x; --", "Ünï", "", "pg_catalog", &"t".repeat(64)] {
        let err = DefaultRunner::with_tenant(&url, bad).await.unwrap_err();
        assert!(matches!(err, RunnerError::InvalidTenant(_)), "{bad}: {err:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file was created");
}

/// A tmpfs mounted for one test (root only: the fault needs a file
/// system that can be made read-only or full).
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(size: &str) -> Self {
        let uid = Command::new("id").arg("-u").output().expect("id");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "this test mounts a tmpfs to make the disk read-only or full, which needs root"
        );
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(ok.success(), "cannot mount a tmpfs at {}", dir.path().display());
        Self { dir }
    }
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
    fn remount(&self, mode: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(self.dir.path()).status().unwrap();
        assert!(ok.success(), "remount {mode}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

async fn integrity(url: &str) -> String {
    use sea_orm::ConnectionTrait;
    let s = cloacina_sqlite::open(cloacina_sqlite::SqliteOptions::new(url)).await.unwrap();
    let row = s
        .backend()
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Sqlite, "PRAGMA integrity_check"))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<String>(0).unwrap()
}

#[tokio::test]
async fn a_read_only_sqlite_file_is_a_clear_error_and_nothing_is_damaged() {
    let m = Mount::new("8m");
    let url = format!("sqlite://{}", m.path().join("app.db").display());
    let r = DefaultRunner::builder().database_url(&url).workflow(hello()).build().await.unwrap();
    let done = r.execute("hello", Context::new()).await.unwrap();
    assert!(done.is_success());
    r.shutdown().await.unwrap();

    m.remount("ro");
    let err = DefaultRunner::builder().database_url(&url).workflow(hello()).build().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RunnerError::Storage(StorageError::Io { .. } | StorageError::WriteRefused { .. })),
        "expected a storage error about the file, got {err:?}"
    );
    assert!(text.contains("app.db") || text.contains("read-only"), "the error names the file or the cause: {text}");

    m.remount("rw");
    assert_eq!(integrity(&url).await, "ok");
    let r = DefaultRunner::builder().database_url(&url).workflow(hello()).build().await.unwrap();
    assert_eq!(r.status(done.id).await.unwrap(), WorkflowState::Completed, "earlier work is intact");
    assert!(r.execute("hello", Context::new()).await.unwrap().is_success());
    r.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_nothing_is_damaged() {
    let m = Mount::new("4m");
    let url = format!("sqlite://{}", m.path().join("app.db").display());
    let r = DefaultRunner::builder().database_url(&url).workflow(hello()).build().await.unwrap();
    let before = r.execute("hello", Context::new()).await.unwrap();
    assert!(before.is_success());
    // Fill the disk.
    let filler = m.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut big = Context::new();
    big.set("blob", "x".repeat(512 * 1024)).unwrap();
    let err = r.execute("hello", big).await.unwrap_err();
    match &err {
        RunnerError::Storage(StorageError::WriteRefused { message, .. }) => {
            assert!(message.contains("full") || message.contains("I/O"), "{message}");
        }
        other => panic!("expected WriteRefused, got {other:?}"),
    }
    std::fs::remove_file(&filler).unwrap();
    assert!(r.execute("hello", Context::new()).await.unwrap().is_success(), "the runner goes on once there is space");
    assert_eq!(r.status(before.id).await.unwrap(), WorkflowState::Completed);
    r.shutdown().await.unwrap();
    assert_eq!(integrity(&url).await, "ok");
}

/// A disk that fills up after a task started: the task's result is kept
/// (not dropped, not rerun), the waiter is told at once why the execution
/// cannot finish, and once there is space again the kept result is
/// written and the execution completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_refused_by_a_full_disk_is_kept_and_written_later() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let m = Mount::new("8m");
    let url = format!("sqlite://{}", m.path().join("app.db").display());
    let (gate, started) =
        (std::sync::Arc::new(tokio::sync::Semaphore::new(0)), std::sync::Arc::new(tokio::sync::Notify::new()));
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let body = {
        let (gate, started, runs) = (gate.clone(), started.clone(), runs.clone());
        TaskSpec::new(
            "a",
            task_fn(move |mut ctx: Context| {
                let (gate, started, runs) = (gate.clone(), started.clone(), runs.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    started.notify_one();
                    gate.acquire().await.map_err(|e| TaskError::fatal(e.to_string()))?.forget();
                    // An output that needs new pages: it cannot fit a full disk.
                    ctx.set("blob", "x".repeat(512 * 1024))?;
                    Ok::<_, TaskError>(ctx)
                }
            }),
        )
        .retry(RetryPolicy::none())
    };
    let wf = Workflow::builder("full").task(body).build().unwrap();
    let r = DefaultRunner::builder().database_url(&url).workflow(wf).build().await.unwrap();
    let h = r.execute_async("full", Context::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), started.notified()).await.expect("the body starts");
    let filler = m.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    gate.add_permits(1);
    match tokio::time::timeout(Duration::from_secs(20), h.wait()).await.expect("an answer in time") {
        Err(RunnerError::ResultNotWritten { execution, problem, .. }) => {
            assert_eq!(execution, h.id());
            assert!(problem.contains("full") || problem.contains("I/O"), "{problem}");
        }
        other => panic!("expected ResultNotWritten, got {other:?}"),
    }
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        match h.wait().await {
            Ok(done) => break done,
            Err(RunnerError::ResultNotWritten { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after space was freed: {e:?}"),
        }
    };
    assert!(done.is_success(), "{done:?}");
    assert_eq!(done.context.get_as::<String>("blob").unwrap().len(), 512 * 1024, "the kept output, intact");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once: its result was kept");
    r.shutdown().await.unwrap();
    assert_eq!(integrity(&url).await, "ok");
}

/// Rows corrupted behind the runner's back: an unreadable input fails only
/// its task (named), an unknown state is reported with its row, and the
/// rest of the tenant keeps working.
async fn corrupted_rows_are_contained(db: TestDb) {
    let wf = hello();
    let set: cloacina_runner::core::WorkflowSet = [wf.clone()].into_iter().collect();
    let bad_input = NewExecution::plan(&wf, Context::new(), "test", Timestamp::now());
    let bad_state = NewExecution::plan(&wf, Context::new(), "test", Timestamp::now());
    let (bad_input_id, bad_state_id, bad_state_task) = (bad_input.id, bad_state.id, bad_state.tasks[0].id);
    let tenant = db.tenant.clone();
    let (exec_sql, task_sql): (String, String);
    if db.url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_sqlite::open(o).await.unwrap();
        s.create_executions(vec![bad_input, bad_state], None, &set, Timestamp::now()).await.unwrap();
        exec_sql = "UPDATE workflow_executions SET input = '{broken' WHERE id = ?".into();
        task_sql = "UPDATE task_executions SET state = 'exploded' WHERE id = ?".into();
        use sea_orm::ConnectionTrait;
        let c = s.backend().connection();
        c.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            exec_sql,
            [bad_input_id.0.into()],
        ))
        .await
        .unwrap();
        c.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            task_sql,
            [bad_state_task.0.into()],
        ))
        .await
        .unwrap();
        s.close().await;
    } else {
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_postgres::open(o).await.unwrap();
        s.create_executions(vec![bad_input, bad_state], None, &set, Timestamp::now()).await.unwrap();
        use sea_orm::ConnectionTrait;
        let c = s.backend().connection();
        c.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE workflow_executions SET input = '{broken' WHERE id = $1",
            [bad_input_id.0.into()],
        ))
        .await
        .unwrap();
        c.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE task_executions SET state = 'exploded' WHERE id = $1",
            [bad_state_task.0.into()],
        ))
        .await
        .unwrap();
        s.close().await;
    }
    let r = db.builder().workflow(wf).build().await.unwrap();
    // The unreadable input fails its task, naming the row; the execution's
    // own result then reports the same row.
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.status(bad_input_id).await.unwrap() != WorkflowState::Failed {
        assert!(Instant::now() < deadline, "the task with the unreadable input did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failure =
        r.history(bad_input_id).await.unwrap().into_iter().find(|e| e.to == "failed" && e.task.is_some()).unwrap();
    let why = failure.detail.unwrap();
    assert!(
        why.contains("workflow_executions") && why.contains(&bad_input_id.to_string()) && why.contains("input"),
        "{why}"
    );
    assert!(matches!(
        r.result(bad_input_id).await,
        Err(RunnerError::Storage(StorageError::CorruptRow { table: "workflow_executions", column: "input", .. }))
    ));
    // The unknown state is reported with its row.
    match r.result(bad_state_id).await.unwrap_err() {
        RunnerError::Storage(StorageError::CorruptRow { table, id, column, problem }) => {
            assert_eq!((table, column), ("task_executions", "state"));
            assert_eq!(id, bad_state_task.to_string());
            assert!(problem.contains("exploded"));
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    // Everything else keeps working.
    for _ in 0..5 {
        assert!(r.execute("hello", Context::new()).await.unwrap().is_success());
    }
    r.shutdown().await.unwrap();
}

/// Runs one statement on the test database's tenant, outside any runner.
async fn raw_sql(db: &TestDb, sql: &str) {
    use sea_orm::ConnectionTrait;
    if db.url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_sqlite::open(o).await.unwrap();
        s.backend().connection().execute_unprepared(sql).await.unwrap();
        s.close().await;
    } else {
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_postgres::open(o).await.unwrap();
        s.backend().connection().execute_unprepared(sql).await.unwrap();
        s.close().await;
    }
}

/// A schedule row corrupted behind the runner's back is named and left
/// alone; the other schedules keep firing; registering it again repairs it.
async fn a_corrupted_schedule_is_named_and_the_others_keep_firing(db: TestDb) {
    use cloacina_runner::{CronSchedule, ExecutionFilter};
    let logs = common::Captured::global("cloacina_runner=info");
    // Unique, because both backends' cases log into one capture.
    let bad = cloacina_testkit::pg::unique_name("bad");
    let builder = || db.builder().workflow(hello()).schedule_poll_interval(Duration::from_millis(50));
    let r = builder().build().await.unwrap();
    r.register_cron(CronSchedule::new("good", "hello", "* * * * * *").unwrap()).await.unwrap();
    // Yearly, so that it cannot fire before it is corrupted; the corruption
    // makes it due.
    r.register_cron(CronSchedule::new(&bad, "hello", "0 0 0 1 1 *").unwrap()).await.unwrap();
    r.shutdown().await.unwrap();
    raw_sql(
        &db,
        &format!(
            "UPDATE schedules SET expression = 'every full moon', next_tick_at = last_tick_at WHERE name = '{bad}'"
        ),
    )
    .await;

    let r = builder().build().await.unwrap();
    match r.list_schedules().await.unwrap_err() {
        RunnerError::Storage(StorageError::CorruptRow { table, id, column, problem }) => {
            assert_eq!((table, id.as_str(), column), ("schedules", bad.as_str(), "expression"));
            assert!(problem.contains("every full moon"), "{problem}");
        }
        other => panic!("expected CorruptRow, got {other:?}"),
    }
    let origins = || async {
        let all = r.list_executions(ExecutionFilter { limit: Some(1000), ..Default::default() }).await.unwrap();
        all.into_iter().map(|e| e.origin).collect::<Vec<_>>()
    };
    let good_ticks = || async { origins().await.iter().filter(|o| o.starts_with("cron:good@")).count() };
    let wait_good = |n: usize, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while good_ticks().await < n {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // The good schedule fires on this runner, then twice more: some forty
    // scheduler rounds (every 50 ms), each of which found the bad schedule
    // due and unreadable.
    let before = good_ticks().await;
    wait_good(before + 1, "the good schedule never fired").await;
    let first = good_ticks().await;
    wait_good(first + 2, "the good schedule stopped firing").await;
    assert!(!origins().await.iter().any(|o| o.starts_with(&format!("cron:{bad}@"))));
    // Told once, not once per round.
    let reported = |what: &str| logs.text().lines().filter(|l| l.contains(&format!("`{bad}` {what}"))).count();
    assert_eq!(reported("cannot be read"), 1, "the unreadable schedule is logged once");
    r.register_cron(CronSchedule::new(&bad, "hello", "* * * * * *").unwrap()).await.unwrap();
    assert_eq!(r.list_schedules().await.unwrap().len(), 2, "registering again repaired it");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reported("can be read again") == 0 {
        assert!(Instant::now() < deadline, "the repair is never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown().await.unwrap();
}

on_both_backends!(corrupted_rows_are_contained, a_corrupted_schedule_is_named_and_the_others_keep_firing);
