//! Runner liveness, recovery and release.

use super::*;

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
    /// The workflow versions the runner serves (every reference of its
    /// [`WorkflowSet::refs`]), published with each registration and
    /// heartbeat so executions nobody serves can be found.
    pub serves: Vec<WorkflowRef>,
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
