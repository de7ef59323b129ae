//! The writer: one loop that turns everything this runner has to write —
//! new executions, task reports, claims — into one storage commit per
//! round. What arrives together is written together, in one transaction,
//! and the work it makes ready is claimed in that same transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use cloacina_core::ports::{ClaimRequest, Commit, NewExecution, StorageError, TaskReport};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{Backoff, CLAIM_BATCH, apply_effects, claim_owner, take_slots};
use crate::error::{Result, RunnerError};
use crate::runner::{Inner, Submission};

/// Most submissions and most reports in one commit.
const WRITE_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<cloacina_core::ExecutionId>>;

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
}

pub(crate) async fn writer(
    inner: Arc<Inner>,
    mut submit_rx: mpsc::UnboundedReceiver<Submission>,
    mut report_rx: mpsc::UnboundedReceiver<TaskReport>,
) {
    // After a round that started tasks, the next one waits briefly for
    // their reports (a fraction of the last commit's time, at most 1 ms):
    // quick tasks then finish in the next commit instead of the one after.
    let mut linger: Option<(usize, std::time::Duration)> = None;
    loop {
        let mut round = Round::default();
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
        let claiming = !inner.stop_claiming.is_cancelled();
        if round.is_empty() {
            tokio::select! {
                biased;
                _ = inner.stop_all.cancelled() => break,
                r = report_rx.recv() => match r {
                    Some(r) => round.reports.push(r),
                    None => break,
                },
                s = submit_rx.recv(), if claiming => if let Some(s) = s {
                    round.creations.push(s.execution);
                    round.replies.push(s.reply);
                },
                _ = inner.wake.notified(), if claiming => {}
                _ = tokio::time::sleep(inner.config.fallback_poll_interval), if claiming => {
                    inner.backlog.store(true, Ordering::SeqCst);
                }
                _ = inner.stop_claiming.cancelled(), if claiming => {}
            }
        }
        while round.reports.len() < WRITE_BATCH {
            match report_rx.try_recv() {
                Ok(r) => round.reports.push(r),
                Err(_) => break,
            }
        }
        if inner.stop_claiming.is_cancelled() {
            refuse_submissions(&mut submit_rx, round.replies.drain(..));
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
        let (claimed, took) = write_round(&inner, round).await;
        if claimed > 0 {
            linger = Some((claimed, (took / 2).min(std::time::Duration::from_millis(1))));
        }
    }
    refuse_submissions(&mut submit_rx, std::iter::empty());
}

fn refuse_submissions(rx: &mut mpsc::UnboundedReceiver<Submission>, replies: impl Iterator<Item = Reply>) {
    for r in replies {
        let _ = r.send(Err(RunnerError::ShutDown));
    }
    while let Ok(s) = rx.try_recv() {
        let _ = s.reply.send(Err(RunnerError::ShutDown));
    }
}

/// Commits a round: retried with backoff after transient errors; after
/// another error, each item is written alone so only the bad one fails.
/// Returns how many tasks it claimed and how long the commit took.
async fn write_round(inner: &Arc<Inner>, mut round: Round) -> (usize, std::time::Duration) {
    let n_reports = round.reports.len();
    let mut backoff = Backoff::new();
    loop {
        let claiming = !inner.stop_claiming.is_cancelled();
        let permits: Option<OwnedSemaphorePermit> = if claiming { take_slots(inner, CLAIM_BATCH) } else { None };
        let claim_waiting = permits.is_some() && inner.backlog.swap(false, Ordering::SeqCst);
        if round.is_empty() && !claim_waiting {
            return (0, std::time::Duration::ZERO);
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
                    reports = n_reports,
                    claimed = out.effects.claimed.len(),
                    claim_waiting,
                    took_us = started.elapsed().as_micros() as u64,
                    "committed"
                );
                if claim_waiting && out.effects.claimed.len() == limit {
                    // The claim was full: more may be waiting.
                    inner.backlog.store(true, Ordering::SeqCst);
                }
                for (e, reply) in round.creations.iter().zip(round.replies) {
                    let _ = reply.send(Ok(e.id));
                }
                {
                    let mut leased = inner.leased.lock().unwrap_or_else(|e| e.into_inner());
                    for r in &round.reports {
                        leased.remove(&r.task);
                    }
                }
                for (r, res) in round.reports.iter().zip(&out.results) {
                    if let Err(rejection) = res {
                        tracing::info!(
                            task = %r.task,
                            execution = %r.execution,
                            "late result discarded: the task moved on without this runner ({rejection:?})"
                        );
                    }
                }
                let claimed = out.effects.claimed.len();
                apply_effects(inner, out.effects, permits);
                reports_written(inner, n_reports);
                return (claimed, started.elapsed());
            }
            Err(e) if e.is_transient() && !inner.stop_all.is_cancelled() => {
                drop(permits);
                if claim_waiting {
                    inner.backlog.store(true, Ordering::SeqCst);
                }
                let d = backoff.next();
                tracing::warn!(
                    "writing {} execution(s) and {n_reports} task result(s) failed, retrying in {d:?}: {e}",
                    round.creations.len()
                );
                tokio::time::sleep(d).await;
                // The commit may have succeeded before the error reached us.
                reconcile(inner, &mut round, &mut backoff).await;
            }
            Err(e) if round.creations.len() + round.reports.len() > 1 => {
                drop(permits);
                tracing::warn!("a batch write failed ({e}); writing its items one by one");
                let Round { creations, replies, reports } = round;
                for (c, reply) in creations.into_iter().zip(replies) {
                    Box::pin(write_round(
                        inner,
                        Round { creations: vec![c], replies: vec![reply], reports: Vec::new() },
                    ))
                    .await;
                }
                for r in reports {
                    // Counted once below, not by the recursive call.
                    inner.pending_reports.fetch_add(1, Ordering::SeqCst);
                    Box::pin(write_round(inner, Round { reports: vec![r], ..Round::default() })).await;
                }
                reports_written(inner, n_reports);
                return (0, started.elapsed());
            }
            Err(e) => {
                drop(permits);
                // A round of at most one item.
                if let Some(reply) = round.replies.into_iter().next() {
                    let _ = reply.send(Err(RunnerError::Storage(e)));
                } else if let Some(r) = round.reports.first() {
                    log_lost(r, &e);
                    inner.leased.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.task);
                } else {
                    tracing::warn!("claim failed: {e}");
                    inner.backlog.store(true, Ordering::SeqCst);
                }
                reports_written(inner, n_reports);
                return (0, started.elapsed());
            }
        }
    }
}

/// After a commit whose outcome is unknown: executions it stored are
/// acknowledged and dropped from the round; claims it made that this
/// runner never learned of are given back. Retried until the database
/// answers (or the runner stops).
async fn reconcile(inner: &Arc<Inner>, round: &mut Round, backoff: &mut Backoff) {
    loop {
        match try_reconcile(inner, round).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && !inner.stop_all.is_cancelled() => {
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
    let mut held: Vec<_> = inner.leased.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
    held.extend(round.reports.iter().map(|r| r.task));
    let effects = inner.storage.release_strays(&inner.registration(), &held, inner.now()).await?;
    if effects.newly_ready > 0 {
        tracing::info!(tasks = effects.newly_ready, "gave back claims a failed commit had made");
    }
    apply_effects(inner, effects, None);
    Ok(())
}

fn reports_written(inner: &Inner, n: usize) {
    if n > 0 {
        inner.pending_reports.fetch_sub(n, Ordering::SeqCst);
        inner.reports_flushed.notify_waiters();
    }
}

fn log_lost(r: &TaskReport, e: &StorageError) {
    tracing::error!(
        task = %r.task,
        execution = %r.execution,
        "cannot write this task's result: {e}; the task stays leased and will be recovered and run again"
    );
}
