//! The storage contract suite: behaviour every storage adapter must have.
//!
//! Written once; each adapter runs it through [`storage_contract!`](crate::storage_contract)
//! (crate root) with a setup expression that yields a [`ContractTarget`] on
//! a fresh tenant. Times are passed explicitly, so nothing here sleeps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::QueueExt;
use async_trait::async_trait;
use cloacina_core::ports::*;
use cloacina_core::{
    Context, ExecutionId, FencingToken, RecoveryPolicy, RunnerId, TaskExecutionId, TaskSpec, TaskState, Timestamp,
    TriggerRule, Workflow, WorkflowSet, WorkflowState, task_fn,
};
use futures::StreamExt;

/// What the suite needs from an adapter's test setup.
#[async_trait]
pub trait ContractTarget: Send + Sync {
    /// The storage under test, on a fresh tenant.
    fn storage(&self) -> Arc<dyn Storage>;
    /// The same tenant opened again, independently (another pool).
    async fn reopen(&self) -> Arc<dyn Storage>;
    /// Migrations applied by opening the tenant once more (`None` for a
    /// backend without migrations).
    async fn migrations_applied_on_reopen(&self) -> Option<Vec<String>>;
    /// Another tenant in the same database or directory.
    async fn other_tenant(&self) -> Arc<dyn Storage>;
}

/// The base time of every test.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

fn noop(id: &str) -> TaskSpec {
    TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, cloacina_core::TaskError>(c) }))
}

/// A single-task workflow.
pub fn single() -> Workflow {
    Workflow::builder("single").task(noop("only")).build().expect("valid workflow")
}

/// `a -> {b, c} -> d`.
pub fn diamond() -> Workflow {
    Workflow::builder("diamond")
        .task(noop("a"))
        .task(noop("b").depends_on(["a"]))
        .task(noop("c").depends_on(["a"]))
        .task(noop("d").depends_on(["b", "c"]))
        .build()
        .expect("valid workflow")
}

/// `first -> second`, where `cleanup` runs after `first` whatever happens.
pub fn chain() -> Workflow {
    Workflow::builder("chain")
        .task(noop("first"))
        .task(noop("second").depends_on(["first"]))
        .task(noop("cleanup").depends_on(["first"]).trigger(TriggerRule::AllDone))
        .build()
        .expect("valid workflow")
}

fn set(wfs: &[&Workflow]) -> WorkflowSet {
    wfs.iter().map(|w| (*w).clone()).collect()
}

fn owner(name: &str) -> ClaimOwner {
    ClaimOwner {
        runner: RunnerId::parse(name).expect("valid runner id"),
        incarnation: format!("{name}-inc"),
        lease_ttl: Duration::from_secs(10),
    }
}

fn req(name: &str, limit: usize) -> ClaimRequest {
    ClaimRequest { owner: owner(name), limit }
}

fn registration(name: &str, incarnation: &str) -> RunnerRegistration {
    RunnerRegistration {
        id: RunnerId::parse(name).expect("valid runner id"),
        name: name.to_owned(),
        incarnation: incarnation.to_owned(),
        lease_ttl: Duration::from_secs(10),
    }
}

fn input(n: i64) -> Context {
    let mut c = Context::new();
    c.set("n", n).expect("json");
    c
}

async fn create(s: &dyn Storage, wf: &Workflow, ctx: Context, now: Timestamp) -> ExecutionId {
    let new = NewExecution::plan(wf, ctx, "test", now);
    let id = new.id;
    s.create_executions(vec![new], None, &set(&[wf]), now).await.expect("create");
    id
}

fn success(t: &ClaimedTask, output: Context) -> TaskReport {
    TaskReport {
        task: t.id,
        execution: t.execution_id,
        fencing_token: t.fencing_token,
        outcome: ReportOutcome::Succeeded { output },
    }
}

async fn task_state(s: &dyn Storage, exec: ExecutionId, name: &str) -> TaskRecord {
    s.tasks(exec).await.expect("tasks").into_iter().find(|t| t.name == name).expect("task exists")
}

/// Creating executions stores every task row atomically, roots Ready, the
/// rest NotStarted, and the input as given.
pub async fn create_and_read(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let id = create(&*s, &wf, input(7), T0).await;
    let e = s.execution(id).await.unwrap().expect("execution exists");
    assert_eq!(e.state, WorkflowState::Pending);
    assert_eq!(e.workflow, wf.reference());
    assert_eq!(e.input, input(7));
    assert_eq!(e.origin, "test");
    let tasks = s.tasks(id).await.unwrap();
    let states: Vec<(&str, TaskState)> = tasks.iter().map(|t| (t.name.as_str(), t.state)).collect();
    assert_eq!(
        states,
        [
            ("a", TaskState::Ready),
            ("b", TaskState::NotStarted),
            ("c", TaskState::NotStarted),
            ("d", TaskState::NotStarted)
        ]
    );
    assert!(tasks.iter().all(|t| t.attempt == 1 && t.recovery_count == 0 && t.lease.is_none()));
    assert_eq!(s.execution_states(&[id, ExecutionId::new()]).await.unwrap(), vec![(id, WorkflowState::Pending)]);
    assert!(s.execution(ExecutionId::new()).await.unwrap().is_none());
    let listed =
        s.list_executions(&ExecutionFilter { workflow: Some("diamond".into()), ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 1);
    let none = s
        .list_executions(&ExecutionFilter { states: vec![WorkflowState::Completed], ..Default::default() })
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// A batch of creations is one unit, and a claim made with it leases the
/// new roots at once.
pub async fn create_batch_with_claim(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let batch: Vec<NewExecution> = (0..5).map(|i| NewExecution::plan(&wf, input(i), "test", T0)).collect();
    let effects = s.create_executions(batch, Some(&req("r1", 3)), &set(&[&wf]), T0).await.unwrap();
    assert_eq!(effects.claimed.len(), 3);
    assert_eq!(effects.newly_ready, 2);
    for c in &effects.claimed {
        assert_eq!(c.fencing_token, FencingToken(1));
        assert!(c.input.contains_key("n"), "root input is the execution input");
        let e = s.execution(c.execution_id).await.unwrap().unwrap();
        assert_eq!(e.state, WorkflowState::Running);
    }
    let rest = s.claim(&req("r2", 10), &set(&[&wf]), T0).await.unwrap().claimed;
    assert_eq!(rest.len(), 2);
}

/// Eight claimers over two pools: every task claimed exactly once.
pub async fn claim_is_exclusive_under_concurrency(t: &dyn ContractTarget) {
    const M: usize = 120;
    let wf = single();
    let pools = [t.storage(), t.reopen().await];
    let batch: Vec<NewExecution> = (0..M).map(|i| NewExecution::plan(&wf, input(i as i64), "test", T0)).collect();
    pools[0].create_executions(batch, None, &set(&[&wf]), T0).await.unwrap();
    let workflows = Arc::new(set(&[&wf]));
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&pools[i % 2]);
        let wfs = Arc::clone(&workflows);
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut empty_rounds = 0;
            while empty_rounds < 3 {
                let got = s.claim(&req(&format!("claimer{i}"), 7), &wfs, T0).await.expect("claim").claimed;
                if got.is_empty() {
                    empty_rounds += 1;
                } else {
                    empty_rounds = 0;
                }
                mine.extend(got.into_iter().map(|c| c.id));
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<TaskExecutionId> = all.iter().copied().collect();
    assert_eq!(all.len(), M, "every task claimed exactly once (duplicates: {})", all.len() - unique.len());
    assert_eq!(unique.len(), M);
}

/// A claimed task carries a lease; once its owner's liveness expires, a
/// sweep finds it orphaned and requeues it with its recovery count + 1.
/// Live owners' tasks are not touched.
pub async fn lease_expiry_and_orphan_detection(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let (a, b) = (registration("runner_a", "a1"), registration("runner_b", "b1"));
    s.register_runner(&a, T0).await.unwrap();
    s.register_runner(&b, T0).await.unwrap();
    let e1 = create(&*s, &wf, input(1), T0).await;
    let e2 = create(&*s, &wf, input(2), T0).await;
    let c1 = s.claim(&ClaimRequest { owner: claim_owner(&a), limit: 1 }, &wfs, T0).await.unwrap().claimed;
    let c2 = s.claim(&ClaimRequest { owner: claim_owner(&b), limit: 1 }, &wfs, T0).await.unwrap().claimed;
    assert_eq!((c1.len(), c2.len()), (1, 1));
    let lease = task_state(&*s, c1[0].execution_id, "only").await.lease.expect("running task has a lease");
    assert_eq!(lease.owner, a.id);
    assert_eq!(lease.expires_at, T0.plus(a.lease_ttl));

    let policy = RecoveryPolicy::default();
    let rr = RecoveryRequest { policy, limit: 100 };
    let early = s.recover(&rr, &wfs, at(5_000)).await.unwrap();
    assert!(early.requeued.is_empty() && early.abandoned.is_empty());

    // b keeps beating, a does not.
    assert_eq!(s.heartbeat(&b, at(9_000)).await.unwrap(), Heartbeat::Alive);
    let late = s.recover(&rr, &wfs, at(11_000)).await.unwrap();
    assert_eq!(late.requeued, vec![(c1[0].id, 1)]);
    assert_eq!(late.dead_runners, vec![a.id.clone()]);
    let t1 = task_state(&*s, c1[0].execution_id, "only").await;
    assert_eq!(
        (t1.state, t1.recovery_count, t1.attempt),
        (TaskState::Ready, 1, 1),
        "recovery does not consume attempts"
    );
    assert!(t1.lease.is_none());
    assert_eq!(task_state(&*s, c2[0].execution_id, "only").await.state, TaskState::Running);
    // The dead runner learns it on its next heartbeat.
    assert_eq!(s.heartbeat(&a, at(11_500)).await.unwrap(), Heartbeat::Lost);
    let _ = (e1, e2);
}

fn claim_owner(r: &RunnerRegistration) -> ClaimOwner {
    ClaimOwner { runner: r.id.clone(), incarnation: r.incarnation.clone(), lease_ttl: r.lease_ttl }
}

/// A stale owner's report is rejected once another claim took the task;
/// the new owner's report is applied.
pub async fn fencing_rejects_stale_owner(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let a = registration("runner_a", "a1");
    s.register_runner(&a, T0).await.unwrap();
    create(&*s, &wf, input(1), T0).await;
    let first = s.claim(&ClaimRequest { owner: claim_owner(&a), limit: 1 }, &wfs, T0).await.unwrap().claimed.remove(0);
    let rr = RecoveryRequest { policy: RecoveryPolicy::default(), limit: 10 };
    s.recover(&rr, &wfs, at(20_000)).await.unwrap();
    let second = s.claim(&req("runner_b", 1), &wfs, at(20_000)).await.unwrap().claimed.remove(0);
    assert_eq!(second.id, first.id);
    assert_ne!(second.fencing_token, first.fencing_token, "the token changes on every claim");

    let out = s.report(vec![success(&first, input(100))], None, &wfs, at(21_000)).await.unwrap();
    assert_eq!(
        out.results,
        vec![Err(ReportRejection::LeaseLost { state: TaskState::Running, current_token: second.fencing_token })]
    );
    assert!(out.effects.events.is_empty(), "nothing changed");
    let out = s.report(vec![success(&second, input(200))], None, &wfs, at(22_000)).await.unwrap();
    assert_eq!(out.results, vec![Ok(())]);
    assert_eq!(
        out.effects.finished,
        vec![FinishedExecution { id: second.execution_id, state: WorkflowState::Completed }]
    );
    let outputs = s.outputs(second.execution_id, &[]).await.unwrap();
    assert_eq!(outputs["only"], input(200), "the new owner's result is the one kept");
    // A late duplicate of an applied report is rejected too.
    let again = s.report(vec![success(&second, input(300))], None, &wfs, at(23_000)).await.unwrap();
    assert!(matches!(again.results[0], Err(ReportRejection::LeaseLost { state: TaskState::Completed, .. })));
}

/// A scheduled retry is Ready but not claimable before its retry time; it
/// comes back with the next attempt number.
pub async fn retries_honour_retry_at(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    create(&*s, &wf, input(1), T0).await;
    let c = s.claim(&req("r1", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    let retry_at = at(10_000);
    let out = s
        .report(
            vec![TaskReport {
                task: c.id,
                execution: c.execution_id,
                fencing_token: c.fencing_token,
                outcome: ReportOutcome::Retry { error: "transient failure: boom".into(), retry_at },
            }],
            None,
            &wfs,
            at(1_000),
        )
        .await
        .unwrap();
    assert_eq!(out.results, vec![Ok(())]);
    let row = task_state(&*s, c.execution_id, "only").await;
    assert_eq!((row.state, row.attempt, row.ready_at), (TaskState::Ready, 2, retry_at));
    assert_eq!(row.error.as_deref(), Some("transient failure: boom"));
    assert!(s.claim(&req("r1", 1), &wfs, at(9_999)).await.unwrap().claimed.is_empty());
    let again = s.claim(&req("r1", 1), &wfs, retry_at).await.unwrap().claimed;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].input, input(1), "a retried root gets the execution input again");
}

/// Illegal transitions are refused with the state machine's error.
pub async fn illegal_transitions_are_rejected(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    assert!(matches!(s.resume(id, T0).await, Err(StorageError::IllegalTransition(_))));
    s.pause(id, T0).await.unwrap();
    assert!(matches!(s.pause(id, T0).await, Err(StorageError::IllegalTransition(_))));
    s.resume(id, T0).await.unwrap();
    let c = s.claim(&req("r1", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    s.report(vec![success(&c, Context::new())], None, &wfs, T0).await.unwrap();
    assert_eq!(s.execution(id).await.unwrap().unwrap().state, WorkflowState::Completed);
    let err = s.cancel(id, "too late", T0).await.unwrap_err();
    match err {
        StorageError::IllegalTransition(e) => {
            assert_eq!((e.machine, e.from.as_str(), e.event.as_str()), ("workflow", "completed", "Cancel"));
        }
        other => panic!("expected IllegalTransition, got {other:?}"),
    }
    // A report for a task that is not running is refused.
    let d = diamond();
    let did = create(&*s, &d, input(1), T0).await;
    let b = task_state(&*s, did, "b").await;
    let out = s
        .report(
            vec![TaskReport {
                task: b.id,
                execution: did,
                fencing_token: b.fencing_token,
                outcome: ReportOutcome::Succeeded { output: Context::new() },
            }],
            None,
            &set(&[&d]),
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(out.results[0], Err(ReportRejection::LeaseLost { state: TaskState::NotStarted, .. })));
    assert!(matches!(
        s.cancel(ExecutionId::new(), "x", T0).await,
        Err(StorageError::NotFound { what: "execution", .. })
    ));
}

/// Every state change appends an event, in order.
pub async fn events_follow_every_state_change(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = chain();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    let first = s.claim(&req("r1", 5), &wfs, at(1)).await.unwrap().claimed;
    assert_eq!(first.len(), 1);
    let failed = TaskReport {
        task: first[0].id,
        execution: id,
        fencing_token: first[0].fencing_token,
        outcome: ReportOutcome::Failed { error: "boom".into() },
    };
    let out = s.report(vec![failed], None, &wfs, at(2)).await.unwrap();
    assert_eq!(out.effects.newly_ready, 1, "cleanup runs after a failure");
    let cleanup = s.claim(&req("r1", 5), &wfs, at(3)).await.unwrap().claimed.remove(0);
    assert_eq!(cleanup.name, "cleanup");
    assert_eq!(cleanup.input, input(1), "no completed dependency: the execution input");
    let out = s.report(vec![success(&cleanup, Context::new())], None, &wfs, at(4)).await.unwrap();
    assert_eq!(out.effects.finished, vec![FinishedExecution { id, state: WorkflowState::Failed }]);

    let events = s.events(id).await.unwrap();
    let seq: Vec<(Option<&str>, Option<&str>, &str)> =
        events.iter().map(|e| (e.task.as_deref(), e.from.as_deref(), e.to.as_str())).collect();
    assert_eq!(
        seq,
        vec![
            (None, None, "pending"),
            (Some("first"), None, "ready"),
            (Some("cleanup"), None, "not_started"),
            (Some("second"), None, "not_started"),
            (Some("first"), Some("ready"), "running"),
            (None, Some("pending"), "running"),
            (Some("first"), Some("running"), "failed"),
            (Some("cleanup"), Some("not_started"), "ready"),
            (Some("second"), Some("not_started"), "skipped"),
            (Some("cleanup"), Some("ready"), "running"),
            (Some("cleanup"), Some("running"), "completed"),
            (None, Some("running"), "failed"),
        ]
    );
    let exec = s.execution(id).await.unwrap().unwrap();
    assert!(exec.error.as_deref().unwrap().contains("task `first` failed: boom"), "{:?}", exec.error);
    assert!(exec.finished_at.is_some());
    assert_eq!(out.effects.events.len(), 2, "report returns the events it recorded");
}

/// Two tenants never see each other's data, even with the same workflow.
pub async fn tenants_are_isolated(t: &dyn ContractTarget) {
    let a = t.storage();
    let b = t.other_tenant().await;
    let wf = single();
    let wfs = set(&[&wf]);
    let id = create(&*a, &wf, input(1), T0).await;
    assert!(b.execution(id).await.unwrap().is_none());
    assert!(b.list_executions(&ExecutionFilter::default()).await.unwrap().is_empty());
    assert!(b.claim(&req("r", 10), &wfs, T0).await.unwrap().claimed.is_empty());
    let idb = create(&*b, &wf, input(2), T0).await;
    let claimed = a.claim(&req("r", 10), &wfs, T0).await.unwrap().claimed;
    assert_eq!(claimed.iter().map(|c| c.execution_id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(b.list_executions(&ExecutionFilter::default()).await.unwrap()[0].id, idb);
}

/// Unicode and a 1 MiB value survive storage, as input and as output.
pub async fn context_round_trip(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let wfs = set(&[&wf]);
    let mut ctx = Context::new();
    ctx.set("ünïcødé ключ 鍵", "値 🚀 \u{0} \"quoted\" \\ back").unwrap();
    ctx.set("big", "x".repeat(1 << 20)).unwrap();
    ctx.set("nested", serde_json::json!({"a": [1, 2.5, null, true], "b": {"c": "d"}})).unwrap();
    let id = create(&*s, &wf, ctx.clone(), T0).await;
    assert_eq!(s.execution(id).await.unwrap().unwrap().input, ctx);
    let a = s.claim(&req("r", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    assert_eq!(a.input, ctx);
    let mut out = a.input.clone();
    out.set("from_a", "✓").unwrap();
    s.report(vec![success(&a, out.clone())], None, &wfs, T0).await.unwrap();
    let next = s.claim(&req("r", 2), &wfs, T0).await.unwrap().claimed;
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|c| c.input == out), "dependents receive the output");
}

/// Opening a tenant again applies no migration.
pub async fn migrations_are_idempotent(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let id = create(&*s, &wf, input(1), T0).await;
    if let Some(applied) = t.migrations_applied_on_reopen().await {
        assert!(applied.is_empty(), "re-opening ran migrations again: {applied:?}");
    }
    let again = t.reopen().await;
    assert!(again.execution(id).await.unwrap().is_some(), "data survives re-opening");
}

/// A task whose runner keeps dying is abandoned after the maximum, and its
/// execution fails saying so.
pub async fn abandoned_after_max_recoveries(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    let policy = RecoveryPolicy::new(Duration::from_secs(10), Duration::from_secs(1), 2).unwrap();
    let rr = RecoveryRequest { policy, limit: 10 };
    let mut now = 0;
    for round in 1..=3 {
        let c = s.claim(&req(&format!("doomed{round}"), 1), &wfs, at(now)).await.unwrap().claimed;
        assert_eq!(c.len(), 1, "round {round}");
        now += 60_000;
        let rep = s.recover(&rr, &wfs, at(now)).await.unwrap();
        if round <= 2 {
            assert_eq!(rep.requeued, vec![(c[0].id, round)]);
        } else {
            assert_eq!(rep.abandoned, vec![c[0].id]);
            assert_eq!(rep.effects.finished, vec![FinishedExecution { id, state: WorkflowState::Failed }]);
        }
    }
    let tasks = s.tasks(id).await.unwrap();
    assert_eq!(tasks[0].state, TaskState::Abandoned);
    assert!(tasks[1..].iter().all(|t| t.state == TaskState::Skipped));
    let e = s.execution(id).await.unwrap().unwrap();
    assert_eq!(e.state, WorkflowState::Failed);
    assert!(e.error.unwrap().contains("abandoned"));
}

/// Cancelling stops everything; a running task's late report is refused.
pub async fn cancel_stops_everything(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    let a = s.claim(&req("r", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    let eff = s.cancel(id, "user asked", at(1)).await.unwrap();
    assert_eq!(eff.finished, vec![FinishedExecution { id, state: WorkflowState::Cancelled }]);
    assert!(s.tasks(id).await.unwrap().iter().all(|t| t.state == TaskState::Cancelled));
    let out = s.report(vec![success(&a, Context::new())], None, &wfs, at(2)).await.unwrap();
    assert!(matches!(out.results[0], Err(ReportRejection::LeaseLost { state: TaskState::Cancelled, .. })));
    assert_eq!(s.lost_leases(&[(a.id, a.fencing_token)]).await.unwrap(), vec![a.id]);
    assert_eq!(s.execution(id).await.unwrap().unwrap().error.as_deref(), Some("user asked"));
}

/// A paused execution's tasks are not claimed until it is resumed.
pub async fn pause_holds_claims(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    s.pause(id, T0).await.unwrap();
    assert!(s.claim(&req("r", 5), &wfs, T0).await.unwrap().claimed.is_empty());
    let eff = s.resume(id, T0).await.unwrap();
    assert_eq!(eff.newly_ready, 1);
    assert_eq!(s.claim(&req("r", 5), &wfs, T0).await.unwrap().claimed.len(), 1);
}

/// A report can claim the work it makes ready, in the same transaction.
pub async fn report_claims_follow_up_work(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    let a = s.claim(&req("r", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    let out = s.report(vec![success(&a, input(2))], Some(&req("r", 10)), &wfs, at(1)).await.unwrap();
    let names: Vec<&str> = out.effects.claimed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(out.effects.claimed.iter().all(|c| c.input == input(2) && c.fencing_token == FencingToken(1)));
    assert_eq!(out.effects.newly_ready, 0);
    let b = &out.effects.claimed[0];
    let c = &out.effects.claimed[1];
    let mut ob = input(2);
    ob.set("b", true).unwrap();
    let mut oc = input(3);
    oc.set("c", true).unwrap();
    let out = s.report(vec![success(b, ob), success(c, oc)], Some(&req("r", 10)), &wfs, at(2)).await.unwrap();
    assert_eq!(out.results, vec![Ok(()), Ok(())]);
    let d = &out.effects.claimed[0];
    assert_eq!(d.name, "d");
    assert_eq!(d.input.get_as::<i64>("n").unwrap(), 3, "c follows b in topological order: its keys win");
    assert!(d.input.contains_key("b") && d.input.contains_key("c"));
    let out = s.report(vec![success(d, Context::new())], None, &wfs, at(3)).await.unwrap();
    assert_eq!(out.effects.finished, vec![FinishedExecution { id, state: WorkflowState::Completed }]);
}

/// A runner that shuts down releases its tasks: Ready at once, recovery
/// count unchanged, claimable by anyone.
pub async fn release_returns_tasks_at_once(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let a = registration("runner_a", "a1");
    s.register_runner(&a, T0).await.unwrap();
    create(&*s, &wf, input(1), T0).await;
    let c = s.claim(&ClaimRequest { owner: claim_owner(&a), limit: 1 }, &wfs, T0).await.unwrap().claimed.remove(0);
    let eff = s.release_runner(&a, at(1)).await.unwrap();
    assert_eq!(eff.newly_ready, 1);
    let row = task_state(&*s, c.execution_id, "only").await;
    assert_eq!((row.state, row.recovery_count), (TaskState::Ready, 0));
    assert_eq!(s.heartbeat(&a, at(2)).await.unwrap(), Heartbeat::Lost, "a stopped runner is not alive");
    assert_eq!(s.claim(&req("runner_b", 1), &wfs, at(2)).await.unwrap().claimed.len(), 1);
}

/// A runner restarted under the same id takes back its old leases at once:
/// the old incarnation's tasks are orphans without waiting for expiry.
pub async fn restart_with_stable_id_reclaims_at_once(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let old = registration("stable", "first-life");
    s.register_runner(&old, T0).await.unwrap();
    create(&*s, &wf, input(1), T0).await;
    let c = s.claim(&ClaimRequest { owner: claim_owner(&old), limit: 1 }, &wfs, T0).await.unwrap().claimed.remove(0);
    let new = registration("stable", "second-life");
    s.register_runner(&new, at(100)).await.unwrap();
    let rep =
        s.recover(&RecoveryRequest { policy: RecoveryPolicy::default(), limit: 10 }, &wfs, at(100)).await.unwrap();
    assert_eq!(rep.requeued, vec![(c.id, 1)], "well before the 10 s lease expires");
    assert_eq!(s.heartbeat(&old, at(200)).await.unwrap(), Heartbeat::Lost);
    assert_eq!(s.heartbeat(&new, at(200)).await.unwrap(), Heartbeat::Alive);
}

/// Claims only see the workflows the caller knows.
pub async fn claims_only_known_workflows(t: &dyn ContractTarget) {
    let s = t.storage();
    let (w1, w2) = (single(), diamond());
    create(&*s, &w1, input(1), T0).await;
    create(&*s, &w2, input(2), T0).await;
    let got = s.claim(&req("r", 10), &set(&[&w2]), T0).await.unwrap().claimed;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].workflow, w2.reference());
}

/// Subscribers hear about ready work and finished executions. A
/// subscription is active when `subscribe` returns. A channel that other
/// roles could reach (PostgreSQL) carries no execution ids.
pub async fn notifications_are_delivered(t: &dyn ContractTarget) {
    let s = t.storage();
    let listener = t.reopen().await;
    let mut stream = listener.subscribe().await.unwrap().expect("this backend has notifications");
    let wf = single();
    let id = create(&*s, &wf, input(1), T0).await;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("notified in time");
    assert_eq!(first, Some(Notification::TasksReady));
    s.cancel(id, "stop", T0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("notified in time");
        seen.push(n.expect("stream open"));
    }
    let named = [Notification::ExecutionCancelled(Some(id)), Notification::ExecutionFinished(Some(id))];
    let anonymous = [Notification::ExecutionCancelled(None), Notification::ExecutionFinished(None)];
    assert!(seen == named || seen == anonymous, "{seen:?}");
}

/// One commit creates, reports and claims together: the claim budget goes
/// first to the work the commit makes ready, then to work already waiting.
pub async fn commit_mixes_creations_reports_and_claims(t: &dyn ContractTarget) {
    let s = t.storage();
    let (single_wf, chain_wf) = (single(), diamond());
    let wfs = set(&[&single_wf, &chain_wf]);
    let waiting = create(&*s, &single_wf, input(0), T0).await;
    let running = create(&*s, &chain_wf, input(1), T0).await;
    let a = s
        .claim(&req("r", 10), &set(&[&chain_wf]), T0)
        .await
        .unwrap()
        .claimed
        .into_iter()
        .find(|c| c.execution_id == running)
        .expect("a claimed");
    let fresh = NewExecution::plan(&single_wf, input(2), "test", T0);
    let fresh_id = fresh.id;
    let out = s
        .commit(
            Commit {
                creations: vec![fresh],
                reports: vec![success(&a, input(3))],
                claim: Some(req("r", 10)),
                claim_waiting: true,
            },
            &wfs,
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(out.results, vec![Ok(())]);
    let mut claimed: Vec<(ExecutionId, String)> =
        out.effects.claimed.iter().map(|c| (c.execution_id, c.name.clone())).collect();
    claimed.sort();
    let mut expected =
        vec![(fresh_id, "only".to_owned()), (running, "b".into()), (running, "c".into()), (waiting, "only".into())];
    expected.sort();
    assert_eq!(claimed, expected);
    let budget = s
        .commit(
            Commit {
                creations: vec![NewExecution::plan(&single_wf, input(4), "test", at(2))],
                claim: Some(req("r", 1)),
                claim_waiting: true,
                ..Commit::default()
            },
            &wfs,
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(budget.effects.claimed.len(), 1, "the limit holds across direct and waiting claims");
    assert_eq!(budget.effects.newly_ready, 0);
}

/// Output reads return what completed tasks stored.
pub async fn outputs_are_per_task(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    let a = s.claim(&req("r", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    s.report(vec![success(&a, input(5))], None, &wfs, T0).await.unwrap();
    let all: HashMap<String, Context> = s.outputs(id, &[]).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all["a"], input(5));
    assert!(s.outputs(id, &["b".to_owned()]).await.unwrap().is_empty());
}

fn cron(name: &str, expression: &str) -> cloacina_core::schedule::CronSchedule {
    cloacina_core::schedule::CronSchedule::new(name, "single", expression).expect("valid schedule")
}

/// Schedules are stored per tenant, idempotent by name; pause, resume and
/// delete work and name what is missing.
pub async fn schedules_register_update_pause_delete(t: &dyn ContractTarget) {
    use cloacina_core::schedule::CatchUp;
    let s = t.storage();
    let first = s.upsert_schedule(&cron("nightly", "0 0 2 * * *"), T0).await.unwrap();
    assert_eq!(first.last_tick, T0, "a new schedule starts at its registration");
    assert!(!first.paused);
    let next = first.next_tick.expect("has a next tick");
    assert!(next > T0 && next.0 - T0.0 <= 24 * 3600 * 1000);
    // Registering again updates in place.
    let mut ctx = Context::new();
    ctx.set("région", "ÎdF").unwrap();
    let changed = cron("nightly", "0 30 3 * * *")
        .timezone("Europe/Berlin")
        .unwrap()
        .catch_up(CatchUp::RunAll { cap: 7 })
        .unwrap()
        .input(ctx.clone());
    let updated = s.upsert_schedule(&changed, at(60_000)).await.unwrap();
    assert_eq!(updated.created_at, T0);
    assert_eq!(updated.last_tick, T0, "progress is kept");
    let listed = s.schedules().await.unwrap();
    assert_eq!(listed.len(), 1, "never a duplicate");
    let l = &listed[0];
    assert_eq!(l.schedule.expression(), "0 30 3 * * *");
    assert_eq!(l.schedule.timezone_name(), "Europe/Berlin");
    assert_eq!(l.schedule.catch_up_policy(), CatchUp::RunAll { cap: 7 });
    assert_eq!(l.schedule.input_context(), &ctx);
    assert_eq!(l.next_tick, updated.next_tick);
    // Pause: nothing fires, however late.
    assert!(s.set_schedule_paused("nightly", true, at(1)).await.unwrap().paused);
    let wf = single();
    let far = at(30 * 24 * 3600 * 1000);
    assert!(s.fire_schedules(&set(&[&wf]), far).await.unwrap().fired.is_empty());
    assert!(s.upsert_schedule(&changed, at(2)).await.unwrap().paused, "registering again keeps the pause");
    // Resume: continues from now, the paused ticks are not run.
    let resumed = s.set_schedule_paused("nightly", false, far).await.unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.last_tick, far);
    assert!(s.fire_schedules(&set(&[&wf]), far).await.unwrap().fired.is_empty());
    // Another tenant sees none of it.
    assert!(t.other_tenant().await.schedules().await.unwrap().is_empty());
    s.delete_schedule("nightly").await.unwrap();
    assert!(s.schedules().await.unwrap().is_empty());
    for e in
        [s.delete_schedule("nightly").await.unwrap_err(), s.set_schedule_paused("nightly", true, T0).await.unwrap_err()]
    {
        assert!(matches!(e, StorageError::NotFound { what: "schedule", .. }), "{e:?}");
    }
}

/// Ten ticks of an every-second schedule, fired at the same instants by
/// four callers over two pools: ten executions, one per tick.
pub async fn each_tick_fires_once_across_callers(t: &dyn ContractTarget) {
    let pools = [t.storage(), t.reopen().await];
    let wf = single();
    let wfs = Arc::new(set(&[&wf]));
    pools[0].upsert_schedule(&cron("every_second", "* * * * * *"), T0).await.unwrap();
    let mut fired = Vec::new();
    for i in 1..=10 {
        let now = at(i * 1000 + 250);
        let calls = (0..4).map(|k| {
            let s = pools[k % 2].clone();
            let wfs = wfs.clone();
            tokio::spawn(async move { s.fire_schedules(&wfs, now).await.expect("fire") })
        });
        for r in futures::future::join_all(calls).await {
            fired.extend(r.expect("joined").fired);
        }
    }
    assert_eq!(fired.len(), 10, "{fired:?}");
    let ticks: HashSet<Timestamp> = fired.iter().map(|f| f.tick).collect();
    assert_eq!(ticks, (1..=10).map(|i| at(i * 1000)).collect::<HashSet<_>>());
    let execs = pools[1]
        .list_executions(&ExecutionFilter { workflow: Some("single".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(execs.len(), 10);
    assert!(execs.iter().all(|e| e.origin.starts_with("cron:every_second@")), "{:?}", execs[0].origin);
    for f in &fired {
        assert!(execs.iter().any(|e| e.id == f.execution));
    }
    let rec = pools[0].schedules().await.unwrap().remove(0);
    assert_eq!(rec.last_tick, at(10_000));
    assert_eq!(rec.next_tick, Some(at(11_000)));
}

/// Five missed ticks: `skip` runs one, `run_all` all five; a schedule
/// whose workflow the caller does not know is left for another runner.
pub async fn catch_up_after_downtime(t: &dyn ContractTarget) {
    use cloacina_core::schedule::CatchUp;
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let minute = 60_000;
    // T0 is at second 20 of its minute: these tick at T0 + k minutes.
    s.upsert_schedule(&cron("skipper", "20 * * * * *"), T0).await.unwrap();
    s.upsert_schedule(&cron("runner_all", "20 * * * * *").catch_up(CatchUp::run_all()).unwrap(), T0).await.unwrap();
    let other = cloacina_core::schedule::CronSchedule::new("foreign", "not_here", "0 * * * * *").unwrap();
    s.upsert_schedule(&other, T0).await.unwrap();
    // Nobody fires for five minutes and five seconds: ticks 1-4 are missed,
    // tick 5 is on time.
    let back = at(5 * minute + 5_000);
    let report = s.fire_schedules(&wfs, back).await.unwrap();
    let of = |name: &str| report.fired.iter().filter(|f| f.schedule == name).map(|f| f.tick).collect::<Vec<_>>();
    assert_eq!(of("skipper"), vec![at(5 * minute)]);
    assert_eq!(of("runner_all"), (1..=5).map(|i| at(i * minute)).collect::<Vec<_>>());
    assert_eq!(report.skipped_ticks, 4);
    assert_eq!(report.unknown_workflow, vec!["foreign".to_owned()]);
    assert!(s.fire_schedules(&wfs, back).await.unwrap().fired.is_empty(), "nothing twice");
    let n = s.list_executions(&ExecutionFilter::default()).await.unwrap().len();
    assert_eq!(n, 6);
    let foreign = s.schedules().await.unwrap().into_iter().find(|r| r.schedule.name() == "foreign").unwrap();
    assert_eq!(foreign.last_tick, T0, "left untouched");
}

/// A trigger's identical firing is suppressed while the first is
/// unfinished (also when racing); different contexts, concurrent triggers
/// and finished firings go through.
pub async fn trigger_firings_are_deduplicated(t: &dyn ContractTarget) {
    use cloacina_core::schedule::firing_key;
    let pools = [t.storage(), t.reopen().await];
    let wf = single();
    let wfs = Arc::new(set(&[&wf]));
    let firing = |trigger: &str, n: i64, concurrent: bool| {
        let ctx = input(n);
        TriggerFiring {
            trigger: trigger.to_owned(),
            key: firing_key(trigger, &ctx),
            allow_concurrent: concurrent,
            execution: NewExecution::plan(&wf, ctx, format!("trigger:{trigger}"), T0),
        }
    };
    // Eight identical firings at once: one execution.
    let calls = (0..8).map(|k| {
        let s = pools[k % 2].clone();
        let wfs = wfs.clone();
        let f = firing("inbox", 1, false);
        tokio::spawn(async move { s.fire_trigger(f, &wfs, T0).await.expect("fire") })
    });
    let outcomes: Vec<TriggerOutcome> =
        futures::future::join_all(calls).await.into_iter().map(|r| r.expect("joined")).collect();
    let fired: Vec<ExecutionId> = outcomes
        .iter()
        .filter_map(|o| match o {
            TriggerOutcome::Fired { execution, .. } => Some(*execution),
            TriggerOutcome::Suppressed { .. } => None,
        })
        .collect();
    assert_eq!(fired.len(), 1, "{outcomes:?}");
    let first = fired[0];
    for o in &outcomes {
        if let TriggerOutcome::Suppressed { running } = o {
            assert_eq!(*running, first);
        }
    }
    let s = &pools[0];
    let e = s.execution(first).await.unwrap().unwrap();
    assert_eq!(e.origin, "trigger:inbox");
    assert_eq!(e.input, input(1));
    // A different context, another trigger, a trigger allowing concurrency.
    assert!(matches!(s.fire_trigger(firing("inbox", 2, false), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    assert!(matches!(s.fire_trigger(firing("other", 1, false), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    assert!(matches!(s.fire_trigger(firing("fanout", 1, true), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    assert!(matches!(s.fire_trigger(firing("fanout", 1, true), &wfs, T0).await.unwrap(), TriggerOutcome::Fired { .. }));
    // Once the first is finished, the same firing starts a new execution.
    s.cancel(first, "done with it", at(1)).await.unwrap();
    match s.fire_trigger(firing("inbox", 1, false), &wfs, at(2)).await.unwrap() {
        TriggerOutcome::Fired { execution, .. } => assert_ne!(execution, first),
        other => panic!("expected a new firing, got {other:?}"),
    }
    assert_eq!(s.list_executions(&ExecutionFilter::default()).await.unwrap().len(), 6);
}

/// A NUL character in an error message (which a PostgreSQL `text` column
/// cannot hold) is stored as `\0`, alike on every backend: the report is
/// applied, nothing is dropped.
pub async fn nul_characters_in_errors_are_stored_escaped(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let id = create(&*s, &wf, input(1), T0).await;
    let c = s.claim(&req("r1", 1), &wfs, T0).await.unwrap().claimed.remove(0);
    let report = TaskReport {
        task: c.id,
        execution: c.execution_id,
        fencing_token: c.fencing_token,
        outcome: ReportOutcome::Failed { error: "bad\0byte".into() },
    };
    let out = s.report(vec![report], None, &wfs, at(1)).await.unwrap();
    assert_eq!(out.results, vec![Ok(())]);
    let row = task_state(&*s, id, "only").await;
    assert_eq!((row.state, row.error.as_deref()), (TaskState::Failed, Some("bad\\0byte")));
    let e = s.execution(id).await.unwrap().unwrap();
    assert!(e.error.as_deref().is_some_and(|m| m.contains("bad\\0byte") && !m.contains('\0')), "{e:?}");
    let events = s.events(id).await.unwrap();
    assert!(events.iter().any(|ev| ev.detail.as_deref().is_some_and(|d| d.contains("bad\\0byte"))));
}

/// `unreadable` names nothing for healthy executions and omits unknown
/// ids.
pub async fn unreadable_is_empty_for_healthy_rows(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let a = create(&*s, &wf, input(1), T0).await;
    let b = create(&*s, &wf, input(2), T0).await;
    let found = s.unreadable(&[a, b, ExecutionId::new()]).await.unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert!(s.unreadable(&[]).await.unwrap().is_empty());
}

/// A tick that already has its record starts nothing and is reported; the
/// other due schedules fire as usual in the same call.
pub async fn a_duplicate_tick_skips_only_its_schedule(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    s.upsert_schedule(&cron("dup", "* * * * * *"), T0).await.unwrap();
    let first = s.fire_schedules(&wfs, at(1_100)).await.unwrap();
    assert_eq!(first.fired.iter().map(|f| f.tick).collect::<Vec<_>>(), vec![at(1_000)]);
    // A runner whose clock is behind resumes it before that tick: the tick
    // at 1 s is due again, but its record exists.
    s.set_schedule_paused("dup", true, at(1_200)).await.unwrap();
    s.set_schedule_paused("dup", false, at(500)).await.unwrap();
    s.upsert_schedule(&cron("other", "* * * * * *"), at(500)).await.unwrap();
    let again = s.fire_schedules(&wfs, at(1_300)).await.unwrap();
    assert_eq!(again.duplicate_ticks, vec![DuplicateTick { schedule: "dup".into(), tick: at(1_000) }]);
    assert_eq!(
        again.fired.iter().map(|f| (f.schedule.as_str(), f.tick)).collect::<Vec<_>>(),
        vec![("other", at(1_000))],
        "the other schedule fired"
    );
    assert_eq!(s.list_executions(&ExecutionFilter::default()).await.unwrap().len(), 2, "no second run of the tick");
    // And the duplicated schedule goes on with its next tick.
    let next = s.fire_schedules(&wfs, at(2_100)).await.unwrap();
    assert!(next.fired.iter().any(|f| f.schedule == "dup" && f.tick == at(2_000)), "{next:?}");
}

/// A trigger firing retried after its commit's answer was lost (the same
/// execution id) is recorded once.
pub async fn a_retried_trigger_firing_is_recorded_once(t: &dyn ContractTarget) {
    use cloacina_core::schedule::firing_key;
    let s = t.storage();
    let wf = single();
    let wfs = set(&[&wf]);
    let ctx = input(5);
    let firing = TriggerFiring {
        trigger: "inbox".into(),
        key: firing_key("inbox", &ctx),
        allow_concurrent: true,
        execution: NewExecution::plan(&wf, ctx, "trigger:inbox", T0),
    };
    let id = firing.execution.id;
    for _ in 0..3 {
        match s.fire_trigger(firing.clone(), &wfs, T0).await.unwrap() {
            TriggerOutcome::Fired { execution, .. } => assert_eq!(execution, id),
            other => panic!("expected Fired, got {other:?}"),
        }
    }
    assert_eq!(s.list_executions(&ExecutionFilter::default()).await.unwrap().len(), 1);
}

/// Recovery sweeps race a live runner that claims and reports the tasks
/// they requeue: a task re-claimed by the live runner is never requeued
/// under it (compare-and-set on the claim found dead), so every report of
/// the live runner is applied and every execution completes once.
pub async fn recovery_never_takes_a_live_runners_claim(t: &dyn ContractTarget) {
    let pools = [t.storage(), t.reopen().await];
    let wf = single();
    let wfs = Arc::new(set(&[&wf]));
    let rr = RecoveryRequest { policy: RecoveryPolicy::default(), limit: 3 };
    for round in 0..8i64 {
        let now = at(round * 100_000);
        let (dead, live) =
            (registration("dead_one", &format!("d{round}")), registration("live_one", &format!("l{round}")));
        for r in [&dead, &live] {
            pools[0].register_runner(r, now).await.unwrap();
        }
        let ids: Vec<ExecutionId> = {
            let mut v = Vec::new();
            for i in 0..12 {
                v.push(create(&*pools[0], &wf, input(i), now).await);
            }
            v
        };
        let claimed = pools[0].claim(&ClaimRequest { owner: claim_owner(&dead), limit: 12 }, &wfs, now).await.unwrap();
        assert_eq!(claimed.claimed.len(), 12);
        // The dead runner is gone: its liveness expired.
        let later = now.plus(Duration::from_secs(11));
        pools[1].heartbeat(&live, later).await.unwrap();
        let sweepers = (0..3).map(|k| {
            let s = pools[k % 2].clone();
            let wfs = wfs.clone();
            let rr = rr.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    let r = s.recover(&rr, &wfs, later).await.expect("recover");
                    if r.requeued.is_empty() && r.abandoned.is_empty() {
                        tokio::task::yield_now().await;
                    }
                }
            })
        });
        let claimer = {
            let s = pools[1].clone();
            let wfs = wfs.clone();
            let owner = claim_owner(&live);
            tokio::spawn(async move {
                let mut results = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while results.len() < 12 && std::time::Instant::now() < deadline {
                    let got =
                        s.claim(&ClaimRequest { owner: owner.clone(), limit: 2 }, &wfs, later).await.expect("claim");
                    if got.claimed.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let reports = got.claimed.iter().map(|c| success(c, Context::new())).collect();
                    results.extend(s.report(reports, None, &wfs, later).await.expect("report").results);
                }
                results
            })
        };
        for sw in sweepers {
            sw.await.expect("sweeper");
        }
        let results = claimer.await.expect("claimer");
        assert_eq!(results.len(), 12, "round {round}: every requeued task was claimed by the live runner");
        assert!(results.iter().all(Result::is_ok), "round {round}: a live runner's claim was taken: {results:?}");
        for id in ids {
            assert_eq!(pools[0].execution(id).await.unwrap().unwrap().state, WorkflowState::Completed, "round {round}");
        }
    }
}

/// Generates one `#[tokio::test]` per contract case. `$setup` is an
/// expression of type `impl Future<Output = impl ContractTarget>`,
/// evaluated afresh for each test.
#[macro_export]
macro_rules! storage_contract {
    ($setup:expr) => {
        $crate::storage_contract!(@cases $setup;
            create_and_read,
            create_batch_with_claim,
            claim_is_exclusive_under_concurrency,
            lease_expiry_and_orphan_detection,
            fencing_rejects_stale_owner,
            retries_honour_retry_at,
            illegal_transitions_are_rejected,
            events_follow_every_state_change,
            tenants_are_isolated,
            context_round_trip,
            migrations_are_idempotent,
            abandoned_after_max_recoveries,
            cancel_stops_everything,
            pause_holds_claims,
            report_claims_follow_up_work,
            release_returns_tasks_at_once,
            restart_with_stable_id_reclaims_at_once,
            claims_only_known_workflows,
            notifications_are_delivered,
            outputs_are_per_task,
            commit_mixes_creations_reports_and_claims,
            schedules_register_update_pause_delete,
            each_tick_fires_once_across_callers,
            catch_up_after_downtime,
            trigger_firings_are_deduplicated,
            nul_characters_in_errors_are_stored_escaped,
            unreadable_is_empty_for_healthy_rows,
            a_duplicate_tick_skips_only_its_schedule,
            a_retried_trigger_firing_is_recorded_once,
            recovery_never_takes_a_live_runners_claim
        );
    };
    (@cases $setup:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let target = $setup.await;
                $crate::contract::$case(&target).await;
            }
        )+
    };
}
