//! Workflows: validated, immutable DAGs of tasks.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::retry::RetryPolicy;
use crate::task::Task;
use crate::trigger::TriggerRule;

/// Maximum length of a workflow name or task id.
pub const MAX_ID_LEN: usize = 128;

/// Why a workflow could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The workflow name breaks the id rule.
    #[error("invalid workflow name `{name}`: {rule}")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule.
        rule: &'static str,
    },
    /// A version label that breaks the id rule.
    #[error("invalid version label `{label}` of workflow `{workflow}`: {rule}")]
    InvalidLabel {
        /// The workflow.
        workflow: String,
        /// The label.
        label: String,
        /// The rule.
        rule: &'static str,
    },
    /// No task was added.
    #[error("workflow `{workflow}` has no tasks; add at least one")]
    Empty {
        /// The workflow.
        workflow: String,
    },
    /// A task id breaks the id rule.
    #[error("invalid task id `{id}` in workflow `{workflow}`: {rule}")]
    InvalidTaskId {
        /// The workflow.
        workflow: String,
        /// The id.
        id: String,
        /// The rule.
        rule: &'static str,
    },
    /// Two tasks share an id.
    #[error("task id `{id}` is used twice in workflow `{workflow}`")]
    DuplicateTask {
        /// The workflow.
        workflow: String,
        /// The id.
        id: String,
    },
    /// A dependency names no task of the workflow.
    #[error("task `{task}` depends on `{dependency}`, which is not a task of workflow `{workflow}`{}",
        suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    MissingDependency {
        /// The workflow.
        workflow: String,
        /// The task with the dependency.
        task: String,
        /// The missing id.
        dependency: String,
        /// The nearest existing id, if one is close.
        suggestion: Option<String>,
    },
    /// The dependencies form a cycle.
    #[error("workflow `{workflow}` has a dependency cycle: {}", path.join(" -> "))]
    Cycle {
        /// The workflow.
        workflow: String,
        /// The cycle, first id repeated at the end: `a -> b -> a`.
        path: Vec<String>,
    },
    /// A trigger rule names a task that is not one of the task's dependencies.
    #[error("the trigger rule of task `{task}` refers to `{referenced}`, which is not one of its dependencies")]
    TriggerReferencesNonDependency {
        /// The task.
        task: String,
        /// The referenced id.
        referenced: String,
    },
    /// A timeout of zero.
    #[error("task `{task}` has a zero timeout; use a positive duration or none")]
    ZeroTimeout {
        /// The task.
        task: String,
    },
}

const ID_RULE: &str = "ids are 1-128 characters of ASCII letters, digits, `_`, `-` and `.`";

fn id_is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A task as part of a workflow: its id, dependencies, policies and body.
///
/// ```
/// use cloacina_core::{task_fn, Context, RetryPolicy, TaskSpec, TaskError};
/// use std::time::Duration;
/// let spec = TaskSpec::new("load", task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) }))
///     .depends_on(["transform"])
///     .retry(RetryPolicy::none())
///     .timeout(Duration::from_secs(30));
/// assert_eq!(spec.dependencies(), ["transform"]);
/// ```
#[derive(Clone)]
pub struct TaskSpec {
    id: String,
    dependencies: Vec<String>,
    retry: RetryPolicy,
    trigger: TriggerRule,
    timeout: Option<Duration>,
    code: Option<String>,
    body: Arc<dyn Task>,
}

impl TaskSpec {
    /// A task with default policies: no dependencies, the default
    /// [`RetryPolicy`], [`TriggerRule::AllSuccess`], no own timeout (the
    /// runner's default timeout applies).
    pub fn new(id: impl Into<String>, body: Arc<dyn Task>) -> Self {
        Self {
            id: id.into(),
            dependencies: Vec::new(),
            retry: RetryPolicy::default(),
            trigger: TriggerRule::default(),
            timeout: None,
            code: None,
            body,
        }
    }
    /// Adds dependencies.
    pub fn depends_on<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dependencies.extend(deps.into_iter().map(Into::into));
        self
    }
    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Sets the trigger rule.
    pub fn trigger(mut self, rule: TriggerRule) -> Self {
        self.trigger = rule;
        self
    }
    /// Sets a timeout for each attempt; an attempt that runs longer fails
    /// with [`TaskError::Timeout`](crate::TaskError::Timeout) (retryable).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// A fingerprint of the body's code, so two definitions can tell a
    /// changed body from changed policies
    /// ([`Workflow::behaviour_changes`]). `#[task]` sets it from the
    /// function's tokens; a closure has none. It is behaviour, not shape:
    /// it never changes [`Workflow::version`].
    pub fn code_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.code = Some(fingerprint.into());
        self
    }
    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The dependencies, as given.
    pub fn dependencies(&self) -> &[String] {
        &self.dependencies
    }
    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }
    /// The trigger rule.
    pub fn trigger_rule(&self) -> &TriggerRule {
        &self.trigger
    }
    /// The task's own timeout, if any.
    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout
    }
    /// The body's code fingerprint, if it has one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
    /// The body.
    pub fn body(&self) -> &Arc<dyn Task> {
        &self.body
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("id", &self.id)
            .field("dependencies", &self.dependencies)
            .field("retry", &self.retry.to_string())
            .field("trigger", &self.trigger.to_string())
            .field("timeout", &self.timeout)
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

/// A workflow's name and shape version: what an execution was created from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkflowRef {
    /// The workflow name.
    pub name: String,
    /// The shape fingerprint ([`Workflow::version`]).
    pub version: String,
}

impl fmt::Display for WorkflowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Collects tasks; [`build`](Self::build) validates them into a [`Workflow`].
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    name: String,
    label: Option<String>,
    tasks: Vec<TaskSpec>,
}

impl WorkflowBuilder {
    /// A version label of your choosing (`"2026-12-01"`, `"v7"`): stored on
    /// every execution started from this definition, shown in records and
    /// accepted by `migrate_executions`. Labels are for people; what the
    /// rows mean is fixed by the shape ([`Workflow::version`]), so two
    /// definitions with the same shape serve each other's executions
    /// whatever their labels. Same rule as names (1–128 characters of
    /// ASCII letters, digits, `_`, `-`, `.`), checked by `build`.
    pub fn version(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a task.
    pub fn task(mut self, spec: TaskSpec) -> Self {
        self.tasks.push(spec);
        self
    }

    /// Validates the graph. Errors, checked in this order: invalid name,
    /// empty workflow, invalid task id, duplicate id, zero timeout, missing
    /// dependency (with the nearest existing id), trigger rule naming a
    /// non-dependency, cycle (with its path).
    pub fn build(self) -> Result<Workflow, WorkflowError> {
        let wf = self.name;
        if !id_is_valid(&wf) {
            return Err(WorkflowError::InvalidName { name: wf, rule: ID_RULE });
        }
        if let Some(label) = &self.label
            && !id_is_valid(label)
        {
            return Err(WorkflowError::InvalidLabel { workflow: wf, label: label.clone(), rule: ID_RULE });
        }
        if self.tasks.is_empty() {
            return Err(WorkflowError::Empty { workflow: wf });
        }
        let mut index = HashMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if !id_is_valid(&t.id) {
                return Err(WorkflowError::InvalidTaskId { workflow: wf, id: t.id.clone(), rule: ID_RULE });
            }
            if index.insert(t.id.clone(), i).is_some() {
                return Err(WorkflowError::DuplicateTask { workflow: wf, id: t.id.clone() });
            }
            if t.timeout == Some(Duration::ZERO) {
                return Err(WorkflowError::ZeroTimeout { task: t.id.clone() });
            }
        }
        for t in &self.tasks {
            for d in &t.dependencies {
                if !index.contains_key(d) {
                    let suggestion = self
                        .tasks
                        .iter()
                        .map(|o| (strsim::levenshtein(d, &o.id), &o.id))
                        .filter(|(dist, id)| *dist <= (d.len().max(id.len()) / 2).max(2))
                        .min()
                        .map(|(_, id)| id.clone());
                    return Err(WorkflowError::MissingDependency {
                        workflow: wf,
                        task: t.id.clone(),
                        dependency: d.clone(),
                        suggestion,
                    });
                }
            }
            for r in t.trigger.referenced_tasks() {
                if !t.dependencies.iter().any(|d| d == r) {
                    return Err(WorkflowError::TriggerReferencesNonDependency {
                        task: t.id.clone(),
                        referenced: r.to_owned(),
                    });
                }
            }
        }
        let order = topological_order(&self.tasks, &index)
            .map_err(|path| WorkflowError::Cycle { workflow: wf.clone(), path })?;
        // Re-index in topological order.
        let mut slots: Vec<Option<TaskSpec>> = self.tasks.into_iter().map(Some).collect();
        let tasks: Vec<TaskSpec> = order.iter().map(|&i| slots[i].take().expect("each index once")).collect();
        let index: HashMap<String, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
        let deps: Vec<Vec<usize>> = tasks
            .iter()
            .map(|t| {
                let mut v: Vec<usize> = t.dependencies.iter().map(|d| index[d]).collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let needs_context = tasks.iter().any(|t| t.trigger.needs_context());
        let version = fingerprint::shape(&wf, &tasks);
        let legacy_version = fingerprint::first_release(&wf, &tasks);
        let label = self.label;
        Ok(Workflow(Arc::new(Inner {
            name: wf,
            version,
            legacy_version,
            label,
            tasks,
            index,
            deps,
            dependents,
            needs_context,
        })))
    }
}

/// Kahn's algorithm with ties broken by id, so the order is deterministic.
/// On a cycle, returns its path.
fn topological_order(tasks: &[TaskSpec], index: &HashMap<String, usize>) -> Result<Vec<usize>, Vec<String>> {
    let n = tasks.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, t) in tasks.iter().enumerate() {
        let unique: BTreeSet<usize> = t.dependencies.iter().map(|d| index[d]).collect();
        indegree[i] = unique.len();
        for d in unique {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<(&str, usize)> =
        (0..n).filter(|&i| indegree[i] == 0).map(|i| (tasks[i].id.as_str(), i)).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert((tasks[d].id.as_str(), d));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every remaining node is on or behind a cycle; walk dependencies from
    // the smallest remaining id until a node repeats.
    let start = (0..n).filter(|&i| indegree[i] > 0).min_by_key(|&i| tasks[i].id.as_str()).unwrap_or(0);
    let mut path = vec![start];
    let mut seen = HashMap::from([(start, 0usize)]);
    let mut cur = start;
    loop {
        let next = tasks[cur]
            .dependencies
            .iter()
            .map(|d| index[d])
            .filter(|&d| indegree[d] > 0)
            .min_by_key(|&d| tasks[d].id.as_str())
            .unwrap_or(cur);
        if let Some(&pos) = seen.get(&next) {
            // path[pos..] is the cycle, walked along dependency edges; report
            // it in execution direction (dependency -> dependent).
            let mut cycle: Vec<String> = path[pos..].iter().rev().map(|&i| tasks[i].id.clone()).collect();
            // Start at the smallest id, so the report is deterministic.
            let first = (0..cycle.len()).min_by_key(|&i| cycle[i].as_str()).unwrap_or(0);
            cycle.rotate_left(first);
            cycle.push(cycle[0].clone());
            return Err(cycle);
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

struct Inner {
    name: String,
    version: String,
    legacy_version: String,
    label: Option<String>,
    /// In topological order.
    tasks: Vec<TaskSpec>,
    index: HashMap<String, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    needs_context: bool,
}

/// A validated, immutable DAG of tasks; cheap to clone.
///
/// Tasks are kept in a deterministic topological order (ties broken by
/// id); a task's *index* is its position in that order.
///
/// ```
/// use cloacina_core::{task_fn, Context, TaskError, TaskSpec, Workflow};
/// let noop = || task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) });
/// let wf = Workflow::builder("etl")
///     .task(TaskSpec::new("extract", noop()))
///     .task(TaskSpec::new("transform", noop()).depends_on(["extract"]))
///     .task(TaskSpec::new("load", noop()).depends_on(["transform"]))
///     .build()?;
/// assert_eq!(wf.topological_order(), ["extract", "transform", "load"]);
/// assert_eq!(wf.roots(), ["extract"]);
/// assert_eq!(wf.dependents_of("extract"), ["transform"]);
/// assert_eq!(wf.version().len(), 16);
/// # Ok::<(), cloacina_core::WorkflowError>(())
/// ```
#[derive(Clone)]
pub struct Workflow(Arc<Inner>);

impl Workflow {
    /// Starts a workflow named `name` (1–128 characters of ASCII letters,
    /// digits, `_`, `-`, `.`).
    pub fn builder(name: impl Into<String>) -> WorkflowBuilder {
        WorkflowBuilder { name: name.into(), label: None, tasks: Vec::new() }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The *shape* fingerprint (16 hex digits): the name, the task ids and
    /// their dependencies — what stored rows mean. Behaviour (bodies,
    /// retry policies, trigger rules, timeouts) is not part of it, so a
    /// runner registering a changed behaviour under the same shape serves
    /// every unfinished execution of it. Equal shapes have equal versions
    /// in every process and release; it is recorded on each execution.
    pub fn version(&self) -> &str {
        &self.0.version
    }

    /// The fingerprint the first release gave this definition (it also
    /// covered retry policies, trigger rules and timeouts). A runner
    /// serves executions stored under it too, so upgrading the library
    /// strands nothing whose definition did not change.
    pub fn legacy_version(&self) -> &str {
        &self.0.legacy_version
    }

    /// The version label given with [`WorkflowBuilder::version`], if any.
    pub fn label(&self) -> Option<&str> {
        self.0.label.as_deref()
    }

    /// Name and version.
    pub fn reference(&self) -> WorkflowRef {
        WorkflowRef { name: self.0.name.clone(), version: self.0.version.clone() }
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.0.tasks.len()
    }

    /// Always false: a workflow has at least one task.
    pub fn is_empty(&self) -> bool {
        self.0.tasks.is_empty()
    }

    /// Tasks in topological order.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.0.tasks
    }

    /// Task ids in topological order.
    pub fn topological_order(&self) -> Vec<&str> {
        self.0.tasks.iter().map(|t| t.id.as_str()).collect()
    }

    /// The index of a task id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.0.index.get(id).copied()
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Option<&TaskSpec> {
        self.index_of(id).map(|i| &self.0.tasks[i])
    }

    /// Indices of a task's dependencies, in topological order.
    pub fn dependency_indices(&self, index: usize) -> &[usize] {
        &self.0.deps[index]
    }

    /// Indices of a task's dependents, in topological order.
    pub fn dependent_indices(&self, index: usize) -> &[usize] {
        &self.0.dependents[index]
    }

    /// Ids of the tasks without dependencies.
    pub fn roots(&self) -> Vec<&str> {
        (0..self.len()).filter(|&i| self.0.deps[i].is_empty()).map(|i| self.0.tasks[i].id.as_str()).collect()
    }

    /// Ids of the tasks that depend directly on `id` (empty if unknown).
    pub fn dependents_of(&self, id: &str) -> Vec<&str> {
        self.index_of(id)
            .map(|i| self.0.dependents[i].iter().map(|&d| self.0.tasks[d].id.as_str()).collect())
            .unwrap_or_default()
    }

    /// Whether any trigger rule reads the context.
    pub fn needs_context(&self) -> bool {
        self.0.needs_context
    }

    /// What changed in behaviour from `earlier`, task by task: bodies (by
    /// [code fingerprint](TaskSpec::code_fingerprint)) and policies (retry
    /// policy, trigger rule, timeout). Tasks only one of the two has are
    /// left out; compare [`version`](Self::version) for the shape.
    ///
    /// ```
    /// use cloacina_core::{task_fn, Context, RetryPolicy, TaskError, TaskSpec, Workflow};
    /// let noop = || task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) });
    /// let v1 = Workflow::builder("etl")
    ///     .task(TaskSpec::new("extract", noop()).code_fingerprint("a1"))
    ///     .task(TaskSpec::new("load", noop()).code_fingerprint("b1").depends_on(["extract"]))
    ///     .build()?;
    /// let v1_1 = Workflow::builder("etl")
    ///     .task(TaskSpec::new("extract", noop()).code_fingerprint("a2"))
    ///     .task(TaskSpec::new("load", noop()).code_fingerprint("b1").depends_on(["extract"]).retry(RetryPolicy::none()))
    ///     .build()?;
    /// let changes = v1_1.behaviour_changes(&v1);
    /// assert_eq!(changes.bodies, ["extract"]);
    /// assert_eq!(changes.policies, ["load"]);
    /// assert!(changes.unknown_bodies.is_empty());
    /// # Ok::<(), cloacina_core::WorkflowError>(())
    /// ```
    pub fn behaviour_changes(&self, earlier: &Workflow) -> BehaviourChanges {
        let mut out = BehaviourChanges::default();
        for t in self.tasks() {
            let Some(old) = earlier.task(t.id()) else { continue };
            match (t.code(), old.code()) {
                (Some(a), Some(b)) if a != b => out.bodies.push(t.id.clone()),
                (Some(_), Some(_)) => {}
                _ => out.unknown_bodies.push(t.id.clone()),
            }
            if t.retry != old.retry || t.trigger != old.trigger || t.timeout != old.timeout {
                out.policies.push(t.id.clone());
            }
        }
        out
    }
}

/// How two definitions of a workflow differ in behaviour
/// ([`Workflow::behaviour_changes`]); task ids in topological order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BehaviourChanges {
    /// Tasks whose body code changed.
    pub bodies: Vec<String>,
    /// Tasks whose retry policy, trigger rule or timeout changed.
    pub policies: Vec<String>,
    /// Tasks of which one definition or both have no code fingerprint (a
    /// closure), so a body change cannot be told.
    pub unknown_bodies: Vec<String>,
}

impl BehaviourChanges {
    /// Whether nothing is known to have changed.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty() && self.policies.is_empty()
    }
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.0.name)
            .field("version", &self.0.version)
            .field("label", &self.0.label)
            .field("tasks", &self.0.tasks)
            .finish()
    }
}

mod fingerprint;
mod set;

pub use set::WorkflowSet;

#[cfg(test)]
mod tests;
