//! Registration, heartbeats, lease checks and recovery sweeps.

use std::sync::Arc;

use cloacina_core::FencingToken;
use cloacina_core::TaskExecutionId;
use cloacina_core::ports::{Heartbeat, RecoveryRequest};

use super::{Backoff, apply_effects};
use crate::error::Result;
use crate::runner::Inner;

const RECOVERY_BATCH: usize = 1000;

pub(crate) async fn register(inner: &Arc<Inner>) -> Result<()> {
    inner.storage.register_runner(&inner.registration(), inner.now()).await?;
    Ok(())
}

/// Recovery at start-up: sweeps until nothing orphaned is left.
pub(crate) async fn recover_now(inner: &Arc<Inner>) -> Result<()> {
    loop {
        let n = sweep(inner).await?;
        if n < RECOVERY_BATCH {
            return Ok(());
        }
    }
}

async fn sweep(inner: &Arc<Inner>) -> Result<usize> {
    let req = RecoveryRequest { policy: inner.config.recovery, limit: RECOVERY_BATCH };
    let report = inner.storage.recover(&req, &inner.workflows(), inner.now()).await?;
    let n = report.requeued.len() + report.abandoned.len();
    if n > 0 || !report.dead_runners.is_empty() {
        tracing::info!(
            requeued = report.requeued.len(),
            abandoned = report.abandoned.len(),
            dead_runners = ?report.dead_runners,
            "recovered orphaned tasks"
        );
    }
    apply_effects(inner, report.effects, None);
    Ok(n)
}

pub(crate) async fn recovery_sweeps(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.config.recovery_interval) => {}
        }
        if let Err(e) = sweep(&inner).await {
            tracing::warn!("recovery sweep failed (will retry): {e}");
        }
    }
}

/// One liveness write per interval, whatever the number of running tasks;
/// plus a read that finds running tasks whose lease moved on (cancelled
/// or taken over), which are then stopped.
pub(crate) async fn heartbeats(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.config.recovery.heartbeat_interval()) => {}
        }
        if let Err(e) = inner.storage.maintain().await {
            tracing::debug!("storage maintenance failed: {e}");
        }
        match inner.storage.heartbeat(&inner.registration(), inner.now()).await {
            Ok(Heartbeat::Alive) => backoff = Backoff::new(),
            // Shutting down: the release just marked this runner stopped.
            Ok(Heartbeat::Lost) if inner.stop_claiming.is_cancelled() => return,
            Ok(Heartbeat::Lost) => {
                tracing::error!(
                    runner = %inner.registration().id,
                    "this runner was declared dead (missed heartbeats); stopping its running tasks and registering again"
                );
                {
                    let running = inner.running.lock().unwrap_or_else(|e| e.into_inner());
                    for r in running.values() {
                        r.cancel.cancel();
                    }
                }
                {
                    let mut reg = inner.registration.write().unwrap_or_else(|e| e.into_inner());
                    reg.incarnation = uuid::Uuid::new_v4().simple().to_string();
                }
                if let Err(e) = register(&inner).await {
                    tracing::warn!("registering again failed (will retry): {e}");
                }
            }
            Err(e) => {
                let d = backoff.next();
                tracing::warn!("heartbeat failed, retrying in {d:?}: {e}");
                tokio::time::sleep(d).await;
                continue;
            }
        }
        let held: Vec<(TaskExecutionId, FencingToken)> =
            inner.running.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(id, r)| (*id, r.token)).collect();
        if held.is_empty() {
            continue;
        }
        match inner.storage.lost_leases(&held).await {
            Ok(lost) => {
                let running = inner.running.lock().unwrap_or_else(|e| e.into_inner());
                for id in lost {
                    if let Some(r) = running.get(&id) {
                        tracing::warn!(task = %id, "lease lost (cancelled or taken over): stopping the task");
                        r.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!("lease check failed: {e}"),
        }
    }
}
