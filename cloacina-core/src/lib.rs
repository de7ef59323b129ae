//! # cloacina-core
//!
//! The pure domain of Cloacina, an embedded, database-backed workflow
//! orchestration library: contexts, tasks, workflows (validated DAGs),
//! task and workflow state machines, retry / trigger / recovery policies,
//! the tenant-name rule, and the *ports* through which storage and time are
//! reached. It does no I/O and depends on no database crate and no async
//! runtime; applications normally use it through `cloacina-runner`, which
//! re-exports what they need.
//!
//! ```
//! use cloacina_core::{task_fn, Context, TaskError, TaskSpec, Workflow};
//!
//! let extract = task_fn(|mut ctx: Context| async move {
//!     ctx.insert("rows", vec![1, 2, 3])?;
//!     Ok::<_, TaskError>(ctx)
//! });
//! let load = task_fn(|ctx: Context| async move {
//!     let rows: Vec<i32> = ctx.get_as("rows")?;
//!     assert_eq!(rows.len(), 3);
//!     Ok::<_, TaskError>(ctx)
//! });
//! let wf = Workflow::builder("etl")
//!     .task(TaskSpec::new("extract", extract))
//!     .task(TaskSpec::new("load", load).depends_on(["extract"]))
//!     .build()?;
//! assert_eq!(wf.topological_order(), ["extract", "load"]);
//! # Ok::<(), cloacina_core::WorkflowError>(())
//! ```
//!
//! ## Modules
//! * [`context`] — the JSON key/value data passed between tasks, and the merge rule.
//! * [`task`] — the [`Task`] trait, [`TaskError`] (which carries the retry decision), closures as tasks.
//! * [`workflow`] — [`Workflow`] and its builder, validation, topology, version fingerprint.
//! * [`state`] — the task and workflow state machines.
//! * [`retry`], [`trigger`], [`recovery`] — policies as values.
//! * [`plan`] and [`step`] — the pure transaction logic every storage adapter shares.
//! * [`ports`] — the storage traits.
//! * [`tenant`] — the tenant-name rule; [`clock`] — time and randomness as inputs;
//!   [`redact`] — URLs without their passwords.

pub mod clock;
pub mod context;
pub mod ids;
pub mod migrate;
pub mod plan;
pub mod ports;
pub mod recovery;
pub mod redact;
pub mod retry;
pub mod schedule;
pub mod state;
pub mod step;
pub mod task;
pub mod tenant;
pub mod trigger;
pub mod workflow;

#[doc(hidden)]
#[path = "macro_support.rs"]
pub mod __macro_support;

pub use clock::{Clock, FixedRandom, ManualClock, RandomSource, SeededRandom, SystemClock};
pub use context::{Context, ContextError, Key};
pub use ids::{ExecutionId, FencingToken, InvalidRunnerId, RunnerId, TaskExecutionId, Timestamp};
pub use recovery::{OwnerStatus, RecoveryDecision, RecoveryPolicy, RecoveryPolicyError};
pub use redact::redact_url;
pub use retry::{
    Backoff, GiveUpReason, RetryCondition, RetryDecision, RetryPolicy, RetryPolicyBuilder, RetryPolicyError,
};
pub use state::{TaskEvent, TaskState, Transition, TransitionError, UnknownState, WorkflowEvent, WorkflowState};
pub use task::{
    BoxError, Cancellation, ErrorClass, Task, TaskError, TaskResultExt, TaskRun, task_fn, task_fn_with_run,
};
pub use tenant::{TenantName, TenantNameError};
pub use trigger::{DependencyOutcome, TriggerDecision, TriggerRule, TriggerRuleError, ValueCondition};
pub use workflow::{BehaviourChanges, TaskSpec, Workflow, WorkflowBuilder, WorkflowError, WorkflowRef, WorkflowSet};
