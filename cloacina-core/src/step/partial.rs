//! Reports applied to a [`PartialSnapshot`]: the cost of a report is the
//! rows it changes, not the size of its execution.

use std::collections::BTreeSet;

use super::{Needed, PartialSnapshot, Step};
use crate::plan::{self, ContextSource, PlannedTransition};
use crate::ports::{ReportOutcome, ReportRejection, TaskReport};
use crate::state::TaskState;

impl Step<'_> {
    /// Applies the reports of one execution to some of its rows, with the
    /// same rules and results as [`Step::report`] on the whole execution.
    ///
    /// Returns what the snapshot lacks — and changes nothing, in the step
    /// or the snapshot — when the reports need rows it does not hold (a
    /// dependent, a dependency of a task that can now start, an output or
    /// the input a trigger rule reads), or when they finish the execution
    /// (finalizing reads it whole: [`Needed::everything`]). The caller
    /// loads what is named and calls again.
    pub fn report_partial(
        &mut self,
        snap: &mut PartialSnapshot,
        reports: Vec<TaskReport>,
    ) -> Result<Vec<Result<(), ReportRejection>>, Needed> {
        let Some(wf) = self.workflows.get(&snap.execution.workflow) else {
            return Err(Needed::whole());
        };
        // A trial on copies first, so that a lacking snapshot leaves no
        // trace (claims do not change what is read: they are left out).
        // Contexts are read only by rules that read the context: without
        // such rules the trial goes without them (they can be large).
        let mut trial = PartialSnapshot {
            execution: snap.execution.clone(),
            input_loaded: snap.input_loaded,
            unfinished: snap.unfinished,
            tasks: snap.tasks.clone(),
            outputs: Default::default(),
        };
        let trial_reports = if wf.needs_context() {
            trial.outputs = snap.outputs.clone();
            reports.clone()
        } else {
            trial.execution.input = Default::default();
            reports.iter().map(without_output).collect()
        };
        let mut scratch = Step::new(self.now, self.workflows, None);
        scratch.apply_partial(&mut trial, trial_reports)?;
        self.apply_partial(snap, reports)
    }

    fn apply_partial(
        &mut self,
        snap: &mut PartialSnapshot,
        reports: Vec<TaskReport>,
    ) -> Result<Vec<Result<(), ReportRejection>>, Needed> {
        let Some(wf) = self.workflows.get(&snap.execution.workflow).cloned() else {
            return Err(Needed::whole());
        };
        self.note(&snap.execution);
        let mut finished: BTreeSet<usize> = BTreeSet::new();
        let mut results = Vec::with_capacity(reports.len());
        for r in reports {
            let found = snap.tasks.iter().find(|(_, (row, _))| row.id == r.task).map(|(i, _)| *i);
            let Some(idx) = found.filter(|_| r.execution == snap.execution.id) else {
                results.push(Err(ReportRejection::NotFound));
                continue;
            };
            let Some((slot, _)) = snap.tasks.get_mut(&idx) else {
                results.push(Err(ReportRejection::NotFound));
                continue;
            };
            let res = self.apply_report(slot, idx, &mut snap.outputs, r);
            if res.is_ok() && slot.state.is_terminal() {
                finished.insert(idx);
            }
            results.push(res);
        }
        if snap.execution.state.is_terminal() {
            return Ok(results);
        }
        let Some(mut unfinished) = snap.unfinished.checked_sub(finished.len() as u32) else {
            return Err(Needed::whole());
        };

        // Dependents in topological order: a task is decided when its last
        // dependency finishes; a skip finishes it in turn.
        let mut needed = Needed::default();
        let mut decide: BTreeSet<usize> = BTreeSet::new();
        let mut planned: Vec<PlannedTransition> = Vec::new();
        loop {
            let next_done = finished.first().copied();
            let next_decide = decide.first().copied();
            let (i, is_done) = match (next_done, next_decide) {
                (Some(a), Some(b)) if b < a => (b, false),
                (Some(a), _) => (a, true),
                (None, Some(b)) => (b, false),
                (None, None) => break,
            };
            if is_done {
                finished.remove(&i);
                for &d in wf.dependent_indices(i) {
                    let Some((row, waiting)) = snap.tasks.get_mut(&d) else {
                        needed.rows.insert(d);
                        continue;
                    };
                    let Some(left) = waiting.checked_sub(1) else {
                        // The counter says no dependency was unfinished.
                        return Err(Needed::whole());
                    };
                    *waiting = left;
                    if left == 0 && row.state == TaskState::NotStarted {
                        decide.insert(d);
                    }
                }
                continue;
            }
            decide.remove(&i);
            let deps = wf.dependency_indices(i);
            let missing: Vec<usize> = deps.iter().copied().filter(|d| !snap.tasks.contains_key(d)).collect();
            if !missing.is_empty() {
                needed.rows.extend(missing);
                continue;
            }
            let state_of = |d: usize| snap.tasks.get(&d).map_or(TaskState::NotStarted, |(r, _)| r.state);
            if deps.iter().any(|&d| !state_of(d).is_terminal()) {
                // The counter says they all finished; the rows disagree.
                return Err(Needed::whole());
            }
            if wf.tasks()[i].trigger_rule().needs_context() {
                let sources = plan::sources_of(&wf, i, &state_of);
                let lacking: Vec<usize> = sources.iter().copied().filter(|s| !snap.outputs.contains_key(s)).collect();
                if sources.is_empty() && !snap.input_loaded {
                    needed.input = true;
                }
                if !lacking.is_empty() || (sources.is_empty() && !snap.input_loaded) {
                    needed.outputs.extend(lacking);
                    continue;
                }
            }
            let src = ContextSource { input: &snap.execution.input, outputs: &snap.outputs };
            let (event, reason) = plan::decide(&wf, i, &state_of, Some(src));
            let Some((row, _)) = snap.tasks.get_mut(&i) else { continue };
            let from = row.state;
            let to = from.apply(event).unwrap_or(from);
            // Decided now, written below (as `advance` plans, then writes).
            row.state = to;
            if to.is_terminal() {
                unfinished = unfinished.saturating_sub(1);
                finished.insert(i);
            }
            planned.push(PlannedTransition { task: i, from, to, reason });
        }
        if !needed.is_empty() {
            return Err(needed);
        }
        if unfinished == 0 {
            return Err(Needed::whole());
        }
        let input = snap.input_loaded.then(|| std::mem::take(&mut snap.execution.input));
        for p in planned {
            let task = p.task;
            let Some((row, _)) = snap.tasks.get(&task) else { continue };
            let mut row = row.clone();
            // The row holds the decided state; the write starts from before.
            row.state = p.from;
            let states = &snap.tasks;
            let state_of = |d: usize| states.get(&d).map_or(TaskState::NotStarted, |(r, _)| r.state);
            let known = super::report::Known { state_of: &state_of, outputs: &snap.outputs, input: input.as_ref() };
            self.apply_planned(&wf, &mut snap.execution, &mut row, p, &known);
            if let Some(slot) = snap.tasks.get_mut(&task) {
                slot.0 = row;
            }
        }
        if let Some(input) = input {
            snap.execution.input = input;
        }
        snap.unfinished = unfinished;
        Ok(results)
    }
}

/// A copy of a report without its output (for a trial that reads none).
fn without_output(r: &TaskReport) -> TaskReport {
    let outcome = match &r.outcome {
        ReportOutcome::Succeeded { .. } => ReportOutcome::Succeeded { output: Default::default() },
        other => other.clone(),
    };
    TaskReport { task: r.task, execution: r.execution, fencing_token: r.fencing_token, outcome }
}
