//! Creating, claiming, leases, fencing, retries, transitions, events, contexts,
//! tenants and migrations.

use super::*;

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
