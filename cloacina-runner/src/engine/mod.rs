//! The runner's loops. Only this module spawns tasks.
//!
//! * `write` — the writer: submissions, reports and claims of a round go
//!   into one storage commit (one transaction), which claims the work it
//!   makes ready and, when woken, work already waiting, as slots allow;
//! * `dispatch` — starts claimed tasks, one slot each;
//! * `execute` — runs one claimed task body: timeout, panic, cancellation,
//!   retry decision, report;
//! * `liveness` — registration, heartbeats, lease checks, recovery sweeps;
//! * `notify` — storage notifications and the fallback poll of waited-on
//!   executions;
//! * `schedule` — the scheduler (due cron ticks) and trigger polling.

pub(crate) mod dispatch;
pub(crate) mod execute;
pub(crate) mod liveness;
pub(crate) mod notify;
pub(crate) mod schedule;
pub(crate) mod write;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloacina_core::WorkflowState;
use cloacina_core::ports::{ClaimOwner, Effects, TaskReport};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, mpsc};

use crate::error::Result;
use crate::runner::{Inner, Submission};

/// Most tasks claimed in one statement.
pub(crate) const CLAIM_BATCH: usize = 64;

/// Exponential backoff for retrying storage calls after transient errors.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(Duration::from_millis(50))
    }
    pub(crate) fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
}

/// Takes up to `max` free slots without waiting.
pub(crate) fn take_slots(inner: &Inner, max: usize) -> Option<OwnedSemaphorePermit> {
    let mut n = inner.slots.available_permits().min(max);
    while n > 0 {
        match inner.slots.clone().try_acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX)) {
            Ok(p) => return Some(p),
            Err(TryAcquireError::NoPermits) => n = inner.slots.available_permits().min(n - 1),
            Err(TryAcquireError::Closed) => return None,
        }
    }
    None
}

pub(crate) fn claim_owner(inner: &Inner) -> ClaimOwner {
    let reg = inner.registration();
    ClaimOwner { runner: reg.id, incarnation: reg.incarnation, lease_ttl: reg.lease_ttl }
}

/// Acts on what a storage call changed: publishes events, wakes waiters,
/// stops cancelled executions' tasks, wakes the dispatcher, and starts the
/// tasks claimed for this runner (one slot each from `permits`).
pub(crate) fn apply_effects(inner: &Arc<Inner>, effects: Effects, permits: Option<OwnedSemaphorePermit>) {
    inner.publish(&effects.events);
    let mut snapshots: std::collections::HashMap<_, _> =
        effects.snapshots.into_iter().map(|s| (s.execution.id, s)).collect();
    for f in &effects.finished {
        if f.state == WorkflowState::Cancelled {
            inner.cancel_running(f.id);
        }
        inner.finished(f.id, snapshots.remove(&f.id));
    }
    if effects.newly_ready > 0 {
        inner.signal_work();
    }
    dispatch::spawn_claimed(inner, effects.claimed, permits);
}

/// Starts the loops.
pub(crate) async fn start_loops(
    inner: &Arc<Inner>,
    submit_rx: mpsc::UnboundedReceiver<Submission>,
    report_rx: mpsc::UnboundedReceiver<TaskReport>,
) -> Result<()> {
    let notifications = notify::subscribe(inner).await;
    let mut loops = vec![
        tokio::spawn(write::writer(inner.clone(), submit_rx, report_rx)),
        tokio::spawn(liveness::heartbeats(inner.clone())),
        tokio::spawn(notify::poll_waiters(inner.clone())),
        tokio::spawn(schedule::scheduler(inner.clone())),
    ];
    if let Some(stream) = notifications {
        loops.push(tokio::spawn(notify::listen(inner.clone(), stream)));
    }
    if inner.config.enable_recovery {
        loops.push(tokio::spawn(liveness::recovery_sweeps(inner.clone())));
    }
    inner.loops.lock().unwrap_or_else(|e| e.into_inner()).extend(loops);
    Ok(())
}

/// Graceful shutdown; see [`DefaultRunner::shutdown`](crate::DefaultRunner::shutdown).
pub(crate) async fn shutdown(inner: &Arc<Inner>) -> Result<()> {
    if !inner.accepting.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    tracing::info!(runner = %inner.registration().id, "shutting down");
    inner.stop_claiming.cancel();
    let deadline = tokio::time::Instant::now() + inner.config.shutdown_grace_period;
    loop {
        let changed = inner.running_changed.notified();
        if inner.running.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            break;
        }
    }
    let left: usize = {
        let running = inner.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.values() {
            r.cancel.cancel();
        }
        running.len()
    };
    if left > 0 {
        tracing::warn!(tasks = left, "grace period over: cancelling running tasks; their leases are released");
    }
    // Write what finished.
    let flush_deadline = tokio::time::Instant::now() + Duration::from_secs(10).max(inner.config.shutdown_grace_period);
    loop {
        let flushed = inner.reports_flushed.notified();
        if inner.pending_reports.load(Ordering::SeqCst) == 0 {
            break;
        }
        if tokio::time::timeout_at(flush_deadline, flushed).await.is_err() {
            tracing::error!(
                reports = inner.pending_reports.load(Ordering::SeqCst),
                "could not write every task result before shutdown; those tasks will be recovered"
            );
            break;
        }
    }
    let released = inner.storage.release_runner(&inner.registration(), inner.now()).await;
    inner.stop_all.cancel();
    let loops = std::mem::take(&mut *inner.loops.lock().unwrap_or_else(|e| e.into_inner()));
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
    }
    inner.storage.close().await;
    match released {
        Ok(effects) => {
            tracing::info!(released = effects.newly_ready, "runner stopped");
            inner.publish(&effects.events);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
