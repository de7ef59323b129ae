//! A commit: creations, reports and claims of one runner, in one
//! transaction.

use std::collections::HashMap;

use cloacina_core::ports::{ClaimRequest, Commit, CommitOutcome};
use cloacina_core::step::{Step, StepOutput};
use cloacina_core::{ExecutionId, Timestamp, Workflow, WorkflowSet};
use sea_orm::DatabaseTransaction;

use crate::backend::{SqlBackend, TxError};
use crate::rows;
use crate::storage::SqlStorage;

impl<B: SqlBackend> SqlStorage<B> {
    pub(crate) async fn try_commit(
        &self,
        batch: Commit,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<CommitOutcome, TxError> {
        let t0 = std::time::Instant::now();
        let txn = self.begin().await?;
        let t_begin = t0.elapsed();
        let mut step = Step::new(now, workflows, batch.claim.as_ref());
        for n in batch.creations {
            step.create(n);
        }
        let mut results = Vec::new();
        if !batch.reports.is_empty() {
            results = crate::ops::report::apply(&self.backend, &txn, &mut step, workflows, batch.reports).await?;
        }
        let t_snap = t0.elapsed();
        let remaining = if batch.claim_waiting { step.remaining_claims() } else { None };
        let mut out = step.finish();
        let notes = crate::storage::notifications(&out.effects);
        self.backend.apply_writes(&txn, &out.writes, &notes, now).await?;
        let t_writes = t0.elapsed();
        if let Some(req) = remaining {
            let extra = self.claim_waiting(&txn, &req, workflows, now).await?;
            self.backend.apply_writes(&txn, &extra.writes, &[], now).await?;
            out.writes.events.extend(extra.writes.events);
            out.pending_claims.extend(extra.pending_claims);
        }
        let t_claim = t0.elapsed();
        let effects = self.finish_commit(txn, out, notes).await?;
        tracing::trace!(
            begin_us = t_begin.as_micros() as u64,
            snapshots_us = t_snap.as_micros() as u64,
            writes_us = t_writes.as_micros() as u64,
            claim_us = t_claim.as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "commit phases"
        );
        Ok(CommitOutcome { results, effects })
    }

    /// Claims stored ready tasks with the backend's claim statement, and
    /// records the consequences (events, executions started).
    async fn claim_waiting(
        &self,
        txn: &DatabaseTransaction,
        req: &ClaimRequest,
        workflows: &WorkflowSet,
        now: Timestamp,
    ) -> Result<StepOutput, TxError> {
        let by_key: HashMap<String, &Workflow> = workflows.entries().map(|(r, w)| (rows::workflow_key(r), w)).collect();
        let keys: Vec<String> = by_key.keys().cloned().collect();
        let mut step = Step::new(now, workflows, Some(req));
        if keys.is_empty() {
            return Ok(step.finish());
        }
        let claimed = self.backend.claim_rows(txn, req, &keys, now).await.map_err(|e| self.backend.classify(e))?;
        if claimed.is_empty() {
            return Ok(step.finish());
        }
        let mut execs: Vec<uuid::Uuid> = Vec::with_capacity(claimed.len());
        for m in &claimed {
            let row = match rows::task_record(m) {
                Ok(r) => r,
                Err(e) => {
                    // A corrupted row must not stop every claim of the
                    // tenant: it stays leased to this runner, and is named.
                    tracing::error!("claimed a task whose row cannot be read, leaving it: {e}");
                    continue;
                }
            };
            execs.push(m.execution_id);
            if let Some(wf) = by_key.get(&m.workflow_key) {
                step.claimed_rows(wf, &row);
            }
        }
        execs.sort_unstable();
        execs.dedup();
        if !execs.is_empty() {
            use sea_orm::ConnectionTrait;
            let started = crate::claim::start_statement(txn.get_database_backend(), &execs, now);
            let rows = txn.query_all_raw(started).await.map_err(|e| self.backend.classify(e))?;
            for r in rows {
                let id: uuid::Uuid = r.try_get("", "id").map_err(|e| self.backend.classify(e))?;
                step.execution_started(ExecutionId(id));
            }
        }
        Ok(step.finish())
    }
}
