//! The runner's error type.

use cloacina_core::ports::StorageError;
use cloacina_core::schedule::ScheduleError;
use cloacina_core::{ContextError, ExecutionId, TaskExecutionId, TenantNameError, WorkflowError, WorkflowState};

/// Why a runner call failed. A workflow that *ran* and failed is not an
/// error: [`execute`](crate::DefaultRunner::execute) returns its result
/// with status `Failed`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A builder setting out of range or missing. Nothing is clamped.
    #[error("invalid runner configuration: `{option}` {reason}")]
    InvalidConfig {
        /// The setting.
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A database URL whose scheme this build cannot serve.
    #[error("unsupported database URL `{url}`: {reason}")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
        /// What is supported.
        reason: String,
    },
    /// An invalid tenant name.
    #[error(transparent)]
    InvalidTenant(#[from] TenantNameError),
    /// An invalid workflow definition.
    #[error(transparent)]
    InvalidWorkflow(#[from] WorkflowError),
    /// A workflow name this runner does not know.
    #[error("unknown workflow `{name}`; registered: [{}]", known.join(", "))]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
        /// The names registered on this runner.
        known: Vec<String>,
    },
    /// A second, different workflow under a name already registered. No
    /// longer returned: a runner serves several versions of a name side by
    /// side (see `DefaultRunner::register_workflow`).
    #[deprecated(since = "0.2.0", note = "several versions of a workflow may be registered; this is never returned")]
    #[error(
        "workflow `{name}` is already registered with a different shape (version {existing}, new {new}); \
         register changed workflows under a new name"
    )]
    WorkflowConflict {
        /// The name.
        name: String,
        /// The registered version.
        existing: String,
        /// The version offered.
        new: String,
    },
    /// A workflow version this runner does not register, or of which no
    /// unfinished execution is stored.
    #[error("workflow `{name}` has no version `{version}` {where_}; known: {known:?}")]
    UnknownVersion {
        /// The workflow.
        name: String,
        /// The version (fingerprint or label) asked for.
        version: String,
        /// Where it was looked for.
        where_: &'static str,
        /// The versions there (fingerprints, with labels).
        known: Vec<String>,
    },
    /// An invalid cron schedule or trigger (expression, time zone, policy,
    /// name).
    #[error(transparent)]
    InvalidSchedule(#[from] ScheduleError),
    /// No schedule with this name in this tenant.
    #[error("schedule `{name}` not found")]
    ScheduleNotFound {
        /// The name.
        name: String,
    },
    /// A trigger with this name is already registered on this runner.
    #[error("trigger `{name}` is already registered on this runner")]
    DuplicateTrigger {
        /// The name.
        name: String,
    },
    /// No execution with this id in this tenant.
    #[error("execution {id} not found")]
    ExecutionNotFound {
        /// The id.
        id: ExecutionId,
    },
    /// A cancel, pause or resume of an execution in a state it does not
    /// apply to (resuming a completed execution, pausing a paused one).
    /// Nothing was changed.
    #[error("cannot {action} execution {id}: it is {state}; {allowed}")]
    InvalidState {
        /// The execution.
        id: ExecutionId,
        /// What was asked: `cancel`, `pause` or `resume`.
        action: &'static str,
        /// The state it is in.
        state: WorkflowState,
        /// Which states the call applies to.
        allowed: &'static str,
    },
    /// The runner was shut down.
    #[error("the runner has been shut down")]
    ShutDown,
    /// `wait_timeout` gave up waiting.
    #[error("execution {id} did not finish within {}", humantime_ms(*.waited))]
    WaitTimeout {
        /// The execution.
        id: ExecutionId,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// An input context that cannot be stored (see [`ContextError`]).
    #[error(transparent)]
    InvalidContext(#[from] ContextError),
    /// An input context larger than `context_size_limit`; nothing was
    /// stored.
    #[error(
        "the input context is {size} bytes of JSON, more than context_size_limit ({limit} bytes); nothing was stored"
    )]
    InputTooLarge {
        /// Its serialized size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A task of the execution finished, but storage refuses to take its
    /// result (read-only or full database, unreadable rows, a dropped
    /// schema). The runner keeps the result and retries it, and the task
    /// stays leased to it: the execution goes on once storage takes it.
    #[error(
        "execution {execution} cannot finish for now: the result of its task row {task} cannot be written \
         ({problem}); the runner keeps retrying it"
    )]
    ResultNotWritten {
        /// The execution.
        execution: ExecutionId,
        /// The task row whose result is kept.
        task: TaskExecutionId,
        /// What storage said.
        problem: String,
    },
    /// The runner failed and stopped: one of its background loops panicked
    /// or ended. It no longer heartbeats (other runners take its tasks
    /// over); every call returns this error, `shutdown` included.
    #[error("{message}")]
    Fatal {
        /// What happened.
        message: String,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn humantime_ms(d: std::time::Duration) -> String {
    format!("{} ms", d.as_millis())
}

impl RunnerError {
    pub(crate) fn config(option: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig { option, reason: reason.into() }
    }
}

/// Result alias.
pub type Result<T, E = RunnerError> = std::result::Result<T, E>;
