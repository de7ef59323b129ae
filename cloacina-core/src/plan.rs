//! Pure planning of an execution's next step.
//!
//! Storage adapters call these functions inside the transaction that
//! changes a task, so that a change carries its consequences: dependents
//! become Ready or Skipped, and the execution is finalized when every task
//! is terminal. Nothing here does I/O; tasks are addressed by their index
//! in [`Workflow::tasks`] (topological order).

use std::collections::HashMap;

use crate::context::Context;
use crate::ids::{ExecutionId, TaskExecutionId, Timestamp};
use crate::state::{TaskEvent, TaskState, WorkflowState};
use crate::trigger::{DependencyOutcome, TriggerDecision};
use crate::workflow::{Workflow, WorkflowRef};

/// A state change decided by the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTransition {
    /// Task index.
    pub task: usize,
    /// State before.
    pub from: TaskState,
    /// State after.
    pub to: TaskState,
    /// Why (the skip reason, for skips).
    pub reason: Option<String>,
}

/// Contexts the planner may need: the execution's input and the outputs of
/// completed tasks, by task index. Only read when
/// [`Workflow::needs_context`] is true (for trigger rules) or when building
/// a task's input.
#[derive(Debug, Clone, Copy)]
pub struct ContextSource<'a> {
    /// The execution's input context.
    pub input: &'a Context,
    /// Outputs of completed tasks, by index.
    pub outputs: &'a HashMap<usize, Context>,
}

/// Evaluates every not-started task whose dependencies are all terminal,
/// in topological order, so that a skip cascades in one pass. Updates
/// `states` in place and returns what changed.
///
/// `contexts` must be given when [`Workflow::needs_context`] is true;
/// without it, context rules see an empty context.
pub fn advance(wf: &Workflow, states: &mut [TaskState], contexts: Option<ContextSource<'_>>) -> Vec<PlannedTransition> {
    let mut planned = Vec::new();
    for i in 0..wf.len() {
        if states[i] != TaskState::NotStarted {
            continue;
        }
        if !wf.dependency_indices(i).iter().all(|&d| states[d].is_terminal()) {
            continue;
        }
        let (event, reason) = decide(wf, i, &|d| states[d], contexts);
        let from = states[i];
        // NotStarted accepts both events; the machine is still the judge.
        let to = from.apply(event).unwrap_or(from);
        states[i] = to;
        planned.push(PlannedTransition { task: i, from, to, reason });
    }
    planned
}

/// Evaluates the trigger rule of task `task`, whose dependencies are all
/// terminal (`state_of` gives their states): [`TaskEvent::DependenciesMet`]
/// or [`TaskEvent::Skip`] with the reason. `contexts` is read only when the
/// rule reads the context (see [`advance`]).
pub fn decide(
    wf: &Workflow,
    task: usize,
    state_of: &dyn Fn(usize) -> TaskState,
    contexts: Option<ContextSource<'_>>,
) -> (TaskEvent, Option<String>) {
    let deps = wf.dependency_indices(task);
    let outcomes: Vec<DependencyOutcome<'_>> =
        deps.iter().map(|&d| DependencyOutcome { task: wf.tasks()[d].id(), state: state_of(d) }).collect();
    let rule = wf.tasks()[task].trigger_rule();
    let ctx = if rule.needs_context() {
        let empty = Context::new();
        let no_outputs = HashMap::new();
        let src = contexts.unwrap_or(ContextSource { input: &empty, outputs: &no_outputs });
        input_from(wf, task, state_of, src)
    } else {
        Context::new()
    };
    match rule.evaluate(&outcomes, &ctx) {
        TriggerDecision::Run => (TaskEvent::DependenciesMet, None),
        TriggerDecision::Skip(r) => (TaskEvent::Skip, Some(r)),
    }
}

/// The states of a new execution: every task NotStarted, then roots
/// evaluated against the input (usually Ready), with any cascade.
pub fn initial_states(wf: &Workflow, input: &Context) -> (Vec<TaskState>, Vec<PlannedTransition>) {
    let mut states = vec![TaskState::NotStarted; wf.len()];
    let outputs = HashMap::new();
    let planned = advance(wf, &mut states, Some(ContextSource { input, outputs: &outputs }));
    (states, planned)
}

/// Indices of the completed dependencies whose outputs make up the input of
/// task `task`, in topological order.
pub fn input_sources(wf: &Workflow, task: usize, states: &[TaskState]) -> Vec<usize> {
    sources_of(wf, task, &|d| states[d])
}

/// [`input_sources`], with the states given by a function (of the
/// dependencies only).
pub fn sources_of(wf: &Workflow, task: usize, state_of: &dyn Fn(usize) -> TaskState) -> Vec<usize> {
    wf.dependency_indices(task).iter().copied().filter(|&d| state_of(d) == TaskState::Completed).collect()
}

/// The input context of task `task`: the merge of its completed
/// dependencies' outputs in topological order (later wins), or the
/// execution input when it has no completed dependency. See
/// [`crate::context`].
pub fn input_for(wf: &Workflow, task: usize, states: &[TaskState], src: ContextSource<'_>) -> Context {
    input_from(wf, task, &|d| states[d], src)
}

/// [`input_for`], with the states given by a function (of the dependencies
/// only).
pub fn input_from(
    wf: &Workflow,
    task: usize,
    state_of: &dyn Fn(usize) -> TaskState,
    src: ContextSource<'_>,
) -> Context {
    let sources = sources_of(wf, task, state_of);
    if sources.is_empty() {
        return src.input.clone();
    }
    Context::merge_outputs(sources.iter().filter_map(|d| src.outputs.get(d)))
}

/// The final state of an execution whose tasks are all terminal: Failed if
/// any task failed or was abandoned, Completed otherwise. `None` while a
/// task is not terminal.
pub fn outcome(states: &[TaskState]) -> Option<WorkflowState> {
    if !states.iter().all(TaskState::is_terminal) {
        return None;
    }
    if states.iter().any(|s| matches!(s, TaskState::Failed | TaskState::Abandoned)) {
        Some(WorkflowState::Failed)
    } else {
        Some(WorkflowState::Completed)
    }
}

/// The completed tasks none of whose dependents completed: the outputs that
/// make up the final context, in topological order.
pub fn frontier(wf: &Workflow, states: &[TaskState]) -> Vec<usize> {
    (0..wf.len())
        .filter(|&i| states[i] == TaskState::Completed)
        .filter(|&i| !wf.dependent_indices(i).iter().any(|&d| states[d] == TaskState::Completed))
        .collect()
}

/// The final context of an execution: the merge, in topological order, of
/// the outputs of the [`frontier`] (so a key removed downstream stays
/// removed); the input context when no task completed.
pub fn final_context(wf: &Workflow, states: &[TaskState], src: ContextSource<'_>) -> Context {
    let f = frontier(wf, states);
    if f.is_empty() {
        return src.input.clone();
    }
    Context::merge_outputs(f.iter().filter_map(|i| src.outputs.get(i)))
}

/// One task row of a new execution.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Row id.
    pub id: TaskExecutionId,
    /// Task id within the workflow.
    pub name: String,
    /// Initial state (Ready, NotStarted or Skipped).
    pub state: TaskState,
    /// Why it was skipped, if it was.
    pub reason: Option<String>,
}

/// An execution to create, with all its task rows.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Execution id.
    pub id: ExecutionId,
    /// Workflow name and version.
    pub workflow: WorkflowRef,
    /// The workflow's version label, if it has one.
    pub label: Option<String>,
    /// Input context.
    pub input: Context,
    /// Task rows, in the workflow's topological order.
    pub tasks: Vec<NewTask>,
    /// Set when every task is already terminal at creation (all skipped).
    pub finished: Option<WorkflowState>,
    /// Where the execution came from (`api`, `cron:<schedule>`, ...).
    pub origin: String,
    /// Creation time.
    pub created_at: Timestamp,
}

impl NewExecution {
    /// Plans a new execution of `wf`: roots evaluated against `input`.
    pub fn plan(wf: &Workflow, input: Context, origin: impl Into<String>, now: Timestamp) -> Self {
        let (states, planned) = initial_states(wf, &input);
        let mut reasons: HashMap<usize, String> = HashMap::new();
        for p in planned {
            if let Some(r) = p.reason {
                reasons.insert(p.task, r);
            }
        }
        let tasks = wf
            .tasks()
            .iter()
            .enumerate()
            .map(|(i, t)| NewTask {
                id: TaskExecutionId::new(),
                name: t.id().to_owned(),
                state: states[i],
                reason: reasons.remove(&i),
            })
            .collect();
        Self {
            id: ExecutionId::new(),
            workflow: wf.reference(),
            label: wf.label().map(str::to_owned),
            input,
            tasks,
            finished: outcome(&states),
            origin: origin.into(),
            created_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskError, task_fn};
    use crate::trigger::{TriggerRule, ValueCondition};
    use crate::workflow::TaskSpec;
    use TaskState::*;

    fn t(id: &str) -> TaskSpec {
        TaskSpec::new(id, task_fn(|c: Context| async move { Ok::<_, TaskError>(c) }))
    }

    fn diamond() -> Workflow {
        Workflow::builder("d")
            .task(t("a"))
            .task(t("b").depends_on(["a"]))
            .task(t("c").depends_on(["a"]))
            .task(t("d").depends_on(["b", "c"]))
            .build()
            .unwrap()
    }

    #[test]
    fn roots_start_ready() {
        let (states, planned) = initial_states(&diamond(), &Context::new());
        assert_eq!(states, [Ready, NotStarted, NotStarted, NotStarted]);
        assert_eq!(planned.len(), 1);
    }

    #[test]
    fn failure_skips_downstream_in_one_pass() {
        let wf = diamond();
        let mut s = vec![Failed, NotStarted, NotStarted, NotStarted];
        let p = advance(&wf, &mut s, None);
        assert_eq!(s, [Failed, Skipped, Skipped, Skipped]);
        assert_eq!(p.len(), 3);
        assert!(p[0].reason.as_deref().unwrap().contains("upstream failed"));
        assert_eq!(outcome(&s), Some(WorkflowState::Failed));
    }

    #[test]
    fn fan_in_waits_for_all() {
        let wf = diamond();
        let mut s = vec![Completed, Completed, Running, NotStarted];
        assert!(advance(&wf, &mut s, None).is_empty());
        s[2] = Completed;
        advance(&wf, &mut s, None);
        assert_eq!(s[3], Ready);
        assert_eq!(outcome(&s), None);
    }

    #[test]
    fn context_rules_see_merged_input() {
        let wf = Workflow::builder("c")
            .task(t("check"))
            .task(t("alert").depends_on(["check"]).trigger(TriggerRule::ContextValue {
                key: "level".into(),
                condition: ValueCondition::GreaterThan(3.into()),
            }))
            .build()
            .unwrap();
        let mut out = Context::new();
        out.set("level", 5).unwrap();
        let outputs = HashMap::from([(0usize, out)]);
        let input = Context::new();
        let mut s = vec![Completed, NotStarted];
        advance(&wf, &mut s, Some(ContextSource { input: &input, outputs: &outputs }));
        assert_eq!(s[1], Ready);
    }

    #[test]
    fn root_trigger_rules_use_the_input() {
        let wf = Workflow::builder("r")
            .task(
                t("only_if_flag")
                    .trigger(TriggerRule::ContextValue { key: "flag".into(), condition: ValueCondition::Exists }),
            )
            .build()
            .unwrap();
        let (s, _) = initial_states(&wf, &Context::new());
        assert_eq!(s, [Skipped]);
        assert_eq!(outcome(&s), Some(WorkflowState::Completed));
    }

    #[test]
    fn inputs_and_final_context() {
        let wf = diamond();
        let ctx = |k: &str, v: i32| {
            let mut c = Context::new();
            c.set(k, v).unwrap();
            c.set("shared", v).unwrap();
            c
        };
        let outputs = HashMap::from([(0, ctx("a", 1)), (1, ctx("b", 2)), (2, ctx("c", 3))]);
        let input = ctx("in", 0);
        let src = ContextSource { input: &input, outputs: &outputs };
        let s = [Completed, Completed, Completed, NotStarted];
        let d_in = input_for(&wf, 3, &s, src);
        assert_eq!(d_in.get_as::<i32>("shared").unwrap(), 3, "c comes after b in topological order");
        assert!(d_in.contains_key("b") && d_in.contains_key("c"));
        assert_eq!(input_for(&wf, 0, &s, src), input);
        assert_eq!(frontier(&wf, &s), [1, 2]);
        let s2 = [Completed, Completed, Skipped, Skipped];
        assert_eq!(frontier(&wf, &s2), [1]);
        assert_eq!(final_context(&wf, &[Failed, Skipped, Skipped, Skipped], src), input);
    }
}
