//! Registration, heartbeats, lease checks and recovery sweeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cloacina_core::FencingToken;
use cloacina_core::TaskExecutionId;
use cloacina_core::WorkflowRef;
use cloacina_core::ports::{Effects, Heartbeat, RecoveryRequest, StorageError, StrandedVersion};

use super::state::Inner;
use super::{Backoff, apply_effects};
use crate::error::Result;

const RECOVERY_BATCH: usize = 1000;

pub(crate) async fn register(inner: &Arc<Inner>) -> Result<()> {
    inner.storage.register_runner(&inner.registration(), inner.now()).await?;
    Ok(())
}

/// Recovery at start-up: sweeps until nothing orphaned is left.
pub(crate) async fn recover_now(inner: &Arc<Inner>) -> Result<()> {
    loop {
        let n = sweep(inner).await?;
        if n < RECOVERY_BATCH {
            return Ok(());
        }
    }
}

async fn sweep(inner: &Arc<Inner>) -> Result<usize> {
    let req = RecoveryRequest { policy: inner.config.recovery, limit: RECOVERY_BATCH };
    let report = inner.storage.recover(&req, &inner.workflows(), inner.now()).await?;
    let n = report.requeued.len() + report.abandoned.len();
    if n > 0 || !report.dead_runners.is_empty() {
        tracing::info!(
            requeued = report.requeued.len(),
            abandoned = report.abandoned.len(),
            dead_runners = ?report.dead_runners,
            "recovered orphaned tasks"
        );
    }
    apply_effects(inner, report.effects, None);
    report_stranded(inner).await;
    Ok(n)
}

/// A stranded version's key: reference and label.
pub(crate) type StrandedKey = (WorkflowRef, Option<String>);

/// What the recovery sweeps know about stranded versions.
#[derive(Debug, Default)]
pub(crate) struct StrandedWatch {
    /// Stranded at the previous sweep, with their counts.
    seen: BTreeMap<StrandedKey, usize>,
    /// Reported (warned about, events recorded), with the count reported.
    reported: BTreeMap<StrandedKey, usize>,
}

/// The versions no live runner serves; what this runner serves is left out
/// even before its next heartbeat publishes a workflow registered since
/// the last one.
pub(crate) async fn stranded(inner: &Inner) -> std::result::Result<Vec<StrandedVersion>, StorageError> {
    let served = inner.workflows();
    let found = inner.storage.stranded(inner.now()).await?;
    Ok(found.into_iter().filter(|s| served.get(&s.workflow).is_none()).collect())
}

/// Reports unfinished executions of versions no live runner serves, once a
/// version has been stranded at two sweeps in a row (a recovery interval
/// apart: a runner that registers its workflows just after starting, or
/// the moment of a deploy between the old runner's exit and the new one's
/// registration, is not reported): a warning per change of its count, an
/// event on each of its executions, and a line once it is served again.
async fn report_stranded(inner: &Arc<Inner>) {
    let found = match stranded(inner).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("looking for stranded executions failed (will retry): {e}");
            return;
        }
    };
    let now: BTreeMap<StrandedKey, usize> = found.into_iter().map(|s| ((s.workflow, s.label), s.executions)).collect();
    let (confirmed, changed): (BTreeMap<StrandedKey, usize>, Vec<StrandedKey>) = {
        let mut watch = inner.stranded.lock().unwrap_or_else(|e| e.into_inner());
        let confirmed: BTreeMap<StrandedKey, usize> =
            now.iter().filter(|(k, _)| watch.seen.contains_key(*k)).map(|(k, n)| (k.clone(), *n)).collect();
        watch.seen = now;
        let changed = confirmed.iter().filter(|(k, n)| watch.reported.get(*k) != Some(*n)).map(|(k, _)| k.clone());
        (confirmed.clone(), changed.collect())
    };
    // An event on each stranded execution (written once per execution and
    // version, whichever runner gets there first). A version whose events
    // could not be written is reported again at the next sweep.
    let mut unrecorded = Vec::new();
    for key in &changed {
        match inner.storage.record_stranded(&key.0, inner.now()).await {
            Ok(events) if !events.is_empty() => {
                apply_effects(inner, Effects { events, ..Effects::default() }, None);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("recording the stranded executions of {} failed (will retry): {e}", key.0);
                unrecorded.push(key.clone());
            }
        }
    }
    for key in &changed {
        let ((wf, label), n) = (key, confirmed[key]);
        tracing::warn!(
            workflow = %wf.name,
            version = %wf.version,
            label = label.as_deref().unwrap_or(""),
            executions = n,
            "{n} unfinished executions of workflow `{}` version {}{} are served by no live runner: register that \
             version on a runner, cancel them, or move them with migrate_executions",
            wf.name,
            wf.version,
            label.as_ref().map(|l| format!(" ({l})")).unwrap_or_default(),
        );
    }
    let mut watch = inner.stranded.lock().unwrap_or_else(|e| e.into_inner());
    for (wf, _) in watch.reported.keys().filter(|k| !watch.seen.contains_key(*k)) {
        tracing::info!(workflow = %wf.name, version = %wf.version, "no stranded executions of this version any more");
    }
    watch.reported = confirmed;
    for key in &unrecorded {
        watch.reported.remove(key);
    }
}

/// A sweep every `recovery_interval`, and one at once when a workflow is
/// registered (its tasks may be waiting for an abandonment decision).
pub(crate) async fn recovery_sweeps(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.life.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.config.recovery_interval) => {}
            _ = inner.life.sweep_now.notified() => {}
        }
        inner.checkpoint("recovery");
        if let Err(e) = sweep(&inner).await {
            tracing::warn!("recovery sweep failed (will retry): {e}");
        }
    }
}

/// One liveness write per interval, whatever the number of running tasks;
/// plus a read that finds running tasks whose lease moved on (cancelled
/// or taken over), which are then stopped.
///
/// A runner that cannot renew its liveness for a whole lease TTL must
/// assume it was declared dead: it stops its running tasks (another
/// runner may be running them already) and keeps trying to register.
pub(crate) async fn heartbeats(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    let lease_ttl = inner.config.recovery.lease_ttl();
    let mut renewed = Instant::now();
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = inner.life.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.config.recovery.heartbeat_interval()) => {}
        }
        inner.checkpoint("heartbeat");
        if let Err(e) = inner.storage.maintain().await {
            tracing::debug!("storage maintenance failed: {e}");
        }
        match inner.storage.heartbeat(&inner.registration(), inner.now()).await {
            Ok(Heartbeat::Alive) => {
                backoff = Backoff::new();
                renewed = Instant::now();
                if fenced {
                    tracing::info!("liveness renewed again");
                    fenced = false;
                }
            }
            // Shutting down: the release just marked this runner stopped.
            Ok(Heartbeat::Lost) if inner.life.stop_claiming.is_cancelled() => return,
            Ok(Heartbeat::Lost) => {
                tracing::error!(
                    runner = %inner.registration().id,
                    "this runner was declared dead (missed heartbeats); stopping its running tasks and registering again"
                );
                inner.cancel_all_running();
                {
                    let mut reg = inner.registration.write().unwrap_or_else(|e| e.into_inner());
                    reg.incarnation = uuid::Uuid::new_v4().simple().to_string();
                }
                match register(&inner).await {
                    Ok(()) => {
                        renewed = Instant::now();
                        fenced = false;
                    }
                    Err(e) => tracing::warn!("registering again failed (will retry): {e}"),
                }
            }
            Err(e) => {
                if !fenced && renewed.elapsed() >= lease_ttl {
                    fenced = true;
                    let stopped = inner.cancel_all_running();
                    tracing::error!(
                        tasks = stopped,
                        "liveness could not be renewed for a whole lease TTL ({lease_ttl:?}): this runner may have \
                         been declared dead, so it stops its running tasks (other runners may take them over): {e}"
                    );
                }
                let d = backoff.next();
                tracing::warn!("heartbeat failed, retrying in {d:?}: {e}");
                tokio::select! {
                    _ = inner.life.stop_claiming.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
                continue;
            }
        }
        let held: Vec<(TaskExecutionId, FencingToken)> = inner.running().iter().map(|(id, r)| (*id, r.token)).collect();
        if held.is_empty() {
            continue;
        }
        match inner.storage.lost_leases(&held).await {
            Ok(lost) => {
                let running = inner.running();
                for id in lost {
                    if let Some(r) = running.get(&id) {
                        tracing::warn!(task = %id, "lease lost (cancelled or taken over): stopping the task");
                        r.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!("lease check failed: {e}"),
        }
    }
}
