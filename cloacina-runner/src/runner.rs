//! [`DefaultRunner`]: the public API and the state its loops share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cloacina_core::ports::{
    ExecutionEvent, ExecutionFilter, ExecutionRecord, FinishedSnapshot, NewExecution, RunnerRegistration, Storage,
    TaskReport,
};
use cloacina_core::{
    Cancellation, Clock, Context, ExecutionId, RandomSource, RunnerId, SeededRandom, TaskExecutionId, TaskState,
    Workflow, WorkflowRef, WorkflowSet, WorkflowState, plan,
};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{DefaultRunnerBuilder, RunnerConfig};
use crate::engine;
use crate::error::{Result, RunnerError};
use crate::result::{EventStream, ExecutionHandle, ExecutionResult, TaskOutcome};

/// Redacts a URL's password for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(c) => format!("{}{}:***{}", &url[..scheme_end + 3], &rest[..c], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

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
    pub(crate) token: cloacina_core::FencingToken,
    pub(crate) cancel: Cancellation,
}

/// What a waiter learns when its execution finishes.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    /// The rows as the finishing call had them (when this runner finished it).
    pub(crate) snapshot: Option<Arc<FinishedSnapshot>>,
}

/// A submission waiting for the submit loop.
pub(crate) struct Submission {
    pub(crate) execution: NewExecution,
    pub(crate) reply: oneshot::Sender<Result<ExecutionId>>,
}

/// State shared by the runner's handle and its loops.
pub(crate) struct Inner {
    pub(crate) config: RunnerConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: Arc<dyn RandomSource>,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) registration: RwLock<RunnerRegistration>,
    /// One permit per task body allowed to run.
    pub(crate) slots: Arc<Semaphore>,
    /// Set when ready work may be waiting in storage.
    pub(crate) backlog: AtomicBool,
    /// Wakes the dispatcher.
    pub(crate) wake: Notify,
    pub(crate) submit_tx: mpsc::UnboundedSender<Submission>,
    pub(crate) report_tx: mpsc::UnboundedSender<TaskReport>,
    /// Reports sent but not yet written.
    pub(crate) pending_reports: AtomicUsize,
    pub(crate) reports_flushed: Notify,
    pub(crate) running: Mutex<HashMap<TaskExecutionId, Running>>,
    /// Tasks claimed by this runner whose outcome is not yet written.
    pub(crate) leased: Mutex<HashMap<TaskExecutionId, cloacina_core::FencingToken>>,
    pub(crate) running_changed: Notify,
    pub(crate) waiters: Mutex<HashMap<ExecutionId, Vec<oneshot::Sender<Finished>>>>,
    pub(crate) events: broadcast::Sender<ExecutionEvent>,
    /// Shutdown phase 1: no new work is claimed or submitted.
    pub(crate) stop_claiming: CancellationToken,
    /// Shutdown phase 2: every loop ends.
    pub(crate) stop_all: CancellationToken,
    pub(crate) accepting: AtomicBool,
    pub(crate) loops: Mutex<Vec<JoinHandle<()>>>,
    /// Names of the triggers polled by this runner.
    pub(crate) triggers: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("storage", &self.storage.describe()).finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn now(&self) -> cloacina_core::Timestamp {
        self.clock.now()
    }

    pub(crate) fn workflows(&self) -> Arc<WorkflowSet> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).set.clone()
    }

    pub(crate) fn workflow(&self, r: &WorkflowRef) -> Option<Workflow> {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).set.get(r).cloned()
    }

    pub(crate) fn registration(&self) -> RunnerRegistration {
        self.registration.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks that ready work may be waiting and wakes the dispatcher.
    pub(crate) fn signal_work(&self) {
        self.backlog.store(true, Ordering::SeqCst);
        self.wake.notify_one();
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
        let waiting = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        for w in waiting.into_iter().flatten() {
            let _ = w.send(Finished { snapshot: snapshot.clone() });
        }
    }

    pub(crate) fn register_waiter(&self, id: ExecutionId) -> oneshot::Receiver<Finished> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().push(tx);
        rx
    }

    pub(crate) fn forget_waiters(&self, id: ExecutionId) {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Signals the running tasks of an execution to stop.
    pub(crate) fn cancel_running(&self, id: ExecutionId) {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.values().filter(|r| r.execution == id) {
            r.cancel.cancel();
        }
    }
}

/// Cancels the loops when the last handle of a runner is dropped without
/// `shutdown`: nothing waits, nothing hangs; leases expire and are
/// recovered by another runner.
#[derive(Debug)]
struct DropGuard {
    inner: Arc<Inner>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.inner.accepting.swap(false, Ordering::SeqCst) {
            self.inner.stop_claiming.cancel();
            self.inner.stop_all.cancel();
            let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
            for r in running.values() {
                r.cancel.cancel();
            }
        }
    }
}

/// Runs workflows durably, inside the application's process, on SQLite or
/// PostgreSQL. Cheap to clone; all clones are the same runner.
///
/// ```no_run
/// use cloacina_runner::{task_fn, Context, DefaultRunner, TaskError, TaskSpec, Workflow, WorkflowState};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let hello = task_fn(|mut ctx: Context| async move {
///     ctx.insert("greeting", "hello")?;
///     Ok::<_, TaskError>(ctx)
/// });
/// let wf = Workflow::builder("greet").task(TaskSpec::new("hello", hello)).build()?;
///
/// let runner = DefaultRunner::new("sqlite://app.db").await?;
/// runner.register_workflow(wf)?;
/// let result = runner.execute("greet", Context::new()).await?;
/// assert_eq!(result.status, WorkflowState::Completed);
/// assert_eq!(result.context.get_as::<String>("greeting")?, "hello");
/// runner.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DefaultRunner {
    pub(crate) inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl DefaultRunner {
    /// A runner on the legacy layout: PostgreSQL `public`, or the base
    /// SQLite file. All other settings at their defaults.
    pub async fn new(database_url: &str) -> Result<Self> {
        Self::builder().database_url(database_url).build().await
    }

    /// A runner on one tenant: a PostgreSQL schema, or a SQLite file next
    /// to the base file (`data/app.db` + `acme` → `data/app.acme.db`).
    pub async fn with_schema(database_url: &str, tenant: &str) -> Result<Self> {
        Self::builder().database_url(database_url).schema(tenant).build().await
    }

    /// A builder with every setting at its default.
    pub fn builder() -> DefaultRunnerBuilder {
        DefaultRunnerBuilder::default()
    }

    pub(crate) async fn start(
        config: RunnerConfig,
        workflows: Vec<Workflow>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn RandomSource>,
    ) -> Result<Self> {
        let storage = crate::backend::open_storage(&config).await?;
        let registration = RunnerRegistration {
            id: config.runner_id.clone().unwrap_or_else(RunnerId::generate),
            name: config.runner_name.clone(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            lease_ttl: config.recovery.lease_ttl(),
        };
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            slots: Arc::new(Semaphore::new(config.max_concurrent_tasks)),
            config,
            storage,
            clock,
            random,
            registry: RwLock::new(Registry::default()),
            registration: RwLock::new(registration),
            backlog: AtomicBool::new(true),
            wake: Notify::new(),
            submit_tx,
            report_tx,
            pending_reports: AtomicUsize::new(0),
            reports_flushed: Notify::new(),
            running: Mutex::new(HashMap::new()),
            leased: Mutex::new(HashMap::new()),
            running_changed: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            events: broadcast::channel(4096).0,
            stop_claiming: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            loops: Mutex::new(Vec::new()),
            triggers: Mutex::new(std::collections::HashSet::new()),
        });
        let runner = Self { _guard: Arc::new(DropGuard { inner: inner.clone() }), inner };
        for wf in workflows {
            runner.register_workflow(wf)?;
        }
        let report = runner.inner.storage.open_report();
        tracing::info!(
            storage = %runner.inner.storage.describe(),
            runner = %runner.inner.registration().id,
            created = report.created,
            migrations_applied = ?report.migrations_applied,
            "runner starting"
        );
        if let Err(e) = runner.inner.storage.maintain().await {
            tracing::debug!("storage maintenance failed: {e}");
        }
        engine::liveness::register(&runner.inner).await?;
        if runner.inner.config.enable_recovery {
            engine::liveness::recover_now(&runner.inner).await?;
        }
        engine::start_loops(&runner.inner, submit_rx, report_rx).await?;
        Ok(runner)
    }

    /// Registers a workflow on this runner (never process-wide). The same
    /// workflow again is accepted; a different shape under a registered
    /// name is [`RunnerError::WorkflowConflict`].
    pub fn register_workflow(&self, wf: Workflow) -> Result<()> {
        let mut reg = self.inner.registry.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = reg.by_name.get(wf.name()) {
            if existing.version() == wf.version() {
                return Ok(());
            }
            return Err(RunnerError::WorkflowConflict {
                name: wf.name().to_owned(),
                existing: existing.version().to_owned(),
                new: wf.version().to_owned(),
            });
        }
        let mut set = (*reg.set).clone();
        set.insert(wf.clone());
        reg.set = Arc::new(set);
        reg.by_name.insert(wf.name().to_owned(), wf);
        drop(reg);
        // Work of this workflow may already be waiting.
        self.inner.signal_work();
        Ok(())
    }

    /// Names of the registered workflows, sorted.
    pub fn workflow_names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.inner.registry.read().unwrap_or_else(|e| e.into_inner()).by_name.keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn lookup(&self, name: &str) -> Result<Workflow> {
        let reg = self.inner.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.by_name.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<String> = reg.by_name.keys().cloned().collect();
            known.sort();
            RunnerError::UnknownWorkflow { name: name.to_owned(), known }
        })
    }

    /// Runs workflow `name` with `input` and waits until it reaches a
    /// terminal state. A workflow that ran and failed is `Ok` with status
    /// `Failed`; `Err` means the runner could not do its part.
    pub async fn execute(&self, name: &str, input: Context) -> Result<ExecutionResult> {
        let wf = self.lookup(name)?;
        let execution = NewExecution::plan(&wf, input, "api", self.inner.now());
        let id = execution.id;
        // Listen before submitting: the execution may finish at once.
        let rx = self.inner.register_waiter(id);
        if let Err(e) = self.submit_planned(execution).await {
            self.inner.forget_waiters(id);
            return Err(e);
        }
        self.await_finish(id, rx, None).await
    }

    /// Starts workflow `name` with `input`; returns once the execution and
    /// all its task rows are stored.
    pub async fn execute_async(&self, name: &str, input: Context) -> Result<ExecutionHandle> {
        self.submit(name, input, "api").await
    }

    pub(crate) async fn submit(&self, name: &str, input: Context, origin: &str) -> Result<ExecutionHandle> {
        let wf = self.lookup(name)?;
        let execution = NewExecution::plan(&wf, input, origin, self.inner.now());
        let id = execution.id;
        self.submit_planned(execution).await?;
        Ok(ExecutionHandle { id, runner: self.clone() })
    }

    async fn submit_planned(&self, execution: NewExecution) -> Result<()> {
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(RunnerError::ShutDown);
        }
        let (reply, rx) = oneshot::channel();
        self.inner.submit_tx.send(Submission { execution, reply }).map_err(|_| RunnerError::ShutDown)?;
        rx.await.map_err(|_| RunnerError::ShutDown)??;
        Ok(())
    }

    /// A handle on an existing execution.
    pub fn handle(&self, id: ExecutionId) -> ExecutionHandle {
        ExecutionHandle { id, runner: self.clone() }
    }

    /// The state of an execution.
    pub async fn status(&self, id: ExecutionId) -> Result<WorkflowState> {
        let states = self.inner.storage.execution_states(&[id]).await?;
        states.first().map(|(_, s)| *s).ok_or(RunnerError::ExecutionNotFound { id })
    }

    /// The result of an execution so far: its state, its context (final
    /// once terminal, see [`ExecutionResult::context`]) and each task's
    /// outcome.
    pub async fn result(&self, id: ExecutionId) -> Result<ExecutionResult> {
        let storage = &self.inner.storage;
        let exec = storage.execution(id).await?.ok_or(RunnerError::ExecutionNotFound { id })?;
        let tasks = storage.tasks(id).await?;
        let context = match self.inner.workflow(&exec.workflow) {
            Some(wf) if wf.len() == tasks.len() => {
                let mut states = vec![TaskState::NotStarted; wf.len()];
                for t in &tasks {
                    if let Some(i) = wf.index_of(&t.name) {
                        states[i] = t.state;
                    }
                }
                let frontier = plan::frontier(&wf, &states);
                let names: Vec<String> = frontier.iter().map(|&i| wf.tasks()[i].id().to_owned()).collect();
                if names.is_empty() {
                    exec.input.clone()
                } else {
                    let outputs = storage.outputs(id, &names).await?;
                    let by_index: HashMap<usize, Context> =
                        outputs.into_iter().filter_map(|(n, c)| wf.index_of(&n).map(|i| (i, c))).collect();
                    plan::final_context(&wf, &states, plan::ContextSource { input: &exec.input, outputs: &by_index })
                }
            }
            // A version this runner does not know: merge every completed
            // output in stored (topological) order.
            _ => {
                let outputs = storage.outputs(id, &[]).await?;
                let ordered = tasks.iter().filter_map(|t| outputs.get(&t.name));
                let merged = Context::merge_outputs(ordered);
                if outputs.is_empty() { exec.input.clone() } else { merged }
            }
        };
        Ok(build_result(exec, tasks, context))
    }

    /// Executions of this tenant matching `filter`, newest first.
    pub async fn list_executions(&self, filter: ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        Ok(self.inner.storage.list_executions(&filter).await?)
    }

    /// Cancels an execution: no further task starts; running tasks get the
    /// cancellation signal and are dropped after the grace period; waiters
    /// return promptly with `Cancelled`.
    pub async fn cancel(&self, id: ExecutionId) -> Result<()> {
        let effects =
            self.inner.storage.cancel(id, "cancelled by user", self.inner.now()).await.map_err(|e| not_found(e, id))?;
        engine::apply_effects(&self.inner, effects, None);
        self.inner.cancel_running(id);
        Ok(())
    }

    /// Pauses an execution: no new task of it starts until
    /// [`resume`](Self::resume); running tasks finish.
    pub async fn pause(&self, id: ExecutionId) -> Result<()> {
        let effects = self.inner.storage.pause(id, self.inner.now()).await.map_err(|e| not_found(e, id))?;
        engine::apply_effects(&self.inner, effects, None);
        Ok(())
    }

    /// Resumes a paused execution.
    pub async fn resume(&self, id: ExecutionId) -> Result<()> {
        let effects = self.inner.storage.resume(id, self.inner.now()).await.map_err(|e| not_found(e, id))?;
        engine::apply_effects(&self.inner, effects, None);
        Ok(())
    }

    /// The recorded history of an execution, oldest first.
    pub async fn history(&self, id: ExecutionId) -> Result<Vec<ExecutionEvent>> {
        Ok(self.inner.storage.events(id).await?)
    }

    /// A live stream of the state changes this runner makes, for in-process
    /// subscribers. Changes made by other runners are in
    /// [`history`](Self::history).
    pub fn subscribe_events(&self) -> EventStream {
        EventStream::new(self.inner.events.subscribe())
    }

    /// The runner's id in the liveness table.
    pub fn runner_id(&self) -> RunnerId {
        self.inner.registration().id
    }

    /// What opening the storage did (schema or file created, migrations
    /// applied).
    pub fn storage_report(&self) -> cloacina_core::ports::OpenReport {
        self.inner.storage.open_report()
    }

    /// The settings in use.
    pub fn config(&self) -> &RunnerConfig {
        &self.inner.config
    }

    /// Stops the runner: claims stop; running tasks get the grace period to
    /// finish (their results are written); the rest are cancelled and their
    /// leases released so another runner takes them at once; pools close.
    /// Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        engine::shutdown(&self.inner).await
    }

    pub(crate) async fn wait_for(&self, id: ExecutionId, timeout: Option<Duration>) -> Result<ExecutionResult> {
        let rx = self.inner.register_waiter(id);
        match self.status(id).await {
            Ok(s) if s.is_terminal() => {
                self.inner.forget_waiters(id);
                self.result(id).await
            }
            Ok(_) => self.await_finish(id, rx, timeout).await,
            Err(e) => {
                self.inner.forget_waiters(id);
                Err(e)
            }
        }
    }

    async fn await_finish(
        &self,
        id: ExecutionId,
        rx: oneshot::Receiver<crate::runner::Finished>,
        timeout: Option<Duration>,
    ) -> Result<ExecutionResult> {
        let wait = async {
            tokio::select! {
                r = rx => r.map_err(|_| RunnerError::ShutDown),
                _ = self.inner.stop_all.cancelled() => Err(RunnerError::ShutDown),
            }
        };
        let finished = match timeout {
            Some(d) => {
                tokio::time::timeout(d, wait).await.map_err(|_| RunnerError::WaitTimeout { id, waited: d })??
            }
            None => wait.await?,
        };
        if let Some(result) = finished.snapshot.as_deref().and_then(|s| self.result_from_snapshot(s)) {
            return Ok(result);
        }
        self.result(id).await
    }

    /// The result from the rows the finishing transaction had, when they
    /// hold every output the final context needs.
    fn result_from_snapshot(&self, s: &FinishedSnapshot) -> Option<ExecutionResult> {
        let wf = self.inner.workflow(&s.execution.workflow)?;
        if wf.len() != s.tasks.len() {
            return None;
        }
        let mut states = vec![TaskState::NotStarted; wf.len()];
        for t in &s.tasks {
            states[wf.index_of(&t.name)?] = t.state;
        }
        let frontier = plan::frontier(&wf, &states);
        let context = if frontier.is_empty() {
            if !s.input_loaded {
                return None;
            }
            s.execution.input.clone()
        } else {
            let mut outputs = HashMap::new();
            for i in frontier {
                let name = wf.tasks()[i].id();
                outputs.insert(i, s.outputs.get(name)?.clone());
            }
            let empty = Context::new();
            plan::final_context(&wf, &states, plan::ContextSource { input: &empty, outputs: &outputs })
        };
        let mut tasks = s.tasks.clone();
        tasks.sort_by_key(|t| wf.index_of(&t.name));
        Some(build_result(s.execution.clone(), tasks, context))
    }
}

fn not_found(e: cloacina_core::ports::StorageError, id: ExecutionId) -> RunnerError {
    match e {
        cloacina_core::ports::StorageError::NotFound { .. } => RunnerError::ExecutionNotFound { id },
        other => RunnerError::Storage(other),
    }
}

fn build_result(
    exec: ExecutionRecord,
    tasks: Vec<cloacina_core::ports::TaskRecord>,
    context: Context,
) -> ExecutionResult {
    ExecutionResult {
        id: exec.id,
        workflow: exec.workflow.name,
        workflow_version: exec.workflow.version,
        status: exec.state,
        context,
        tasks: tasks
            .into_iter()
            .map(|t| TaskOutcome {
                task: t.name,
                state: t.state,
                attempts: if t.started_at.is_none() { 0 } else { t.attempt },
                recoveries: t.recovery_count,
                error: t.error,
            })
            .collect(),
        error: exec.error,
        created_at: exec.created_at,
        finished_at: exec.finished_at,
    }
}
