//! [`DefaultRunner`]: the public API.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cloacina_core::ports::{ExecutionEvent, ExecutionFilter, ExecutionRecord, NewExecution, RunnerRegistration};
use cloacina_core::{Clock, Context, ExecutionId, RandomSource, RunnerId, Workflow, WorkflowState};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot};

use crate::config::{DefaultRunnerBuilder, RunnerConfig};
use crate::engine::state::{FaultHook, Inner, Lifecycle, Registry, Runtimes, Submission, Work, Writes};
use crate::engine::waiters::{Waiter, Waiters, Wake};
use crate::engine::{self, EngineRuntime};
use crate::error::{Result, RunnerError};
use crate::result::{self, EventStream, ExecutionHandle, ExecutionResult};

/// Executions queued for the writer before `execute` waits for room.
const SUBMIT_QUEUE: usize = 4 * engine::write::WRITE_BATCH;

/// Stops the runner when the last handle of it is dropped without
/// `shutdown`: nothing waits, nothing hangs; leases expire and are
/// recovered by another runner. Owns the engine runtime.
#[derive(Debug)]
struct DropGuard {
    inner: Arc<Inner>,
    engine: EngineRuntime,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.inner.life.accepting.swap(false, Ordering::SeqCst) {
            self.inner.life.stop_claiming.cancel();
            self.inner.life.stop_all.cancel();
            self.inner.cancel_all_running();
        }
        self.engine.stop();
    }
}

/// Runs workflows durably, inside the application's process, on SQLite or
/// PostgreSQL. Cheap to clone; all clones are the same runner.
///
/// The runner's own work — commits, claims, heartbeats, recovery, the
/// supervision of task bodies — runs on threads of its own; task bodies and
/// trigger polls run on the application's Tokio runtime (the one `build`
/// was called on). A body that blocks its thread (`std::thread::sleep`,
/// blocking I/O) therefore cannot delay the runner's heartbeats, but it does
/// hold one of the application's worker threads — and with it the other
/// bodies and tasks queued on that thread — for as long as it blocks, and a
/// timeout cannot interrupt it until it next awaits. Run blocking work in
/// `tokio::task::spawn_blocking`.
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
    guard: Arc<DropGuard>,
}

impl DefaultRunner {
    /// A runner on the legacy layout: PostgreSQL `public`, or the base
    /// SQLite file. All other settings at their defaults.
    pub async fn new(database_url: impl AsRef<str>) -> Result<Self> {
        Self::builder().database_url(database_url.as_ref()).build().await
    }

    /// A runner on one tenant: a PostgreSQL schema, or a SQLite file next
    /// to the base file (`data/app.db` + `acme` → `data/app.acme.db`).
    pub async fn with_tenant(database_url: impl AsRef<str>, tenant: impl AsRef<str>) -> Result<Self> {
        Self::builder().database_url(database_url.as_ref()).tenant(tenant.as_ref()).build().await
    }

    /// The same as [`with_tenant`](Self::with_tenant): the name this
    /// constructor had in the first release, kept for code written
    /// against it.
    pub async fn with_schema(database_url: impl AsRef<str>, tenant: impl AsRef<str>) -> Result<Self> {
        Self::with_tenant(database_url, tenant).await
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
        fault_hook: Option<FaultHook>,
    ) -> Result<Self> {
        let app = tokio::runtime::Handle::current();
        let (engine, engine_handle) = EngineRuntime::start()?;
        // Connections are opened by the engine runtime, which alone uses them.
        let opening = config.clone();
        let storage = match engine_handle.spawn(async move { crate::backend::open_storage(&opening).await }).await {
            Ok(r) => r?,
            Err(e) => {
                return Err(RunnerError::Fatal {
                    message: format!("opening the storage panicked: {}", engine::execute::panic_text(e)),
                });
            }
        };
        let registration = RunnerRegistration {
            id: config.runner_id.clone().unwrap_or_else(RunnerId::generate),
            name: config.runner_name.clone(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            lease_ttl: config.recovery.lease_ttl(),
            serves: Vec::new(),
        };
        let (submit_tx, submit_rx) = mpsc::channel(SUBMIT_QUEUE);
        let (report_tx, report_rx) = mpsc::channel(config.max_concurrent_tasks.clamp(64, 4096));
        let inner = Arc::new(Inner {
            work: Work {
                slots: Arc::new(Semaphore::new(config.max_concurrent_tasks)),
                backlog: AtomicBool::new(true),
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
                running_changed: Notify::new(),
                leased: Mutex::new(HashMap::new()),
            },
            writes: Writes {
                submit_tx,
                report_tx,
                pending_reports: AtomicUsize::new(0),
                reports_flushed: Notify::new(),
                unwritten: Mutex::new(HashMap::new()),
            },
            config,
            storage,
            clock,
            random,
            runtimes: Runtimes { engine: engine_handle, app },
            registry: RwLock::new(Registry::default()),
            registration: RwLock::new(registration),
            waiters: Arc::new(Waiters::default()),
            events: broadcast::channel(4096).0,
            life: Lifecycle::new(),
            triggers: Mutex::new(HashSet::new()),
            stranded: Mutex::default(),
            fault_hook,
        });
        let runner = Self { guard: Arc::new(DropGuard { inner: inner.clone(), engine }), inner };
        for wf in workflows {
            runner.register_workflow(wf)?;
        }
        let starting = runner.inner.clone();
        runner
            .inner
            .on_engine(async move {
                let report = starting.storage.open_report();
                tracing::info!(
                    storage = %starting.storage.describe(),
                    runner = %starting.registration().id,
                    created = report.created,
                    migrations_applied = ?report.migrations_applied,
                    "runner starting"
                );
                if let Err(e) = starting.storage.maintain().await {
                    tracing::debug!("storage maintenance failed: {e}");
                }
                engine::liveness::register(&starting).await?;
                if starting.config.enable_recovery {
                    // Every dead runner's tasks, of every workflow: requeueing
                    // needs no workflow code.
                    engine::liveness::recover_now(&starting).await?;
                }
                engine::start_loops(&starting, submit_rx, report_rx).await
            })
            .await?;
        Ok(runner)
    }

    /// Registers a workflow on this runner (never process-wide).
    ///
    /// What an execution's stored rows mean is fixed by its workflow's
    /// *shape* (task ids and dependencies, [`Workflow::version`]); bodies,
    /// retry policies, trigger rules and timeouts are *behaviour*:
    ///
    /// * **The same shape again** (a deploy that changed bodies or
    ///   policies) replaces the registered definition: every unfinished
    ///   execution of that shape, old ones included, is served with what
    ///   is registered now. Policies apply from a task's next attempt on;
    ///   an attempt in flight keeps the timeout it started with.
    /// * **A different shape** under a registered name is registered
    ///   beside it: each version serves its own executions, and the one
    ///   registered last is *current* — new executions, schedules and
    ///   triggers use it. During a rolling deploy, runners with the old
    ///   version finish the old executions while new ones use the new.
    ///
    /// Executions of a version no live runner registers are reported (a
    /// warning naming workflow, version and count, and
    /// [`stranded_executions`](Self::stranded_executions)); register that
    /// version again, cancel them, or move them with
    /// [`migrate_executions`](Self::migrate_executions).
    pub fn register_workflow(&self, wf: Workflow) -> Result<()> {
        let mut reg = self.inner.registry.write().unwrap_or_else(|e| e.into_inner());
        let mut set = (*reg.set).clone();
        if let Some(old) = set.insert(wf.clone()) {
            let changes = wf.behaviour_changes(&old);
            tracing::info!(
                workflow = wf.name(),
                version = wf.version(),
                label = ?wf.label(),
                previous_label = ?old.label(),
                changed_bodies = ?changes.bodies,
                changed_policies = ?changes.policies,
                bodies_without_fingerprint = ?changes.unknown_bodies,
                "workflow registered again with the same shape: its bodies and policies are replaced (from each task's next attempt)"
            );
        } else if reg.by_name.contains_key(wf.name()) {
            tracing::info!(
                workflow = wf.name(),
                version = wf.version(),
                label = ?wf.label(),
                "another version of a registered workflow: both are served, new executions use this one"
            );
        }
        reg.set = Arc::new(set);
        reg.by_name.insert(wf.name().to_owned(), wf);
        drop(reg);
        // Work of this workflow may already be waiting, and its orphans may
        // be due to be abandoned (which needs the workflow).
        self.inner.signal_work();
        self.inner.life.sweep_now.notify_one();
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

    /// Runs `f` with the storage on the engine runtime.
    pub(crate) async fn storage_call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.inner.on_engine(f(self.inner.clone())).await
    }

    /// Runs workflow `name` with `input` and waits until it reaches a
    /// terminal state. A workflow that ran and failed is `Ok` with status
    /// `Failed`; `Err` means the runner could not do its part — the
    /// execution vanished ([`RunnerError::ExecutionNotFound`]), its rows or
    /// a result cannot be read or written ([`RunnerError::Storage`],
    /// [`RunnerError::ResultNotWritten`]), or the runner stopped.
    ///
    /// The input must fit `context_size_limit` (else
    /// [`RunnerError::InputTooLarge`], and nothing is stored).
    pub async fn execute(&self, name: impl AsRef<str>, input: Context) -> Result<ExecutionResult> {
        self.execute_within(name.as_ref(), input, None).await
    }

    /// Like [`execute`](Self::execute), giving up waiting after `timeout`
    /// with [`RunnerError::WaitTimeout`] (naming the execution, which goes
    /// on: wait for it again with [`handle`](Self::handle)). The timeout
    /// counts from when the execution is stored: submitting it may wait
    /// first while the writer's queue is full.
    ///
    /// ```no_run
    /// # async fn demo(runner: cloacina_runner::DefaultRunner) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use cloacina_runner::{Context, RunnerError};
    /// match runner.execute_timeout("etl", Context::new(), Duration::from_secs(30)).await {
    ///     Ok(result) => println!("{}", result.status),
    ///     Err(RunnerError::WaitTimeout { id, .. }) => println!("{id} still runs"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn execute_timeout(
        &self,
        name: impl AsRef<str>,
        input: Context,
        timeout: std::time::Duration,
    ) -> Result<ExecutionResult> {
        self.execute_within(name.as_ref(), input, Some(timeout)).await
    }

    async fn execute_within(
        &self,
        name: &str,
        input: Context,
        timeout: Option<std::time::Duration>,
    ) -> Result<ExecutionResult> {
        let execution = self.plan(name, input, "api")?;
        let id = execution.id;
        // Listen before submitting: the execution may finish at once.
        let waiter = self.inner.waiters.register(id);
        self.submit_planned(execution).await?;
        self.wait_on(id, waiter, timeout, false).await
    }

    /// Starts workflow `name` with `input`; returns once the execution and
    /// all its task rows are stored. Waits while the writer's queue is full.
    /// The handle is a future of the result (`handle.await`).
    pub async fn execute_async(&self, name: impl AsRef<str>, input: Context) -> Result<ExecutionHandle> {
        self.submit(name.as_ref(), input, "api").await
    }

    fn plan(&self, name: &str, input: Context, origin: &str) -> Result<NewExecution> {
        let wf = self.lookup(name)?;
        input.check()?;
        let size = input.serialized_size();
        let limit = self.inner.config.context_size_limit;
        if size > limit {
            return Err(RunnerError::InputTooLarge { size, limit });
        }
        Ok(NewExecution::plan(&wf, input, origin, self.inner.now()))
    }

    pub(crate) async fn submit(&self, name: &str, input: Context, origin: &str) -> Result<ExecutionHandle> {
        let execution = self.plan(name, input, origin)?;
        let id = execution.id;
        self.submit_planned(execution).await?;
        Ok(ExecutionHandle { id, runner: self.clone() })
    }

    async fn submit_planned(&self, execution: NewExecution) -> Result<()> {
        if !self.inner.life.accepting.load(Ordering::SeqCst) {
            return Err(self.inner.stopped_error());
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .writes
            .submit_tx
            .send(Submission { execution, reply })
            .await
            .map_err(|_| self.inner.stopped_error())?;
        rx.await.map_err(|_| self.inner.stopped_error())??;
        Ok(())
    }

    /// A handle on an existing execution.
    pub fn handle(&self, id: ExecutionId) -> ExecutionHandle {
        ExecutionHandle { id, runner: self.clone() }
    }

    /// The state of an execution. An execution whose rows cannot be read
    /// (its own row or any task row) is [`StorageError::CorruptRow`]
    /// (in [`RunnerError::Storage`]) naming the row, never a state.
    ///
    /// [`StorageError::CorruptRow`]: cloacina_core::ports::StorageError::CorruptRow
    pub async fn status(&self, id: ExecutionId) -> Result<WorkflowState> {
        self.storage_call(move |inner| async move { checked_status(&inner, id).await }).await
    }

    /// The result of an execution so far: its state, its context (final
    /// once terminal, see [`ExecutionResult::context`]) and each task's
    /// outcome.
    pub async fn result(&self, id: ExecutionId) -> Result<ExecutionResult> {
        self.storage_call(move |inner| async move { result::load(&inner, id).await }).await
    }

    /// Executions of this tenant matching `filter`, newest first. A row
    /// that cannot be read is left out of the list (and logged, naming
    /// it); [`status`](Self::status) of its id names the problem.
    pub async fn list_executions(&self, filter: ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        self.storage_call(move |inner| async move { Ok(inner.storage.list_executions(&filter).await?) }).await
    }

    /// Cancels an execution: no further task starts; running tasks get the
    /// cancellation signal and are dropped after the grace period; waiters
    /// return promptly with `Cancelled`.
    pub async fn cancel(&self, id: ExecutionId) -> Result<()> {
        self.storage_call(move |inner| async move {
            let effects = inner
                .storage
                .cancel(id, "cancelled by user", inner.now())
                .await
                .map_err(|e| control_error(e, id, Control::Cancel))?;
            engine::apply_effects(&inner, effects, None);
            inner.cancel_running(id);
            Ok(())
        })
        .await
    }

    /// Pauses an execution: no new task of it starts until
    /// [`resume`](Self::resume); running tasks finish.
    pub async fn pause(&self, id: ExecutionId) -> Result<()> {
        self.storage_call(move |inner| async move {
            let effects =
                inner.storage.pause(id, inner.now()).await.map_err(|e| control_error(e, id, Control::Pause))?;
            engine::apply_effects(&inner, effects, None);
            Ok(())
        })
        .await
    }

    /// Resumes a paused execution.
    pub async fn resume(&self, id: ExecutionId) -> Result<()> {
        self.storage_call(move |inner| async move {
            let effects =
                inner.storage.resume(id, inner.now()).await.map_err(|e| control_error(e, id, Control::Resume))?;
            engine::apply_effects(&inner, effects, None);
            Ok(())
        })
        .await
    }

    /// The recorded history of an execution, oldest first.
    pub async fn history(&self, id: ExecutionId) -> Result<Vec<ExecutionEvent>> {
        self.storage_call(move |inner| async move { Ok(inner.storage.events(id).await?) }).await
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
    /// Idempotent. If the runner had failed (a background loop panicked),
    /// returns [`RunnerError::Fatal`] saying what happened.
    pub async fn shutdown(&self) -> Result<()> {
        if self.guard.engine.is_stopped() {
            return match self.inner.life.fatal.get() {
                Some(message) => Err(RunnerError::Fatal { message: message.clone() }),
                None => Ok(()),
            };
        }
        let inner = self.inner.clone();
        let done = self.inner.on_engine(engine::shutdown(inner)).await;
        // The engine's work is done: stop its threads.
        if !self.inner.life.accepting.load(Ordering::SeqCst) {
            self.guard.engine.stop();
        }
        done
    }

    pub(crate) async fn wait_for(&self, id: ExecutionId, timeout: Option<Duration>) -> Result<ExecutionResult> {
        let waiter = self.inner.waiters.register(id);
        self.wait_on(id, waiter, timeout, true).await
    }

    /// Waits on `waiter` (registered before anything could finish the
    /// execution) until the execution is terminal, then returns its
    /// result. With `look_first`, its status is read before the first wait
    /// (it may have finished already).
    async fn wait_on(
        &self,
        id: ExecutionId,
        mut waiter: Waiter,
        timeout: Option<Duration>,
        mut look_first: bool,
    ) -> Result<ExecutionResult> {
        let deadline = timeout.map(engine::deadline_after);
        loop {
            if look_first {
                if let Some(u) = self.inner.unwritten(id) {
                    return Err(RunnerError::ResultNotWritten { execution: id, task: u.task, problem: u.problem });
                }
                match self.status(id).await {
                    Ok(s) if s.is_terminal() => return self.result(id).await,
                    Ok(_) => {}
                    // Storage is briefly unreachable: keep waiting.
                    Err(RunnerError::Storage(e)) if e.is_transient() => {}
                    Err(e) => return Err(e),
                }
            }
            let woken = tokio::select! {
                w = waiter.woken() => w,
                _ = self.inner.life.stop_all.cancelled() => return Err(self.inner.stopped_error()),
                _ = sleep_until_deadline(deadline) => {
                    let waited = timeout.unwrap_or_default();
                    return Err(RunnerError::WaitTimeout { id, waited });
                }
            };
            match woken {
                Some(Wake::Finished(snapshot)) => {
                    if let Some(r) = snapshot.as_deref().and_then(|s| result::from_snapshot(&self.inner, s)) {
                        return Ok(r);
                    }
                    return self.result(id).await;
                }
                Some(Wake::Check) => {
                    waiter = waiter.renew();
                    look_first = true;
                }
                Some(Wake::Fatal(message)) => return Err(RunnerError::Fatal { message }),
                None => return Err(self.inner.stopped_error()),
            }
        }
    }
}

async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The execution's state, after checking that every one of its rows can be
/// read.
async fn checked_status(inner: &Inner, id: ExecutionId) -> Result<WorkflowState> {
    let states = inner.storage.execution_states(&[id]).await?;
    let state = states.first().map(|(_, s)| *s).ok_or(RunnerError::ExecutionNotFound { id })?;
    if let Some((_, e)) = inner.storage.unreadable(&[id]).await?.into_iter().next() {
        return Err(e.into());
    }
    Ok(state)
}

/// A control call: cancel, pause or resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Cancel,
    Pause,
    Resume,
}

/// A refused control call is the user's mistake, said as such: the
/// execution is not in a state the call applies to.
fn control_error(e: cloacina_core::ports::StorageError, id: ExecutionId, call: Control) -> RunnerError {
    use cloacina_core::ports::StorageError;
    match e {
        StorageError::IllegalTransition(t) if t.machine == "workflow" => match t.from.parse::<WorkflowState>() {
            Ok(state) => {
                let (action, allowed) = match call {
                    Control::Cancel => ("cancel", "only an unfinished execution can be cancelled"),
                    Control::Pause => ("pause", "only a pending or running execution can be paused"),
                    Control::Resume => ("resume", "only a paused execution can be resumed"),
                };
                RunnerError::InvalidState { id, action, state, allowed }
            }
            Err(_) => RunnerError::Storage(StorageError::IllegalTransition(t)),
        },
        other => not_found(other, id),
    }
}

fn not_found(e: cloacina_core::ports::StorageError, id: ExecutionId) -> RunnerError {
    match e {
        cloacina_core::ports::StorageError::NotFound { .. } => RunnerError::ExecutionNotFound { id },
        other => RunnerError::Storage(other),
    }
}
