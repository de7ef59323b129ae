//! The partial report path against the whole-execution one, on random
//! DAGs: same states, same final context, counters always exact.
use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::context::Context;
use crate::ports::{NewExecution, ReportOutcome, TaskReport};
use crate::task::{TaskError, task_fn};
use crate::trigger::{TriggerRule, ValueCondition};
use crate::workflow::TaskSpec;

/// The stored rows of one execution, as a database would hold them.
#[derive(Debug, Clone)]
struct Db {
    exec: crate::ports::ExecutionRecord,
    rows: Vec<TaskRecord>,
    waiting: Vec<Option<i64>>,
    unfinished: Option<i64>,
    outputs: HashMap<usize, Context>,
    /// Task rows read by partial reports.
    rows_read: usize,
}

impl Db {
    fn apply(&mut self, wf: &Workflow, w: &Writes) {
        for e in &w.execution_inserts {
            self.exec = e.clone();
        }
        if !w.task_inserts.is_empty() {
            self.rows = w.task_inserts.clone();
            let c = w.new_counters.get(&self.exec.id);
            self.waiting = (0..self.rows.len()).map(|i| c.map(|c| i64::from(c.waiting[i]))).collect();
            self.unfinished = c.map(|c| i64::from(c.unfinished));
        }
        for tw in &w.tasks {
            let i = wf.index_of(&tw.row.name).unwrap();
            assert_eq!((self.rows[i].state, self.rows[i].fencing_token), (tw.expect_state, tw.expect_token));
            self.rows[i] = tw.row.clone();
            self.waiting[i] = self.waiting[i].map(|n| n + i64::from(tw.waiting_delta));
        }
        for c in &w.waiting {
            let i = c.position as usize;
            self.waiting[i] = self.waiting[i].map(|n| n + i64::from(c.delta));
        }
        let mut change = |c: CounterChange| match c {
            CounterChange::Add(n) => self.unfinished = self.unfinished.map(|u| u + i64::from(n)),
            CounterChange::Forget => self.unfinished = None,
        };
        for x in &w.executions {
            change(x.unfinished);
        }
        for (_, c) in &w.unfinished {
            change(*c);
        }
        for x in &w.executions {
            assert_eq!(self.exec.state, x.expect_state);
            self.exec.state = x.state;
            self.exec.error = x.error.clone();
            self.exec.finished_at = x.finished_at;
        }
        for o in &w.outputs {
            self.outputs.insert(wf.index_of(&o.name).unwrap(), o.context.clone());
        }
    }

    /// The counters recomputed from the states.
    fn check_counters(&self, wf: &Workflow) {
        if self.exec.state.is_terminal() {
            return;
        }
        let unfinished = self.rows.iter().filter(|r| !r.state.is_terminal()).count() as i64;
        assert_eq!(self.unfinished, Some(unfinished), "unfinished count");
        for i in 0..wf.len() {
            let n = wf.dependency_indices(i).iter().filter(|&&d| !self.rows[d].state.is_terminal()).count() as i64;
            assert_eq!(self.waiting[i], Some(n), "waiting count of task {i}");
        }
    }

    fn whole(&self, wf: &Workflow) -> ExecutionSnapshot {
        let mut s = ExecutionSnapshot::new(wf, self.exec.clone(), true, self.rows.clone()).unwrap();
        s.outputs = self.outputs.clone();
        s
    }

    fn partial(&mut self, at: &[usize]) -> PartialSnapshot {
        let mut exec = self.exec.clone();
        exec.input = Context::new();
        let mut s = PartialSnapshot {
            execution: exec,
            input_loaded: false,
            unfinished: self.unfinished.unwrap() as u32,
            tasks: BTreeMap::new(),
            outputs: HashMap::new(),
        };
        self.load(&mut s, at.iter().copied());
        s
    }

    fn load(&mut self, s: &mut PartialSnapshot, at: impl Iterator<Item = usize>) {
        for i in at {
            if let std::collections::btree_map::Entry::Vacant(slot) = s.tasks.entry(i) {
                self.rows_read += 1;
                slot.insert((self.rows[i].clone(), self.waiting[i].unwrap() as u32));
            }
        }
    }
}

fn spec(i: usize, deps: &[usize], rule: u8) -> TaskSpec {
    let id = format!("t{i}");
    let out = i as i64;
    let mut t = TaskSpec::new(
        id,
        task_fn(move |mut c: Context| async move {
            c.set("last", out)?;
            Ok::<_, TaskError>(c)
        }),
    )
    .depends_on(deps.iter().map(|d| format!("t{d}")));
    let rule = match (rule, deps.first()) {
        (0, _) | (_, None) if rule < 5 => None,
        (1, _) => Some(TriggerRule::AllDone),
        (2, _) => Some(TriggerRule::OneSuccess),
        (3, _) => Some(TriggerRule::OneFailed),
        (4, Some(d)) => Some(TriggerRule::TaskSuccess(format!("t{d}"))),
        (_, _) => Some(TriggerRule::ContextValue { key: "last".into(), condition: ValueCondition::Exists }),
    };
    if let Some(r) = rule {
        t = t.trigger(r);
    }
    t
}

/// Runs the workflow to the end, every Ready task claimed and reported in
/// index order with `outcome[i]` (0 success, 1 failure, 2 one retry then
/// success); `partial` picks the report path.
fn run(wf: &Workflow, outcome: &[u8], partial: bool) -> Db {
    let set: WorkflowSet = [wf.clone()].into_iter().collect();
    let mut step = Step::new(Timestamp(1), &set, None);
    let mut input = Context::new();
    input.set("input", 1).unwrap();
    step.create(NewExecution::plan(wf, input, "api", Timestamp(1)));
    let out = step.finish();
    let mut db = Db {
        exec: out.writes.execution_inserts[0].clone(),
        rows: Vec::new(),
        waiting: Vec::new(),
        unfinished: None,
        outputs: HashMap::new(),
        rows_read: 0,
    };
    db.apply(wf, &out.writes);
    db.check_counters(wf);
    let mut retried = vec![false; wf.len()];
    for now in 2..1000 {
        let Some(i) = db.rows.iter().position(|r| r.state == TaskState::Ready) else { break };
        // The claim, as a claim statement makes it.
        db.rows[i].state = TaskState::Running;
        db.rows[i].fencing_token = FencingToken(db.rows[i].fencing_token.0 + 1);
        let row = db.rows[i].clone();
        let mut output = Context::new();
        output.set(format!("t{i}"), i as i64).unwrap();
        output.set("last", i as i64).unwrap();
        let outcome = match outcome[i % outcome.len()] {
            1 => ReportOutcome::Failed { error: "no".into() },
            2 if !retried[i] => {
                retried[i] = true;
                ReportOutcome::Retry { error: "again".into(), retry_at: Timestamp(now) }
            }
            _ => ReportOutcome::Succeeded { output },
        };
        let report =
            TaskReport { task: row.id, execution: row.execution_id, fencing_token: row.fencing_token, outcome };
        let mut step = Step::new(Timestamp(now), &set, None);
        if partial {
            let mut at = vec![i];
            at.extend_from_slice(wf.dependent_indices(i));
            let mut snap = db.partial(&at);
            loop {
                match step.report_partial(&mut snap, vec![report.clone()]) {
                    Ok(results) => {
                        assert_eq!(results, vec![Ok(())]);
                        break;
                    }
                    Err(n) if n.everything => {
                        let mut all: BTreeMap<ExecutionId, Result<ExecutionSnapshot, String>> =
                            [(db.exec.id, Ok(db.whole(wf)))].into_iter().collect();
                        assert_eq!(step.report(&mut all, vec![report.clone()]), vec![Ok(())]);
                        break;
                    }
                    Err(n) => {
                        assert!(!n.is_empty());
                        db.load(&mut snap, n.rows.iter().copied());
                        for o in &n.outputs {
                            if let Some(c) = db.outputs.get(o) {
                                snap.outputs.insert(*o, c.clone());
                            }
                        }
                        if n.input {
                            snap.execution.input = db.exec.input.clone();
                            snap.input_loaded = true;
                        }
                    }
                }
            }
        } else {
            let mut all: BTreeMap<ExecutionId, Result<ExecutionSnapshot, String>> =
                [(db.exec.id, Ok(db.whole(wf)))].into_iter().collect();
            assert_eq!(step.report(&mut all, vec![report]), vec![Ok(())]);
        }
        db.apply(wf, &step.finish().writes);
        db.check_counters(wf);
    }
    db
}

fn dag() -> impl Strategy<Value = (Workflow, Vec<u8>)> {
    (1usize..10)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec((any::<u16>(), 0u8..7), n),
                proptest::collection::vec(prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], n),
            )
        })
        .prop_map(|(tasks, outcomes)| {
            let mut b = Workflow::builder("random");
            for (i, (mask, rule)) in tasks.iter().enumerate() {
                let deps: Vec<usize> = (0..i).filter(|d| mask & (1 << (d % 16)) != 0).collect();
                b = b.task(spec(i, &deps, *rule));
            }
            (b.build().unwrap(), outcomes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn partial_reports_decide_as_whole_ones((wf, outcomes) in dag()) {
        let whole = run(&wf, &outcomes, false);
        let part = run(&wf, &outcomes, true);
        let states = |db: &Db| db.rows.iter().map(|r| (r.state, r.error.clone())).collect::<Vec<_>>();
        prop_assert_eq!(states(&whole), states(&part));
        prop_assert_eq!(whole.exec.state, part.exec.state);
        prop_assert!(whole.exec.state.is_terminal());
        prop_assert_eq!(&whole.exec.error, &part.exec.error);
        let fin = |db: &Db| {
            let st: Vec<TaskState> = db.rows.iter().map(|r| r.state).collect();
            crate::plan::final_context(
                &wf, &st, crate::plan::ContextSource { input: &db.exec.input, outputs: &db.outputs })
        };
        prop_assert_eq!(fin(&whole), fin(&part));
    }
}

/// A report in a wide fan-out reads the task and the join, not the
/// siblings: rows read per report do not grow with the width.
#[test]
fn rows_read_per_report_do_not_grow_with_width() {
    let per_report = |width: usize| {
        let mut b = Workflow::builder("fan").task(spec(0, &[], 0));
        let mids: Vec<usize> = (1..=width).collect();
        for &i in &mids {
            b = b.task(spec(i, &[0], 0));
        }
        b = b.task(spec(width + 1, &mids, 0));
        let wf = b.build().unwrap();
        let db = run(&wf, &[0], true);
        assert_eq!(db.exec.state, crate::state::WorkflowState::Completed);
        // The root's report reads the width's rows once; each middle report
        // reads itself and the join; the join's (the last) reads the whole.
        (db.rows_read - 2 * width) as f64 / width as f64
    };
    let (narrow, wide) = (per_report(20), per_report(400));
    assert!(wide <= narrow + 0.1, "rows read per report grew with width: {narrow:.2} at 20, {wide:.2} at 400");
}
