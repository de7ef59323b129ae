//! Hardening: no execution stuck, no call that waits forever, no panic —
//! with bad data, a storage that refuses writes, rows that vanish or rot
//! under a waiting `execute`, failing background loops, blocking bodies.
//! On SQLite files and on PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloacina_runner::core::ports::Storage;
use cloacina_runner::{
    Context, ContextError, CronSchedule, DefaultRunner, ExecutionFilter, ExecutionId, RetryPolicy, RunnerError,
    StorageError, TaskError, TaskSpec, TaskState, Workflow, WorkflowState, task_fn, task_fn_with_run,
};
use common::TestDb;

/// How long any answer may take in these tests (they are bounded by design;
/// this only keeps a regression from hanging the suite).
const BOUND: Duration = Duration::from_secs(30);

/// A task whose body waits for `gate` and says when it started.
fn gated(id: &'static str, gate: Arc<tokio::sync::Semaphore>, started: Arc<tokio::sync::Notify>) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn(move |mut ctx: Context| {
            let (gate, started) = (gate.clone(), started.clone());
            async move {
                started.notify_one();
                gate.acquire().await.map_err(|e| TaskError::fatal(e.to_string()))?.forget();
                ctx.set(id, true)?;
                Ok::<_, TaskError>(ctx)
            }
        }),
    )
    .retry(RetryPolicy::none())
}

fn noop(id: &'static str) -> TaskSpec {
    TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) })).retry(RetryPolicy::none())
}

/// `a` (gated) -> `d`.
fn gated_pair(gate: Arc<tokio::sync::Semaphore>, started: Arc<tokio::sync::Notify>) -> Workflow {
    Workflow::builder("gated").task(gated("a", gate, started)).task(noop("d").depends_on(["a"])).build().unwrap()
}

async fn waited<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {BOUND:?}"),
    }
}

/// The storage of the test's tenant, opened apart from any runner.
async fn storage(db: &TestDb) -> Arc<dyn Storage> {
    if db.url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        Arc::new(cloacina_sqlite::open(o).await.unwrap())
    } else {
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        Arc::new(cloacina_postgres::open(o).await.unwrap())
    }
}

/// Runs SQL on the test's tenant (`{id}` replaced by a quoted execution
/// id literal of the backend).
async fn sql(db: &TestDb, text: &str, id: ExecutionId) {
    use sea_orm::ConnectionTrait;
    if db.url.starts_with("sqlite:") {
        let lit = format!("X'{}'", id.0.simple());
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_sqlite::open(o).await.unwrap();
        s.backend().connection().execute_unprepared(&text.replace("{id}", &lit)).await.unwrap();
        s.close().await;
    } else {
        let lit = format!("'{}'", id.0);
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_postgres::open(o).await.unwrap();
        s.backend().connection().execute_unprepared(&text.replace("{id}", &lit)).await.unwrap();
        s.close().await;
    }
}

/// A NUL byte in an error message (PostgreSQL text cannot hold one) is
/// stored escaped; the execution finishes and says what failed.
async fn a_nul_in_an_error_message_is_stored_escaped(db: TestDb) {
    let wf = Workflow::builder("nul")
        .task(
            TaskSpec::new("a", task_fn(|_c: Context| async move { Err::<Context, _>(TaskError::fatal("bad\0byte")) }))
                .retry(RetryPolicy::none()),
        )
        .build()
        .unwrap();
    let r = db.builder().workflow(wf).build().await.unwrap();
    let res = waited("execute", r.execute("nul", Context::new())).await.unwrap();
    assert_eq!(res.status, WorkflowState::Failed);
    let err = res.task("a").unwrap().error.clone().unwrap();
    assert!(err.contains("bad\\0byte"), "{err:?}");
    assert!(!err.contains('\0'));
    let history = r.history(res.id).await.unwrap();
    assert!(history.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.contains("bad\\0byte"))), "{history:?}");
    r.shutdown().await.unwrap();
}

/// An execution whose rows are deleted while `execute` waits on it: the
/// waiter learns it is gone; the late result is discarded; the runner goes
/// on.
async fn a_waiter_learns_its_execution_was_deleted(db: TestDb) {
    let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(tokio::sync::Notify::new()));
    let r = db.builder().workflow(gated_pair(gate.clone(), started.clone())).build().await.unwrap();
    let h = r.execute_async("gated", Context::new()).await.unwrap();
    waited("the body starts", started.notified()).await;
    let wait = tokio::spawn({
        let h = h.clone();
        async move { h.wait().await }
    });
    sql(
        &db,
        "DELETE FROM execution_events WHERE execution_id = {id}; DELETE FROM task_outputs WHERE execution_id = {id}; \
         DELETE FROM task_executions WHERE execution_id = {id}; DELETE FROM workflow_executions WHERE id = {id}",
        h.id(),
    )
    .await;
    match waited("wait", wait).await.unwrap() {
        Err(RunnerError::ExecutionNotFound { id }) => assert_eq!(id, h.id()),
        other => panic!("expected ExecutionNotFound, got {other:?}"),
    }
    gate.add_permits(1);
    let next = r.execute_async("gated", Context::new()).await.unwrap();
    gate.add_permits(1);
    assert!(waited("a later execution", next.wait()).await.unwrap().is_success(), "the runner goes on");
    r.shutdown().await.unwrap();
}

/// A task row overwritten with garbage while `execute` waits: the waiter
/// learns the row is corrupt (named); `status` says so too; the finished
/// task's result is kept, not dropped, and written once the row is
/// repaired, after which the execution completes.
async fn a_waiter_learns_its_rows_are_corrupt_and_nothing_is_lost(db: TestDb) {
    let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(tokio::sync::Notify::new()));
    let r = db.builder().workflow(gated_pair(gate.clone(), started.clone())).build().await.unwrap();
    let h = r.execute_async("gated", Context::new()).await.unwrap();
    waited("the body starts", started.notified()).await;
    let d_row = r.result(h.id()).await.unwrap();
    assert_eq!(d_row.task("d").unwrap().state, TaskState::NotStarted);
    sql(&db, "UPDATE task_executions SET state = 'garbage' WHERE execution_id = {id} AND task_name = 'd'", h.id())
        .await;
    let is_corrupt = |e: &RunnerError| {
        matches!(e, RunnerError::Storage(StorageError::CorruptRow { table: "task_executions", column: "state", problem, .. })
            if problem.contains("garbage"))
    };
    let err = waited("wait", h.wait()).await.unwrap_err();
    assert!(is_corrupt(&err), "expected CorruptRow naming the row, got {err:?}");
    let err = r.status(h.id()).await.unwrap_err();
    assert!(is_corrupt(&err), "status of a corrupt execution is CorruptRow, not a state: {err:?}");
    // The body finishes; its result cannot be applied to unreadable rows.
    gate.add_permits(1);
    match waited("wait", h.wait()).await.unwrap_err() {
        RunnerError::ResultNotWritten { execution, .. } => assert_eq!(execution, h.id()),
        e if is_corrupt(&e) => {}
        other => panic!("expected ResultNotWritten or CorruptRow, got {other:?}"),
    }
    // Repaired: the kept result is written (at its next retry) and the
    // execution completes.
    sql(&db, "UPDATE task_executions SET state = 'not_started' WHERE execution_id = {id} AND task_name = 'd'", h.id())
        .await;
    let deadline = Instant::now() + BOUND;
    let done = loop {
        match waited("wait after the repair", h.wait()).await {
            Ok(done) => break done,
            Err(RunnerError::ResultNotWritten { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after the repair: {e:?}"),
        }
    };
    assert!(done.is_success(), "{done:?}");
    assert_eq!(done.task("a").unwrap().attempts, 1, "the body ran once: its result was kept, not rerun");
    r.shutdown().await.unwrap();
}

/// The tenant's tables dropped while `execute` waits: the waiter gets an
/// error from storage, not silence.
async fn dropping_the_tenant_under_a_waiter_is_an_answer(db: TestDb) {
    let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(tokio::sync::Notify::new()));
    let r = db.builder().workflow(gated_pair(gate.clone(), started.clone())).build().await.unwrap();
    let h = r.execute_async("gated", Context::new()).await.unwrap();
    waited("the body starts", started.notified()).await;
    let wait = tokio::spawn({
        let h = h.clone();
        async move { h.wait().await }
    });
    if db.url.starts_with("sqlite:") {
        sql(
            &db,
            "PRAGMA foreign_keys = OFF; DROP TABLE task_outputs; DROP TABLE execution_events; \
             DROP TABLE task_executions; DROP TABLE workflow_executions",
            h.id(),
        )
        .await;
    } else {
        let schema = db.tenant.clone().unwrap();
        sql(&db, &format!("DROP SCHEMA \"{schema}\" CASCADE"), h.id()).await;
    }
    match waited("wait", wait).await.unwrap() {
        Err(RunnerError::Storage(e)) => assert!(!e.is_transient(), "{e}"),
        Err(RunnerError::ResultNotWritten { .. }) => {}
        other => panic!("expected a storage error, got {other:?}"),
    }
    gate.add_permits(1);
    // Shutting down answers too (the release cannot be written).
    let _ = waited("shutdown", r.shutdown()).await;
}

/// Inputs the runner could not keep are refused at `execute`, and nothing
/// is stored.
async fn inputs_are_checked_at_execute(db: TestDb) {
    let r = db.builder().workflow(Workflow::builder("one").task(noop("a")).build().unwrap()).context_size_limit(1024);
    let r = r.build().await.unwrap();
    let mut big = Context::new();
    big.set("blob", "x".repeat(2000)).unwrap();
    match r.execute("one", big).await.unwrap_err() {
        RunnerError::InputTooLarge { size, limit } => assert!(size > 2000 && limit == 1024),
        other => panic!("expected InputTooLarge, got {other:?}"),
    }
    let mut deep: serde_json::Value = 1.into();
    for _ in 0..150 {
        deep = serde_json::Value::Array(vec![deep]);
    }
    let too_deep: Context = serde_json::from_value(serde_json::json!({ "deep": deep })).unwrap();
    assert!(matches!(
        r.execute_async("one", too_deep).await.unwrap_err(),
        RunnerError::InvalidContext(ContextError::TooDeep { .. })
    ));
    assert!(r.list_executions(ExecutionFilter::default()).await.unwrap().is_empty(), "nothing was stored");
    r.shutdown().await.unwrap();
}

/// A task that hands back a context nested past the limit fails its
/// attempt (permanently, naming the key) instead of crashing anything.
async fn a_too_deep_output_fails_the_attempt(db: TestDb) {
    let wf = Workflow::builder("deep")
        .task(
            TaskSpec::new(
                "a",
                task_fn(|_c: Context| async move {
                    let mut deep: serde_json::Value = 1.into();
                    for _ in 0..150 {
                        deep = serde_json::Value::Array(vec![deep]);
                    }
                    // Deserializing does not check depth: the runner must.
                    let ctx: Context = serde_json::from_value(serde_json::json!({ "nested": deep }))
                        .map_err(|e| TaskError::fatal(e.to_string()))?;
                    Ok::<_, TaskError>(ctx)
                }),
            )
            .retry(RetryPolicy::none()),
        )
        .build()
        .unwrap();
    let r = db.builder().workflow(wf).build().await.unwrap();
    let res = waited("execute", r.execute("deep", Context::new())).await.unwrap();
    assert_eq!(res.status, WorkflowState::Failed);
    let t = res.task("a").unwrap();
    let why = t.error.as_deref().unwrap();
    assert!(why.contains("`nested`") && why.contains("deeper than the limit"), "{t:?}");
    r.shutdown().await.unwrap();
}

/// One unreadable execution row never breaks listing the others.
async fn listing_skips_an_unreadable_row(db: TestDb) {
    let r = db.builder().workflow(Workflow::builder("one").task(noop("a")).build().unwrap()).build().await.unwrap();
    let good = r.execute("one", Context::new()).await.unwrap();
    let bad = r.execute("one", Context::new()).await.unwrap();
    sql(&db, "UPDATE workflow_executions SET input = '[[[' WHERE id = {id}", bad.id).await;
    sql(&db, "UPDATE workflow_executions SET state = 'exploded' WHERE id = {id}", bad.id).await;
    let listed = r.list_executions(ExecutionFilter::default()).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [good.id]);
    assert!(matches!(r.status(bad.id).await, Err(RunnerError::Storage(StorageError::CorruptRow { .. }))));
    r.shutdown().await.unwrap();
}

/// A runner whose background loop panics stops as a whole: its waiters and
/// `shutdown` get the reason, it stops heartbeating, and another runner
/// takes its task over.
async fn a_panicking_loop_fails_the_runner(db: TestDb, which: &'static str) {
    let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(tokio::sync::Notify::new()));
    let armed = Arc::new(AtomicBool::new(false));
    let hook = {
        let armed = armed.clone();
        Arc::new(move |name: &'static str| {
            if name == which && armed.load(Ordering::SeqCst) {
                panic!("injected fault in the {name} loop");
            }
        })
    };
    let fast = |b: cloacina_runner::DefaultRunnerBuilder| {
        b.lease_ttl(Duration::from_millis(1000))
            .heartbeat_interval(Duration::from_millis(100))
            .recovery_interval(Duration::from_millis(100))
            .schedule_poll_interval(Duration::from_millis(50))
    };
    let a =
        fast(db.builder()).workflow(gated_pair(gate.clone(), started.clone())).fault_hook(hook).build().await.unwrap();
    let h = a.execute_async("gated", Context::new()).await.unwrap();
    waited("the body starts", started.notified()).await;
    let wait = tokio::spawn({
        let h = h.clone();
        async move { h.wait().await }
    });
    armed.store(true, Ordering::SeqCst);
    match waited("wait", wait).await.unwrap() {
        Err(RunnerError::Fatal { message }) => assert!(message.contains(which), "{message}"),
        other => panic!("expected Fatal, got {other:?}"),
    }
    match a.shutdown().await {
        Err(RunnerError::Fatal { message }) => assert!(message.contains(&format!("{which} loop")), "{message}"),
        other => panic!("shutdown: expected Fatal, got {other:?}"),
    }
    assert!(matches!(a.execute("gated", Context::new()).await, Err(RunnerError::Fatal { .. })));
    // It stopped heartbeating: another runner recovers its task and
    // finishes the execution.
    gate.add_permits(10);
    let b = fast(db.builder()).workflow(gated_pair(gate.clone(), started.clone())).build().await.unwrap();
    let done = waited("the other runner finishes it", b.handle(h.id()).wait()).await.unwrap();
    assert!(done.is_success(), "{done:?}");
    assert_eq!(done.task("a").unwrap().recoveries, 1, "taken over from the failed runner");
    b.shutdown().await.unwrap();
}

async fn a_panicking_writer_fails_the_runner(db: TestDb) {
    a_panicking_loop_fails_the_runner(db, "writer").await;
}
async fn a_panicking_heartbeat_fails_the_runner(db: TestDb) {
    a_panicking_loop_fails_the_runner(db, "heartbeat").await;
}
async fn a_panicking_scheduler_fails_the_runner(db: TestDb) {
    a_panicking_loop_fails_the_runner(db, "scheduler").await;
}
async fn a_panicking_waiter_poll_fails_the_runner(db: TestDb) {
    a_panicking_loop_fails_the_runner(db, "waiter poll").await;
}
async fn a_panicking_recovery_loop_fails_the_runner(db: TestDb) {
    a_panicking_loop_fails_the_runner(db, "recovery").await;
}

/// Bodies that block their thread for longer than the lease TTL, on every
/// application worker thread, with a second runner sweeping for orphans:
/// the first runner's heartbeats are on threads of its own, so no task of
/// this live runner is taken over, and each body runs exactly once.
async fn blocking_bodies_do_not_cost_a_live_runner_its_leases(db: TestDb) {
    let runs = Arc::new(AtomicUsize::new(0));
    let blocking = {
        let runs = runs.clone();
        TaskSpec::new(
            "block",
            task_fn_with_run(move |ctx: Context, _run| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Blocks this worker thread: 2.5 lease TTLs.
                    std::thread::sleep(Duration::from_millis(2500));
                    Ok::<_, TaskError>(ctx)
                }
            }),
        )
        .retry(RetryPolicy::none())
    };
    let wf = Workflow::builder("blocking").task(blocking).build().unwrap();
    let fast = |b: cloacina_runner::DefaultRunnerBuilder| {
        b.lease_ttl(Duration::from_millis(1000))
            .heartbeat_interval(Duration::from_millis(200))
            .recovery_interval(Duration::from_millis(100))
    };
    let a = fast(db.builder()).workflow(wf.clone()).max_concurrent_tasks(4).build().await.unwrap();
    let sweeper = fast(db.builder()).workflow(wf).max_concurrent_tasks(4).build().await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(a.execute_async("blocking", Context::new()).await.unwrap());
    }
    for h in handles {
        let r = waited("wait", h.wait()).await.unwrap();
        assert!(r.is_success(), "{r:?}");
        assert_eq!(r.task("block").unwrap().recoveries, 0, "a live runner's task was taken over");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4, "every body ran exactly once");
    a.shutdown().await.unwrap();
    sweeper.shutdown().await.unwrap();
}

/// The seed's own path — `with_schema`, then `register_workflow` — finds a
/// crashed runner's tasks requeued by the time `with_schema` returns:
/// requeueing needs no workflow code.
async fn recovery_is_done_before_with_schema_returns(db: TestDb) {
    let (gate, started) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::new(tokio::sync::Notify::new()));
    let crashed = db
        .builder()
        .lease_ttl(Duration::from_millis(500))
        .heartbeat_interval(Duration::from_millis(100))
        .workflow(gated_pair(gate.clone(), started.clone()))
        .build()
        .await
        .unwrap();
    let id = crashed.execute_async("gated", Context::new()).await.unwrap().id();
    waited("the body starts", started.notified()).await;
    // Dropped (every handle) without shutdown: its lease is left to expire, as in a crash.
    // Its heartbeats stopped with it, so its liveness runs out within one
    // lease TTL (500 ms) of the drop.
    drop(crashed);
    let s = storage(&db).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let a = s.tasks(id).await.unwrap().into_iter().find(|t| t.name == "a").unwrap();
    assert_eq!(a.state, TaskState::Running, "nobody recovered it yet");
    let r = match &db.tenant {
        Some(t) => DefaultRunner::with_schema(&db.url, t).await.unwrap(),
        None => DefaultRunner::new(&db.url).await.unwrap(),
    };
    let a = s.tasks(id).await.unwrap().into_iter().find(|t| t.name == "a").unwrap();
    assert_eq!(a.state, TaskState::Ready, "requeued before with_schema returned");
    assert_eq!(a.recovery_count, 1);
    r.register_workflow(gated_pair(gate.clone(), started.clone())).unwrap();
    gate.add_permits(1);
    assert!(waited("wait", r.handle(id).wait()).await.unwrap().is_success());
    r.shutdown().await.unwrap();
    s.close().await;
}

/// A schedule whose workflow this runner does not register is reported
/// once (not on every poll), and shows as stalled once overdue.
async fn a_schedule_nobody_serves_is_reported_and_stalled(db: TestDb) {
    let logs = common::Captured::global("cloacina_runner=info");
    let name = cloacina_testkit::pg::unique_name("orphan_cron");
    let owner = db.builder().workflow(Workflow::builder("only_there").task(noop("a")).build().unwrap());
    let owner = owner.build().await.unwrap();
    owner
        .register_cron(
            CronSchedule::new(&name, "only_there", "* * * * * *")
                .unwrap()
                .misfire_threshold(Duration::from_secs(1))
                .unwrap(),
        )
        .await
        .unwrap();
    owner.shutdown().await.unwrap();
    let r = db
        .builder()
        .workflow(Workflow::builder("other").task(noop("a")).build().unwrap())
        .schedule_poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let said = || logs.text().lines().filter(|l| l.contains(&format!("schedule `{name}` is due but"))).count();
    let deadline = Instant::now() + BOUND;
    while said() == 0 {
        assert!(Instant::now() < deadline, "the unserved schedule was never reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stalled once its tick is overdue by more than the misfire threshold;
    // by then the scheduler polled it dozens of times.
    let deadline = Instant::now() + BOUND;
    loop {
        let s = r.list_schedules().await.unwrap().into_iter().find(|s| s.schedule.name() == name).unwrap();
        if s.is_stalled(cloacina_runner::Timestamp::now()) {
            break;
        }
        assert!(Instant::now() < deadline, "never shown as stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(said(), 1, "reported once per runner, not on every poll");
    r.shutdown().await.unwrap();
}

on_both_backends!(
    a_nul_in_an_error_message_is_stored_escaped,
    a_waiter_learns_its_execution_was_deleted,
    a_waiter_learns_its_rows_are_corrupt_and_nothing_is_lost,
    dropping_the_tenant_under_a_waiter_is_an_answer,
    inputs_are_checked_at_execute,
    a_too_deep_output_fails_the_attempt,
    listing_skips_an_unreadable_row,
    a_panicking_writer_fails_the_runner,
    a_panicking_heartbeat_fails_the_runner,
    a_panicking_scheduler_fails_the_runner,
    a_panicking_waiter_poll_fails_the_runner,
    a_panicking_recovery_loop_fails_the_runner,
    blocking_bodies_do_not_cost_a_live_runner_its_leases,
    recovery_is_done_before_with_schema_returns,
    a_schedule_nobody_serves_is_reported_and_stalled,
);

/// A SQLite file that is not a database is a clear, non-transient error
/// (retrying would never help).
#[tokio::test]
async fn a_file_that_is_not_a_database_is_not_transient() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = DefaultRunner::new(&format!("sqlite://{}", path.display())).await.unwrap_err();
    match &err {
        RunnerError::Storage(e) => {
            assert!(!e.is_transient(), "{e}");
            assert!(e.to_string().contains("not a SQLite database"), "{e}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}
