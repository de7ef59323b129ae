//! One benchmark workload in one process, so its peak RSS is its own.
//! Driven by `cargo xtask bench`; prints one JSON object on stdout.
//!
//! `cloacina-bench --workload simple|pipeline|parallel|burn|versions|fanout|chain|latency|recovery|sqlite-commits
//!   --url URL [--workflows N] [--concurrency C] [--queued N] [--versions N] [--width W] [--depth D]
//!   [--executions E] [--runner PATH]`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloacina_runner::core::WorkflowSet;
use cloacina_runner::core::ports::{ExecutionFilter, NewExecution, Storage};
use cloacina_runner::{
    Context, DefaultRunner, ExecutionId, RetryPolicy, TaskError, TaskSpec, Timestamp, Workflow, WorkflowState, task_fn,
    task_fn_with_run,
};
use cloacina_testkit::QueueExt;

type Args = HashMap<String, String>;

fn parse_args() -> Args {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut args = HashMap::new();
    for pair in raw.chunks(2) {
        if let [k, v] = pair {
            args.insert(k.trim_start_matches("--").to_owned(), v.clone());
        }
    }
    args
}

fn get<T: std::str::FromStr>(a: &Args, k: &str, d: T) -> T {
    a.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn step(
    id: &'static str,
    f: impl Fn(&mut Context) -> Result<(), TaskError> + Send + Sync + Copy + 'static,
) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn(move |mut ctx: Context| async move {
            f(&mut ctx)?;
            Ok(ctx)
        }),
    )
    .retry(RetryPolicy::none())
}

/// The shapes of the original Cloacina perf suite.
fn workflows() -> Vec<Workflow> {
    let simple = Workflow::builder("simple")
        .task(step("hello", |c| {
            c.set("message", "hello from cloacina")?;
            Ok(())
        }))
        .build()
        .expect("valid");
    let pipeline = Workflow::builder("pipeline")
        .task(step("extract", |c| {
            c.set("records", (0..10).collect::<Vec<u32>>())?;
            Ok(())
        }))
        .task(
            step("transform", |c| {
                let r: Vec<u32> = c.get_as("records")?;
                c.set("records", r.iter().map(|x| x * 2).collect::<Vec<u32>>())?;
                Ok(())
            })
            .depends_on(["extract"]),
        )
        .task(
            step("load", |c| {
                let r: Vec<u32> = c.get_as("records")?;
                c.set("loaded", r.len())?;
                Ok(())
            })
            .depends_on(["transform"]),
        )
        .build()
        .expect("valid");
    let batch = |id: &'static str| {
        step(id, move |c| {
            let n: u32 = c.get_as("batch_size")?;
            c.set(id, (0..n).sum::<u32>())?;
            Ok(())
        })
        .depends_on(["setup"])
    };
    let parallel = Workflow::builder("parallel")
        .task(step("setup", |c| {
            c.set("batch_size", 100)?;
            Ok(())
        }))
        .task(batch("batch_1"))
        .task(batch("batch_2"))
        .task(batch("batch_3"))
        .task(
            step("merge", |c| {
                let total: u32 =
                    ["batch_1", "batch_2", "batch_3"].iter().map(|k| c.get_as::<u32>(k).unwrap_or(0)).sum();
                c.set("total", total)?;
                Ok(())
            })
            .depends_on(["batch_1", "batch_2", "batch_3"]),
        )
        .build()
        .expect("valid");
    vec![simple, pipeline, parallel]
}

fn tasks_of(name: &str) -> usize {
    match name {
        "pipeline" => 3,
        "parallel" => 5,
        _ => 1,
    }
}

async fn runner(url: &str, concurrency: usize) -> DefaultRunner {
    let mut b = DefaultRunner::builder().database_url(url).max_concurrent_tasks(concurrency.max(1)).pool_size(16);
    for w in workflows() {
        b = b.workflow(w);
    }
    b.build().await.expect("runner")
}

/// N workflows, C at a time, each result checked.
async fn throughput(url: &str, name: &str, n: usize, c: usize) -> serde_json::Value {
    let r = runner(url, 64).await;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (r, next, name) = (r.clone(), next.clone(), name.to_owned());
        clients.spawn(async move {
            let mut failures = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                let res = r.execute(&name, Context::new()).await.expect("execute");
                let ok = res.status == WorkflowState::Completed
                    && match name.as_str() {
                        "simple" => res.context.contains_key("message"),
                        "pipeline" => res.context.get_as::<usize>("loaded").ok() == Some(10),
                        _ => res.context.get_as::<u32>("total").ok() == Some(3 * 4950),
                    };
                failures += usize::from(!ok);
            }
            failures
        });
    }
    let mut failures = 0;
    while let Some(f) = clients.join_next().await {
        failures += f.expect("client");
    }
    let secs = started.elapsed().as_secs_f64();
    r.shutdown().await.expect("shutdown");
    let tasks = n * tasks_of(name);
    serde_json::json!({
        "workload": name, "workflows": n, "concurrency": c, "seconds": secs,
        "workflows_per_s": n as f64 / secs, "tasks_per_s": tasks as f64 / secs,
        "failures": failures, "peak_rss_kib": peak_rss_kib(),
    })
}

async fn open_storage(url: &str) -> Arc<dyn Storage> {
    if url.starts_with("sqlite:") {
        Arc::new(cloacina_sqlite::open(cloacina_sqlite::SqliteOptions::new(url)).await.expect("open"))
    } else {
        Arc::new(cloacina_postgres::open(cloacina_postgres::PgOptions::new(url)).await.expect("open"))
    }
}

/// Stores `backlog`: so many executions of each workflow, in turn.
async fn store(url: &str, backlog: &[(Workflow, usize)], set: &WorkflowSet) {
    let storage = open_storage(url).await;
    let total: usize = backlog.iter().map(|(_, n)| n).sum();
    let mut left: Vec<usize> = backlog.iter().map(|(_, n)| *n).collect();
    let mut stored = 0;
    while stored < total {
        let mut batch = Vec::with_capacity(2000);
        while batch.len() < 2000 && stored < total {
            for (i, (wf, _)) in backlog.iter().enumerate() {
                if left[i] > 0 && batch.len() < 2000 {
                    left[i] -= 1;
                    stored += 1;
                    batch.push(NewExecution::plan(wf, Context::new(), "bench", Timestamp::now()));
                }
            }
        }
        storage.create_executions(batch, None, set, Timestamp::now()).await.expect("enqueue");
    }
    storage.close().await;
}

/// Stores `backlog` (executions of each workflow, in turn), then times a
/// fresh runner that serves `served` until every stored execution of a
/// served version has finished; `rounds` times (the clock running only
/// while it drains), so a small backlog is measured over enough tasks.
async fn drain(url: &str, served: &[Workflow], backlog: &[(Workflow, usize)], rounds: usize) -> Duration {
    let set: WorkflowSet = served.iter().chain(backlog.iter().map(|(w, _)| w)).cloned().collect();
    let mut drain = Duration::ZERO;
    for _ in 0..rounds {
        store(url, backlog, &set).await;
        // Start the runner without the workflows, so the clock measures the
        // drain, not the start-up; registering them wakes the runner.
        let r = DefaultRunner::builder()
            .database_url(url)
            .max_concurrent_tasks(64)
            .pool_size(16)
            .build()
            .await
            .expect("runner");
        let started = Instant::now();
        for wf in served {
            r.register_workflow(wf.clone()).expect("register");
        }
        for wf in served {
            let unfinished = ExecutionFilter {
                states: vec![WorkflowState::Pending, WorkflowState::Running],
                version: Some(wf.version().to_owned()),
                limit: Some(1),
                ..Default::default()
            };
            while !r.list_executions(unfinished.clone()).await.expect("list").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        drain += started.elapsed();
        r.shutdown().await.expect("shutdown");
    }
    drain
}

/// Single-task executions stored first, then drained by a runner.
async fn burn(url: &str, queued: usize, rounds: usize) -> serde_json::Value {
    let simple = workflows().remove(0);
    let secs = drain(url, std::slice::from_ref(&simple), &[(simple.clone(), queued)], rounds).await.as_secs_f64();
    let tasks = queued * rounds;
    serde_json::json!({
        "workload": format!("burn_{queued}"), "workflows": tasks, "rounds": rounds, "seconds": secs,
        "workflows_per_s": tasks as f64 / secs, "tasks_per_s": tasks as f64 / secs, "peak_rss_kib": peak_rss_kib(),
    })
}

/// Version `i` of a one-task workflow `versioned`: its task is `step_<i>`,
/// so each version is a shape of its own.
fn version_of(i: usize) -> Workflow {
    let id = format!("step_{i}");
    Workflow::builder("versioned")
        .task(
            TaskSpec::new(id, task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) }))
                .retry(RetryPolicy::none()),
        )
        .build()
        .expect("valid")
}

/// Claim cost with `versions` registered versions of one workflow: a
/// backlog of `queued` single-task executions spread over them, beside
/// `queued` ready executions of a version the runner does not serve (which
/// claims must not scan), drained by one runner that registers all of
/// them.
async fn versions(url: &str, versions: usize, queued: usize, rounds: usize) -> serde_json::Value {
    let served: Vec<Workflow> = (0..versions.max(1)).map(version_of).collect();
    let unserved = version_of(versions.max(1) + 1000);
    let share = queued / served.len();
    // Stored once, before every round; never served.
    store(url, &[(unserved.clone(), queued)], &[unserved].into_iter().collect()).await;
    let backlog: Vec<(Workflow, usize)> = served.iter().map(|w| (w.clone(), share)).collect();
    let secs = drain(url, &served, &backlog, rounds).await.as_secs_f64();
    let tasks = share * served.len() * rounds;
    serde_json::json!({
        "workload": format!("versions_{versions}"), "versions": versions, "workflows": tasks, "rounds": rounds,
        "seconds": secs, "tasks_per_s": tasks as f64 / secs, "peak_rss_kib": peak_rss_kib(),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Serial submissions: submit -> task start, submit -> complete.
async fn latency(url: &str) -> serde_json::Value {
    let starts: Arc<Mutex<HashMap<ExecutionId, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let s = starts.clone();
    let probe = Workflow::builder("probe")
        .task(
            TaskSpec::new(
                "start",
                task_fn_with_run(move |ctx: Context, run| {
                    let s = s.clone();
                    async move {
                        s.lock().unwrap().insert(run.execution_id, Instant::now());
                        Ok::<_, TaskError>(ctx)
                    }
                }),
            )
            .retry(RetryPolicy::none()),
        )
        .build()
        .expect("valid");
    let r = DefaultRunner::builder().database_url(url).workflow(probe).build().await.expect("runner");
    let (mut to_start, mut to_done) = (Vec::new(), Vec::new());
    for i in 0..1100 {
        let t0 = Instant::now();
        let res = r.execute("probe", Context::new()).await.expect("execute");
        let done = t0.elapsed();
        let started = starts.lock().unwrap().get(&res.id).copied().expect("the task recorded its start");
        if i >= 100 {
            to_start.push(started.duration_since(t0).as_secs_f64() * 1000.0);
            to_done.push(done.as_secs_f64() * 1000.0);
        }
    }
    r.shutdown().await.expect("shutdown");
    to_start.sort_by(f64::total_cmp);
    to_done.sort_by(f64::total_cmp);
    serde_json::json!({
        "workload": "latency", "samples": to_start.len(),
        "start_p50_ms": percentile(&to_start, 50.0), "start_p95_ms": percentile(&to_start, 95.0), "start_p99_ms": percentile(&to_start, 99.0),
        "complete_p50_ms": percentile(&to_done, 50.0), "complete_p95_ms": percentile(&to_done, 95.0), "complete_p99_ms": percentile(&to_done, 99.0),
        "peak_rss_kib": peak_rss_kib(),
    })
}

/// Single-row commits with the adapter's pragmas: SQLite's own ceiling.
async fn sqlite_commits(url: &str) -> serde_json::Value {
    use sea_orm::ConnectionTrait;
    let storage = cloacina_sqlite::open(cloacina_sqlite::SqliteOptions::new(url)).await.expect("open");
    let conn = storage.backend().connection();
    conn.execute_unprepared("CREATE TABLE IF NOT EXISTS bench_commits (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .expect("table");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "INSERT INTO bench_commits (v) VALUES (?)",
            ["x".into()],
        ))
        .await
        .expect("insert");
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    serde_json::json!({ "workload": "sqlite_commits", "commits_per_s": n as f64 / secs, "seconds": secs })
}

/// A child runner holding in-flight tasks is killed (or stopped); how long
/// until a new runner has completed them all.
async fn recovery(
    url: &str,
    runner_exe: &str,
    graceful: bool,
    in_flight: usize,
    lease_ttl_ms: u64,
) -> serde_json::Value {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("cloacina-bench-recovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let journal = dir.join("journal.txt");
    let mut child = std::process::Command::new(runner_exe)
        .args(["--url", url, "--shape", "single", "--submit", &in_flight.to_string()])
        .args(["--concurrency", &in_flight.to_string(), "--work-ms", "600000,600000", "--grace-ms", "0", "--no-exit"])
        .args(["--lease-ttl-ms", &lease_ttl_ms.to_string(), "--heartbeat-ms", &(lease_ttl_ms / 5).to_string()])
        .arg("--journal")
        .arg(&journal)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runner");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    for l in lines.by_ref() {
        if l.expect("line").starts_with("SUBMITTED") {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while cloacina_harness::read_journal(&journal).runs.len() < in_flight {
        assert!(Instant::now() < deadline, "the child did not start its tasks");
        std::thread::sleep(Duration::from_millis(20));
    }
    if graceful {
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    } else {
        child.kill().expect("SIGKILL");
    }
    let _ = child.wait();
    let t0 = Instant::now();
    let wf = cloacina_harness::workflow(cloacina_harness::Shape::Single, &journal, (0, 0));
    let r = DefaultRunner::builder()
        .database_url(url)
        .workflow(wf)
        .max_concurrent_tasks(64)
        .lease_ttl(Duration::from_millis(lease_ttl_ms))
        .heartbeat_interval(Duration::from_millis(lease_ttl_ms / 5))
        .build()
        .await
        .expect("runner");
    let unfinished = ExecutionFilter {
        states: vec![WorkflowState::Pending, WorkflowState::Running],
        limit: Some(1),
        ..Default::default()
    };
    while !r.list_executions(unfinished.clone()).await.expect("list").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    r.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::json!({
        "workload": if graceful { "recovery_graceful" } else { "recovery_sigkill" },
        "in_flight": in_flight, "seconds_to_complete": secs, "peak_rss_kib": peak_rss_kib(),
    })
}

/// Output bytes the bench's task bodies handed back (what storage keeps
/// as their outputs), summed.
static OUTPUT_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_output(ctx: &Context) {
    OUTPUT_BYTES.fetch_add(ctx.serialized_size() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// `1 → width → 1` in one workflow: a root, `width` branches that each
/// write one key, and a join that counts them.
fn fanout_workflow(width: usize) -> Workflow {
    let noop = |id: String, deps: Vec<String>| {
        TaskSpec::new(
            id.clone(),
            task_fn(move |mut ctx: Context| {
                let id = id.clone();
                async move {
                    if id == "join" {
                        let n = ctx.keys().filter(|k| k.starts_with('b')).count();
                        ctx.set("branches", n)?;
                    } else if id != "root" {
                        ctx.set(&id, 1)?;
                    }
                    count_output(&ctx);
                    Ok::<_, TaskError>(ctx)
                }
            }),
        )
        .depends_on(deps)
        .retry(RetryPolicy::none())
    };
    let branches: Vec<String> = (0..width).map(|i| format!("b{i}")).collect();
    let mut b = Workflow::builder(format!("fanout_{width}")).task(noop("root".into(), vec![]));
    for id in &branches {
        b = b.task(noop(id.clone(), vec!["root".into()]));
    }
    b.task(noop("join".into(), branches)).build().expect("valid")
}

/// A chain of `depth` tasks, each adding a key to the context it passes on.
fn chain_workflow(depth: usize) -> Workflow {
    let mut b = Workflow::builder(format!("chain_{depth}"));
    for i in 0..depth {
        let key = format!("s{i}");
        let spec = TaskSpec::new(
            key.clone(),
            task_fn(move |mut ctx: Context| {
                let key = key.clone();
                async move {
                    ctx.set(&key, i)?;
                    count_output(&ctx);
                    Ok::<_, TaskError>(ctx)
                }
            }),
        )
        .retry(RetryPolicy::none());
        b = b.task(if i == 0 { spec } else { spec.depends_on([format!("s{}", i - 1)]) });
    }
    b.build().expect("valid")
}

/// `executions` executions of `wf` started at once; every one must
/// complete with `check` holding on its result.
async fn wide_or_deep(
    url: &str,
    label: &str,
    wf: Workflow,
    executions: usize,
    check: impl Fn(&Context) -> bool,
) -> serde_json::Value {
    let tasks = wf.len() * executions;
    let name = wf.name().to_owned();
    let r = DefaultRunner::builder()
        .database_url(url)
        .max_concurrent_tasks(64)
        .pool_size(16)
        .workflow(wf)
        .build()
        .await
        .expect("runner");
    let started = Instant::now();
    let stats_before = cloacina_runner::ReportStats::now();
    let mut handles = Vec::with_capacity(executions);
    for _ in 0..executions {
        handles.push(r.execute_async(&name, Context::new()).await.expect("execute"));
    }
    let mut failures = 0usize;
    for h in handles {
        let res = h.await.expect("wait");
        failures += usize::from(!(res.is_success() && check(&res.context)));
    }
    let secs = started.elapsed().as_secs_f64();
    r.shutdown().await.expect("shutdown");
    let bytes = OUTPUT_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let rows_per_report = cloacina_runner::ReportStats::now().rows_per_report_since(&stats_before);
    serde_json::json!({
        "workload": label, "executions": executions, "tasks": tasks, "seconds": secs,
        "tasks_per_s": tasks as f64 / secs, "output_bytes_per_task": bytes as f64 / tasks as f64,
        "rows_read_per_report": rows_per_report,
        "failures": failures, "peak_rss_kib": peak_rss_kib(),
    })
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let a = parse_args();
    let url = a.get("url").cloned().expect("--url");
    let workload = a.get("workload").cloned().unwrap_or_else(|| "simple".into());
    let n = get(&a, "workflows", 1000usize);
    let c = get(&a, "concurrency", 32usize);
    let out = match workload.as_str() {
        "simple" | "pipeline" | "parallel" => throughput(&url, &workload, n, c).await,
        "versions" => {
            let queued = get(&a, "queued", 1000usize);
            versions(&url, get(&a, "versions", 1usize), queued, get(&a, "rounds", 10usize)).await
        }
        "burn" => {
            let queued = get(&a, "queued", 1000usize);
            let rounds = get(&a, "rounds", if queued <= 10_000 { 10 } else { 1 });
            burn(&url, queued, rounds).await
        }
        "fanout" => {
            let width = get(&a, "width", 500usize);
            let executions = get(&a, "executions", 1usize);
            let label = format!("fanout_{width}x{executions}");
            wide_or_deep(&url, &label, fanout_workflow(width), executions, |c| {
                c.get_as::<usize>("branches").ok() == Some(width)
            })
            .await
        }
        "chain" => {
            let depth = get(&a, "depth", 500usize);
            let label = format!("chain_{depth}");
            wide_or_deep(&url, &label, chain_workflow(depth), get(&a, "executions", 1usize), |c| c.len() == depth).await
        }
        "latency" => latency(&url).await,
        "sqlite-commits" => sqlite_commits(&url).await,
        "recovery" | "recovery-graceful" => {
            let exe = a.get("runner").map(PathBuf::from).expect("--runner PATH of cloacina-harness-runner");
            let ttl = get(&a, "lease-ttl-ms", 10_000u64);
            recovery(
                &url,
                &exe.display().to_string(),
                workload == "recovery-graceful",
                get(&a, "in-flight", 200usize),
                ttl,
            )
            .await
        }
        other => panic!("unknown workload {other}"),
    };
    println!("{out}");
}
