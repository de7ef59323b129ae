//! The write path: creating executions, claiming ready tasks under a lease,
//! reporting outcomes — together in one [`Commit`].

use super::*;

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

/// Claim up to `limit` ready tasks, in a [`TaskQueue::commit`] of its own
/// or beside the submits and reports of the same transaction (claiming
/// follow-up work).
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

    /// Of the given (task, token) pairs, those no longer Running under that
    /// token (taken over, recovered or cancelled).
    async fn lost_leases(&self, held: &[(TaskExecutionId, FencingToken)]) -> StorageResult<Vec<TaskExecutionId>>;
}
