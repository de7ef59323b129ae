//! DefaultRunner behaviour, on SQLite files and on PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloacina_runner::{
    Backoff, Context, DefaultRunner, ExecutionFilter, RetryCondition, RetryPolicy, RunnerError, TaskError, TaskSpec,
    TaskState, TriggerRule, Workflow, WorkflowState, task_fn, task_fn_with_run,
};
use common::TestDb;

fn add(key: &'static str) -> TaskSpec {
    TaskSpec::new(
        key,
        task_fn(move |mut ctx: Context| async move {
            let seen: Vec<String> = ctx.keys().map(str::to_owned).collect();
            ctx.set(key, seen)?;
            Ok::<_, TaskError>(ctx)
        }),
    )
    .retry(RetryPolicy::none())
}

fn fail(id: &'static str) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn(|_ctx: Context| async move { Err::<Context, _>(TaskError::permanent("broken on purpose")) }),
    )
    .retry(RetryPolicy::none())
}

async fn diamond_data_flow(db: TestDb) {
    let wf = Workflow::builder("diamond")
        .task(add("a"))
        .task(add("b").depends_on(["a"]))
        .task(add("c").depends_on(["a"]))
        .task(add("d").depends_on(["b", "c"]))
        .build()
        .unwrap();
    let runner = db.builder().workflow(wf).build().await.unwrap();
    let mut input = Context::new();
    input.set("input", 1).unwrap();
    let r = runner.execute("diamond", input).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed, "{r:?}");
    let seen = |k: &str| r.context.get_as::<Vec<String>>(k).unwrap();
    assert_eq!(seen("a"), ["input"], "the root gets the input");
    assert_eq!(seen("b"), ["a", "input"]);
    assert_eq!(seen("c"), ["a", "input"]);
    assert_eq!(seen("d"), ["a", "b", "c", "input"], "d gets both branches merged");
    assert!(r.tasks.iter().all(|t| t.state == TaskState::Completed && t.attempts == 1));
    assert_eq!(runner.status(r.id).await.unwrap(), WorkflowState::Completed);
    runner.shutdown().await.unwrap();
}

async fn trigger_rules_and_upstream_failed_skips(db: TestDb) {
    let wf = Workflow::builder("triggers")
        .task(fail("a"))
        .task(add("b").depends_on(["a"]))
        .task(add("on_failure").depends_on(["a"]).trigger(TriggerRule::OneFailed))
        .task(add("always").depends_on(["b", "on_failure"]).trigger(TriggerRule::AllDone))
        .task(add("after_b").depends_on(["b"]))
        .build()
        .unwrap();
    let runner = db.builder().workflow(wf).build().await.unwrap();
    let r = runner.execute("triggers", Context::new()).await.unwrap();
    let state = |t: &str| r.task(t).unwrap().state;
    assert_eq!(state("a"), TaskState::Failed);
    assert_eq!(state("b"), TaskState::Skipped);
    assert!(r.task("b").unwrap().error.as_deref().unwrap().contains("upstream failed"));
    assert_eq!(state("after_b"), TaskState::Skipped, "a skip cascades");
    assert_eq!(state("on_failure"), TaskState::Completed);
    assert_eq!(state("always"), TaskState::Completed);
    assert_eq!(r.status, WorkflowState::Failed);
    assert!(r.error.as_deref().unwrap().contains("broken on purpose"));
    runner.shutdown().await.unwrap();
}

async fn retries_follow_backoff_from_stored_timestamps(db: TestDb) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let flaky = TaskSpec::new(
        "flaky",
        task_fn(move |ctx: Context| {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(TaskError::transient("not yet"));
                }
                Ok(ctx)
            }
        }),
    )
    .retry(
        RetryPolicy::builder()
            .total_attempts(3)
            .backoff(Backoff::Fixed(Duration::from_millis(300)))
            .jitter(0.0)
            .condition(RetryCondition::TransientOnly)
            .build()
            .unwrap(),
    );
    let runner = db.builder().workflow(Workflow::builder("flaky").task(flaky).build().unwrap()).build().await.unwrap();
    let r = runner.execute("flaky", Context::new()).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed);
    assert_eq!(r.tasks[0].attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // From the stored history: each retry started at least 300 ms after the
    // failure that scheduled it.
    let history = runner.history(r.id).await.unwrap();
    let task_events: Vec<_> = history.iter().filter(|e| e.task.as_deref() == Some("flaky")).collect();
    let failures: Vec<_> =
        task_events.iter().filter(|e| e.from.as_deref() == Some("running") && e.to == "ready").collect();
    let starts: Vec<_> = task_events.iter().filter(|e| e.to == "running").collect();
    assert_eq!((failures.len(), starts.len()), (2, 3));
    for (i, f) in failures.iter().enumerate() {
        let gap = starts[i + 1].at.since(f.at);
        assert!(gap >= Duration::from_millis(300), "retry {} started after {gap:?}", i + 1);
        assert!(f.detail.as_deref().unwrap().contains("retry at"));
    }
    runner.shutdown().await.unwrap();
}

async fn timeouts_fail_the_attempt(db: TestDb) {
    let slow = TaskSpec::new(
        "slow",
        task_fn(|ctx: Context| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, TaskError>(ctx)
        }),
    )
    .timeout(Duration::from_millis(100))
    .retry(RetryPolicy::none());
    let runner = db.builder().workflow(Workflow::builder("slow").task(slow).build().unwrap()).build().await.unwrap();
    let started = Instant::now();
    let r = runner.execute("slow", Context::new()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.tasks[0].state, TaskState::Failed);
    assert!(r.tasks[0].error.as_deref().unwrap().contains("timed out after 100ms"), "{:?}", r.tasks[0].error);
    runner.shutdown().await.unwrap();
}

async fn panics_fail_the_attempt_not_the_runner(db: TestDb) {
    let boom = TaskSpec::new("boom", task_fn(|_ctx: Context| async move { panic!("kaboom") })).retry(
        RetryPolicy::builder().total_attempts(2).backoff(Backoff::Fixed(Duration::from_millis(10))).build().unwrap(),
    );
    let wf = Workflow::builder("panics").task(boom).build().unwrap();
    let ok = Workflow::builder("fine").task(add("x")).build().unwrap();
    let runner = db.builder().workflow(wf).workflow(ok).build().await.unwrap();
    let r = runner.execute("panics", Context::new()).await.unwrap();
    assert_eq!(r.tasks[0].state, TaskState::Failed);
    assert_eq!(r.tasks[0].attempts, 2, "a panic is a failed attempt, retried under `all`");
    assert!(r.tasks[0].error.as_deref().unwrap().contains("task panicked: kaboom"));
    let after = runner.execute("fine", Context::new()).await.unwrap();
    assert!(after.is_success(), "the runner keeps serving");
    runner.shutdown().await.unwrap();
}

async fn cancel_stops_the_execution(db: TestDb) {
    let started = Arc::new(tokio::sync::Notify::new());
    let saw_signal = Arc::new(tokio::sync::Notify::new());
    let (st, s) = (started.clone(), saw_signal.clone());
    let long = TaskSpec::new(
        "long",
        task_fn_with_run(move |_ctx: Context, run| {
            let (st, s) = (st.clone(), s.clone());
            async move {
                st.notify_one();
                run.cancellation.cancelled().await;
                s.notify_one();
                Err::<Context, _>(TaskError::Cancelled)
            }
        }),
    );
    let after_ran = Arc::new(AtomicBool::new(false));
    let ar = after_ran.clone();
    let after = TaskSpec::new(
        "after",
        task_fn(move |ctx: Context| {
            let ar = ar.clone();
            async move {
                ar.store(true, Ordering::SeqCst);
                Ok::<_, TaskError>(ctx)
            }
        }),
    )
    .depends_on(["long"]);
    let runner = db
        .builder()
        .workflow(Workflow::builder("cancel").task(long).task(after).build().unwrap())
        .build()
        .await
        .unwrap();
    let handle = runner.execute_async("cancel", Context::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the task started");
    let waiter = {
        let h = handle.clone();
        tokio::spawn(async move { h.wait().await })
    };
    handle.cancel().await.unwrap();
    let r =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("wait returns promptly").unwrap().unwrap();
    assert_eq!(r.status, WorkflowState::Cancelled);
    assert!(r.tasks.iter().all(|t| t.state == TaskState::Cancelled));
    tokio::time::timeout(Duration::from_secs(5), saw_signal.notified())
        .await
        .expect("the running task got the cancellation signal");
    // Once the runner has stopped, nothing can start any more: had `after`
    // been started, it would have run by now.
    runner.shutdown().await.unwrap();
    assert!(!after_ran.load(Ordering::SeqCst), "no further task started");
}

async fn pause_and_resume(db: TestDb) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let first_started = Arc::new(tokio::sync::Notify::new());
    let second_ran = Arc::new(AtomicBool::new(false));
    let (g, fs) = (gate.clone(), first_started.clone());
    let first = TaskSpec::new(
        "first",
        task_fn(move |ctx: Context| {
            let (g, fs) = (g.clone(), fs.clone());
            async move {
                fs.notify_one();
                let _ = g.acquire().await;
                Ok::<_, TaskError>(ctx)
            }
        }),
    );
    let sr = second_ran.clone();
    let second = TaskSpec::new(
        "second",
        task_fn(move |ctx: Context| {
            let sr = sr.clone();
            async move {
                sr.store(true, Ordering::SeqCst);
                Ok::<_, TaskError>(ctx)
            }
        }),
    )
    .depends_on(["first"]);
    // Its task fails once and is retried: the retry is a stored Ready task,
    // which only a claim of waiting work takes (oldest first).
    let probe = TaskSpec::new(
        "x",
        task_fn_with_run(|ctx: Context, run| async move {
            if run.attempt == 1 { Err(TaskError::transient("once")) } else { Ok(ctx) }
        }),
    )
    .retry(
        RetryPolicy::builder()
            .total_attempts(2)
            .backoff(Backoff::Fixed(Duration::from_millis(10)))
            .jitter(0.0)
            .build()
            .unwrap(),
    );
    let probe = Workflow::builder("probe").task(probe).build().unwrap();
    let runner = db
        .builder()
        .workflow(Workflow::builder("pausable").task(first).task(second).build().unwrap())
        .workflow(probe)
        .build()
        .await
        .unwrap();
    let h = runner.execute_async("pausable", Context::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), first_started.notified()).await.expect("`first` started");
    runner.pause(h.id()).await.unwrap();
    assert_eq!(h.status().await.unwrap(), WorkflowState::Paused);
    gate.add_permits(1); // the running task finishes while paused
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = h.result().await.unwrap();
        if r.task("first").unwrap().state == TaskState::Completed {
            break r;
        }
        assert!(Instant::now() < deadline, "`first` did not complete while paused: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(r.status, WorkflowState::Paused, "finishing a task does not resume the execution");
    // The runner claims waiting work meanwhile: had the paused execution's
    // ready task (older than the probe's retry) been claimable, the claim
    // that took the retry would have taken it first.
    let p = runner.execute("probe", Context::new()).await.unwrap();
    assert!(p.is_success() && p.tasks[0].attempts == 2, "{p:?}");
    let r = h.result().await.unwrap();
    assert_eq!(r.task("second").unwrap().state, TaskState::Ready, "{r:?}");
    assert!(!second_ran.load(Ordering::SeqCst), "nothing starts while paused");
    runner.resume(h.id()).await.unwrap();
    let r = h.wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed);
    assert!(second_ran.load(Ordering::SeqCst));
    assert!(
        matches!(
            runner.resume(h.id()).await,
            Err(RunnerError::InvalidState { action: "resume", state: WorkflowState::Completed, .. })
        ),
        "resuming a completed execution is refused, saying why"
    );
    runner.shutdown().await.unwrap();
}

async fn concurrency_limit_is_exact(db: TestDb) {
    let current = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut b = Workflow::builder("wide");
    for i in 0..8 {
        let (cur, mx) = (current.clone(), max.clone());
        let id = format!("t{i}");
        b = b.task(TaskSpec::new(
            id,
            task_fn(move |ctx: Context| {
                let (cur, mx) = (cur.clone(), mx.clone());
                async move {
                    let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
                    mx.fetch_max(now, Ordering::SeqCst);
                    // Barrier-like probe: wait until 4 run at once (or give up).
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while mx.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    cur.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, TaskError>(ctx)
                }
            }),
        ));
    }
    let runner = db.builder().max_concurrent_tasks(4).workflow(b.build().unwrap()).build().await.unwrap();
    let r = runner.execute("wide", Context::new()).await.unwrap();
    assert!(r.is_success());
    assert_eq!(max.load(Ordering::SeqCst), 4, "exactly the limit ran at once");
    runner.shutdown().await.unwrap();
}

async fn a_thousand_workflows_finish(db: TestDb) {
    let wf = Workflow::builder("pair").task(add("one")).task(add("two").depends_on(["one"])).build().unwrap();
    let runner = db.builder().workflow(wf).build().await.unwrap();
    let mut handles = Vec::new();
    for i in 0..1000 {
        let mut ctx = Context::new();
        ctx.set("i", i).unwrap();
        handles.push(runner.execute_async("pair", ctx).await.unwrap());
    }
    for h in handles {
        let r = h.wait_timeout(Duration::from_secs(120)).await.unwrap();
        assert_eq!(r.status, WorkflowState::Completed, "{r:?}");
        assert!(r.context.contains_key("two"));
    }
    let done = runner
        .list_executions(ExecutionFilter {
            states: vec![WorkflowState::Completed],
            limit: Some(2000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1000);
    runner.shutdown().await.unwrap();
}

async fn tenants_sharing_a_database_stay_apart(db: TestDb) {
    let (other, _guard) = db.other_tenant();
    let wf = || Workflow::builder("same_name").task(add("x")).build().unwrap();
    let a = db.builder().workflow(wf()).build().await.unwrap();
    let b = DefaultRunner::builder().database_url(&db.url).tenant(&other).workflow(wf()).build().await.unwrap();
    let ra = a.execute("same_name", Context::new()).await.unwrap();
    let rb = b.execute("same_name", Context::new()).await.unwrap();
    let ids = |r: &DefaultRunner| {
        let r = r.clone();
        async move {
            r.list_executions(ExecutionFilter::default()).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(ids(&a).await, vec![ra.id]);
    assert_eq!(ids(&b).await, vec![rb.id]);
    assert!(matches!(b.result(ra.id).await, Err(RunnerError::ExecutionNotFound { .. })));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

async fn events_are_streamed_and_kept(db: TestDb) {
    let runner =
        db.builder().workflow(Workflow::builder("evented").task(add("x")).build().unwrap()).build().await.unwrap();
    let mut stream = runner.subscribe_events();
    let r = runner.execute("evented", Context::new()).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        let last = e.task.is_none() && e.to == "completed";
        seen.push(e);
        if last {
            break;
        }
    }
    let history = runner.history(r.id).await.unwrap();
    assert_eq!(seen, history, "the stream shows what storage recorded");
    assert_eq!(history.first().unwrap().to, "pending");
    assert_eq!(history.last().unwrap().to, "completed");
    runner.shutdown().await.unwrap();
}

async fn bad_calls_get_typed_errors(db: TestDb) {
    let wf = Workflow::builder("known").task(add("x")).build().unwrap();
    let runner = db.builder().workflow(wf.clone()).build().await.unwrap();
    match runner.execute("nope", Context::new()).await {
        Err(RunnerError::UnknownWorkflow { name, known }) => {
            assert_eq!(name, "nope");
            assert_eq!(known, ["known"]);
        }
        other => panic!("expected UnknownWorkflow, got {other:?}"),
    }
    runner.register_workflow(wf).unwrap(); // the same shape again is fine
    // Another shape under the name is served beside it, and is current.
    let changed = Workflow::builder("known").task(add("x")).task(add("y")).build().unwrap();
    runner.register_workflow(changed.clone()).unwrap();
    assert_eq!(runner.workflow_versions("known")[0].version(), changed.version());
    assert_eq!(runner.workflow_versions("known").len(), 2);
    let unknown = cloacina_runner::ExecutionId::new();
    assert!(matches!(runner.cancel(unknown).await, Err(RunnerError::ExecutionNotFound { id }) if id == unknown));
    assert!(matches!(runner.status(unknown).await, Err(RunnerError::ExecutionNotFound { .. })));
    assert!(matches!(runner.result(unknown).await, Err(RunnerError::ExecutionNotFound { .. })));
    runner.shutdown().await.unwrap();
    assert!(matches!(runner.execute("known", Context::new()).await, Err(RunnerError::ShutDown)));
    runner.shutdown().await.unwrap(); // idempotent
}

async fn oversized_outputs_fail_the_attempt(db: TestDb) {
    let big = TaskSpec::new(
        "big",
        task_fn(|mut ctx: Context| async move {
            ctx.set("blob", "x".repeat(10_000))?;
            Ok::<_, TaskError>(ctx)
        }),
    )
    .retry(RetryPolicy::none());
    let runner = db
        .builder()
        .context_size_limit(1_000)
        .workflow(Workflow::builder("big").task(big).build().unwrap())
        .build()
        .await
        .unwrap();
    let r = runner.execute("big", Context::new()).await.unwrap();
    assert_eq!(r.tasks[0].state, TaskState::Failed);
    assert!(r.tasks[0].error.as_deref().unwrap().contains("over the limit of 1000 bytes"), "{:?}", r.tasks[0].error);
    runner.shutdown().await.unwrap();
}

async fn retries_survive_a_restart(db: TestDb) {
    let wf = |fail_first: bool| {
        Workflow::builder("durable_retry")
            .task(
                TaskSpec::new(
                    "t",
                    task_fn(move |ctx: Context| async move {
                        if fail_first { Err(TaskError::transient("first life fails")) } else { Ok(ctx) }
                    }),
                )
                .retry(
                    RetryPolicy::builder()
                        .total_attempts(3)
                        .backoff(Backoff::Fixed(Duration::from_millis(800)))
                        .jitter(0.0)
                        .build()
                        .unwrap(),
                ),
            )
            .build()
            .unwrap()
    };
    // Two closures with the same shape have the same version: the second
    // runner continues the first one's executions.
    let first = db.builder().workflow(wf(true)).build().await.unwrap();
    let h = first.execute_async("durable_retry", Context::new()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = h.result().await.unwrap();
        if r.tasks[0].attempts == 2 && r.tasks[0].state == TaskState::Ready {
            break;
        }
        assert!(Instant::now() < deadline, "the first attempt did not fail in time: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.shutdown().await.unwrap();
    let second = db.builder().workflow(wf(false)).build().await.unwrap();
    let r = second.handle(h.id()).wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed);
    assert_eq!(r.tasks[0].attempts, 2, "the stored retry was honoured after the restart");
    second.shutdown().await.unwrap();
}

async fn wait_timeout_gives_up(db: TestDb) {
    let slow = TaskSpec::new(
        "slow",
        task_fn(|ctx: Context| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, TaskError>(ctx)
        }),
    );
    let runner =
        db.builder().workflow(Workflow::builder("slowpoke").task(slow).build().unwrap()).build().await.unwrap();
    let h = runner.execute_async("slowpoke", Context::new()).await.unwrap();
    assert!(matches!(h.wait_timeout(Duration::from_millis(100)).await, Err(RunnerError::WaitTimeout { .. })));
    assert!(h.wait().await.unwrap().is_success(), "the execution went on");
    runner.shutdown().await.unwrap();
}

async fn dropping_without_shutdown_does_not_hang(db: TestDb) {
    let forever = TaskSpec::new(
        "forever",
        task_fn(|ctx: Context| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, TaskError>(ctx)
        }),
    );
    let runner =
        db.builder().workflow(Workflow::builder("forever").task(forever).build().unwrap()).build().await.unwrap();
    let h = runner.execute_async("forever", Context::new()).await.unwrap();
    drop(h);
    let t = Instant::now();
    drop(runner);
    assert!(t.elapsed() < Duration::from_secs(1));
}

async fn recovery_can_be_disabled(db: TestDb) {
    let started = Arc::new(tokio::sync::Notify::new());
    let st = started.clone();
    let stuck = move || {
        let st = st.clone();
        TaskSpec::new(
            "stuck",
            task_fn(move |ctx: Context| {
                let st = st.clone();
                async move {
                    st.notify_one();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, TaskError>(ctx)
                }
            }),
        )
        // The same shape as `add("stuck")`, so later runners know its version.
        .retry(RetryPolicy::none())
    };
    let fast = |b: cloacina_runner::DefaultRunnerBuilder| {
        b.lease_ttl(Duration::from_millis(600))
            .heartbeat_interval(Duration::from_millis(100))
            .recovery_interval(Duration::from_millis(100))
    };
    // A runner dies (dropped, no shutdown) holding a lease.
    let dying =
        fast(db.builder()).workflow(Workflow::builder("stuck").task(stuck()).build().unwrap()).build().await.unwrap();
    let h = dying.execute_async("stuck", Context::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the task started");
    let id = h.id();
    let dead_runner = dying.runner_id().to_string();
    drop(h);
    drop(dying);
    // Its liveness (the lease of its task) expires: the orphan is due for
    // recovery from now on.
    wait_until_liveness_expired(&db, &dead_runner).await;
    // Recovery off: starting up does not requeue the orphan.
    let quick = Workflow::builder("stuck").task(add("stuck")).build().unwrap();
    let off = fast(db.builder()).enable_recovery(false).workflow(quick.clone()).build().await.unwrap();
    let r = off.result(id).await.unwrap();
    assert_eq!(r.tasks[0].state, TaskState::Running, "nothing requeues orphans when recovery is off");
    assert_eq!(r.tasks[0].recoveries, 0);
    // A runner with recovery on requeues it before `build` returns; the
    // work finishes.
    let on = fast(db.builder()).workflow(quick).build().await.unwrap();
    let r = on.result(id).await.unwrap();
    assert_eq!(r.tasks[0].recoveries, 1, "recovered at start-up: {r:?}");
    let r = on.handle(id).wait_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed);
    assert_eq!(r.tasks[0].recoveries, 1);
    off.shutdown().await.unwrap();
    on.shutdown().await.unwrap();
}

/// Waits until the liveness of runner `id` (its row in the test database's
/// tenant) has expired; panics after 20 s.
async fn wait_until_liveness_expired(db: &TestDb, id: &str) {
    use cloacina_runner::core::ports::Storage;
    use sea_orm::ConnectionTrait;
    let expired = |row: Option<sea_orm::QueryResult>| {
        let row = row.unwrap_or_else(|| panic!("runner {id} is not registered"));
        row.try_get_by_index::<i64>(0).unwrap() < cloacina_runner::Timestamp::now().0
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let poll = async || {
        assert!(Instant::now() < deadline, "the liveness of runner {id} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if db.url.starts_with("sqlite:") {
        let mut o = cloacina_sqlite::SqliteOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_sqlite::open(o).await.unwrap();
        let query = || {
            let sql = "SELECT expires_at FROM runners WHERE id = ?";
            sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, [id.into()])
        };
        while !expired(s.backend().connection().query_one_raw(query()).await.unwrap()) {
            poll().await;
        }
        s.close().await;
    } else {
        let mut o = cloacina_postgres::PgOptions::new(&db.url);
        if let Some(t) = &db.tenant {
            o = o.tenant(t).unwrap();
        }
        let s = cloacina_postgres::open(o).await.unwrap();
        let query = || {
            let sql = "SELECT expires_at FROM runners WHERE id = $1";
            sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, [id.into()])
        };
        while !expired(s.backend().connection().query_one_raw(query()).await.unwrap()) {
            poll().await;
        }
        s.close().await;
    }
}

on_both_backends!(
    recovery_can_be_disabled,
    diamond_data_flow,
    trigger_rules_and_upstream_failed_skips,
    retries_follow_backoff_from_stored_timestamps,
    timeouts_fail_the_attempt,
    panics_fail_the_attempt_not_the_runner,
    cancel_stops_the_execution,
    pause_and_resume,
    concurrency_limit_is_exact,
    a_thousand_workflows_finish,
    tenants_sharing_a_database_stay_apart,
    events_are_streamed_and_kept,
    bad_calls_get_typed_errors,
    oversized_outputs_fail_the_attempt,
    retries_survive_a_restart,
    wait_timeout_gives_up,
    dropping_without_shutdown_does_not_hang,
);
