//! The state a runner's handle and its loops share.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use cloacina_core::ports::{ExecutionEvent, FinishedSnapshot, NewExecution, RunnerRegistration, Storage, TaskReport};
use cloacina_core::{
    Cancellation, Clock, ExecutionId, FencingToken, RandomSource, SeededRandom, TaskExecutionId, Timestamp, Workflow,
    WorkflowRef, WorkflowSet,
};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::waiters::Waiters;
use crate::config::RunnerConfig;
use crate::error::{Result, RunnerError};

/// Jitter randomness seeded from the operating system.
#[derive(Debug)]
pub(crate) struct OsSeeded(SeededRandom);

impl OsSeeded {
    pub(crate) fn new() -> Self {
        Self(SeededRandom::new(rand::random()))
    }
}

impl RandomSource for OsSeeded {
    fn next_unit(&self) -> f64 {
        self.0.next_unit()
    }
}

/// The workflows a runner knows.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) by_name: HashMap<String, Workflow>,
    pub(crate) set: Arc<WorkflowSet>,
}

/// A task body this runner is running.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) execution: ExecutionId,
    pub(crate) token: FencingToken,
    pub(crate) cancel: Cancellation,
}

/// A submission waiting for the writer.
pub(crate) struct Submission {
    pub(crate) execution: NewExecution,
    pub(crate) reply: oneshot::Sender<Result<ExecutionId>>,
}

/// A task result that storage refused to write (it is kept and retried
/// until it commits): what a waiter of its execution is told.
#[derive(Debug, Clone)]
pub(crate) struct Unwritten {
    pub(crate) task: TaskExecutionId,
    pub(crate) problem: String,
}

/// A test-only hook called by every loop on every round with the loop's
/// name (see `DefaultRunnerBuilder::fault_hook`).
pub(crate) type FaultHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Where the runner's own work runs, apart from the application's.
#[derive(Debug, Clone)]
pub(crate) struct Runtimes {
    /// The engine runtime (threads of its own): every loop and every
    /// storage call, so task bodies that block their thread cannot starve
    /// heartbeats, commits or lease checks.
    pub(crate) engine: Handle,
    /// The application's runtime (where `build` was called): task bodies
    /// and trigger polls.
    pub(crate) app: Handle,
}

/// Slots, claims and the bodies in flight.
#[derive(Debug)]
pub(crate) struct Work {
    /// One permit per task body allowed to run.
    pub(crate) slots: Arc<Semaphore>,
    /// Set when ready work may be waiting in storage.
    pub(crate) backlog: AtomicBool,
    /// Wakes the writer to claim.
    pub(crate) wake: Notify,
    /// Bodies running now.
    pub(crate) running: Mutex<HashMap<TaskExecutionId, Running>>,
    /// Notified when `running` shrinks.
    pub(crate) running_changed: Notify,
    /// Tasks claimed by this runner whose outcome is not yet written.
    pub(crate) leased: Mutex<HashMap<TaskExecutionId, FencingToken>>,
}

/// What goes to the writer, and what it could not write.
#[derive(Debug)]
pub(crate) struct Writes {
    pub(crate) submit_tx: mpsc::Sender<Submission>,
    pub(crate) report_tx: mpsc::Sender<TaskReport>,
    /// Reports sent (or kept for a retry) but not yet written.
    pub(crate) pending_reports: AtomicUsize,
    pub(crate) reports_flushed: Notify,
    /// Executions with a result storage refused to write, by execution.
    pub(crate) unwritten: Mutex<HashMap<ExecutionId, Unwritten>>,
}

/// Start, stop and failure.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Shutdown phase 1: no new work is claimed or submitted.
    pub(crate) stop_claiming: CancellationToken,
    /// Shutdown phase 2: every loop ends.
    pub(crate) stop_all: CancellationToken,
    /// Cleared by `shutdown`, a fatal failure, or dropping the last handle.
    pub(crate) accepting: AtomicBool,
    /// Why the runner failed, if a loop did.
    pub(crate) fatal: OnceLock<String>,
    /// The supervised loops.
    pub(crate) loops: Mutex<Vec<JoinHandle<()>>>,
    /// Asks the recovery loop for a sweep now (a workflow was registered).
    pub(crate) sweep_now: Notify,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self {
            stop_claiming: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            fatal: OnceLock::new(),
            loops: Mutex::new(Vec::new()),
            sweep_now: Notify::new(),
        }
    }
}

/// State shared by the runner's handle and its loops.
pub(crate) struct Inner {
    pub(crate) config: RunnerConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: Arc<dyn RandomSource>,
    pub(crate) runtimes: Runtimes,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) registration: RwLock<RunnerRegistration>,
    pub(crate) work: Work,
    pub(crate) writes: Writes,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) events: broadcast::Sender<ExecutionEvent>,
    pub(crate) life: Lifecycle,
    /// Names of the triggers polled by this runner.
    pub(crate) triggers: Mutex<HashSet<String>>,
    pub(crate) fault_hook: Option<FaultHook>,
    /// Stranded versions seen and reported by the recovery sweeps.
    pub(crate) stranded: Mutex<super::liveness::StrandedWatch>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("storage", &self.storage.describe()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn workflows(&self) -> Arc<WorkflowSet> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).set.clone()
    }

    pub(crate) fn workflow(&self, r: &WorkflowRef) -> Option<Workflow> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).set.get(r).cloned()
    }

    /// This runner's registration, with the workflow versions it serves
    /// now.
    pub(crate) fn registration(&self) -> RunnerRegistration {
        let mut r = self.registration.read().unwrap_or_else(|e| e.into_inner()).clone();
        r.serves = self.workflows().refs();
        r
    }

    /// Marks that ready work may be waiting and wakes the writer.
    pub(crate) fn signal_work(&self) {
        self.work.backlog.store(true, Ordering::SeqCst);
        self.work.wake.notify_one();
    }

    pub(crate) fn publish(&self, events: &[ExecutionEvent]) {
        if self.events.receiver_count() > 0 {
            for e in events {
                let _ = self.events.send(e.clone());
            }
        }
    }

    /// Tells local waiters that an execution finished.
    pub(crate) fn finished(&self, id: ExecutionId, snapshot: Option<Arc<FinishedSnapshot>>) {
        lock(&self.writes.unwritten).remove(&id);
        self.waiters.finished(id, snapshot);
    }

    /// Signals the running tasks of an execution to stop.
    pub(crate) fn cancel_running(&self, id: ExecutionId) {
        for r in lock(&self.work.running).values().filter(|r| r.execution == id) {
            r.cancel.cancel();
        }
    }

    /// Signals every running task to stop.
    pub(crate) fn cancel_all_running(&self) -> usize {
        let running = lock(&self.work.running);
        for r in running.values() {
            r.cancel.cancel();
        }
        running.len()
    }

    /// Records that a result of execution `id` cannot be written (and tells
    /// its waiters), or that it was written after all.
    pub(crate) fn set_unwritten(&self, id: ExecutionId, state: Option<Unwritten>) {
        let changed = match state {
            Some(u) => lock(&self.writes.unwritten).insert(id, u).is_none(),
            None => lock(&self.writes.unwritten).remove(&id).is_some(),
        };
        if changed {
            self.waiters.check([id]);
        }
    }

    /// A result of execution `id` that storage refused to write, if any.
    pub(crate) fn unwritten(&self, id: ExecutionId) -> Option<Unwritten> {
        lock(&self.writes.unwritten).get(&id).cloned()
    }

    /// The fault hook of the loop `name` (tests only).
    pub(crate) fn checkpoint(&self, name: &'static str) {
        if let Some(hook) = &self.fault_hook {
            hook(name);
        }
    }

    /// The error every call returns once the runner failed or stopped.
    pub(crate) fn stopped_error(&self) -> RunnerError {
        match self.life.fatal.get() {
            Some(message) => RunnerError::Fatal { message: message.clone() },
            None => RunnerError::ShutDown,
        }
    }

    /// Runs `fut` on the engine runtime: storage I/O always happens there,
    /// on connections the engine opened.
    pub(crate) async fn on_engine<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        match self.runtimes.engine.spawn(fut).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(RunnerError::Fatal {
                message: format!("a storage call panicked: {}", super::execute::panic_text(e)),
            }),
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Takes `lock(&self.work.leased)`.
    pub(crate) fn leased(&self) -> std::sync::MutexGuard<'_, HashMap<TaskExecutionId, FencingToken>> {
        lock(&self.work.leased)
    }

    /// Takes `lock(&self.work.running)`.
    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<TaskExecutionId, Running>> {
        lock(&self.work.running)
    }

    /// Takes the supervised loops' list.
    pub(crate) fn loops(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        lock(&self.life.loops)
    }

    /// Takes the trigger names.
    pub(crate) fn trigger_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.triggers)
    }
}
