//! `#[workflow(state = T)]` declared explicitly (tasks without state mixed
//! in), and `workflow()` taking either a `T` or an `Arc<T>`.

use std::sync::Arc;

use cloacina_runner::{Cancellation, Context, ExecutionId, TaskError, TaskRun, workflow};

pub struct Config {
    pub greeting: String,
}

#[workflow(name = "declared", state = Config)]
mod declared {
    use super::*;

    #[task]
    async fn plain(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set("plain", true)?;
        Ok(())
    }

    #[task(depends_on = [plain])]
    async fn greet(ctx: &mut Context, config: &Config) -> Result<(), TaskError> {
        ctx.set("greeting", config.greeting.clone())?;
        Ok(())
    }
}

fn main() {
    let by_value = declared::workflow(Config { greeting: "hi".into() });
    let shared = Arc::new(Config { greeting: "hello".into() });
    let by_arc = declared::workflow(shared.clone());
    assert_eq!(by_value.version(), by_arc.version());
    let mut ctx = Context::new();
    for spec in by_arc.tasks() {
        let run = TaskRun { execution_id: ExecutionId::new(), task_id: spec.id().into(), attempt: 1, cancellation: Cancellation::new() };
        futures::executor::block_on(spec.body().execute(&mut ctx, &run)).unwrap();
    }
    assert_eq!(ctx.get_as::<String>("greeting").unwrap(), "hello");
    assert_eq!(Arc::strong_count(&shared), 2, "the workflow holds one clone of the Arc, shared by its tasks");
}
