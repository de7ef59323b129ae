//! The recovery proofs, with real child processes and real SIGKILLs, on
//! SQLite files and on PostgreSQL:
//!
//! 1. **crash** — runners are killed at random points (20 seeds); a new
//!    runner finishes everything; no task completes twice; each body ran at
//!    most 1 + (the crashes that hit it) times.
//! 2. **graceful** — a runner shut down with work in flight releases it; a
//!    new runner takes it at once although the lease TTL is 10 minutes.
//! 3. **several runners** — 4 processes, 2,000 tasks: every body ran once.
//! 4. **restart** — reopening a tenant neither recreates it nor re-runs
//!    migrations; a legacy runner and a tenant runner coexist.
//! 5. **stall** — a runner frozen (SIGSTOP) past its lease TTL: another
//!    runner takes its tasks over and finishes everything; resumed
//!    (SIGCONT), the frozen one learns it was declared dead, stops its
//!    tasks, registers again and keeps serving; nothing completes twice.
//! 6. **DAGs under several runners** — 2,100 executions of a diamond, a
//!    fan-out / fan-in of width 8 with uneven bodies and a 3-level
//!    pipeline, served by 3 processes with 2 slots each: every execution
//!    completes, every body (every join included) runs exactly once.
//! 7. **DAGs under several runners, with SIGKILLs** — the same shapes and 3
//!    processes, runners killed at random points and replaced (20 seeds):
//!    everything completes, no task completes twice, each body ran at most
//!    1 + (the crashes that hit it) times.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

use cloacina_harness::{Shape, read_journal, workflow, workflows};
use cloacina_runner::core::ports::{ExecutionFilter, NewExecution, Storage};
use cloacina_runner::{Context, Timestamp, WorkflowState};
use cloacina_testkit::QueueExt;
use cloacina_testkit::pg::TestDatabase;
use rand::{RngExt, SeedableRng};

async fn crash_scenario(seed: u64, target: Target) -> Verified {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let crashes: u32 = 1 + (seed % 2) as u32;
    let stable = seed.is_multiple_of(3);
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let id = |n: u32| if stable { format!("stable-{seed}") } else { format!("r{seed}-{n}") };
    let mut args: Vec<String> = FAST_LEASES.iter().map(|s| s.to_string()).collect();
    args.extend(["--concurrency", "6", "--work-ms", "10,60"].map(String::from));

    let with_id = |n: u32, extra: &[&str]| {
        let mut a: Vec<String> = args.clone();
        a.extend(["--runner-id".to_owned(), id(n)]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a0 = with_id(0, &["--submit", "30"]);
    let mut first = Runner::spawn(&target.url, tenant, &journal, &a0.iter().map(String::as_str).collect::<Vec<_>>());
    first.expect_line("SUBMITTED", Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..700))).await;
    first.sigkill();
    for n in 1..crashes {
        let a = with_id(n, &[]);
        let mut r = Runner::spawn(&target.url, tenant, &journal, &a.iter().map(String::as_str).collect::<Vec<_>>());
        r.expect_line("READY", Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..900))).await;
        r.sigkill();
    }
    let a = with_id(crashes, &[]);
    let mut last = Runner::spawn(&target.url, tenant, &journal, &a.iter().map(String::as_str).collect::<Vec<_>>());
    last.expect_line("DONE", Duration::from_secs(120));
    last.wait_exit(Duration::from_secs(30));
    let storage = target.storage().await;
    let v = verify(&*storage, &journal, 30, crashes).await;
    storage.close().await;
    v
}

async fn crash_proof(make: fn() -> Target) {
    let mut totals = Verified::default();
    // 20 seeds in the test suite; `cargo xtask bench` runs more.
    let n: u64 = std::env::var("CLOACINA_CRASH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seeds: Vec<u64> = (1..=n).collect();
    for group in seeds.chunks(4) {
        let mut set = tokio::task::JoinSet::new();
        for &seed in group {
            set.spawn(crash_scenario(seed, make()));
        }
        while let Some(v) = set.join_next().await {
            let v = v.expect("scenario panicked");
            totals.executions += v.executions;
            totals.tasks += v.tasks;
            totals.runs += v.runs;
            totals.recovered_tasks += v.recovered_tasks;
        }
    }
    eprintln!("crash proof: {totals:?}");
    assert_eq!(totals.executions, n as usize * 30);
    assert!(totals.recovered_tasks > 0, "no crash hit a running task in 20 seeds: the proof proved nothing");
}

async fn graceful_proof(target: Target) {
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let ten_minutes = ["--lease-ttl-ms", "600000", "--heartbeat-ms", "2000", "--recovery-ms", "1000"];
    let mut a: Vec<&str> = ten_minutes.to_vec();
    a.extend(["--submit", "20", "--concurrency", "4", "--work-ms", "150,250", "--grace-ms", "50"]);
    let mut first = Runner::spawn(&target.url, tenant, &journal, &a);
    first.expect_line("SUBMITTED", Duration::from_secs(60));
    // Work in flight: bodies (150 to 250 ms each) have started.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_journal(&journal).by_pid.get(&first.child.id()).copied().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no task body started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.sigterm();
    first.expect_line("STOPPED", Duration::from_secs(30));
    first.wait_exit(Duration::from_secs(10));
    assert!(!first.printed("DONE"), "work was left when the runner stopped");

    let started = Instant::now();
    let mut b: Vec<&str> = ten_minutes.to_vec();
    b.extend(["--concurrency", "8", "--work-ms", "1,5"]);
    let mut second = Runner::spawn(&target.url, tenant, &journal, &b);
    second.expect_line("DONE", Duration::from_secs(60));
    let took = started.elapsed();
    second.wait_exit(Duration::from_secs(30));
    // With the leases held, the leftover work would wait for their TTL
    // (10 minutes); released, it takes as long as a start-up and 20
    // executions of a few milliseconds.
    assert!(took < Duration::from_secs(10), "leftover work waited {took:?}: the leases were not released");

    let storage = target.storage().await;
    let v = verify(&*storage, &journal, 20, 0).await;
    assert_eq!(v.recovered_tasks, 0, "a release is not a recovery");
    let mut released = 0;
    for e in storage.list_executions(&ExecutionFilter { limit: Some(100), ..Default::default() }).await.unwrap() {
        released += storage
            .events(e.id)
            .await
            .unwrap()
            .iter()
            .filter(|ev| ev.detail.as_deref().is_some_and(|d| d.contains("released by runner")))
            .count();
    }
    assert!(released > 0, "some task was in flight at shutdown and was released");
    eprintln!("graceful proof: {v:?}, {released} released, leftover finished in {took:?}");
    storage.close().await;
}

async fn several_runners_proof(target: Target) {
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let wf = workflow(Shape::Single, &journal, (0, 2));
    let storage = target.storage().await;
    let set: cloacina_runner::core::WorkflowSet = [wf.clone()].into_iter().collect();
    for chunk in 0..4 {
        let batch: Vec<NewExecution> = (0..500)
            .map(|i| {
                let mut c = Context::new();
                c.set("i", chunk * 500 + i).unwrap();
                NewExecution::plan(&wf, c, "test", Timestamp::now())
            })
            .collect();
        storage.create_executions(batch, None, &set, Timestamp::now()).await.unwrap();
    }
    let args = ["--shape", "single", "--concurrency", "8", "--work-ms", "0,2"];
    let mut runners: Vec<Runner> = (0..4).map(|_| Runner::spawn(&target.url, tenant, &journal, &args)).collect();
    for r in &mut runners {
        r.expect_line("DONE", Duration::from_secs(180));
        r.wait_exit(Duration::from_secs(30));
    }
    let v = verify(&*storage, &journal, 2000, 0).await;
    let j = read_journal(&journal);
    assert!(j.runs.values().all(|&n| n == 1), "every body ran exactly once");
    assert_eq!(v.runs, 2000);
    let pids: HashMap<u32, usize> = j.by_pid;
    eprintln!("several runners: runs per process {pids:?}");
    assert!(pids.len() >= 2, "the work was shared between processes");
    storage.close().await;
}

async fn migration_rows(storage: &dyn Storage, url: &str, tenant: Option<&str>) -> Vec<(String, i64)> {
    let _ = storage;
    if url.starts_with("sqlite:") {
        let s = cloacina_sqlite::open({
            let o = cloacina_sqlite::SqliteOptions::new(url);
            match tenant {
                Some(t) => o.tenant(t).unwrap(),
                None => o,
            }
        })
        .await
        .unwrap();
        use sea_orm::ConnectionTrait;
        let rows = s
            .backend()
            .connection()
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT version, applied_at FROM seaql_migrations ORDER BY version",
            ))
            .await
            .unwrap();
        rows.iter().map(|r| (r.try_get_by_index(0).unwrap(), r.try_get_by_index(1).unwrap())).collect()
    } else {
        use sqlx::Connection;
        let mut c = sqlx::postgres::PgConnection::connect(url).await.unwrap();
        let schema = tenant.unwrap_or("public");
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version, applied_at FROM \"{schema}\".seaql_migrations ORDER BY version"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap()
    }
}

async fn restart_proof(url: String, tenants: [Option<String>; 2], dir: &Path) {
    // Two tenants in one database: the legacy layout and a tenant.
    for (i, tenant) in tenants.iter().enumerate() {
        let journal = dir.join(format!("journal{i}.txt"));
        let t = tenant.as_deref();
        let mut first = Runner::spawn(&url, t, &journal, &["--submit", "5", "--work-ms", "1,5"]);
        let opened = first.expect_line("OPENED", Duration::from_secs(60));
        // PostgreSQL's `public` exists in every database: only the tables are new.
        let all = cloacina_sql::migration_names().len();
        let expected = if t.is_none() && url.starts_with("postgres") {
            format!("OPENED created=false migrations={all}")
        } else {
            format!("OPENED created=true migrations={all}")
        };
        assert_eq!(opened, expected);
        first.expect_line("DONE", Duration::from_secs(60));
        first.wait_exit(Duration::from_secs(30));
        let storage = open_storage(&url, t).await;
        let before = migration_rows(&*storage, &url, t).await;
        assert_eq!(before.len(), all);

        let mut second = Runner::spawn(&url, t, &journal, &["--submit", "3", "--work-ms", "1,5"]);
        assert_eq!(
            second.expect_line("OPENED", Duration::from_secs(60)),
            "OPENED created=false migrations=0",
            "restarting on an existing tenant neither recreates it nor re-runs migrations"
        );
        second.expect_line("DONE", Duration::from_secs(60));
        second.wait_exit(Duration::from_secs(30));
        assert_eq!(migration_rows(&*storage, &url, t).await, before, "the migration record is untouched");
        verify(&*storage, &journal, 8, 0).await;
        storage.close().await;
    }
}

async fn stall_proof(target: Target) {
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    // The frozen runner's liveness row: (incarnation, status, expires_at).
    let liveness = async |id: &str| -> (String, String, i64) {
        if target.url.starts_with("sqlite:") {
            use sea_orm::ConnectionTrait;
            let mut o = cloacina_sqlite::SqliteOptions::new(&target.url);
            if let Some(t) = tenant {
                o = o.tenant(t).unwrap();
            }
            let s = cloacina_sqlite::open(o).await.unwrap();
            let row = s
                .backend()
                .connection()
                .query_one_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Sqlite,
                    "SELECT incarnation, status, expires_at FROM runners WHERE id = ?",
                    [id.into()],
                ))
                .await
                .unwrap()
                .expect("the runner is registered");
            s.close().await;
            (row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap(), row.try_get_by_index(2).unwrap())
        } else {
            use sqlx::Connection;
            let mut c = sqlx::postgres::PgConnection::connect(&target.url).await.unwrap();
            let schema = tenant.unwrap_or("public");
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT incarnation, status, expires_at FROM \"{schema}\".runners WHERE id = $1"
            )))
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    };
    let wait_for = async |what: &str, done: &dyn Fn(&(String, String, i64)) -> bool, id: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = liveness(id).await;
            if done(&row) {
                return row;
            }
            assert!(Instant::now() < deadline, "{what}: the runner's liveness is {row:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let mut a: Vec<&str> = FAST_LEASES.to_vec();
    a.extend(["--submit", "30", "--concurrency", "6", "--work-ms", "300,400", "--no-exit"]);
    let mut first = Runner::spawn(&target.url, tenant, &journal, &a);
    first.expect_line("SUBMITTED", Duration::from_secs(60));
    let id = first.expect_line("READY ", Duration::from_secs(1)).trim_start_matches("READY ").to_owned();
    let pid = first.child.id();
    // Frozen with work in flight: bodies (300 to 400 ms each) have started.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_journal(&journal).by_pid.get(&pid).copied().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no task body started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.signal("STOP");
    let (incarnation, ..) = liveness(&id).await;
    // Frozen past its lease TTL (1 s): no heartbeats, its liveness expires.
    let now = || Timestamp::now().0;
    wait_for("expiry while frozen", &|(_, _, expires_at)| *expires_at < now(), &id).await;

    let mut b: Vec<&str> = FAST_LEASES.to_vec();
    b.extend(["--concurrency", "8", "--work-ms", "1,5"]);
    let mut second = Runner::spawn(&target.url, tenant, &journal, &b);
    second.expect_line("DONE", Duration::from_secs(60));
    second.wait_exit(Duration::from_secs(30));
    let (_, status, _) = liveness(&id).await;
    assert_eq!(status, "dead", "the second runner declared the frozen one dead");

    first.signal("CONT");
    first.expect_log("declared dead", Duration::from_secs(30));
    // It registers again, as a new incarnation.
    let (again, ..) =
        wait_for("registering again", &|(inc, status, _)| status == "alive" && *inc != incarnation, &id).await;
    assert_ne!(again, incarnation);
    // And serves new work: the only runner left, it runs executions stored
    // behind its back.
    let storage = target.storage().await;
    let wf = workflow(Shape::Single, &journal, (0, 0));
    let set: cloacina_runner::core::WorkflowSet = [wf.clone()].into_iter().collect();
    let fresh: Vec<NewExecution> = (0..5)
        .map(|i| {
            let mut c = Context::new();
            c.set("i", 100 + i).unwrap();
            NewExecution::plan(&wf, c, "test", Timestamp::now())
        })
        .collect();
    let fresh_ids: Vec<cloacina_runner::ExecutionId> = fresh.iter().map(|e| e.id).collect();
    storage.create_executions(fresh, None, &set, Timestamp::now()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Journal lines: `<execution> <task> <attempt> <pid>`.
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let served = fresh_ids
            .iter()
            .filter(|e| {
                let (e, p) = (e.to_string(), pid.to_string());
                text.lines().any(|l| l.split(' ').next() == Some(e.as_str()) && l.split(' ').nth(3) == Some(p.as_str()))
            })
            .count();
        let states = storage.execution_states(&fresh_ids).await.unwrap();
        let completed = states.iter().filter(|(_, s)| *s == WorkflowState::Completed).count();
        if served == fresh_ids.len() && completed == fresh_ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the thawed runner served {served} of 5 new executions: {states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.sigterm();
    first.expect_line("STOPPED", Duration::from_secs(30));
    first.wait_exit(Duration::from_secs(10));

    let v = verify(&*storage, &journal, 35, 1).await;
    assert!(v.recovered_tasks > 0, "the frozen runner held tasks, and they were taken over");
    eprintln!("stall proof: {v:?}");
    storage.close().await;
}

/// Two processes both submit and serve on one tenant, at the same time.
async fn two_writers_proof(target: Target) {
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let args = ["--submit", "200", "--concurrency", "8", "--work-ms", "0,3"];
    let mut a = Runner::spawn(&target.url, tenant, &journal, &args);
    let mut b = Runner::spawn(&target.url, tenant, &journal, &args);
    for r in [&mut a, &mut b] {
        r.expect_line("DONE", Duration::from_secs(180));
        r.wait_exit(Duration::from_secs(30));
    }
    let storage = target.storage().await;
    let v = verify(&*storage, &journal, 400, 0).await;
    assert_eq!(v.runs, 400 * 4, "every body of both processes' work ran exactly once");
    storage.close().await;
}

/// Stores `n` executions of the mixed DAG shapes (diamond, fan-in,
/// pipeline in turn) directly, before any runner starts.
async fn submit_mixed(storage: &dyn Storage, journal: &Path, n: usize) {
    let wfs: Vec<cloacina_runner::Workflow> = Shape::DAGS.iter().map(|&s| workflow(s, journal, (0, 0))).collect();
    let set: cloacina_runner::core::WorkflowSet = workflows(journal, (0, 0)).into_iter().collect();
    let mut batch = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Context::new();
        c.set("i", i).unwrap();
        batch.push(NewExecution::plan(&wfs[i % wfs.len()], c, "test", Timestamp::now()));
        if batch.len() == 500 {
            storage.create_executions(std::mem::take(&mut batch), None, &set, Timestamp::now()).await.unwrap();
        }
    }
    if !batch.is_empty() {
        storage.create_executions(batch, None, &set, Timestamp::now()).await.unwrap();
    }
}

/// DAG shapes (diamond, fan-out / fan-in of width 8 with uneven bodies,
/// 3-level pipeline) served by 3 processes with 2 slots each: every body
/// runs exactly once, joins included.
async fn dag_runners_proof(target: Target) {
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let storage = target.storage().await;
    let n = 2100;
    submit_mixed(&*storage, &journal, n).await;
    let args = ["--concurrency", "2", "--work-ms", "1,4"];
    let mut runners: Vec<Runner> = (0..3).map(|_| Runner::spawn(&target.url, tenant, &journal, &args)).collect();
    for r in &mut runners {
        r.expect_line("DONE", Duration::from_secs(300));
        r.wait_exit(Duration::from_secs(30));
    }
    let v = verify(&*storage, &journal, n, 0).await;
    let j = read_journal(&journal);
    let twice: Vec<_> = j.runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "bodies that did not run exactly once: {twice:?}");
    let per_shape: usize = Shape::DAGS.iter().map(|&s| workflow(s, &journal, (0, 0)).len()).sum();
    assert_eq!(v.runs, n / 3 * per_shape, "every task of every execution ran once");
    let joins = j.runs.keys().filter(|(_, t)| t == "d").count();
    assert_eq!(joins, n / 3 * 2, "every diamond and fan-in join ran");
    assert!(j.by_pid.len() >= 2, "the work was shared between processes: {:?}", j.by_pid);
    eprintln!("DAG runners: {v:?}, runs per process {:?}", j.by_pid);
    storage.close().await;
}

/// One seed of the DAG crash proof: 3 runner processes serve 90 mixed
/// executions; runners are SIGKILLed at random points and replaced.
async fn dag_crash_scenario(seed: u64, target: Target) -> Verified {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let storage = target.storage().await;
    let n = 90;
    submit_mixed(&*storage, &journal, n).await;
    let mut args: Vec<String> = FAST_LEASES.iter().map(|s| s.to_string()).collect();
    args.extend(["--concurrency", "2", "--work-ms", "5,30"].map(String::from));
    let stable = seed.is_multiple_of(3);
    let spawn = |slot: usize, generation: u32| {
        let mut a = args.clone();
        let id = if stable { format!("dag{seed}-{slot}") } else { format!("dag{seed}-{slot}-{generation}") };
        a.extend(["--runner-id".to_owned(), id]);
        Runner::spawn(&target.url, tenant, &journal, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut runners: Vec<Runner> = (0..3).map(|slot| spawn(slot, 0)).collect();
    for r in &mut runners {
        r.expect_line("READY", Duration::from_secs(60));
    }
    let crashes: u32 = 1 + (seed % 3) as u32;
    for generation in 1..=crashes {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..900))).await;
        let slot = rng.random_range(0..runners.len());
        if runners[slot].printed("DONE") {
            break;
        }
        runners[slot].sigkill();
        runners[slot] = spawn(slot, generation);
        runners[slot].expect_line("READY", Duration::from_secs(60));
    }
    for r in &mut runners {
        r.expect_line("DONE", Duration::from_secs(120));
        r.wait_exit(Duration::from_secs(30));
    }
    let v = verify(&*storage, &journal, n, crashes).await;
    storage.close().await;
    v
}

async fn dag_crash_proof(make: fn() -> Target) {
    let mut totals = Verified::default();
    let n: u64 = std::env::var("CLOACINA_CRASH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seeds: Vec<u64> = (1..=n).collect();
    for group in seeds.chunks(2) {
        let mut set = tokio::task::JoinSet::new();
        for &seed in group {
            set.spawn(dag_crash_scenario(seed, make()));
        }
        while let Some(v) = set.join_next().await {
            let v = v.expect("scenario panicked");
            totals.executions += v.executions;
            totals.tasks += v.tasks;
            totals.runs += v.runs;
            totals.recovered_tasks += v.recovered_tasks;
        }
    }
    eprintln!("DAG crash proof: {totals:?}");
    assert_eq!(totals.executions, n as usize * 90);
    assert!(totals.recovered_tasks > 0, "no crash hit a running task: the proof proved nothing");
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_submit_and_serve_one_file() {
        two_writers_proof(Target::sqlite(Some("two_writers"))).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn crash() {
        crash_proof(|| Target::sqlite(Some("crash"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stall() {
        stall_proof(Target::sqlite(Some("stall"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn graceful() {
        graceful_proof(Target::sqlite(Some("graceful"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn several_runners() {
        several_runners_proof(Target::sqlite(Some("several"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dag_shapes_under_three_runners() {
        dag_runners_proof(Target::sqlite(Some("dags"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dag_shapes_under_three_runners_with_sigkills() {
        dag_crash_proof(|| Target::sqlite(Some("dag_crash"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn restart_on_an_existing_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("app.db").display());
        restart_proof(url, [None, Some("tenant_001".into())], dir.path()).await;
        assert!(dir.path().join("app.db").exists() && dir.path().join("app.tenant_001.db").exists());
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn crash() {
        crash_proof(Target::postgres).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stall() {
        stall_proof(Target::postgres()).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn graceful() {
        graceful_proof(Target::postgres()).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn several_runners() {
        several_runners_proof(Target::postgres()).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dag_shapes_under_three_runners() {
        dag_runners_proof(Target::postgres()).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn dag_shapes_under_three_runners_with_sigkills() {
        dag_crash_proof(Target::postgres).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn restart_on_an_existing_tenant() {
        let db = TestDatabase::create("restart").await;
        let dir = tempfile::tempdir().unwrap();
        restart_proof(db.url.clone(), [None, Some("tenant_001".into())], dir.path()).await;
    }
}
