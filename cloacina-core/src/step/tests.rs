//! Unit tests of the shared transaction logic.
use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::context::Context;
use crate::ids::RunnerId;
use crate::ports::{ClaimOwner, NewExecution, ReportOutcome, ReportRejection, TaskReport};
use crate::task::{TaskError, task_fn};
use crate::workflow::TaskSpec;
use std::time::Duration;

fn wf() -> Workflow {
    let t = |id: &str| TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) }));
    Workflow::builder("chain").task(t("a")).task(t("b").depends_on(["a"])).build().unwrap()
}

fn owner() -> ClaimRequest {
    ClaimRequest {
        owner: ClaimOwner {
            runner: RunnerId::parse("r1").unwrap(),
            incarnation: "i1".into(),
            lease_ttl: Duration::from_secs(10),
        },
        limit: 10,
    }
}

fn snapshot_from(out: &StepOutput, wf: &Workflow) -> ExecutionSnapshot {
    ExecutionSnapshot::new(wf, out.writes.execution_inserts[0].clone(), true, out.writes.task_inserts.clone()).unwrap()
}

type Snaps = BTreeMap<ExecutionId, Result<ExecutionSnapshot, String>>;

fn snaps(snap: ExecutionSnapshot) -> Snaps {
    [(snap.execution.id, Ok(snap))].into_iter().collect()
}

#[test]
fn create_with_claim_leases_roots() {
    let w = wf();
    let set: WorkflowSet = [w.clone()].into_iter().collect();
    let req = owner();
    let mut step = Step::new(Timestamp(1000), &set, Some(&req));
    let mut input = Context::new();
    input.set("x", 1).unwrap();
    step.create(NewExecution::plan(&w, input.clone(), "api", Timestamp(1000)));
    let out = step.finish();
    assert_eq!(out.pending_claims.len(), 1);
    let row = &out.writes.task_inserts[0];
    assert_eq!(row.state, TaskState::Running);
    assert_eq!(row.fencing_token, FencingToken(1));
    assert_eq!(row.lease.as_ref().unwrap().expires_at, Timestamp(11_000));
    assert_eq!(out.writes.execution_inserts[0].state, WorkflowState::Running);
    let claimed = out.pending_claims[0].clone().resolve(&HashMap::new(), &HashMap::new());
    assert_eq!(claimed.input, input);
}

#[test]
fn stale_report_is_rejected_and_fresh_one_carries_consequences() {
    let w = wf();
    let set: WorkflowSet = [w.clone()].into_iter().collect();
    let req = owner();
    let mut step = Step::new(Timestamp(1000), &set, Some(&req));
    step.create(NewExecution::plan(&w, Context::new(), "api", Timestamp(1000)));
    let out = step.finish();
    let snap = snapshot_from(&out, &w);
    let task = snap.tasks[0].clone();
    let report = |token| TaskReport {
        task: task.id,
        execution: task.execution_id,
        fencing_token: FencingToken(token),
        outcome: ReportOutcome::Succeeded { output: Context::new() },
    };
    let (stale, fresh) = (report(0), report(1));
    let mut step = Step::new(Timestamp(2000), &set, None);
    let mut all = snaps(snap);
    assert_eq!(
        step.report(&mut all, vec![stale, fresh]),
        vec![Err(ReportRejection::LeaseLost { state: TaskState::Running, current_token: FencingToken(1) }), Ok(())]
    );
    let out = step.finish();
    assert_eq!(out.writes.tasks.len(), 2, "a completed, b ready");
    assert_eq!(out.writes.tasks[1].row.state, TaskState::Ready);
    assert_eq!(out.effects.newly_ready, 1);
    assert!(out.effects.finished.is_empty());
}

#[test]
fn coalesced_writes_keep_the_first_expectation() {
    let w = wf();
    let set: WorkflowSet = [w.clone()].into_iter().collect();
    let req = owner();
    let mut step = Step::new(Timestamp(1000), &set, Some(&req));
    step.create(NewExecution::plan(&w, Context::new(), "api", Timestamp(1000)));
    let snap = snapshot_from(&step.finish(), &w);
    let t = snap.tasks[0].clone();
    let mut step = Step::new(Timestamp(2000), &set, Some(&req));
    let report = TaskReport {
        task: t.id,
        execution: t.execution_id,
        fencing_token: t.fencing_token,
        outcome: ReportOutcome::Succeeded { output: Context::new() },
    };
    assert_eq!(step.report(&mut snaps(snap), vec![report]), vec![Ok(())]);
    let out = step.finish();
    let b = out.writes.tasks.iter().find(|w| w.row.name == "b").unwrap();
    assert_eq!(b.expect_state, TaskState::NotStarted);
    assert_eq!(b.row.state, TaskState::Running, "claimed directly");
    assert_eq!(out.pending_claims.len(), 1);
    assert_eq!(out.pending_claims[0].known.len(), 1, "a's output is in memory");
}

#[test]
fn reports_of_unreadable_or_vanished_executions_are_rejected_with_why() {
    let w = wf();
    let set: WorkflowSet = [w.clone()].into_iter().collect();
    let report = |execution| TaskReport {
        task: crate::ids::TaskExecutionId::new(),
        execution,
        fencing_token: FencingToken(1),
        outcome: ReportOutcome::Succeeded { output: Context::new() },
    };
    let (bad, gone) = (ExecutionId::new(), ExecutionId::new());
    let mut all: Snaps = [(bad, Err("row x is garbage".to_owned()))].into_iter().collect();
    let mut step = Step::new(Timestamp(1), &set, None);
    assert_eq!(
        step.report(&mut all, vec![report(bad), report(gone)]),
        vec![Err(ReportRejection::Unreadable { problem: "row x is garbage".into() }), Err(ReportRejection::NotFound)]
    );
    assert!(step.finish().writes.events.is_empty(), "nothing changed");
}

#[test]
fn recovery_leaves_a_task_reclaimed_since_it_was_found() {
    let w = wf();
    let set: WorkflowSet = [w.clone()].into_iter().collect();
    let req = owner();
    let mut step = Step::new(Timestamp(1000), &set, Some(&req));
    step.create(NewExecution::plan(&w, Context::new(), "api", Timestamp(1000)));
    let mut snap = snapshot_from(&step.finish(), &w);
    let t = snap.tasks[0].clone();
    let policy = crate::recovery::RecoveryPolicy::default();
    let decision = crate::recovery::RecoveryDecision::Requeue { recovery_count: 1 };
    let mut step = Step::new(Timestamp(20_000), &set, None);
    // Found dead under token 0, but the row is now claimed under token 1.
    assert_eq!(step.recover(&mut snap, Some(&w), t.id, FencingToken(0), decision, &policy), None);
    assert!(step.finish().writes.tasks.is_empty());
    let mut step = Step::new(Timestamp(20_000), &set, None);
    assert_eq!(step.recover(&mut snap, Some(&w), t.id, t.fencing_token, decision, &policy), Some(decision));
    assert_eq!(step.finish().writes.tasks[0].row.state, TaskState::Ready);
}
