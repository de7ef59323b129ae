//! Moving unfinished executions from one workflow version to another.
//!
//! When a deploy changes a workflow's *shape* (its task ids or
//! dependencies) and no runner keeps the old version, the old version's
//! unfinished executions are *stranded*: nobody can serve them. A
//! migration moves them to a version that is served, with a
//! [`TaskMapping`] saying which new task each old task becomes.
//!
//! The rules, checked for every execution before anything is written (one
//! refusal and nothing changes):
//!
//! * every old task is mapped: to a new task ([`TaskMapping::task`]), to
//!   nothing ([`TaskMapping::drop`]), or — by default — to the new task of
//!   the same id; no two old tasks map to one new task;
//! * a completed task keeps its output, so it cannot be dropped, and the
//!   new task it becomes must not depend on a task that has not completed
//!   (its output would come before its input);
//! * a task a live runner is running is not moved (try again once it
//!   reported, or cancel the execution).
//!
//! Completed, failed and skipped tasks keep their state and output (no
//! completed task runs again). The others — not started, ready (a retry's
//! backoff included: it runs at once), or running under a dead runner
//! (which counts as a recovery of the task) —
//! and the new tasks no old task maps to start afresh: their dependencies
//! are evaluated as after a report, so they become ready, skipped or wait.

use std::collections::HashMap;

use crate::context::Context;
use crate::ids::TaskExecutionId;
use crate::plan::{ContextSource, advance, outcome};
use crate::ports::TaskRecord;
use crate::state::{TaskState, WorkflowState};
use crate::workflow::Workflow;

/// What an old task becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This task of the new version.
    Task(String),
    /// Nothing: the task is removed (only for tasks that did not complete).
    Drop,
}

/// Which new task each old task becomes. Old tasks not named map to the new
/// task of the same id, if there is one.
///
/// ```
/// use cloacina_core::migrate::TaskMapping;
/// // `clean` was split into `clean_a` and `clean_b`; `report` is gone.
/// let m = TaskMapping::new().task("clean", "clean_a").drop("report");
/// # let _ = m;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMapping {
    targets: HashMap<String, Target>,
}

impl TaskMapping {
    /// Every old task to the new task of the same id.
    pub fn new() -> Self {
        Self::default()
    }
    /// Old task `old` becomes new task `new`.
    pub fn task(mut self, old: &str, new: &str) -> Self {
        self.targets.insert(old.to_owned(), Target::Task(new.to_owned()));
        self
    }
    /// Old task `old` is removed (refused if it completed).
    pub fn drop(mut self, old: &str) -> Self {
        self.targets.insert(old.to_owned(), Target::Drop);
        self
    }
    /// What `old` becomes, if the mapping names it.
    pub fn target(&self, old: &str) -> Option<&Target> {
        self.targets.get(old)
    }
}

/// Why a migration was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// An old task that the mapping does not name and the new version has
    /// no task of its id for.
    #[error(
        "old task `{task}` has no counterpart in the new version: map it with `.task(\"{task}\", <new task>)` or `.drop(\"{task}\")`"
    )]
    Unmapped {
        /// The old task.
        task: String,
    },
    /// A mapping to a task the new version does not have.
    #[error("old task `{task}` is mapped to `{target}`, which the new version does not have (it has: {known})")]
    UnknownTarget {
        /// The old task.
        task: String,
        /// The new task named.
        target: String,
        /// The new version's task ids.
        known: String,
    },
    /// Two old tasks mapped to one new task.
    #[error("old tasks `{first}` and `{second}` are both mapped to `{target}`: each new task takes at most one")]
    DuplicateTarget {
        /// The new task.
        target: String,
        /// One old task.
        first: String,
        /// The other.
        second: String,
    },
    /// A completed task mapped to nothing: its output would be lost.
    #[error(
        "old task `{task}` completed in execution {execution}: dropping it would lose its output; map it to a new task"
    )]
    LosesOutput {
        /// The old task.
        task: String,
        /// The execution.
        execution: String,
    },
    /// A completed task would depend on one that has not completed.
    #[error(
        "in execution {execution}, completed task `{task}` would depend on `{dependency}`, which has not completed: its output would come before its input"
    )]
    CompletedBeforeDependency {
        /// The new task (completed).
        task: String,
        /// Its dependency in the new version (not completed).
        dependency: String,
        /// The execution.
        execution: String,
    },
    /// A task a live runner is running.
    #[error("task `{task}` of execution {execution} is running on a live runner; migrate once it reported, or cancel")]
    TaskRunning {
        /// The old task.
        task: String,
        /// The execution.
        execution: String,
    },
}

/// One task row after the migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedTask {
    /// The row (kept) or a new row's id.
    pub id: TaskExecutionId,
    /// Its id in the new version.
    pub name: String,
    /// Its position (the new version's topological index).
    pub position: usize,
    /// Its state afterwards.
    pub state: TaskState,
    /// Its state before (`None`: a new row).
    pub before: Option<TaskState>,
    /// Why it was skipped, if it was.
    pub reason: Option<String>,
}

/// What migrating one execution comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionMove {
    /// Every task row of the new version, in its topological order.
    pub tasks: Vec<MovedTask>,
    /// Old rows removed.
    pub dropped: Vec<TaskExecutionId>,
    /// Set when every task is terminal afterwards.
    pub finished: Option<WorkflowState>,
}

/// Plans moving one execution's rows to `to`. `live` says whether a
/// running task's lease belongs to a live runner; `outputs` are the
/// completed tasks' outputs by old task id (for trigger rules that read
/// them) and `input` the execution's input.
pub fn plan_move(
    execution: &str,
    old: &[TaskRecord],
    to: &Workflow,
    mapping: &TaskMapping,
    live: impl Fn(&TaskRecord) -> bool,
    input: &Context,
    outputs: &HashMap<String, Context>,
) -> Result<ExecutionMove, MigrationError> {
    let known = || to.topological_order().join(", ");
    let mut by_new: HashMap<usize, &TaskRecord> = HashMap::new();
    let mut dropped = Vec::new();
    for t in old {
        let target = match mapping.target(&t.name) {
            Some(Target::Task(n)) => Some(n.as_str()),
            Some(Target::Drop) => None,
            None if to.index_of(&t.name).is_some() => Some(t.name.as_str()),
            None => return Err(MigrationError::Unmapped { task: t.name.clone() }),
        };
        if t.state == TaskState::Running && live(t) {
            return Err(MigrationError::TaskRunning { task: t.name.clone(), execution: execution.to_owned() });
        }
        let Some(target) = target else {
            if t.state == TaskState::Completed {
                return Err(MigrationError::LosesOutput { task: t.name.clone(), execution: execution.to_owned() });
            }
            dropped.push(t.id);
            continue;
        };
        let Some(i) = to.index_of(target) else {
            return Err(MigrationError::UnknownTarget {
                task: t.name.clone(),
                target: target.to_owned(),
                known: known(),
            });
        };
        if let Some(first) = by_new.insert(i, t) {
            return Err(MigrationError::DuplicateTarget {
                target: target.to_owned(),
                first: first.name.clone(),
                second: t.name.clone(),
            });
        }
    }
    // Terminal tasks keep their state; the rest start afresh.
    let mut states: Vec<TaskState> = (0..to.len())
        .map(|i| match by_new.get(&i) {
            Some(t) if t.state.is_terminal() => t.state,
            _ => TaskState::NotStarted,
        })
        .collect();
    for (i, s) in states.iter().enumerate() {
        if *s != TaskState::Completed {
            continue;
        }
        if let Some(&d) = to.dependency_indices(i).iter().find(|&&d| states[d] != TaskState::Completed) {
            return Err(MigrationError::CompletedBeforeDependency {
                task: to.tasks()[i].id().to_owned(),
                dependency: to.tasks()[d].id().to_owned(),
                execution: execution.to_owned(),
            });
        }
    }
    let by_index: HashMap<usize, Context> =
        by_new.iter().filter_map(|(i, t)| outputs.get(&t.name).map(|c| (*i, c.clone()))).collect();
    let planned = advance(to, &mut states, Some(ContextSource { input, outputs: &by_index }));
    let reasons: HashMap<usize, Option<String>> = planned.into_iter().map(|p| (p.task, p.reason)).collect();
    let tasks = (0..to.len())
        .map(|i| MovedTask {
            id: by_new.get(&i).map(|t| t.id).unwrap_or_default(),
            name: to.tasks()[i].id().to_owned(),
            position: i,
            state: states[i],
            before: by_new.get(&i).map(|t| t.state),
            reason: reasons.get(&i).cloned().flatten(),
        })
        .collect();
    Ok(ExecutionMove { tasks, dropped, finished: outcome(&states) })
}

#[cfg(test)]
mod tests;
