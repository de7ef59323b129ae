//! Event triggers: user pollers that start a workflow when something
//! happens.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{ScheduleError, valid_name};
use crate::context::Context;
use crate::task::TaskError;

/// What an event trigger's poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPoll {
    /// Nothing to do.
    Skip,
    /// Start the workflow with this input.
    Fire(Context),
}

/// The former name of [`EventPoll`].
#[deprecated(since = "0.2.0", note = "renamed `EventPoll` (\"trigger\" alone also names a task's `TriggerRule`)")]
pub type TriggerPoll = EventPoll;

/// A user-defined poller that starts a workflow when something happens
/// (a file appears, a queue has messages…). Registered on a runner as an
/// [`EventTriggerSpec`].
///
/// ```
/// use cloacina_core::schedule::{EventPoll, EventTrigger};
/// use cloacina_core::{Context, TaskError};
///
/// struct Inbox;
/// #[async_trait::async_trait]
/// impl EventTrigger for Inbox {
///     async fn poll(&self) -> Result<EventPoll, TaskError> {
///         Ok(EventPoll::Skip) // nothing arrived
///     }
/// }
/// ```
#[async_trait]
pub trait EventTrigger: Send + Sync + 'static {
    /// Looks once. An error is logged and the trigger polled again later.
    async fn poll(&self) -> Result<EventPoll, TaskError>;
}

/// The former name of [`EventTrigger`]. Types that implement it are
/// event triggers (a blanket implementation forwards `poll`).
#[deprecated(since = "0.2.0", note = "implement `EventTrigger` (\"trigger\" alone also names a task's `TriggerRule`)")]
#[async_trait]
pub trait Trigger: Send + Sync + 'static {
    /// Looks once. An error is logged and the trigger polled again later.
    #[allow(deprecated)]
    async fn poll(&self) -> Result<TriggerPoll, TaskError>;
}

#[allow(deprecated)]
#[async_trait]
impl<T: Trigger> EventTrigger for T {
    async fn poll(&self) -> Result<EventPoll, TaskError> {
        Trigger::poll(self).await
    }
}

/// An event trigger and how it is run: its name, the workflow it starts,
/// its poll interval and whether identical firings may overlap.
#[derive(Clone)]
pub struct EventTriggerSpec {
    name: String,
    workflow: String,
    poll_interval: Duration,
    allow_concurrent: bool,
    trigger: Arc<dyn EventTrigger>,
}

impl fmt::Debug for EventTriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventTriggerSpec")
            .field("name", &self.name)
            .field("workflow", &self.workflow)
            .field("poll_interval", &self.poll_interval)
            .field("allow_concurrent", &self.allow_concurrent)
            .finish_non_exhaustive()
    }
}

impl EventTriggerSpec {
    /// A trigger named `name` starting `workflow`, polled every 5 s, with
    /// identical firings suppressed while one is unfinished.
    pub fn new(
        name: impl AsRef<str>,
        workflow: impl AsRef<str>,
        trigger: Arc<dyn EventTrigger>,
    ) -> Result<Self, ScheduleError> {
        let (name, workflow) = (name.as_ref(), workflow.as_ref());
        valid_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            workflow: workflow.to_owned(),
            poll_interval: Duration::from_secs(5),
            allow_concurrent: false,
            trigger,
        })
    }
    /// How often to poll (positive).
    pub fn poll_interval(mut self, d: Duration) -> Result<Self, ScheduleError> {
        if d.is_zero() {
            return Err(ScheduleError::ZeroPollInterval { name: self.name });
        }
        self.poll_interval = d;
        Ok(self)
    }
    /// Whether identical firings may run at the same time (default false).
    pub fn allow_concurrent(mut self, yes: bool) -> Self {
        self.allow_concurrent = yes;
        self
    }
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The workflow.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }
    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.poll_interval
    }
    /// Whether concurrent identical firings are allowed.
    pub fn concurrent(&self) -> bool {
        self.allow_concurrent
    }
    /// The poller.
    pub fn trigger(&self) -> &Arc<dyn EventTrigger> {
        &self.trigger
    }
}

/// The former name of [`EventTriggerSpec`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `EventTriggerSpec` (\"trigger\" alone also names a task's `TriggerRule`)"
)]
pub type TriggerSpec = EventTriggerSpec;

/// The key identical firings share: the trigger's name and its context.
pub fn firing_key(trigger: &str, ctx: &Context) -> String {
    let mut h = Sha256::new();
    h.update(trigger.as_bytes());
    h.update([0u8]);
    h.update(ctx.to_json().as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}
