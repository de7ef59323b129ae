//! Batched writes: submissions and reports that arrive together are
//! written together, in one transaction each batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cloacina_core::ports::{ClaimRequest, NewExecution, StorageError, TaskReport};
use tokio::sync::mpsc;

use super::{Backoff, apply_effects, claim_owner, slots_for_write};
use crate::error::RunnerError;
use crate::runner::{Inner, Submission};

/// Largest batch written in one transaction.
const WRITE_BATCH: usize = 512;

fn claim_for(inner: &Inner, permits: &Option<tokio::sync::OwnedSemaphorePermit>) -> Option<ClaimRequest> {
    permits.as_ref().map(|p| ClaimRequest { owner: claim_owner(inner), limit: p.num_permits() })
}

/// Writes submitted executions in batches; replies once each is stored.
pub(crate) async fn submitter(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Submission>) {
    loop {
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = inner.stop_claiming.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        write_submissions(&inner, batch).await;
    }
    rx.close();
    while let Ok(s) = rx.try_recv() {
        let _ = s.reply.send(Err(RunnerError::ShutDown));
    }
}

async fn write_submissions(inner: &Arc<Inner>, batch: Vec<Submission>) {
    let (executions, replies): (Vec<NewExecution>, Vec<_>) = batch.into_iter().map(|s| (s.execution, s.reply)).unzip();
    let mut backoff = Backoff::new();
    loop {
        let permits = slots_for_write(inner);
        let claim = claim_for(inner, &permits);
        let result =
            inner.storage.create_executions(executions.clone(), claim.as_ref(), &inner.workflows(), inner.now()).await;
        match result {
            Ok(effects) => {
                for (e, reply) in executions.iter().zip(replies) {
                    let _ = reply.send(Ok(e.id));
                }
                apply_effects(inner, effects, permits);
                return;
            }
            Err(e) if e.is_transient() && !inner.stop_claiming.is_cancelled() => {
                drop(permits);
                let d = backoff.next();
                tracing::warn!("storing {} execution(s) failed, retrying in {d:?}: {e}", executions.len());
                tokio::time::sleep(d).await;
            }
            Err(e) if executions.len() > 1 => {
                drop(permits);
                // Find out which one is refused: each gets its own answer.
                tracing::warn!(
                    "storing a batch of {} executions failed ({e}); storing them one by one",
                    executions.len()
                );
                for (ex, reply) in executions.into_iter().zip(replies) {
                    Box::pin(write_submissions(inner, vec![Submission { execution: ex, reply }])).await;
                }
                return;
            }
            Err(e) => {
                // A batch of one (larger batches were split above).
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(RunnerError::Storage(e)));
                }
                return;
            }
        }
    }
}

/// Writes task reports in batches.
pub(crate) async fn reporter(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<TaskReport>) {
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = inner.stop_all.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len();
        write_reports(&inner, batch).await;
        inner.pending_reports.fetch_sub(n, Ordering::SeqCst);
        inner.reports_flushed.notify_waiters();
    }
}

async fn write_reports(inner: &Arc<Inner>, batch: Vec<TaskReport>) {
    let mut backoff = Backoff::new();
    loop {
        let permits = slots_for_write(inner);
        let claim = claim_for(inner, &permits);
        match inner.storage.report(batch.clone(), claim.as_ref(), &inner.workflows(), inner.now()).await {
            Ok(out) => {
                for (r, res) in batch.iter().zip(&out.results) {
                    if let Err(rejection) = res {
                        tracing::info!(
                            task = %r.task,
                            execution = %r.execution,
                            "late result discarded: the task moved on without this runner ({rejection:?})"
                        );
                    }
                }
                apply_effects(inner, out.effects, permits);
                return;
            }
            Err(e) if e.is_transient() && !inner.stop_all.is_cancelled() => {
                drop(permits);
                let d = backoff.next();
                tracing::warn!("writing {} task result(s) failed, retrying in {d:?}: {e}", batch.len());
                tokio::time::sleep(d).await;
            }
            Err(e) if batch.len() > 1 => {
                drop(permits);
                tracing::warn!("writing a batch of {} task results failed ({e}); writing them one by one", batch.len());
                for r in batch {
                    Box::pin(write_reports(inner, vec![r])).await;
                }
                return;
            }
            Err(e) => {
                let r = &batch[0];
                log_lost(r, &e);
                return;
            }
        }
    }
}

fn log_lost(r: &TaskReport, e: &StorageError) {
    tracing::error!(
        task = %r.task,
        execution = %r.execution,
        "cannot write this task's result: {e}; the task stays leased and will be recovered and run again"
    );
}
