//! What the code `#[task]` and `#[workflow]` (crate `cloacina-macros`)
//! generate calls. Not a public API: its items may change in any release.

pub use std::sync::Arc;
pub use std::time::Duration;

pub use serde_json::Value;

pub use async_trait::async_trait;

pub use crate::context::Context;
pub use crate::retry::RetryPolicy;
pub use crate::task::{Task, TaskError, TaskRun};
pub use crate::trigger::{TriggerRule, ValueCondition};
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

/// A JSON value of a trigger rule, written by the macro from a value it
/// parsed at compile time.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| unreachable!("JSON checked at compile time: `{text}`: {e}"))
}

/// Builds a workflow whose definition the macro validated at compile time
/// with the same [`WorkflowBuilder::build`]; a failure here would be a bug
/// in the macro.
pub fn build(b: WorkflowBuilder) -> Workflow {
    b.build().unwrap_or_else(|e| unreachable!("a workflow checked at compile time failed to build: {e}"))
}
