//! Names the generated code must not trip over: tasks called `run`,
//! `input`, `ctx` or `r#type`, a `Box` of the user's in scope, generic
//! state types, sub-millisecond timeouts, trigger rules with negative
//! numbers and ids or keys that are not identifiers, `#[cfg]` on a
//! standalone task, another crate's `task` attribute left alone.

use std::collections::HashMap;
use std::time::Duration;

use cloacina_runner::{Context, TaskError, TriggerRule, ValueCondition, workflow};

/// Not `std`'s box.
#[allow(dead_code)]
pub struct Box(u8);

/// Stands for another crate's `task` attribute (an executor's).
pub mod executor {
    pub use core::prelude::v1::test as task;
}

#[workflow(name = "hygiene")]
mod names {
    use super::*;

    #[task(id = "first-step")]
    async fn run(ctx: &mut Context, counts: &HashMap<String, u32>) -> Result<(), TaskError> {
        ctx.set("counts", counts.len())?;
        Ok(())
    }

    #[task(depends_on = ["first-step"], timeout = "1500us")]
    async fn input(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    #[task(depends_on = [input], trigger = context_value(level, greater_than -1))]
    async fn ctx(ctx: Context) -> Result<Context, TaskError> {
        Ok(ctx)
    }

    #[task(depends_on = ["first-step", ctx],
           trigger = all(task_success("first-step"), context_value("a, b", equals "x\"y")))]
    async fn r#type(ctx: &mut Context) -> Result<(), TaskError> {
        let _ = ctx;
        Ok(())
    }

    /// Not a task: `executor::task` is another crate's attribute.
    #[cfg(any())]
    #[executor::task]
    fn not_a_task() {}
}

#[cfg(any())]
#[cloacina_runner::task]
async fn never_built(ctx: &mut Context) -> Result<(), TaskError> {
    let _ = ctx;
    Ok(())
}

fn main() {
    let wf = names::workflow(HashMap::from([("a".to_owned(), 1)]));
    assert_eq!(names::WORKFLOW_NAME, "hygiene");
    assert_eq!(wf.topological_order(), ["first-step", "input", "ctx", "type"]);
    assert_eq!(wf.task("input").unwrap().timeout_duration(), Some(Duration::from_micros(1500)));
    assert_eq!(
        wf.task("ctx").unwrap().trigger_rule(),
        &TriggerRule::ContextValue { key: "level".into(), condition: ValueCondition::GreaterThan((-1).into()) }
    );
    assert_eq!(
        wf.task("type").unwrap().trigger_rule(),
        &TriggerRule::All(vec![
            TriggerRule::TaskSuccess("first-step".into()),
            TriggerRule::ContextValue { key: "a, b".into(), condition: ValueCondition::Equals("x\"y".into()) },
        ])
    );
    let _ = Box(1);
}
