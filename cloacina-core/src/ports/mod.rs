//! The storage ports: what the runner needs from a database.
//!
//! # Generic or `dyn`?
//!
//! `dyn`. The runner picks its backend at run time from the database URL,
//! so it holds an `Arc<dyn Storage>`; the traits therefore use
//! `async_trait` (boxed futures). A boxed future per storage call is
//! noise next to a database round trip.
//!
//! # Shape
//!
//! Small capability traits, one super-trait [`Storage`] that an adapter
//! implements by implementing each of them:
//!
//! * [`ExecutionStore`] — read executions, tasks, outputs, events.
//! * [`TaskQueue`] — the write path: create executions, claim ready tasks
//!   under a lease, report outcomes — together in one [`Commit`].
//! * [`Liveness`] — runner registration, heartbeats, recovery, release.
//! * [`Control`] — cancel, pause, resume.
//! * [`Notifications`] — wake-ups when work appears or executions end.
//! * [`Versions`] — executions of versions no live runner serves, and
//!   migrating them to another version.
//! * [`Schedules`] — cron schedules and trigger firings, each creating its
//!   execution in the same transaction as its deduplication record.
//!
//! Every operation that changes state records an [`ExecutionEvent`] per
//! change in the same transaction, and returns those events so a runner can
//! publish them in-process.
//!
//! Every method takes its batch whole: adapters write a batch in one
//! transaction, which is where the throughput comes from.
//!
//! One module per capability, holding its trait and the records it takes
//! and returns; the domain logic these records feed (planning an
//! execution, a schedule's state) lives in [`crate::plan`] and
//! [`crate::schedule`], and the rules every adapter applies inside its
//! transactions in [`crate::step`].

mod control;
mod effects;
mod error;
mod liveness;
mod notify;
mod queue;
mod records;
mod schedules;
mod store;
mod versions;

pub use control::*;
pub use effects::*;
pub use error::*;
pub use liveness::*;
pub use notify::*;
pub use queue::*;
pub use records::*;
pub use schedules::*;
pub use store::*;
pub use versions::*;

pub use crate::plan::{NewExecution, NewTask};
pub use crate::schedule::ScheduleRecord;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::context::Context;
use crate::ids::{ExecutionId, FencingToken, RunnerId, TaskExecutionId, Timestamp};
use crate::recovery::RecoveryPolicy;
use crate::schedule::CronSchedule;
use crate::state::{TaskState, TransitionError, WorkflowState};
use crate::task::BoxError;
use crate::tenant::TenantNameError;
use crate::workflow::{Workflow, WorkflowRef, WorkflowSet};

/// Everything a runner needs from storage.
#[async_trait]
pub trait Storage:
    ExecutionStore + TaskQueue + Liveness + Control + Notifications + Schedules + Versions + std::fmt::Debug
{
    /// A short name of the backend and tenant, for logs (no secrets).
    fn describe(&self) -> String;
    /// What opening this storage did (schema created? migrations run?).
    fn open_report(&self) -> OpenReport;
    /// Housekeeping the runner calls at start-up and then now and then
    /// (each heartbeat): cheap when there is nothing to do. PostgreSQL
    /// refreshes the planner's statistics of the task table once it changed
    /// a lot, so claims keep using the ready-task index after a burst.
    async fn maintain(&self) -> StorageResult<()> {
        Ok(())
    }
    /// Closes connections. Later calls fail with
    /// [`StorageError::Unavailable`].
    async fn close(&self);
}
