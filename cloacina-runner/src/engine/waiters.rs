//! Callers waiting for executions to finish (`execute`, `wait`).
//!
//! A waiter is registered under its execution id and removed when its
//! [`Waiter`] guard is dropped — when the wait returns, times out, or the
//! waiting future is dropped — so abandoned waits never pile up.
//!
//! Wake-ups: [`Wake::Finished`] when this runner (or a notification, or
//! the poll) sees the execution end; [`Wake::Check`] when something about
//! the execution may be wrong (its rows vanished or cannot be read, its
//! result cannot be written, storage refused a read): the waiter then reads
//! the execution's status itself and returns what it finds; [`Wake::Fatal`]
//! when the runner itself failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cloacina_core::ExecutionId;
use cloacina_core::ports::FinishedSnapshot;
use tokio::sync::oneshot;

/// Why a waiter was woken.
#[derive(Debug, Clone)]
pub(crate) enum Wake {
    /// The execution reached a terminal state (with the rows the finishing
    /// transaction had, when this runner finished it).
    Finished(Option<Arc<FinishedSnapshot>>),
    /// Look at the execution again: it may be gone, unreadable, or stuck
    /// behind a result that cannot be written.
    Check,
    /// The runner failed and stopped (the message says how).
    Fatal(String),
}

type Slot = (u64, oneshot::Sender<Wake>);

/// The registry of waiters, by execution.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<ExecutionId, Vec<Slot>>>,
    next: AtomicU64,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Vec<Slot>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiter for `id`.
    pub(crate) fn register(self: &Arc<Self>, id: ExecutionId) -> Waiter {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().entry(id).or_default().push((key, tx));
        Waiter { waiters: Arc::clone(self), id, key, rx }
    }

    fn remove(&self, id: ExecutionId, key: u64) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(&id) {
            list.retain(|(k, _)| *k != key);
            if list.is_empty() {
                map.remove(&id);
            }
        }
    }

    fn wake(&self, id: ExecutionId, wake: &Wake) {
        let woken = self.lock().remove(&id);
        for (_, tx) in woken.into_iter().flatten() {
            let _ = tx.send(wake.clone());
        }
    }

    /// The execution finished.
    pub(crate) fn finished(&self, id: ExecutionId, snapshot: Option<Arc<FinishedSnapshot>>) {
        self.wake(id, &Wake::Finished(snapshot));
    }

    /// Asks the waiters of these executions to look at them again.
    pub(crate) fn check(&self, ids: impl IntoIterator<Item = ExecutionId>) {
        for id in ids {
            self.wake(id, &Wake::Check);
        }
    }

    /// Fails every waiter: the runner stopped because of `message`.
    pub(crate) fn fail_all(&self, message: &str) {
        let all = std::mem::take(&mut *self.lock());
        for (_, list) in all {
            for (_, tx) in list {
                let _ = tx.send(Wake::Fatal(message.to_owned()));
            }
        }
    }

    /// The executions being waited for.
    pub(crate) fn ids(&self) -> Vec<ExecutionId> {
        self.lock().keys().copied().collect()
    }

    /// How many waiters are registered (for tests of the registry's size).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// One registered waiter; dropping it unregisters it.
#[derive(Debug)]
pub(crate) struct Waiter {
    waiters: Arc<Waiters>,
    id: ExecutionId,
    key: u64,
    rx: oneshot::Receiver<Wake>,
}

impl Waiter {
    /// The next wake-up; `None` if the registry went away (the runner is
    /// gone).
    pub(crate) async fn woken(&mut self) -> Option<Wake> {
        (&mut self.rx).await.ok()
    }

    /// Registers again after a [`Wake::Check`] (a wake-up ends a
    /// registration).
    pub(crate) fn renew(self) -> Waiter {
        let waiters = Arc::clone(&self.waiters);
        let id = self.id;
        drop(self);
        waiters.register(id)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiters.remove(self.id, self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_waiter_is_unregistered() {
        let w = Arc::new(Waiters::default());
        let id = ExecutionId::new();
        let a = w.register(id);
        let b = w.register(id);
        assert_eq!(w.len(), 2);
        drop(a);
        assert_eq!(w.len(), 1);
        // A waiting future that is dropped (a timed-out wait, a cancelled
        // `execute`) takes its registration with it.
        let waiting = async move {
            let mut b = b;
            b.woken().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), waiting).await;
        assert_eq!(w.len(), 0);
        assert!(w.ids().is_empty());
    }

    #[tokio::test]
    async fn wakes_reach_every_waiter_of_the_execution_only() {
        let w = Arc::new(Waiters::default());
        let (id, other) = (ExecutionId::new(), ExecutionId::new());
        let mut a = w.register(id);
        let mut b = w.register(id);
        let mut c = w.register(other);
        w.check([id]);
        assert!(matches!(a.woken().await, Some(Wake::Check)));
        assert!(matches!(b.woken().await, Some(Wake::Check)));
        let mut a = a.renew();
        w.finished(id, None);
        assert!(matches!(a.woken().await, Some(Wake::Finished(None))));
        w.fail_all("boom");
        assert!(matches!(c.woken().await, Some(Wake::Fatal(m)) if m == "boom"));
    }
}
