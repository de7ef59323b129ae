//! What the code `#[task]` and `#[workflow]` (crate `cloacina-macros`)
//! generate calls. Not a public API: its items may change in any release.

pub use std::sync::Arc;

pub use async_trait::async_trait;

pub use crate::context::Context;
pub use crate::retry::RetryPolicy;
pub use crate::task::{Task, TaskError, TaskRun};
pub use crate::trigger::TriggerRule;
pub use crate::workflow::{TaskSpec, Workflow, WorkflowBuilder};

/// A task body's error, as the task's error.
pub fn into_task_error<E: Into<TaskError>>(e: E) -> TaskError {
    e.into()
}

/// A retry policy from its text form, which the macro produced from a
/// policy it built and checked at compile time.
pub fn retry(text: &str) -> RetryPolicy {
    text.parse().unwrap_or_else(|e| unreachable!("a retry policy checked at compile time: `{text}`: {e}"))
}

/// A trigger rule from its text form, checked at compile time.
pub fn trigger(text: &str) -> TriggerRule {
    text.parse().unwrap_or_else(|e| unreachable!("a trigger rule checked at compile time: `{text}`: {e}"))
}

/// A timeout of `ms` milliseconds.
pub const fn millis(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

/// Builds a workflow whose definition the macro validated at compile time
/// with the same [`WorkflowBuilder::build`]; a failure here would be a bug
/// in the macro.
pub fn build(b: WorkflowBuilder) -> Workflow {
    b.build().unwrap_or_else(|e| unreachable!("a workflow checked at compile time failed to build: {e}"))
}
