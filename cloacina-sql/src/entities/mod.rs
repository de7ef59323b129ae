//! sea-orm entities, one per table. Times are `i64` milliseconds since the
//! Unix epoch (UTC); states are the domain's snake_case names; contexts are
//! JSON text.

pub mod execution_events;
pub mod runners;
pub mod schedule_ticks;
pub mod schedules;
pub mod task_executions;
pub mod task_outputs;
pub mod trigger_firings;
pub mod triggers;
pub mod workflow_executions;
