//! Wake-ups from storage, and the fallback poll of awaited executions.

use std::sync::Arc;

use cloacina_core::ExecutionId;
use cloacina_core::ports::Notification;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::runner::Inner;

/// Most executions checked per poll.
const POLL_BATCH: usize = 500;

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
            _ = inner.stop_all.cancelled() => return,
        };
        match next {
            Some(Notification::TasksReady) => inner.signal_work(),
            Some(Notification::ExecutionCancelled(id)) => inner.cancel_running(id),
            Some(Notification::ExecutionFinished(id)) => check(&inner, &[id]).await,
            None => return,
        }
    }
}

async fn check(inner: &Arc<Inner>, ids: &[ExecutionId]) {
    let waited: Vec<ExecutionId> = {
        let w = inner.waiters.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter().filter(|id| w.contains_key(id)).copied().collect()
    };
    if waited.is_empty() {
        return;
    }
    match inner.storage.execution_states(&waited).await {
        Ok(states) => {
            for (id, s) in states {
                if s.is_terminal() {
                    inner.finished(id, None);
                }
            }
        }
        Err(e) => tracing::debug!("cannot check awaited executions: {e}"),
    }
}

/// Executions finished by other runners reach local waiters through this
/// poll when no notification arrives.
pub(crate) async fn poll_waiters(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.stop_all.cancelled() => return,
            _ = tokio::time::sleep(inner.config.fallback_poll_interval) => {}
        }
        let ids: Vec<ExecutionId> = inner.waiters.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for chunk in ids.chunks(POLL_BATCH) {
            check(&inner, chunk).await;
        }
    }
}
