//! What a step reads (an [`ExecutionSnapshot`] per execution) and what it
//! asks to be written ([`Writes`]), plus the claims whose inputs are still
//! to be assembled ([`PendingClaim`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::context::Context;
use crate::ids::{ExecutionId, FencingToken, TaskExecutionId, Timestamp};
use crate::ports::{ClaimedTask, Effects, ExecutionEvent, ExecutionRecord, TaskRecord};
use crate::state::{TaskState, WorkflowState};
use crate::workflow::Workflow;

/// Why an execution's rows do not fit its workflow (the adapter names the
/// row and column when it reports it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A task row whose task id the workflow does not have.
    #[error("workflow `{workflow}` has no task `{name}`")]
    UnknownTask {
        /// The row.
        row: TaskExecutionId,
        /// The task id it carries.
        name: String,
        /// `name@version` of the workflow.
        workflow: String,
    },
    /// A task of the workflow without a row.
    #[error("task `{task}` has no row")]
    MissingTask {
        /// The execution.
        execution: ExecutionId,
        /// The task id.
        task: String,
    },
}

/// The rows of one execution, as loaded inside a transaction.
#[derive(Debug, Clone)]
pub struct ExecutionSnapshot {
    /// The execution row. Its `input` may be empty when the adapter did not
    /// load it (see [`ExecutionSnapshot::input_loaded`]).
    pub execution: ExecutionRecord,
    /// Whether `execution.input` holds the real input.
    pub input_loaded: bool,
    /// Task rows, by workflow task index (in stored order for a snapshot
    /// made without its workflow).
    pub tasks: Vec<TaskRecord>,
    /// Known outputs of completed tasks, by task index.
    pub outputs: HashMap<usize, Context>,
}

impl ExecutionSnapshot {
    /// Orders `rows` by the workflow's task index. A row whose task id the
    /// workflow does not have, or a task without a row, is a
    /// [`SnapshotError`].
    pub fn new(
        wf: &Workflow,
        execution: ExecutionRecord,
        input_loaded: bool,
        rows: Vec<TaskRecord>,
    ) -> Result<Self, SnapshotError> {
        let mut slots: Vec<Option<TaskRecord>> = vec![None; wf.len()];
        for row in rows {
            let Some(i) = wf.index_of(&row.name) else {
                return Err(SnapshotError::UnknownTask {
                    row: row.id,
                    name: row.name,
                    workflow: wf.reference().to_string(),
                });
            };
            slots[i] = Some(row);
        }
        let mut tasks = Vec::with_capacity(wf.len());
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(r) => tasks.push(r),
                None => {
                    return Err(SnapshotError::MissingTask {
                        execution: execution.id,
                        task: wf.tasks()[i].id().to_owned(),
                    });
                }
            }
        }
        Ok(Self { execution, input_loaded, tasks, outputs: HashMap::new() })
    }

    /// A snapshot without its workflow: rows in stored order (enough to
    /// cancel, pause, release or requeue).
    pub fn unordered(execution: ExecutionRecord, tasks: Vec<TaskRecord>) -> Self {
        Self { execution, input_loaded: false, tasks, outputs: HashMap::new() }
    }

    pub(super) fn states(&self) -> Vec<TaskState> {
        self.tasks.iter().map(|t| t.state).collect()
    }

    pub(super) fn index_of(&self, id: TaskExecutionId) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }
}

/// Some rows of one execution: enough for a report that changes only them.
///
/// A report changes the reported task, its dependents, and — when one of
/// those can now start — what deciding it reads (its dependencies' states,
/// and for a rule that reads the context, their outputs). Two counters kept
/// in the same transactions as the states make that knowable without
/// reading the rest: per task the dependencies not yet terminal, per
/// execution the tasks not yet terminal. A report of a task in a 2,000-wide
/// fan-out reads the task and the join, not the 2,000 siblings; the report
/// that finishes the execution reads it whole, once (see
/// [`Step::report_partial`](super::Step::report_partial)).
#[derive(Debug, Clone)]
pub struct PartialSnapshot {
    /// The execution row (its input as in [`ExecutionSnapshot`]).
    pub execution: ExecutionRecord,
    /// Whether `execution.input` holds the real input.
    pub input_loaded: bool,
    /// The stored count of the execution's tasks not yet terminal.
    pub unfinished: u32,
    /// Loaded task rows by task index, each with its stored count of
    /// dependencies not yet terminal.
    pub tasks: BTreeMap<usize, (TaskRecord, u32)>,
    /// Loaded outputs of completed tasks, by task index.
    pub outputs: HashMap<usize, Context>,
}

/// What a [`PartialSnapshot`] lacked for a report; the adapter loads it and
/// calls again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    /// Task rows, by task index.
    pub rows: BTreeSet<usize>,
    /// Outputs, by task index (of completed tasks; a missing one is absent).
    pub outputs: BTreeSet<usize>,
    /// The execution input.
    pub input: bool,
    /// The whole execution, as an [`ExecutionSnapshot`]: the report
    /// finishes it, or the counters disagree with the rows.
    pub everything: bool,
}

impl Needed {
    /// Whether nothing is lacking.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.outputs.is_empty() && !self.input && !self.everything
    }

    pub(super) fn whole() -> Self {
        Needed { everything: true, ..Needed::default() }
    }
}

/// A task row update, applied only if the row still has `expect_state` and
/// `expect_token`.
#[derive(Debug, Clone)]
pub struct TaskWrite {
    /// Expected current state.
    pub expect_state: TaskState,
    /// Expected current token.
    pub expect_token: FencingToken,
    /// The row's new values.
    pub row: TaskRecord,
    /// Change to the row's count of dependencies not yet terminal.
    pub waiting_delta: i32,
}

/// An execution row update, applied only if the row still has
/// `expect_state`.
#[derive(Debug, Clone)]
pub struct ExecutionWrite {
    /// Id.
    pub id: ExecutionId,
    /// Expected current state.
    pub expect_state: WorkflowState,
    /// New state.
    pub state: WorkflowState,
    /// New error.
    pub error: Option<String>,
    /// New finish time.
    pub finished_at: Option<Timestamp>,
    /// Change to the execution's count of tasks not yet terminal.
    pub unfinished: CounterChange,
}

/// A change to a stored counter of an execution (see
/// [`PartialSnapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterChange {
    /// Add this (negative when tasks finished).
    Add(i32),
    /// The step could not account for a change (the execution's workflow
    /// is not known to it): the stored counts are dropped, and every later
    /// report of the execution reads all of its rows.
    Forget,
}

impl Default for CounterChange {
    fn default() -> Self {
        CounterChange::Add(0)
    }
}

impl CounterChange {
    /// Whether the change changes nothing.
    pub fn is_none(&self) -> bool {
        *self == CounterChange::Add(0)
    }
}

/// A change to the count of unfinished dependencies of a task row that the
/// step does not otherwise update, by the row's position in its execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingChange {
    /// The execution.
    pub execution: ExecutionId,
    /// The row's position (its task's index in the workflow).
    pub position: u32,
    /// The change.
    pub delta: i32,
}

/// The counters a new execution starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCounters {
    /// Tasks not yet terminal.
    pub unfinished: u32,
    /// Per task, by position: dependencies not yet terminal.
    pub waiting: Vec<u32>,
}

/// An output to store.
#[derive(Debug, Clone)]
pub struct OutputWrite {
    /// Task row.
    pub task: TaskExecutionId,
    /// Its execution.
    pub execution: ExecutionId,
    /// Task id.
    pub name: String,
    /// The context.
    pub context: Context,
}

/// Everything a step wants written, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// New executions.
    pub execution_inserts: Vec<ExecutionRecord>,
    /// New task rows.
    pub task_inserts: Vec<TaskRecord>,
    /// Task updates.
    pub tasks: Vec<TaskWrite>,
    /// Execution updates.
    pub executions: Vec<ExecutionWrite>,
    /// Outputs.
    pub outputs: Vec<OutputWrite>,
    /// Events, in order.
    pub events: Vec<ExecutionEvent>,
    /// Counter changes of task rows without a [`TaskWrite`].
    pub waiting: Vec<WaitingChange>,
    /// Counter changes of executions without an [`ExecutionWrite`].
    pub unfinished: Vec<(ExecutionId, CounterChange)>,
    /// The counters of new executions (absent: the step did not know the
    /// workflow; the execution is then always read whole).
    pub new_counters: HashMap<ExecutionId, NewCounters>,
}

impl Writes {
    /// How many rows the writes insert or update: what the statements that
    /// apply them must touch, else a guarded row changed concurrently.
    pub fn rows(&self) -> usize {
        self.execution_inserts.len()
            + self.task_inserts.len()
            + self.tasks.len()
            + self.executions.len()
            + self.outputs.len()
            + self.events.len()
            + self.waiting.len()
            + self.unfinished.len()
    }
}

/// A claim whose input context still has to be assembled from stored
/// outputs.
#[derive(Debug, Clone)]
pub struct PendingClaim {
    /// The claimed task, input still empty.
    pub task: ClaimedTask,
    /// The dependencies whose outputs make up the input, in topological
    /// order (the ones with an output are the completed ones).
    pub sources: Vec<String>,
    /// Outputs already in memory, by task id.
    pub known: HashMap<String, Context>,
    /// The execution input, when it is known.
    pub execution_input: Option<Context>,
}

impl PendingClaim {
    /// Builds a pending claim for a row just claimed by a claim statement.
    pub fn for_claimed_row(wf: &Workflow, row: &TaskRecord) -> Self {
        let sources = wf
            .index_of(&row.name)
            .map(|i| wf.dependency_indices(i).iter().map(|&d| wf.tasks()[d].id().to_owned()).collect())
            .unwrap_or_default();
        Self { task: claimed_task(wf, row), sources, known: HashMap::new(), execution_input: None }
    }

    /// Source outputs not in memory.
    pub fn missing(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter(|s| !self.known.contains_key(*s)).map(String::as_str)
    }

    /// Whether the input is the execution input, given loaded outputs.
    pub fn needs_execution_input(&self, loaded: &HashMap<(ExecutionId, String), Context>) -> bool {
        self.execution_input.is_none()
            && !self
                .sources
                .iter()
                .any(|s| self.known.contains_key(s) || loaded.contains_key(&(self.task.execution_id, s.clone())))
    }

    /// Assembles the input and returns the claim. `loaded` holds outputs
    /// read by the adapter, `inputs` execution inputs.
    pub fn resolve(
        mut self,
        loaded: &HashMap<(ExecutionId, String), Context>,
        inputs: &HashMap<ExecutionId, Context>,
    ) -> ClaimedTask {
        let exec = self.task.execution_id;
        // One source held in memory: its output is the input as it is.
        if let [only] = self.sources.as_slice()
            && let Some(out) = self.known.remove(only)
        {
            self.task.input = out;
            return self.task;
        }
        let outs: Vec<&Context> =
            self.sources.iter().filter_map(|s| self.known.get(s).or_else(|| loaded.get(&(exec, s.clone())))).collect();
        self.task.input = if outs.is_empty() {
            self.execution_input.take().or_else(|| inputs.get(&exec).cloned()).unwrap_or_default()
        } else {
            Context::merge_outputs(outs)
        };
        self.task
    }
}

pub(super) fn claimed_task(wf: &Workflow, row: &TaskRecord) -> ClaimedTask {
    ClaimedTask {
        id: row.id,
        execution_id: row.execution_id,
        workflow: wf.reference(),
        name: row.name.clone(),
        attempt: row.attempt,
        fencing_token: row.fencing_token,
        recovery_count: row.recovery_count,
        input: Context::new(),
        input_error: None,
    }
}

/// What a [`Step`](super::Step) produced.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Rows to write.
    pub writes: Writes,
    /// Effects to return (claims are in `pending_claims` until resolved).
    pub effects: Effects,
    /// Claims made in this step.
    pub pending_claims: Vec<PendingClaim>,
}
