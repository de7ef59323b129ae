//! # Cloacina
//!
//! An embedded, database-backed workflow orchestration library. Define
//! tasks and DAG workflows in Rust; run them durably inside your own
//! process with [`DefaultRunner`], on SQLite (one file, no server; the
//! default) or PostgreSQL (one schema per tenant; any number of runner
//! processes share the work through the database).
//!
//! ```no_run
//! use cloacina_runner::{workflow, Context, DefaultRunner, Key, TaskError};
//!
//! const ROWS: Key<Vec<i32>> = Key::new("rows");
//! const LOADED: Key<usize> = Key::new("loaded");
//!
//! #[workflow] // the DAG is checked at compile time
//! mod etl {
//!     use super::*;
//!
//!     #[task(retry = exponential(3, 1s))]
//!     async fn extract(ctx: &mut Context) -> Result<(), TaskError> {
//!         ctx.set(ROWS, vec![1, 2, 3])?;
//!         Ok(())
//!     }
//!
//!     #[task(depends_on = [extract])]
//!     async fn load(ctx: &mut Context) -> Result<(), TaskError> {
//!         let rows = ctx.get(ROWS)?;
//!         ctx.set(LOADED, rows.len())?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runner = DefaultRunner::builder().database_url("sqlite://etl.db").workflow(etl::workflow()).build().await?;
//! let result = runner.execute(etl::WORKFLOW_NAME, Context::new()).await?;
//! assert!(result.is_success());
//! assert_eq!(result.context.get(LOADED)?, 3);
//! runner.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Workflows assembled at run time use [`Workflow::builder`] with
//! [`TaskSpec`]s of closures ([`task_fn`]) or of `#[task]` functions
//! (`#[task] async fn f` adds `f_task()`), validated when `build` runs.
//!
//! ## Guarantees
//!
//! * An accepted execution survives crashes, restarts and deploys: every
//!   state change is one transaction that carries its consequences.
//! * A task body runs **at least once**; it runs again only after its
//!   runner lost its lease (crash, partition, a stall past the lease TTL) —
//!   never because two live runners claimed it.
//! * State transitions are **exactly once**: a task completes once, an
//!   execution is finalized once; a late result from a runner that lost its
//!   lease is discarded (fencing tokens).
//! * Recovery is on by default: a runner starting on an existing tenant
//!   requeues tasks whose runner is gone before `build` returns, and keeps
//!   sweeping every `recovery_interval`. With default settings a crashed
//!   runner's tasks run again within the lease TTL (10 s) plus the sweep
//!   interval (1 s); after a graceful `shutdown`, at once.
//!
//! ## Crate features
//! `sqlite` and `postgres` (both on by default) enable the backends; the
//! URL scheme picks one at run time.

mod backend;
mod config;
mod engine;
mod error;
mod result;
mod runner;
mod schedules;
mod versions;

/// The storage-side cost of reports in this process: reports applied and
/// the task rows their transactions read (for benchmarks and diagnostics).
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
pub use cloacina_postgres::ReportStats;
/// The storage-side cost of reports in this process: reports applied and
/// the task rows their transactions read (for benchmarks and diagnostics).
#[cfg(feature = "sqlite")]
pub use cloacina_sqlite::ReportStats;
pub use config::{
    DatabaseUrl, DefaultRunnerBuilder, MAX_CONCURRENT_TASKS, MAX_CONTEXT_SIZE, MAX_INTERVAL, MAX_POOL_SIZE,
    MAX_TASK_TIMEOUT, RunnerConfig,
};
pub use error::{Result, RunnerError};
pub use result::{EventStream, ExecutionHandle, ExecutionResult, TaskOutcome};
pub use runner::DefaultRunner;

pub use cloacina_core::migrate::{MigrationError, TaskMapping};
pub use cloacina_core::ports::{
    DuplicateTick, EventKind, ExecutionEvent, ExecutionFilter, ExecutionRecord, OpenReport, ScheduleRecord,
    StorageError,
};
pub use cloacina_core::schedule::{CatchUp, CronSchedule, EventPoll, EventTrigger, EventTriggerSpec, ScheduleError};
/// The first release's names of [`EventTrigger`], [`EventPoll`] and
/// [`EventTriggerSpec`], deprecated.
#[allow(deprecated)]
pub use cloacina_core::schedule::{Trigger, TriggerPoll, TriggerSpec};
pub use cloacina_core::{
    Backoff, BehaviourChanges, Cancellation, Context, ContextError, ErrorClass, ExecutionId, Key, RetryCondition,
    RetryPolicy, RetryPolicyError, RunnerId, Task, TaskError, TaskResultExt, TaskRun, TaskSpec, TaskState, TenantName,
    TenantNameError, Timestamp, TriggerRule, ValueCondition, Workflow, WorkflowBuilder, WorkflowError, WorkflowState,
    redact_url, task_fn, task_fn_with_run,
};

/// For implementing [`EventTrigger`] (and [`Task`]) on your own types.
pub use async_trait::async_trait;

/// `#[task]` and `#[workflow]`: tasks from `async fn`s, workflows whose DAG
/// is checked at compile time (see the `cloacina-macros` crate).
pub use cloacina_macros::{task, workflow};

/// What the macros' generated code calls; not a public API.
#[doc(hidden)]
pub use cloacina_core::__macro_support;

/// The pure domain crate, for what is not re-exported above.
pub use cloacina_core as core;

/// The README's code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
