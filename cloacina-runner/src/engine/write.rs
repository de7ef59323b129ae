//! The writer: one loop that turns everything this runner has to write —
//! new executions, task reports, claims — into one storage commit per
//! round. What arrives together is written together, in one transaction,
//! and the work it makes ready is claimed in that same transaction.
//!
//! A task result is never dropped: one that storage refuses (a read-only
//! or full database, a corrupted row of its execution, a dropped schema) is
//! kept and retried with backoff until it commits or its lease is found
//! lost; meanwhile the task stays leased to this live runner, and the
//! execution's waiters are told why it cannot finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cloacina_core::ports::{ClaimRequest, Commit, NewExecution, ReportRejection, StorageError, TaskReport};
use cloacina_core::{ExecutionId, TaskExecutionId};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::state::{Inner, Submission, Unwritten};
use super::{Backoff, CLAIM_BATCH, Throttle, apply_effects, claim_owner, take_slots};
use crate::error::{Result, RunnerError};

/// Most submissions and most reports in one commit.
pub(crate) const WRITE_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<ExecutionId>>;

/// One round's input.
#[derive(Default)]
struct Round {
    creations: Vec<NewExecution>,
    replies: Vec<Reply>,
    reports: Vec<TaskReport>,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.creations.is_empty() && self.reports.is_empty()
    }
    fn len(&self) -> usize {
        self.creations.len() + self.reports.len()
    }
}

/// Results storage refused, each retried after its own backoff.
#[derive(Default)]
struct Parked {
    waiting: HashMap<TaskExecutionId, (TaskReport, Instant)>,
    backoff: HashMap<TaskExecutionId, Backoff>,
}

impl Parked {
    /// Keeps `report` for a retry; returns whether it was new.
    fn park(&mut self, report: TaskReport) -> bool {
        let first = !self.backoff.contains_key(&report.task);
        let due = Instant::now() + self.backoff.entry(report.task).or_insert_with(Backoff::new).next();
        self.waiting.insert(report.task, (report, due));
        first
    }

    /// The reports whose retry is due.
    fn due(&mut self) -> Vec<TaskReport> {
        let now = Instant::now();
        let ids: Vec<TaskExecutionId> =
            self.waiting.iter().filter(|(_, (_, due))| *due <= now).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.waiting.remove(&id).map(|(r, _)| r)).collect()
    }

    /// When the next retry is due.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.waiting.values().map(|(_, due)| *due).min().map(tokio::time::Instant::from_std)
    }

    /// The report was written or discarded for good.
    fn settled(&mut self, task: TaskExecutionId) {
        self.backoff.remove(&task);
    }
}

/// The writer's memory across rounds.
#[derive(Default)]
struct Writer {
    parked: Parked,
    throttle: Throttle,
}

pub(crate) async fn writer(
    inner: Arc<Inner>,
    mut submit_rx: mpsc::Receiver<Submission>,
    mut report_rx: mpsc::Receiver<TaskReport>,
) {
    let mut w = Writer::default();
    // After a round that started tasks, the next one waits briefly for
    // their reports (a fraction of the last commit's time, at most 1 ms):
    // quick tasks then finish in the next commit instead of the one after.
    let mut linger: Option<(usize, Duration)> = None;
    loop {
        inner.checkpoint("writer");
        let mut round = Round { reports: w.parked.due(), ..Round::default() };
        if let Some((expected, d)) = linger.take() {
            let deadline = tokio::time::Instant::now() + d;
            while round.reports.len() < expected {
                tokio::select! {
                    r = report_rx.recv() => match r {
                        Some(r) => round.reports.push(r),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let claiming = !inner.life.stop_claiming.is_cancelled();
        if round.is_empty() {
            let retry_at = w.parked.next_due();
            tokio::select! {
                biased;
                _ = inner.life.stop_all.cancelled() => break,
                r = report_rx.recv() => match r {
                    Some(r) => round.reports.push(r),
                    None => break,
                },
                s = submit_rx.recv(), if claiming => if let Some(s) = s {
                    round.creations.push(s.execution);
                    round.replies.push(s.reply);
                },
                _ = inner.work.wake.notified(), if claiming => {}
                _ = tokio::time::sleep(inner.config.fallback_poll_interval), if claiming => {
                    inner.work.backlog.store(true, Ordering::SeqCst);
                }
                _ = inner.life.stop_claiming.cancelled(), if claiming => {}
                _ = sleep_until_some(retry_at), if retry_at.is_some() => {}
            }
        }
        while round.reports.len() < WRITE_BATCH {
            match report_rx.try_recv() {
                Ok(r) => round.reports.push(r),
                Err(_) => break,
            }
        }
        if inner.life.stop_claiming.is_cancelled() {
            refuse_submissions(&inner, &mut submit_rx, round.replies.drain(..));
            round.creations.clear();
        } else {
            while round.creations.len() < WRITE_BATCH {
                match submit_rx.try_recv() {
                    Ok(s) => {
                        round.creations.push(s.execution);
                        round.replies.push(s.reply);
                    }
                    Err(_) => break,
                }
            }
        }
        // One round at a time: measured on both backends, concurrent
        // commits of one runner only contend (row locks, CPU) while a
        // serial writer batches more per commit.
        let (claimed, took) = write_round(&inner, &mut w, round).await;
        if claimed > 0 {
            linger = Some((claimed, (took / 2).min(Duration::from_millis(1))));
        }
    }
    refuse_submissions(&inner, &mut submit_rx, std::iter::empty());
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn refuse_submissions(inner: &Inner, rx: &mut mpsc::Receiver<Submission>, replies: impl Iterator<Item = Reply>) {
    for r in replies {
        let _ = r.send(Err(inner.stopped_error()));
    }
    while let Ok(s) = rx.try_recv() {
        let _ = s.reply.send(Err(inner.stopped_error()));
    }
}

/// Commits a round: retried with backoff after transient errors; after
/// another error, each item is written alone so only the bad one fails.
/// Returns how many tasks it claimed and how long the commit took.
async fn write_round(inner: &Arc<Inner>, w: &mut Writer, mut round: Round) -> (usize, Duration) {
    let mut backoff = Backoff::new();
    loop {
        let claiming = !inner.life.stop_claiming.is_cancelled();
        let permits: Option<OwnedSemaphorePermit> = if claiming { take_slots(inner, CLAIM_BATCH) } else { None };
        let claim_waiting = permits.is_some() && inner.work.backlog.swap(false, Ordering::SeqCst);
        if round.is_empty() && !claim_waiting {
            return (0, Duration::ZERO);
        }
        let limit = permits.as_ref().map_or(0, |p| p.num_permits());
        let batch = Commit {
            creations: round.creations.clone(),
            reports: round.reports.clone(),
            claim: permits.as_ref().map(|p| ClaimRequest { owner: claim_owner(inner), limit: p.num_permits() }),
            claim_waiting,
        };
        let started = Instant::now();
        match inner.storage.commit(batch, &inner.workflows(), inner.now()).await {
            Ok(out) => {
                tracing::trace!(
                    creations = round.creations.len(),
                    reports = round.reports.len(),
                    claimed = out.effects.claimed.len(),
                    claim_waiting,
                    took_us = started.elapsed().as_micros() as u64,
                    "committed"
                );
                w.throttle.reset("claim");
                if claim_waiting && out.effects.claimed.len() == limit {
                    // The claim was full: more may be waiting.
                    inner.work.backlog.store(true, Ordering::SeqCst);
                }
                for (e, reply) in round.creations.iter().zip(round.replies) {
                    let _ = reply.send(Ok(e.id));
                }
                for (r, res) in round.reports.into_iter().zip(out.results) {
                    match res {
                        Ok(()) => settle(inner, w, &r),
                        Err(rejection) => rejected(inner, w, r, rejection),
                    }
                }
                let claimed = out.effects.claimed.len();
                apply_effects(inner, out.effects, permits);
                return (claimed, started.elapsed());
            }
            Err(e) if e.is_transient() && !inner.life.stop_all.is_cancelled() => {
                drop(permits);
                if claim_waiting {
                    inner.work.backlog.store(true, Ordering::SeqCst);
                }
                let d = backoff.next();
                tracing::warn!(
                    "writing {} execution(s) and {} task result(s) failed, retrying in {d:?}: {e}",
                    round.creations.len(),
                    round.reports.len()
                );
                tokio::time::sleep(d).await;
                // The commit may have succeeded before the error reached us.
                reconcile(inner, &mut round, &mut backoff).await;
            }
            Err(e) if round.len() > 1 => {
                drop(permits);
                if claim_waiting {
                    inner.work.backlog.store(true, Ordering::SeqCst);
                }
                tracing::warn!("a batch write failed ({e}); writing its items one by one");
                let Round { creations, replies, reports } = round;
                for (c, reply) in creations.into_iter().zip(replies) {
                    let single = Round { creations: vec![c], replies: vec![reply], reports: Vec::new() };
                    Box::pin(write_round(inner, w, single)).await;
                }
                for r in reports {
                    Box::pin(write_round(inner, w, Round { reports: vec![r], ..Round::default() })).await;
                }
                return (0, started.elapsed());
            }
            Err(e) => {
                drop(permits);
                // A round of at most one item.
                if let Some(reply) = round.replies.pop() {
                    let _ = reply.send(Err(RunnerError::Storage(e)));
                } else if let Some(r) = round.reports.pop() {
                    let problem = format!("storage refused to write it: {e}");
                    keep_for_retry(inner, w, r, problem);
                } else {
                    if let Some(held) = w.throttle.allow("claim") {
                        tracing::warn!(repeated = held, "claiming ready tasks failed (retrying): {e}");
                    }
                    inner.work.backlog.store(true, Ordering::SeqCst);
                }
                return (0, started.elapsed());
            }
        }
    }
}

/// A report was written: the task's outcome is stored.
fn settle(inner: &Inner, w: &mut Writer, r: &TaskReport) {
    inner.leased().remove(&r.task);
    w.parked.settled(r.task);
    if inner.unwritten(r.execution).is_some_and(|u| u.task == r.task) {
        inner.set_unwritten(r.execution, None);
        tracing::info!(task = %r.task, execution = %r.execution, "a task result storage had refused is written");
    }
    reports_done(inner, 1);
}

/// Storage answered a report without applying it.
fn rejected(inner: &Arc<Inner>, w: &mut Writer, r: TaskReport, rejection: ReportRejection) {
    match rejection {
        ReportRejection::Unreadable { problem } => {
            keep_for_retry(inner, w, r, format!("its execution's rows cannot be read: {problem}"));
        }
        ReportRejection::NotFound => {
            tracing::warn!(
                task = %r.task,
                execution = %r.execution,
                "the task's execution is gone from storage (deleted?): its result is discarded"
            );
            inner.leased().remove(&r.task);
            w.parked.settled(r.task);
            inner.set_unwritten(r.execution, None);
            inner.waiters.check([r.execution]);
            reports_done(inner, 1);
        }
        lost @ ReportRejection::LeaseLost { .. } => {
            tracing::info!(
                task = %r.task,
                execution = %r.execution,
                "late result discarded: the task moved on without this runner ({lost:?})"
            );
            inner.leased().remove(&r.task);
            w.parked.settled(r.task);
            if inner.unwritten(r.execution).is_some_and(|u| u.task == r.task) {
                inner.set_unwritten(r.execution, None);
            }
            reports_done(inner, 1);
        }
    }
}

/// Keeps a result storage refused and retries it later; the task stays
/// leased to this runner meanwhile, and its execution's waiters learn why
/// it cannot finish.
fn keep_for_retry(inner: &Arc<Inner>, w: &mut Writer, r: TaskReport, problem: String) {
    let (task, execution) = (r.task, r.execution);
    if w.parked.park(r) {
        tracing::error!(
            %task,
            %execution,
            "cannot write this task's result ({problem}); it is kept and retried until storage takes it, \
             and the task stays leased to this runner meanwhile"
        );
    } else {
        tracing::debug!(%task, %execution, "writing a kept task result failed again: {problem}");
    }
    inner.set_unwritten(execution, Some(Unwritten { task, problem }));
}

/// After a commit whose outcome is unknown: executions it stored are
/// acknowledged and dropped from the round; claims it made that this
/// runner never learned of are given back. Retried until the database
/// answers (or the runner stops).
async fn reconcile(inner: &Arc<Inner>, round: &mut Round, backoff: &mut Backoff) {
    loop {
        match try_reconcile(inner, round).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && !inner.life.stop_all.is_cancelled() => {
                let d = backoff.next();
                tracing::warn!("checking what a failed commit stored failed, retrying in {d:?}: {e}");
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                tracing::warn!("cannot check what a failed commit stored: {e}");
                return;
            }
        }
    }
}

async fn try_reconcile(inner: &Arc<Inner>, round: &mut Round) -> std::result::Result<(), StorageError> {
    if !round.creations.is_empty() {
        let ids: Vec<_> = round.creations.iter().map(|c| c.id).collect();
        let stored: std::collections::HashSet<_> =
            inner.storage.execution_states(&ids).await?.into_iter().map(|(id, _)| id).collect();
        if !stored.is_empty() {
            tracing::info!(executions = stored.len(), "a failed commit had stored these executions after all");
            let creations = std::mem::take(&mut round.creations);
            let replies = std::mem::take(&mut round.replies);
            for (c, reply) in creations.into_iter().zip(replies) {
                if stored.contains(&c.id) {
                    let _ = reply.send(Ok(c.id));
                } else {
                    round.creations.push(c);
                    round.replies.push(reply);
                }
            }
        }
    }
    let mut held: Vec<_> = inner.leased().keys().copied().collect();
    held.extend(round.reports.iter().map(|r| r.task));
    let effects = inner.storage.release_strays(&inner.registration(), &held, inner.now()).await?;
    if effects.newly_ready > 0 {
        tracing::info!(tasks = effects.newly_ready, "gave back claims a failed commit had made");
    }
    apply_effects(inner, effects, None);
    Ok(())
}

fn reports_done(inner: &Inner, n: usize) {
    if n > 0 {
        inner.writes.pending_reports.fetch_sub(n, Ordering::SeqCst);
        inner.writes.reports_flushed.notify_waiters();
    }
}
