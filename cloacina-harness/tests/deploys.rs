//! The deploy proofs, with real runner processes and real SIGKILLs, on
//! SQLite files and on PostgreSQL. The releases are
//! [`cloacina_harness::Release`]: v1 (flaky tasks fail once; 2 attempts
//! 1.5 s apart), v1.1 (the same shape; flaky tasks fail twice; 4 attempts
//! 20 ms apart; a shorter timeout) and v2 (each DAG gets a task `z`).
//!
//! 1. **Rolling deploy, same shape** — two v1 processes with 500 mixed DAG
//!    executions in flight, some tasks waiting for a retry, are SIGKILLed;
//!    two v1.1 processes finish every execution under v1.1's policy (a
//!    flaky task's second failure, fatal under v1's policy, is retried);
//!    nothing is ever stranded.
//! 2. **Rolling deploy, changed shape, both versions registered** — two v1
//!    processes and two v1+v2 processes at once: old executions finish on
//!    the old shape, new ones (submitted by the v1+v2 processes) on the new
//!    one, and only processes that have v2 run v2 tasks.
//! 3. **Changed shape, old version gone** — the only v1 process is
//!    SIGKILLed mid-run; two v2 processes each warn about the stranded
//!    executions (text and count asserted, per workflow), one event is
//!    recorded on each, and the `stranded` filter lists them; bad mappings
//!    are refused with typed errors and change nothing; the migration moves
//!    them and the v2 processes finish them without running a completed
//!    task again.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cloacina_harness::{Release, Shape};
use cloacina_runner::core::WorkflowSet;
use cloacina_runner::core::migrate::MigrationError;
use cloacina_runner::core::ports::{ExecutionFilter, NewExecution, Storage, TaskRecord, stranded_detail};
use cloacina_runner::{
    Context, DefaultRunner, ExecutionId, RunnerError, StorageError, TaskMapping, TaskState, Timestamp, Workflow,
    WorkflowState,
};
use cloacina_testkit::QueueExt;
use common::*;

/// One journal line: a body's run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    execution: String,
    task: String,
    attempt: u32,
    pid: u32,
}

fn runs(journal: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    text.lines()
        .filter_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [e, t, a, p] => {
                Some(Run { execution: e.into(), task: t.into(), attempt: a.parse().ok()?, pid: p.parse().ok()? })
            }
            _ => None,
        })
        .collect()
}

/// Stores `n` executions of `release`'s current workflows, the DAG shapes
/// in turn, before any runner starts.
async fn store(storage: &dyn Storage, release: Release, journal: &Path, n: usize) -> Vec<Workflow> {
    let all = release.workflows(journal, (0, 0));
    let set: WorkflowSet = all.iter().cloned().collect();
    let current: Vec<Workflow> = Shape::DAGS
        .iter()
        .map(|&s| {
            set.by_name(cloacina_harness::workflow(s, journal, (0, 0)).name())
                .expect("the release has every DAG shape")
                .clone()
        })
        .collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let batch = chunk
            .iter()
            .map(|&i| {
                let mut c = Context::new();
                c.set("i", i).unwrap();
                NewExecution::plan(&current[i % current.len()], c, "test", Timestamp::now())
            })
            .collect();
        storage.create_executions(batch, None, &set, Timestamp::now()).await.unwrap();
    }
    current
}

async fn all_executions(storage: &dyn Storage) -> Vec<cloacina_runner::core::ports::ExecutionRecord> {
    storage.list_executions(&ExecutionFilter { limit: Some(1_000_000), ..Default::default() }).await.unwrap()
}

async fn unfinished(storage: &dyn Storage) -> Vec<cloacina_runner::core::ports::ExecutionRecord> {
    let states = vec![WorkflowState::Pending, WorkflowState::Running, WorkflowState::Paused];
    storage.list_executions(&ExecutionFilter { states, limit: Some(1_000_000), ..Default::default() }).await.unwrap()
}

/// Every task row of the given executions.
async fn task_rows(storage: &dyn Storage, ids: &[ExecutionId]) -> HashMap<ExecutionId, Vec<TaskRecord>> {
    let mut out = HashMap::new();
    for id in ids {
        out.insert(*id, storage.tasks(*id).await.unwrap());
    }
    out
}

/// Polls `cond` (every 50 ms) until it holds; panics after `timeout`.
async fn until<F: AsyncFn() -> Option<String>>(what: &str, timeout: Duration, cond: F) {
    let deadline = Instant::now() + timeout;
    loop {
        let Some(why_not) = cond().await else { return };
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}: {why_not}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which lease settings a runner gets.
#[derive(Clone, Copy)]
enum Leases {
    /// 1 s, renewed every 200 ms: a runner to be SIGKILLed, whose tasks
    /// are soon taken over.
    Short,
    /// 10 s, with a recovery sweep every 200 ms: a runner that takes over
    /// from a killed one at once and is not itself mistaken for dead on a
    /// loaded machine.
    TakingOver,
    /// The runner's defaults.
    Default,
}

/// Waits (up to 300 s) until no execution is unfinished.
async fn until_all_finished(storage: &dyn Storage) {
    until("every execution finished", Duration::from_secs(300), async || {
        let left = unfinished(storage).await.len();
        (left > 0).then(|| format!("{left} unfinished"))
    })
    .await;
}

fn args(release: &str, leases: Leases, extra: &[&str]) -> Vec<String> {
    let take_over = ["--lease-ttl-ms", "10000", "--heartbeat-ms", "1000", "--recovery-ms", "200"];
    let mut a: Vec<String> = match leases {
        Leases::Short => FAST_LEASES.iter().map(|s| s.to_string()).collect(),
        Leases::TakingOver => take_over.iter().map(|s| s.to_string()).collect(),
        Leases::Default => Vec::new(),
    };
    a.extend(["--release", release].map(String::from));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Spawns a runner; its retries of flaky tasks are not logged (thousands
/// of lines), its other warnings are.
fn spawn(target: &Target, a: &[String]) -> Runner {
    Runner::spawn_with_log(
        &target.url,
        target.tenant.as_deref(),
        &target.journal(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        Some("warn,cloacina_runner::engine::execute=error"),
    )
}

fn stranded_events(events: &[cloacina_runner::core::ports::ExecutionEvent]) -> usize {
    events.iter().filter(|e| e.detail.as_deref().is_some_and(|d| d.starts_with("stranded:"))).count()
}

/// Proof 1: a rolling deploy that changes behaviour, not shape.
async fn same_shape_proof(target: Target) {
    let journal = target.journal();
    let storage = target.storage().await;
    let n = 500;
    let v1 = store(&*storage, Release::V1, &journal, n).await;
    let old = args("v1", Leases::Short, &["--concurrency", "4", "--work-ms", "5,20", "--no-exit"]);
    let mut v1_runners: Vec<Runner> = (0..2).map(|_| spawn(&target, &old)).collect();
    for r in &mut v1_runners {
        r.expect_line("READY", Duration::from_secs(60));
    }
    // In flight: executions completed, tasks running, and tasks waiting for
    // a retry (failed attempt 1, attempt 2 due in up to 1.5 s).
    until("v1 mid-run", Duration::from_secs(120), async || {
        let open = unfinished(&*storage).await;
        let done = n - open.len();
        let ids: Vec<ExecutionId> = open.iter().map(|e| e.id).collect();
        let rows = task_rows(&*storage, &ids).await;
        let retrying = rows.values().flatten().filter(|t| t.state == TaskState::Ready && t.attempt == 2).count();
        let running = rows.values().flatten().filter(|t| t.state == TaskState::Running).count();
        (done < 20 || retrying < 3 || running == 0)
            .then(|| format!("{done} done, {retrying} waiting for a retry, {running} running"))
    })
    .await;
    assert!(storage.stranded(Timestamp::now()).await.unwrap().is_empty(), "v1 serves v1");
    let v1_pids: HashSet<u32> = v1_runners.iter().map(|r| r.child.id()).collect();
    for r in &mut v1_runners {
        r.sigkill();
    }
    let open: Vec<ExecutionId> = unfinished(&*storage).await.iter().map(|e| e.id).collect();
    let at_kill = task_rows(&*storage, &open).await;
    let retrying: Vec<(ExecutionId, String)> = at_kill
        .iter()
        .flat_map(|(e, ts)| ts.iter().map(move |t| (e, t)))
        .filter(|(_, t)| t.state == TaskState::Ready && t.attempt == 2)
        .map(|(e, t)| (*e, t.name.clone()))
        .collect();
    let in_flight = at_kill.values().flatten().filter(|t| t.state == TaskState::Running).count();
    assert!(!retrying.is_empty() && in_flight > 0);

    let new = args("v1-tuned", Leases::TakingOver, &["--concurrency", "4", "--work-ms", "1,5", "--no-exit"]);
    let mut tuned: Vec<Runner> = (0..2).map(|_| spawn(&target, &new)).collect();
    for r in &mut tuned {
        r.expect_line("READY", Duration::from_secs(60));
    }
    // v1.1 has v1's shape: the old executions are served, never stranded.
    until("every execution finished", Duration::from_secs(300), async || {
        let stranded = storage.stranded(Timestamp::now()).await.unwrap();
        assert!(stranded.is_empty(), "stranded with v1.1 running: {stranded:?}");
        let left = unfinished(&*storage).await.len();
        (left > 0).then(|| format!("{left} unfinished"))
    })
    .await;
    for r in &mut tuned {
        r.sigterm();
        r.expect_line("STOPPED", Duration::from_secs(30));
        r.wait_exit(Duration::from_secs(10));
        assert!(!r.seen.iter().any(|l| l.contains("served by no live runner")), "a v1.1 runner warned: {:?}", r.seen);
    }

    let v = verify(&*storage, &journal, n, 1).await;
    assert!(v.recovered_tasks > 0, "the SIGKILLs hit running tasks");
    let execs = all_executions(&*storage).await;
    for e in &execs {
        let wf = v1.iter().find(|w| w.name() == e.workflow.name).unwrap();
        assert_eq!((&e.workflow, e.label.as_deref()), (&wf.reference(), Some("1")), "stored under v1, unchanged");
        assert_eq!(stranded_events(&storage.events(e.id).await.unwrap()), 0, "{} was never stranded", e.id);
    }
    // The tasks waiting for a retry at the deploy ran attempt 2 under v1.1,
    // failed it (v1.1's bodies fail flaky tasks twice) and, v1.1's policy
    // allowing 4 attempts where v1's allowed 2, completed at attempt 3.
    let journal_runs = runs(&journal);
    let tuned_pids: HashSet<u32> = journal_runs.iter().map(|r| r.pid).filter(|p| !v1_pids.contains(p)).collect();
    for (e, name) in &retrying {
        let t = storage.tasks(*e).await.unwrap().into_iter().find(|t| &t.name == name).unwrap();
        assert_eq!((t.state, t.attempt), (TaskState::Completed, 3), "task {name} of {e}");
        let second = journal_runs.iter().find(|r| r.execution == e.to_string() && &r.task == name && r.attempt == 2);
        assert!(second.is_some_and(|r| tuned_pids.contains(&r.pid)), "attempt 2 of {name} of {e} ran under v1.1");
    }
    let by_v1 = journal_runs.iter().filter(|r| v1_pids.contains(&r.pid)).count();
    eprintln!(
        "same-shape deploy: {v:?}; at the SIGKILLs {in_flight} tasks running and {} waiting for a retry; {by_v1} runs \
         by v1, {} by v1.1",
        retrying.len(),
        journal_runs.len() - by_v1
    );
    assert!(by_v1 > 0 && journal_runs.len() > by_v1);
    storage.close().await;
}

/// Proof 2: v1 and v1+v2 processes side by side.
async fn both_versions_proof(target: Target) {
    let journal = target.journal();
    let storage = target.storage().await;
    let each = 150;
    let work = ["--shape", "mixed", "--submit", "150", "--concurrency", "2", "--work-ms", "1,5", "--no-exit"];
    let mut old: Vec<Runner> = (0..2).map(|_| spawn(&target, &args("v1", Leases::Default, &work))).collect();
    let mut new: Vec<Runner> = (0..2).map(|_| spawn(&target, &args("v1+v2", Leases::Default, &work))).collect();
    for r in old.iter_mut().chain(new.iter_mut()) {
        r.expect_line("SUBMITTED", Duration::from_secs(60));
    }
    let total = each * 4;
    until_all_finished(&*storage).await;
    let old_pids: HashSet<u32> = old.iter().map(|r| r.child.id()).collect();
    let new_pids: HashSet<u32> = new.iter().map(|r| r.child.id()).collect();
    for r in old.iter_mut().chain(new.iter_mut()) {
        r.sigterm();
        r.expect_line("STOPPED", Duration::from_secs(30));
        r.wait_exit(Duration::from_secs(10));
    }

    let v = verify(&*storage, &journal, total, 0).await;
    let v1: Vec<Workflow> = Release::V1.workflows(&journal, (0, 0));
    let v2: Vec<Workflow> = Release::V2.workflows(&journal, (0, 0));
    let journal_runs = runs(&journal);
    let mut by_version: HashMap<&str, usize> = HashMap::new();
    let mut old_runs_by_new = 0;
    for e in all_executions(&*storage).await {
        let label = e.label.clone().expect("every execution has a label");
        let (wf, is_v2) = match label.as_str() {
            "1" => (v1.iter().find(|w| w.name() == e.workflow.name).unwrap(), false),
            "2" => (v2.iter().find(|w| w.name() == e.workflow.name).unwrap(), true),
            other => panic!("unexpected label {other}"),
        };
        assert_eq!(e.workflow, wf.reference());
        *by_version.entry(if is_v2 { "2" } else { "1" }).or_default() += 1;
        let names: Vec<String> = storage.tasks(e.id).await.unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, wf.topological_order(), "execution {} runs its own version's shape", e.id);
        let id = e.id.to_string();
        for r in journal_runs.iter().filter(|r| r.execution == id) {
            if is_v2 {
                assert!(new_pids.contains(&r.pid), "v2 task {} of {id} ran in a process without v2", r.task);
            } else {
                old_runs_by_new += usize::from(new_pids.contains(&r.pid));
            }
        }
    }
    assert_eq!(by_version, HashMap::from([("1", each * 2), ("2", each * 2)]));
    let old_runs = journal_runs.iter().filter(|r| old_pids.contains(&r.pid)).count();
    eprintln!(
        "both versions: {v:?}; runs by v1 processes {old_runs}, v1 tasks run by v1+v2 processes {old_runs_by_new}"
    );
    assert!(old_runs > 0, "the v1 processes served");
    storage.close().await;
}

/// A task row as compared before and after a refused migration.
fn row_key(t: &TaskRecord) -> (String, TaskState, u32, i64, u32) {
    (t.name.clone(), t.state, t.attempt, t.fencing_token.0, t.recovery_count)
}

/// Proof 3: the old version is gone; its executions are stranded,
/// reported and migrated.
async fn old_version_gone_proof(target: Target) {
    let journal = target.journal();
    let tenant = target.tenant.as_deref();
    let storage = target.storage().await;
    let n = 200;
    let v1 = store(&*storage, Release::V1, &journal, n).await;
    let mut old = spawn(&target, &args("v1", Leases::Short, &["--concurrency", "4", "--work-ms", "5,20", "--no-exit"]));
    old.expect_line("READY", Duration::from_secs(60));
    // Mid-run: every workflow has an unfinished execution whose `a`
    // completed (so a mapping dropping `a` loses an output).
    until("v1 mid-run", Duration::from_secs(120), async || {
        let open = unfinished(&*storage).await;
        let ids: Vec<ExecutionId> = open.iter().map(|e| e.id).collect();
        let rows = task_rows(&*storage, &ids).await;
        let with_a: HashSet<&str> = open
            .iter()
            .filter(|e| rows[&e.id].iter().any(|t| t.name == "a" && t.state == TaskState::Completed))
            .map(|e| e.workflow.name.as_str())
            .collect();
        let done = n - open.len();
        (with_a.len() < 3 || done < 10).then(|| format!("{done} done; `a` completed in unfinished {with_a:?}"))
    })
    .await;
    old.sigkill();

    // Two v2 processes: both find the stranded executions and record
    // them; each execution still gets one event.
    let v2_args = args("v2", Leases::TakingOver, &["--concurrency", "4", "--work-ms", "1,5", "--no-exit"]);
    let mut v2_runners: Vec<Runner> = (0..2).map(|_| spawn(&target, &v2_args)).collect();
    for r in &mut v2_runners {
        r.expect_line("READY", Duration::from_secs(60));
    }
    // Once v1's liveness lapses (1 s), each v2 runner's sweep warns, per
    // workflow, with the count.
    for r in &mut v2_runners {
        r.expect_log("are served by no live runner", Duration::from_secs(30));
    }
    let stranded = storage.stranded(Timestamp::now()).await.unwrap();
    let open = unfinished(&*storage).await;
    assert_eq!(stranded.len(), 3, "{stranded:?}");
    assert_eq!(stranded.iter().map(|s| s.executions).sum::<usize>(), open.len());
    for s in &stranded {
        let wf = v1.iter().find(|w| w.name() == s.workflow.name).unwrap();
        assert_eq!((&s.workflow, s.label.as_deref()), (&wf.reference(), Some("1")));
        let warning = format!(
            "{} unfinished executions of workflow `{}` version {} (1) are served by no live runner: register that \
                 version on a runner, cancel them, or move them with migrate_executions",
            s.executions,
            wf.name(),
            wf.version()
        );
        for r in &mut v2_runners {
            r.expect_log(&warning, Duration::from_secs(5));
        }
    }
    let listed = storage
        .list_executions(&ExecutionFilter { stranded: true, limit: Some(10_000), ..Default::default() })
        .await
        .unwrap();
    let mut listed: Vec<ExecutionId> = listed.iter().map(|e| e.id).collect();
    let mut ids: Vec<ExecutionId> = open.iter().map(|e| e.id).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "the stranded filter lists exactly the unfinished v1 executions");
    for e in &open {
        let events = storage.events(e.id).await.unwrap();
        let detail = stranded_detail(&e.workflow);
        assert_eq!(events.iter().filter(|ev| ev.detail.as_deref() == Some(detail.as_str())).count(), 1, "{events:?}");
    }

    // The operator: a runner with v2, in this process.
    let mut b = DefaultRunner::builder()
        .database_url(&target.url)
        .max_concurrent_tasks(1)
        .shutdown_grace_period(Duration::from_millis(100));
    for wf in Release::V2.workflows(&journal, (1, 5)) {
        b = b.workflow(wf);
    }
    if let Some(t) = tenant {
        b = b.tenant(t);
    }
    let operator = b.build().await.unwrap();
    let before = task_rows(&*storage, &ids).await;
    let refused = |err: RunnerError| match err {
        RunnerError::Storage(StorageError::MigrationRefused(m)) => m,
        other => panic!("expected a refused migration, got {other:?}"),
    };
    let version_of = |name: &str| v1.iter().find(|w| w.name() == name).unwrap().version().to_owned();
    let err = operator
        .migrate_executions("harness_pipeline", &version_of("harness_pipeline"), "2", &TaskMapping::new().drop("a"))
        .await
        .unwrap_err();
    assert!(matches!(refused(err), MigrationError::LosesOutput { ref task, .. } if task == "a"));
    // Swapping the diamond's ends puts a completed task after one that has
    // not completed.
    let swap = TaskMapping::new().task("a", "d").task("d", "a");
    let err = operator.migrate_executions("harness_diamond", &version_of("harness_diamond"), "2", &swap).await;
    assert!(matches!(refused(err.unwrap_err()), MigrationError::CompletedBeforeDependency { .. }));
    let err = operator.migrate_executions("harness_fanin", "no-such-version", "2", &TaskMapping::new()).await;
    assert!(matches!(err, Err(RunnerError::UnknownVersion { .. })), "{err:?}");
    let after = task_rows(&*storage, &ids).await;
    for id in &ids {
        let (b, a): (Vec<_>, Vec<_>) =
            (before[id].iter().map(row_key).collect(), after[id].iter().map(row_key).collect());
        assert_eq!(a, b, "a refused migration changed execution {id}");
    }
    assert_eq!(storage.stranded(Timestamp::now()).await.unwrap(), stranded, "a refusal changes nothing");

    // Completed before the migration: these must not run again.
    let completed: HashSet<(ExecutionId, String)> = before
        .iter()
        .flat_map(|(e, ts)| ts.iter().filter(|t| t.state == TaskState::Completed).map(move |t| (*e, t.name.clone())))
        .collect();
    let runs_before = runs(&journal);
    let mut migrated = 0;
    for s in &stranded {
        let report =
            operator.migrate_executions(&s.workflow.name, &s.workflow.version, "2", &TaskMapping::new()).await.unwrap();
        assert_eq!(report.migrated.len(), s.executions);
        migrated += report.migrated.len();
    }
    operator.shutdown().await.unwrap();
    assert!(storage.stranded(Timestamp::now()).await.unwrap().is_empty());

    until_all_finished(&*storage).await;
    for r in &mut v2_runners {
        r.sigterm();
        r.expect_line("STOPPED", Duration::from_secs(30));
        r.wait_exit(Duration::from_secs(10));
    }

    let v = verify(&*storage, &journal, n, 1).await;
    let v2: Vec<Workflow> = Release::V2.workflows(&journal, (0, 0));
    let migrated_ids: HashSet<ExecutionId> = ids.iter().copied().collect();
    for e in all_executions(&*storage).await {
        if migrated_ids.contains(&e.id) {
            let wf = v2.iter().find(|w| w.name() == e.workflow.name).unwrap();
            assert_eq!((&e.workflow, e.label.as_deref()), (&wf.reference(), Some("2")));
            let names: Vec<String> = storage.tasks(e.id).await.unwrap().into_iter().map(|t| t.name).collect();
            assert_eq!(names, wf.topological_order(), "{} has v2's shape", e.id);
        } else {
            assert_eq!(e.workflow, v1.iter().find(|w| w.name() == e.workflow.name).unwrap().reference());
        }
    }
    let journal_runs = runs(&journal);
    let count = |rs: &[Run], e: &ExecutionId, t: &str| {
        let e = e.to_string();
        rs.iter().filter(|r| r.execution == e && r.task == t).count()
    };
    for (e, t) in &completed {
        assert_eq!(count(&journal_runs, e, t), count(&runs_before, e, t), "{t} of {e} completed, then ran again");
    }
    eprintln!("old version gone: {v:?}; {migrated} executions migrated, {} completed tasks kept", completed.len());
    storage.close().await;
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rolling_deploy_same_shape() {
        same_shape_proof(Target::sqlite(Some("deploy_same"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rolling_deploy_both_versions() {
        both_versions_proof(Target::sqlite(Some("deploy_both"))).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn old_version_gone() {
        old_version_gone_proof(Target::sqlite(Some("deploy_gone"))).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rolling_deploy_same_shape() {
        same_shape_proof(Target::postgres()).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rolling_deploy_both_versions() {
        both_versions_proof(Target::postgres()).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn old_version_gone() {
        old_version_gone_proof(Target::postgres()).await;
    }
}
