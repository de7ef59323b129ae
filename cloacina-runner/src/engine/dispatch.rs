//! The dispatcher: claims ready tasks while slots are free.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cloacina_core::ports::{ClaimRequest, ClaimedTask};
use tokio::sync::OwnedSemaphorePermit;

use super::{Backoff, CLAIM_BATCH, claim_owner, execute, take_slots};
use crate::runner::Inner;

/// Starts claimed tasks, one slot each.
pub(crate) fn spawn_claimed(inner: &Arc<Inner>, claimed: Vec<ClaimedTask>, mut permits: Option<OwnedSemaphorePermit>) {
    for task in claimed {
        let permit = match permits.as_mut().and_then(|p| if p.num_permits() > 1 { p.split(1) } else { None }) {
            Some(p) => p,
            None => match permits.take() {
                Some(p) => p,
                None => {
                    // Storage claimed more than we asked: never expected.
                    // The lease expires and another claim runs it.
                    tracing::error!(task = %task.id, "claimed a task without a free slot; leaving it to recovery");
                    continue;
                }
            },
        };
        tokio::spawn(execute::run_task(inner.clone(), task, permit));
    }
}

/// Claims whenever woken, on the fallback poll, and as slots free up.
pub(crate) async fn dispatcher(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(inner.config.fallback_poll_interval) => inner.backlog.store(true, Ordering::SeqCst),
        }
        while inner.backlog.swap(false, Ordering::SeqCst) && !inner.stop_claiming.is_cancelled() {
            let Some(permits) = take_slots(&inner, CLAIM_BATCH) else {
                // Every slot is busy; a finishing task wakes us.
                inner.backlog.store(true, Ordering::SeqCst);
                break;
            };
            let limit = permits.num_permits();
            let req = ClaimRequest { owner: claim_owner(&inner), limit };
            match inner.storage.claim(&req, &inner.workflows(), inner.now()).await {
                Ok(effects) => {
                    backoff = Backoff::new();
                    if effects.claimed.len() == limit {
                        inner.backlog.store(true, Ordering::SeqCst);
                    }
                    super::apply_effects(&inner, effects, Some(permits));
                }
                Err(e) => {
                    drop(permits);
                    inner.backlog.store(true, Ordering::SeqCst);
                    let d = backoff.next();
                    tracing::warn!("claim failed, retrying in {d:?}: {e}");
                    tokio::select! {
                        _ = inner.stop_claiming.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }
}
