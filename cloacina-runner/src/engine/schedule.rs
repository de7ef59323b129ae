//! The scheduler (cron ticks) and trigger polling.

use std::collections::HashSet;
use std::sync::Arc;

use cloacina_core::ports::{NewExecution, TriggerFiring, TriggerOutcome};
use cloacina_core::schedule::{EventPoll, EventTriggerSpec, firing_key};

use super::state::Inner;
use super::{Backoff, Throttle, apply_effects, supervise};

/// What the scheduler has already said about schedules it leaves alone, so
/// each is reported once per runner (and again after it changed).
#[derive(Default)]
struct Reported {
    unreadable: HashSet<String>,
    unknown_workflow: HashSet<String>,
}

impl Reported {
    /// Logs the schedules newly in `now` (with `say`) and those that left
    /// it (with `cleared`); remembers `now`.
    fn update(
        seen: &mut HashSet<String>,
        now: HashSet<String>,
        mut say: impl FnMut(&str),
        mut cleared: impl FnMut(&str),
    ) {
        for name in now.difference(seen) {
            say(name);
        }
        for name in seen.difference(&now) {
            cleared(name);
        }
        *seen = now;
    }
}

/// Every `schedule_poll_interval`: starts the executions of due ticks. Any
/// number of runners may do this at once; storage lets each tick start one
/// execution.
pub(crate) async fn scheduler(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    let mut reported = Reported::default();
    loop {
        tokio::select! {
            _ = inner.life.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(inner.config.schedule_poll_interval) => {}
        }
        inner.checkpoint("scheduler");
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
                for d in &report.duplicate_ticks {
                    tracing::warn!(
                        schedule = %d.schedule,
                        tick = %cloacina_core::schedule::rfc3339(d.tick),
                        "this tick already has an execution; not starting another"
                    );
                }
                let problems: std::collections::HashMap<&str, &str> =
                    report.unreadable.iter().map(|u| (u.name.as_str(), u.problem.as_str())).collect();
                Reported::update(
                    &mut reported.unreadable,
                    report.unreadable.iter().map(|u| u.name.clone()).collect(),
                    |name| {
                        tracing::error!(
                            "schedule `{name}` cannot be read, leaving it until it is repaired: {}",
                            problems.get(name).copied().unwrap_or("")
                        )
                    },
                    |name| tracing::info!("schedule `{name}` can be read again (or is no longer due)"),
                );
                Reported::update(
                    &mut reported.unknown_workflow,
                    report.unknown_workflow.iter().cloned().collect(),
                    |name| {
                        tracing::warn!(
                            "schedule `{name}` is due but its workflow is not registered on this runner: it fires only \
                             on a runner that registers it (list_schedules shows it as stalled while none does)"
                        )
                    },
                    |_| {},
                );
                apply_effects(&inner, report.effects, None);
            }
            Err(e) => {
                let d = backoff.next();
                tracing::warn!("firing schedules failed, retrying in {d:?}: {e}");
                tokio::select! {
                    _ = inner.life.stop_claiming.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// Starts polling a trigger; the loop ends at shutdown.
pub(crate) fn spawn_trigger(inner: &Arc<Inner>, spec: EventTriggerSpec) {
    supervise(inner, "trigger", trigger_loop(Arc::clone(inner), spec));
}

/// Polls one trigger on its interval and records each firing with its
/// execution. A poll that fails or panics is logged and polled again; a
/// firing storage cannot record for a transient reason is retried with the
/// same execution id, which storage records at most once.
async fn trigger_loop(inner: Arc<Inner>, spec: EventTriggerSpec) {
    let mut throttle = Throttle::default();
    loop {
        tokio::select! {
            _ = inner.life.stop_claiming.cancelled() => return,
            _ = tokio::time::sleep(spec.interval()) => {}
        }
        inner.checkpoint("trigger");
        let trigger = spec.trigger().clone();
        // The poll is the application's code: it runs on its runtime.
        let polled = match inner.runtimes.app.spawn(async move { trigger.poll().await }).await {
            Ok(r) => r,
            Err(join) => Err(super::execute::panic_message(join)),
        };
        let ctx = match polled {
            Ok(EventPoll::Skip) => continue,
            Ok(EventPoll::Fire(ctx)) => ctx,
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
        let mut backoff = Backoff::new();
        loop {
            match inner.storage.fire_trigger(firing.clone(), &workflows, inner.now()).await {
                Ok(TriggerOutcome::Fired { execution, effects }) => {
                    tracing::info!(trigger = spec.name(), %execution, "trigger fired");
                    apply_effects(&inner, effects, None);
                }
                Ok(TriggerOutcome::Suppressed { running }) => {
                    tracing::debug!(trigger = spec.name(), %running, "identical firing still unfinished: suppressed");
                }
                Err(e) if e.is_transient() && !inner.life.stop_claiming.is_cancelled() => {
                    let d = backoff.next();
                    if let Some(held) = throttle.allow("fire") {
                        tracing::warn!(
                            trigger = spec.name(),
                            repeated = held,
                            "recording a trigger firing failed, retrying in {d:?}: {e}"
                        );
                    }
                    tokio::select! {
                        _ = inner.life.stop_claiming.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                    continue;
                }
                Err(e) => tracing::error!(
                    trigger = spec.name(),
                    "recording a trigger firing failed; it is dropped (the trigger fires again if its condition \
                     still holds): {e}"
                ),
            }
            break;
        }
    }
}
