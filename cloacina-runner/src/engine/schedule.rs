//! The scheduler (cron ticks) and trigger polling.

use std::collections::HashSet;
use std::sync::Arc;

use cloacina_core::ports::{NewExecution, TriggerFiring, TriggerOutcome};
use cloacina_core::schedule::{TriggerPoll, TriggerSpec, firing_key};

use super::{Backoff, apply_effects};
use crate::runner::Inner;

/// Every `schedule_poll_interval`: starts the executions of due ticks. Any
/// number of runners may do this at once; storage lets each tick start one
/// execution.
pub(crate) async fn scheduler(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    // Unreadable schedules are reported on every poll: say so once each.
    let mut unreadable: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.config.schedule_poll_interval) => {}
        }
        match inner.storage.fire_schedules(&inner.workflows(), inner.now()).await {
            Ok(report) => {
                backoff = Backoff::new();
                for f in &report.fired {
                    tracing::info!(schedule = %f.schedule, tick = %cloacina_core::schedule::rfc3339(f.tick),
                        execution = %f.execution, "schedule fired");
                }
                if report.skipped_ticks > 0 {
                    tracing::info!(ticks = report.skipped_ticks, "missed schedule ticks skipped by catch-up policy");
                }
                let now_unreadable: HashSet<String> = report.unreadable.iter().map(|u| u.name.clone()).collect();
                for u in report.unreadable.iter().filter(|u| !unreadable.contains(&u.name)) {
                    tracing::error!(
                        "schedule `{}` cannot be read, leaving it until it is repaired: {}",
                        u.name,
                        u.problem
                    );
                }
                for name in unreadable.difference(&now_unreadable) {
                    tracing::info!("schedule `{name}` can be read again (or is no longer due)");
                }
                unreadable = now_unreadable;
                apply_effects(&inner, report.effects, None);
            }
            Err(e) => {
                let d = backoff.next();
                tracing::warn!("firing schedules failed, retrying in {d:?}: {e}");
                tokio::select! {
                    _ = inner.stop_claiming.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// Starts polling a trigger; the loop ends at shutdown.
pub(crate) fn spawn_trigger(inner: &Arc<Inner>, spec: TriggerSpec) {
    let handle = tokio::spawn(trigger_loop(Arc::clone(inner), spec));
    inner.loops.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
}

/// Polls one trigger on its interval and records each firing with its
/// execution. A poll that fails or panics is logged and polled again.
async fn trigger_loop(inner: Arc<Inner>, spec: TriggerSpec) {
    loop {
        tokio::select! {
            _ = inner.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(spec.interval()) => {}
        }
        let trigger = spec.trigger().clone();
        let polled = match tokio::spawn(async move { trigger.poll().await }).await {
            Ok(r) => r,
            Err(join) => Err(super::execute::panic_message(join)),
        };
        let ctx = match polled {
            Ok(TriggerPoll::Skip) => continue,
            Ok(TriggerPoll::Fire(ctx)) => ctx,
            Err(e) => {
                tracing::warn!(trigger = spec.name(), "trigger poll failed (polling again later): {e}");
                continue;
            }
        };
        let workflows = inner.workflows();
        let Some(wf) = workflows.by_name(spec.workflow()) else {
            tracing::error!(trigger = spec.name(), workflow = spec.workflow(), "trigger's workflow is not registered");
            continue;
        };
        let now = inner.now();
        let firing = TriggerFiring {
            trigger: spec.name().to_owned(),
            key: firing_key(spec.name(), &ctx),
            allow_concurrent: spec.concurrent(),
            execution: NewExecution::plan(wf, ctx, format!("trigger:{}", spec.name()), now),
        };
        match inner.storage.fire_trigger(firing, &workflows, now).await {
            Ok(TriggerOutcome::Fired { execution, effects }) => {
                tracing::info!(trigger = spec.name(), %execution, "trigger fired");
                apply_effects(&inner, effects, None);
            }
            Ok(TriggerOutcome::Suppressed { running }) => {
                tracing::debug!(trigger = spec.name(), %running, "identical firing still unfinished: suppressed");
            }
            Err(e) => tracing::warn!(trigger = spec.name(), "recording a trigger firing failed: {e}"),
        }
    }
}
