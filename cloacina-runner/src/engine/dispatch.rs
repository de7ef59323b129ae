//! Starting claimed tasks.

use std::sync::Arc;

use cloacina_core::ports::ClaimedTask;
use tokio::sync::OwnedSemaphorePermit;

use super::execute;
use super::state::Inner;

/// Starts claimed tasks, one slot each.
pub(crate) fn spawn_claimed(inner: &Arc<Inner>, claimed: Vec<ClaimedTask>, mut permits: Option<OwnedSemaphorePermit>) {
    for task in claimed {
        let permit = match permits.as_mut().and_then(|p| if p.num_permits() > 1 { p.split(1) } else { None }) {
            Some(p) => p,
            None => match permits.take() {
                Some(p) => p,
                None => {
                    // Storage claimed more than we asked: never expected.
                    // The lease expires and another claim runs it.
                    tracing::error!(task = %task.id, "claimed a task without a free slot; leaving it to recovery");
                    continue;
                }
            },
        };
        inner.leased().insert(task.id, task.fencing_token);
        inner.runtimes.engine.spawn(execute::run_task(inner.clone(), task, permit));
    }
}
