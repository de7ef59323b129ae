//! Abandonment, cancel, pause, release, mixed commits, notifications, what
//! storage cannot hold, and recovery racing a live claimer.

use super::*;

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
