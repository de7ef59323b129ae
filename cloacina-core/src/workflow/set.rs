//! The workflows a runner serves: several versions per name, one of them
//! current.

use std::collections::HashMap;

use super::{Workflow, WorkflowRef};

/// The workflows a runner knows, by name and version.
///
/// A name may have several versions (shapes) registered side by side, as
/// during a rolling deploy: each serves the executions stored with its
/// version. The *current* version of a name — the one new executions,
/// schedules and triggers use — is the one inserted last. Each workflow is
/// also found under its first-release fingerprint
/// ([`Workflow::legacy_version`]).
///
/// ```
/// use cloacina_core::{task_fn, Context, TaskError, TaskSpec, Workflow, WorkflowSet};
/// let noop = || task_fn(|ctx: Context| async move { Ok::<_, TaskError>(ctx) });
/// let v1 = Workflow::builder("etl").task(TaskSpec::new("a", noop())).build()?;
/// let v2 = Workflow::builder("etl").version("2").task(TaskSpec::new("b", noop())).build()?;
/// let set: WorkflowSet = [v1.clone(), v2.clone()].into_iter().collect();
/// assert_eq!(set.by_name("etl").unwrap().version(), v2.version()); // inserted last
/// assert!(set.get(&v1.reference()).is_some()); // v1 executions are still served
/// # Ok::<(), cloacina_core::WorkflowError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkflowSet {
    by_ref: HashMap<WorkflowRef, Workflow>,
    current: HashMap<String, WorkflowRef>,
}

impl WorkflowSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a workflow, or replaces the one of the same name and shape
    /// (new bodies and policies); either way it becomes its name's current
    /// version. Returns the workflow it replaced.
    pub fn insert(&mut self, wf: Workflow) -> Option<Workflow> {
        let r = wf.reference();
        // Every reference served by this shape so far (an earlier
        // definition's first-release fingerprint included) is served by the
        // new definition from now on.
        for v in self.by_ref.values_mut().filter(|v| v.name() == wf.name() && v.version() == wf.version()) {
            *v = wf.clone();
        }
        let legacy = WorkflowRef { name: wf.name().to_owned(), version: wf.legacy_version().to_owned() };
        if legacy != r {
            self.by_ref.insert(legacy, wf.clone());
        }
        self.current.insert(r.name.clone(), r.clone());
        self.by_ref.insert(r, wf)
    }

    /// The current version of `name`: the one inserted last.
    pub fn by_name(&self, name: &str) -> Option<&Workflow> {
        self.current.get(name).and_then(|r| self.by_ref.get(r))
    }

    /// Every version of `name`, the current one first.
    pub fn versions(&self, name: &str) -> Vec<&Workflow> {
        let current = self.current.get(name);
        let mut v: Vec<&Workflow> =
            self.by_ref.iter().filter(|(r, w)| r.name == name && r.version == w.version()).map(|(_, w)| w).collect();
        v.sort_by_key(|w| (Some(&w.reference()) != current, w.version().to_owned()));
        v
    }

    /// The workflow that serves executions stored with this name and
    /// version (its shape, or its first-release fingerprint).
    pub fn get(&self, r: &WorkflowRef) -> Option<&Workflow> {
        self.by_ref.get(r)
    }

    /// Every reference served, sorted: each workflow's, and each one's
    /// first-release fingerprint.
    pub fn refs(&self) -> Vec<WorkflowRef> {
        let mut v: Vec<WorkflowRef> = self.by_ref.keys().cloned().collect();
        v.sort();
        v
    }

    /// Every reference served with the workflow that serves it.
    pub fn entries(&self) -> impl Iterator<Item = (&WorkflowRef, &Workflow)> {
        self.by_ref.iter()
    }

    /// Every workflow (each version once).
    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.by_ref.iter().filter(|(r, w)| r.version == w.version()).map(|(_, w)| w)
    }

    /// Number of workflows (each version once).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.by_ref.is_empty()
    }
}

impl FromIterator<Workflow> for WorkflowSet {
    fn from_iter<T: IntoIterator<Item = Workflow>>(iter: T) -> Self {
        let mut s = Self::new();
        iter.into_iter().for_each(|w| {
            s.insert(w);
        });
        s
    }
}
