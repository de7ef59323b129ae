//! Runs one claimed task body and reports how it ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloacina_core::ports::{ClaimedTask, ReportOutcome, TaskReport};
use cloacina_core::{Cancellation, Context, RetryDecision, TaskError, TaskRun};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::state::{Inner, Running};

enum Ending {
    /// The body returned.
    Returned(Result<(), TaskError>, Context),
    /// The body failed in a way the runner detected.
    Failed(TaskError),
    /// Cancelled (execution cancelled, lease lost, runner stopping): no
    /// report; storage already moved on or the lease is released.
    Interrupted,
}

/// The message of a panicked task (`"cancelled"` for a cancelled one).
pub(crate) fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "cancelled".to_owned();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// A panicked body as a failed attempt.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> TaskError {
    if e.is_panic() { TaskError::Panicked { message: panic_text(e) } } else { TaskError::Cancelled }
}

pub(crate) async fn run_task(inner: Arc<Inner>, task: ClaimedTask, permit: OwnedSemaphorePermit) {
    let span = tracing::info_span!(
        "task",
        execution_id = %task.execution_id,
        task = %task.name,
        tenant = inner.config.tenant().map(|t| t.as_str()).unwrap_or("public"),
        attempt = task.attempt,
    );
    let ending = match &task.input_error {
        // The stored input cannot be read: fail without running the body.
        Some(problem) => Ending::Failed(TaskError::fatal(format!("cannot read the task's input: {problem}"))),
        None => run_body(&inner, &task).instrument(span.clone()).await,
    };
    inner.running().remove(&task.id);
    inner.work.running_changed.notify_waiters();
    drop(permit);
    if inner.work.backlog.load(Ordering::SeqCst) {
        inner.work.wake.notify_one();
    }
    let outcome = match ending {
        Ending::Interrupted => {
            inner.leased().remove(&task.id);
            return;
        }
        Ending::Returned(Ok(()), output) => match check_output(&inner, &output) {
            Ok(()) => ReportOutcome::Succeeded { output },
            Err(e) => decide(&inner, &task, e),
        },
        Ending::Returned(Err(e), _) | Ending::Failed(e) => decide(&inner, &task, e),
    };
    let _enter = span.enter();
    match &outcome {
        ReportOutcome::Succeeded { .. } => tracing::debug!("task succeeded"),
        ReportOutcome::Retry { error, retry_at } => tracing::warn!(%retry_at, "task failed, will retry: {error}"),
        ReportOutcome::Failed { error } => tracing::error!("task failed: {error}"),
    }
    inner.writes.pending_reports.fetch_add(1, Ordering::SeqCst);
    let report = TaskReport { task: task.id, execution: task.execution_id, fencing_token: task.fencing_token, outcome };
    // Bounded: a writer that falls behind holds finished bodies here.
    if inner.writes.report_tx.send(report).await.is_err() {
        inner.writes.pending_reports.fetch_sub(1, Ordering::SeqCst);
        tracing::error!(task = %task.id, "runner stopped before the result could be written; the task will be recovered");
    }
}

/// What a body handed back must be storable: no value nested past the
/// limit (checked without recursion, before anything serializes it), and
/// no more bytes than `context_size_limit`.
fn check_output(inner: &Inner, output: &Context) -> Result<(), TaskError> {
    output.check()?;
    let size = output.serialized_size();
    let limit = inner.config.context_size_limit;
    if size > limit { Err(TaskError::ContextTooLarge { size, limit }) } else { Ok(()) }
}

fn decide(inner: &Arc<Inner>, task: &ClaimedTask, error: TaskError) -> ReportOutcome {
    let message = error.chain_message();
    let Some(spec) = inner.workflow(&task.workflow).and_then(|w| w.task(&task.name).cloned()) else {
        return ReportOutcome::Failed { error: message };
    };
    match spec.retry_policy().decide(task.attempt, &error, &*inner.random) {
        RetryDecision::Retry { delay } => {
            let retry_at = inner.now().plus(delay);
            wake_at(inner, delay);
            ReportOutcome::Retry { error: message, retry_at }
        }
        RetryDecision::GiveUp { reason } => {
            let why = match reason {
                cloacina_core::GiveUpReason::AttemptsExhausted => {
                    format!("{message} (attempt {} of {})", task.attempt, spec.retry_policy().total_attempts())
                }
                cloacina_core::GiveUpReason::NotRetryable => {
                    format!("{message} (not retried: {})", spec.retry_policy().condition())
                }
            };
            ReportOutcome::Failed { error: why }
        }
    }
}

/// Wakes the dispatcher when a retry becomes due, so retries do not wait
/// for the fallback poll.
fn wake_at(inner: &Arc<Inner>, delay: Duration) {
    let engine = inner.runtimes.engine.clone();
    let inner = inner.clone();
    engine.spawn(async move {
        tokio::select! {
            _ = inner.life.stop_claiming.cancelled() => {}
            _ = tokio::time::sleep(delay + Duration::from_millis(5)) => inner.signal_work(),
        }
    });
}

async fn run_body(inner: &Arc<Inner>, task: &ClaimedTask) -> Ending {
    let Some(wf) = inner.workflow(&task.workflow) else {
        return Ending::Failed(TaskError::fatal(format!(
            "workflow {} is not registered on this runner",
            task.workflow
        )));
    };
    let Some(spec) = wf.task(&task.name).cloned() else {
        return Ending::Failed(TaskError::fatal(format!("workflow {} has no task `{}`", task.workflow, task.name)));
    };
    let cancel = Cancellation::new();
    inner
        .running()
        .insert(task.id, Running { execution: task.execution_id, token: task.fencing_token, cancel: cancel.clone() });
    let run = TaskRun {
        execution_id: task.execution_id,
        task_id: task.name.clone(),
        attempt: task.attempt,
        cancellation: cancel.clone(),
    };
    let body = spec.body().clone();
    let mut ctx = task.input.clone();
    // Its own task on the application's runtime: a panic is a failed
    // attempt, not a crash, and a body that blocks its thread blocks the
    // application's threads, not the engine's.
    let mut body = AbortOnDrop(
        inner.runtimes.app.spawn(
            async move {
                let r = body.execute(&mut ctx, &run).await;
                (r, ctx)
            }
            .in_current_span(),
        ),
    );
    // No body outlives its supervision: when the runner goes away without a
    // shutdown (its engine runtime dropped), this guard aborts the body.
    let handle = &mut body.0;
    let timeout = spec.timeout_duration().or(inner.config.default_task_timeout);
    let timed = async {
        match timeout {
            Some(d) => tokio::time::timeout(d, &mut *handle).await.map_err(|_| d),
            None => Ok((&mut *handle).await),
        }
    };
    let ending = tokio::select! {
        r = timed => match r {
            Ok(Ok((result, ctx))) => Ending::Returned(result, ctx),
            Ok(Err(join)) => Ending::Failed(panic_message(join)),
            Err(after) => {
                handle.abort();
                Ending::Failed(TaskError::Timeout { after })
            }
        },
        _ = cancel.cancelled() => {
            // Cooperative first: the body may finish within the grace period.
            let grace = inner.config.shutdown_grace_period;
            tokio::select! {
                _ = &mut *handle => {}
                _ = tokio::time::sleep(grace) => {}
                _ = inner.life.stop_all.cancelled() => {}
            }
            handle.abort();
            Ending::Interrupted
        }
        _ = inner.life.stop_all.cancelled() => {
            handle.abort();
            Ending::Interrupted
        }
    };
    ending
}

/// A task that is aborted when this handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
