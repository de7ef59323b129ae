//! Workflow versions across deploys, on SQLite files and PostgreSQL: the
//! same shape with new behaviour serves old executions; a changed shape is
//! served beside the old one; executions nobody serves are reported and
//! can be migrated, and a bad mapping changes nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloacina_runner::{
    Context, DefaultRunner, ExecutionFilter, ExecutionId, MigrationError, RetryPolicy, StorageError, TaskError,
    TaskMapping, TaskSpec, TaskState, Workflow, task_fn,
};
use common::TestDb;

const BOUND: Duration = Duration::from_secs(30);

/// A body that never finishes (the runner that runs it goes away).
fn stuck(id: &'static str) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn(|_ctx: Context| async move { std::future::pending::<Result<Context, TaskError>>().await }),
    )
}

/// A body that writes `who` under its task id and counts its runs.
fn mark(id: &'static str, who: &'static str, runs: Arc<AtomicUsize>) -> TaskSpec {
    TaskSpec::new(
        id,
        task_fn(move |mut ctx: Context| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                ctx.set(id, who).map_err(|e| TaskError::permanent(e.to_string()))?;
                Ok(ctx)
            }
        }),
    )
}

/// Starts `n` executions of `name` on a runner whose first task never
/// finishes, waits until each has its first task running, and shuts the
/// runner down (its tasks are released for other runners).
async fn leave_unfinished(db: &TestDb, wf: Workflow, n: usize) -> Vec<ExecutionId> {
    let name = wf.name().to_owned();
    let r = db.builder().workflow(wf).build().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let mut ctx = Context::new();
        ctx.set("i", i).unwrap();
        ids.push(r.execute_async(&name, ctx).await.unwrap().id());
    }
    let deadline = tokio::time::Instant::now() + BOUND;
    // Each execution's stuck task is running (the ones before it completed).
    for id in &ids {
        loop {
            let tasks = r.result(*id).await.unwrap().tasks;
            if tasks.iter().any(|t| t.state == TaskState::Running) && !tasks.iter().any(|t| t.state == TaskState::Ready)
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "execution {id} never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    r.shutdown().await.unwrap();
    ids
}

async fn wait_all(r: &DefaultRunner, ids: &[ExecutionId]) -> Vec<cloacina_runner::ExecutionResult> {
    let mut out = Vec::new();
    for id in ids {
        out.push(r.handle(*id).wait_timeout(BOUND).await.expect("finishes"));
    }
    out
}

/// A deploy that changes bodies, a retry policy and a timeout but not the
/// shape: the new runner serves the old executions with what it has now.
async fn same_shape_new_behaviour_serves_old_executions(db: TestDb) {
    let v1 = Workflow::builder("etl").task(stuck("a")).task(stuck("b").depends_on(["a"])).build().unwrap();
    let ids = leave_unfinished(&db, v1.clone(), 3).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let v2 = Workflow::builder("etl")
        .version("2026-12-03")
        .task(mark("a", "v2", runs.clone()).retry(RetryPolicy::none()).timeout(Duration::from_secs(5)))
        .task(mark("b", "v2", runs.clone()).depends_on(["a"]))
        .build()
        .unwrap();
    assert_eq!(v1.version(), v2.version(), "behaviour is not part of the shape");
    let r = db.builder().workflow(v2).build().await.unwrap();
    for res in wait_all(&r, &ids).await {
        assert!(res.is_success(), "{res:?}");
        assert_eq!(res.context.get_as::<String>("a").ok().as_deref(), Some("v2"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6, "each task of each execution ran once, with the new body");
    assert!(r.stranded_executions().await.unwrap().is_empty());
    r.shutdown().await.unwrap();
}

/// Two shapes of one name on one runner: old executions finish on the old
/// shape, new ones use the version registered last.
async fn changed_shape_is_served_beside_the_old_one(db: TestDb) {
    let v1 = Workflow::builder("etl").task(stuck("a")).build().unwrap();
    let ids = leave_unfinished(&db, v1, 2).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let v1_again = Workflow::builder("etl").version("1").task(mark("a", "v1", runs.clone())).build().unwrap();
    let v2 = Workflow::builder("etl")
        .version("2")
        .task(mark("a", "v2", runs.clone()))
        .task(mark("z", "v2", runs.clone()).depends_on(["a"]))
        .build()
        .unwrap();
    assert_ne!(v1_again.version(), v2.version());
    let r = db.builder().workflow(v1_again.clone()).workflow(v2.clone()).build().await.unwrap();
    let versions: Vec<String> = r.workflow_versions("etl").iter().map(|w| w.version().to_owned()).collect();
    assert_eq!(versions, [v2.version(), v1_again.version()], "current first");
    for res in wait_all(&r, &ids).await {
        assert!(res.is_success());
        assert_eq!(res.workflow_version, v1_again.version());
        assert_eq!(res.tasks.len(), 1, "old executions keep the old shape");
    }
    let new = r.execute("etl", Context::new()).await.unwrap();
    assert_eq!(new.workflow_version, v2.version());
    assert_eq!(new.tasks.len(), 2);
    let stored = r.list_executions(ExecutionFilter { version: Some("2".into()), ..Default::default() }).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), [new.id], "listed by label");
    assert_eq!(stored[0].label.as_deref(), Some("2"));
    r.shutdown().await.unwrap();
}

/// The old shape is gone: its executions are reported; a bad mapping is
/// refused and changes nothing; a good one finishes them without running
/// a completed task again.
async fn stranded_executions_are_reported_and_migrated(db: TestDb) {
    let a_runs = Arc::new(AtomicUsize::new(0));
    let v1 = Workflow::builder("etl")
        .version("1")
        .task(mark("a", "v1", a_runs.clone()))
        .task(stuck("b").depends_on(["a"]))
        .task(stuck("c").depends_on(["b"]))
        .build()
        .unwrap();
    let ids = leave_unfinished(&db, v1.clone(), 3).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let v2 = Workflow::builder("etl")
        .version("2")
        .task(mark("a", "v2", runs.clone()))
        .task(mark("b2", "v2", runs.clone()).depends_on(["a"]))
        .task(mark("c", "v2", runs.clone()).depends_on(["b2"]))
        .build()
        .unwrap();
    let r = db.builder().workflow(v2.clone()).build().await.unwrap();
    let stranded = r.stranded_executions().await.unwrap();
    assert_eq!(stranded.len(), 1, "{stranded:?}");
    assert_eq!((stranded[0].workflow.version.as_str(), stranded[0].label.as_deref()), (v1.version(), Some("1")));
    assert_eq!(stranded[0].executions, 3);
    let listed = r.list_executions(ExecutionFilter { stranded: true, ..Default::default() }).await.unwrap();
    let mut listed: Vec<ExecutionId> = listed.iter().map(|e| e.id).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    // Stranded at two sweeps in a row (start-up, then one recovery interval
    // later): an event is recorded on each of them.
    let detail = cloacina_runner::core::ports::stranded_detail(&v1.reference());
    let stranded_events = async |id: ExecutionId| {
        let history = r.history(id).await.unwrap();
        history.iter().filter(|e| e.detail.as_deref() == Some(detail.as_str())).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for id in &ids {
        while stranded_events(*id).await == 0 {
            assert!(std::time::Instant::now() < deadline, "no stranded event on {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stranded_events(*id).await, 1, "one stranded event on {id}");
    }

    // Nothing maps `b`: refused, nothing changed.
    let err = r.migrate_executions("etl", "1", "2", &TaskMapping::new()).await.unwrap_err();
    assert!(
        matches!(&err, cloacina_runner::RunnerError::Storage(StorageError::MigrationRefused(MigrationError::Unmapped { task })) if task == "b"),
        "{err:?}"
    );
    // Dropping the completed `a` would lose its output: refused.
    let err = r.migrate_executions("etl", "1", "2", &TaskMapping::new().task("b", "b2").drop("a")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            cloacina_runner::RunnerError::Storage(StorageError::MigrationRefused(MigrationError::LosesOutput { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(r.stranded_executions().await.unwrap()[0].executions, 3, "a refusal changes nothing");
    for id in &ids {
        let tasks = r.result(*id).await.unwrap().tasks;
        assert_eq!(tasks.iter().map(|t| t.task.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    let report = r.migrate_executions("etl", v1.version(), "2", &TaskMapping::new().task("b", "b2")).await.unwrap();
    assert_eq!(report.migrated.len(), 3);
    for res in wait_all(&r, &ids).await {
        assert!(res.is_success(), "{res:?}");
        assert_eq!(res.workflow_version, v2.version());
        assert_eq!(res.context.get_as::<String>("a").ok().as_deref(), Some("v1"), "a's output was kept");
        assert_eq!(res.context.get_as::<String>("b2").ok().as_deref(), Some("v2"));
        assert_eq!(res.task("a").unwrap().state, TaskState::Completed);
        let history = r.history(res.id).await.unwrap();
        assert!(history.iter().any(|e| e.detail.as_deref().is_some_and(|d| d.starts_with("migrated from"))));
    }
    assert_eq!(a_runs.load(Ordering::SeqCst), 3, "a ran once per execution, before the migration");
    assert_eq!(runs.load(Ordering::SeqCst), 6, "b2 and c ran once per execution; a did not run again");
    assert!(r.stranded_executions().await.unwrap().is_empty());
    r.shutdown().await.unwrap();
}

/// A runner that registers the workflow just after it started (its
/// start-up sweep saw the executions unserved) does not report them: a
/// version is reported once stranded at two sweeps in a row, and what the
/// runner serves is never stranded.
async fn registering_just_after_start_strands_nothing(db: TestDb) {
    let runs = Arc::new(AtomicUsize::new(0));
    let held = Workflow::builder("etl")
        .task(stuck("a"))
        .task(mark("b", "v1", runs.clone()).depends_on(["a"]))
        .build()
        .unwrap();
    let ids = leave_unfinished(&db, held, 3).await;
    let r = db.builder().build().await.unwrap();
    let wf = Workflow::builder("etl")
        .task(mark("a", "v1", runs.clone()))
        .task(mark("b", "v1", runs.clone()).depends_on(["a"]))
        .build()
        .unwrap();
    r.register_workflow(wf).unwrap();
    assert!(r.stranded_executions().await.unwrap().is_empty(), "served here, even before the next heartbeat");
    let results = wait_all(&r, &ids).await;
    assert!(results.iter().all(|res| res.is_success()), "{results:?}");
    // Three recovery intervals: a confirmed stranding would have been
    // recorded by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let history = r.history(*id).await.unwrap();
        let stranded = history.iter().filter(|e| e.detail.as_deref().is_some_and(|d| d.starts_with("stranded:")));
        assert_eq!(stranded.count(), 0, "{id} was reported stranded: {history:?}");
    }
    r.shutdown().await.unwrap();
}

on_both_backends!(
    registering_just_after_start_strands_nothing,
    same_shape_new_behaviour_serves_old_executions,
    changed_shape_is_served_beside_the_old_one,
    stranded_executions_are_reported_and_migrated,
);
