//! The storage ports: what the runner needs from a database.
//!
//! # Generic or `dyn`?
//!
//! `dyn`. The runner picks its backend at run time from the database URL,
//! so it holds an `Arc<dyn Storage>`; the traits therefore use
//! `async_trait` (boxed futures). A boxed future per storage call is
//! noise next to a database round trip.
//!
//! # Shape
//!
//! Small capability traits, one super-trait [`Storage`] that an adapter
//! implements by implementing each of them:
//!
//! * [`ExecutionStore`] — read executions, tasks, outputs, events.
//! * [`TaskQueue`] — the write path: create executions, claim ready tasks
//!   under a lease, report outcomes — together in one [`Commit`].
//! * [`Liveness`] — runner registration, heartbeats, recovery, release.
//! * [`Control`] — cancel, pause, resume.
//! * [`Notifications`] — wake-ups when work appears or executions end.
//! * [`Schedules`] — cron schedules and trigger firings, each creating its
//!   execution in the same transaction as its deduplication record.
//!
//! Every operation that changes state records an [`ExecutionEvent`] per
//! change in the same transaction, and returns those events so a runner can
//! publish them in-process.
//!
//! Every method takes its batch whole: adapters write a batch in one
//! transaction, which is where the throughput comes from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::context::Context;
use crate::ids::{ExecutionId, FencingToken, RunnerId, TaskExecutionId, Timestamp};
use crate::plan;
use crate::recovery::RecoveryPolicy;
use crate::schedule::CronSchedule;
use crate::state::{TaskState, TransitionError, WorkflowState};
use crate::task::BoxError;
use crate::tenant::TenantNameError;
use crate::workflow::{Workflow, WorkflowRef, WorkflowSet};

/// A storage failure. Backend errors are kept as the `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database could not be reached or the connection broke. Transient.
    #[error("database unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
    /// The database stayed locked by other writers past the retry bound.
    /// Transient.
    #[error("database busy: {message}")]
    Busy {
        /// What failed.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
    /// A stored row could not be read back into the domain.
    #[error("corrupted row in `{table}` (id {id}): column `{column}`: {problem}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: String,
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An entity that does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of entity.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A state change the state machine refuses.
    #[error(transparent)]
    IllegalTransition(#[from] TransitionError),
    /// An invalid tenant name.
    #[error(transparent)]
    InvalidTenant(#[from] TenantNameError),
    /// A database URL that cannot be used (any password is redacted).
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A file-system problem (SQLite), with the path.
    #[error("{message}: {}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        message: String,
        /// The OS error.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The database refused a write because it is read-only or full.
    #[error("database refused the write: {message}")]
    WriteRefused {
        /// What happened.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
    /// Something of this name already exists that this library did not
    /// create (a schema, a role): it is left alone, never taken over.
    #[error("a {kind} named `{name}` already exists and was not created by Cloacina's tenant admin: it is left alone")]
    ForeignObject {
        /// What kind of object (`schema`, `role`).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Something that was to be created exists already.
    #[error("{what} `{id}` already exists")]
    AlreadyExists {
        /// What kind of entity.
        what: &'static str,
        /// Its name or id.
        id: String,
    },
    /// A value that storage cannot accept (e.g. a context over a limit).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// Any other backend error.
    #[error("storage error: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The driver error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StorageError {
    /// An [`InvalidUrl`](Self::InvalidUrl) error; the URL is kept only with
    /// its passwords redacted ([`redact_url`](crate::redact_url)), whatever
    /// its shape.
    pub fn invalid_url(url: &str, reason: impl Into<String>) -> Self {
        StorageError::InvalidUrl { url: crate::redact_url(url), reason: reason.into() }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. } | StorageError::Busy { .. })
    }
}

/// Result alias for storage calls.
pub type StorageResult<T> = Result<T, StorageError>;

/// One task row of a new execution.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Row id.
    pub id: TaskExecutionId,
    /// Task id within the workflow.
    pub name: String,
    /// Initial state (Ready, NotStarted or Skipped).
    pub state: TaskState,
    /// Why it was skipped, if it was.
    pub reason: Option<String>,
}

/// An execution to create, with all its task rows.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Execution id.
    pub id: ExecutionId,
    /// Workflow name and version.
    pub workflow: WorkflowRef,
    /// Input context.
    pub input: Context,
    /// Task rows, in the workflow's topological order.
    pub tasks: Vec<NewTask>,
    /// Set when every task is already terminal at creation (all skipped).
    pub finished: Option<WorkflowState>,
    /// Where the execution came from (`api`, `cron:<schedule>`, ...).
    pub origin: String,
    /// Creation time.
    pub created_at: Timestamp,
}

impl NewExecution {
    /// Plans a new execution of `wf`: roots evaluated against `input`.
    pub fn plan(wf: &Workflow, input: Context, origin: impl Into<String>, now: Timestamp) -> Self {
        let (states, planned) = plan::initial_states(wf, &input);
        let mut reasons: HashMap<usize, String> = HashMap::new();
        for p in planned {
            if let Some(r) = p.reason {
                reasons.insert(p.task, r);
            }
        }
        let tasks = wf
            .tasks()
            .iter()
            .enumerate()
            .map(|(i, t)| NewTask {
                id: TaskExecutionId::new(),
                name: t.id().to_owned(),
                state: states[i],
                reason: reasons.remove(&i),
            })
            .collect();
        Self {
            id: ExecutionId::new(),
            workflow: wf.reference(),
            input,
            tasks,
            finished: plan::outcome(&states),
            origin: origin.into(),
            created_at: now,
        }
    }
}

/// A lease held on a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The runner that holds it.
    pub owner: RunnerId,
    /// The owner's process incarnation.
    pub incarnation: String,
    /// When it expires if the owner's liveness is not renewed.
    pub expires_at: Timestamp,
}

/// A task row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Row id.
    pub id: TaskExecutionId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Task id within the workflow.
    pub name: String,
    /// State.
    pub state: TaskState,
    /// Attempt number (1-based; recoveries do not count).
    pub attempt: u32,
    /// Not claimable before this time (retry backoff).
    pub ready_at: Timestamp,
    /// The current lease, while Running.
    pub lease: Option<Lease>,
    /// Changes on every claim.
    pub fencing_token: FencingToken,
    /// How often the task lost its runner.
    pub recovery_count: u32,
    /// Last error (failures, skips, abandonment).
    pub error: Option<String>,
    /// When the current or last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

/// An execution row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// Id.
    pub id: ExecutionId,
    /// Workflow name and version.
    pub workflow: WorkflowRef,
    /// State.
    pub state: WorkflowState,
    /// Input context.
    pub input: Context,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Where it came from.
    pub origin: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

/// A task handed to a runner by a claim.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    /// Row id.
    pub id: TaskExecutionId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Workflow name and version.
    pub workflow: WorkflowRef,
    /// Task id within the workflow.
    pub name: String,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// The token every write-back must carry.
    pub fencing_token: FencingToken,
    /// How often the task lost its runner before.
    pub recovery_count: u32,
    /// The input context (see [`crate::context`]).
    pub input: Context,
    /// Set when the stored contexts the input is made of cannot be read
    /// (corrupted rows): the runner fails the task with this problem
    /// instead of running it.
    pub input_error: Option<String>,
}

/// The runner a claim is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOwner {
    /// Runner id.
    pub runner: RunnerId,
    /// Its incarnation (changes at each process start).
    pub incarnation: String,
    /// Lease duration.
    pub lease_ttl: Duration,
}

/// Claim up to `limit` ready tasks (used by [`TaskQueue::claim`] and to
/// claim follow-up work inside the same transaction as a submit or a
/// report).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Who claims.
    pub owner: ClaimOwner,
    /// At most this many.
    pub limit: usize,
}

/// How an attempt ended, as reported by the runner.
#[derive(Debug, Clone)]
pub enum ReportOutcome {
    /// The body returned `Ok`; its context is the output.
    Succeeded {
        /// The output context.
        output: Context,
    },
    /// The body failed and the retry policy scheduled another attempt.
    Retry {
        /// The error, as text with its sources.
        error: String,
        /// Not claimable before this time.
        retry_at: Timestamp,
    },
    /// The body failed for good.
    Failed {
        /// The error, as text with its sources.
        error: String,
    },
}

/// A runner's report on one claimed task, fenced by its token.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// Row id.
    pub task: TaskExecutionId,
    /// Its execution.
    pub execution: ExecutionId,
    /// The token from the claim.
    pub fencing_token: FencingToken,
    /// What happened.
    pub outcome: ReportOutcome,
}

/// Why a report was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRejection {
    /// The task no longer runs under this token: another claim took it, it
    /// was recovered or released, or its execution was cancelled. The
    /// late result is discarded.
    LeaseLost {
        /// The task's state now.
        state: TaskState,
        /// Its token now.
        current_token: FencingToken,
    },
    /// No such task.
    NotFound,
    /// The execution's stored rows cannot be read (corrupted); the report
    /// is not applied and the problem is named.
    Unreadable {
        /// What is wrong, with the row.
        problem: String,
    },
}

/// Terminal state reached by an execution during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedExecution {
    /// Id.
    pub id: ExecutionId,
    /// Terminal state.
    pub state: WorkflowState,
}

/// The rows of an execution as a call finished it, so a local waiter can
/// build its result without reading them back.
#[derive(Debug, Clone)]
pub struct FinishedSnapshot {
    /// The execution row (its `input` is real only if `input_loaded`).
    pub execution: ExecutionRecord,
    /// Whether `execution.input` was loaded.
    pub input_loaded: bool,
    /// Its task rows.
    pub tasks: Vec<TaskRecord>,
    /// Outputs the call had in memory, by task id (possibly not all).
    pub outputs: HashMap<String, Context>,
}

/// What a call changed: the events it recorded, executions it finished,
/// how many tasks it made ready, and what it claimed for the caller.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// Events recorded, in order.
    pub events: Vec<ExecutionEvent>,
    /// Executions that reached a terminal state.
    pub finished: Vec<FinishedExecution>,
    /// The rows of finished executions, where the call had them.
    pub snapshots: Vec<std::sync::Arc<FinishedSnapshot>>,
    /// Tasks that became Ready (claimable now or at their retry time) and
    /// were not claimed by this call.
    pub newly_ready: usize,
    /// Tasks claimed for the caller within the same transaction.
    pub claimed: Vec<ClaimedTask>,
}

impl Effects {
    /// Appends another call's effects.
    pub fn absorb(&mut self, other: Effects) {
        self.events.extend(other.events);
        self.finished.extend(other.finished);
        self.snapshots.extend(other.snapshots);
        self.newly_ready += other.newly_ready;
        self.claimed.extend(other.claimed);
    }
}

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An execution changed state (or was created: `from` is `None`).
    Execution,
    /// A task changed state (or was created: `from` is `None`).
    Task,
}

impl EventKind {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Execution => "execution",
            EventKind::Task => "task",
        }
    }
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "execution" => Some(EventKind::Execution),
            "task" => Some(EventKind::Task),
            _ => None,
        }
    }
}

/// One state change, appended in the transaction that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionEvent {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Execution or task change.
    pub kind: EventKind,
    /// The task id within the workflow (task events).
    pub task: Option<String>,
    /// The task row (task events).
    pub task_execution_id: Option<TaskExecutionId>,
    /// State before (`None` at creation).
    pub from: Option<String>,
    /// State after.
    pub to: String,
    /// Extra detail: error, skip reason, runner, attempt.
    pub detail: Option<String>,
    /// When.
    pub at: Timestamp,
}

impl ExecutionEvent {
    /// An execution state change.
    pub fn execution(
        id: ExecutionId,
        from: Option<WorkflowState>,
        to: WorkflowState,
        detail: Option<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            execution_id: id,
            kind: EventKind::Execution,
            task: None,
            task_execution_id: None,
            from: from.map(|s| s.to_string()),
            to: to.to_string(),
            detail,
            at,
        }
    }

    /// A task state change.
    #[allow(clippy::too_many_arguments)]
    pub fn task(
        execution: ExecutionId,
        task: &str,
        task_id: TaskExecutionId,
        from: Option<TaskState>,
        to: TaskState,
        detail: Option<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            execution_id: execution,
            kind: EventKind::Task,
            task: Some(task.to_owned()),
            task_execution_id: Some(task_id),
            from: from.map(|s| s.to_string()),
            to: to.to_string(),
            detail,
            at,
        }
    }
}

/// A filter for [`ExecutionStore::list_executions`].
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// Only this workflow name.
    pub workflow: Option<String>,
    /// Only these states (any, when empty).
    pub states: Vec<WorkflowState>,
    /// Only executions created at or after this time.
    pub created_after: Option<Timestamp>,
    /// At most this many (newest first). `None` means 100.
    pub limit: Option<usize>,
}

/// Registration of a runner in the liveness table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRegistration {
    /// The runner id (stable or generated).
    pub id: RunnerId,
    /// A human-readable name.
    pub name: String,
    /// A fresh value per process start; leases record it, so a restarted
    /// runner with a stable id sees its old leases as orphaned at once.
    pub incarnation: String,
    /// How long liveness lasts without a heartbeat.
    pub lease_ttl: Duration,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Liveness renewed.
    Alive,
    /// This incarnation was declared dead (its leases may have been taken
    /// over); the runner must drop its running tasks and register again.
    Lost,
}

/// A recovery sweep's parameters.
#[derive(Debug, Clone)]
pub struct RecoveryRequest {
    /// The policy (max recoveries).
    pub policy: RecoveryPolicy,
    /// At most this many tasks per sweep.
    pub limit: usize,
}

/// What a recovery sweep did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Tasks put back to Ready, with their new recovery count.
    pub requeued: Vec<(TaskExecutionId, u32)>,
    /// Tasks that became Abandoned.
    pub abandoned: Vec<TaskExecutionId>,
    /// Runners found dead.
    pub dead_runners: Vec<RunnerId>,
    /// Consequences.
    pub effects: Effects,
}

/// A wake-up from storage: a hint of where to look, never a fact to act
/// on — a receiver reads what changed from its own tenant's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Tasks became ready somewhere.
    TasksReady,
    /// An execution reached a terminal state: this one, or — from a
    /// channel that carries no ids (PostgreSQL) — some execution.
    ExecutionFinished(Option<ExecutionId>),
    /// An execution was cancelled (its running tasks should stop): this
    /// one, or some execution.
    ExecutionCancelled(Option<ExecutionId>),
}

/// Executions: reads.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// One execution.
    async fn execution(&self, id: ExecutionId) -> StorageResult<Option<ExecutionRecord>>;

    /// The current state of several executions (missing ids are omitted).
    async fn execution_states(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, WorkflowState)>>;

    /// The task rows of an execution, in topological order of creation.
    async fn tasks(&self, id: ExecutionId) -> StorageResult<Vec<TaskRecord>>;

    /// Of the given executions, those whose rows cannot be read (the
    /// execution row or any of its task rows), each with the
    /// [`StorageError::CorruptRow`] naming the first bad row. Missing ids are
    /// omitted.
    async fn unreadable(&self, ids: &[ExecutionId]) -> StorageResult<Vec<(ExecutionId, StorageError)>>;

    /// Output contexts of completed tasks of an execution, by task id; only
    /// the named tasks (all completed ones when `names` is empty).
    async fn outputs(&self, id: ExecutionId, names: &[String]) -> StorageResult<HashMap<String, Context>>;

    /// Executions matching a filter, newest first. A row that cannot be
    /// read is left out (and logged, naming it).
    async fn list_executions(&self, filter: &ExecutionFilter) -> StorageResult<Vec<ExecutionRecord>>;

    /// An execution's events, oldest first.
    async fn events(&self, id: ExecutionId) -> StorageResult<Vec<ExecutionEvent>>;
}

/// A runner's pending writes, committed in one transaction: what arrived
/// together is written together.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Executions to create, each with all its task rows.
    pub creations: Vec<NewExecution>,
    /// Reports to apply (each fenced by its token).
    pub reports: Vec<TaskReport>,
    /// Claim up to `limit` tasks for the caller: first the tasks this commit
    /// makes ready, then, if `claim_waiting`, ready tasks already stored
    /// (oldest first).
    pub claim: Option<ClaimRequest>,
    /// See `claim`.
    pub claim_waiting: bool,
}

/// The outcome of [`TaskQueue::commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOutcome {
    /// One entry per report, in order: `Ok` if applied.
    pub results: Vec<Result<(), ReportRejection>>,
    /// What the commit changed and claimed.
    pub effects: Effects,
}

/// Creating, claiming and reporting: the write path.
#[async_trait]
pub trait TaskQueue: Send + Sync {
    /// Writes a batch in one transaction:
    ///
    /// * creations: each execution with all its task rows, roots evaluated;
    /// * reports: each applied only if its task is Running under the same
    ///   token (otherwise rejected, the late result discarded), with its
    ///   consequences — output stored, dependents evaluated, execution
    ///   finalized;
    /// * claims: tasks made ready by this commit, then (with
    ///   `claim_waiting`) stored ready tasks of `workflows` whose `ready_at`
    ///   has passed, of executions that are not paused; each claim sets the
    ///   owner, the lease expiry and a new fencing token. No task is ever
    ///   handed to two claimers.
    async fn commit(&self, batch: Commit, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<CommitOutcome>;

    /// Creates executions with all their task rows, atomically; with
    /// `claim`, new ready tasks may be claimed for the caller.
    async fn create_executions(
        &self,
        batch: Vec<NewExecution>,
        claim: Option<&ClaimRequest>,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<Effects> {
        let c = Commit { creations: batch, claim: claim.cloned(), ..Commit::default() };
        Ok(self.commit(c, workflows, now).await?.effects)
    }

    /// Claims up to `req.limit` ready tasks (see [`commit`](Self::commit)).
    async fn claim(&self, req: &ClaimRequest, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<Effects> {
        let c = Commit { claim: Some(req.clone()), claim_waiting: true, ..Commit::default() };
        Ok(self.commit(c, workflows, now).await?.effects)
    }

    /// Applies reports (see [`commit`](Self::commit)); with `claim`, tasks
    /// they make ready may be claimed for the caller.
    async fn report(
        &self,
        reports: Vec<TaskReport>,
        claim: Option<&ClaimRequest>,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<CommitOutcome> {
        self.commit(Commit { reports, claim: claim.cloned(), ..Commit::default() }, workflows, now).await
    }

    /// Of the given (task, token) pairs, those no longer Running under that
    /// token (taken over, recovered or cancelled).
    async fn lost_leases(&self, held: &[(TaskExecutionId, FencingToken)]) -> StorageResult<Vec<TaskExecutionId>>;
}

/// Runner liveness, recovery and release.
#[async_trait]
pub trait Liveness: Send + Sync {
    /// Inserts or replaces the runner's liveness row with a new
    /// incarnation; leases of an earlier incarnation become orphans.
    async fn register_runner(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<()>;

    /// Renews liveness, fenced by incarnation.
    async fn heartbeat(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<Heartbeat>;

    /// Finds running tasks whose owner is gone (liveness expired, stopped,
    /// replaced by a new incarnation, or missing) and applies the policy:
    /// requeue (recovery count + 1), for tasks of any workflow, or abandon
    /// (and plan the consequences), only for tasks of `workflows` (the
    /// others are left for a runner that knows their workflow). Each is
    /// compare-and-set: recovered only if it still runs under the claim that
    /// was found dead. Tasks of live owners are never touched. Scheduled
    /// retries are Ready, not Running, and are not touched.
    async fn recover(
        &self,
        req: &RecoveryRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<RecoveryReport>;

    /// Puts back to Ready the runner's Running tasks that are not in `held`
    /// (recovery count unchanged): claims a failed commit may have made
    /// without the runner learning of them. Call it only while no commit
    /// of this runner is in flight.
    async fn release_strays(
        &self,
        reg: &RunnerRegistration,
        held: &[TaskExecutionId],
        now: Timestamp,
    ) -> StorageResult<Effects>;

    /// At shutdown: puts the runner's Running tasks back to Ready at once
    /// (a release is not a crash: the recovery count is unchanged) and
    /// marks the runner stopped.
    async fn release_runner(&self, reg: &RunnerRegistration, now: Timestamp) -> StorageResult<Effects>;
}

/// User control of executions.
#[async_trait]
pub trait Control: Send + Sync {
    /// Cancels: the execution and every non-terminal task become Cancelled
    /// (running tasks' late results are then rejected).
    async fn cancel(&self, id: ExecutionId, reason: &str, now: Timestamp) -> StorageResult<Effects>;
    /// Pauses: no task of the execution is claimed until resumed.
    async fn pause(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects>;
    /// Resumes a paused execution.
    async fn resume(&self, id: ExecutionId, now: Timestamp) -> StorageResult<Effects>;
}

/// Wake-ups.
#[async_trait]
pub trait Notifications: Send + Sync {
    /// A stream of notifications from other runners (and this one), or
    /// `None` if the backend has no such channel (the runner then polls).
    async fn subscribe(&self) -> StorageResult<Option<BoxStream<'static, Notification>>>;
}

/// What opening a storage did to its schema.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenReport {
    /// Whether the tenant's schema (PostgreSQL) or file (SQLite) was
    /// created by this opening.
    pub created: bool,
    /// Migrations applied by this opening (empty when the schema was
    /// already current: nothing is re-run).
    pub migrations_applied: Vec<String>,
}

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    /// The definition.
    pub schedule: CronSchedule,
    /// Paused schedules start nothing.
    pub paused: bool,
    /// Ticks at or before this time are processed (run or skipped). A new
    /// schedule starts at its registration time; a resumed one at its
    /// resumption (ticks missed while paused are not caught up).
    pub last_tick: Timestamp,
    /// The next tick to process (`None`: the expression has no more).
    pub next_tick: Option<Timestamp>,
    /// When it was first registered.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl ScheduleRecord {
    /// The record of `schedule` registered at `now`: new, or replacing the
    /// definition of a stored one whose paused flag, last processed tick
    /// and creation time (`previous`) are kept.
    pub fn registered(schedule: &CronSchedule, previous: Option<(bool, Timestamp, Timestamp)>, now: Timestamp) -> Self {
        let (paused, last_tick, created_at) = previous.unwrap_or((false, now, now));
        Self {
            schedule: schedule.clone(),
            paused,
            last_tick,
            next_tick: schedule.next_after(last_tick),
            created_at,
            updated_at: now,
        }
    }

    /// Whether the schedule is *stalled* at `now`: unpaused, with a tick
    /// that is due by more than its misfire threshold — no runner has
    /// been firing it (none that registers its workflow is running).
    pub fn is_stalled(&self, now: Timestamp) -> bool {
        !self.paused && self.next_tick.is_some_and(|t| now.since(t) > self.schedule.misfire())
    }

    /// Pauses or resumes at `now`; a resumed schedule continues from `now`.
    /// Returns whether anything changed.
    pub fn set_paused(&mut self, paused: bool, now: Timestamp) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        self.updated_at = now;
        if !paused {
            self.last_tick = now;
            self.next_tick = self.schedule.next_after(now);
        }
        true
    }
}

/// One execution a schedule started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFiring {
    /// The schedule.
    pub schedule: String,
    /// The tick (scheduled time) it ran for.
    pub tick: Timestamp,
    /// The execution, created with the tick's record.
    pub execution: ExecutionId,
}

/// What [`Schedules::fire_schedules`] did.
#[derive(Debug, Clone, Default)]
pub struct ScheduleReport {
    /// Executions started, oldest tick first.
    pub fired: Vec<ScheduleFiring>,
    /// Missed ticks the catch-up policies dropped.
    pub skipped_ticks: usize,
    /// Due ticks that already had an execution (their record existed):
    /// nothing was started for them; the other schedules fired as usual.
    pub duplicate_ticks: Vec<DuplicateTick>,
    /// Schedules left alone because their workflow is not among those the
    /// caller knows (another runner may fire them).
    pub unknown_workflow: Vec<String>,
    /// Schedules whose stored row cannot be read (left alone), with why.
    pub unreadable: Vec<UnreadableSchedule>,
    /// What the new executions changed.
    pub effects: Effects,
}

/// A tick [`Schedules::fire_schedules`] found already recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateTick {
    /// The schedule.
    pub schedule: String,
    /// The tick.
    pub tick: Timestamp,
}

/// A stored schedule [`Schedules::fire_schedules`] could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableSchedule {
    /// The schedule's name.
    pub name: String,
    /// What is wrong with its row.
    pub problem: String,
}

/// A trigger's firing, to be recorded with its execution.
#[derive(Debug, Clone)]
pub struct TriggerFiring {
    /// The trigger's name.
    pub trigger: String,
    /// The deduplication key ([`firing_key`](crate::schedule::firing_key)).
    pub key: String,
    /// Whether an identical firing may start while one is unfinished.
    pub allow_concurrent: bool,
    /// The execution to create.
    pub execution: NewExecution,
}

/// What [`Schedules::fire_trigger`] did.
#[derive(Debug, Clone)]
pub enum TriggerOutcome {
    /// The execution was created with its firing record.
    Fired {
        /// Its id.
        execution: ExecutionId,
        /// What it changed.
        effects: Effects,
    },
    /// An identical firing's execution is still unfinished: nothing created.
    Suppressed {
        /// The unfinished execution.
        running: ExecutionId,
    },
}

/// Cron schedules and trigger firings.
///
/// Exactly-once per tick is a storage guarantee: the tick's record (unique
/// per schedule and tick) and its execution are written in one
/// transaction, which also advances the schedule only if no other runner
/// advanced it first.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Creates the schedule, or updates the one with this name (its paused
    /// flag and last processed tick are kept, so re-registering at every
    /// start-up neither duplicates it nor loses ticks missed while down).
    async fn upsert_schedule(&self, schedule: &CronSchedule, now: Timestamp) -> StorageResult<ScheduleRecord>;

    /// Every schedule, by name. A row that cannot be read is an error
    /// naming it.
    async fn schedules(&self) -> StorageResult<Vec<ScheduleRecord>>;

    /// Pauses or resumes a schedule ([`StorageError::NotFound`] if absent).
    /// Resuming restarts its ticks from `now`.
    async fn set_schedule_paused(&self, name: &str, paused: bool, now: Timestamp) -> StorageResult<ScheduleRecord>;

    /// Deletes a schedule and its tick records ([`StorageError::NotFound`]
    /// if absent). Executions it started are kept.
    async fn delete_schedule(&self, name: &str) -> StorageResult<()>;

    /// Starts the executions of every due tick of the unpaused schedules
    /// whose workflow is in `workflows`, after each schedule's catch-up
    /// policy: each tick's record and execution in one transaction. A tick
    /// already recorded starts nothing and is reported in
    /// [`ScheduleReport::duplicate_ticks`]; it never stops the others.
    async fn fire_schedules(&self, workflows: &WorkflowSet, now: Timestamp) -> StorageResult<ScheduleReport>;

    /// Records a trigger firing and creates its execution in one
    /// transaction, unless (without `allow_concurrent`) an execution of an
    /// identical earlier firing is still unfinished. Idempotent by the
    /// firing's execution id: a retry of a firing that was recorded (its
    /// commit's answer lost) is `Fired` again and creates nothing.
    async fn fire_trigger(
        &self,
        firing: TriggerFiring,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> StorageResult<TriggerOutcome>;
}

/// Everything a runner needs from storage.
#[async_trait]
pub trait Storage:
    ExecutionStore + TaskQueue + Liveness + Control + Notifications + Schedules + std::fmt::Debug
{
    /// A short name of the backend and tenant, for logs (no secrets).
    fn describe(&self) -> String;
    /// What opening this storage did (schema created? migrations run?).
    fn open_report(&self) -> OpenReport;
    /// Housekeeping the runner calls at start-up and then now and then
    /// (each heartbeat): cheap when there is nothing to do. PostgreSQL
    /// refreshes the planner's statistics of the task table once it changed
    /// a lot, so claims keep using the ready-task index after a burst.
    async fn maintain(&self) -> StorageResult<()> {
        Ok(())
    }
    /// Closes connections. Later calls fail with
    /// [`StorageError::Unavailable`].
    async fn close(&self);
}
