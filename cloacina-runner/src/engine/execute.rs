//! Runs one claimed task body and reports how it ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloacina_core::ports::{ClaimedTask, ReportOutcome, TaskReport};
use cloacina_core::{Cancellation, Context, RetryDecision, TaskError, TaskRun};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::runner::{Inner, Running};

enum Ending {
    /// The body returned.
    Returned(Result<(), TaskError>, Context),
    /// The body failed in a way the runner detected.
    Failed(TaskError),
    /// Cancelled (execution cancelled, lease lost, runner stopping): no
    /// report; storage already moved on or the lease is released.
    Interrupted,
}

pub(crate) fn panic_message(e: tokio::task::JoinError) -> TaskError {
    if e.is_panic() {
        let payload = e.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        TaskError::Panicked { message }
    } else {
        TaskError::Cancelled
    }
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
    inner.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&task.id);
    inner.running_changed.notify_waiters();
    drop(permit);
    if inner.backlog.load(Ordering::SeqCst) {
        inner.wake.notify_one();
    }
    let outcome = match ending {
        Ending::Interrupted => {
            inner.leased.lock().unwrap_or_else(|e| e.into_inner()).remove(&task.id);
            return;
        }
        Ending::Returned(Ok(()), output) => {
            let size = output.serialized_size();
            if size > inner.config.context_size_limit {
                decide(&inner, &task, TaskError::ContextTooLarge { size, limit: inner.config.context_size_limit })
            } else {
                ReportOutcome::Succeeded { output }
            }
        }
        Ending::Returned(Err(e), _) | Ending::Failed(e) => decide(&inner, &task, e),
    };
    let _enter = span.enter();
    match &outcome {
        ReportOutcome::Succeeded { .. } => tracing::debug!("task succeeded"),
        ReportOutcome::Retry { error, retry_at } => tracing::warn!(%retry_at, "task failed, will retry: {error}"),
        ReportOutcome::Failed { error } => tracing::error!("task failed: {error}"),
    }
    inner.pending_reports.fetch_add(1, Ordering::SeqCst);
    let report = TaskReport { task: task.id, execution: task.execution_id, fencing_token: task.fencing_token, outcome };
    if inner.report_tx.send(report).is_err() {
        inner.pending_reports.fetch_sub(1, Ordering::SeqCst);
        tracing::error!(task = %task.id, "runner stopped before the result could be written; the task will be recovered");
    }
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
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => {}
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
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(task.id, Running { execution: task.execution_id, token: task.fencing_token, cancel: cancel.clone() });
    let run = TaskRun {
        execution_id: task.execution_id,
        task_id: task.name.clone(),
        attempt: task.attempt,
        cancellation: cancel.clone(),
    };
    let body = spec.body().clone();
    let mut ctx = task.input.clone();
    // Its own tokio task, so a panic is a failed attempt, not a crash.
    let mut handle = tokio::spawn(
        async move {
            let r = body.execute(&mut ctx, &run).await;
            (r, ctx)
        }
        .in_current_span(),
    );
    let timeout = spec.timeout_duration().or(inner.config.default_task_timeout);
    let timed = async {
        match timeout {
            Some(d) => tokio::time::timeout(d, &mut handle).await.map_err(|_| d),
            None => Ok((&mut handle).await),
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
                _ = &mut handle => {}
                _ = tokio::time::sleep(grace) => {}
                _ = inner.stop_all.cancelled() => {}
            }
            handle.abort();
            Ending::Interrupted
        }
        _ = inner.stop_all.cancelled() => {
            handle.abort();
            Ending::Interrupted
        }
    };
    ending
}
