//! Task and workflow state machines.
//!
//! Each machine has exactly one transition function
//! ([`TaskState::apply`], [`WorkflowState::apply`]); every state change in
//! every adapter goes through it, so an illegal change is an error wherever
//! it is attempted.
//!
//! ```text
//! task:      NotStarted ──DependenciesMet──► Ready ──Claim──► Running ──Succeed──► Completed
//!                │                             ▲                │ │ │
//!                └──Skip──► Skipped            └─RetryScheduled─┘ │ └─Fail──► Failed
//!                                              └─────Requeue──────┘ └─Abandon──► Abandoned
//!            NotStarted | Ready | Running ──Cancel──► Cancelled
//!
//! workflow:  Pending ──Start──► Running ◄──Resume── Paused
//!            Pending | Running ──Pause──► Paused
//!            any non-terminal ──Complete / Fail / Cancel──► Completed / Failed / Cancelled
//! ```
//!
//! Terminal task states: Completed, Failed, Skipped, Cancelled, Abandoned.
//! Terminal workflow states: Completed, Failed, Cancelled. No event leaves a
//! terminal state.

use std::fmt;
use std::str::FromStr;

/// A state name that is not one of the machine's states (e.g. read from a
/// corrupted row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {machine} state `{value}`; expected one of: {expected}")]
pub struct UnknownState {
    /// `task` or `workflow`.
    pub machine: &'static str,
    /// The text that was read.
    pub value: String,
    /// The states that exist.
    pub expected: &'static str,
}

/// An event that is not allowed in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {machine} transition: `{event}` is not allowed in state `{from}`")]
pub struct TransitionError {
    /// `task` or `workflow`.
    pub machine: &'static str,
    /// The state the entity was in.
    pub from: String,
    /// The event that was refused.
    pub event: String,
}

macro_rules! string_enum {
    ($name:ident, $machine:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (snake_case) name.
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        machine: $machine,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

/// The state of one task in one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for its dependencies.
    NotStarted,
    /// May be claimed (possibly only after its `retry_at`).
    Ready,
    /// Claimed by a runner, under a lease.
    Running,
    /// Finished successfully. Terminal.
    Completed,
    /// Failed with no retry left. Terminal.
    Failed,
    /// Not run because its trigger rule said so. Terminal.
    Skipped,
    /// Stopped because its execution was cancelled. Terminal.
    Cancelled,
    /// Given up after its runner died too many times. Terminal.
    Abandoned,
}

string_enum!(TaskState, "task", {
    NotStarted => "not_started",
    Ready => "ready",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Skipped => "skipped",
    Cancelled => "cancelled",
    Abandoned => "abandoned",
});

/// What can happen to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskEvent {
    /// Its trigger rule allows it to run.
    DependenciesMet,
    /// Its trigger rule says it must not run.
    Skip,
    /// A runner claimed it.
    Claim,
    /// Its body returned `Ok`.
    Succeed,
    /// Its body failed and the retry policy scheduled another attempt.
    RetryScheduled,
    /// Its body failed and no attempt is left.
    Fail,
    /// Its runner lost or released the lease; it may be claimed again.
    Requeue,
    /// Its runner died more often than the recovery policy allows.
    Abandon,
    /// Its execution was cancelled.
    Cancel,
}

impl fmt::Display for TaskEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl TaskState {
    /// Whether no event can leave this state.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Skipped | Self::Cancelled | Self::Abandoned)
    }

    /// The one transition function of the task machine.
    ///
    /// ```
    /// use cloacina_core::{TaskEvent, TaskState};
    /// assert_eq!(TaskState::Ready.apply(TaskEvent::Claim)?, TaskState::Running);
    /// assert!(TaskState::Completed.apply(TaskEvent::Claim).is_err());
    /// # Ok::<(), cloacina_core::TransitionError>(())
    /// ```
    pub fn apply(self, event: TaskEvent) -> Result<TaskState, TransitionError> {
        use TaskEvent as E;
        use TaskState as S;
        let next = match (self, event) {
            (S::NotStarted, E::DependenciesMet) => S::Ready,
            (S::NotStarted, E::Skip) => S::Skipped,
            (S::Ready, E::Claim) => S::Running,
            (S::Running, E::Succeed) => S::Completed,
            (S::Running, E::RetryScheduled) => S::Ready,
            (S::Running, E::Fail) => S::Failed,
            (S::Running, E::Requeue) => S::Ready,
            (S::Running, E::Abandon) => S::Abandoned,
            (S::NotStarted | S::Ready | S::Running, E::Cancel) => S::Cancelled,
            (from, event) => {
                return Err(TransitionError { machine: "task", from: from.to_string(), event: event.to_string() });
            }
        };
        Ok(next)
    }
}

/// A transition that a storage statement writes itself, for every row it
/// selects (a batch claim, the start of executions): its `from` and `to`
/// state names are taken from the machine, so the statement and
/// [`TaskState::apply`] / [`WorkflowState::apply`] cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<S> {
    /// The state the statement selects rows in.
    pub from: S,
    /// The state it writes.
    pub to: S,
}

impl Transition<TaskState> {
    /// A ready task claimed by a runner (`TaskEvent::Claim` from Ready).
    pub fn claim() -> Self {
        let from = TaskState::Ready;
        // Ready accepts Claim (property-tested below); Running is its result.
        Self { from, to: from.apply(TaskEvent::Claim).unwrap_or(TaskState::Running) }
    }
}

impl Transition<WorkflowState> {
    /// A pending execution whose first task was claimed
    /// (`WorkflowEvent::Start` from Pending).
    pub fn start() -> Self {
        let from = WorkflowState::Pending;
        Self { from, to: from.apply(WorkflowEvent::Start).unwrap_or(WorkflowState::Running) }
    }
}

/// The state of one workflow execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowState {
    /// Created; no task has been claimed yet.
    Pending,
    /// At least one task has been claimed.
    Running,
    /// No new task starts until resumed; running tasks finish.
    Paused,
    /// Every task is terminal and none failed or was abandoned. Terminal.
    Completed,
    /// Every task is terminal and at least one failed or was abandoned. Terminal.
    Failed,
    /// Cancelled by a user. Terminal.
    Cancelled,
}

impl WorkflowState {
    /// The states in which an execution's ready tasks may be claimed (not
    /// paused, not terminal).
    pub const CLAIMABLE: [WorkflowState; 2] = [WorkflowState::Pending, WorkflowState::Running];
}

string_enum!(WorkflowState, "workflow", {
    Pending => "pending",
    Running => "running",
    Paused => "paused",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// What can happen to a workflow execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowEvent {
    /// Its first task was claimed.
    Start,
    /// A user paused it.
    Pause,
    /// A user resumed it.
    Resume,
    /// Every task is terminal, none failed.
    Complete,
    /// Every task is terminal, some failed or were abandoned.
    Fail,
    /// A user cancelled it.
    Cancel,
}

impl fmt::Display for WorkflowEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl WorkflowState {
    /// Whether no event can leave this state.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The one transition function of the workflow machine.
    pub fn apply(self, event: WorkflowEvent) -> Result<WorkflowState, TransitionError> {
        use WorkflowEvent as E;
        use WorkflowState as S;
        let next = match (self, event) {
            (S::Pending, E::Start) => S::Running,
            (S::Pending | S::Running, E::Pause) => S::Paused,
            (S::Paused, E::Resume) => S::Running,
            (S::Pending | S::Running | S::Paused, E::Complete) => S::Completed,
            (S::Pending | S::Running | S::Paused, E::Fail) => S::Failed,
            (S::Pending | S::Running | S::Paused, E::Cancel) => S::Cancelled,
            (from, event) => {
                return Err(TransitionError { machine: "workflow", from: from.to_string(), event: event.to_string() });
            }
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_transitions_are_the_machines() {
        let c = Transition::claim();
        assert_eq!(c.from.apply(TaskEvent::Claim), Ok(c.to));
        assert_eq!((c.from, c.to), (TaskState::Ready, TaskState::Running));
        let s = Transition::start();
        assert_eq!(s.from.apply(WorkflowEvent::Start), Ok(s.to));
        assert_eq!((s.from, s.to), (WorkflowState::Pending, WorkflowState::Running));
    }
    use proptest::prelude::*;

    const TASK_EVENTS: &[TaskEvent] = &[
        TaskEvent::DependenciesMet,
        TaskEvent::Skip,
        TaskEvent::Claim,
        TaskEvent::Succeed,
        TaskEvent::RetryScheduled,
        TaskEvent::Fail,
        TaskEvent::Requeue,
        TaskEvent::Abandon,
        TaskEvent::Cancel,
    ];
    const WORKFLOW_EVENTS: &[WorkflowEvent] = &[
        WorkflowEvent::Start,
        WorkflowEvent::Pause,
        WorkflowEvent::Resume,
        WorkflowEvent::Complete,
        WorkflowEvent::Fail,
        WorkflowEvent::Cancel,
    ];

    proptest! {
        #[test]
        fn task_terminal_states_are_never_left(events in proptest::collection::vec(0..TASK_EVENTS.len(), 0..64)) {
            let mut state = TaskState::NotStarted;
            for i in events {
                let before = state;
                match state.apply(TASK_EVENTS[i]) {
                    Ok(next) => {
                        prop_assert!(!before.is_terminal(), "left terminal {before:?} via {:?}", TASK_EVENTS[i]);
                        state = next;
                    }
                    Err(e) => prop_assert_eq!(e.from, before.to_string()),
                }
            }
        }

        #[test]
        fn workflow_terminal_states_are_never_left(events in proptest::collection::vec(0..WORKFLOW_EVENTS.len(), 0..64)) {
            let mut state = WorkflowState::Pending;
            for i in events {
                let before = state;
                match state.apply(WORKFLOW_EVENTS[i]) {
                    Ok(next) => {
                        prop_assert!(!before.is_terminal(), "left terminal {before:?} via {:?}", WORKFLOW_EVENTS[i]);
                        state = next;
                    }
                    Err(e) => prop_assert_eq!(e.from, before.to_string()),
                }
            }
        }

        #[test]
        fn state_names_round_trip(i in 0..TaskState::ALL.len(), j in 0..WorkflowState::ALL.len()) {
            let t = TaskState::ALL[i];
            prop_assert_eq!(t.as_str().parse::<TaskState>().unwrap(), t);
            let w = WorkflowState::ALL[j];
            prop_assert_eq!(w.as_str().parse::<WorkflowState>().unwrap(), w);
        }
    }

    #[test]
    fn every_terminal_state_refuses_every_event() {
        for s in TaskState::ALL.iter().filter(|s| s.is_terminal()) {
            for e in TASK_EVENTS {
                assert!(s.apply(*e).is_err(), "{s:?} accepted {e:?}");
            }
        }
        for s in WorkflowState::ALL.iter().filter(|s| s.is_terminal()) {
            for e in WORKFLOW_EVENTS {
                assert!(s.apply(*e).is_err());
            }
        }
    }

    #[test]
    fn unknown_state_names_are_errors() {
        let e = "runing".parse::<TaskState>().unwrap_err();
        assert_eq!(e.machine, "task");
        assert!(e.to_string().contains("running"));
        assert!("".parse::<WorkflowState>().is_err());
    }

    #[test]
    fn illegal_transition_is_described() {
        let e = TaskState::NotStarted.apply(TaskEvent::Succeed).unwrap_err();
        assert_eq!(e.to_string(), "illegal task transition: `Succeed` is not allowed in state `not_started`");
    }
}
