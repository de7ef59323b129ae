//! Every signature a task may have, run: the context by reference or by
//! value, `&TaskRun`, shared state, errors that convert into `TaskError`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cloacina_runner::{Cancellation, Context, ExecutionId, Key, Task, TaskError, TaskRun, Workflow, task, workflow};

pub struct Counter {
    calls: AtomicU32,
}

/// An application error that converts into a task error.
pub struct NotReady;

impl From<NotReady> for TaskError {
    fn from(_: NotReady) -> Self {
        TaskError::transient("not ready")
    }
}

pub const SEEN: Key<u32> = Key::new("seen");

#[workflow(name = "signatures", version = "v1", crate = ::cloacina_runner)]
mod sigs {
    use super::*;

    /// Doc comments and other attributes stay on the function.
    #[task]
    #[allow(clippy::unused_async)]
    pub async fn by_ref(ctx: &mut Context) -> Result<(), TaskError> {
        ctx.set("by_ref", true)?;
        Ok(())
    }

    #[task(depends_on = [by_ref])]
    pub async fn by_value(mut ctx: Context) -> Result<Context, TaskError> {
        ctx.set("by_value", true)?;
        Ok(ctx)
    }

    #[task(depends_on = [by_value])]
    pub async fn with_run(ctx: &mut Context, run: &TaskRun) -> Result<(), TaskError> {
        ctx.set("attempt", run.attempt)?;
        Ok(())
    }

    #[task(depends_on = [with_run])]
    pub async fn with_state(ctx: &mut Context, counter: &Counter, run: &TaskRun) -> Result<(), TaskError> {
        let n = counter.calls.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.set(SEEN, n)?;
        ctx.set("state_attempt", run.attempt)?;
        Ok(())
    }

    #[task(depends_on = [with_state])]
    pub async fn own_error(ctx: &mut Context, counter: &Counter) -> Result<(), NotReady> {
        if counter.calls.load(Ordering::SeqCst) == 0 {
            return Err(NotReady);
        }
        let _ = ctx;
        Ok(())
    }

    /// Not a task: left as it is.
    pub fn helper() -> u32 {
        7
    }
}

#[task(depends_on = [elsewhere])]
async fn standalone(ctx: &mut Context, counter: &Counter) -> Result<(), TaskError> {
    counter.calls.fetch_add(10, Ordering::SeqCst);
    ctx.set("standalone", true)?;
    Ok(())
}

fn run(attempt: u32) -> TaskRun {
    TaskRun { execution_id: ExecutionId::new(), task_id: "t".into(), attempt, cancellation: Cancellation::new() }
}

fn main() {
    let counter = Arc::new(Counter { calls: AtomicU32::new(0) });
    let wf = sigs::workflow(counter.clone());
    assert_eq!(wf.name(), "signatures");
    assert_eq!(wf.label(), Some("v1"));
    assert_eq!(sigs::helper(), 7);

    // Run each task body in topological order, as the runner would.
    let mut ctx = Context::new();
    for spec in wf.tasks() {
        futures::executor::block_on(spec.body().execute(&mut ctx, &run(2))).unwrap_or_else(|e| panic!("{}: {e}", spec.id()));
    }
    assert_eq!(ctx.get("by_ref"), Some(&true.into()));
    assert_eq!(ctx.get("by_value"), Some(&true.into()));
    assert_eq!(ctx.get_as::<u32>("attempt").unwrap(), 2);
    assert_eq!(ctx.get(SEEN).unwrap(), 1, "the state given to workflow() is the one the tasks see");
    assert_eq!(ctx.get_as::<u32>("state_attempt").unwrap(), 2);
    assert_eq!(counter.calls.load(Ordering::SeqCst), 1);

    // An error of the application's type arrives as the TaskError it converts to.
    let fresh = sigs::workflow(Counter { calls: AtomicU32::new(0) });
    let err = futures::executor::block_on(fresh.task("own_error").unwrap().body().execute(&mut Context::new(), &run(1)))
        .unwrap_err();
    assert!(matches!(err, TaskError::Transient { .. }), "{err:?}");

    // The standalone form: a TaskSpec for the runtime builder, whose checks run at run time.
    let spec = standalone_task(counter.clone());
    assert_eq!(spec.id(), "standalone");
    assert_eq!(spec.dependencies(), ["elsewhere"]);
    let missing = Workflow::builder("dynamic").task(standalone_task(counter.clone())).build().unwrap_err();
    assert!(missing.to_string().contains("depends on `elsewhere`"), "{missing}");
    let mut ctx = Context::new();
    futures::executor::block_on(spec.body().execute(&mut ctx, &run(1))).unwrap();
    assert_eq!(counter.calls.load(Ordering::SeqCst), 11);
    assert!(ctx.contains_key("standalone"));
    let _: Arc<dyn Task> = spec.body().clone();
}
