//! # cloacina-macros
//!
//! Attribute macros that define Cloacina tasks and workflows from plain
//! `async fn`s, with the workflow's DAG checked **at compile time**. Use
//! them through `cloacina-runner`, which re-exports them
//! (`cloacina_runner::{task, workflow}`).
//!
//! * [`macro@workflow`] on an inline module turns its `#[task]` functions
//!   into one workflow and adds `pub fn workflow() -> Workflow` (and
//!   `pub const WORKFLOW_NAME`) to the module. Unknown dependencies (with the
//!   nearest task id suggested), cycles (with their path), duplicate or
//!   invalid ids and a zero timeout are compile errors on the offending
//!   token: the macro runs the same `WorkflowBuilder::build` the runtime
//!   uses, so the two cannot disagree.
//! * [`macro@task`] marks a task inside such a module. Outside one it adds
//!   `fn <name>_task() -> TaskSpec` beside the function, for workflows
//!   assembled at run time with `Workflow::builder` (whose checks then run
//!   at run time).
//!
//! **Why an attribute on a module, not a `workflow!` list.** A procedural
//! macro sees only its own input. On a module, one expansion sees every
//! task's attributes — ids, dependencies, trigger rules — so the whole DAG
//! is checked in one place, with nothing remembered between macro
//! invocations (state that incremental compilation and IDEs do not
//! preserve). The task functions stay ordinary functions of the module,
//! callable from unit tests.
//!
//! ```
//! use cloacina_runner::{workflow, Context, Key, TaskError};
//!
//! const ROWS: Key<Vec<u32>> = Key::new("rows");
//! const TOTAL: Key<u32> = Key::new("total");
//!
//! #[workflow(version = "2026-12")]
//! mod etl {
//!     use super::*;
//!
//!     #[task(retry = exponential(3, 100ms), timeout = 30s)]
//!     async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
//!         ctx.set(ROWS, vec![1, 2, 3])?;
//!         Ok(())
//!     }
//!
//!     #[task(depends_on = [extract])]
//!     async fn load(ctx: &mut Context) -> Result<(), TaskError> {
//!         let rows = ctx.get(ROWS)?;
//!         ctx.set(TOTAL, rows.iter().sum::<u32>())?;
//!         Ok(())
//!     }
//! }
//!
//! # fn main() {
//! let wf = etl::workflow();
//! assert_eq!(wf.name(), "etl");
//! assert_eq!(wf.label(), Some("2026-12"));
//! assert_eq!(wf.topological_order(), ["extract", "load"]);
//! assert_eq!(wf.task("extract").unwrap().retry_policy().total_attempts(), 3);
//! # }
//! ```
//!
//! A misspelt dependency does not compile:
//!
//! ```compile_fail
//! use cloacina_runner::{workflow, Context, TaskError};
//! #[workflow]
//! mod etl {
//!     use super::*;
//!     #[task]
//!     async fn extract(ctx: &mut Context) -> Result<(), TaskError> { Ok(()) }
//!     #[task(depends_on = [extrct])] // error: ...which is not a task of workflow `etl`; did you mean `extract`?
//!     async fn load(ctx: &mut Context) -> Result<(), TaskError> { Ok(()) }
//! }
//! # fn main() {}
//! ```

mod attrs;
mod task;
mod workflow;

use proc_macro::TokenStream;
use quote::quote;

/// Makes the `#[task]` functions of an inline module one workflow, checked
/// at compile time.
///
/// ```text
/// #[workflow(name = "etl", version = "v2", state = AppState, crate = ::cloacina_runner)]
/// mod etl { ... }
/// ```
///
/// Every argument is optional:
///
/// | argument | meaning | default |
/// | --- | --- | --- |
/// | `name = "..."` | the workflow's name | the module's name |
/// | `version = "..."` | a version label (`Workflow::label`), for people | none |
/// | `state = Type` | the shared state tasks take as `&Type` | the type the tasks take, if any |
/// | `crate = path` | where the Cloacina crate is | `::cloacina_runner` |
///
/// The module gains `pub fn workflow() -> Workflow` — or
/// `pub fn workflow(state: impl Into<Arc<State>>) -> Workflow` when tasks
/// take shared state, each task then holding a clone of the one `Arc` —
/// and `pub const WORKFLOW_NAME: &str`. Items that are not `#[task]` functions are
/// left as they are.
///
/// Compile errors, on the token at fault: an invalid name, label or task
/// id (1–128 ASCII letters, digits, `_`, `-`, `.`), a duplicate id, an
/// unknown dependency (naming the nearest id), a cycle (with its path), a
/// trigger rule naming a task that is not a dependency, a zero timeout, a
/// module with no tasks, a task under `#[cfg]` (the shape would differ
/// between builds), an item named `workflow` or `WORKFLOW_NAME` (what the
/// macro adds), and every signature error of [`macro@task`].
///
/// Recognised task attributes: `#[task]`, `#[cloacina_runner::task]`,
/// `#[cloacina_macros::task]` and `#[<crate>::task]`; another crate's
/// `task` attribute is left alone.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use cloacina_runner::{workflow, Context, TaskError};
///
/// /// What every task of the workflow may use: a pool, a client, counters.
/// pub struct Shop { orders_seen: AtomicU64 }
///
/// #[workflow(name = "orders")]
/// mod order_flow {
///     use super::*;
///
///     #[task]
///     async fn receive(ctx: &mut Context, shop: &Shop) -> Result<(), TaskError> {
///         shop.orders_seen.fetch_add(1, Ordering::SeqCst);
///         ctx.set("received", true)?;
///         Ok(())
///     }
///
///     #[task(depends_on = [receive], trigger = all_done)]
///     async fn notify(ctx: Context) -> Result<Context, TaskError> {
///         Ok(ctx)
///     }
/// }
///
/// # fn main() {
/// let wf = order_flow::workflow(Shop { orders_seen: AtomicU64::new(0) });
/// assert_eq!(order_flow::WORKFLOW_NAME, "orders");
/// assert_eq!(wf.dependents_of("receive"), ["notify"]);
/// # }
/// ```
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    let module = match syn::parse::<syn::ItemMod>(item) {
        Ok(m) => m,
        Err(e) => {
            return syn::Error::new(e.span(), "#[workflow] goes on a module: `#[workflow] mod etl { ... }`")
                .to_compile_error()
                .into();
        }
    };
    let original = module.clone();
    match workflow::expand(args.into(), module) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(workflow::fallback(original));
            out.into()
        }
    }
}

/// Makes an `async fn` a task.
///
/// ```text
/// #[task(id = "extract", depends_on = [fetch, "clean-up"], retry = exponential(3, 100ms),
///        timeout = 30s, trigger = any(one_failed, task_success(fetch)))]
/// async fn extract(ctx: &mut Context, run: &TaskRun, state: &AppState) -> Result<(), TaskError>
/// ```
///
/// **Signature.** The first parameter is the context: `&mut Context`
/// (return `Result<(), E>`; what the task leaves in the context is its
/// output) or `Context` by value (return `Result<Context, E>`). `E` is
/// `TaskError` or anything `Into<TaskError>`; inside, `?` converts what
/// `TaskError` converts from. After the context a task may take
/// `run: &TaskRun` (attempt number, cancellation signal) and one shared
/// state `&T`, given once when the workflow is built — no clones in the
/// body. A task is not generic and not a method.
///
/// **Arguments**, all optional — the same settings as `TaskSpec`:
///
/// | argument | forms | default |
/// | --- | --- | --- |
/// | `id` | `"extract"` | the function's name |
/// | `depends_on` | `[a, b]`, ids as identifiers or strings (`"clean-up"`) | none |
/// | `retry` | `none`; `exponential(attempts, base)` or `exponential(attempts, base, multiplier)`; `fixed(attempts, delay)`; `linear(attempts, step)`; a policy string (`"total_attempts=4; backoff=fixed(1s); retry_on=transient"`); or a path to a `fn() -> RetryPolicy` | `RetryPolicy::default()` |
/// | `timeout` | `500ms`, `30s`, `5min`, `1h`, or a string (`"1m 30s"`) | the runner's default timeout |
/// | `trigger` | `all_success`, `all_done` (`always`), `one_success`, `one_failed`, `none_failed`, `task_success(id)`, `task_failed(id)`, `task_skipped(id)`, `context_value(key, equals true)`, `all(...)`, `any(...)`, `none(...)`, or the same as a string | `all_success` |
///
/// `attempts` counts every run, the first included. Policies, rules and
/// durations are checked at compile time.
///
/// The task carries a **code fingerprint** — a hash of the function's
/// signature and body tokens, not of its attributes — so two definitions
/// can tell a changed body from changed policies
/// (`Workflow::behaviour_changes`; the runner logs both when a workflow is
/// registered again with the same shape).
///
/// Outside a [`macro@workflow`] module, `#[task]` keeps the function and
/// adds `fn <name>_task() -> TaskSpec` (taking `impl Into<Arc<T>>` when the
/// task takes shared state `&T`); `crate = path` is accepted there too.
///
/// ```
/// use cloacina_runner::{task, Context, TaskError, TaskRun, Workflow};
///
/// #[task(id = "greet", retry = none, timeout = 5s)]
/// async fn hello(ctx: &mut Context, run: &TaskRun) -> Result<(), TaskError> {
///     ctx.set("greeting", format!("hello from attempt {}", run.attempt))?;
///     Ok(())
/// }
///
/// let spec = hello_task();
/// assert_eq!(spec.id(), "greet");
/// assert_eq!(spec.retry_policy().total_attempts(), 1);
/// let wf = Workflow::builder("hello").task(spec).build()?;
/// assert_eq!(wf.roots(), ["greet"]);
/// # Ok::<(), cloacina_runner::WorkflowError>(())
/// ```
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse::<syn::ItemFn>(item) {
        Ok(f) => f,
        Err(e) => {
            return syn::Error::new(e.span(), "#[task] goes on an `async fn`").to_compile_error().into();
        }
    };
    let original = func.clone();
    let expanded = (|| {
        let mut allowed = task::TASK_ARGS.to_vec();
        allowed.push("crate");
        let mut args = attrs::parse_args(args.into(), &allowed)?;
        let krate = match args.iter().position(|a| a.key == "crate") {
            Some(i) => Some(attrs::path(&args.remove(i))?),
            None => None,
        };
        let ms = match krate {
            Some(p) => quote!(#p::__macro_support),
            None => quote!(::cloacina_runner::__macro_support),
        };
        let def = task::analyze(args, func)?;
        Ok::<_, syn::Error>(task::expand_standalone(def, &ms))
    })();
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(quote!(#[allow(dead_code)] #original));
            out.into()
        }
    }
}
