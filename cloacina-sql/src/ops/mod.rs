//! One module per storage operation; each adds the `try_*` body of one
//! transaction to [`SqlStorage`](crate::SqlStorage). The port impls in
//! `storage.rs` wrap them in the conflict-retry loop.

pub(crate) mod commit;
pub(crate) mod control;
pub(crate) mod inputs;
pub(crate) mod liveness;
pub(crate) mod queries;
pub(crate) mod recover;
pub(crate) mod report;
pub(crate) mod schedules;
pub(crate) mod snapshot;
pub(crate) mod versions;
