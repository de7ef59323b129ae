//! Cron schedules and triggers through `DefaultRunner`, on SQLite files and
//! on PostgreSQL. Schedules run on a shared manual clock, so "ten ticks"
//! means exactly ten ticks however slow the machine is; the runners, their
//! loops and the database are real.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloacina_runner::core::ManualClock;
use cloacina_runner::{
    CatchUp, Context, CronSchedule, DefaultRunner, ExecutionFilter, ExecutionRecord, RunnerError, TaskError, TaskSpec,
    Timestamp, Trigger, TriggerPoll, TriggerSpec, Workflow, WorkflowState, task_fn,
};
use common::TestDb;

/// 2027-01-15T08:00:00Z: a whole minute.
const START: Timestamp = Timestamp(1_800_000_000_000);

fn tick_workflow() -> Workflow {
    Workflow::builder("tick")
        .task(TaskSpec::new("work", task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) })))
        .build()
        .unwrap()
}

/// A workflow whose task waits until `gate` opens.
fn gated_workflow(gate: Arc<AtomicBool>) -> Workflow {
    Workflow::builder("gated")
        .task(TaskSpec::new(
            "wait",
            task_fn(move |ctx: Context| {
                let gate = gate.clone();
                async move {
                    while !gate.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok::<_, TaskError>(ctx)
                }
            }),
        ))
        .build()
        .unwrap()
}

async fn scheduled_runner(db: &TestDb, clock: &ManualClock, wf: Workflow) -> DefaultRunner {
    db.builder()
        .clock(Arc::new(clock.clone()))
        .schedule_poll_interval(Duration::from_millis(40))
        // The manual clock jumps; keep leases far longer than any jump.
        .lease_ttl(Duration::from_secs(3600))
        .workflow(wf)
        .build()
        .await
        .unwrap()
}

async fn executions(r: &DefaultRunner, origin_prefix: &str) -> Vec<ExecutionRecord> {
    let all = r.list_executions(ExecutionFilter { limit: Some(10_000), ..Default::default() }).await.unwrap();
    all.into_iter().filter(|e| e.origin.starts_with(origin_prefix)).collect()
}

/// Waits until `count` executions with the origin prefix exist (panics
/// after 20 s), then a few more poll rounds, and returns them.
async fn settle(r: &DefaultRunner, origin_prefix: &str, count: usize) -> Vec<ExecutionRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = executions(r, origin_prefix).await;
        if found.len() >= count {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {count} `{origin_prefix}` executions", found.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Several more poll rounds of both runners: nothing else may appear.
    tokio::time::sleep(Duration::from_millis(200)).await;
    executions(r, origin_prefix).await
}

fn tick_of(e: &ExecutionRecord) -> String {
    e.origin.rsplit_once('@').map(|(_, t)| t.to_owned()).unwrap_or_default()
}

/// Two runners and a schedule every second, for ten seconds: exactly ten
/// executions, one per tick.
async fn one_execution_per_tick_across_two_runners(db: TestDb) {
    let clock = ManualClock::new(START);
    let a = scheduled_runner(&db, &clock, tick_workflow()).await;
    let b = scheduled_runner(&db, &clock, tick_workflow()).await;
    let every_second = CronSchedule::new("every_second", "tick", "* * * * * *").unwrap();
    a.register_cron(every_second.clone()).await.unwrap();
    b.register_cron(every_second).await.unwrap();
    assert_eq!(a.list_schedules().await.unwrap().len(), 1, "registering twice is one schedule");
    for i in 1..=10 {
        clock.advance(Duration::from_secs(1));
        let seen = settle(&a, "cron:every_second@", i).await;
        assert_eq!(seen.len(), i, "after tick {i}");
    }
    let seen = executions(&b, "cron:every_second@").await;
    assert_eq!(seen.len(), 10);
    let mut ticks: Vec<String> = seen.iter().map(tick_of).collect();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), 10, "ten distinct ticks: {ticks:?}");
    assert_eq!(ticks[0], "2027-01-15T08:00:01.000Z");
    assert_eq!(ticks[9], "2027-01-15T08:00:10.000Z");
    // They run too.
    for e in &seen {
        let r = a.handle(e.id).wait_timeout(Duration::from_secs(20)).await.unwrap();
        assert_eq!(r.status, WorkflowState::Completed);
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Runners down for five ticks, then up: `skip` runs the latest tick only,
/// `run_all` every missed one; paused schedules start nothing.
async fn catch_up_after_runners_were_down(db: TestDb) {
    let clock = ManualClock::new(START);
    let schedules = || {
        [
            CronSchedule::new("hourly_skip", "tick", "0 * * * * *").unwrap(),
            CronSchedule::new("hourly_all", "tick", "0 * * * * *").unwrap().catch_up(CatchUp::run_all()).unwrap(),
            CronSchedule::new("paused", "tick", "0 * * * * *").unwrap(),
        ]
    };
    let first = scheduled_runner(&db, &clock, tick_workflow()).await;
    for s in schedules() {
        first.register_cron(s).await.unwrap();
    }
    first.pause_schedule("paused").await.unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(settle(&first, "cron:hourly_", 2).await.len(), 2, "tick 1 of both");
    first.shutdown().await.unwrap();

    // Ticks 2 to 6 pass while no runner is up.
    clock.advance(Duration::from_secs(5 * 60 + 5));
    let second = scheduled_runner(&db, &clock, tick_workflow()).await;
    // Applications register their schedules at every start: no duplicates,
    // and the progress of each is kept.
    for s in schedules() {
        second.register_cron(s).await.unwrap();
    }
    let all = settle(&second, "cron:hourly_all@", 6).await;
    assert_eq!(all.len(), 6, "run_all: tick 1, then the five missed ticks");
    let skip = executions(&second, "cron:hourly_skip@").await;
    assert_eq!(skip.len(), 2, "skip: tick 1, then only the latest of the missed ticks");
    assert!(skip.iter().any(|e| tick_of(e) == "2027-01-15T08:06:00.000Z"), "{skip:?}");
    assert!(executions(&second, "cron:paused@").await.is_empty());
    let listed = second.list_schedules().await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().find(|s| s.schedule.name() == "paused").unwrap().paused, "the pause is kept");
    second.shutdown().await.unwrap();
}

/// Fires the same context on every poll; counts polls.
struct Repeating {
    polls: AtomicUsize,
    file: &'static str,
}

#[cloacina_runner::async_trait]
impl Trigger for Repeating {
    async fn poll(&self) -> Result<TriggerPoll, TaskError> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let mut ctx = Context::new();
        ctx.insert("file", self.file)?;
        Ok(TriggerPoll::Fire(ctx))
    }
}

async fn wait_polls(t: &Repeating, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.polls.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "trigger polled only {} times", t.polls.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A trigger that fires: its execution starts, recorded with the trigger;
/// identical firings are suppressed while it runs, and go through again
/// once it finished.
async fn trigger_fires_and_duplicates_are_suppressed(db: TestDb) {
    let gate = Arc::new(AtomicBool::new(false));
    let runner = db.builder().workflow(gated_workflow(gate.clone())).build().await.unwrap();
    let trigger = Arc::new(Repeating { polls: AtomicUsize::new(0), file: "orders.csv" });
    runner
        .register_trigger(
            TriggerSpec::new("inbox", "gated", trigger.clone())
                .unwrap()
                .poll_interval(Duration::from_millis(20))
                .unwrap(),
        )
        .unwrap();
    wait_polls(&trigger, 10).await;
    let fired = executions(&runner, "trigger:inbox").await;
    assert_eq!(fired.len(), 1, "ten identical firings, one execution while it runs");
    assert_eq!(fired[0].input.get_as::<String>("file").unwrap(), "orders.csv");
    gate.store(true, Ordering::SeqCst);
    let r = runner.handle(fired[0].id).wait_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(r.status, WorkflowState::Completed);
    // Finished: the same firing starts a new execution.
    let again = settle(&runner, "trigger:inbox", 2).await;
    assert!(again.len() >= 2);
    runner.shutdown().await.unwrap();
}

/// A trigger allowing concurrent runs starts one execution per firing; a
/// failing or panicking poll is logged and polled again.
async fn concurrent_and_faulty_triggers(db: TestDb) {
    let gate = Arc::new(AtomicBool::new(false));
    let runner = db.builder().workflow(gated_workflow(gate.clone())).build().await.unwrap();
    let fanout = Arc::new(Repeating { polls: AtomicUsize::new(0), file: "same.csv" });
    runner
        .register_trigger(
            TriggerSpec::new("fanout", "gated", fanout.clone())
                .unwrap()
                .poll_interval(Duration::from_millis(20))
                .unwrap()
                .allow_concurrent(true),
        )
        .unwrap();
    let running = settle(&runner, "trigger:fanout", 3).await;
    assert!(running.iter().filter(|e| !e.state.is_terminal()).count() >= 3, "identical firings run side by side");

    struct Faulty(AtomicUsize);
    #[cloacina_runner::async_trait]
    impl Trigger for Faulty {
        async fn poll(&self) -> Result<TriggerPoll, TaskError> {
            match self.0.fetch_add(1, Ordering::SeqCst) % 3 {
                0 => Err(TaskError::transient("source unreachable")),
                1 => panic!("bug in a trigger"),
                _ => Ok(TriggerPoll::Skip),
            }
        }
    }
    let faulty = Arc::new(Faulty(AtomicUsize::new(0)));
    runner
        .register_trigger(
            TriggerSpec::new("faulty", "gated", faulty.clone())
                .unwrap()
                .poll_interval(Duration::from_millis(10))
                .unwrap(),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while faulty.0.load(Ordering::SeqCst) < 7 {
        assert!(Instant::now() < deadline, "a failing trigger must keep being polled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(executions(&runner, "trigger:faulty").await.is_empty());
    // Registering a name twice on one runner is refused.
    let dup = TriggerSpec::new("fanout", "gated", fanout.clone()).unwrap();
    assert!(matches!(runner.register_trigger(dup), Err(RunnerError::DuplicateTrigger { name }) if name == "fanout"));
    gate.store(true, Ordering::SeqCst);
    runner.shutdown().await.unwrap();
    let polls = fanout.polls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fanout.polls.load(Ordering::SeqCst), polls, "polling stops at shutdown");
}

/// Bad schedules and triggers are typed errors that say what is allowed.
async fn bad_schedules_are_typed_errors(db: TestDb) {
    let runner = db.builder().workflow(tick_workflow()).build().await.unwrap();
    let e = CronSchedule::new("s", "tick", "*/0 * * *").unwrap_err();
    assert!(e.to_string().contains("5 fields"), "{e}");
    let e = CronSchedule::new("s", "tick", "* * * * *").unwrap().timezone("Europe/Atlantis").unwrap_err();
    assert!(e.to_string().contains("IANA"), "{e}");
    let e: RunnerError = e.into();
    assert!(matches!(e, RunnerError::InvalidSchedule(_)));
    let unknown = CronSchedule::new("s", "nope", "* * * * *").unwrap();
    assert!(matches!(runner.register_cron(unknown).await, Err(RunnerError::UnknownWorkflow { .. })));
    for e in [
        runner.pause_schedule("missing").await.unwrap_err(),
        runner.resume_schedule("missing").await.unwrap_err(),
        runner.delete_schedule("missing").await.unwrap_err(),
    ] {
        assert!(matches!(&e, RunnerError::ScheduleNotFound { name } if name == "missing"), "{e:?}");
    }
    runner.register_cron(CronSchedule::new("s", "tick", "0 0 * * * *").unwrap()).await.unwrap();
    runner.delete_schedule("s").await.unwrap();
    assert!(runner.list_schedules().await.unwrap().is_empty());
    let t = Arc::new(Repeating { polls: AtomicUsize::new(0), file: "x" });
    let unknown = TriggerSpec::new("t", "nope", t).unwrap();
    assert!(matches!(runner.register_trigger(unknown), Err(RunnerError::UnknownWorkflow { .. })));
    runner.shutdown().await.unwrap();
}

on_both_backends!(
    one_execution_per_tick_across_two_runners,
    catch_up_after_runners_were_down,
    trigger_fires_and_duplicates_are_suppressed,
    concurrent_and_faulty_triggers,
    bad_schedules_are_typed_errors,
);
