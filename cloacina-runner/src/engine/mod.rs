//! The runner's loops. Only this module spawns tasks.
//!
//! Everything here runs on the runner's own *engine* runtime (threads of
//! its own, see [`EngineRuntime`]): task bodies and trigger polls are the
//! application's code and run on the application's runtime, so a body that
//! blocks its thread cannot starve heartbeats, commits or lease checks.
//!
//! * `write` — the writer: submissions, reports and claims of a round go
//!   into one storage commit (one transaction), which claims the work it
//!   makes ready and, when woken, work already waiting, as slots allow;
//!   results storage refuses are kept and retried;
//! * `dispatch` — starts claimed tasks, one slot each;
//! * `execute` — supervises one claimed task body: timeout, panic,
//!   cancellation, retry decision, report;
//! * `liveness` — registration, heartbeats, lease checks, recovery sweeps;
//! * `notify` — storage notifications and the poll of awaited executions;
//! * `schedule` — the scheduler (due cron ticks) and trigger polling;
//! * `waiters` — callers waiting for executions;
//! * `state` — what the runner's handle and its loops share.
//!
//! Every loop is *supervised*: one that panics or ends while the runner is
//! still up makes the runner fail as a whole (see [`fail`]) instead of
//! leaving a runner that heartbeats but does no work.

pub(crate) mod dispatch;
pub(crate) mod execute;
pub(crate) mod liveness;
pub(crate) mod notify;
pub(crate) mod schedule;
pub(crate) mod state;
pub(crate) mod waiters;
pub(crate) mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloacina_core::WorkflowState;
use cloacina_core::ports::{ClaimOwner, Effects, TaskReport};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, mpsc};

use crate::error::{Result, RunnerError};
use state::{Inner, Submission};

/// Most tasks claimed in one statement.
pub(crate) const CLAIM_BATCH: usize = 64;

/// The runner's own runtime. Dropping it (or [`stop`](Self::stop)) shuts it
/// down without waiting for its tasks.
#[derive(Debug)]
pub(crate) struct EngineRuntime(Mutex<Option<Runtime>>);

impl EngineRuntime {
    /// Threads of the engine runtime: commits, claims, heartbeats and the
    /// supervision of bodies; storage drivers bring their own.
    const THREADS: usize = 2;

    pub(crate) fn start() -> Result<(Self, Handle)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(Self::THREADS)
            .thread_name("cloacina-engine")
            .enable_all()
            .build()
            .map_err(|e| RunnerError::Fatal { message: format!("cannot start the engine runtime's threads: {e}") })?;
        let handle = rt.handle().clone();
        Ok((Self(Mutex::new(Some(rt))), handle))
    }

    /// Whether [`stop`](Self::stop) ran.
    pub(crate) fn is_stopped(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }

    /// Shuts the runtime down; its remaining tasks are dropped.
    pub(crate) fn stop(&self) {
        if let Some(rt) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Exponential backoff for retrying storage calls after errors.
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

/// Logs a repeated failure once, then at most once a minute (with how often
/// it recurred), so an outage does not flood the log.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(60);

    /// Whether to log `what` now, and how often it was held back since.
    pub(crate) fn allow(&mut self, what: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(what) {
            Some((at, held)) if now.duration_since(*at) < Self::EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.last.insert(what, (now, 0));
                Some(0)
            }
        }
    }

    /// Forgets `what` (it recovered): its next failure is logged at once.
    pub(crate) fn reset(&mut self, what: &'static str) {
        self.last.remove(what);
    }
}

/// The instant `d` from now, or one far in the future when `d` is too long
/// to add (a deadline must never overflow).
pub(crate) fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Takes up to `max` free slots without waiting.
pub(crate) fn take_slots(inner: &Inner, max: usize) -> Option<OwnedSemaphorePermit> {
    let slots = &inner.work.slots;
    let mut n = slots.available_permits().min(max);
    while n > 0 {
        match slots.clone().try_acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX)) {
            Ok(p) => return Some(p),
            Err(TryAcquireError::NoPermits) => n = slots.available_permits().min(n - 1),
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
/// stops cancelled executions' tasks, wakes the writer, and starts the
/// tasks claimed for this runner (one slot each from `permits`).
pub(crate) fn apply_effects(inner: &Arc<Inner>, effects: Effects, permits: Option<OwnedSemaphorePermit>) {
    inner.publish(&effects.events);
    let mut snapshots: HashMap<_, _> = effects.snapshots.into_iter().map(|s| (s.execution.id, s)).collect();
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

/// Spawns a loop on the engine runtime under supervision: if it panics, or
/// ends while the runner is still accepting work, the runner fails.
pub(crate) fn supervise<F>(inner: &Arc<Inner>, name: &'static str, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = inner.runtimes.engine.spawn(fut);
    let watched = Arc::clone(inner);
    let monitor = inner.runtimes.engine.spawn(async move {
        match task.await {
            Ok(()) if watched.life.accepting.load(Ordering::SeqCst) => {
                fail(&watched, name, "it ended while the runner was still running");
            }
            Ok(()) => {}
            Err(e) if e.is_panic() => fail(&watched, name, &format!("it panicked: {}", execute::panic_text(e))),
            // Cancelled: the engine runtime is shutting down.
            Err(_) => {}
        }
    });
    inner.loops().push(monitor);
}

/// A loop failed: the runner stops as a whole. It stops heartbeating (so
/// its leases expire and other runners take its tasks over), stops its
/// task bodies, fails every waiter with the reason, and makes every later
/// call — `shutdown` included — return [`RunnerError::Fatal`].
pub(crate) fn fail(inner: &Arc<Inner>, name: &'static str, why: &str) {
    let message = format!("the runner's {name} loop failed ({why}); the runner has stopped");
    if inner.life.fatal.set(message.clone()).is_err() {
        return;
    }
    tracing::error!(
        runner = %inner.registration().id,
        storage = %inner.storage.describe(),
        "{message}: it no longer heartbeats, its leases expire and other runners take its tasks over"
    );
    inner.life.accepting.store(false, Ordering::SeqCst);
    inner.life.stop_claiming.cancel();
    inner.life.stop_all.cancel();
    inner.cancel_all_running();
    inner.waiters.fail_all(&message);
}

/// Starts the loops.
pub(crate) async fn start_loops(
    inner: &Arc<Inner>,
    submit_rx: mpsc::Receiver<Submission>,
    report_rx: mpsc::Receiver<TaskReport>,
) -> Result<()> {
    let notifications = notify::subscribe(inner).await;
    supervise(inner, "writer", write::writer(inner.clone(), submit_rx, report_rx));
    supervise(inner, "heartbeat", liveness::heartbeats(inner.clone()));
    supervise(inner, "waiter poll", notify::poll_waiters(inner.clone()));
    supervise(inner, "scheduler", schedule::scheduler(inner.clone()));
    if let Some(stream) = notifications {
        supervise(inner, "notification listener", notify::listen(inner.clone(), stream));
    }
    if inner.config.enable_recovery {
        supervise(inner, "recovery", liveness::recovery_sweeps(inner.clone()));
    }
    Ok(())
}

/// Graceful shutdown; see [`DefaultRunner::shutdown`](crate::DefaultRunner::shutdown).
/// Runs on the engine runtime.
pub(crate) async fn shutdown(inner: Arc<Inner>) -> Result<()> {
    if let Some(message) = inner.life.fatal.get() {
        join_loops(&inner).await;
        inner.storage.close().await;
        return Err(RunnerError::Fatal { message: message.clone() });
    }
    if !inner.life.accepting.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    tracing::info!(runner = %inner.registration().id, "shutting down");
    inner.life.stop_claiming.cancel();
    let grace = inner.config.shutdown_grace_period;
    let deadline = deadline_after(grace);
    loop {
        let changed = inner.work.running_changed.notified();
        if inner.running().is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            break;
        }
    }
    let left = inner.cancel_all_running();
    if left > 0 {
        tracing::warn!(tasks = left, "grace period over: cancelling running tasks; their leases are released");
    }
    // Write what finished.
    let flush_deadline = deadline_after(Duration::from_secs(10).max(grace));
    loop {
        let flushed = inner.writes.reports_flushed.notified();
        if inner.writes.pending_reports.load(Ordering::SeqCst) == 0 {
            break;
        }
        if tokio::time::timeout_at(flush_deadline, flushed).await.is_err() {
            tracing::error!(
                reports = inner.writes.pending_reports.load(Ordering::SeqCst),
                "could not write every task result before shutdown; those tasks will be recovered"
            );
            break;
        }
    }
    let released = inner.storage.release_runner(&inner.registration(), inner.now()).await;
    inner.life.stop_all.cancel();
    join_loops(&inner).await;
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

async fn join_loops(inner: &Inner) {
    let loops = std::mem::take(&mut *inner.loops());
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
    }
}
