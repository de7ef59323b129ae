//! What the runner hands back: results, handles, event streams; and how a
//! result is assembled from stored rows (in one place, whether the rows
//! come from storage or from the transaction that finished the execution).

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use cloacina_core::ports::{ExecutionEvent, ExecutionRecord, FinishedSnapshot, TaskRecord};
use cloacina_core::{Context, ExecutionId, TaskState, Timestamp, Workflow, WorkflowState, plan};
use tokio::sync::broadcast;
use tokio_util::sync::ReusableBoxFuture;

use crate::engine::state::Inner;
use crate::error::{Result, RunnerError};
use crate::runner::DefaultRunner;

/// How one task of an execution ended (or stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// The task id.
    pub task: String,
    /// Its state.
    pub state: TaskState,
    /// The number of its latest attempt (0 if it never started).
    pub attempts: u32,
    /// How often it lost its runner.
    pub recoveries: u32,
    /// Its last error, skip reason or abandonment reason.
    pub error: Option<String>,
}

/// An execution's state, context and per-task outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionResult {
    /// The execution.
    pub id: ExecutionId,
    /// The workflow name.
    pub workflow: String,
    /// The workflow version it ran.
    pub workflow_version: String,
    /// Its state (terminal once [`wait`](ExecutionHandle::wait) returned).
    pub status: WorkflowState,
    /// The final context: the merge, in topological order, of the outputs
    /// of the completed tasks that have no completed dependent (so keys
    /// removed downstream stay removed); the input context when no task
    /// completed.
    pub context: Context,
    /// Every task, in topological order.
    pub tasks: Vec<TaskOutcome>,
    /// Why the execution failed or was cancelled.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

impl ExecutionResult {
    /// Whether it completed.
    pub fn is_success(&self) -> bool {
        self.status == WorkflowState::Completed
    }
    /// The outcome of one task.
    pub fn task(&self, id: &str) -> Option<&TaskOutcome> {
        self.tasks.iter().find(|t| t.task == id)
    }
}

/// A started execution. Awaiting it waits for its result
/// (`handle.await` is [`wait`](Self::wait)).
///
/// ```no_run
/// # async fn demo(runner: cloacina_runner::DefaultRunner) -> Result<(), cloacina_runner::RunnerError> {
/// use cloacina_runner::Context;
/// let handle = runner.execute_async("etl", Context::new()).await?;
/// handle.pause().await?;
/// handle.resume().await?;
/// let result = handle.await?;
/// println!("{}: {}", result.id, result.status);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ExecutionHandle {
    pub(crate) id: ExecutionId,
    pub(crate) runner: DefaultRunner,
}

impl ExecutionHandle {
    /// The execution id.
    pub fn id(&self) -> ExecutionId {
        self.id
    }
    /// Its current state.
    pub async fn status(&self) -> Result<WorkflowState> {
        self.runner.status(self.id).await
    }
    /// Waits for a terminal state, then returns the result.
    pub async fn wait(&self) -> Result<ExecutionResult> {
        self.runner.wait_for(self.id, None).await
    }
    /// Like [`wait`](Self::wait), giving up with
    /// [`RunnerError::WaitTimeout`](crate::RunnerError::WaitTimeout) after `d` (the execution goes on).
    pub async fn wait_timeout(&self, d: Duration) -> Result<ExecutionResult> {
        self.runner.wait_for(self.id, Some(d)).await
    }
    /// Cancels it (see [`DefaultRunner::cancel`]).
    pub async fn cancel(&self) -> Result<()> {
        self.runner.cancel(self.id).await
    }
    /// Pauses it (see [`DefaultRunner::pause`]).
    pub async fn pause(&self) -> Result<()> {
        self.runner.pause(self.id).await
    }
    /// Resumes it (see [`DefaultRunner::resume`]).
    pub async fn resume(&self) -> Result<()> {
        self.runner.resume(self.id).await
    }
    /// Its recorded history, oldest first.
    pub async fn history(&self) -> Result<Vec<ExecutionEvent>> {
        self.runner.history(self.id).await
    }
    /// Its result so far.
    pub async fn result(&self) -> Result<ExecutionResult> {
        self.runner.result(self.id).await
    }
}

impl IntoFuture for ExecutionHandle {
    type Output = Result<ExecutionResult>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    /// Waits for a terminal state, like [`wait`](ExecutionHandle::wait).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.wait().await })
    }
}

type Received = (std::result::Result<ExecutionEvent, broadcast::error::RecvError>, broadcast::Receiver<ExecutionEvent>);

async fn receive(mut rx: broadcast::Receiver<ExecutionEvent>) -> Received {
    let got = rx.recv().await;
    (got, rx)
}

/// A stream of the state changes a runner makes: a
/// [`futures::Stream`](futures::Stream) of [`ExecutionEvent`]s, or call
/// [`next`](Self::next). It ends once the runner is gone. A subscriber
/// that falls more than 4096 events behind skips the oldest (counted in
/// [`missed`](Self::missed)); the history in storage is complete.
///
/// ```no_run
/// # async fn demo(runner: cloacina_runner::DefaultRunner) {
/// use futures::StreamExt;
/// let completed: Vec<_> = runner
///     .subscribe_events()
///     .filter(|e| std::future::ready(e.to == "completed"))
///     .take(10)
///     .collect()
///     .await;
/// # let _ = completed; }
/// ```
pub struct EventStream {
    next: ReusableBoxFuture<'static, Received>,
    missed: u64,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("missed", &self.missed).field("done", &self.done).finish()
    }
}

impl EventStream {
    pub(crate) fn new(rx: broadcast::Receiver<ExecutionEvent>) -> Self {
        Self { next: ReusableBoxFuture::new(receive(rx)), missed: 0, done: false }
    }
    /// The next event; `None` once the runner is gone.
    pub async fn next(&mut self) -> Option<ExecutionEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }
    /// Events skipped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    fn poll_event(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<ExecutionEvent>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let (got, rx) = std::task::ready!(self.next.poll(cx));
            match got {
                Ok(e) => {
                    self.next.set(receive(rx));
                    return Poll::Ready(Some(e));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.missed += n;
                    self.next.set(receive(rx));
                }
                Err(broadcast::error::RecvError::Closed) => self.done = true,
            }
        }
    }
}

impl futures::Stream for EventStream {
    type Item = ExecutionEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<ExecutionEvent>> {
        self.get_mut().poll_event(cx)
    }
}

/// The task states of `tasks` by the workflow's task index, if the rows are
/// exactly the workflow's tasks.
fn states_of(wf: &Workflow, tasks: &[TaskRecord]) -> Option<Vec<TaskState>> {
    if wf.len() != tasks.len() {
        return None;
    }
    let mut states = vec![TaskState::NotStarted; wf.len()];
    for t in tasks {
        states[wf.index_of(&t.name)?] = t.state;
    }
    Some(states)
}

/// The outputs the final context is made of: those of the workflow's
/// frontier (see [`plan::frontier`]), or — for a workflow this runner does
/// not know — every completed task's (`None`).
fn needed_outputs(wf: Option<&Workflow>, tasks: &[TaskRecord]) -> Option<Vec<String>> {
    let wf = wf?;
    let states = states_of(wf, tasks)?;
    Some(plan::frontier(wf, &states).into_iter().map(|i| wf.tasks()[i].id().to_owned()).collect())
}

/// Builds a result from an execution's rows and the outputs its final
/// context needs ([`needed_outputs`]).
fn assemble(
    wf: Option<&Workflow>,
    exec: ExecutionRecord,
    mut tasks: Vec<TaskRecord>,
    outputs: &HashMap<String, Context>,
) -> ExecutionResult {
    let known = wf.and_then(|wf| states_of(wf, &tasks).map(|states| (wf, states)));
    let context = match &known {
        Some((wf, states)) => {
            let by_index: HashMap<usize, Context> =
                outputs.iter().filter_map(|(n, c)| wf.index_of(n).map(|i| (i, c.clone()))).collect();
            plan::final_context(wf, states, plan::ContextSource { input: &exec.input, outputs: &by_index })
        }
        // A version this runner does not know: every completed output, in
        // stored (topological) order.
        None if outputs.is_empty() => exec.input.clone(),
        None => Context::merge_outputs(tasks.iter().filter_map(|t| outputs.get(&t.name))),
    };
    if let Some((wf, _)) = known {
        tasks.sort_by_key(|t| wf.index_of(&t.name));
    }
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

/// The result of execution `id`, read from storage (on the engine runtime).
pub(crate) async fn load(inner: &Inner, id: ExecutionId) -> Result<ExecutionResult> {
    let storage = &inner.storage;
    let exec = storage.execution(id).await?.ok_or(RunnerError::ExecutionNotFound { id })?;
    let tasks = storage.tasks(id).await?;
    let wf = inner.workflow(&exec.workflow);
    let outputs = match needed_outputs(wf.as_ref(), &tasks) {
        Some(names) if names.is_empty() => HashMap::new(),
        Some(names) => storage.outputs(id, &names).await?,
        None => storage.outputs(id, &[]).await?,
    };
    Ok(assemble(wf.as_ref(), exec, tasks, &outputs))
}

/// The result from the rows the finishing transaction had, when they hold
/// everything the final context needs.
pub(crate) fn from_snapshot(inner: &Inner, s: &FinishedSnapshot) -> Option<ExecutionResult> {
    let wf = inner.workflow(&s.execution.workflow)?;
    let names = needed_outputs(Some(&wf), &s.tasks)?;
    if names.is_empty() && !s.input_loaded {
        return None;
    }
    let mut outputs = HashMap::with_capacity(names.len());
    for n in names {
        let c = s.outputs.get(&n)?.clone();
        outputs.insert(n, c);
    }
    Some(assemble(Some(&wf), s.execution.clone(), s.tasks.clone(), &outputs))
}
