//! Wake-ups from storage, and the poll of awaited executions.
//!
//! Notifications are hints: a runner acts only on what it then reads from
//! its own tenant's storage (any role on a PostgreSQL server can send to
//! any channel).

use std::sync::Arc;

use cloacina_core::ports::Notification;
use cloacina_core::{ExecutionId, WorkflowState};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::Throttle;
use super::state::Inner;

/// Most executions checked per poll and per statement.
const POLL_BATCH: usize = 500;

/// Most awaited executions whose rows are read in full per poll (in turn),
/// so a waiter whose execution became unreadable learns it within about
/// `waiters / AUDIT_BATCH` polls without the poll reading every row each
/// time.
const AUDIT_BATCH: usize = 200;

pub(crate) async fn subscribe(inner: &Arc<Inner>) -> Option<BoxStream<'static, Notification>> {
    match inner.storage.subscribe().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("no storage notifications ({e}); relying on the fallback poll");
            None
        }
    }
}

pub(crate) async fn listen(inner: Arc<Inner>, mut stream: BoxStream<'static, Notification>) {
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = inner.life.stop_all.cancelled() => return,
        };
        inner.checkpoint("notification listener");
        match next {
            Some(Notification::TasksReady) => inner.signal_work(),
            Some(Notification::ExecutionCancelled(id)) => confirm_cancel(&inner, id).await,
            Some(Notification::ExecutionFinished(Some(id))) => check(&inner, &[id]).await,
            Some(Notification::ExecutionFinished(None)) => {
                let waited = inner.waiters.ids();
                for chunk in waited.chunks(POLL_BATCH) {
                    check_waited(&inner, chunk).await;
                }
            }
            // The stream ended (the storage was closed): the fallback poll
            // goes on finding work and finished executions.
            None => {
                tracing::warn!("storage notifications ended; relying on the fallback poll");
                return inner.life.stop_all.cancelled().await;
            }
        }
    }
}

/// Stops running tasks only of executions that storage says are cancelled
/// (a forged notification changes nothing): of `id`, or — without an id —
/// of every execution this runner runs tasks of.
async fn confirm_cancel(inner: &Arc<Inner>, id: Option<ExecutionId>) {
    let mut ids: Vec<ExecutionId> =
        inner.running().values().map(|r| r.execution).filter(|e| id.is_none_or(|id| id == *e)).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return;
    }
    match inner.storage.execution_states(&ids).await {
        Ok(states) => {
            for (e, s) in states {
                if s == WorkflowState::Cancelled {
                    inner.cancel_running(e);
                }
            }
        }
        // The lease check will find the cancelled tasks.
        Err(e) => tracing::debug!("cannot confirm a cancel notification: {e}"),
    }
}

/// Wakes the waiters of those of `ids` that reached a terminal state, and
/// asks those of executions that vanished or cannot be read to look again.
async fn check(inner: &Arc<Inner>, ids: &[ExecutionId]) {
    let waited: Vec<ExecutionId> = {
        let all = inner.waiters.ids();
        ids.iter().filter(|id| all.contains(id)).copied().collect()
    };
    if !waited.is_empty() {
        check_waited(inner, &waited).await;
    }
}

async fn check_waited(inner: &Arc<Inner>, waited: &[ExecutionId]) {
    match inner.storage.execution_states(waited).await {
        Ok(states) => {
            for (id, s) in &states {
                if s.is_terminal() {
                    inner.finished(*id, None);
                }
            }
            let gone = waited.iter().filter(|id| !states.iter().any(|(s, _)| s == *id)).copied();
            inner.waiters.check(gone);
        }
        Err(e) if e.is_transient() => tracing::debug!("cannot check awaited executions: {e}"),
        // One of them cannot be read, or storage refuses reads: each waiter
        // reads its own execution and returns what it finds.
        Err(_) => inner.waiters.check(waited.iter().copied()),
    }
}

/// Executions finished by other runners reach local waiters through this
/// poll when no notification arrives; a waiter whose execution vanished or
/// became unreadable is told to look again.
pub(crate) async fn poll_waiters(inner: Arc<Inner>) {
    let mut audit_from = 0usize;
    let mut throttle = Throttle::default();
    loop {
        tokio::select! {
            _ = inner.life.stop_all.cancelled() => return,
            _ = tokio::time::sleep(inner.config.fallback_poll_interval) => {}
        }
        inner.checkpoint("waiter poll");
        let mut ids = inner.waiters.ids();
        if ids.is_empty() {
            continue;
        }
        for chunk in ids.chunks(POLL_BATCH) {
            check_waited(&inner, chunk).await;
        }
        // The rows of a few awaited executions, in turn.
        ids.sort_unstable();
        audit_from %= ids.len();
        let audit: Vec<ExecutionId> =
            ids.iter().cycle().skip(audit_from).take(AUDIT_BATCH.min(ids.len())).copied().collect();
        audit_from += audit.len();
        match inner.storage.unreadable(&audit).await {
            Ok(bad) => inner.waiters.check(bad.into_iter().map(|(id, _)| id)),
            Err(e) => {
                if let Some(held) = throttle.allow("audit") {
                    tracing::debug!(repeated = held, "cannot read awaited executions' rows: {e}");
                }
            }
        }
    }
}
