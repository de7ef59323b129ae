use super::*;
use crate::ids::{ExecutionId, FencingToken, RunnerId, Timestamp};
use crate::ports::Lease;
use crate::task::{TaskError, task_fn};
use crate::workflow::TaskSpec;
use TaskState::*;

fn noop(id: &str) -> TaskSpec {
    TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) }))
}

/// a → b2 → c, and a new `d` after `c`.
fn new_chain() -> Workflow {
    Workflow::builder("etl")
        .task(noop("a"))
        .task(noop("b2").depends_on(["a"]))
        .task(noop("c").depends_on(["b2"]))
        .task(noop("d").depends_on(["c"]))
        .build()
        .unwrap()
}

fn row(name: &str, state: TaskState) -> TaskRecord {
    TaskRecord {
        id: TaskExecutionId::new(),
        execution_id: ExecutionId::new(),
        name: name.to_owned(),
        state,
        attempt: 1,
        ready_at: Timestamp(0),
        lease: (state == Running).then(|| Lease {
            owner: RunnerId::parse("r1").unwrap(),
            incarnation: "i".into(),
            expires_at: Timestamp(0),
        }),
        fencing_token: FencingToken(1),
        recovery_count: 0,
        error: None,
        started_at: None,
        finished_at: None,
    }
}

fn plan(old: &[TaskRecord], m: &TaskMapping) -> Result<ExecutionMove, MigrationError> {
    plan_move("e1", old, &new_chain(), m, |_| false, &Context::new(), &HashMap::new())
}

#[test]
fn completed_tasks_keep_their_rows_and_the_rest_start_afresh() {
    let old = [row("a", Completed), row("b", Running), row("c", NotStarted)];
    let mv = plan(&old, &TaskMapping::new().task("b", "b2")).unwrap();
    let by: HashMap<&str, &MovedTask> = mv.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    assert_eq!((by["a"].id, by["a"].state), (old[0].id, Completed));
    // b (its runner dead) became b2, ready again; c and the new d wait.
    assert_eq!((by["b2"].id, by["b2"].state, by["b2"].before), (old[1].id, Ready, Some(Running)));
    assert_eq!((by["c"].id, by["c"].state), (old[2].id, NotStarted));
    assert_eq!((by["d"].state, by["d"].before), (NotStarted, None));
    assert!(mv.dropped.is_empty());
    assert_eq!(mv.finished, None);
    assert_eq!(mv.tasks.iter().map(|t| t.position).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

#[test]
fn an_unmapped_task_is_refused() {
    let old = [row("a", Completed), row("b", Ready), row("c", NotStarted)];
    assert_eq!(plan(&old, &TaskMapping::new()), Err(MigrationError::Unmapped { task: "b".into() }));
}

#[test]
fn dropping_a_completed_task_is_refused_and_an_unfinished_one_is_removed() {
    let old = [row("a", Completed), row("b", Completed), row("c", Ready)];
    let err = plan(&old, &TaskMapping::new().drop("b")).unwrap_err();
    assert!(matches!(err, MigrationError::LosesOutput { ref task, .. } if task == "b"), "{err}");
    let old = [row("a", Completed), row("b", Ready), row("c", NotStarted)];
    let mv = plan(&old, &TaskMapping::new().drop("b")).unwrap();
    assert_eq!(mv.dropped, [old[1].id]);
    assert_eq!(mv.tasks.iter().find(|t| t.name == "b2").unwrap().state, Ready);
}

#[test]
fn a_completed_task_after_an_unfinished_one_is_refused() {
    // c completed, but would follow b2, which starts afresh.
    let old = [row("a", Completed), row("b", Ready), row("c", Completed)];
    let err = plan(&old, &TaskMapping::new().drop("b")).unwrap_err();
    assert_eq!(
        err,
        MigrationError::CompletedBeforeDependency { task: "c".into(), dependency: "b2".into(), execution: "e1".into() }
    );
}

#[test]
fn unknown_and_duplicate_targets_are_refused() {
    let old = [row("a", Completed), row("b", Ready), row("c", NotStarted)];
    let err = plan(&old, &TaskMapping::new().task("b", "nope")).unwrap_err();
    assert!(matches!(err, MigrationError::UnknownTarget { ref target, .. } if target == "nope"), "{err}");
    let err = plan(&old, &TaskMapping::new().task("b", "c")).unwrap_err();
    assert!(matches!(err, MigrationError::DuplicateTarget { ref target, .. } if target == "c"), "{err}");
}

#[test]
fn a_task_running_on_a_live_runner_is_not_moved() {
    let old = [row("a", Running), row("b", NotStarted), row("c", NotStarted)];
    let err = plan_move(
        "e1",
        &old,
        &new_chain(),
        &TaskMapping::new().task("b", "b2"),
        |_| true,
        &Context::new(),
        &HashMap::new(),
    )
    .unwrap_err();
    assert!(matches!(err, MigrationError::TaskRunning { ref task, .. } if task == "a"), "{err}");
}

#[test]
fn a_move_that_leaves_nothing_to_run_finishes_the_execution() {
    let small = Workflow::builder("etl").task(noop("a")).build().unwrap();
    let old = [row("a", Completed), row("b", Ready), row("c", NotStarted)];
    let m = TaskMapping::new().drop("b").drop("c");
    let mv = plan_move("e1", &old, &small, &m, |_| false, &Context::new(), &HashMap::new()).unwrap();
    assert_eq!(mv.finished, Some(WorkflowState::Completed));
    assert_eq!(mv.dropped.len(), 2);
}
