//! Faults on a real PostgreSQL: the server restarted mid-run, and the
//! runner's connections killed mid-run. Runners reconnect with backoff, no
//! completed result is lost, every workflow finishes, no task completes
//! twice.
//!
//! These tests restart the server: they run on a local cluster whose data
//! directory `cargo xtask test-all` exports (`CLOACINA_CHAOS_PG_*`), one at
//! a time.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use cloacina_runner::core::ports::Storage;
use cloacina_runner::{
    Context, DefaultRunner, ExecutionFilter, ExecutionHandle, ExecutionId, RetryPolicy, TaskError, TaskSpec, TaskState,
    Workflow, WorkflowState, task_fn_with_run,
};
use sqlx::Connection;

/// One fault test at a time: they all restart or disturb the same server.
static SERIAL: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

#[derive(Clone)]
struct ChaosPg {
    url: String,
    data_dir: String,
    bin_dir: String,
    run_as: String,
}

fn chaos_pg() -> ChaosPg {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: the fault tests restart PostgreSQL and need a local cluster. Run them through \
                 `cargo xtask test-all`, which starts one and exports CLOACINA_CHAOS_PG_URL, _DATADIR, _BINDIR and _RUN_AS."
            )
        })
    };
    ChaosPg {
        url: var("CLOACINA_CHAOS_PG_URL"),
        data_dir: var("CLOACINA_CHAOS_PG_DATADIR"),
        bin_dir: var("CLOACINA_CHAOS_PG_BINDIR"),
        run_as: std::env::var("CLOACINA_CHAOS_PG_RUN_AS").unwrap_or_default(),
    }
}

impl ChaosPg {
    fn pg_ctl(&self, args: &[&str]) {
        let exe = format!("{}/pg_ctl", self.bin_dir);
        let mut cmd = if self.run_as.is_empty() {
            Command::new(&exe)
        } else {
            let mut c = Command::new("runuser");
            c.args(["-u", &self.run_as, "--", &exe]);
            c
        };
        // The restarted server must not inherit our pipes (it would hold
        // them open forever): it logs to a file next to its data directory.
        let log = format!("{}/../restart.log", self.data_dir);
        let status = cmd
            .args(["-D", &self.data_dir, "-l", &log])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed; see {log}");
    }

    async fn terminate_runner_connections(&self) -> i64 {
        let mut c = sqlx::postgres::PgConnection::connect(&self.url).await.expect("connect");
        sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'cloacina' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .expect("terminate")
    }

    async fn drop_schema(&self, schema: &str) {
        if let Ok(mut c) = sqlx::postgres::PgConnection::connect(&self.url).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                .execute(&mut c)
                .await;
        }
    }
}

type Runs = Arc<Mutex<HashMap<(ExecutionId, String), usize>>>;

/// `a -> b -> c`; each body counts its runs (outside the runner's tables)
/// and works a little.
fn chain(runs: &Runs) -> Workflow {
    let step = |name: &'static str| {
        let runs = runs.clone();
        TaskSpec::new(
            name,
            task_fn_with_run(move |mut ctx: Context, run| {
                let runs = runs.clone();
                async move {
                    *runs.lock().unwrap().entry((run.execution_id, name.to_owned())).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(5 + (run.execution_id.0.as_u128() % 20) as u64)).await;
                    ctx.set(name, true)?;
                    Ok::<_, TaskError>(ctx)
                }
            }),
        )
        .retry(RetryPolicy::none())
    };
    Workflow::builder("chaos_chain")
        .task(step("a"))
        .task(step("b").depends_on(["a"]))
        .task(step("c").depends_on(["b"]))
        .build()
        .unwrap()
}

async fn runner(pg: &ChaosPg, schema: &str, runs: &Runs) -> DefaultRunner {
    DefaultRunner::builder()
        .database_url(&pg.url)
        .tenant(schema)
        .workflow(chain(runs))
        .lease_ttl(Duration::from_secs(20))
        .heartbeat_interval(Duration::from_millis(500))
        .fallback_poll_interval(Duration::from_millis(100))
        .build()
        .await
        .expect("runner")
}

/// Every execution completed; each task completed once (one `completed`
/// event); each body ran at most 1 + recoveries + releases times.
async fn verify(storage: &dyn Storage, ids: &[ExecutionId], runs: &Runs) {
    let runs = runs.lock().unwrap().clone();
    for id in ids {
        let e = storage.execution(*id).await.unwrap().expect("stored");
        assert_eq!(e.state, WorkflowState::Completed, "{id}: {:?}", e.error);
        let events = storage.events(*id).await.unwrap();
        for t in storage.tasks(*id).await.unwrap() {
            assert_eq!(t.state, TaskState::Completed);
            let done = events.iter().filter(|ev| ev.task_execution_id == Some(t.id) && ev.to == "completed").count();
            assert_eq!(done, 1, "task {} of {id} completed {done} times", t.name);
            let releases = events
                .iter()
                .filter(|ev| {
                    ev.task_execution_id == Some(t.id)
                        && ev.detail.as_deref().is_some_and(|d| d.starts_with("released"))
                })
                .count() as u32;
            let n = runs.get(&(*id, t.name.clone())).copied().unwrap_or(0) as u32;
            assert!(n >= 1 && n <= 1 + t.recovery_count + releases, "task {} of {id} ran {n} times", t.name);
        }
    }
}

async fn submit(r: &DefaultRunner, n: usize) -> Vec<ExecutionHandle> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let mut ctx = Context::new();
        ctx.set("i", i).unwrap();
        v.push(r.execute_async("chaos_chain", ctx).await.expect("submitted"));
    }
    v
}

async fn storage(pg: &ChaosPg, schema: &str) -> cloacina_postgres::PgStorage {
    cloacina_postgres::open(cloacina_postgres::PgOptions::new(&pg.url).tenant(schema).unwrap()).await.unwrap()
}

/// Waits for every workflow to complete, verifies the stored outcome and
/// the body runs, and cleans up.
async fn finish_and_verify(pg: &ChaosPg, schema: &str, r: DefaultRunner, handles: &[ExecutionHandle], runs: &Runs) {
    for h in handles {
        let res = h.wait_timeout(Duration::from_secs(120)).await.expect("every workflow finishes");
        assert_eq!(res.status, WorkflowState::Completed);
    }
    let ids: Vec<ExecutionId> = handles.iter().map(|h| h.id()).collect();
    let s = storage(pg, schema).await;
    verify(&s, &ids, runs).await;
    s.close().await;
    r.shutdown().await.unwrap();
    pg.drop_schema(schema).await;
}

/// The ids of the executions not yet terminal, and whether some execution
/// has completed, as the runner reads them; `None` while storage cannot be
/// read (a killed connection).
async fn progress(r: &DefaultRunner) -> Option<(Vec<ExecutionId>, bool)> {
    let all = r.list_executions(ExecutionFilter { limit: Some(10_000), ..Default::default() }).await.ok()?;
    let unfinished = all.iter().filter(|e| !e.state.is_terminal()).map(|e| e.id).collect();
    Some((unfinished, all.iter().any(|e| e.state == WorkflowState::Completed)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_run() {
    let _serial = SERIAL.lock().await;
    let pg = chaos_pg();
    let schema = cloacina_testkit::pg::unique_name("chaos_restart");
    let runs: Runs = Arc::default();
    let r = runner(&pg, &schema, &runs).await;
    let mut handles = submit(&r, 150).await;
    // Mid-run: some work done, some in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_flight = loop {
        match progress(&r).await {
            Some((unfinished, true)) if !unfinished.is_empty() => break unfinished,
            Some((unfinished, _)) if unfinished.is_empty() => panic!("every execution finished before the restart"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no execution completed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(!in_flight.is_empty());
    let pg_ctl = pg.clone();
    tokio::task::spawn_blocking(move || pg_ctl.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])).await.unwrap();
    // Submissions made while the server is down wait, and go through once
    // it is back.
    let accepted = Arc::new(AtomicUsize::new(0));
    let trying = Arc::new(tokio::sync::Notify::new());
    let mut during = {
        let (r, accepted, trying) = (r.clone(), accepted.clone(), trying.clone());
        tokio::spawn(async move {
            let mut v = Vec::with_capacity(30);
            trying.notify_one();
            for i in 0..30 {
                let mut ctx = Context::new();
                ctx.set("i", 1000 + i).unwrap();
                v.push(r.execute_async("chaos_chain", ctx).await.expect("submitted"));
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            v
        })
    };
    trying.notified().await;
    // Nothing can be stored while the server is down: no submission is
    // acknowledged, however long it waits.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut during).await.is_err(),
        "submissions returned while the server was down"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a submission was acknowledged while the server was down");
    let pg_ctl = pg.clone();
    tokio::task::spawn_blocking(move || pg_ctl.pg_ctl(&["start", "-w", "-t", "60"])).await.unwrap();
    handles.extend(during.await.unwrap());
    assert_eq!(accepted.load(Ordering::SeqCst), 30);
    finish_and_verify(&pg, &schema, r, &handles, &runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_killed_mid_run() {
    let _serial = SERIAL.lock().await;
    let pg = chaos_pg();
    let schema = cloacina_testkit::pg::unique_name("chaos_kill");
    let runs: Runs = Arc::default();
    let r = runner(&pg, &schema, &runs).await;
    let handles = submit(&r, 150).await;
    let mut killed = 0;
    let mut kills_mid_run = 0;
    for _ in 0..3 {
        // Each kill waits until the runner reads storage again (it
        // reconnected) and work is still in flight.
        let deadline = Instant::now() + Duration::from_secs(60);
        let unfinished = loop {
            if let Some((unfinished, _)) = progress(&r).await {
                break unfinished;
            }
            assert!(Instant::now() < deadline, "the runner never read storage again after a kill");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if unfinished.is_empty() {
            break;
        }
        let n = pg.terminate_runner_connections().await;
        killed += n;
        if n > 0 {
            kills_mid_run += 1;
        }
    }
    eprintln!("connections killed: {killed}, by {kills_mid_run} kill(s) while executions were unfinished");
    assert!(killed > 0, "the runner's connections were killed");
    assert!(kills_mid_run > 0, "some kill hit the runner while executions were unfinished");
    finish_and_verify(&pg, &schema, r, &handles, &runs).await;
}
