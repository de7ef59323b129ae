//! The counters kept beside the rows (see
//! [`PartialSnapshot`](super::PartialSnapshot)), derived
//! once per step from its task writes: no path that changes a task's state
//! can forget them.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{CounterChange, NewCounters, Step, WaitingChange};
use crate::ids::ExecutionId;
use crate::ports::TaskRecord;
use crate::workflow::Workflow;

impl Step<'_> {
    /// For every task write that makes a task terminal: its execution's
    /// count of unfinished tasks and each dependent's count of unfinished
    /// dependencies go down by one. A change folds into the row's or the
    /// execution's own write when it has one (one statement must never
    /// update a row twice), else it is a write of its own. An execution
    /// whose workflow the step does not know has its counters forgotten;
    /// one that finishes in this step needs none.
    pub(super) fn derive_counters(&mut self) {
        let workflows = self.workflows;
        let w = &mut self.out.writes;
        let finished: HashSet<ExecutionId> =
            w.executions.iter().filter(|x| x.state.is_terminal()).map(|x| x.id).collect();
        let mut unfinished: BTreeMap<ExecutionId, CounterChange> = BTreeMap::new();
        let mut waiting: BTreeMap<(ExecutionId, usize), i32> = BTreeMap::new();
        let mut write_of: HashMap<(ExecutionId, usize), usize> = HashMap::new();
        for (k, tw) in w.tasks.iter().enumerate() {
            let exec = tw.row.execution_id;
            if finished.contains(&exec) {
                continue;
            }
            let found = self
                .exec_refs
                .get(&exec)
                .and_then(|r| workflows.get(r))
                .and_then(|wf| wf.index_of(&tw.row.name).map(|i| (wf, i)));
            if let Some((_, i)) = found {
                write_of.insert((exec, i), k);
            }
            if tw.expect_state.is_terminal() || !tw.row.state.is_terminal() {
                continue;
            }
            match found {
                Some((wf, i)) => {
                    if let CounterChange::Add(n) = unfinished.entry(exec).or_default() {
                        *n -= 1;
                    }
                    for &d in wf.dependent_indices(i) {
                        *waiting.entry((exec, d)).or_default() -= 1;
                    }
                }
                None => {
                    unfinished.insert(exec, CounterChange::Forget);
                }
            }
        }
        for ((exec, d), delta) in waiting {
            if delta == 0 || unfinished.get(&exec) == Some(&CounterChange::Forget) {
                continue;
            }
            match write_of.get(&(exec, d)) {
                Some(&k) => w.tasks[k].waiting_delta += delta,
                None => w.waiting.push(WaitingChange {
                    execution: exec,
                    position: u32::try_from(d).unwrap_or(u32::MAX),
                    delta,
                }),
            }
        }
        for (exec, change) in unfinished {
            if change.is_none() {
                continue;
            }
            match self.exec_write_index.get(&exec) {
                Some(&i) => w.executions[i].unfinished = change,
                None => w.unfinished.push((exec, change)),
            }
        }
    }
}

/// The counters of a new execution of `wf` whose rows are `rows`; `None`
/// when the rows do not match the workflow's tasks one to one, in order.
pub(super) fn initial(wf: &Workflow, rows: &[TaskRecord]) -> Option<NewCounters> {
    if rows.len() != wf.len() || rows.iter().enumerate().any(|(i, r)| wf.index_of(&r.name) != Some(i)) {
        return None;
    }
    let waiting = (0..wf.len())
        .map(|i| wf.dependency_indices(i).iter().filter(|&&d| !rows[d].state.is_terminal()).count())
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .collect();
    let unfinished = u32::try_from(rows.iter().filter(|r| !r.state.is_terminal()).count()).unwrap_or(u32::MAX);
    Some(NewCounters { unfinished, waiting })
}
