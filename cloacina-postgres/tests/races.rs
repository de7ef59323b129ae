//! Races that only PostgreSQL can have: its transactions interleave row by
//! row (SQLite's write transactions exclude each other whole). Each test
//! holds a row lock from a connection of its own to stop a storage call
//! between its first read and its lock, changes what that call read, and
//! checks the call decides on what it finds under the lock.

use std::time::{Duration, Instant};

use cloacina_core::ports::{
    ClaimOwner, ClaimRequest, ExecutionStore, Liveness, NewExecution, RecoveryRequest, ReportOutcome,
    RunnerRegistration, TaskReport,
};
use cloacina_core::{Context, RecoveryPolicy, RunnerId, TaskState, WorkflowSet, WorkflowState};
use cloacina_postgres::PgOptions;
use cloacina_testkit::QueueExt;
use cloacina_testkit::contract::{T0, single};
use cloacina_testkit::pg::TestSchema;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

fn registration(name: &str) -> RunnerRegistration {
    RunnerRegistration {
        id: RunnerId::parse(name).unwrap(),
        name: name.to_owned(),
        incarnation: format!("{name}-1"),
        lease_ttl: Duration::from_secs(10),
        serves: Vec::new(),
    }
}

fn owner(r: &RunnerRegistration) -> ClaimOwner {
    ClaimOwner { runner: r.id.clone(), incarnation: r.incarnation.clone(), lease_ttl: r.lease_ttl }
}

/// Waits until some backend of the server waits for a row lock.
async fn until_a_backend_waits_for_a_lock(c: &mut PgConnection) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&mut *c)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the storage call never waited for the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A recovery sweep finds a dead runner's task, then waits for the
/// execution's lock; meanwhile the task is requeued and claimed again by a
/// live runner. Once the sweep gets the lock it must leave the live
/// runner's claim alone (compare-and-set on the claim it found dead), and
/// the live runner's result is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_sweep_never_requeues_a_task_reclaimed_while_it_waited() {
    let schema = TestSchema::new("race_recover");
    let s = std::sync::Arc::new(
        cloacina_postgres::open(PgOptions::new(&schema.url).tenant(&schema.name).unwrap()).await.unwrap(),
    );
    let wf = single();
    let wfs: WorkflowSet = [wf.clone()].into_iter().collect();
    let (dead, live) = (registration("dead_one"), registration("live_one"));
    s.register_runner(&dead, T0).await.unwrap();
    s.register_runner(&live, T0).await.unwrap();
    let new = NewExecution::plan(&wf, Context::new(), "test", T0);
    let exec = new.id;
    s.create_executions(vec![new], None, &wfs, T0).await.unwrap();
    let claimed = s.claim(&ClaimRequest { owner: owner(&dead), limit: 1 }, &wfs, T0).await.unwrap().claimed;
    let task = claimed[0].id;
    let later = T0.plus(Duration::from_secs(11));
    s.heartbeat(&live, later).await.unwrap();

    // Hold the execution's lock.
    let mut blocker = PgConnection::connect(&schema.url).await.unwrap();
    let mut watcher = PgConnection::connect(&schema.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET search_path TO \"{}\"", schema.name)))
        .execute(&mut blocker)
        .await
        .unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM workflow_executions WHERE id = $1 FOR UPDATE")
        .bind(exec.0)
        .execute(&mut *tx)
        .await
        .unwrap();

    // The sweep finds the orphan (token 1), then waits for that lock.
    let sweeping = tokio::spawn({
        let s = s.clone();
        let wfs = wfs.clone();
        let rr = RecoveryRequest { policy: RecoveryPolicy::default(), limit: 10 };
        async move { s.recover(&rr, &wfs, later).await }
    });
    until_a_backend_waits_for_a_lock(&mut watcher).await;
    // Meanwhile: requeued by another sweep and claimed by the live runner
    // (the net change of those two commits: a new claim, token 2).
    sqlx::query(
        "UPDATE task_executions SET lease_owner = 'live_one', lease_incarnation = 'live_one-1', \
         lease_expires_at = $2, fencing_token = fencing_token + 1, recovery_count = 1 WHERE id = $1",
    )
    .bind(task.0)
    .bind(later.plus(Duration::from_secs(10)).0)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let report = sweeping.await.unwrap().unwrap();
    assert!(report.requeued.is_empty() && report.abandoned.is_empty(), "the live claim was taken: {report:?}");
    let row = s.tasks(exec).await.unwrap().remove(0);
    assert_eq!(row.state, TaskState::Running);
    assert_eq!(row.lease.as_ref().map(|l| l.owner.as_str()), Some("live_one"));
    assert_eq!(row.fencing_token.0, 2);
    // The live runner's result is applied.
    let done = s
        .report(
            vec![TaskReport {
                task,
                execution: exec,
                fencing_token: row.fencing_token,
                outcome: ReportOutcome::Succeeded { output: Context::new() },
            }],
            None,
            &wfs,
            later,
        )
        .await
        .unwrap();
    assert_eq!(done.results, vec![Ok(())]);
    assert_eq!(s.execution(exec).await.unwrap().unwrap().state, WorkflowState::Completed);
}

/// Two runners finish the two branches of a fork at the same moment; the
/// second report waits for the first one's lock on the execution. It must
/// see the first branch completed (reading the task rows after the lock,
/// not from the snapshot its statement started with) and promote the join.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_is_promoted_when_its_branches_finish_together() {
    use cloacina_core::{TaskError, TaskSpec, Workflow, task_fn};
    let schema = TestSchema::new("race_join");
    let s = std::sync::Arc::new(
        cloacina_postgres::open(PgOptions::new(&schema.url).tenant(&schema.name).unwrap()).await.unwrap(),
    );
    let noop = |id: &str| TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) }));
    let wf = Workflow::builder("fork")
        .task(noop("b1"))
        .task(noop("b2"))
        .task(noop("join").depends_on(["b1", "b2"]))
        .build()
        .unwrap();
    let wfs: WorkflowSet = [wf.clone()].into_iter().collect();
    let (r1, r2) = (registration("runner_one"), registration("runner_two"));
    let new = NewExecution::plan(&wf, Context::new(), "test", T0);
    let exec = new.id;
    s.create_executions(vec![new], None, &wfs, T0).await.unwrap();
    let c1 = s.claim(&ClaimRequest { owner: owner(&r1), limit: 1 }, &wfs, T0).await.unwrap().claimed.remove(0);
    let c2 = s.claim(&ClaimRequest { owner: owner(&r2), limit: 1 }, &wfs, T0).await.unwrap().claimed.remove(0);
    let ok = |c: &cloacina_core::ports::ClaimedTask| TaskReport {
        task: c.id,
        execution: c.execution_id,
        fencing_token: c.fencing_token,
        outcome: ReportOutcome::Succeeded { output: Context::new() },
    };

    // Hold the execution's lock, as the first report's transaction would.
    let mut blocker = PgConnection::connect(&schema.url).await.unwrap();
    let mut watcher = PgConnection::connect(&schema.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET search_path TO \"{}\"", schema.name)))
        .execute(&mut blocker)
        .await
        .unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM workflow_executions WHERE id = $1 FOR UPDATE")
        .bind(exec.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    let second = tokio::spawn({
        let s = s.clone();
        let wfs = wfs.clone();
        let report = ok(&c2);
        async move { s.report(vec![report], None, &wfs, T0.plus(Duration::from_secs(1))).await }
    });
    until_a_backend_waits_for_a_lock(&mut watcher).await;
    // The first branch completes (what the first report commits).
    sqlx::query(
        "UPDATE task_executions SET state = 'completed', lease_owner = NULL, lease_incarnation = NULL, \
         lease_expires_at = NULL, finished_at = 1 WHERE id = $1",
    )
    .bind(c1.id.0)
    .execute(&mut *tx)
    .await
    .unwrap();
    // With its counters: the join waits on one branch less, the execution
    // has one unfinished task less (the second report reads both after the
    // lock: the head from the locking statement, the join in a later one).
    sqlx::query(
        "UPDATE task_executions SET waiting_on = waiting_on - 1 WHERE execution_id = $1 AND task_name = 'join'",
    )
    .bind(exec.0)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE workflow_executions SET unfinished = unfinished - 1 WHERE id = $1")
        .bind(exec.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let out = second.await.unwrap().unwrap();
    assert_eq!(out.results, vec![Ok(())]);
    let join = s.tasks(exec).await.unwrap().into_iter().find(|t| t.name == "join").unwrap();
    assert_eq!(join.state, TaskState::Ready, "the join was promoted by the report that came second");
}
