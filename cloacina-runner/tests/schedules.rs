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
    CatchUp, Context, CronSchedule, DefaultRunner, EventPoll, EventTrigger, EventTriggerSpec, ExecutionFilter,
    ExecutionRecord, RunnerError, TaskError, TaskSpec, Timestamp, Workflow, WorkflowState, task_fn,
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

/// Counts a runner's scheduler rounds, through the hook every background
/// loop calls with its name at the start of each round.
#[derive(Clone, Default)]
struct Rounds(Arc<AtomicUsize>);

impl Rounds {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A runner on the shared manual clock, and its scheduler rounds.
struct Scheduled {
    runner: DefaultRunner,
    rounds: Rounds,
}

impl std::ops::Deref for Scheduled {
    type Target = DefaultRunner;
    fn deref(&self) -> &DefaultRunner {
        &self.runner
    }
}

async fn scheduled_runner(db: &TestDb, clock: &ManualClock, wf: Workflow) -> Scheduled {
    let rounds = Rounds::default();
    let counter = rounds.0.clone();
    let runner = db
        .builder()
        .clock(Arc::new(clock.clone()))
        .schedule_poll_interval(Duration::from_millis(40))
        // The manual clock jumps; keep leases far longer than any jump.
        .lease_ttl(Duration::from_secs(3600))
        .fault_hook(Arc::new(move |name| {
            if name == "scheduler" {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .workflow(wf)
        .build()
        .await
        .unwrap();
    Scheduled { runner, rounds }
}

async fn executions(r: &DefaultRunner, origin_prefix: &str) -> Vec<ExecutionRecord> {
    let all = r.list_executions(ExecutionFilter { limit: Some(10_000), ..Default::default() }).await.unwrap();
    all.into_iter().filter(|e| e.origin.starts_with(origin_prefix)).collect()
}

/// Waits until `count` executions with the origin prefix exist (panics
/// after 20 s), and returns them.
async fn wait_for_executions(r: &DefaultRunner, origin_prefix: &str, count: usize) -> Vec<ExecutionRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = executions(r, origin_prefix).await;
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "only {} of {count} `{origin_prefix}` executions", found.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every schedule in `names` has processed `tick` (its
/// `last_tick` reached it; the tick's execution is stored in the same
/// transaction), then until each runner has completed two more scheduler
/// rounds, which would have fired anything else due. Panics after 20 s.
async fn settle(runners: &[&Scheduled], names: &[&str], tick: Timestamp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = runners[0].list_schedules().await.unwrap();
        let behind: Vec<(&str, Timestamp)> = names
            .iter()
            .map(|n| {
                let s = listed.iter().find(|s| s.schedule.name() == *n).unwrap_or_else(|| panic!("no schedule {n}"));
                (*n, s.last_tick)
            })
            .filter(|(_, last)| *last < tick)
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "schedules behind tick {tick:?}: {behind:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A round counted after now starts after the tick was processed; it has
    // finished once the round after it starts. Three more starts: two whole
    // rounds.
    let marks: Vec<usize> = runners.iter().map(|r| r.rounds.get()).collect();
    for (r, mark) in runners.iter().zip(marks) {
        while r.rounds.get() < mark + 3 {
            assert!(Instant::now() < deadline, "the scheduler stopped running rounds");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `START` plus `secs` seconds.
fn at(secs: i64) -> Timestamp {
    Timestamp(START.0 + secs * 1000)
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
        settle(&[&a, &b], &["every_second"], at(i)).await;
        let seen = executions(&a, "cron:every_second@").await;
        assert_eq!(seen.len(), i as usize, "after tick {i}");
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
    settle(&[&first], &["hourly_skip", "hourly_all"], at(60)).await;
    assert_eq!(executions(&first, "cron:hourly_").await.len(), 2, "tick 1 of both");
    first.shutdown().await.unwrap();

    // Ticks 2 to 6 pass while no runner is up.
    clock.advance(Duration::from_secs(5 * 60 + 5));
    let second = scheduled_runner(&db, &clock, tick_workflow()).await;
    // Applications register their schedules at every start: no duplicates,
    // and the progress of each is kept.
    for s in schedules() {
        second.register_cron(s).await.unwrap();
    }
    settle(&[&second], &["hourly_skip", "hourly_all"], at(6 * 60)).await;
    let all = executions(&second, "cron:hourly_all@").await;
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
impl EventTrigger for Repeating {
    async fn poll(&self) -> Result<EventPoll, TaskError> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let mut ctx = Context::new();
        ctx.insert("file", self.file)?;
        Ok(EventPoll::Fire(ctx))
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
            EventTriggerSpec::new("inbox", "gated", trigger.clone())
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
    // Finished: the same firing starts new executions, one at a time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        let found = executions(&runner, "trigger:inbox").await;
        let unfinished: Vec<_> = found.iter().filter(|e| !e.state.is_terminal()).map(|e| e.id).collect();
        assert!(unfinished.len() <= 1, "identical firings never run side by side: {unfinished:?}");
        if found.len() >= 3 {
            break found;
        }
        assert!(Instant::now() < deadline, "only {} `trigger:inbox` executions after the first finished", found.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut ids: Vec<_> = again.iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), again.len(), "each firing is a new execution");
    let new: Vec<_> = again.iter().filter(|e| e.id != fired[0].id).collect();
    assert_eq!(new.len(), again.len() - 1, "the first execution is still there, once");
    assert!(new.iter().all(|e| e.input.get_as::<String>("file").unwrap() == "orders.csv"));
    runner.shutdown().await.unwrap();
    assert_eq!(Arc::strong_count(&trigger), 1, "shutdown stopped the trigger's polling and dropped it");
}

/// A trigger allowing concurrent runs starts one execution per firing; a
/// failing or panicking poll is logged and polled again.
async fn concurrent_and_faulty_triggers(db: TestDb) {
    let gate = Arc::new(AtomicBool::new(false));
    let runner = db.builder().workflow(gated_workflow(gate.clone())).build().await.unwrap();
    let fanout = Arc::new(Repeating { polls: AtomicUsize::new(0), file: "same.csv" });
    runner
        .register_trigger(
            EventTriggerSpec::new("fanout", "gated", fanout.clone())
                .unwrap()
                .poll_interval(Duration::from_millis(20))
                .unwrap()
                .allow_concurrent(true),
        )
        .unwrap();
    let running = wait_for_executions(&runner, "trigger:fanout", 3).await;
    assert!(running.iter().filter(|e| !e.state.is_terminal()).count() >= 3, "identical firings run side by side");

    // Fails, then panics, then fires once; skips from then on.
    struct Faulty {
        polls: AtomicUsize,
        marker: String,
    }
    #[cloacina_runner::async_trait]
    impl EventTrigger for Faulty {
        async fn poll(&self) -> Result<EventPoll, TaskError> {
            match self.polls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(TaskError::transient(format!("source unreachable ({})", self.marker))),
                1 => panic!("bug in a trigger ({})", self.marker),
                2 => {
                    let mut ctx = Context::new();
                    ctx.insert("file", "after_the_faults.csv")?;
                    Ok(EventPoll::Fire(ctx))
                }
                _ => Ok(EventPoll::Skip),
            }
        }
    }
    let logs = common::Captured::global("cloacina_runner=warn");
    // Unique, because both backends' cases log into one capture.
    let marker = cloacina_testkit::pg::unique_name("faulty");
    let faulty = Arc::new(Faulty { polls: AtomicUsize::new(0), marker: marker.clone() });
    runner
        .register_trigger(
            EventTriggerSpec::new("faulty", "gated", faulty.clone())
                .unwrap()
                .poll_interval(Duration::from_millis(10))
                .unwrap(),
        )
        .unwrap();
    // Polled again after the error and after the panic: the third poll fires.
    let fired = wait_for_executions(&runner, "trigger:faulty", 1).await;
    assert_eq!(fired[0].input.get_as::<String>("file").unwrap(), "after_the_faults.csv");
    // A few more polls (skips) later, that firing is still the only one.
    let deadline = Instant::now() + Duration::from_secs(20);
    while faulty.polls.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "the trigger stopped being polled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(executions(&runner, "trigger:faulty").await.len(), 1, "one firing, one execution");
    // Both faults were logged.
    let failed = |what: &str| {
        logs.text().lines().any(|l| l.contains("trigger poll failed") && l.contains(what) && l.contains(&marker))
    };
    while !(failed("source unreachable") && failed("bug in a trigger")) {
        assert!(Instant::now() < deadline, "poll failures not logged:\n{}", logs.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Registering a name twice on one runner is refused.
    let dup = EventTriggerSpec::new("fanout", "gated", fanout.clone()).unwrap();
    assert!(matches!(runner.register_trigger(dup), Err(RunnerError::DuplicateTrigger { name }) if name == "fanout"));
    gate.store(true, Ordering::SeqCst);
    runner.shutdown().await.unwrap();
    // Shutdown joined the trigger loops: nothing holds the triggers any
    // more, so nothing polls them.
    assert_eq!(Arc::strong_count(&fanout), 1, "polling stops at shutdown");
    assert_eq!(Arc::strong_count(&faulty), 1, "polling stops at shutdown");
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
    let unknown = EventTriggerSpec::new("t", "nope", t).unwrap();
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
