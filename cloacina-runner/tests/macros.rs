//! The behaviour tests written with `#[task]` / `#[workflow]`, on SQLite
//! files and on PostgreSQL: data flow through a diamond, trigger rules and
//! skips, retries and timeouts from the attributes, shared state, typed
//! keys, and the idiomatic handle and stream API (`handle.await`,
//! `EventStream` as a `Stream`, pause / resume / cancel on the handle,
//! `execute_timeout`, user mistakes as their own errors).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloacina_runner::{
    Context, Key, RunnerError, TaskError, TaskRun, TaskState, Workflow, WorkflowState, task, workflow,
};
use common::TestDb;
use futures::StreamExt;

/// Records, under its own id, the keys its input had.
fn seen(ctx: &mut Context, id: &str) -> Result<(), TaskError> {
    let keys: Vec<String> = ctx.keys().map(str::to_owned).collect();
    ctx.set(id, keys)?;
    Ok(())
}

#[workflow]
mod diamond {
    use super::*;

    #[task(retry = none)]
    async fn a(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "a")
    }

    #[task(depends_on = [a], retry = none)]
    async fn b(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "b")
    }

    #[task(depends_on = [a], retry = none)]
    async fn c(mut ctx: Context) -> Result<Context, TaskError> {
        seen(&mut ctx, "c")?;
        Ok(ctx)
    }

    #[task(depends_on = [b, c], retry = none)]
    async fn d(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "d")
    }
}

async fn diamond_data_flow(db: TestDb) {
    let runner = db.builder().workflow(diamond::workflow()).build().await.unwrap();
    let mut input = Context::new();
    input.set("input", 1).unwrap();
    let r = runner.execute(diamond::WORKFLOW_NAME, input).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed, "{r:?}");
    let keys = |k: &str| r.context.get_as::<Vec<String>>(k).unwrap();
    assert_eq!(keys("a"), ["input"], "the root gets the input");
    assert_eq!(keys("b"), ["a", "input"]);
    assert_eq!(keys("c"), ["a", "input"], "a by-value task gets the same input");
    assert_eq!(keys("d"), ["a", "b", "c", "input"], "d gets both branches merged");
    assert!(r.tasks.iter().all(|t| t.state == TaskState::Completed && t.attempts == 1));
    runner.shutdown().await.unwrap();
}

#[workflow(name = "triggers")]
mod trigger_rules {
    use super::*;

    #[task(retry = none)]
    async fn a(_ctx: &mut Context) -> Result<(), TaskError> {
        Err(TaskError::permanent("broken on purpose"))
    }

    #[task(depends_on = [a], retry = none)]
    async fn b(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "b")
    }

    #[task(depends_on = [a], trigger = one_failed, retry = none)]
    async fn on_failure(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "on_failure")
    }

    #[task(depends_on = [b, on_failure], trigger = all_done, retry = none)]
    async fn always(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "always")
    }

    #[task(depends_on = [b], retry = none)]
    async fn after_b(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "after_b")
    }

    #[task(depends_on = [a], trigger = any(task_success(a), context_value(force, equals true)), retry = none)]
    async fn forced(ctx: &mut Context) -> Result<(), TaskError> {
        seen(ctx, "forced")
    }
}

async fn trigger_rules_and_upstream_failed_skips(db: TestDb) {
    let runner = db.builder().workflow(trigger_rules::workflow()).build().await.unwrap();
    let r = runner.execute("triggers", Context::new()).await.unwrap();
    let state = |t: &str| r.task(t).unwrap().state;
    assert_eq!(state("a"), TaskState::Failed);
    assert_eq!(state("b"), TaskState::Skipped);
    assert!(r.task("b").unwrap().error.as_deref().unwrap().contains("upstream failed"));
    assert_eq!(state("after_b"), TaskState::Skipped, "a skip cascades");
    assert_eq!(state("on_failure"), TaskState::Completed);
    assert_eq!(state("always"), TaskState::Completed);
    assert_eq!(state("forced"), TaskState::Skipped, "neither a succeeded nor was `force` set");
    assert_eq!(r.status, WorkflowState::Failed);
    assert!(r.error.as_deref().unwrap().contains("broken on purpose"));
    let mut forced = Context::new();
    forced.set("force", true).unwrap();
    let r = runner.execute("triggers", forced).await.unwrap();
    assert_eq!(r.task("forced").unwrap().state, TaskState::Completed, "the context rule holds: {r:?}");
    runner.shutdown().await.unwrap();
}

/// Shared application state: what a pool or a client would be.
pub struct Service {
    calls: AtomicUsize,
    fail_first: usize,
    started: tokio::sync::Notify,
}

/// The attempt `flaky` succeeded at.
const ATTEMPTS: Key<Vec<u32>> = Key::new("attempts");
/// What `sum` computed.
const TOTAL: Key<u64> = Key::new("total");

#[workflow(name = "stateful", version = "v1")]
mod stateful {
    use super::*;

    /// Fails with a transient error `fail_first` times, 200 ms apart.
    #[task(retry = fixed(4, 200ms), timeout = 5s)]
    async fn flaky(ctx: &mut Context, service: &Service, run: &TaskRun) -> Result<(), TaskError> {
        let n = service.calls.fetch_add(1, Ordering::SeqCst);
        if n < service.fail_first {
            return Err(TaskError::transient("not yet"));
        }
        ctx.set(ATTEMPTS, vec![run.attempt])?;
        Ok(())
    }

    #[task(depends_on = [flaky])]
    async fn sum(ctx: &mut Context, service: &Service) -> Result<(), TaskError> {
        let attempts = ctx.get(ATTEMPTS)?;
        let calls = service.calls.load(Ordering::SeqCst) as u64;
        ctx.set(TOTAL, calls + u64::from(attempts[0]))?;
        Ok(())
    }
}

async fn retries_and_shared_state(db: TestDb) {
    let service = Arc::new(Service { calls: AtomicUsize::new(0), fail_first: 2, started: tokio::sync::Notify::new() });
    let runner = db.builder().workflow(stateful::workflow(service.clone())).build().await.unwrap();
    let r = runner.execute("stateful", Context::new()).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.task("flaky").unwrap().attempts, 3);
    assert_eq!(service.calls.load(Ordering::SeqCst), 3, "every task saw the one state given to workflow()");
    assert_eq!(r.context.get(ATTEMPTS).unwrap(), [3]);
    assert_eq!(r.context.get(TOTAL).unwrap(), 6);
    // The fixed 200 ms backoff of the attribute, from the stored history.
    let history = runner.history(r.id).await.unwrap();
    let flaky: Vec<_> = history.iter().filter(|e| e.task.as_deref() == Some("flaky")).collect();
    let failures: Vec<_> = flaky.iter().filter(|e| e.from.as_deref() == Some("running") && e.to == "ready").collect();
    let starts: Vec<_> = flaky.iter().filter(|e| e.to == "running").collect();
    assert_eq!((failures.len(), starts.len()), (2, 3));
    for (i, f) in failures.iter().enumerate() {
        let gap = starts[i + 1].at.since(f.at);
        assert!(gap >= Duration::from_millis(180), "retry {} started {gap:?} after its failure", i + 1);
    }
    assert_eq!(r.workflow_version, stateful::workflow(service.clone()).version());
    runner.shutdown().await.unwrap();
}

#[workflow]
mod slow {
    use super::*;

    #[task(timeout = 100ms, retry = none)]
    async fn sleepy(_ctx: &mut Context) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    }
}

async fn timeouts_fail_the_attempt(db: TestDb) {
    let runner = db.builder().workflow(slow::workflow()).build().await.unwrap();
    let started = Instant::now();
    let r = runner.execute("slow", Context::new()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.tasks[0].state, TaskState::Failed);
    assert!(r.tasks[0].error.as_deref().unwrap().contains("timed out after 100ms"), "{:?}", r.tasks[0].error);
    runner.shutdown().await.unwrap();
}

/// A gate the `held` workflow's first task waits on.
pub struct Gate {
    open: tokio::sync::Semaphore,
    started: tokio::sync::Notify,
    second_ran: AtomicBool,
}

#[workflow]
mod held {
    use super::*;

    #[task]
    async fn first(_ctx: &mut Context, gate: &Gate, run: &TaskRun) -> Result<(), TaskError> {
        gate.started.notify_one();
        tokio::select! {
            _ = gate.open.acquire() => Ok(()),
            _ = run.cancellation.cancelled() => Err(TaskError::Cancelled),
        }
    }

    #[task(depends_on = [first])]
    async fn second(_ctx: &mut Context, gate: &Gate) -> Result<(), TaskError> {
        gate.second_ran.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn gate() -> Arc<Gate> {
    Arc::new(Gate {
        open: tokio::sync::Semaphore::new(0),
        started: tokio::sync::Notify::new(),
        second_ran: AtomicBool::new(false),
    })
}

async fn handles_are_futures_with_controls(db: TestDb) {
    let g = gate();
    let runner = db.builder().workflow(held::workflow(g.clone())).build().await.unwrap();
    let h = runner.execute_async("held", Context::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), g.started.notified()).await.expect("`first` started");
    h.pause().await.unwrap();
    assert_eq!(h.status().await.unwrap(), WorkflowState::Paused);
    match h.pause().await {
        Err(RunnerError::InvalidState { id, action: "pause", state: WorkflowState::Paused, .. }) if id == h.id() => {}
        other => panic!("pausing a paused execution: {other:?}"),
    }
    g.open.add_permits(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.result().await.unwrap().task("first").unwrap().state != TaskState::Completed {
        assert!(Instant::now() < deadline, "`first` did not complete while paused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!g.second_ran.load(Ordering::SeqCst), "nothing starts while paused");
    h.resume().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), h.clone()).await.expect("handle.await returns").unwrap();
    assert_eq!(r.status, WorkflowState::Completed);
    assert!(g.second_ran.load(Ordering::SeqCst));
    let err = h.resume().await.unwrap_err();
    assert!(
        matches!(err, RunnerError::InvalidState { action: "resume", state: WorkflowState::Completed, .. }),
        "resuming a completed execution is the user's mistake, not a storage error: {err:?}"
    );
    assert!(err.to_string().contains("only a paused execution can be resumed"), "{err}");
    assert!(matches!(h.cancel().await, Err(RunnerError::InvalidState { action: "cancel", .. })));
    assert!(h.history().await.unwrap().iter().any(|e| e.to == "paused"));

    // Cancel through the handle.
    let g2 = gate();
    runner.register_workflow(held::workflow(g2.clone())).unwrap();
    let h = runner.execute_async("held", Context::new()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), g2.started.notified()).await.expect("`first` started");
    h.cancel().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), h).await.expect("a cancelled execution answers").unwrap();
    assert_eq!(r.status, WorkflowState::Cancelled);
    assert!(!g2.second_ran.load(Ordering::SeqCst));
    runner.shutdown().await.unwrap();
}

async fn execute_timeout_gives_up_and_the_execution_goes_on(db: TestDb) {
    let g = gate();
    let runner = db.builder().workflow(held::workflow(g.clone())).build().await.unwrap();
    let err = runner.execute_timeout("held", Context::new(), Duration::from_millis(200)).await.unwrap_err();
    let RunnerError::WaitTimeout { id, waited } = err else { panic!("expected WaitTimeout, got {err:?}") };
    assert_eq!(waited, Duration::from_millis(200));
    g.open.add_permits(1);
    let r = tokio::time::timeout(Duration::from_secs(20), runner.handle(id)).await.expect("it finishes").unwrap();
    assert!(r.is_success(), "{r:?}");
    let r = runner.execute_timeout("diamond", Context::new(), Duration::from_secs(1)).await;
    assert!(matches!(r, Err(RunnerError::UnknownWorkflow { .. })), "{r:?}");
    runner.shutdown().await.unwrap();
}

async fn events_are_a_stream(db: TestDb) {
    let runner = db.builder().workflow(diamond::workflow()).build().await.unwrap();
    let stream = runner.subscribe_events();
    let r = runner.execute("diamond", Context::new()).await.unwrap();
    let id = r.id;
    let seen: Vec<_> = tokio::time::timeout(
        Duration::from_secs(10),
        stream
            .filter(move |e| std::future::ready(e.execution_id == id))
            .take_while(|e| std::future::ready(!(e.task.is_none() && e.to == "completed")))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the stream yields the execution's events");
    let history = runner.history(id).await.unwrap();
    assert_eq!(seen, history[..history.len() - 1], "the stream shows what storage recorded");
    assert_eq!(history.last().unwrap().to, "completed");
    runner.shutdown().await.unwrap();
}

mod v2 {
    use super::*;

    // The same shape as `diamond` with one body changed and one policy.
    #[workflow(name = "diamond")]
    pub(crate) mod diamond {
        use super::*;

        #[task(retry = none)]
        async fn a(ctx: &mut Context) -> Result<(), TaskError> {
            seen(ctx, "a")?;
            ctx.set("v2", true)?;
            Ok(())
        }

        #[task(depends_on = [a], retry = none)]
        async fn b(ctx: &mut Context) -> Result<(), TaskError> {
            seen(ctx, "b")
        }

        #[task(depends_on = [a], retry = none)]
        async fn c(mut ctx: Context) -> Result<Context, TaskError> {
            seen(&mut ctx, "c")?;
            Ok(ctx)
        }

        #[task(depends_on = [b, c], retry = fixed(2, 1s))]
        async fn d(ctx: &mut Context) -> Result<(), TaskError> {
            seen(ctx, "d")
        }
    }
}

async fn fingerprints_tell_bodies_from_policies(db: TestDb) {
    let (v1, v2) = (diamond::workflow(), v2::diamond::workflow());
    assert_eq!(v1.version(), v2.version(), "same shape, same version");
    let changes = v2.behaviour_changes(&v1);
    assert_eq!(changes.bodies, ["a"], "{changes:?}");
    assert_eq!(changes.policies, ["d"], "{changes:?}");
    assert!(changes.unknown_bodies.is_empty());
    // The new behaviour serves the executions of the shape.
    let runner = db.builder().workflow(v1).build().await.unwrap();
    runner.register_workflow(v2).unwrap();
    let r = runner.execute("diamond", Context::new()).await.unwrap();
    assert_eq!(r.context.get("v2"), Some(&true.into()), "{r:?}");
    assert_eq!(runner.workflow_versions("diamond").len(), 1);
    let closure = Workflow::builder("diamond")
        .task(cloacina_runner::TaskSpec::new(
            "a",
            cloacina_runner::task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) }),
        ))
        .build()
        .unwrap();
    assert_eq!(closure.behaviour_changes(&diamond::workflow()).unknown_bodies, ["a"]);
    runner.shutdown().await.unwrap();
}

/// A task defined outside a workflow module, assembled at run time.
#[task(id = "dynamic", retry = none)]
async fn dynamic_step(ctx: &mut Context, service: &Service) -> Result<(), TaskError> {
    service.started.notify_one();
    ctx.set("dynamic", service.calls.fetch_add(1, Ordering::SeqCst))?;
    Ok(())
}

async fn standalone_tasks_join_builder_workflows(db: TestDb) {
    let service = Arc::new(Service { calls: AtomicUsize::new(5), fail_first: 0, started: tokio::sync::Notify::new() });
    let wf = Workflow::builder("dynamic").task(dynamic_step_task(service.clone())).build().unwrap();
    let runner = db.builder().workflow(wf).build().await.unwrap();
    let r = runner.execute("dynamic", Context::new()).await.unwrap();
    assert_eq!(r.context.get_as::<usize>("dynamic").unwrap(), 5);
    assert_eq!(service.calls.load(Ordering::SeqCst), 6);
    runner.shutdown().await.unwrap();
}

on_both_backends!(
    diamond_data_flow,
    trigger_rules_and_upstream_failed_skips,
    retries_and_shared_state,
    timeouts_fail_the_attempt,
    handles_are_futures_with_controls,
    execute_timeout_gives_up_and_the_execution_goes_on,
    events_are_a_stream,
    fingerprints_tell_bodies_from_policies,
    standalone_tasks_join_builder_workflows,
);
