//! Applying task reports: fenced, with their consequences, in one
//! transaction.

use cloacina_core::ports::{ClaimRequest, ReportOutcomes, ReportRejection, TaskReport};
use cloacina_core::step::Step;
use cloacina_core::{Timestamp, WorkflowSet};

use crate::backend::{SqlBackend, TxError};
use crate::ops::snapshot::{self, Detail};
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_report(
        &self,
        reports: Vec<TaskReport>,
        claim: Option<&ClaimRequest>,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<ReportOutcomes, TxError> {
        let mut ids: Vec<uuid::Uuid> = reports.iter().map(|r| r.execution.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let txn = self.begin().await?;
        self.backend.lock_executions(&txn, &ids).await.map_err(|e| self.backend.classify(e))?;
        let mut snaps = snapshot::load(&self.backend, &txn, &ids, workflows, Detail::Planned).await?;
        let mut step = Step::new(now, workflows, claim);
        let mut results = Vec::with_capacity(reports.len());
        for r in reports {
            results.push(match snaps.get_mut(&r.execution) {
                Some(snap) => step.report(snap, r),
                None => Err(ReportRejection::NotFound),
            });
        }
        for snap in snaps.values_mut() {
            if let Some(wf) = workflows.get(&snap.execution.workflow) {
                step.settle(snap, wf);
            }
        }
        let effects = self.commit_step(txn, step.finish(), now).await?;
        Ok(ReportOutcomes { results, effects })
    }
}
