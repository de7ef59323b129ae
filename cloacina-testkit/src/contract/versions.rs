//! Workflow versions: executions no live runner serves, and migrations.

use super::*;
use cloacina_core::migrate::{MigrationError, TaskMapping};

/// `a -> {b, c} -> d -> e`: the diamond with a task added.
fn diamond_v2() -> Workflow {
    Workflow::builder("diamond")
        .version("2")
        .task(noop("a"))
        .task(noop("b").depends_on(["a"]))
        .task(noop("c").depends_on(["a"]))
        .task(noop("d").depends_on(["b", "c"]))
        .task(noop("e").depends_on(["d"]))
        .build()
        .expect("valid workflow")
}

/// An execution is stranded exactly while no live runner publishes its
/// version.
pub async fn stranded_is_what_no_live_runner_serves(t: &dyn ContractTarget) {
    let s = t.storage();
    let wf = diamond();
    let id = create(&*s, &wf, input(1), T0).await;
    assert_eq!(s.stranded(T0).await.unwrap().len(), 1, "no runner at all");
    let mut serving = registration("serving", "i1");
    serving.serves = vec![wf.reference()];
    s.register_runner(&serving, T0).await.unwrap();
    let other = registration("other", "i1");
    s.register_runner(&other, T0).await.unwrap();
    assert!(s.stranded(T0).await.unwrap().is_empty(), "served by a live runner");
    // Its liveness lapses (lease TTL 10 s): stranded again.
    let later = at(60_000);
    s.heartbeat(&other, later).await.unwrap();
    let found = s.stranded(later).await.unwrap();
    assert_eq!(found, vec![StrandedVersion { workflow: wf.reference(), label: None, executions: 1 }]);
    let filter = ExecutionFilter { version: Some(wf.version().into()), ..Default::default() };
    assert_eq!(s.list_executions(&filter).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [id]);

    // An event on each stranded execution, once however often recorded.
    let detail = stranded_detail(&wf.reference());
    let written = s.record_stranded(&wf.reference(), later).await.unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!((written[0].execution_id, written[0].detail.as_deref()), (id, Some(detail.as_str())));
    assert!(s.record_stranded(&wf.reference(), at(61_000)).await.unwrap().is_empty(), "recorded once");
    let second = create(&*s, &wf, input(2), at(62_000)).await;
    let written = s.record_stranded(&wf.reference(), at(63_000)).await.unwrap();
    assert_eq!(written.iter().map(|e| e.execution_id).collect::<Vec<_>>(), [second], "only the new one");
    for e in [id, second] {
        let events = s.events(e).await.unwrap();
        let stranded: Vec<_> = events.iter().filter(|ev| ev.detail.as_deref() == Some(detail.as_str())).collect();
        assert_eq!(stranded.len(), 1, "one stranded event on {e}: {events:?}");
        assert_eq!((stranded[0].kind, stranded[0].task_execution_id), (EventKind::Execution, None));
        assert_eq!(stranded[0].from.as_deref(), Some(stranded[0].to.as_str()), "the state does not change");
    }
    // Another version's executions are not touched.
    assert!(s.record_stranded(&diamond_v2().reference(), at(64_000)).await.unwrap().is_empty());
}

/// A migration refuses a task a live runner runs and a mapping that drops
/// a completed task, changing nothing; otherwise it moves the rows, keeps
/// completed outputs, restarts a dead runner's task (counted as a recovery;
/// its late report is then refused) and adds the new task.
pub async fn a_migration_moves_rows_and_fences_late_reports(t: &dyn ContractTarget) {
    let s = t.storage();
    let (v1, v2) = (diamond(), diamond_v2());
    let wfs = set(&[&v1]);
    let id = create(&*s, &v1, input(1), T0).await;
    let live = registration("live", "i1");
    s.register_runner(&live, T0).await.unwrap();
    let a = s.claim(&ClaimRequest { owner: claim_owner(&live), limit: 1 }, &wfs, T0).await.unwrap().claimed.remove(0);
    let err = s.migrate_executions(&v1.reference(), &v2, &TaskMapping::new(), T0).await.unwrap_err();
    assert!(matches!(err, StorageError::MigrationRefused(MigrationError::TaskRunning { ref task, .. }) if task == "a"));
    s.report(vec![success(&a, input(10))], None, &wfs, at(1)).await.unwrap();
    let b =
        s.claim(&ClaimRequest { owner: claim_owner(&live), limit: 1 }, &wfs, at(2)).await.unwrap().claimed.remove(0);
    let err = s.migrate_executions(&v1.reference(), &v2, &TaskMapping::new().drop("a"), at(3)).await.unwrap_err();
    assert!(matches!(err, StorageError::MigrationRefused(MigrationError::LosesOutput { .. })), "{err}");
    let before = s.tasks(id).await.unwrap();
    assert_eq!(before.len(), 4, "a refusal changed nothing");
    // The runner dies with `b` running; the migration restarts it.
    let now = at(60_000);
    let report = s.migrate_executions(&v1.reference(), &v2, &TaskMapping::new(), now).await.unwrap();
    assert_eq!(report.migrated, [id]);
    let e = s.execution(id).await.unwrap().unwrap();
    assert_eq!((e.workflow, e.label.as_deref()), (v2.reference(), Some("2")));
    let after = s.tasks(id).await.unwrap();
    let names: Vec<(&str, TaskState)> = after.iter().map(|t| (t.name.as_str(), t.state)).collect();
    assert_eq!(
        names,
        [
            ("a", TaskState::Completed),
            ("b", TaskState::Ready),
            ("c", TaskState::Ready),
            ("d", TaskState::NotStarted),
            ("e", TaskState::NotStarted)
        ]
    );
    let counts: Vec<u32> = after.iter().map(|t| t.recovery_count).collect();
    assert_eq!(counts, [0, 1, 0, 0, 0], "b lost its runner: counted as a recovery");
    assert_eq!(s.outputs(id, &[]).await.unwrap()["a"], input(10), "the completed output is kept");
    let late = s.report(vec![success(&b, input(20))], None, &set(&[&v2]), now).await.unwrap();
    assert!(late.results[0].is_err(), "the dead runner's late report is fenced out");
    // The migrated execution is served by v2 and finishes.
    let wfs2 = set(&[&v2]);
    let mut now = now;
    loop {
        now = now.plus(Duration::from_millis(1));
        let claimed = s.claim(&req("next", 10), &wfs2, now).await.unwrap().claimed;
        if claimed.is_empty() {
            break;
        }
        let reports = claimed.iter().map(|c| success(c, input(1))).collect();
        s.report(reports, None, &wfs2, now).await.unwrap();
    }
    assert_eq!(s.execution(id).await.unwrap().unwrap().state, WorkflowState::Completed);
    assert!(s.stranded(now).await.unwrap().iter().all(|g| g.workflow != v1.reference()));
}

/// Recording stranded executions and migrating them work through a
/// backlog larger than one statement's share (chunked under the backends'
/// bind-parameter limits): every execution gets its event once and is
/// moved.
pub async fn stranding_and_migration_cover_every_execution_of_a_large_backlog(t: &dyn ContractTarget) {
    let s = t.storage();
    let (v1, v2) = (diamond(), diamond_v2());
    let n = 2_500;
    let batch: Vec<NewExecution> = (0..n).map(|i| NewExecution::plan(&v1, input(i), "test", T0)).collect();
    let mut ids: Vec<ExecutionId> = batch.iter().map(|e| e.id).collect();
    s.create_executions(batch, None, &set(&[&v1]), T0).await.unwrap();
    let written = s.record_stranded(&v1.reference(), at(1)).await.unwrap();
    let mut recorded: Vec<ExecutionId> = written.iter().map(|e| e.execution_id).collect();
    recorded.sort();
    ids.sort();
    assert_eq!(recorded, ids, "one event on each execution");
    assert!(s.record_stranded(&v1.reference(), at(2)).await.unwrap().is_empty());
    let report = s.migrate_executions(&v1.reference(), &v2, &TaskMapping::new(), at(3)).await.unwrap();
    let mut moved = report.migrated.clone();
    moved.sort();
    assert_eq!(moved, ids, "every execution moved");
    let filter = ExecutionFilter { version: Some(v2.version().into()), limit: Some(10_000), ..Default::default() };
    assert_eq!(s.list_executions(&filter).await.unwrap().len(), n as usize);
    for id in [ids[0], ids[n as usize / 2], ids[n as usize - 1]] {
        assert_eq!(s.tasks(id).await.unwrap().len(), 5, "{id} has v2's five tasks");
    }
}
