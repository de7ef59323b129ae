//! Workflow versions: executions nobody serves, and migrating them.

use super::*;
use crate::migrate::TaskMapping;

/// Unfinished executions of one workflow version that no live runner
/// serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedVersion {
    /// Name and version.
    pub workflow: WorkflowRef,
    /// Their version label, if they have one.
    pub label: Option<String>,
    /// How many executions (pending, running or paused).
    pub executions: usize,
}

/// The detail of the event [`Versions::record_stranded`] writes.
pub fn stranded_detail(version: &WorkflowRef) -> String {
    format!("stranded: no live runner serves {version}")
}

/// What a migration did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// The executions moved to the new version.
    pub migrated: Vec<ExecutionId>,
    /// Consequences (tasks made ready, executions finished, events).
    pub effects: Effects,
}

/// Workflow versions.
#[async_trait]
pub trait Versions: Send + Sync {
    /// Unfinished executions (pending, running, paused) grouped by version,
    /// of the versions no live runner publishes (see
    /// [`RunnerRegistration::serves`]), sorted by workflow.
    async fn stranded(&self, now: Timestamp) -> StorageResult<Vec<StrandedVersion>>;

    /// Records, on every unfinished execution of `version`, an execution
    /// event (its state unchanged, detail [`stranded_detail`]) saying that
    /// no live runner serves its version; once per execution and version,
    /// however often and by however many runners it is called. Returns the
    /// events written (none when every execution already has one).
    async fn record_stranded(&self, version: &WorkflowRef, now: Timestamp) -> StorageResult<Vec<ExecutionEvent>>;

    /// Moves every unfinished execution of `from` to `to` with `mapping`
    /// (see [`crate::migrate`]), in one transaction: every execution is
    /// planned before anything is written, and one refusal
    /// ([`StorageError::MigrationRefused`]) changes nothing. Executions
    /// are locked as reports lock them, so a migration and a report are
    /// serialised.
    async fn migrate_executions(
        &self,
        from: &WorkflowRef,
        to: &Workflow,
        mapping: &TaskMapping,
        now: Timestamp,
    ) -> StorageResult<MigrationReport>;
}
